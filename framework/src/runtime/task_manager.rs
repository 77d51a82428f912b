//! The tasks of a stream thread: created when their partitions are
//! assigned (stores restored first), fed records in offset order, committed
//! together, and closed when their partitions are revoked or the instance
//! shuts down.
//!
//! Commit protocol:
//! - at-least-once: flush the producer (outputs and changelog writes are
//!   acknowledged), then commit, in one request, the consumed offsets and,
//!   as the group's offsets of the changelog partitions, the offset after
//!   each task's last changelog write;
//! - exactly-once v2: the consumed offsets join the open transaction, which
//!   then commits.
//!
//! State after a failure: a local store is trusted only when its task closed
//! cleanly (it then has a [`Checkpoint`]); otherwise it is rebuilt from its
//! changelog. Under at-least-once the rebuild stops at the changelog offsets
//! of the last commit, not at the changelog's end: the records after the
//! commit are processed again, and must meet the state they met the first
//! time, or a table's update would see its own new value as the old one and
//! an aggregation would never subtract the old. The group keeps those
//! offsets with the input offsets they belong to, so any instance that
//! takes the task over reads both; before a task's first commit the
//! committed state is empty. Under exactly-once the
//! changelog read with `read_committed` ends at the last committed
//! transaction, which is the committed state already.

use super::checkpoint::Checkpoint;
use super::config::{ProcessingGuarantee, Settings};
use super::producer::{CommitFailure, RecordSender};
use super::query::LocalStores;
use super::restore::{ChangelogReader, RestoreFailure, RestoreRange};
use super::task::{Task, TaskId, TaskSettings};
use crate::error::WeirError;
use crate::metrics::{RuntimeMetrics, TaskMetrics, CONSUMER_LAG, STORE_BYTES, STORE_ENTRIES};
use crate::record::{Header, InputHeaders, InputRecord};
use crate::state::StoreSupplier;
use crate::topology::{changelog_topic, Topology};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONSUMER_TIMEOUT: Duration = Duration::from_secs(30);

/// A task with what the runtime tracks for it.
struct ActiveTask {
    task: Task,
    /// `<state.dir>/<application.id>/<task id>`.
    dir: PathBuf,
    /// Per source topic, the next offset to commit (`None`: nothing read yet).
    positions: Vec<(Arc<str>, Option<i64>)>,
    /// The task's stores' changelogs, as their restore left them.
    changelogs: Vec<RestoredChangelog>,
}

/// A store's changelog partition (the task's partition) and the offset its
/// restore reached.
struct RestoredChangelog {
    topic: String,
    end: i64,
}

/// Committed offsets by (topic, partition).
type CommittedOffsets = BTreeMap<(String, i32), i64>;

/// Everything a stream thread owns besides its consumer.
pub(crate) struct TaskManager {
    /// The stream thread's index in the instance.
    thread: usize,
    topology: Topology,
    settings: Arc<Settings>,
    stores: Arc<dyn StoreSupplier>,
    /// The tasks' stores as interactive queries see them.
    local_stores: Arc<LocalStores>,
    /// Source topic (as named in the cluster) → the sub-topology reading it.
    routes: HashMap<String, usize>,
    active: BTreeMap<TaskId, ActiveTask>,
    sender: RecordSender,
    reader: ChangelogReader,
    metrics: Arc<RuntimeMetrics>,
    /// Counters of tasks closed so far, so that none are lost from snapshots.
    closed_metrics: TaskMetrics,
    /// Records processed since the last commit.
    uncommitted: u64,
    /// An error raised inside a rebalance callback; the loop reports it.
    failure: Option<WeirError>,
}

impl TaskManager {
    pub(crate) fn new(
        thread: usize,
        topology: Topology,
        settings: Arc<Settings>,
        stores: Arc<dyn StoreSupplier>,
        local_stores: Arc<LocalStores>,
        sender: RecordSender,
        metrics: Arc<RuntimeMetrics>,
    ) -> Result<Self, WeirError> {
        let mut routes = HashMap::new();
        for sub in topology.subtopologies() {
            for topic in &sub.source_topics {
                routes.insert(topic.resolve(&settings.application_id), sub.id);
            }
        }
        let reader = ChangelogReader::new(&settings)?;
        Ok(TaskManager {
            thread,
            topology,
            settings,
            stores,
            local_stores,
            routes,
            active: BTreeMap::new(),
            sender,
            reader,
            metrics,
            closed_metrics: TaskMetrics::default(),
            uncommitted: 0,
            failure: None,
        })
    }

