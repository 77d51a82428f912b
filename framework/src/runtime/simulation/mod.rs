//! The commit protocol under random crashes, as a deterministic simulation:
//! the real task manager, tasks, processors and enrichment of up to three
//! members, against a model cluster (see [`cluster`]) whose group hands
//! tasks around while members crash (SIGKILL: unflushed records lost),
//! stop cleanly, stall past their session (and come back as zombies that
//! commit and write until they notice), fail on injected offset-fetch,
//! commit and read errors, and restart on their state directories. Lookups
//! answer when the schedule drives their runtime.
//!
//! After every run, once all input is processed and committed: the
//! compacted outputs must equal the reference computed from the inputs,
//! and the changelogs, read up to the group's committed offsets as a
//! restore reads them, must hold exactly the reference tables. Under
//! at-least-once duplicates are allowed, so the aggregation is a union.
//!
//! `WEIR_SIM_SEEDS=n` runs n schedules (default 1000), `WEIR_SIM_SEED=s`
//! replays one; a failure names its seed and prints the run's events.

mod cluster;
mod rng;
mod scenarios;
mod stores;
mod workload;

use self::cluster::{ConsumerView, Faults, ModelGroup, ModelProducer, ModelReader, ProducerPort, SharedCluster};
use self::rng::Rng;
use self::stores::{Disk, SimStores};
use self::workload::{
    Generator, Reference, DOMAIN_MEMBERS, EMAILS, EMAIL_COUNTS, PARTITIONS, PREFERENCES, PROFILES, REGIONS, TAGGED,
    USERS, USER_REGIONS,
};
use super::query::LocalStores;
use super::state_manager::FENCE_KEY;
use super::task_manager::{Processed, TaskManager, ThreadIo, ThreadStores};
use super::GlobalStores;
use super::StreamsConfig;
use crate::enrich::AnswerWait;
use crate::error::WeirError;
use crate::metrics::RuntimeMetrics;
use crate::record::InputRecord;
use crate::topology::changelog_topic;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

const APPLICATION: &str = "sim";
const SLOTS: usize = 3;
const USER_COUNT: usize = 12;
const CHANGES: usize = 160;
/// Steps of the random phase; then faults stop and the members catch up.
const RANDOM_STEPS: usize = 1_500;
const CATCH_UP_STEPS: usize = 20_000;

/// Drives the simulation's lookup runtime: every call spawned so far runs
/// to its answer.
struct Lookups(Rc<tokio::runtime::Runtime>);

impl Lookups {
    fn run(&self) {
        self.0.block_on(async {
            for _ in 0..10_000 {
                if tokio::runtime::Handle::current().metrics().num_alive_tasks() == 0 {
                    return;
                }
                tokio::task::yield_now().await;
            }
        });
    }
}

impl AnswerWait for Lookups {
    fn mark(&self) -> u64 {
        0
    }

    fn wait(&self, _mark: u64, _timeout: Duration) {
        self.run();
    }
}

/// A running member: one stream thread of an instance.
struct Member {
    id: u64,
    view: Rc<RefCell<ConsumerView>>,
    producer: Rc<ModelProducer>,
    manager: TaskManager,
    /// SIGSTOPped: takes no step until woken.
    stalled: bool,
}

/// A place an instance runs in: its state directory, across incarnations.
struct Slot {
    state_dir: PathBuf,
    disk: Disk,
    member: Option<Member>,
}

/// A member that is gone or stopped but still in the group until its
/// session expires.
struct Expiry {
    member: u64,
    steps: usize,
}

struct Simulation {
    seed: u64,
    rng: Rng,
    cluster: SharedCluster,
    slots: Vec<Slot>,
    lookups: Rc<tokio::runtime::Runtime>,
    generator: Generator,
    reference: Reference,
    produced: usize,
    next_member: u64,
    expiries: Vec<Expiry>,
    events: Vec<String>,
    /// Whether tasks with several input partitions take their records in
    /// time order, waiting for a partition that has some to read; else in
    /// the order they are fed.
    in_time_order: bool,
    _dir: tempfile::TempDir,
}

