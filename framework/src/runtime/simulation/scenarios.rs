//! Scripted schedules of the simulation, one per way the commit protocol
//! used to lose an update: each runs the interleaving that lost it and
//! checks that the update now arrives.

use super::cluster::Faults;
use super::rng::Rng;
use super::workload::{Change, PREFERENCES, PROFILES, TAGGED, USERS};
use super::Simulation;
use crate::partition::partition_for_key;
use crate::topology::changelog_topic;
use std::sync::Arc;

/// A run without injected faults, whose coordinator checks generations.
fn scripted() -> Simulation {
    scripted_on(false)
}

/// [`scripted`], with slots 0 and 1 as `shared_directory` says.
fn scripted_on(shared_directory: bool) -> Simulation {
    Simulation::with_faults(
        0,
        Rng::new(0),
        Faults {
            fences_commits: true,
            refuses_commits_while_rebalancing: false,
            offset_fetch_error: 0.0,
            commit_error: 0.0,
            commit_answer_lost: 0.0,
            read_error: 0.0,
        },
        shared_directory,
    )
}

fn user(key: &str, email: Option<&str>) -> Change {
    Change {
        topic: USERS,
        key: key.into(),
        value: email.map(|e| e.as_bytes().to_vec()),
    }
}

fn preference(key: &str, dark: bool) -> Change {
    Change {
        topic: PREFERENCES,
        key: key.into(),
        value: Some(dark.to_string().into_bytes()),
    }
}

fn partition_of(key: &str) -> i32 {
    partition_for_key(key.as_bytes(), super::PARTITIONS)
}

impl Simulation {
    /// Plays the group protocol for every member that is not stalled until
    /// the group is stable and each holds its assignment with its stores
    /// restored.
    fn settle(&mut self) {
        let awake = |sim: &Simulation, slot: usize| sim.slots[slot].member.as_ref().is_some_and(|m| !m.stalled);
        for _ in 0..20 {
            for slot in 0..self.slots.len() {
                if awake(self, slot) {
                    self.rebalance(slot).expect("a rebalance without faults");
                    self.finish_restores(slot);
                }
            }
            let generation = self.cluster.borrow().coordinator.generation;
            let settled = !self.cluster.borrow().rebalancing()
                && (0..self.slots.len())
                    .filter(|slot| awake(self, *slot))
                    .all(|slot| self.member(slot).view.borrow().generation == generation);
            if settled {
                return;
            }
        }
        panic!("the group did not settle");
    }

    /// The member processes `topic[partition]@offset` (its next record there).
    fn feed_one(&mut self, slot: usize, topic: &str, partition: i32) {
        let next = self
            .readable(slot)
            .into_iter()
            .find(|(t, p, _)| &**t == topic && *p == partition)
            .unwrap_or_else(|| panic!("nothing to read in {topic}[{partition}]"));
        self.feed(slot, next).expect("a record is processed");
    }

    /// The member restores its restoring tasks to the end (a task waiting
    /// for its directory keeps waiting).
    fn finish_restores(&mut self, slot: usize) {
        let manager = &mut self.slots[slot].member.as_mut().expect("a member").manager;
        for _ in 0..10_000 {
            if !manager.restoring() {
                return;
            }
            manager.restore(100).expect("a restore without faults");
        }
    }

    /// The member processes everything it can read, answers included
    /// (tasks reopened since are restored first).
    fn drain_input(&mut self, slot: usize) {
        self.finish_restores(slot);
        loop {
            let readable = self.readable(slot);
            let Some(next) = readable.first().cloned() else { break };
            self.feed(slot, next).expect("a record is processed");
        }
        super::Lookups(self.lookups.clone()).run();
        let member = self.slots[slot].member.as_mut().expect("a member");
        member.manager.complete_async().expect("answers are passed on");
    }

    fn commit(&mut self, slot: usize) {
        let group = self.group_of(self.member(slot));
        let member = self.slots[slot].member.as_mut().expect("a member");
        member
            .manager
            .commit_or_rewind(&group)
            .expect("a commit without faults");
    }

    fn member(&self, slot: usize) -> &super::Member {
        self.slots[slot].member.as_ref().expect("a member")
    }

    fn expire(&mut self, member: u64) {
        self.cluster.borrow_mut().leave(member);
    }

