//! The tasks of a stream thread: opened when their partitions are assigned
//! (stores restored first), fed records in offset order, committed at
//! commit points, and closed when their partitions are revoked or the
//! thread stops.
//!
//! This is routing and lifecycle only. What a commit names and when a task
//! may commit is [`super::commit`]'s; where a restore starts and stops, the
//! fence and the checkpoint are [`super::state_manager`]'s; the brokers are
//! reached through [`super::broker`], so the same manager runs against
//! rdkafka and against the protocol's simulation.

use super::broker::{ChangelogSource, CommitFailure, CommitRefused, Group, Output, PartitionOffset};
use super::commit::{verdict, Candidate, InputPositions, Rewinds, Verdict};
use super::config::{ProcessingGuarantee, Settings};
use super::gauges;
use super::partition_group::{Next, PartitionGroup};
use super::query::LocalStores;
use super::state_dir_lock::TaskDirLock;
use super::state_manager::{remove_state, OpenRequest, Restoration, TaskState};
use super::task::{Task, TaskId, TaskSettings};
use super::GlobalStores;
use crate::enrich::AnswerWait;
use crate::error::WeirError;
use crate::metrics::{RuntimeMetrics, TaskMetrics};
use crate::record::InputRecord;
use crate::state::{CacheBudget, StoreSupplier};
use crate::topology::{changelog_topic, Topology};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a revocation or a shutdown waits for asynchronous work to
/// finish, so that its tasks can commit and close cleanly; a task still
/// holding records then closes without committing them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a task is in its life.
enum Phase {
    /// Its state directory is still another's: a previous owner that has
    /// not yet noticed that it lost the task (see [`super::state_dir_lock`]).
    /// Its input is paused; the restore loop tries the lock again, and
    /// opens the task from these offsets, read at its assignment.
    Waiting(CommittedOffsets),
    /// Its stores restore; its input is paused.
    Restoring(Restoration),
    Running {
        task: Task,
        state: TaskState,
    },
}

/// A task with what the runtime tracks for it.
struct ActiveTask {
    phase: Phase,
    inputs: InputPositions,
    /// Opened or processed since its last commit.
    uncommitted: bool,
    /// Waiting at a commit point for its asynchronous work: its input is
    /// paused.
    draining: bool,
    /// Held from the task's open until it is closed, when its stores are
    /// persistent.
    dir_lock: Option<TaskDirLock>,
    /// With several input partitions: their records waiting to be taken
    /// in time order.
    queued: Option<PartitionGroup>,
}

impl ActiveTask {
    /// The task, if it processes.
    fn running(&mut self) -> Option<&mut Task> {
        match &mut self.phase {
            Phase::Running { task, .. } => Some(task),
            Phase::Waiting(_) | Phase::Restoring(_) => None,
        }
    }

    /// The task in either phase (its stores, for gauges).
    fn task(&self) -> Option<&Task> {
        match &self.phase {
            Phase::Running { task, .. } => Some(task),
            Phase::Restoring(restoration) => restoration.task(),
            Phase::Waiting(_) => None,
        }
    }

    fn held_records(&self) -> usize {
        match &self.phase {
            Phase::Running { task, .. } => task.held_records(),
            Phase::Waiting(_) | Phase::Restoring(_) => 0,
        }
    }

    fn backpressured(&self) -> bool {
        match &self.phase {
            Phase::Running { task, .. } => task.backpressured(),
            Phase::Waiting(_) | Phase::Restoring(_) => false,
        }
    }

    /// Waiting for its directory or restoring: not processing yet.
    fn is_opening(&self) -> bool {
        matches!(self.phase, Phase::Waiting(_) | Phase::Restoring(_))
    }
}

/// What became of a record handed to [`TaskManager::process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Processed {
    Done,
    /// Its task is restoring: the consumer must read the record again.
    NotYet,
}

/// How a stream thread reaches the brokers and its enrichments' answers.
pub(crate) struct ThreadIo {
    pub output: Box<dyn Output>,
    pub changelogs: Box<dyn ChangelogSource>,
    pub answers: Box<dyn AnswerWait>,
}

/// The stores of a stream thread's tasks: where they open their own, how
/// interactive queries find them, and the instance's global tables.
pub(crate) struct ThreadStores {
    pub supplier: Arc<dyn StoreSupplier>,
    pub local: Arc<LocalStores>,
    pub global: GlobalStores,
}

/// Committed offsets by (topic, partition), as the group returned them.
type CommittedOffsets = HashMap<(Arc<str>, i32), Option<i64>>;