impl Simulation {
    /// A run whose coordinator and faults `seed` draws.
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let faults = Faults {
            fences_commits: rng.chance(0.5),
            refuses_commits_while_rebalancing: rng.chance(0.3),
            offset_fetch_error: if rng.chance(0.5) { 0.05 } else { 0.0 },
            commit_error: if rng.chance(0.5) { 0.03 } else { 0.0 },
            commit_answer_lost: if rng.chance(0.5) { 0.05 } else { 0.0 },
            read_error: if rng.chance(0.5) { 0.03 } else { 0.0 },
        };
        // Half the runs make the first two slots two stream threads of one
        // instance, on one state directory: a task the group moves between
        // them while its previous owner stalls is opened in a directory the
        // stalled thread still has open.
        let shared_directory = rng.chance(0.5);
        let in_time_order = rng.chance(0.5);
        let mut simulation = Self::with_faults(seed, rng, faults, shared_directory);
        simulation.in_time_order = in_time_order;
        if in_time_order {
            simulation.event("tasks take their input partitions' records in time order".to_string());
        }
        simulation
    }

    /// A run with `faults`; with `shared_directory`, slots 0 and 1 are
    /// stream threads of one instance.
    fn with_faults(seed: u64, rng: Rng, faults: Faults, shared_directory: bool) -> Self {
        let lookups = Rc::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a runtime"),
        );
        let topology = workload::topology(lookups.handle().clone());
        let plan = topology
            .partition_plan(APPLICATION, &mut |_| Ok(PARTITIONS))
            .expect("a partition plan");
        let mut cluster = cluster::Cluster {
            topics: BTreeMap::new(),
            sources: Vec::new(),
            committed: Default::default(),
            coordinator: Default::default(),
            faults,
            rng: Rng::new(seed ^ 0x5eed),
            default_partitions: PARTITIONS,
            clock: 0,
            commits: Vec::new(),
        };
        for topic in [USERS, PREFERENCES, EMAILS, REGIONS] {
            cluster.create_topic(topic, PARTITIONS);
        }
        for topic in &plan.internal_topics {
            cluster.create_topic(&topic.name, topic.partitions);
        }
        cluster.sources = topology
            .subtopologies()
            .iter()
            .flat_map(|sub| sub.source_topics.iter().map(|t| Arc::from(t.resolve(APPLICATION))))
            .collect();
        let dir = tempfile::Builder::new()
            .prefix("weir-sim")
            .tempdir_in(if std::path::Path::new("/dev/shm").is_dir() {
                "/dev/shm"
            } else {
                "/tmp"
            })
            .expect("a temporary directory");
        let mut slots: Vec<Slot> = Vec::new();
        for index in 0..SLOTS {
            let (state_dir, disk) = match slots.first() {
                Some(first) if index == 1 && shared_directory => (first.state_dir.clone(), first.disk.clone()),
                _ => (dir.path().join(format!("slot-{index}")), Disk::default()),
            };
            slots.push(Slot {
                state_dir,
                disk,
                member: None,
            });
        }
        Simulation {
            seed,
            rng,
            cluster: Rc::new(RefCell::new(cluster)),
            slots,
            lookups,
            generator: Generator::new(USER_COUNT),
            reference: Reference::default(),
            produced: 0,
            next_member: 1,
            expiries: Vec::new(),
            in_time_order: false,
            events: match shared_directory {
                true => vec!["slots 0 and 1 are stream threads of one instance, on one state directory".to_string()],
                false => Vec::new(),
            },
            _dir: dir,
        }
    }

    fn event(&mut self, event: String) {
        self.events.push(event);
    }

    /// Starts a member in an empty slot; it joins the group.
    fn start(&mut self, slot: usize) {
        let id = self.next_member;
        self.next_member += 1;
        let config = StreamsConfig::new(APPLICATION, "simulated:9092")
            .set("state.dir", self.slots[slot].state_dir.to_string_lossy())
            .set("application.server", format!("member-{id}:80"))
            // Small enough that the store caches drop entries, and release
            // deferred changes, all the time; every other member merges
            // tables' changes.
            .set("statestore.cache.max.bytes", "2048")
            .set("statestore.cache.merge", id.is_multiple_of(2).to_string())
            // Waiting for a partition is never timed out here: the
            // schedule, not the wall clock, decides when it is fed.
            .set("input.wait.max.ms", if self.in_time_order { "3600000" } else { "0" });
        let settings = Arc::new(config.settings().expect("valid settings"));
        let stores = Arc::new(SimStores {
            app_dir: settings.app_dir(),
            disk: self.slots[slot].disk.clone(),
        });
        let producer = Rc::new(ModelProducer::new(id, self.cluster.clone()));
        let io = ThreadIo {
            output: Box::new(ProducerPort(producer.clone())),
            changelogs: Box::new(ModelReader(self.cluster.clone())),
            answers: Box::new(Lookups(self.lookups.clone())),
        };
        let manager = TaskManager::new(
            0,
            workload::topology(self.lookups.handle().clone()),
            settings.clone(),
            ThreadStores {
                supplier: stores,
                local: Arc::new(LocalStores::new(settings)),
                global: GlobalStores::default(),
            },
            io,
            Arc::new(RuntimeMetrics::default()),
        );
        let view = Rc::new(RefCell::new(ConsumerView {
            member: id,
            ..ConsumerView::default()
        }));
        self.slots[slot].member = Some(Member {
            id,
            view,
            producer,
            manager,
            stalled: false,
        });
        self.cluster.borrow_mut().join(id);
        self.event(format!("member {id} starts in slot {slot}"));
    }

    fn group_of(&self, member: &Member) -> ModelGroup {
        ModelGroup {
            cluster: self.cluster.clone(),
            view: member.view.clone(),
        }
    }

    /// One step of a member's stream thread: take part in a rebalance,
    /// process a few records, pass on answered records, maybe commit.
    fn step(&mut self, slot: usize) {
        let Some(member) = self.slots[slot].member.as_ref() else {
            return;
        };
        if member.stalled {
            return;
        }
        let in_flight = self.rng.below(member.producer.queued() + 1);
        member.producer.deliver(in_flight);
        let result = self.step_thread(slot);
        if let Err(error) = result {
            self.fail(slot, error);
        }
    }

    fn step_thread(&mut self, slot: usize) -> Result<(), WeirError> {
        self.rebalance(slot)?;
        {
            let records = 1 + self.rng.below(40);
            let member = self.slots[slot].member.as_mut().expect("a member");
            if member.manager.restoring() {
                member.manager.restore(records)?;
            }
        }
        for _ in 0..self.rng.below(6) {
            let readable = self.readable(slot);
            let Some(next) = self.rng.pick(&readable).cloned() else {
                break;
            };
            self.feed(slot, next)?;
        }
        let member = self.slots[slot].member.as_mut().expect("a member");
        let group = ModelGroup {
            cluster: self.cluster.clone(),
            view: member.view.clone(),
        };
        member.manager.process_queued(&group)?;
        member.manager.write_back()?;
        member.manager.complete_async()?;
        member.manager.poll_deliveries()?;
        if self.rng.chance(0.3) || member.manager.commit_pending() {
            member.manager.commit_or_rewind(&group)?;
        }
        member.manager.take_failure()
    }

    /// The next record of each partition the member reads and has not
    /// paused, with its offset.
    fn readable(&self, slot: usize) -> Vec<(Arc<str>, i32, i64)> {
        let member = self.slots[slot].member.as_ref().expect("a member");
        let paused = member.manager.partitions_to_pause(member.manager.backpressured());
        let view = member.view.borrow();
        let cluster = self.cluster.borrow();
        view.assignment
            .iter()
            .filter(|tp| !paused.contains(*tp))
            .filter_map(|(topic, partition)| {
                let position = view.positions.get(&(topic.clone(), *partition)).copied().unwrap_or(0);
                (position < cluster.end(topic, *partition)).then(|| (topic.clone(), *partition, position))
            })
            .collect()
    }

    /// Has the member process the record at `topic[partition]@offset`.
    fn feed(&mut self, slot: usize, (topic, partition, offset): (Arc<str>, i32, i64)) -> Result<(), WeirError> {
        let member = self.slots[slot].member.as_mut().expect("a member");
        let stored = self.cluster.borrow().log(&topic, partition)[offset as usize].clone();
        let headers = Vec::new();
        let record = InputRecord {
            key: stored.key.as_deref(),
            value: stored.value.as_deref(),
            timestamp: stored.timestamp,
            headers: &headers,
        };
        // The consumer's position moves as it hands the record out, and
        // back when the task cannot take it yet.
        let position = (topic.clone(), partition);
        let before = member.view.borrow_mut().positions.insert(position.clone(), offset + 1);
        let processed = member.manager.process(&topic, partition, offset, &record)?;
        if processed == Processed::NotYet {
            let mut view = member.view.borrow_mut();
            match before {
                Some(before) => view.positions.insert(position, before),
                None => view.positions.remove(&position),
            };
        }
        // A batch of one: what a task queued is taken as its inputs allow.
        let group = ModelGroup {
            cluster: self.cluster.clone(),
            view: member.view.clone(),
        };
        member.manager.process_queued(&group)
    }

    /// The member's part in the group protocol, as librdkafka plays it
    /// inside `poll`: an expelled member notices (sometimes only after a
    /// few more steps as a zombie), revokes what it held as lost and joins
    /// again; a member of a new generation revokes, rejoins, and takes its
    /// assignment once the coordinator has one.
    fn rebalance(&mut self, slot: usize) -> Result<(), WeirError> {
        let member = self.slots[slot].member.as_mut().expect("a member");
        let group = ModelGroup {
            cluster: self.cluster.clone(),
            view: member.view.clone(),
        };
        let (in_group, generation) = {
            let cluster = self.cluster.borrow();
            (
                cluster.coordinator.members.contains(&member.id),
                cluster.coordinator.generation,
            )
        };
        let known = member.view.borrow().generation;
        let mut events = Vec::new();
        if !in_group {
            if !self.rng.chance(0.5) {
                return Ok(());
            }
            let held = std::mem::take(&mut member.view.borrow_mut().assignment);
            member.manager.on_revoked(&group, &held, true);
            member.view.borrow_mut().generation = 0;
            self.cluster.borrow_mut().join(member.id);
            events.push(format!("member {} notices it was expelled and joins again", member.id));
        } else if known != generation {
            let held = std::mem::take(&mut member.view.borrow_mut().assignment);
            if !held.is_empty() {
                member.manager.on_revoked(&group, &held, false);
            }
            member.manager.take_failure()?;
            let assigned = {
                let mut cluster = self.cluster.borrow_mut();
                cluster.rejoin(member.id);
                cluster.assignment_of(member.id)
            };
            if let Some(assigned) = assigned {
                let starts = member.manager.on_assigned(&group, &assigned);
                member.manager.take_failure()?;
                let starts = starts.unwrap_or_default();
                let mut view = member.view.borrow_mut();
                view.generation = generation;
                view.positions = starts.into_iter().map(|s| ((s.topic, s.partition), s.offset)).collect();
                events.push(format!(
                    "member {} is assigned {} partitions in generation {generation}",
                    member.id,
                    assigned.len()
                ));
                view.assignment = assigned;
            }
        }
        for event in events {
            self.event(event);
        }
        Ok(())
    }

    /// The member's thread stopped on an error: its tasks are dropped
    /// uncommitted and the instance exits (leaving the group), to be
    /// restarted later.
    fn fail(&mut self, slot: usize, error: WeirError) {
        let mut member = self.slots[slot].member.take().expect("a member");
        let _ = member.manager.abandon_all();
        self.cluster.borrow_mut().leave(member.id);
        self.event(format!("member {} stops on an error: {error}", member.id));
    }

    /// SIGKILL: what was on the wire arrives, the rest of the producer's
    /// queue is lost, the session expires later.
    fn crash(&mut self, slot: usize) {
        let in_flight = match &self.slots[slot].member {
            Some(member) => self.rng.below(member.producer.queued() + 1),
            None => return,
        };
        self.kill(slot, in_flight);
    }

    /// SIGKILL with the first `in_flight` queued records on the wire.
    fn kill(&mut self, slot: usize, in_flight: usize) {
        let Some(member) = self.slots[slot].member.take() else {
            return;
        };
        member.producer.crash(in_flight);
        let steps = 1 + self.rng.below(30);
        self.expiries.push(Expiry {
            member: member.id,
            steps,
        });
        self.event(format!("member {} is killed", member.id));
    }

    /// SIGTERM: commit, close and leave.
    fn stop(&mut self, slot: usize) {
        let Some(mut member) = self.slots[slot].member.take() else {
            return;
        };
        if member.stalled {
            self.slots[slot].member = Some(member);
            return;
        }
        let group = self.group_of(&member);
        let closed = member.manager.close_all(&group);
        self.cluster.borrow_mut().leave(member.id);
        self.event(format!("member {} stops ({closed:?})", member.id));
    }

    /// SIGSTOP: the member stands still; its session expires later.
    fn stall(&mut self, slot: usize) {
        let steps = 1 + self.rng.below(40);
        let Some(member) = self.slots[slot].member.as_mut() else {
            return;
        };
        if member.stalled {
            return;
        }
        member.stalled = true;
        let id = member.id;
        self.expiries.push(Expiry { member: id, steps });
        self.event(format!("member {id} stalls"));
    }

    /// SIGCONT.
    fn wake(&mut self, slot: usize) {
        let Some(member) = self.slots[slot].member.as_mut() else {
            return;
        };
        if member.stalled {
            member.stalled = false;
            let id = member.id;
            self.event(format!("member {id} wakes"));
        }
    }

    /// Sessions run out: the coordinator expels members that stopped
    /// heartbeating (a stalled member that woke in time stays).
    fn tick_expiries(&mut self) {
        let mut expired = Vec::new();
        for expiry in &mut self.expiries {
            expiry.steps = expiry.steps.saturating_sub(1);
            if expiry.steps == 0 {
                expired.push(expiry.member);
            }
        }
        self.expiries.retain(|e| e.steps > 0);
        for member in expired {
            let still_stalled = self
                .slots
                .iter()
                .filter_map(|s| s.member.as_ref())
                .find(|m| m.id == member)
                .map(|m| m.stalled);
            if still_stalled != Some(false) {
                self.cluster.borrow_mut().leave(member);
                self.event(format!("the session of member {member} expires"));
            }
        }
    }

    fn produce(&mut self) {
        for _ in 0..1 + self.rng.below(4) {
            if self.produced == CHANGES {
                return;
            }
            let change = self.generator.next(&mut self.rng);
            self.write(change);
        }
    }

    /// Writes one input record (an email also to [`EMAILS`]), and applies
    /// it to the reference.
    fn write(&mut self, change: workload::Change) {
        self.reference.apply(&change);
        if change.topic == USERS && change.value.is_some() {
            self.reference.email_at(&change.key, self.produced as i64);
            self.append(EMAILS, &change);
        }
        self.append(change.topic, &change);
        self.produced += 1;
    }

    fn append(&mut self, topic: &str, change: &workload::Change) {
        let stored = cluster::Stored {
            key: Some(change.key.clone().into_bytes()),
            value: change.value.clone(),
            timestamp: self.produced as i64,
            writer: 0,
            at: 0,
            zombie: false,
        };
        self.cluster.borrow_mut().append(&Arc::from(topic), None, stored);
    }

    /// The random phase: input arrives while members process, crash,
    /// stop, stall, wake and restart, and lookups answer now and then.
    fn run_random(&mut self) {
        self.start(0);
        for _ in 0..RANDOM_STEPS {
            self.tick_expiries();
            let slot = self.rng.below(SLOTS);
            match self.rng.below(100) {
                0..=19 => self.produce(),
                20..=74 => self.step(slot),
                75..=84 => Lookups(self.lookups.clone()).run(),
                85..=88 => {
                    if self.slots[slot].member.is_none() {
                        self.start(slot)
                    }
                }
                89..=90 => self.crash(slot),
                91..=92 => self.stop(slot),
                93..=95 => self.stall(slot),
                _ => self.wake(slot),
            }
        }
    }

    /// No more faults: every member wakes, empty slots start members, and
    /// all run until every input is processed and committed.
    fn catch_up(&mut self) -> Result<(), String> {
        let faults = self.cluster.borrow().faults;
        self.cluster.borrow_mut().faults = Faults {
            offset_fetch_error: 0.0,
            commit_error: 0.0,
            commit_answer_lost: 0.0,
            read_error: 0.0,
            ..faults
        };
        while self.produced < CHANGES {
            self.produce();
        }
        for slot in 0..SLOTS {
            self.wake(slot);
        }
        for _ in 0..CATCH_UP_STEPS {
            self.tick_expiries();
            for slot in 0..SLOTS {
                if self.slots[slot].member.is_none() {
                    self.start(slot);
                }
                self.step(slot);
            }
            Lookups(self.lookups.clone()).run();
            if self.settled() {
                for slot in 0..SLOTS {
                    self.stop(slot);
                }
                return Ok(());
            }
        }
        Err(format!("the members did not catch up within {CATCH_UP_STEPS} rounds"))
    }

    /// Whether the group is stable, nothing is queued or held, and every
    /// source partition is committed up to its end.
    fn settled(&self) -> bool {
        let cluster = self.cluster.borrow();
        let generation = cluster.coordinator.generation;
        let members: Vec<&Member> = self.slots.iter().filter_map(|s| s.member.as_ref()).collect();
        if cluster.rebalancing() || !self.expiries.is_empty() {
            return false;
        }
        let quiet = members.iter().all(|m| {
            m.view.borrow().generation == generation
                && m.producer.queued() == 0
                && !m.manager.holds_records()
                && !m.manager.commit_pending()
                && !m.manager.uncommitted()
        });
        quiet
            && cluster.sources.iter().all(|topic| {
                (0..cluster.topics[topic].len() as i32).all(|partition| {
                    let end = cluster.end(topic, partition);
                    end == 0 || cluster.committed.get(&(topic.clone(), partition)) == Some(&end)
                })
            })
    }

    /// The last value of each key of `topic`, as a compacted topic keeps
    /// it, and the keys whose last record a stale member wrote.
    fn compacted(&self, topic: &str) -> (BTreeMap<String, String>, BTreeSet<String>) {
        let cluster = self.cluster.borrow();
        let mut view = BTreeMap::new();
        let mut by_stale_member = BTreeSet::new();
        for partition in cluster.topics.get(topic).into_iter().flatten() {
            for record in partition {
                let key = String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()).to_string();
                if record.zombie {
                    by_stale_member.insert(key.clone());
                } else {
                    by_stale_member.remove(&key);
                }
                match &record.value {
                    Some(value) => view.insert(key, String::from_utf8_lossy(value).to_string()),
                    None => view.remove(&key),
                };
            }
        }
        (view, by_stale_member)
    }

    /// A store as a restore rebuilds it from its changelog: each
    /// partition read up to the group's committed offset, fences skipped.
    fn restored(&self, store: &str) -> BTreeMap<String, String> {
        let cluster = self.cluster.borrow();
        let topic: Arc<str> = changelog_topic(APPLICATION, store).into();
        let mut view = BTreeMap::new();
        for (partition, log) in cluster.topics.get(&topic).into_iter().flatten().enumerate() {
            let committed = cluster
                .committed
                .get(&(topic.clone(), partition as i32))
                .copied()
                .unwrap_or(0);
            for record in &log[..committed as usize] {
                let key = record.key.as_deref().unwrap_or_default();
                if key == FENCE_KEY {
                    continue;
                }
                let key = String::from_utf8_lossy(key).to_string();
                match &record.value {
                    Some(value) => view.insert(key, String::from_utf8_lossy(value).to_string()),
                    None => view.remove(&key),
                };
            }
        }
        view
    }

    /// Every output and store against the reference. A key of an output
    /// whose last record a stale member wrote is counted apart: no commit
    /// or state of weir's depends on it, see [`Outcome::stale_outputs`].
    fn check(&self) -> Result<Outcome, String> {
        let reference = &self.reference;
        let users: BTreeMap<String, String> = reference.users.clone();
        let preferences: BTreeMap<String, String> = reference
            .preferences
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        let mut expectations = Vec::new();
        for (topic, expected) in [
            (PROFILES, reference.profiles()),
            (TAGGED, reference.tagged()),
            (DOMAIN_MEMBERS, reference.domain_members()),
            (USER_REGIONS, reference.user_regions()),
            (EMAIL_COUNTS, reference.email_counts()),
        ] {
            let (actual, by_stale_member) = self.compacted(topic);
            expectations.push((format!("topic {topic}"), actual, expected, by_stale_member));
        }
        expectations.push(("store users".into(), self.restored("users"), users, BTreeSet::new()));
        expectations.push((
            "store preferences".into(),
            self.restored("preferences"),
            preferences,
            BTreeSet::new(),
        ));
        let mut problems = Vec::new();
        let mut suspects = BTreeSet::new();
        let mut outcome = Outcome::default();
        for (what, actual, expected, by_stale_member) in expectations {
            let wrong: BTreeSet<String> = expected
                .iter()
                .filter(|(k, v)| actual.get(*k) != Some(*v))
                .map(|(k, _)| k.clone())
                .chain(actual.keys().filter(|k| !expected.contains_key(*k)).cloned())
                .collect();
            let (stale, wrong): (BTreeSet<String>, BTreeSet<String>) =
                wrong.into_iter().partition(|k| by_stale_member.contains(k));
            outcome.stale_outputs += stale.len();
            if wrong.is_empty() {
                continue;
            }
            let described: Vec<String> = wrong
                .iter()
                .take(6)
                .map(|k| format!("{k}: expected {:?}, found {:?}", expected.get(k), actual.get(k)))
                .collect();
            problems.push(format!("{what}: {}", described.join("; ")));
            suspects.extend(wrong);
        }
        if problems.is_empty() {
            return Ok(outcome);
        }
        for key in suspects.iter().take(2) {
            problems.push(self.history(key));
        }
        Err(problems.join("\n"))
    }

    /// Every record of `key` in every topic, with its place and writer,
    /// and the commits of the partitions it is in, in the order they
    /// happened.
    fn history(&self, key: &str) -> String {
        let cluster = self.cluster.borrow();
        let mut lines: Vec<(u64, String)> = Vec::new();
        let mut partitions_of_key = std::collections::BTreeSet::new();
        for (topic, partitions) in &cluster.topics {
            for (partition, log) in partitions.iter().enumerate() {
                for (offset, record) in log.iter().enumerate() {
                    if record.key.as_deref() == Some(key.as_bytes()) {
                        partitions_of_key.insert((topic.clone(), partition as i32));
                        let value = record.value.as_deref().map(String::from_utf8_lossy);
                        let zombie = if record.zombie { " (stale member)" } else { "" };
                        lines.push((
                            record.at,
                            format!("{topic}[{partition}]@{offset} by {}{zombie}: {value:?}", record.writer),
                        ));
                    }
                }
            }
        }
        for commit in &cluster.commits {
            let named: Vec<String> = commit
                .offsets
                .iter()
                .filter(|o| partitions_of_key.contains(&(o.topic.clone(), o.partition)))
                .map(|o| format!("{}[{}]={}", o.topic, o.partition, o.offset))
                .collect();
            if !named.is_empty() {
                lines.push((
                    commit.at,
                    format!(
                        "commit by {} (generation {}): {}",
                        commit.member,
                        commit.generation,
                        named.join(" ")
                    ),
                ));
            }
        }
        lines.sort();
        let mut text = format!("history of {key}:");
        for (at, line) in lines {
            text.push_str(&format!("\n  {at:>5} {line}"));
        }
        text
    }

    fn report(&self, problem: &str) -> String {
        let start = self.events.len().saturating_sub(60);
        format!(
            "seed {}: {problem}\nthe run's last events:\n  {}\n(replay with WEIR_SIM_SEED={})",
            self.seed,
            self.events[start..].join("\n  "),
            self.seed
        )
    }
}

/// What a run that passed saw.
#[derive(Debug, Default)]
struct Outcome {
    /// Output keys left stale by a record a stale member wrote after the
    /// group had expelled it (before it noticed).
    stale_outputs: usize,
}

fn run(seed: u64) -> Result<Outcome, String> {
    let mut simulation = Simulation::new(seed);
    simulation.run_random();
    simulation
        .catch_up()
        .and_then(|()| simulation.check())
        .map_err(|problem| simulation.report(&problem))
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("WEIR_SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![seed];
    }
    let count = std::env::var("WEIR_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    (1..=count).collect()
}

#[test]
fn no_update_is_lost_under_random_crashes_stalls_and_broker_faults() {
    let mut failures = Vec::new();
    let mut stale = 0;
    for seed in seeds() {
        match run(seed) {
            Ok(outcome) => stale += outcome.stale_outputs,
            Err(failure) => failures.push(failure),
        }
    }
    eprintln!("output keys left stale by stale members: {stale}");
    let seeds: Vec<&str> = failures.iter().filter_map(|f| f.split(':').next()).collect();
    assert!(
        failures.is_empty(),
        "{} of the schedules failed ({}); the first:\n{}",
        failures.len(),
        seeds.join(", "),
        failures[0]
    );
}
