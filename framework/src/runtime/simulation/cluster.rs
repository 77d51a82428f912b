//! A model of a Kafka cluster for the simulation: partition logs, a group
//! coordinator with generations and the range assignor, committed offsets,
//! and the simulation's implementations of the task manager's ports
//! ([`Group`], [`Output`], [`ChangelogSource`]), with the faults the
//! schedule injects.
//!
//! What it models faithfully: offsets are assigned in the order records
//! reach a partition; a producer's records reach the brokers in the order
//! it sent them, only when the schedule lets them (or at a flush); a commit
//! is one request that lands whole; a coordinator that does not check
//! generations takes a stale member's commit (Tansu 0.6.0), one that does
//! refuses it (Kafka). What it leaves out: transactions (the simulation
//! runs at-least-once), compaction (reads see every record, as tests on
//! real brokers must assume anyway).

use super::rng::Rng;
use crate::error::WeirError;
use crate::partition::partition_for_key;
use crate::record::OutputRecord;
use crate::runtime::broker::{
    Acknowledged, ChangelogRange, ChangelogRecord, ChangelogSource, ChangelogVisitor, CommitFailure, CommitRefused,
    Group, GroupIdentity, Output, PartitionOffset, ReadProgress, RestoreFailure,
};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// A record in a partition log.
#[derive(Debug, Clone)]
pub(super) struct Stored {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: i64,
    /// The member that wrote it (0: the test's input), for diagnostics.
    pub writer: u64,
    /// When it was appended, on the cluster's clock (set by the cluster).
    pub at: u64,
    /// Whether its writer was out of the group when it arrived: a stale
    /// member that has not noticed yet (set by the cluster).
    pub zombie: bool,
}

/// A commit that landed, for diagnostics.
#[derive(Debug, Clone)]
pub(super) struct Commit {
    pub at: u64,
    pub member: u64,
    pub generation: u64,
    pub offsets: Vec<PartitionOffset>,
}

/// Which faults the cluster injects, and how its coordinator behaves.
#[derive(Debug, Clone, Copy)]
pub(super) struct Faults {
    /// Whether commits of a member outside the current generation are
    /// refused (Kafka), or taken (Tansu 0.6.0).
    pub fences_commits: bool,
    /// Whether every commit is refused while a rebalance is under way, even
    /// a revoking member's (librdkafka's mock cluster).
    pub refuses_commits_while_rebalancing: bool,
    /// The chance that an offset fetch fails.
    pub offset_fetch_error: f64,
    /// The chance that a commit fails without landing.
    pub commit_error: f64,
    /// The chance that a commit lands but its answer is lost.
    pub commit_answer_lost: f64,
    /// The chance that a changelog read fails.
    pub read_error: f64,
}

/// Each member's partitions in one generation.
type Assignment = BTreeMap<u64, Vec<(Arc<str>, i32)>>;

/// The consumer group's coordinator.
#[derive(Debug, Default)]
pub(super) struct Coordinator {
    pub generation: u64,
    /// Members in the group.
    pub members: BTreeSet<u64>,
    /// Members that have rejoined this generation (revoked what they held).
    rejoined: BTreeSet<u64>,
    /// This generation's assignment, once every member has rejoined.
    assignment: Option<Assignment>,
}

/// The whole cluster, shared by every member of a simulation run.
pub(super) struct Cluster {
    pub topics: BTreeMap<Arc<str>, Vec<Vec<Stored>>>,
    /// The topics the members subscribe to.
    pub sources: Vec<Arc<str>>,
    pub committed: HashMap<(Arc<str>, i32), i64>,
    pub coordinator: Coordinator,
    pub faults: Faults,
    pub rng: Rng,
    /// Partitions of topics created on their first write (sinks).
    pub default_partitions: i32,
    /// Counts appends and commits, to order them in diagnostics.
    pub clock: u64,
    pub commits: Vec<Commit>,
}

/// The cluster as every port of every member holds it.
pub(super) type SharedCluster = Rc<RefCell<Cluster>>;

