//! The stream thread: one consumer in the application's group, polling
//! records, handing each to its task, and committing every
//! `commit.interval.ms`. Partition assignments and revocations arrive as
//! rebalance callbacks on this same thread, inside `poll`, where the
//! [`TaskManager`] opens, commits and closes tasks and says where the
//! consumer starts reading.

use super::broker::Group;
use super::config::{ClientKind, Settings};
use super::consumer::{partitions_of, KafkaGroup, KafkaHeaders};
use super::health::{count_offset_reset, Problems};
use super::kafka_streams::panic_message;
use super::task_manager::{Processed, TaskManager};
use super::StreamsState;
use crate::error::WeirError;
use crate::metrics::RuntimeMetrics;
use crate::record::InputRecord;
use rdkafka::bindings::rd_kafka_resp_err_t as RDKafkaRespErr;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// The most records processed between two checks for commits and shutdown.
const MAX_BATCH: usize = 10_000;
/// About how many changelog records one slice of a restore reads between
/// two polls of the consumer.
const RESTORE_SLICE: usize = 20_000;
/// How many records go by between two checks of back-pressure: the
/// enrichment backlog, and the producer's unacknowledged records.
const BACKPRESSURE_CHECK: u64 = 64;
/// How long input may be held back without being paused.
///
/// While an enrichment backlog is at its limit, or the brokers are behind
/// the producer, the thread does not poll, so librdkafka keeps what it
/// fetched ahead and the calls never run dry. Holding back longer pauses
/// the input instead, so that the thread polls (and serves rebalances)
/// while the enrichment's service or the brokers are slow or down.
const UNPAUSED_HOLD: Duration = Duration::from_secs(1);
/// The longest a thread holding back sleeps waiting for enrichment answers
/// or the brokers' acknowledgements.
const MAX_HOLD_WAIT: Duration = Duration::from_millis(10);
/// How often consumer lag and store sizes are published.
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// A value only the thread that made it may touch.
///
/// librdkafka requires a consumer's context to be `Send + Sync`, but it
/// calls rebalance callbacks only from `poll` on the polling thread, which
/// here is the thread that owns the tasks (whose state is not `Send`). The
/// check turns a broken assumption into an error instead of a data race.
struct ThreadBound<T> {
    owner: ThreadId,
    value: std::mem::ManuallyDrop<T>,
}

// SAFETY: `value` is reachable only through `get`, which hands it out on the
// owner thread alone, and `Drop` drops it only on that thread (it leaks it
// on any other).
unsafe impl<T> Send for ThreadBound<T> {}
unsafe impl<T> Sync for ThreadBound<T> {}

impl<T> ThreadBound<T> {
    fn new(value: T) -> Self {
        ThreadBound {
            owner: std::thread::current().id(),
            value: std::mem::ManuallyDrop::new(value),
        }
    }

    fn get(&self) -> Option<&T> {
        (std::thread::current().id() == self.owner).then_some(&*self.value)
    }
}

impl<T> Drop for ThreadBound<T> {
    fn drop(&mut self) {
        if std::thread::current().id() == self.owner {
            // SAFETY: dropped once, here, and never touched again.
            unsafe { std::mem::ManuallyDrop::drop(&mut self.value) };
        } else {
            // Leak rather than run destructors on the wrong thread.
            tracing::error!("a stream thread's state was dropped on another thread; leaking it");
        }
    }
}

/// A set of (topic, partition).
type Partitions = BTreeSet<(Arc<str>, i32)>;

/// The group consumer's context: routes rebalances to the task manager and
/// librdkafka's logs to `tracing`.
pub(crate) struct StreamContext {
    manager: ThreadBound<RefCell<TaskManager>>,
    state: Arc<super::StateCell>,
    /// The partitions this thread paused. librdkafka keeps a partition
    /// paused across a revocation and a new assignment, so this outlives
    /// rebalances; the rebalance callback and the poll loop both pause.
    paused: ThreadBound<RefCell<Partitions>>,
    /// An error a rebalance callback ran into; the poll loop stops on it.
    failure: std::sync::Mutex<Option<WeirError>>,
    /// Client errors that keep the instance from working, for readiness.
    problems: Arc<Problems>,
}