/// Everything a stream thread owns besides its consumer.
pub(crate) struct TaskManager {
    /// The stream thread's index in the instance.
    thread: usize,
    topology: Topology,
    settings: Arc<Settings>,
    stores: Arc<dyn StoreSupplier>,
    /// The tasks' stores as interactive queries see them.
    local_stores: Arc<LocalStores>,
    /// The instance's global tables, which every task reads.
    global_stores: GlobalStores,
    /// Source topic (as named in the cluster) → the sub-topology reading it.
    routes: HashMap<Arc<str>, usize, foldhash::fast::RandomState>,
    active: BTreeMap<TaskId, ActiveTask>,
    output: Box<dyn Output>,
    changelogs: Box<dyn ChangelogSource>,
    answers: Box<dyn AnswerWait>,
    metrics: Arc<RuntimeMetrics>,
    /// Counters of tasks closed so far, so that none are lost from snapshots.
    closed_metrics: TaskMetrics,
    /// An error raised inside a rebalance callback; the loop reports it.
    failure: Option<WeirError>,
    /// Written into fence records: which instance and thread fenced.
    owner: String,
    /// Assignments and revocations so far.
    rebalances: u64,
    /// Tasks opened since the last commit point: commit without waiting
    /// for the commit interval.
    commit_soon: bool,
    /// Set when an error or a panic stopped the thread: its tasks are
    /// dropped uncommitted, whatever happens after.
    abandoned: bool,
    /// Exactly-once: aborted transactions in a row.
    rewinds: Rewinds,
    /// The store cache memory of this thread.
    cache: Rc<CacheBudget>,
}

impl TaskManager {
    pub(crate) fn new(
        thread: usize,
        topology: Topology,
        settings: Arc<Settings>,
        stores: ThreadStores,
        io: ThreadIo,
        metrics: Arc<RuntimeMetrics>,
    ) -> Self {
        let ThreadStores {
            supplier: stores,
            local: local_stores,
            global: global_stores,
        } = stores;
        let ThreadIo {
            output,
            changelogs,
            answers,
        } = io;
        let mut routes = HashMap::default();
        for sub in topology.subtopologies() {
            for topic in &sub.source_topics {
                routes.insert(Arc::from(topic.resolve(&settings.application_id)), sub.id);
            }
        }
        let owner = format!(
            "{}/{}/thread-{thread}",
            settings.application_server.as_deref().unwrap_or("-"),
            std::process::id()
        );
        let rewinds = Rewinds::new(settings.max_rewinds);
        let cache = CacheBudget::new(
            settings.cache_max_bytes / settings.stream_threads.max(1),
            settings.merge_table_changes,
        );
        TaskManager {
            cache,
            thread,
            topology,
            settings,
            stores,
            local_stores,
            global_stores,
            routes,
            active: BTreeMap::new(),
            output,
            changelogs,
            answers,
            metrics,
            closed_metrics: TaskMetrics::default(),
            failure: None,
            owner,
            rebalances: 0,
            commit_soon: false,
            abandoned: false,
            rewinds,
        }
    }

    /// Every topic the thread subscribes to: external and repartition sources.
    pub(crate) fn source_topics(&self) -> Vec<&str> {
        self.routes.keys().map(|t| &**t).collect()
    }

    /// Processes one consumed record in its task and sends what it
    /// produced; a task with several input partitions queues it, for
    /// [`TaskManager::process_queued`].
    pub(crate) fn process(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        record: &InputRecord<'_>,
    ) -> Result<Processed, WeirError> {
        let sub = *self
            .routes
            .get(topic)
            .ok_or_else(|| WeirError::Other(format!("a record of '{topic}', which the topology does not read")))?;
        let id = TaskId {
            subtopology: sub,
            partition,
        };
        let active = self.active.get_mut(&id).ok_or_else(|| {
            WeirError::Other(format!(
                "a record of {topic}[{partition}] arrived, but task {id} is not assigned to this stream thread"
            ))
        })?;
        let opening = active.is_opening();
        if let Some(queued) = &mut active.queued {
            if opening {
                return Ok(Processed::NotYet);
            }
            // Taken in time order once the batch is in (`process_queued`).
            queued.push(topic, offset, record);
            return Ok(Processed::Done);
        }
        let Some(task) = active.running() else {
            // Its input is paused while it restores; a record fetched
            // before the pause is read again afterwards.
            return Ok(Processed::NotYet);
        };
        task.process(topic, offset, record)?;
        send_output(self.output.as_ref(), task)?;
        active.inputs.processed(topic, offset);
        active.uncommitted = true;
        Ok(Processed::Done)
    }

    /// Processes what the tasks with several input partitions have queued,
    /// in time order, as far as their inputs allow (see
    /// [`super::partition_group`]); the stream thread calls it after each
    /// batch it polled, and on every pass, so that a task waiting for a
    /// partition goes on once the wait is over.
    pub(crate) fn process_queued(&mut self, group: &dyn Group) -> Result<(), WeirError> {
        for active in self.active.values_mut().filter(|active| active.queued.is_some()) {
            process_queued(active, self.output.as_ref(), group)?;
        }
        Ok(())
    }