    /// SIGKILL with the first `in_flight` queued records on the wire, and
    /// the session's expiry.
    fn kill_and_expire(&mut self, slot: usize, in_flight: usize) {
        let id = self.member(slot).id;
        self.kill(slot, in_flight);
        self.expire(id);
    }

    /// A new member in `slot` takes the group over, processes everything
    /// and commits.
    fn take_over(&mut self, slot: usize) {
        self.start(slot);
        self.settle();
        self.drain_and_commit(slot);
    }

    /// The member processes everything it can read and commits, until the
    /// commits (which make the records sent to repartition topics
    /// readable) leave nothing to read.
    fn drain_and_commit(&mut self, slot: usize) {
        loop {
            self.drain_input(slot);
            self.commit(slot);
            if self.readable(slot).is_empty() {
                return;
            }
        }
    }

    /// A member in slot 0 joins u1's user and preference and commits.
    fn first_owner_joins_u1(&mut self) {
        self.write(user("u1", Some("u1.1@a.com")));
        self.write(preference("u1", true));
        self.start(0);
        self.settle();
        self.drain_input(0);
        self.commit(0);
    }

    /// [`Simulation::first_owner_joins_u1`], then the member stalls past
    /// its session, and the group, settled without it,
    /// gives its tasks to a new member in slot 1; returns the stalled
    /// member's id.
    fn stall_the_first_owner(&mut self) -> u64 {
        self.first_owner_joins_u1();
        let stalled = self.member(0).id;
        self.slots[0].member.as_mut().expect("a member").stalled = true;
        self.expire(stalled);
        self.start(1);
        self.settle();
        stalled
    }

    /// Commits that `member` made after the cluster's clock read `since`.
    fn commits_by(&self, member: u64, since: u64) -> usize {
        let cluster = self.cluster.borrow();
        cluster
            .commits
            .iter()
            .filter(|c| c.member == member && c.at > since)
            .count()
    }
}

#[test]
fn a_commit_names_every_input_of_its_task_even_one_not_read_since_it_opened() {
    let mut sim = scripted();
    sim.write(user("u1", Some("u1.1@a.com")));
    sim.start(0);
    sim.settle();
    let partition = partition_of("u1");
    sim.feed_one(0, USERS, partition);
    sim.commit(0);
    let cluster = sim.cluster.borrow();
    let last = cluster.commits.last().expect("a commit");
    let named = |topic: &str| {
        last.offsets
            .iter()
            .any(|o| &*o.topic == topic && o.partition == partition)
    };
    assert!(named(USERS) && named(PREFERENCES), "{last:?}");
}

/// The owner wrote a deletion to the changelog and died before its
/// tombstone left and before it committed. The next owner restores to the
/// commit but commits again before it reads the deletion, so its commit
/// covers the dead owner's write. Without compensation, a third owner
/// restores the deletion as committed, reads it again as a no-op, and the
/// tombstone is never published.
#[test]
fn a_second_failover_does_not_lose_a_tombstone_the_first_owner_left_uncommitted() {
    let mut sim = scripted();
    let partition = partition_of("u1");
    let other = (2..200)
        .map(|n| format!("u{n}"))
        .find(|k| partition_of(k) == partition)
        .expect("a key on the same partition");
    sim.first_owner_joins_u1();
    assert!(sim.compacted(PROFILES).0.contains_key("u1"));

    let email = format!("{other}.1@b.org");
    sim.write(user(&other, Some(&email)));
    sim.write(user("u1", None));
    sim.feed_one(0, USERS, partition);
    sim.feed_one(0, USERS, partition);
    let changelog: Arc<str> = changelog_topic(super::APPLICATION, "users").into();
    let deletion = sim
        .member(0)
        .producer
        .position_of(|r| r.topic == changelog && r.record.key.as_deref() == Some(b"u1") && r.record.value.is_none())
        .expect("the deletion is queued");
    sim.kill_and_expire(0, deletion + 1);
    assert!(
        sim.compacted(PROFILES).0.contains_key("u1"),
        "the tombstone must not have left"
    );

    sim.start(1);
    sim.settle();
    sim.feed_one(1, USERS, partition);
    sim.commit(1);
    sim.kill_and_expire(1, 0);

    sim.take_over(2);
    assert!(!sim.compacted(PROFILES).0.contains_key("u1"), "{}", sim.history("u1"));
    sim.check().expect("every output and store matches the reference");
}

