//! The changelog reader: rebuilds a task's stores from their changelog
//! partitions before the task processes anything.
//!
//! It has its own consumer, outside the consumer group, that reads one
//! changelog partition at a time from a start offset (the checkpoint, or
//! the beginning) up to a target (the changelog offset of the task's last
//! commit under at-least-once, see the task manager) or, under
//! exactly-once, to the end of the partition, and writes what it reads
//! into the store in batches. Only the task's owner writes to its changelog
//! partitions, so the end does not move during a restore.
//!
//! The end is where the consumer reports the partition's end (EOF), not a
//! watermark read beforehand: transaction markers may sit after the last
//! record, and some Kafka-compatible brokers report watermarks that are not
//! exact. For the same reason an EOF before the target does not end a
//! restore: the target was acknowledged by the broker, so the records are
//! there. A checkpoint offset the broker no longer has (the topic was
//! recreated or truncated) fails the read instead of silently skipping.

use super::config::{ClientKind, ProcessingGuarantee, Settings};
use super::task::Task;
use crate::error::WeirError;
use crate::metrics::RuntimeMetrics;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// Records written into a store in one batch.
const BATCH_RECORDS: usize = 10_000;
/// How long the reader waits for the next record before giving up.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a long restore logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

/// One changelog partition to replay into one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RestoreRange {
    pub store: String,
    pub topic: String,
    pub partition: i32,
    /// The first offset to read (a checkpoint), or `None` for the beginning.
    pub from: Option<i64>,
    /// The offset to stop before (the last commit's), or `None` for the end.
    pub to: Option<i64>,
}

/// Why a restore did not finish.
pub(crate) enum RestoreFailure {
    /// The start offset is outside the partition: the checkpoint is stale.
    OutOfRange,
    Failed(WeirError),
}

impl From<WeirError> for RestoreFailure {
    fn from(error: WeirError) -> Self {
        RestoreFailure::Failed(error)
    }
}

pub(crate) struct ChangelogReader {
    consumer: BaseConsumer<ReaderContext>,
}

/// Logs librdkafka's messages, except the end-of-partition events that the
/// reader waits for.
pub(crate) struct ReaderContext;

impl ClientContext for ReaderContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        super::stream_thread::log_to_tracing(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let end_of_partition = matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        );
        if !end_of_partition {
            tracing::warn!(%error, reason, "changelog reader error");
        }
    }
}

impl ConsumerContext for ReaderContext {}

impl ChangelogReader {
    pub(crate) fn new(settings: &Settings) -> Result<Self, WeirError> {
        let mut config = settings.client_config(ClientKind::Consumer);
        // The reader is assigned partitions and never joins this group, but
        // librdkafka wants one.
        config
            .set("group.id", format!("{}-restore", settings.application_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "error")
            // The end of a partition is known from a fetch that comes back
            // empty; do not let the broker hold it.
            .set("fetch.wait.max.ms", "10");
        // Under exactly-once, aborted writes must not come back into stores.
        let isolation = match settings.guarantee {
            ProcessingGuarantee::ExactlyOnceV2 => "read_committed",
            ProcessingGuarantee::AtLeastOnce => "read_uncommitted",
        };
        config.set("isolation.level", isolation);
        let consumer = config
            .create_with_context(ReaderContext)
            .map_err(|e| WeirError::Kafka(format!("cannot create the changelog reader: {e}")))?;
        Ok(ChangelogReader { consumer })
    }

    /// Replays `range` into its store of `task`; returns the offset the
    /// store now reflects (where a checkpoint of it would point).
    pub(crate) fn restore(
        &self,
        task: &mut Task,
        range: &RestoreRange,
        metrics: &RuntimeMetrics,
    ) -> Result<i64, RestoreFailure> {
        let RestoreRange {
            store,
            topic,
            partition,
            from,
            to,
        } = range;
        let (first, end_estimate) = self
            .consumer
            .fetch_watermarks(topic, *partition, METADATA_TIMEOUT)
            .map_err(|e| WeirError::Kafka(format!("cannot read the offsets of {topic}[{partition}]: {e}")))?;
        // A start at the high watermark has nothing to read; one before the
        // first offset is stale. Otherwise the watermark only feeds progress
        // reports, and the read finds the end (or that the start is past it).
        let start_offset = from.unwrap_or(first);
        if from.is_some_and(|f| f < first) {
            return Err(RestoreFailure::OutOfRange);
        }
        let end_estimate = to.unwrap_or(end_estimate);
        if start_offset >= end_estimate {
            metrics.restored(store, 0, 0);
            return Ok(start_offset);
        }
        let start = from.map_or(Offset::Beginning, Offset::Offset);
        tracing::debug!(task = %task.id(), store, topic, partition, ?start, end_estimate, "restoring a store");
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, *partition, start)
            .map_err(|e| WeirError::Kafka(e.to_string()))?;
        self.consumer
            .assign(&assignment)
            .map_err(|e| WeirError::Kafka(format!("cannot read {topic}[{partition}]: {e}")))?;
        let read = self.read_to_end(task, range, end_estimate, metrics);
        let unassigned = self
            .consumer
            .unassign()
            .map_err(|e| WeirError::Kafka(format!("cannot stop reading {topic}[{partition}]: {e}")));
        let (next, restored, started) = read?;
        unassigned?;
        metrics.restored(store, 0, 0);
        if restored > 0 {
            tracing::info!(
                task = %task.id(), store, records = restored, from = ?range.from, to = ?range.to,
                elapsed_ms = started.elapsed().as_millis() as u64, "store restored from its changelog"
            );
        }
        Ok(next)
    }