    /// Writes what the running tasks' store caches hold to their stores;
    /// the stream thread calls it after each batch of records, so that
    /// interactive queries see a batch's writes once it is processed.
    pub(crate) fn write_back(&mut self) -> Result<(), WeirError> {
        self.active
            .values_mut()
            .filter_map(ActiveTask::running)
            .try_for_each(Task::write_back)
    }

    /// Passes on the table changes the running tasks' store caches
    /// deferred, with what follows from them; the outputs go to the
    /// producer. Every commit starts with it.
    fn release_deferred(&mut self) -> Result<(), WeirError> {
        for task in self.active.values_mut().filter_map(ActiveTask::running) {
            task.release_deferred()?;
            send_output(self.output.as_ref(), task)?;
        }
        Ok(())
    }

    /// Passes on the records whose enrichment finished; their outputs go to
    /// the producer.
    pub(crate) fn complete_async(&mut self) -> Result<(), WeirError> {
        for task in self.active.values_mut().filter_map(ActiveTask::running) {
            task.complete_async()?;
            send_output(self.output.as_ref(), task)?;
        }
        Ok(())
    }

    /// Runs the wall-clock punctuations of the running tasks due at
    /// `now_ms` and sends what they produced.
    pub(crate) fn punctuate(&mut self, now_ms: i64) -> Result<(), WeirError> {
        for task in self.active.values_mut().filter_map(ActiveTask::running) {
            task.punctuate_wall_clock(now_ms)?;
            send_output(self.output.as_ref(), task)?;
        }
        Ok(())
    }

    /// Whether a task holds records that wait for asynchronous work.
    pub(crate) fn holds_records(&self) -> bool {
        self.active.values().any(|active| active.held_records() > 0)
    }

    /// A mark to wait for enrichment answers from, taken before
    /// [`TaskManager::complete_async`].
    pub(crate) fn answer_mark(&self) -> u64 {
        self.answers.mark()
    }

    /// Blocks until an enrichment answer arrived after `mark`, at most `timeout`.
    pub(crate) fn wait_for_answers(&self, mark: u64, timeout: Duration) {
        self.answers.wait(mark, timeout);
    }

    /// Whether a task's asynchronous work is at its limit, or the brokers
    /// are behind what the thread sent, so that input should pause.
    pub(crate) fn backpressured(&self) -> bool {
        self.active.values().any(ActiveTask::backpressured) || self.output.behind()
    }

    /// The input partitions that must not be read now: every one if
    /// `everything`, else those of tasks restoring or draining for a
    /// commit, and those whose queue is full.
    pub(crate) fn partitions_to_pause(&self, everything: bool) -> BTreeSet<(Arc<str>, i32)> {
        let whole_tasks = self
            .active
            .values()
            .filter(|active| everything || active.draining || active.is_opening())
            .flat_map(|active| {
                let partition = active.inputs.partition();
                active.inputs.topics().map(move |topic| (topic.clone(), partition))
            });
        let full_queues = self.active.values().flat_map(|active| {
            let partition = active.inputs.partition();
            active
                .queued
                .iter()
                .flat_map(PartitionGroup::full)
                .map(move |topic| (topic.clone(), partition))
        });
        whole_tasks.chain(full_queues).collect()
    }

    /// Serves the producer's delivery reports; a failed delivery stops the thread.
    pub(crate) fn poll_deliveries(&self) -> Result<(), WeirError> {
        self.output.poll(Duration::ZERO)
    }

    /// Waits up to `timeout` for the brokers' acknowledgements, if the
    /// producer holds the thread back.
    pub(crate) fn wait_while_behind(&self, timeout: Duration) -> Result<(), WeirError> {
        match self.output.behind() {
            true => self.output.poll(timeout),
            false => Ok(()),
        }
    }

    /// Sets the gauges of every active task: each input partition's lag
    /// and each store's size.
    pub(crate) fn publish_gauges(&self, group: &dyn Group) {
        for (id, active) in &self.active {
            for offset in active.inputs.offsets() {
                if let Some(end) = group.fetched_end(&offset.topic, id.partition) {
                    gauges::set_lag(&offset.topic, id.partition, end, offset.offset);
                }
            }
            for (store, size) in active.task().into_iter().flat_map(Task::store_sizes) {
                gauges::set_store_size(store, id.partition, size);
            }
        }
    }

    /// Whether a task has opened or processed records since its last commit.
    pub(crate) fn uncommitted(&self) -> bool {
        self.active.values().any(|active| active.uncommitted)
    }

    /// Whether a commit is due regardless of the commit interval: tasks
    /// wait at a commit point for their asynchronous work, or tasks were
    /// opened.
    pub(crate) fn commit_pending(&self) -> bool {
        self.commit_soon || self.active.values().any(|active| active.draining)
    }