/// A deletion waits behind its key's lookup when a commit comes: the join
/// store already holds the deletion. Committing the changelog with it and
/// the input before the held records would make the next owner replay the
/// deletion as a no-op.
#[test]
fn a_task_holding_enrichment_records_does_not_commit_their_store_writes() {
    let mut sim = scripted();
    sim.write(user("u1", Some("u1.1@a.com")));
    sim.write(preference("u1", true));
    sim.start(0);
    sim.settle();
    sim.commit(0);
    let partition = partition_of("u1");
    sim.feed_one(0, USERS, partition);
    sim.feed_one(0, PREFERENCES, partition);
    sim.write(user("u1", None));
    sim.feed_one(0, USERS, partition);
    assert!(sim.member(0).manager.holds_records(), "the lookup has not answered");
    let before = sim.cluster.borrow().clock;
    sim.commit(0);
    assert!(
        sim.member(0).manager.commit_pending(),
        "the task drains before it commits"
    );
    assert!(
        sim.member(0)
            .manager
            .partitions_to_pause(false)
            .contains(&(Arc::from(USERS), partition)),
        "its input pauses meanwhile"
    );
    let queued = sim.member(0).producer.queued();
    sim.kill_and_expire(0, queued);
    let committed_since = sim.cluster.borrow().commits.iter().filter(|c| c.at > before).count();
    assert!(
        sim.cluster.borrow().commits.iter().filter(|c| c.at > before).all(|c| c
            .offsets
            .iter()
            .all(|o| o.partition != partition || &*o.topic != USERS || o.offset == 0)),
        "{committed_since} commits after the deletion named its task's inputs"
    );

    sim.take_over(1);
    assert!(!sim.compacted(TAGGED).0.contains_key("u1"), "{}", sim.history("u1"));
    sim.check().expect("every output and store matches the reference");
}

/// The first owner published a profile and died uncommitted; the next one,
/// reading the same records in another order, never joins them (the user
/// is deleted before its preference arrives), so it would publish nothing
/// for the user and the first owner's profile would stand.
#[test]
fn what_a_failed_owner_published_is_superseded_even_when_the_replay_publishes_nothing() {
    let mut sim = scripted();
    let partition = partition_of("u1");
    sim.write(user("u1", Some("u1.1@a.com")));
    sim.write(user("u1", None));
    sim.write(preference("u1", true));
    sim.start(0);
    sim.settle();
    sim.feed_one(0, USERS, partition);
    sim.feed_one(0, PREFERENCES, partition);
    let queued = sim.member(0).producer.queued();
    sim.kill_and_expire(0, queued);
    assert!(sim.compacted(PROFILES).0.contains_key("u1"));

    sim.start(1);
    sim.settle();
    sim.feed_one(1, USERS, partition);
    sim.feed_one(1, USERS, partition);
    sim.drain_and_commit(1);
    assert!(!sim.compacted(PROFILES).0.contains_key("u1"), "{}", sim.history("u1"));
    sim.check().expect("every output and store matches the reference");
}

/// A member stalls past its session; the group gives its task to another,
/// which fences the changelogs. The stale member wakes, processes and
/// tries to commit on a coordinator that takes stale commits: it finds the
/// new owner's fence among its writes and commits nothing, and the new
/// owner, finding the stale member's writes after its own fence, reopens
/// the task instead of committing over them.
#[test]
fn a_stale_member_that_wakes_up_commits_nothing_over_the_new_owner() {
    let mut sim = scripted();
    sim.cluster.borrow_mut().faults.fences_commits = false;
    let partition = partition_of("u1");
    let stale = sim.stall_the_first_owner();
    let woke_at = sim.cluster.borrow().clock;
    sim.slots[0].member.as_mut().expect("a member").stalled = false;
    sim.write(user("u1", Some("u1.2@b.org")));
    sim.feed_one(0, USERS, partition);
    sim.commit(0);
    assert_eq!(sim.commits_by(stale, woke_at), 0, "{}", sim.history("u1"));

    sim.drain_input(1);
    sim.commit(1);
    sim.drain_input(1);
    sim.commit(1);
    let _ = sim.slots[0].member.take();
    sim.check().expect("every output and store matches the reference");
}