impl StreamContext {
    fn manager(&self) -> Result<&RefCell<TaskManager>, WeirError> {
        self.manager
            .get()
            .ok_or_else(|| WeirError::Other("the stream thread's tasks were reached from another thread".into()))
    }

    /// Runs `f` on the task manager inside a rebalance callback. A panic
    /// must not unwind into librdkafka (it would abort the process): it
    /// becomes the thread's failure.
    fn with_manager<R>(&self, f: impl FnOnce(&mut TaskManager) -> R) -> Option<R> {
        let Ok(Ok(mut manager)) = self.manager().map(RefCell::try_borrow_mut) else {
            self.fail(WeirError::Other(
                "a rebalance callback could not reach the tasks (a bug in weir)".into(),
            ));
            return None;
        };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut manager))) {
            Ok(result) => Some(result),
            Err(panic) => {
                self.fail(WeirError::Other(format!(
                    "a rebalance panicked: {}",
                    panic_message(panic.as_ref())
                )));
                None
            }
        }
    }

    /// Pauses the partitions of `wanted` that are not paused yet and
    /// resumes those paused and no longer wanted. librdkafka drops the
    /// records it fetched for a paused partition and fetches again from the
    /// last record handed out, so nothing is skipped.
    fn pause_only(&self, consumer: &BaseConsumer<StreamContext>, wanted: Partitions) -> Result<(), WeirError> {
        let paused = self
            .paused
            .get()
            .ok_or_else(|| WeirError::Other("the stream thread's pauses were reached from another thread".into()))?;
        let mut paused = paused.borrow_mut();
        if *paused == wanted {
            return Ok(());
        }
        let list = |partitions: &mut dyn Iterator<Item = &(Arc<str>, i32)>| {
            let mut list = TopicPartitionList::new();
            for (topic, partition) in partitions {
                list.add_partition(topic, *partition);
            }
            list
        };
        let resume = list(&mut paused.difference(&wanted));
        let pause = list(&mut wanted.difference(&paused));
        if resume.count() > 0 {
            tracing::debug!(partitions = resume.count(), "resuming input");
            consumer
                .resume(&resume)
                .map_err(|e| WeirError::Kafka(format!("cannot resume the input: {e}")))?;
        }
        if pause.count() > 0 {
            tracing::debug!(partitions = pause.count(), "pausing input");
            consumer
                .pause(&pause)
                .map_err(|e| WeirError::Kafka(format!("cannot pause the input: {e}")))?;
        }
        *paused = wanted;
        Ok(())
    }

    /// Records partitions paused outside [`StreamContext::pause_only`].
    fn paused_too(&self, partitions: Vec<(Arc<str>, i32)>) {
        if let Some(paused) = self.paused.get() {
            paused.borrow_mut().extend(partitions);
        }
    }

    /// Records an error of a rebalance callback, which stops the thread.
    fn fail(&self, error: WeirError) {
        tracing::error!(%error, "a rebalance failed");
        let failure = self.failure.lock();
        failure.unwrap_or_else(|p| p.into_inner()).get_or_insert(error);
    }

    /// The error a rebalance callback ran into, if any.
    fn take_failure(&self) -> Result<(), WeirError> {
        let failure = self.failure.lock().unwrap_or_else(|p| p.into_inner()).take();
        failure.map_or(Ok(()), Err)
    }
}

impl ClientContext for StreamContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        if !count_offset_reset(facility, message) {
            log_to_tracing(level, facility, message);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka client error");
        self.problems.client_error("consumer", &error);
    }
}