    /// The error a rebalance callback ran into, if any.
    pub(crate) fn take_failure(&mut self) -> Result<(), WeirError> {
        self.failure.take().map_or(Ok(()), Err)
    }

    /// How many assignments and revocations the thread has seen.
    pub(crate) fn rebalances(&self) -> u64 {
        self.rebalances
    }

    fn is_exactly_once(&self) -> bool {
        self.settings.guarantee == ProcessingGuarantee::ExactlyOnceV2
    }

    fn metadata(&self) -> Option<&str> {
        self.settings.application_server.as_deref()
    }

    /// A commit point (see [`super::commit`]): commits every task that may
    /// commit; tasks whose asynchronous work holds records drain first
    /// (their input pauses, and later calls commit them once released);
    /// a task with another writer's records in its changelog is reopened.
    pub(crate) fn commit(&mut self, group: &dyn Group) -> Result<(), CommitFailure> {
        let started = Instant::now();
        self.commit_soon = false;
        let committed = if self.is_exactly_once() {
            self.commit_transaction(group)?
        } else {
            !self.commit_at_least_once(group)?.is_empty()
        };
        if committed {
            self.metrics.committed(started.elapsed());
            self.publish_task_metrics();
        }
        Ok(())
    }

    /// Flushes, then commits each committable task's offsets; returns the
    /// offsets committed per task.
    fn commit_at_least_once(&mut self, group: &dyn Group) -> Result<BTreeMap<TaskId, Vec<PartitionOffset>>, WeirError> {
        self.release_deferred()?;
        self.output.flush()?;
        let mut offsets = Vec::new();
        let mut committed = BTreeMap::new();
        let mut foreign = Vec::new();
        for (id, active) in self.active.iter_mut() {
            if !active.uncommitted {
                continue;
            }
            let candidate = Candidate {
                inputs: &active.inputs,
                owned: active.inputs.topics().all(|t| group.owns(t, id.partition)),
                held_records: active.held_records(),
                changelogs: match &active.phase {
                    Phase::Running { state, .. } => Some(state.committable_offsets(self.output.as_ref())),
                    Phase::Waiting(_) | Phase::Restoring(_) => None,
                },
            };
            active.draining = false;
            match verdict(candidate) {
                Verdict::Commit(task_offsets) => {
                    offsets.extend(task_offsets.iter().cloned());
                    committed.insert(*id, task_offsets);
                }
                Verdict::Drain => active.draining = true,
                Verdict::Restoring => {}
                Verdict::NotOwned => {
                    tracing::warn!(task = %id, "not committing a task whose partitions this consumer no longer holds")
                }
                Verdict::Foreign(writes) => foreign.push((*id, writes)),
            }
        }
        for (id, writes) in foreign {
            tracing::warn!(task = %id, %writes, "not committing; reopening the task");
            self.reopen(group, id)?;
        }
        if offsets.is_empty() {
            return Ok(committed);
        }
        match group.commit(&offsets, self.metadata()) {
            Ok(()) => {
                for id in committed.keys() {
                    if let Some(active) = self.active.get_mut(id) {
                        active.uncommitted = false;
                    }
                }
                Ok(committed)
            }
            // The offsets stay where the last commit left them: consistent,
            // and the records since are processed again by whoever owns the
            // tasks next, as at-least-once allows.
            Err(CommitRefused::NotNow(reason)) => {
                tracing::info!(%reason, "commit not taken now; the offsets stay at the last commit");
                Ok(BTreeMap::new())
            }
            Err(CommitRefused::Failed(error)) => Err(error),
        }
    }

    /// Exactly-once: one transaction holds every task's writes, so it
    /// commits only when no task holds records, with every task's inputs.
    fn commit_transaction(&mut self, group: &dyn Group) -> Result<bool, CommitFailure> {
        self.release_deferred()?;
        let held = self.holds_records();
        for active in self.active.values_mut() {
            active.draining = held && active.held_records() > 0;
        }
        if held {
            return Ok(false);
        }
        let mut offsets = Vec::new();
        for (id, active) in &self.active {
            if !active.inputs.topics().all(|t| group.owns(t, id.partition)) {
                // The revocation of the lost assignment aborts the transaction.
                tracing::warn!(task = %id, "not committing: the task's partitions are no longer this consumer's");
                return Ok(false);
            }
            offsets.extend(active.inputs.offsets());
        }
        let identity = group.transaction_identity()?;
        self.output.commit_transaction(&offsets, self.metadata(), &identity)?;
        for active in self.active.values_mut() {
            active.uncommitted = false;
        }
        Ok(true)
    }

