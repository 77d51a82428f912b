//! The changelog reader: rebuilds a task's stores from their changelog
//! partitions before the task processes anything.
//!
//! It has its own consumer, outside the consumer group, that reads one
//! changelog partition at a time from a start offset (the checkpoint, or
//! the beginning) to the end offset seen when the restore began, and writes
//! what it reads into the store in batches.

use super::config::{ClientKind, ProcessingGuarantee, Settings};
use super::task::Task;
use crate::error::WeirError;
use crate::metrics::RuntimeMetrics;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
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
    /// The first offset to read.
    pub from: i64,
    /// The end offset when the restore began (exclusive).
    pub to: i64,
}

pub(crate) struct ChangelogReader {
    consumer: BaseConsumer,
}

impl ChangelogReader {
    pub(crate) fn new(settings: &Settings) -> Result<Self, WeirError> {
        let mut config = settings.client_config(ClientKind::Consumer);
        config
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest");
        // Under exactly-once, aborted writes must not come back into stores.
        let isolation = match settings.guarantee {
            ProcessingGuarantee::ExactlyOnceV2 => "read_committed",
            ProcessingGuarantee::AtLeastOnce => "read_uncommitted",
        };
        config.set("isolation.level", isolation);
        let consumer = config
            .create()
            .map_err(|e| WeirError::Kafka(format!("cannot create the changelog reader: {e}")))?;
        Ok(ChangelogReader { consumer })
    }

    /// The first and the end offset of a changelog partition.
    pub(crate) fn offsets(&self, topic: &str, partition: i32) -> Result<(i64, i64), WeirError> {
        self.consumer
            .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
            .map_err(|e| WeirError::Kafka(format!("cannot read the offsets of {topic}[{partition}]: {e}")))
    }

    /// Replays `range` into its store of `task`; returns the records read.
    pub(crate) fn restore(
        &self,
        task: &mut Task,
        range: &RestoreRange,
        metrics: &RuntimeMetrics,
    ) -> Result<u64, WeirError> {
        if range.from >= range.to {
            return Ok(0);
        }
        let RestoreRange {
            store,
            topic,
            partition,
            from,
            to,
        } = range;
        tracing::info!(task = %task.id(), store, topic, partition, from, to, "restoring a store from its changelog");
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, *partition, Offset::Offset(*from))
            .map_err(|e| WeirError::Kafka(e.to_string()))?;
        self.consumer
            .assign(&assignment)
            .map_err(|e| WeirError::Kafka(format!("cannot read {topic}[{partition}]: {e}")))?;
        let started = Instant::now();
        let mut last_progress = started;
        let mut last_record = started;
        let mut batch: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::with_capacity(BATCH_RECORDS);
        let mut restored = 0u64;
        let mut next = *from;
        let mut apply = |task: &mut Task, batch: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>| {
            let result = task.restore(
                store,
                &mut batch.iter().map(|(k, v)| (k.as_slice(), v.as_deref())),
            );
            batch.clear();
            result
        };
        let result = loop {
            if next >= *to {
                break Ok(());
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    last_record = Instant::now();
                    next = message.offset() + 1;
                    // A changelog record always has a key; skip anything else.
                    if let Some(key) = message.key() {
                        batch.push((key.to_vec(), message.payload().map(<[u8]>::to_vec)));
                        restored += 1;
                    }
                    if batch.len() >= BATCH_RECORDS {
                        apply(task, &mut batch)?;
                        metrics.restored(store, BATCH_RECORDS as u64, (to - next).max(0) as u64);
                    }
                }
                // The end of the partition: only control records (transaction
                // markers) were left between the last record and `to`.
                Some(Err(KafkaError::PartitionEOF(_))) => break Ok(()),
                Some(Err(error)) => {
                    break Err(WeirError::Kafka(format!("cannot restore from {topic}[{partition}]: {error}")))
                }
                None if last_record.elapsed() > STALL_TIMEOUT => {
                    break Err(WeirError::Kafka(format!(
                        "restoring {topic}[{partition}] stalled at offset {next} of {to}: no record for {}s",
                        STALL_TIMEOUT.as_secs()
                    )))
                }
                None => {}
            }
            if last_progress.elapsed() > PROGRESS_EVERY {
                last_progress = Instant::now();
                tracing::info!(store, topic, partition, at = next, to, "restore in progress");
            }
        };
        let unassigned = self
            .consumer
            .unassign()
            .map_err(|e| WeirError::Kafka(format!("cannot stop reading {topic}[{partition}]: {e}")));
        result.and(unassigned)?;
        let remainder = batch.len() as u64;
        apply(task, &mut batch)?;
        metrics.restored(store, remainder, 0);
        tracing::info!(
            task = %task.id(), store, records = restored, elapsed_ms = started.elapsed().as_millis() as u64,
            "store restored"
        );
        Ok(restored)
    }
}
