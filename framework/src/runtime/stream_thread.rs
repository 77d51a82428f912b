//! The stream thread: one consumer in the application's group, polling
//! records, handing each to its task, and committing every
//! `commit.interval.ms`. Partition assignments and revocations arrive as
//! rebalance callbacks on this same thread, inside `poll`, where the
//! [`TaskManager`] opens, commits and closes tasks.

use super::config::{ClientKind, Settings};
use super::task_manager::TaskManager;
use super::StreamsState;
use crate::enrich;
use crate::error::WeirError;
use crate::metrics::RuntimeMetrics;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// The most records processed between two checks for commits and shutdown.
const MAX_BATCH: usize = 10_000;
/// How many records go by between two checks of the enrichment backlog.
const BACKPRESSURE_CHECK: u64 = 64;
/// The longest an idle thread sleeps waiting for enrichment answers.
const MAX_ANSWER_WAIT: Duration = Duration::from_millis(10);
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
    value: T,
}

// SAFETY: `value` is reachable only through `get`, which hands it out on the
// owner thread alone, and `Drop` leaks it when run on any other thread.
unsafe impl<T> Send for ThreadBound<T> {}
unsafe impl<T> Sync for ThreadBound<T> {}

impl<T> ThreadBound<T> {
    fn new(value: T) -> Self {
        ThreadBound {
            owner: std::thread::current().id(),
            value,
        }
    }

    fn get(&self) -> Option<&T> {
        (std::thread::current().id() == self.owner).then_some(&self.value)
    }
}

impl<T> Drop for ThreadBound<T> {
    fn drop(&mut self) {
        if std::thread::current().id() != self.owner {
            tracing::error!("a stream thread's state was dropped on another thread; leaking it");
            // Leak rather than run destructors on the wrong thread.
            let value = unsafe { std::ptr::read(&self.value) };
            std::mem::forget(value);
        }
    }
}

/// The group consumer's context: routes rebalances to the task manager and
/// librdkafka's logs to `tracing`.
pub(crate) struct StreamContext {
    manager: ThreadBound<RefCell<TaskManager>>,
    state: Arc<super::StateCell>,
}

impl StreamContext {
    fn manager(&self) -> Result<&RefCell<TaskManager>, WeirError> {
        self.manager
            .get()
            .ok_or_else(|| WeirError::Other("the stream thread's tasks were reached from another thread".into()))
    }

    fn with_manager(&self, f: impl FnOnce(&mut TaskManager)) {
        match self.manager().map(RefCell::try_borrow_mut) {
            Ok(Ok(mut manager)) => f(&mut manager),
            _ => tracing::error!("a rebalance callback could not reach the tasks; the instance will stop"),
        }
    }
}

impl ClientContext for StreamContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_to_tracing(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka client error");
    }
}