    /// Commits; an abortable failure (exactly-once) aborts the transaction
    /// and rewinds every task to its last committed state instead of
    /// stopping the thread.
    pub(crate) fn commit_or_rewind(&mut self, group: &dyn Group) -> Result<(), WeirError> {
        match self.commit(group) {
            Ok(()) => {
                self.rewinds.committed();
                Ok(())
            }
            Err(CommitFailure::Abortable(error)) => {
                let wait = self.rewinds.next(&error)?;
                tracing::warn!(
                    %error, wait_ms = wait.as_millis() as u64,
                    "the transaction failed; aborting it and rewinding to the last commit"
                );
                self.rewind(group)?;
                std::thread::sleep(wait);
                Ok(())
            }
            Err(CommitFailure::Fatal(error)) => Err(error),
        }
    }

    /// Aborts the open transaction, rebuilds every task from its changelog
    /// and moves the consumer back to the committed offsets.
    fn rewind(&mut self, group: &dyn Group) -> Result<(), WeirError> {
        self.output.abort_transaction()?;
        let ids: Vec<TaskId> = self.active.keys().copied().collect();
        for id in ids {
            self.reopen(group, id)?;
        }
        Ok(())
    }

    /// Drops a task's state, opens it again from the group's committed
    /// offsets and moves the consumer to them.
    fn reopen(&mut self, group: &dyn Group, id: TaskId) -> Result<(), WeirError> {
        self.close_task(id, None, false)?;
        let committed = self.read_committed(group, &BTreeSet::from([id]))?;
        let inputs = self.open_task(id, &committed)?;
        for offset in inputs {
            group.seek(&offset.topic, offset.partition, offset.offset)?;
        }
        Ok(())
    }