impl Cluster {
    pub fn create_topic(&mut self, topic: &str, partitions: i32) {
        self.topics
            .entry(Arc::from(topic))
            .or_insert_with(|| vec![Vec::new(); partitions as usize]);
    }

    /// Appends a record; returns its partition and offset.
    pub fn append(&mut self, topic: &Arc<str>, partition: Option<i32>, mut record: Stored) -> (i32, i64) {
        self.clock += 1;
        record.at = self.clock;
        record.zombie = record.writer != 0 && !self.coordinator.members.contains(&record.writer);
        let default = self.default_partitions as usize;
        let partitions = self
            .topics
            .entry(topic.clone())
            .or_insert_with(|| vec![Vec::new(); default]);
        let partition = partition.unwrap_or_else(|| match &record.key {
            Some(key) => partition_for_key(key, partitions.len() as i32),
            None => 0,
        });
        let log = &mut partitions[partition as usize];
        log.push(record);
        (partition, log.len() as i64 - 1)
    }

    pub fn log(&self, topic: &str, partition: i32) -> &[Stored] {
        self.topics
            .get(topic)
            .and_then(|p| p.get(partition as usize))
            .map_or(&[], Vec::as_slice)
    }

    pub fn end(&self, topic: &str, partition: i32) -> i64 {
        self.log(topic, partition).len() as i64
    }

    /// A member joins (or comes back): a new generation starts.
    pub fn join(&mut self, member: u64) {
        self.coordinator.members.insert(member);
        self.new_generation();
    }

    /// A member leaves, or its session expires: a new generation starts.
    pub fn leave(&mut self, member: u64) {
        if self.coordinator.members.remove(&member) {
            self.new_generation();
        }
    }

    fn new_generation(&mut self) {
        let coordinator = &mut self.coordinator;
        coordinator.generation += 1;
        coordinator.rejoined.clear();
        coordinator.assignment = None;
    }

    /// A member has given up its old partitions and rejoins this
    /// generation; once all have, the range assignor splits every source
    /// topic's partitions among them.
    pub fn rejoin(&mut self, member: u64) {
        let coordinator = &mut self.coordinator;
        if !coordinator.members.contains(&member) {
            return;
        }
        coordinator.rejoined.insert(member);
        if coordinator.rejoined != coordinator.members || coordinator.assignment.is_some() {
            return;
        }
        let members: Vec<u64> = coordinator.members.iter().copied().collect();
        let mut assignment: Assignment = members.iter().map(|m| (*m, Vec::new())).collect();
        for topic in &self.sources {
            let partitions = self.topics[topic].len();
            let (per, extra) = (partitions / members.len(), partitions % members.len());
            let mut next = 0;
            for (index, member) in members.iter().enumerate() {
                let count = per + usize::from(index < extra);
                for partition in next..next + count {
                    assignment
                        .get_mut(member)
                        .expect("a member")
                        .push((topic.clone(), partition as i32));
                }
                next += count;
            }
        }
        coordinator.assignment = Some(assignment);
    }

    /// What `member` is assigned in this generation, once it is decided.
    pub fn assignment_of(&self, member: u64) -> Option<Vec<(Arc<str>, i32)>> {
        self.coordinator
            .assignment
            .as_ref()
            .and_then(|a| a.get(&member).cloned())
    }

    pub fn rebalancing(&self) -> bool {
        self.coordinator.assignment.is_none()
    }
}

/// What a member's consumer believes: its generation and assignment, and
/// where it reads each partition.
#[derive(Debug, Default)]
pub(super) struct ConsumerView {
    pub member: u64,
    /// The generation whose assignment it holds (0: none).
    pub generation: u64,
    pub assignment: Vec<(Arc<str>, i32)>,
    pub positions: HashMap<(Arc<str>, i32), i64>,
}

/// A member's consumer as the task manager sees it.
pub(super) struct ModelGroup {
    pub cluster: SharedCluster,
    pub view: Rc<RefCell<ConsumerView>>,
}

fn injected(what: &str) -> WeirError {
    WeirError::Kafka(format!("injected fault: {what}"))
}