impl ConsumerContext for StreamContext {
    /// Replaces rdkafka's default handling so that an assignment starts
    /// each partition where the task manager says (the offsets it read with
    /// the changelog offsets it restored to), not where librdkafka would
    /// read the committed offsets again.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, partitions: &mut TopicPartitionList) {
        let group = KafkaGroup(consumer);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let assigned = partitions_of(partitions);
                let Some(Some(starts)) = self.with_manager(|manager| manager.on_assigned(&group, &assigned)) else {
                    // The poll loop stops the thread on the failure.
                    return;
                };
                for start in starts {
                    let set =
                        partitions.set_partition_offset(&start.topic, start.partition, Offset::Offset(start.offset));
                    if let Err(error) = set {
                        self.fail(WeirError::Kafka(format!(
                            "cannot set where the consumer starts: {error}"
                        )));
                    }
                }
                if let Err(error) = consumer.assign(partitions) {
                    self.fail(WeirError::Kafka(format!(
                        "cannot take the assigned partitions: {error}"
                    )));
                    return;
                }
                // The inputs of restoring tasks wait, from their first fetch
                // on; the thread runs once they are restored.
                let restoring = self.with_manager(|manager| {
                    (
                        manager.partitions_to_pause(manager.backpressured()),
                        manager.restoring(),
                    )
                });
                if let Some((wanted, restoring)) = restoring {
                    if let Err(error) = self.pause_only(consumer, wanted) {
                        self.fail(error);
                    }
                    if !restoring {
                        self.state.set(StreamsState::Running);
                    }
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.state.set(StreamsState::Rebalancing);
                let revoked = partitions_of(partitions);
                let lost = consumer.assignment_lost();
                self.with_manager(|manager| manager.on_revoked(&group, &revoked, lost));
                if let Err(error) = consumer.unassign() {
                    self.fail(WeirError::Kafka(format!(
                        "cannot give the revoked partitions up: {error}"
                    )));
                }
            }
            error => {
                // The consumer no longer knows its assignment; its tasks must
                // not go on as if it did.
                let _ = consumer.unassign();
                self.fail(WeirError::Kafka(format!(
                    "the group rebalance failed: {}",
                    rdkafka::error::RDKafkaErrorCode::from(error)
                )));
            }
        }
    }
}

/// Forwards a librdkafka log line to `tracing`.
pub(crate) fn log_to_tracing(level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", facility, "{message}")
        }
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => tracing::info!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
    }
}

/// Runs a stream thread until `shutdown` is set or an error stops it; on the
/// way out it commits and closes its tasks (or, after an error, drops them
/// uncommitted) and leaves the group.
pub(crate) fn run(
    manager: TaskManager,
    settings: &Settings,
    shutdown: &AtomicBool,
    metrics: &RuntimeMetrics,
    state: Arc<super::StateCell>,
    problems: Arc<Problems>,
) -> Result<(), WeirError> {
    let mut config = settings.client_config(ClientKind::Consumer);
    config
        .set("group.id", &settings.application_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("partition.assignment.strategy", "range")
        .set("isolation.level", "read_committed");
    // A partition without a committed offset is read from its beginning
    // (the task manager starts it at offset 0, which a partition whose
    // first records were deleted turns into its earliest).
    config.set("auto.offset.reset", "earliest");
    let topics: Vec<String> = manager.source_topics().into_iter().map(str::to_string).collect();
    let context = StreamContext {
        manager: ThreadBound::new(RefCell::new(manager)),
        state: state.clone(),
        paused: ThreadBound::new(RefCell::new(BTreeSet::new())),
        failure: std::sync::Mutex::new(None),
        problems,
    };
    let consumer: BaseConsumer<StreamContext> = config
        .create_with_context(context)
        .map_err(|e| WeirError::Kafka(format!("cannot create the consumer: {e}")))?;
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topic_refs)
        .map_err(|e| WeirError::Kafka(format!("cannot subscribe to {}: {e}", topics.join(", "))))?;
    state.set(StreamsState::Rebalancing);

    // A panic (a bug, or a user function's) is the thread's error like any
    // other: the tasks are abandoned before the consumer leaves the group,
    // so that leaving does not commit what the panic interrupted.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        poll_loop(&consumer, settings, shutdown, metrics)
    }))
    .unwrap_or_else(|panic| {
        Err(WeirError::Other(format!(
            "a stream thread panicked: {}",
            panic_message(panic.as_ref())
        )))
    });
    if let Err(error) = &result {
        tracing::error!(%error, "the stream thread stops on an error");
    }
    state.set(StreamsState::PendingShutdown);
    let closed = consumer.context().manager().and_then(|manager| {
        let mut manager = manager.borrow_mut();
        match &result {
            Ok(()) => manager.close_all(&KafkaGroup(&consumer)),
            Err(_) => manager.abandon_all(),
        }
    });
    consumer.unsubscribe();
    drop(consumer);
    result.and(closed)
}