    /// Waits, up to [`DRAIN_TIMEOUT`], until no task holds records,
    /// passing on their results meanwhile.
    fn drain(&mut self) -> Result<(), WeirError> {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let mark = self.answers.mark();
            self.release_deferred()?;
            self.complete_async()?;
            self.poll_deliveries()?;
            if !self.holds_records() || Instant::now() >= deadline {
                return Ok(());
            }
            self.answers.wait(mark, Duration::from_millis(10));
        }
    }

    /// Commits (after draining) and closes the tasks of revoked partitions:
    /// a task whose commit went through closes with a checkpoint, any other
    /// drops its state. With a lost assignment nothing is committed.
    pub(crate) fn on_revoked(&mut self, group: &dyn Group, revoked: &[(Arc<str>, i32)], lost: bool) {
        if let Err(error) = self.revoke(group, revoked, lost) {
            self.failure.get_or_insert(error);
        }
    }

    fn revoke(&mut self, group: &dyn Group, revoked: &[(Arc<str>, i32)], lost: bool) -> Result<(), WeirError> {
        // Once the thread has given up its tasks (an error or a panic
        // stopped it), nothing it still holds may be committed.
        let lost = lost || self.abandoned;
        let ids = self.task_ids(revoked)?;
        self.rebalances += 1;
        tracing::info!(tasks = ?ids.iter().map(ToString::to_string).collect::<Vec<_>>(), lost, "partitions revoked");
        let committed = if lost {
            tracing::warn!("the assignment was lost: closing its tasks without committing");
            if self.is_exactly_once() {
                self.abort();
            }
            // Their partitions have another owner: what they queued must
            // not arrive after that owner's writes.
            self.output.purge();
            BTreeMap::new()
        } else {
            self.commit_before_closing(group)?
        };
        for id in ids {
            let offsets = committed.get(&id).map(Vec::as_slice);
            self.close_task(id, offsets, true)?;
        }
        self.metrics.rebalanced(self.thread, self.active.len());
        Ok(())
    }

    /// Drains, then commits what can be committed; returns each committed
    /// task's offsets (the tasks that may close cleanly).
    fn commit_before_closing(
        &mut self,
        group: &dyn Group,
    ) -> Result<BTreeMap<TaskId, Vec<PartitionOffset>>, WeirError> {
        self.drain()?;
        if self.is_exactly_once() {
            let all = |manager: &Self| manager.active.keys().map(|id| (*id, Vec::new())).collect();
            return match self.commit_transaction(group) {
                Ok(true) => Ok(all(self)),
                Ok(false) => {
                    tracing::warn!("records still wait for enrichment; aborting the transaction");
                    self.abort();
                    Ok(BTreeMap::new())
                }
                Err(CommitFailure::Fatal(error)) => Err(error),
                Err(CommitFailure::Abortable(error)) => {
                    tracing::warn!(%error, "cannot commit before closing; the tasks' state will be rebuilt");
                    self.abort();
                    Ok(BTreeMap::new())
                }
            };
        }
        match self.commit_at_least_once(group) {
            Ok(mut committed) => {
                // Tasks with nothing new to commit close cleanly too.
                for (id, active) in &self.active {
                    let Phase::Running { state, .. } = &active.phase else {
                        continue;
                    };
                    if !active.uncommitted && !committed.contains_key(id) {
                        if let Ok(changelogs) = state.committable_offsets(self.output.as_ref()) {
                            committed.insert(*id, changelogs);
                        }
                    }
                }
                Ok(committed)
            }
            Err(error) => {
                // The records since the last commit will be processed again
                // by the partitions' next owner, as at-least-once allows.
                tracing::warn!(%error, "cannot commit before closing");
                Ok(BTreeMap::new())
            }
        }
    }

    /// Opens the tasks of newly assigned partitions, their stores to be
    /// restored from the poll loop; returns where the consumer starts
    /// reading each input partition: the offsets read with the changelog
    /// offsets the tasks restore to, so that the pair is one commit's.
    /// `None` after an error, which stops the thread.
    pub(crate) fn on_assigned(
        &mut self,
        group: &dyn Group,
        assigned: &[(Arc<str>, i32)],
    ) -> Option<Vec<PartitionOffset>> {
        match self.assign(group, assigned) {
            Ok(starts) => Some(starts),
            Err(error) => {
                self.failure.get_or_insert(error);
                None
            }
        }
    }

    fn assign(&mut self, group: &dyn Group, assigned: &[(Arc<str>, i32)]) -> Result<Vec<PartitionOffset>, WeirError> {
        let ids = self.task_ids(assigned)?;
        let held: BTreeSet<(&str, i32)> = assigned.iter().map(|(t, p)| (&**t, *p)).collect();
        for id in &ids {
            let sub = &self.topology.subtopologies()[id.subtopology];
            let missing: Vec<String> = sub
                .source_topics
                .iter()
                .map(|t| t.resolve(&self.settings.application_id))
                .filter(|t| !held.contains(&(t.as_str(), id.partition)))
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
        self.rebalances += 1;
        let new: BTreeSet<TaskId> = ids.iter().copied().filter(|id| !self.active.contains_key(id)).collect();
        let committed = self.read_committed(group, &new)?;
        let mut starts = Vec::new();
        for id in ids {
            match self.active.get(&id) {
                Some(active) => starts.extend(active.inputs.offsets()),
                None => starts.extend(self.open_task(id, &committed)?),
            }
        }
        self.metrics.rebalanced(self.thread, self.active.len());
        Ok(starts)
    }

    /// The group's committed offsets of the inputs and changelogs of tasks
    /// `ids`, in one request, so that they are one commit's pair.
    fn read_committed(&self, group: &dyn Group, ids: &BTreeSet<TaskId>) -> Result<CommittedOffsets, WeirError> {
        let app = &self.settings.application_id;
        let mut partitions: Vec<(Arc<str>, i32)> = Vec::new();
        for id in ids {
            let sub = &self.topology.subtopologies()[id.subtopology];
            partitions.extend(
                sub.source_topics
                    .iter()
                    .map(|t| (Arc::from(t.resolve(app)), id.partition)),
            );
            partitions.extend(
                sub.stores
                    .iter()
                    .map(|s| (Arc::from(changelog_topic(app, s)), id.partition)),
            );
        }
        if partitions.is_empty() {
            return Ok(CommittedOffsets::new());
        }
        let offsets = group.committed(&partitions)?;
        Ok(partitions.into_iter().zip(offsets).collect())
    }

    /// The tasks that read the partitions of `partitions`.
    fn task_ids(&self, partitions: &[(Arc<str>, i32)]) -> Result<BTreeSet<TaskId>, WeirError> {
        partitions
            .iter()
            .map(|(topic, partition)| {
                let sub = self
                    .routes
                    .get(topic)
                    .ok_or_else(|| WeirError::Other(format!("assigned '{topic}', which the topology does not read")))?;
                Ok(TaskId {
                    subtopology: *sub,
                    partition: *partition,
                })
            })
            .collect()
    }

    /// Creates a task whose stores restore from the poll loop (see
    /// [`TaskManager::restore`]), or that waits for its state directory
    /// first; returns its input positions.
    fn open_task(&mut self, id: TaskId, committed: &CommittedOffsets) -> Result<Vec<PartitionOffset>, WeirError> {
        let app = &self.settings.application_id;
        let sub = &self.topology.subtopologies()[id.subtopology];
        let inputs = InputPositions::from_committed(
            sub.source_topics.iter().map(|t| Arc::from(t.resolve(app))),
            id.partition,
            committed,
        );
        let starts = inputs.offsets().collect();
        let queued = (sub.source_topics.len() > 1)
            .then(|| PartitionGroup::new(inputs.topics().cloned(), self.settings.input_wait_max));
        let mut dir_lock = match self.stores.persistent() {
            true => Some(TaskDirLock::new(&self.task_dir(id))),
            false => None,
        };
        let phase = match dir_lock.as_mut().map_or(Ok(true), TaskDirLock::try_take)? {
            true => Phase::Restoring(self.begin_restore(id, committed)?),
            false => {
                tracing::info!(
                    task = %id,
                    "the task's state directory is still open in its previous owner, which has not yet given the \
                     task up; waiting for it"
                );
                Phase::Waiting(committed.clone())
            }
        };
        self.active.insert(
            id,
            ActiveTask {
                phase,
                inputs,
                // The first commit names this instance as the owner and
                // moves the committed changelog offsets past the fence.
                uncommitted: true,
                draining: false,
                dir_lock,
                queued,
            },
        );
        Ok(starts)
    }

    fn task_dir(&self, id: TaskId) -> std::path::PathBuf {
        self.settings.app_dir().join(id.to_string())
    }

    /// Opens a task's stores, which then restore from the poll loop.
    fn begin_restore(&self, id: TaskId, committed: &CommittedOffsets) -> Result<Restoration, WeirError> {
        let app = &self.settings.application_id;
        let changelogs: Vec<(String, Arc<str>)> = self.topology.subtopologies()[id.subtopology]
            .stores
            .iter()
            .map(|store| (store.clone(), Arc::from(changelog_topic(app, store))))
            .collect();
        for (store, _) in &changelogs {
            self.local_stores.restoring(store, id.partition);
        }
        let request = OpenRequest {
            id,
            dir: self.task_dir(id),
            changelogs,
            committed,
            exactly_once: self.is_exactly_once(),
            persistent: self.stores.persistent(),
        };
        let task_settings = task_settings(&self.settings, self.stores.as_ref(), &self.cache, &self.global_stores);
        Restoration::begin(&request, &mut || Task::new(&self.topology, id, &task_settings))
    }

    /// Opens the waiting tasks whose state directories their previous
    /// owners have given up.
    fn open_waiting(&mut self) -> Result<(), WeirError> {
        let waiting: Vec<TaskId> = self
            .active
            .iter()
            .filter(|(_, active)| matches!(active.phase, Phase::Waiting(_)))
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            let Some(active) = self.active.get_mut(&id) else {
                continue;
            };
            if !active.dir_lock.as_mut().map_or(Ok(true), TaskDirLock::try_take)? {
                continue;
            }
            let Phase::Waiting(committed) =
                std::mem::replace(&mut active.phase, Phase::Waiting(CommittedOffsets::new()))
            else {
                continue;
            };
            tracing::info!(task = %id, "the task's state directory is free; opening the task");
            let restoration = self.begin_restore(id, &committed)?;
            if let Some(active) = self.active.get_mut(&id) {
                active.phase = Phase::Restoring(restoration);
            }
        }
        Ok(())
    }

    /// Whether a task's stores are restoring, or waiting for their
    /// directory: [`TaskManager::restore`] has work.
    pub(crate) fn restoring(&self) -> bool {
        self.active.values().any(ActiveTask::is_opening)
    }

    /// Restores about `max_records` records of the first restoring task;
    /// a task whose stores are restored is fenced (at-least-once) and
    /// starts processing, its input resumed.
    pub(crate) fn restore(&mut self, max_records: usize) -> Result<(), WeirError> {
        self.open_waiting()?;
        let Some((&id, active)) = self
            .active
            .iter_mut()
            .find(|(_, active)| matches!(active.phase, Phase::Restoring(_)))
        else {
            return Ok(());
        };
        let Phase::Restoring(restoration) = &mut active.phase else {
            return Ok(());
        };
        let task_settings = task_settings(&self.settings, self.stores.as_ref(), &self.cache, &self.global_stores);
        let done = restoration.step(
            &mut || Task::new(&self.topology, id, &task_settings),
            self.changelogs.as_ref(),
            &self.metrics,
            max_records,
        )?;
        if !done {
            return Ok(());
        }
        let Some(ActiveTask {
            phase: Phase::Restoring(restoration),
            inputs,
            uncommitted,
            draining,
            dir_lock,
            queued,
        }) = self.active.remove(&id)
        else {
            return Ok(());
        };
        let (task, state) = restoration.finish(&self.owner, self.changelogs.as_ref(), self.output.as_ref())?;
        for (store, reader) in task.store_readers() {
            self.local_stores.ready(store, id.partition, reader);
        }
        self.active.insert(
            id,
            ActiveTask {
                phase: Phase::Running { task, state },
                inputs,
                uncommitted,
                draining,
                dir_lock,
                queued,
            },
        );
        // The first commit names this instance as the task's owner and
        // moves the committed changelog offsets past the fences.
        self.commit_soon = true;
        Ok(())
    }

    /// Closes a task: cleanly when `committed` gives the offsets its last
    /// commit named (stores flushed, checkpoint written), else by dropping
    /// its state, which its next owner rebuilds from the changelogs. A task
    /// still restoring keeps what it restored (see
    /// [`Restoration::suspend`]) unless `keep_restored` is false.
    fn close_task(
        &mut self,
        id: TaskId,
        committed: Option<&[PartitionOffset]>,
        keep_restored: bool,
    ) -> Result<(), WeirError> {
        let Some(active) = self.active.remove(&id) else {
            return Ok(());
        };
        if let Some(task) = active.task() {
            for (store, _) in task.stores() {
                self.local_stores.remove(store, id.partition);
            }
            gauges::clear(
                id.partition,
                active.inputs.topics().map(|t| &**t),
                task.stores().map(|(store, _)| store),
            );
            self.closed_metrics.merge(task.metrics());
        }
        let (dir, keep) = match active.phase {
            Phase::Running { mut task, state } => {
                if let Some(offsets) = committed {
                    state.checkpoint(&mut task, offsets, self.output.as_ref(), self.stores.persistent())?;
                }
                (state.dir().to_path_buf(), committed.is_some())
            }
            Phase::Restoring(restoration) => {
                let dir = restoration.dir().to_path_buf();
                if keep_restored {
                    restoration.suspend()?;
                }
                (dir, keep_restored)
            }
            // The directory is still its previous owner's.
            Phase::Waiting(_) => return Ok(()),
        };
        if !keep && self.stores.persistent() {
            remove_state(&dir)?;
        }
        // Only now may the task's next owner open the directory.
        drop(active.dir_lock);
        Ok(())
    }

    /// Commits (after draining) and closes every task, as a clean shutdown does.
    pub(crate) fn close_all(&mut self, group: &dyn Group) -> Result<(), WeirError> {
        let committed = self.commit_before_closing(group);
        let ids: Vec<TaskId> = self.active.keys().copied().collect();
        let closing = committed.as_ref().ok();
        for id in ids {
            let offsets = closing.and_then(|c| c.get(&id)).map(Vec::as_slice);
            self.close_task(id, offsets, true)?;
        }
        self.publish_task_metrics();
        committed.map(|_| ())
    }

    /// Drops every task without committing, after an error stopped the
    /// thread: what the tasks did since the last commit is uncommitted, so
    /// their local state goes too, and the next start restores it from the
    /// changelogs.
    pub(crate) fn abandon_all(&mut self) -> Result<(), WeirError> {
        self.abandoned = true;
        if self.is_exactly_once() {
            self.abort();
        }
        let ids: Vec<TaskId> = self.active.keys().copied().collect();
        for id in ids {
            self.close_task(id, None, false)?;
        }
        self.publish_task_metrics();
        Ok(())
    }

    /// Aborts the open transaction on the way to dropping the tasks' state;
    /// a failure only means the brokers abort it when it times out.
    fn abort(&self) {
        if let Err(error) = self.output.abort_transaction() {
            tracing::warn!(%error, "cannot abort the open transaction; it will time out");
        }
    }

    fn publish_task_metrics(&self) {
        let mut total = self.closed_metrics.clone();
        for task in self.active.values().filter_map(ActiveTask::task) {
            total.merge(task.metrics());
        }
        self.metrics.set_tasks(self.thread, total);
    }
}