    /// Every topic the thread subscribes to: external and repartition sources.
    pub(crate) fn source_topics(&self) -> Vec<&str> {
        self.routes.keys().map(String::as_str).collect()
    }

    /// Processes one consumed record in its task and sends what it produced.
    pub(crate) fn process(&mut self, message: &BorrowedMessage<'_>) -> Result<(), WeirError> {
        let topic = message.topic();
        let sub = *self
            .routes
            .get(topic)
            .ok_or_else(|| WeirError::Other(format!("a record of '{topic}', which the topology does not read")))?;
        let id = TaskId {
            subtopology: sub,
            partition: message.partition(),
        };
        let active = self.active.get_mut(&id).ok_or_else(|| {
            WeirError::Other(format!(
                "a record of {topic}[{}] arrived, but task {id} is not assigned to this instance",
                message.partition()
            ))
        })?;
        let headers = KafkaHeaders(message);
        let record = InputRecord {
            key: message.key(),
            value: message.payload(),
            timestamp: message.timestamp().to_millis().unwrap_or(-1),
            headers: &headers,
        };
        active.task.process(topic, message.offset(), &record)?;
        for output in active.task.drain_output() {
            self.sender.send(&output)?;
        }
        if let Some((_, position)) = active.positions.iter_mut().find(|(t, _)| &**t == topic) {
            *position = Some(message.offset() + 1);
        }
        self.uncommitted += 1;
        Ok(())
    }

    /// Passes on the records whose enrichment finished; their outputs go to
    /// the producer and count as uncommitted work.
    pub(crate) fn complete_async(&mut self) -> Result<(), WeirError> {
        for active in self.active.values_mut() {
            let released = active.task.complete_async()?;
            if released > 0 {
                for output in active.task.drain_output() {
                    self.sender.send(&output)?;
                }
                self.uncommitted += released;
            }
        }
        Ok(())
    }

    /// Whether a task holds records that wait for asynchronous work.
    pub(crate) fn holds_records(&self) -> bool {
        self.active.values().any(|active| active.task.held_records() > 0)
    }

    /// Whether a task's asynchronous work is at its limit, so that input
    /// should pause.
    pub(crate) fn backpressured(&self) -> bool {
        self.active.values().any(|active| active.task.backpressured())
    }

    /// Serves the producer's delivery reports; a failed delivery stops the thread.
    pub(crate) fn poll_deliveries(&self) -> Result<(), WeirError> {
        self.sender.poll()
    }