fn poll_loop(
    consumer: &BaseConsumer<StreamContext>,
    settings: &Settings,
    shutdown: &AtomicBool,
    metrics: &RuntimeMetrics,
) -> Result<(), WeirError> {
    let context = consumer.context();
    let manager = context.manager()?;
    let group = KafkaGroup(consumer);
    let mut last_commit = Instant::now();
    let mut last_gauges = Instant::now();
    let mut stalls = StallWatch::new(settings);
    let mut held_back_since: Option<Instant> = None;
    while !shutdown.load(Ordering::Relaxed) {
        // A slice of the restores between polls: the consumer keeps
        // polling (and stays in the group), and shutdown is honoured.
        if manager.borrow().restoring() {
            manager.borrow_mut().restore(RESTORE_SLICE)?;
            if !manager.borrow().restoring() {
                context.state.set(StreamsState::Running);
            }
        }
        let (answers_seen, busy, hold_unpaused, to_pause) = {
            let manager = manager.borrow();
            held_back_since = match (manager.backpressured(), held_back_since) {
                (true, since) => Some(since.unwrap_or_else(Instant::now)),
                (false, _) => None,
            };
            let pause_all = held_back_since.is_some_and(|since| since.elapsed() >= UNPAUSED_HOLD);
            (
                manager.answer_mark(),
                manager.holds_records() || manager.restoring(),
                held_back_since.is_some() && !pause_all,
                manager.partitions_to_pause(pause_all),
            )
        };
        context.pause_only(consumer, to_pause)?;
        // Records waiting for enrichment or stores restoring: do not sleep
        // in `poll`.
        let wait = if busy { Duration::ZERO } else { settings.poll_interval };
        let mut processed = 0u64;
        let mut next = if hold_unpaused { None } else { consumer.poll(wait) };
        while let Some(polled) = next {
            match polled {
                Ok(message) if stalls.stalled(manager.borrow().rebalances()) => {
                    // Read again after the group's verdict, not now.
                    group.seek(message.topic(), message.partition(), message.offset())?;
                    drop(message);
                    context.paused_too(await_group_verdict(consumer, manager, &mut stalls)?);
                    break;
                }
                Ok(message) => {
                    let headers = KafkaHeaders(&message);
                    let record = InputRecord {
                        key: message.key(),
                        value: message.payload(),
                        timestamp: message.timestamp().to_millis().unwrap_or(-1),
                        headers: &headers,
                    };
                    let outcome = manager.borrow_mut().process(
                        message.topic(),
                        message.partition(),
                        message.offset(),
                        &record,
                    )?;
                    match outcome {
                        Processed::Done => processed += 1,
                        Processed::NotYet => group.seek(message.topic(), message.partition(), message.offset())?,
                    }
                }
                Err(KafkaError::MessageConsumptionFatal(code)) => {
                    return Err(WeirError::Kafka(format!("the consumer failed: {code}")))
                }
                // librdkafka retries; errors that persist make the instance
                // not ready.
                Err(error) => {
                    tracing::warn!(%error, "consumer error");
                    context.problems.client_error("consumer", &error);
                }
            }
            if processed as usize >= MAX_BATCH
                || (processed.is_multiple_of(BACKPRESSURE_CHECK) && manager.borrow().backpressured())
            {
                break;
            }
            next = consumer.poll(Duration::ZERO);
        }
        metrics.processed(processed);
        manager.borrow_mut().process_queued(&group)?;
        manager.borrow_mut().write_back()?;
        if stalls.stalled(manager.borrow().rebalances()) {
            context.paused_too(await_group_verdict(consumer, manager, &mut stalls)?);
            continue;
        }
        let mut manager = manager.borrow_mut();
        context.take_failure()?;
        manager.take_failure()?;
        manager.complete_async()?;
        manager.punctuate(crate::record::now_ms())?;
        manager.poll_deliveries()?;
        let commit_due = last_commit.elapsed() >= settings.commit_interval && manager.uncommitted();
        if commit_due || manager.commit_pending() {
            manager.commit_or_rewind(&group)?;
            if commit_due {
                last_commit = Instant::now();
            }
        }
        if last_gauges.elapsed() >= GAUGE_INTERVAL {
            manager.publish_gauges(&group);
            last_gauges = Instant::now();
        }
        if processed == 0 && manager.holds_records() {
            manager.wait_for_answers(answers_seen, settings.poll_interval.min(MAX_HOLD_WAIT));
        } else if processed == 0 {
            manager.wait_while_behind(settings.poll_interval.min(MAX_HOLD_WAIT))?;
        }
    }
    Ok(())
}