/// What a thread's tasks are made with.
fn task_settings<'a>(
    settings: &'a Settings,
    stores: &'a dyn StoreSupplier,
    cache: &'a Rc<CacheBudget>,
    global_stores: &'a GlobalStores,
) -> TaskSettings<'a> {
    TaskSettings {
        application_id: &settings.application_id,
        stores,
        default_error_handler: &settings.default_error_handler,
        production_error_handler: &settings.production_error_handler,
        cache,
        global_stores,
    }
}

/// Sends what `task` produced since the last call to the producer.
/// Processes a task's queued records in time order until its inputs say
/// to wait, its queues are empty or its asynchronous work is full.
fn process_queued(active: &mut ActiveTask, output: &dyn Output, group: &dyn Group) -> Result<(), WeirError> {
    let partition = active.inputs.partition();
    while !active.backpressured() {
        let ActiveTask {
            phase: Phase::Running { task, .. },
            queued: Some(queued),
            inputs,
            uncommitted,
            ..
        } = active
        else {
            return Ok(());
        };
        let next = queued.next(|topic| group.has_unread(topic, partition, inputs.next_of(topic).unwrap_or(0)));
        let Next::Record(topic, record) = next else {
            return Ok(());
        };
        task.process(&topic, record.offset, &record.record.as_input())?;
        send_output(output, task)?;
        inputs.processed(&topic, record.offset);
        *uncommitted = true;
    }
    Ok(())
}

fn send_output(output: &dyn Output, task: &mut Task) -> Result<(), WeirError> {
    task.drain_output().try_for_each(|record| output.send(&record))
}