/// A member whose assignment is lost commits nothing and drops what its
/// producer still queues.
#[test]
fn a_lost_assignment_commits_nothing_and_drops_the_queued_records() {
    let mut sim = scripted();
    sim.write(user("u1", Some("u1.1@a.com")));
    sim.write(preference("u1", true));
    sim.start(0);
    sim.settle();
    sim.drain_input(0);
    assert!(sim.member(0).producer.queued() > 0);
    let before = sim.cluster.borrow().clock;
    let id = sim.member(0).id;
    let group = sim.group_of(sim.member(0));
    let held = sim.member(0).view.borrow().assignment.clone();
    sim.slots[0]
        .member
        .as_mut()
        .expect("a member")
        .manager
        .on_revoked(&group, &held, true);
    assert_eq!(sim.commits_by(id, before), 0);
    assert_eq!(sim.member(0).producer.queued(), 0);
}

/// Two stream threads of one instance: the first stalls past its session,
/// and the group gives its tasks to the second while the first still has
/// their stores open. The second waits for each task's directory, its
/// input paused, instead of stopping on stores it cannot open (or opening
/// them under the stalled thread), and takes the tasks up once the first
/// has noticed its loss and closed them.
#[test]
fn a_thread_given_a_task_its_stalled_sibling_holds_waits_for_the_directory() {
    let mut sim = scripted_on(true);
    let partition = partition_of("u1");
    sim.stall_the_first_owner();
    sim.write(user("u1", Some("u1.2@b.org")));
    assert!(
        sim.member(1).manager.restoring(),
        "the tasks wait for their directories"
    );
    assert!(sim
        .member(1)
        .manager
        .partitions_to_pause(false)
        .contains(&(Arc::from(USERS), partition)));
    assert!(sim.readable(1).is_empty(), "nothing is processed meanwhile");

    sim.slots[0].member.as_mut().expect("a member").stalled = false;
    while sim.member(0).view.borrow().generation != 0 {
        sim.rebalance(0).expect("the stalled thread notices its loss");
    }
    sim.settle();
    // Until neither has anything left: a foreign-key join's answers cross
    // from one member's tasks to the other's.
    while [0, 1].into_iter().any(|slot| !sim.readable(slot).is_empty()) {
        for slot in [0, 1] {
            sim.drain_and_commit(slot);
        }
    }
    assert!(
        sim.compacted(PROFILES)
            .0
            .get("u1")
            .is_some_and(|p| p.contains("u1.2@b.org")),
        "{}",
        sim.history("u1")
    );
    sim.check().expect("every output and store matches the reference");
}

/// A join's task takes its two partitions' records in time order, however
/// the consumer hands them out: both preferences come first, the user
/// between them in time comes last, and the join still sees the first
/// preference, then the user, then the second.
#[test]
fn a_join_takes_its_inputs_in_time_order_however_they_are_handed_out() {
    let profiles_of = |in_time_order: bool| {
        let mut sim = scripted();
        sim.in_time_order = in_time_order;
        let partition = partition_of("u1");
        sim.write(preference("u1", true));
        sim.write(user("u1", Some("u1.1@a.com")));
        sim.write(preference("u1", false));
        sim.start(0);
        sim.settle();
        sim.feed_one(0, PREFERENCES, partition);
        sim.feed_one(0, PREFERENCES, partition);
        sim.feed_one(0, USERS, partition);
        let producer = &sim.member(0).producer;
        producer.deliver(producer.queued());
        let cluster = sim.cluster.borrow();
        let profiles: Vec<String> = (0..super::PARTITIONS)
            .flat_map(|p| cluster.log(PROFILES, p).iter())
            .filter(|r| r.key.as_deref() == Some(&b"u1"[..]))
            .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).to_string())
            .collect();
        profiles
    };
    assert_eq!(profiles_of(true), ["u1.1@a.com:true", "u1.1@a.com:false"]);
    // Fed as they come, the join never sees the first preference.
    assert_eq!(profiles_of(false), ["u1.1@a.com:false"]);
}