/// Notices when the stream thread stood still (the process was stopped,
/// swapped out, or starved) long enough that the group may have expelled
/// it and given its partitions to another member.
///
/// Its heartbeats stood still too, so it may not be a member any more, and
/// librdkafka learns so only on its next heartbeat or session check. Until
/// then the thread must not process, pass on enrichment results or commit:
/// what it wrote would land on top of the new owner's writes. (What it
/// queued before the stall times out instead of arriving, see
/// `message.timeout.ms` in the configuration.) A stall is a gap of half the
/// shortest stall that can cost the membership, the session timeout less
/// one heartbeat, between two checks.
struct StallWatch {
    last: Instant,
    threshold: Duration,
    /// How long the verdict may take: two heartbeats, at least a second.
    verdict_wait: Duration,
    /// Rebalances seen at the last check: a rebalance callback may take
    /// long (restores) without being a stall.
    rebalances: u64,
}

impl StallWatch {
    fn new(settings: &Settings) -> Self {
        let consumer = |key, default: u64| {
            settings
                .clients
                .value(ClientKind::Consumer, key)
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(default)
        };
        let heartbeat = consumer("heartbeat.interval.ms", 3_000);
        StallWatch {
            last: Instant::now(),
            threshold: Duration::from_millis(settings.clients.max_delivery_ms() / 2),
            verdict_wait: Duration::from_millis((2 * heartbeat).max(1_000)),
            rebalances: 0,
        }
    }

    /// Starts the next gap now: the wait for a verdict is no stall.
    fn restart(&mut self) {
        self.last = Instant::now();
    }

    /// Whether the thread stood still since the last check.
    fn stalled(&mut self, rebalances: u64) -> bool {
        // One clock read per record: this runs on the hot path.
        let now = Instant::now();
        let gap = now.duration_since(self.last);
        self.last = now;
        if rebalances != self.rebalances {
            self.rebalances = rebalances;
            return false;
        }
        gap > self.threshold
    }
}

/// After a stall: pauses every partition and polls, without processing,
/// until the group revokes the assignment (it was lost) or the verdict wait
/// passes (the thread is still a member). Records polled meanwhile are read
/// again later; returns the partitions it paused, which the caller resumes
/// unless it wants them paused.
///
/// No borrow of the tasks is held while polling: the verdict may come as a
/// rebalance, whose callback needs them.
fn await_group_verdict(
    consumer: &BaseConsumer<StreamContext>,
    manager: &RefCell<TaskManager>,
    stalls: &mut StallWatch,
) -> Result<Vec<(Arc<str>, i32)>, WeirError> {
    tracing::warn!(
        threshold_ms = stalls.threshold.as_millis() as u64,
        "the stream thread stood still; waiting for the group to say whether it still owns its partitions"
    );
    let assignment = consumer
        .assignment()
        .map_err(|e| WeirError::Kafka(format!("cannot read the assignment: {e}")))?;
    consumer
        .pause(&assignment)
        .map_err(|e| WeirError::Kafka(format!("cannot pause the input: {e}")))?;
    let rebalances = || manager.borrow().rebalances();
    let before = rebalances();
    let deadline = Instant::now() + stalls.verdict_wait;
    while Instant::now() < deadline && rebalances() == before {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            KafkaGroup(consumer).seek(message.topic(), message.partition(), message.offset())?;
        }
    }
    if rebalances() == before {
        tracing::info!("the group kept this member; going on");
    }
    stalls.restart();
    Ok(partitions_of(&assignment))
}