    fn read_to_end(
        &self,
        task: &mut Task,
        range: &RestoreRange,
        end_estimate: i64,
        metrics: &RuntimeMetrics,
    ) -> Result<(i64, u64, Instant), RestoreFailure> {
        let (store, topic, partition) = (&range.store, &range.topic, range.partition);
        let started = Instant::now();
        let mut last_progress = started;
        let mut last_record = started;
        let mut batch: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::with_capacity(BATCH_RECORDS);
        let mut restored = 0u64;
        let mut next = range.from.unwrap_or(0);
        let apply = |task: &mut Task, batch: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>, next: i64| {
            let written = batch.len() as u64;
            task.restore(store, &mut batch.iter().map(|(k, v)| (k.as_slice(), v.as_deref())))?;
            batch.clear();
            metrics.restored(store, written, (end_estimate - next).max(0) as u64);
            Ok::<(), WeirError>(())
        };
        loop {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) if range.to.is_some_and(|to| message.offset() >= to) => break,
                Some(Ok(message)) => {
                    last_record = Instant::now();
                    next = message.offset() + 1;
                    // A changelog record always has a key; skip anything else.
                    if let Some(key) = message.key() {
                        batch.push((key.to_vec(), message.payload().map(<[u8]>::to_vec)));
                        restored += 1;
                    }
                    if batch.len() >= BATCH_RECORDS {
                        apply(task, &mut batch, next)?;
                    }
                    if range.to == Some(next) {
                        break;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => match range.to {
                    None => break,
                    // Compaction may have removed the records just before the target.
                    Some(to) if self.position(topic, partition)? >= to => break,
                    Some(_) => {}
                },
                Some(Err(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange,
                ))) => return Err(RestoreFailure::OutOfRange),
                Some(Err(error)) => {
                    return Err(WeirError::Kafka(format!("cannot restore from {topic}[{partition}]: {error}")).into())
                }
                None if last_record.elapsed() > STALL_TIMEOUT => {
                    return Err(WeirError::Kafka(format!(
                        "restoring {topic}[{partition}] stalled at offset {next}{}: no record and no end for {}s",
                        range
                            .to
                            .map(|to| format!(" before the committed offset {to}"))
                            .unwrap_or_default(),
                        STALL_TIMEOUT.as_secs()
                    ))
                    .into())
                }
                None => {}
            }
            if last_progress.elapsed() > PROGRESS_EVERY {
                last_progress = Instant::now();
                tracing::info!(
                    store,
                    topic,
                    partition,
                    at = next,
                    end = end_estimate,
                    "restore in progress"
                );
            }
        }
        apply(task, &mut batch, next)?;
        Ok((range.to.unwrap_or(next), restored, started))
    }

    /// The reader's position in a partition (the next offset it will read).
    fn position(&self, topic: &str, partition: i32) -> Result<i64, WeirError> {
        let positions = self
            .consumer
            .position()
            .map_err(|e| WeirError::Kafka(format!("cannot read the restore position in {topic}[{partition}]: {e}")))?;
        Ok(positions
            .find_partition(topic, partition)
            .and_then(|p| p.offset().to_raw())
            .unwrap_or(-1))
    }
}