    /// Sets the gauges of every active task: each source partition's lag
    /// (from the end offset of the consumer's last fetch, no request) and
    /// each store's size.
    pub(crate) fn publish_gauges<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>) {
        for (id, active) in &self.active {
            for (topic, position) in &active.positions {
                let Some(next) = position else { continue };
                if let Some(end) = fetched_end_offset(consumer, topic, id.partition) {
                    lag_gauge(topic, id.partition).set((end - next).max(0) as f64);
                }
            }
            for (store, size) in active.task.store_sizes() {
                let [entries, bytes] = store_gauges(store, id.partition);
                entries.set(size.entries as f64);
                if let Some(size_bytes) = size.bytes {
                    bytes.set(size_bytes as f64);
                }
            }
        }
    }

    /// Zeroes the gauges of a task that leaves this instance (its next
    /// owner reports them).
    fn clear_gauges(id: TaskId, active: &ActiveTask) {
        for (topic, _) in &active.positions {
            lag_gauge(topic, id.partition).set(0.0);
        }
        for (store, _) in active.task.stores() {
            store_gauges(store, id.partition)
                .iter()
                .for_each(|gauge| gauge.set(0.0));
        }
    }

    /// Records processed since the last commit.
    pub(crate) fn uncommitted(&self) -> u64 {
        self.uncommitted
    }

    /// The error a rebalance callback ran into, if any.
    pub(crate) fn take_failure(&mut self) -> Result<(), WeirError> {
        self.failure.take().map_or(Ok(()), Err)
    }

    fn is_exactly_once(&self) -> bool {
        self.settings.guarantee == ProcessingGuarantee::ExactlyOnceV2
    }

    /// Each changelog of a task with the offset after its last write.
    fn changelog_ends<'a>(
        &'a self,
        id: TaskId,
        active: &'a ActiveTask,
    ) -> impl Iterator<Item = (&'a RestoredChangelog, i64)> + 'a {
        active.changelogs.iter().map(move |changelog| {
            let acknowledged = self.sender.acknowledged_end(&changelog.topic, id.partition);
            (changelog, acknowledged.unwrap_or(0).max(changelog.end))
        })
    }

    /// The next offset of every partition the tasks read since they opened
    /// and, when `with_changelogs`, the end of each of their changelogs
    /// (exact only once the producer is flushed).
    fn offsets_to_commit(&self, with_changelogs: bool) -> Result<TopicPartitionList, WeirError> {
        let mut offsets = TopicPartitionList::new();
        let mut add = |topic: &str, partition: i32, offset: i64| {
            offsets
                .add_partition_offset(topic, partition, Offset::Offset(offset))
                .map_err(|e| WeirError::Kafka(e.to_string()))
        };
        for (id, active) in &self.active {
            let mut read_any = false;
            for (topic, position) in &active.positions {
                if let Some(next) = position {
                    add(topic, id.partition, active.task.committable_offset(topic, *next))?;
                    read_any = true;
                }
            }
            if with_changelogs && read_any {
                for (changelog, end) in self.changelog_ends(*id, active) {
                    add(&changelog.topic, id.partition, end)?;
                }
            }
        }
        self.announce_in(&mut offsets);
        Ok(offsets)
    }

    /// Puts this instance's `application.server` in the metadata of every
    /// offset of `offsets`, so that interactive queries elsewhere can name
    /// the owner of a partition (see [`super::query`]).
    fn announce_in(&self, offsets: &mut TopicPartitionList) {
        if let Some(server) = &self.settings.application_server {
            for mut element in offsets.elements() {
                element.set_metadata(server);
            }
        }
    }

    /// Commits the assigned partitions' committed offsets again with this
    /// instance's `application.server`, so that it is named as their owner
    /// before its first commit. Partitions without a committed offset are
    /// announced by that first commit. A failure only delays the
    /// announcement.
    fn announce_ownership<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, assigned: &TopicPartitionList) {
        if self.settings.application_server.is_none() {
            return;
        }
        let committed = match consumer.committed_offsets(assigned.clone(), CONSUMER_TIMEOUT) {
            Ok(committed) => committed,
            Err(error) => {
                tracing::warn!(%error, "cannot read the committed offsets to announce this instance as their owner");
                return;
            }
        };
        let mut offsets = TopicPartitionList::new();
        for element in committed.elements() {
            if let Offset::Offset(offset) = element.offset() {
                let _ = offsets.add_partition_offset(element.topic(), element.partition(), Offset::Offset(offset));
            }
        }
        if offsets.count() == 0 {
            return;
        }
        self.announce_in(&mut offsets);
        if let Err(error) = consumer.commit(&offsets, CommitMode::Sync) {
            tracing::warn!(%error, "cannot announce this instance as the owner of its partitions");
        }
    }

    /// Commits what the tasks processed (see the module documentation).
    pub(crate) fn commit<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> Result<(), CommitFailure> {
        if self.uncommitted == 0 {
            return Ok(());
        }
        let started = Instant::now();
        if self.is_exactly_once() {
            let offsets = self.offsets_to_commit(false)?;
            let group = consumer
                .group_metadata()
                .ok_or_else(|| WeirError::Kafka("the consumer has no group metadata".into()))?;
            self.sender.commit_transaction(&offsets, &group)?;
        } else {
            self.sender.flush()?;
            let offsets = self.offsets_to_commit(true)?;
            if offsets.count() > 0 {
                match consumer.commit(&offsets, CommitMode::Sync) {
                    Ok(()) => {}
                    // The group is moving partitions: the revocation that
                    // follows commits, or the next owner processes these
                    // records again, as at-least-once allows.
                    Err(KafkaError::ConsumerCommit(
                        code @ (RDKafkaErrorCode::RebalanceInProgress
                        | RDKafkaErrorCode::IllegalGeneration
                        | RDKafkaErrorCode::UnknownMemberId),
                    )) => {
                        tracing::info!(?code, "commit skipped: the group is rebalancing");
                        return Ok(());
                    }
                    Err(error) => return Err(WeirError::Kafka(format!("cannot commit offsets: {error}")).into()),
                }
            }
        }
        self.uncommitted = 0;
        self.metrics.committed(started.elapsed());
        self.publish_task_metrics();
        Ok(())
    }

    /// Commits; an abortable failure (exactly-once) aborts the transaction
    /// and rewinds every task to its last committed state instead of
    /// stopping the thread.
    pub(crate) fn commit_or_rewind<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> Result<(), WeirError> {
        match self.commit(consumer) {
            Ok(()) => Ok(()),
            Err(CommitFailure::Abortable(error)) => {
                tracing::warn!(%error, "the transaction failed; aborting it and rewinding to the last commit");
                self.rewind(consumer)
            }
            Err(CommitFailure::Fatal(error)) => Err(error),
        }
    }

    /// Aborts the open transaction, rebuilds every task from its changelog
    /// and seeks the consumer back to the committed offsets.
    fn rewind<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> Result<(), WeirError> {
        self.sender.abort_transaction()?;
        let ids: Vec<TaskId> = self.active.keys().copied().collect();
        for &id in &ids {
            self.close_task(id, false)?;
        }
        for &id in &ids {
            self.open_task(id, &CommittedOffsets::new())?;
        }
        let assignment = consumer
            .assignment()
            .map_err(|e| WeirError::Kafka(format!("cannot read the assignment: {e}")))?;
        let committed = consumer
            .committed_offsets(assignment, CONSUMER_TIMEOUT)
            .map_err(|e| WeirError::Kafka(format!("cannot read the committed offsets: {e}")))?;
        for mut element in committed.elements() {
            if element.offset() == Offset::Invalid {
                element
                    .set_offset(Offset::Beginning)
                    .map_err(|e| WeirError::Kafka(e.to_string()))?;
            }
        }
        consumer
            .seek_partitions(committed, CONSUMER_TIMEOUT)
            .map_err(|e| WeirError::Kafka(format!("cannot rewind the consumer: {e}")))?;
        self.uncommitted = 0;
        Ok(())
    }

    /// Flushes a task's stores and records, for each changelog partition,
    /// the offset its store now reflects.
    fn checkpoint(&mut self, id: TaskId) -> Result<(), WeirError> {
        let active = self.active.get_mut(&id).expect("checkpoint of an active task");
        active.task.flush()?;
        if !self.stores.persistent() {
            return Ok(());
        }
        let active = &self.active[&id];
        let checkpoint = Checkpoint {
            offsets: self
                .changelog_ends(id, active)
                .map(|(changelog, end)| ((changelog.topic.clone(), id.partition), end))
                .collect(),
        };
        checkpoint.write(&active.dir)
    }

    /// Commits and closes the tasks of revoked partitions.
    pub(crate) fn on_revoked<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>, revoked: &TopicPartitionList) {
        if let Err(error) = self.revoke(consumer, revoked) {
            self.failure.get_or_insert(error);
        }
    }

    fn revoke<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        revoked: &TopicPartitionList,
    ) -> Result<(), WeirError> {
        let ids = self.task_ids(revoked)?;
        tracing::info!(tasks = ?ids.iter().map(ToString::to_string).collect::<Vec<_>>(), "partitions revoked");
        let committed = self.commit(consumer).map_err(CommitFailure::into_error);
        let clean = match committed {
            Ok(()) => true,
            Err(error) if self.is_exactly_once() => {
                tracing::warn!(%error, "cannot commit before the revocation; the tasks' state will be rebuilt");
                self.abort();
                false
            }
            Err(error) => {
                // The records since the last commit will be processed again
                // by the partitions' next owner, as at-least-once allows.
                tracing::warn!(%error, "cannot commit before the revocation");
                true
            }
        };
        for id in ids {
            if self.active.contains_key(&id) {
                self.close_task(id, clean)?;
            }
        }
        self.metrics.rebalanced(self.thread, self.active.len());
        Ok(())
    }

    /// Opens (restoring their stores) the tasks of newly assigned partitions.
    pub(crate) fn on_assigned<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        assigned: &TopicPartitionList,
    ) {
        if let Err(error) = self.assign(consumer, assigned) {
            self.failure.get_or_insert(error);
        }
    }

    fn assign<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        assigned: &TopicPartitionList,
    ) -> Result<(), WeirError> {
        let ids = self.task_ids(assigned)?;
        let held: BTreeSet<(String, i32)> = assigned
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        for id in &ids {
            let sub = &self.topology.subtopologies()[id.subtopology];
            let missing: Vec<String> = sub
                .source_topics
                .iter()
                .map(|t| t.resolve(&self.settings.application_id))
                .filter(|t| !held.contains(&(t.clone(), id.partition)))
                .collect();
            if !missing.is_empty() {
                return Err(WeirError::Config(format!(
                    "task {id} got only part of its input partitions (missing partition {} of {}); co-partitioned \
                     topics must be assigned together, which needs the range assignor and identical subscriptions \
                     on every instance of '{}'",
                    id.partition,
                    missing.join(", "),
                    self.settings.application_id
                )));
            }
        }
        tracing::info!(tasks = ?ids.iter().map(ToString::to_string).collect::<Vec<_>>(), "partitions assigned");
        let committed = self.committed_changelog_ends(consumer, &ids)?;
        for id in ids {
            if !self.active.contains_key(&id) {
                self.open_task(id, &committed)?;
            }
        }
        self.announce_ownership(consumer, assigned);
        self.metrics.rebalanced(self.thread, self.active.len());
        Ok(())
    }

    /// The group's committed offsets of the changelog partitions of tasks
    /// `ids`: where their last commit left the changelogs. Only
    /// at-least-once restores use them (see the module documentation).
    ///
    /// A changelog partition without a committed offset has had no commit
    /// cover any of its writes (each commit of a task that processed records
    /// names its changelogs), so its committed state is empty: 0. Restoring
    /// it to its end instead would apply again, on top of that state, every
    /// input record the group has not committed as read.
    fn committed_changelog_ends<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        ids: &BTreeSet<TaskId>,
    ) -> Result<CommittedOffsets, WeirError> {
        let mut partitions = TopicPartitionList::new();
        for id in ids {
            for store in &self.topology.subtopologies()[id.subtopology].stores {
                partitions.add_partition(&changelog_topic(&self.settings.application_id, store), id.partition);
            }
        }
        if self.is_exactly_once() || partitions.count() == 0 {
            return Ok(CommittedOffsets::new());
        }
        let committed = consumer
            .committed_offsets(partitions, CONSUMER_TIMEOUT)
            .map_err(|e| WeirError::Kafka(format!("cannot read the committed offsets: {e}")))?;
        Ok(committed
            .elements()
            .iter()
            .map(|e| {
                let offset = e.offset().to_raw().filter(|o| *o >= 0).unwrap_or(0);
                ((e.topic().to_string(), e.partition()), offset)
            })
            .collect())
    }

    /// The tasks that read the partitions of `partitions`.
    fn task_ids(&self, partitions: &TopicPartitionList) -> Result<BTreeSet<TaskId>, WeirError> {
        partitions
            .elements()
            .iter()
            .map(|e| {
                let sub = self.routes.get(e.topic()).ok_or_else(|| {
                    WeirError::Other(format!("assigned '{}', which the topology does not read", e.topic()))
                })?;
                Ok(TaskId {
                    subtopology: *sub,
                    partition: e.partition(),
                })
            })
            .collect()
    }

    /// Creates a task and restores its stores (see the module documentation):
    /// from the checkpoint of a clean close, else into emptied stores from
    /// the changelogs' beginning; up to the last commit's changelog offsets
    /// when `committed` has them (at-least-once), else to the changelogs'
    /// end (exactly-once, where the end is the last committed transaction).
    fn open_task(&mut self, id: TaskId, committed: &CommittedOffsets) -> Result<(), WeirError> {
        let app = &self.settings.application_id;
        let sub = &self.topology.subtopologies()[id.subtopology];
        let dir = self.settings.app_dir().join(id.to_string());
        let persistent = self.stores.persistent();
        let checkpoint = if persistent { Checkpoint::read(&dir)? } else { None };
        if persistent {
            // From now on the stores take writes that no commit covers: a
            // crash must leave no checkpoint behind.
            Checkpoint::delete(&dir)?;
        }
        let mut ranges: Vec<RestoreRange> = sub
            .stores
            .iter()
            .map(|store| {
                let topic = changelog_topic(app, store);
                let changelog = (topic, id.partition);
                RestoreRange {
                    store: store.clone(),
                    from: checkpoint.as_ref().and_then(|c| c.offsets.get(&changelog).copied()),
                    to: committed.get(&changelog).copied(),
                    topic: changelog.0,
                    partition: id.partition,
                }
            })
            .collect();
        for range in &ranges {
            self.local_stores.restoring(&range.store, id.partition);
        }
        let ahead_of_commit = ranges
            .iter()
            .any(|r| matches!((r.from, r.to), (Some(from), Some(to)) if from > to));
        if persistent && ranges.iter().any(|r| r.from.is_none()) && dir.exists() {
            tracing::info!(task = %id, "no checkpoint; rebuilding the task's stores from their changelogs");
            wipe(&dir, &mut ranges)?;
        } else if ahead_of_commit {
            tracing::info!(task = %id, "the stores are ahead of the last commit; rebuilding them");
            wipe(&dir, &mut ranges)?;
        }
        let (task, changelogs) = match self.create_and_restore(id, &ranges)? {
            Some(restored) => restored,
            None => {
                tracing::warn!(task = %id, "the checkpoint points outside the changelog; rebuilding the task's stores");
                wipe(&dir, &mut ranges)?;
                self.create_and_restore(id, &ranges)?.ok_or_else(|| {
                    WeirError::Kafka(format!("task {id}: a changelog cannot be read from its beginning"))
                })?
            }
        };
        for (store, reader) in task.store_readers() {
            self.local_stores.ready(store, id.partition, reader);
        }
        let positions = sub
            .source_topics
            .iter()
            .map(|t| (Arc::from(t.resolve(app)), None))
            .collect();
        self.active.insert(
            id,
            ActiveTask {
                task,
                dir,
                positions,
                changelogs,
            },
        );
        Ok(())
    }

    /// Creates a task and replays its changelogs; `None` when a start offset
    /// is out of range.
    fn create_and_restore(
        &self,
        id: TaskId,
        ranges: &[RestoreRange],
    ) -> Result<Option<(Task, Vec<RestoredChangelog>)>, WeirError> {
        let task_settings = TaskSettings {
            application_id: &self.settings.application_id,
            stores: self.stores.as_ref(),
            default_error_handler: &self.settings.default_error_handler,
            exactly_once: self.is_exactly_once(),
        };
        let mut task = Task::new(&self.topology, id, &task_settings)?;
        let mut changelogs = Vec::with_capacity(ranges.len());
        for range in ranges {
            match self.reader.restore(&mut task, range, &self.metrics) {
                Ok(end) => changelogs.push(RestoredChangelog {
                    topic: range.topic.clone(),
                    end,
                }),
                Err(RestoreFailure::OutOfRange) => return Ok(None),
                Err(RestoreFailure::Failed(error)) => return Err(error),
            };
        }
        Ok(Some((task, changelogs)))
    }

    /// Closes a task: cleanly (stores flushed, checkpoint written) or, when
    /// its state cannot be trusted, by deleting its state.
    fn close_task(&mut self, id: TaskId, clean: bool) -> Result<(), WeirError> {
        if clean {
            self.checkpoint(id)?;
        }
        let Some(active) = self.active.remove(&id) else {
            return Ok(());
        };
        for (store, _) in active.task.stores() {
            self.local_stores.remove(store, id.partition);
        }
        Self::clear_gauges(id, &active);
        self.closed_metrics.merge(active.task.metrics());
        let dir = active.dir;
        drop(active.task);
        if !clean && self.stores.persistent() {
            remove_state(&dir)?;
        }
        Ok(())
    }

    /// Commits and closes every task, as a clean shutdown does.
    pub(crate) fn close_all<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> Result<(), WeirError> {
        let committed = self.commit(consumer).map_err(CommitFailure::into_error);
        let clean = committed.is_ok() || !self.is_exactly_once();
        if !clean {
            self.abort();
        }
        let ids: Vec<TaskId> = self.active.keys().copied().collect();
        for id in ids {
            self.close_task(id, clean)?;
        }
        self.publish_task_metrics();
        committed
    }

    /// Drops every task without committing, after an error stopped the
    /// thread: what the tasks did since the last commit is uncommitted, so
    /// their local state goes too, and the next start restores it from the
    /// changelogs.
    pub(crate) fn abandon_all(&mut self) -> Result<(), WeirError> {
        if self.is_exactly_once() {
            self.abort();
        }
        let ids: Vec<TaskId> = self.active.keys().copied().collect();
        for id in ids {
            self.close_task(id, false)?;
        }
        self.publish_task_metrics();
        Ok(())
    }

    /// Aborts the open transaction on the way to dropping the tasks' state;
    /// a failure only means the brokers abort it when it times out.
    fn abort(&self) {
        if let Err(error) = self.sender.abort_transaction() {
            tracing::warn!(%error, "cannot abort the open transaction; it will time out");
        }
    }

    fn publish_task_metrics(&self) {
        let mut total = self.closed_metrics.clone();
        for active in self.active.values() {
            total.merge(active.task.metrics());
        }
        self.metrics.set_tasks(self.thread, total);
    }
}