impl Group for ModelGroup {
    fn committed(&self, partitions: &[(Arc<str>, i32)]) -> Result<Vec<Option<i64>>, WeirError> {
        let mut cluster = self.cluster.borrow_mut();
        let chance = cluster.faults.offset_fetch_error;
        if cluster.rng.chance(chance) {
            return Err(injected("offset fetch failed"));
        }
        Ok(partitions.iter().map(|p| cluster.committed.get(p).copied()).collect())
    }

    fn commit(&self, offsets: &[PartitionOffset], _metadata: Option<&str>) -> Result<(), CommitRefused> {
        let mut cluster = self.cluster.borrow_mut();
        let view = self.view.borrow();
        let faults = cluster.faults;
        if faults.fences_commits
            && (!cluster.coordinator.members.contains(&view.member)
                || view.generation != cluster.coordinator.generation)
        {
            return Err(CommitRefused::NotNow("stale generation".into()));
        }
        if faults.refuses_commits_while_rebalancing && cluster.rebalancing() {
            return Err(CommitRefused::NotNow("rebalance in progress".into()));
        }
        if cluster.rng.chance(faults.commit_error) {
            return Err(CommitRefused::Failed(injected("commit failed")));
        }
        for offset in offsets {
            cluster
                .committed
                .insert((offset.topic.clone(), offset.partition), offset.offset);
        }
        cluster.clock += 1;
        let commit = Commit {
            at: cluster.clock,
            member: view.member,
            generation: view.generation,
            offsets: offsets.to_vec(),
        };
        cluster.commits.push(commit);
        if cluster.rng.chance(faults.commit_answer_lost) {
            return Err(CommitRefused::Failed(injected("the commit's answer was lost")));
        }
        Ok(())
    }

    fn owns(&self, topic: &str, partition: i32) -> bool {
        self.view
            .borrow()
            .assignment
            .iter()
            .any(|(t, p)| &**t == topic && *p == partition)
    }

    fn seek(&self, topic: &str, partition: i32, offset: i64) -> Result<(), WeirError> {
        self.view
            .borrow_mut()
            .positions
            .insert((Arc::from(topic), partition), offset);
        Ok(())
    }

    fn transaction_identity(&self) -> Result<GroupIdentity, WeirError> {
        Err(WeirError::Other("the simulation runs at-least-once".into()))
    }

    fn fetched_end(&self, topic: &str, partition: i32) -> Option<i64> {
        Some(self.cluster.borrow().end(topic, partition))
    }

    fn has_unread(&self, topic: &str, partition: i32, next: i64) -> bool {
        let position = self
            .view
            .borrow()
            .positions
            .get(&(Arc::from(topic), partition))
            .copied();
        position.unwrap_or(next) < self.cluster.borrow().end(topic, partition)
    }
}

/// A member's producer: records wait in its queue until the schedule
/// delivers them, a flush delivers them all, and a crash loses the rest.
pub(super) struct ModelProducer {
    member: u64,
    cluster: SharedCluster,
    queue: RefCell<VecDeque<OutputRecord>>,
    acknowledged: RefCell<HashMap<(Arc<str>, i32), Acknowledged>>,
}

impl ModelProducer {
    pub fn new(member: u64, cluster: SharedCluster) -> Self {
        ModelProducer {
            member,
            cluster,
            queue: RefCell::default(),
            acknowledged: RefCell::default(),
        }
    }

    /// Delivers the first `count` queued records.
    pub fn deliver(&self, count: usize) {
        for _ in 0..count {
            let Some(record) = self.queue.borrow_mut().pop_front() else {
                return;
            };
            let stored = Stored {
                key: record.record.key.clone(),
                value: record.record.value.clone(),
                timestamp: record.record.timestamp,
                writer: self.member,
                at: 0,
                zombie: false,
            };
            let (partition, offset) = self
                .cluster
                .borrow_mut()
                .append(&record.topic, record.partition, stored);
            if record.partition.is_some() {
                let mut acknowledged = self.acknowledged.borrow_mut();
                let slot = acknowledged.entry((record.topic.clone(), partition)).or_default();
                slot.end = Some(slot.end.unwrap_or(0).max(offset + 1));
                slot.count += 1;
            }
        }
    }