impl ConsumerContext for StreamContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            self.state.set(StreamsState::Rebalancing);
            self.with_manager(|manager| manager.on_revoked(consumer, partitions));
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                self.with_manager(|manager| manager.on_assigned(consumer, partitions));
                self.state.set(StreamsState::Running);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance error"),
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
) -> Result<(), WeirError> {
    let mut config = settings.client_config(ClientKind::Consumer);
    config
        .set("group.id", &settings.application_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("partition.assignment.strategy", "range")
        .set("isolation.level", "read_committed");
    if config.get("auto.offset.reset").is_none() {
        config.set("auto.offset.reset", "earliest");
    }
    // librdkafka stops fetching a partition whose local queue is full and
    // waits this long (1 s by default) before it looks again; a thread that
    // drains its queues faster than that would sit idle, half the time
    // under a backlog.
    if config.get("fetch.queue.backoff.ms").is_none() {
        config.set("fetch.queue.backoff.ms", "10");
    }
    let topics: Vec<String> = manager.source_topics().into_iter().map(str::to_string).collect();
    let context = StreamContext {
        manager: ThreadBound::new(RefCell::new(manager)),
        state: state.clone(),
    };
    let consumer: BaseConsumer<StreamContext> = config
        .create_with_context(context)
        .map_err(|e| WeirError::Kafka(format!("cannot create the consumer: {e}")))?;
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topic_refs)
        .map_err(|e| WeirError::Kafka(format!("cannot subscribe to {}: {e}", topics.join(", "))))?;
    state.set(StreamsState::Rebalancing);

    let result = poll_loop(&consumer, settings, shutdown, metrics);
    if let Err(error) = &result {
        tracing::error!(%error, "the stream thread stops on an error");
    }
    state.set(StreamsState::PendingShutdown);
    let closed = consumer.context().manager().and_then(|manager| {
        let mut manager = manager.borrow_mut();
        match &result {
            Ok(()) => manager.close_all(&consumer),
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
    let manager = consumer.context().manager()?;
    let mut last_commit = Instant::now();
    let mut last_gauges = Instant::now();
    let mut paused = false;
    while !shutdown.load(Ordering::Relaxed) {
        let answers_seen = enrich::completions_so_far();
        let (holds_records, backpressured) = {
            let manager = manager.borrow();
            (manager.holds_records(), manager.backpressured())
        };
        paused = pause_while(consumer, backpressured, paused)?;
        // Records waiting for enrichment: do not sleep in `poll`, their
        // answers may come first.
        let wait = if holds_records {
            Duration::ZERO
        } else {
            settings.poll_interval
        };
        let mut processed = 0u64;
        let mut next = consumer.poll(wait);
        while let Some(polled) = next {
            match polled {
                Ok(message) => {
                    manager.borrow_mut().process(&message)?;
                    processed += 1;
                }
                Err(KafkaError::MessageConsumptionFatal(code)) => {
                    return Err(WeirError::Kafka(format!("the consumer failed: {code}")))
                }
                // Transient broker and network errors: librdkafka retries.
                Err(error) => tracing::warn!(%error, "consumer error"),
            }
            if processed as usize >= MAX_BATCH
                || (processed.is_multiple_of(BACKPRESSURE_CHECK) && manager.borrow().backpressured())
            {
                break;
            }
            next = consumer.poll(Duration::ZERO);
        }
        metrics.processed(processed);
        let mut manager = manager.borrow_mut();
        manager.take_failure()?;
        manager.complete_async()?;
        manager.poll_deliveries()?;
        if last_commit.elapsed() >= settings.commit_interval && manager.uncommitted() > 0 {
            manager.commit_or_rewind(consumer)?;
            last_commit = Instant::now();
        }
        if last_gauges.elapsed() >= GAUGE_INTERVAL {
            manager.publish_gauges(consumer);
            last_gauges = Instant::now();
        }
        if processed == 0 && manager.holds_records() {
            drop(manager);
            enrich::wait_for_completions(answers_seen, settings.poll_interval.min(MAX_ANSWER_WAIT));
        }
    }
    Ok(())
}

/// Pauses every assigned partition while `backpressured` (again on each
/// call, so that partitions assigned meanwhile pause too), and resumes them
/// once it is not; returns whether input is paused. librdkafka drops the
/// records it fetched for a paused partition and fetches again from the
/// last record handed out, so nothing is skipped.
fn pause_while(consumer: &BaseConsumer<StreamContext>, backpressured: bool, paused: bool) -> Result<bool, WeirError> {
    if !backpressured && !paused {
        return Ok(false);
    }
    let assignment = consumer
        .assignment()
        .map_err(|e| WeirError::Kafka(format!("cannot read the assignment: {e}")))?;
    if backpressured {
        if !paused {
            tracing::info!("enrichment backlog full; pausing input until it drains");
        }
        consumer
            .pause(&assignment)
            .map_err(|e| WeirError::Kafka(format!("cannot pause the input: {e}")))?;
    } else {
        tracing::info!("enrichment backlog drained; resuming input");
        consumer
            .resume(&assignment)
            .map_err(|e| WeirError::Kafka(format!("cannot resume the input: {e}")))?;
    }
    Ok(backpressured)
}