/// The consumer lag gauge of `topic[partition]`.
fn lag_gauge(topic: &str, partition: i32) -> metrics::Gauge {
    metrics::gauge!(CONSUMER_LAG, "topic" => topic.to_string(), "partition" => partition.to_string())
}

/// The entries and bytes gauges of a store's partition.
fn store_gauges(store: &str, partition: i32) -> [metrics::Gauge; 2] {
    let labels = [("store", store.to_string()), ("partition", partition.to_string())];
    [
        metrics::gauge!(STORE_ENTRIES, &labels),
        metrics::gauge!(STORE_BYTES, &labels),
    ]
}

/// The end offset of `topic[partition]` as the consumer's last fetch saw it
/// (librdkafka caches it; rdkafka only offers the variant that asks the
/// broker); `None` before the first fetch.
fn fetched_end_offset<C: ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str, partition: i32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client handle lives as long as `consumer`, the topic is a
    // NUL-terminated string that outlives the call, and librdkafka only
    // writes the two offsets.
    let error = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (error == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}

/// Deletes a task's state and makes its restore start from the beginning.
fn wipe(dir: &std::path::Path, ranges: &mut [RestoreRange]) -> Result<(), WeirError> {
    remove_state(dir)?;
    ranges.iter_mut().for_each(|r| r.from = None);
    Ok(())
}

/// Deletes a task's state directory, if any.
fn remove_state(dir: &std::path::Path) -> Result<(), WeirError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(WeirError::StateDir(format!("cannot remove {}: {e}", dir.display())))
        }
        _ => Ok(()),
    }
}

/// The headers of a consumed record, parsed and copied only for a dead
/// letter (or by the test readers, which keep every record): librdkafka
/// parses headers on first access, a cost most records never need.
pub(crate) struct KafkaHeaders<'a>(pub &'a BorrowedMessage<'a>);

impl InputHeaders for KafkaHeaders<'_> {
    fn to_headers(&self) -> Vec<Header> {
        self.0
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| Header {
                        key: h.key.to_string(),
                        value: h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}