    pub fn queued(&self) -> usize {
        self.queue.borrow().len()
    }

    /// Where the first queued record that `matches` is in the queue.
    pub fn position_of(&self, matches: impl Fn(&OutputRecord) -> bool) -> Option<usize> {
        self.queue.borrow().iter().position(matches)
    }

    /// The process dies: what was on the wire (the first `in_flight`
    /// records) still arrives, the rest is lost.
    pub fn crash(&self, in_flight: usize) {
        self.deliver(in_flight);
        self.queue.borrow_mut().clear();
    }
}

/// The producer port over a shared [`ModelProducer`].
pub(super) struct ProducerPort(pub Rc<ModelProducer>);

impl Output for ProducerPort {
    fn send(&self, record: &OutputRecord) -> Result<(), WeirError> {
        self.0.queue.borrow_mut().push_back(record.clone());
        Ok(())
    }

    fn poll(&self, _wait: Duration) -> Result<(), WeirError> {
        Ok(())
    }

    /// The model's deliveries never time out.
    fn behind(&self) -> bool {
        false
    }

    fn flush(&self) -> Result<(), WeirError> {
        let queued = self.0.queued();
        self.0.deliver(queued);
        Ok(())
    }

    fn purge(&self) {
        self.0.queue.borrow_mut().clear();
    }

    fn acknowledged(&self, topic: &str, partition: i32) -> Acknowledged {
        self.0
            .acknowledged
            .borrow()
            .get(&(Arc::from(topic), partition))
            .copied()
            .unwrap_or_default()
    }

    fn commit_transaction(
        &self,
        _offsets: &[PartitionOffset],
        _metadata: Option<&str>,
        _group: &GroupIdentity,
    ) -> Result<(), CommitFailure> {
        Err(CommitFailure::Fatal(WeirError::Other(
            "the simulation runs at-least-once".into(),
        )))
    }

    fn abort_transaction(&self) -> Result<(), WeirError> {
        Err(WeirError::Other("the simulation runs at-least-once".into()))
    }
}

/// Reads changelog partitions of the model cluster.
pub(super) struct ModelReader(pub SharedCluster);

impl ChangelogSource for ModelReader {
    fn read_some(
        &self,
        range: &ChangelogRange,
        max_records: usize,
        visit: &mut ChangelogVisitor<'_>,
    ) -> Result<ReadProgress, RestoreFailure> {
        let (records, progress) = {
            let mut cluster = self.0.borrow_mut();
            let chance = cluster.faults.read_error;
            if cluster.rng.chance(chance) {
                return Err(RestoreFailure::Failed(injected("changelog read failed")));
            }
            let log = cluster.log(&range.topic, range.partition);
            let from = range.from.unwrap_or(0);
            let to = range.to.unwrap_or(log.len() as i64);
            if from > log.len() as i64 {
                return Err(RestoreFailure::OutOfRange);
            }
            if to > log.len() as i64 {
                return Err(RestoreFailure::Failed(WeirError::Kafka(format!(
                    "{}[{}] ends at {} before the offset {to} to read to",
                    range.topic,
                    range.partition,
                    log.len()
                ))));
            }
            let until = to.min(from.saturating_add(max_records.min(i64::MAX as usize) as i64));
            let records: Vec<ChangelogRecord> = (from..until)
                .filter_map(|offset| {
                    let stored = &log[offset as usize];
                    Some(ChangelogRecord {
                        offset,
                        key: stored.key.clone()?,
                        value: stored.value.clone(),
                    })
                })
                .collect();
            let progress = if until < to {
                ReadProgress::More(until)
            } else {
                ReadProgress::Done(to)
            };
            (records, progress)
        };
        for batch in records.chunks(50) {
            visit(batch, 0)?;
        }
        Ok(progress)
    }
}
