//! The changelog reader: an rdkafka consumer outside the consumer group that
//! reads one changelog partition at a time, in slices, for restores (see
//! [`super::state_manager`] for what is read and why). It stays assigned to
//! the partition between the slices of a read.
//!
//! The end of a partition is where the consumer reports it (EOF), not a
//! watermark read beforehand: transaction markers may sit after the last
//! record, and some Kafka-compatible brokers report watermarks that are not
//! exact. For the same reason an EOF before a given target does not end a
//! read: the target was acknowledged by the broker, so the records are
//! there. A start offset the broker no longer has (the topic was recreated
//! or truncated) fails the read instead of silently skipping.

use super::broker::{ChangelogRange, ChangelogRecord, ChangelogSource, ChangelogVisitor, ReadProgress, RestoreFailure};
use super::config::{ClientKind, ProcessingGuarantee, Settings};
use crate::error::WeirError;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Records handed over in one batch.
const BATCH_RECORDS: usize = 10_000;
/// The longest one slice of a read takes, so that the stream thread polls
/// its group and serves its other tasks between slices.
const SLICE_TIME: Duration = Duration::from_millis(200);
/// The longest one poll of the reader waits.
const POLL_WAIT: Duration = Duration::from_millis(50);
/// How long the reader waits for the next record before giving up.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a long read logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct KafkaChangelogReader {
    consumer: BaseConsumer<ReaderContext>,
    /// The partition being read, kept assigned from one slice of a read
    /// to the next.
    session: RefCell<Option<Session>>,
}

/// A partition the reader is assigned, and where it is in it.
struct Session {
    topic: Arc<str>,
    partition: i32,
    /// The offset after the last record handed over.
    next: i64,
    /// Where the read started and is expected to end, and when it started,
    /// for progress reports.
    start: i64,
    end_estimate: i64,
    started: Instant,
    last_record: Instant,
    last_progress: Instant,
}

/// The configuration of a consumer that reads assigned partitions to
/// their ends, outside the application's group: the changelog reader's
/// and the global tables'.
pub(crate) fn partition_reader_config(settings: &Settings, purpose: &str) -> ClientConfig {
    let mut config = settings.client_config(ClientKind::Consumer);
    // Assigned partitions only, it never joins this group, but librdkafka
    // wants one.
    config
        .set("group.id", format!("{}-{purpose}", settings.application_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    // Under exactly-once, aborted writes must not come back into stores.
    let isolation = match settings.guarantee {
        ProcessingGuarantee::ExactlyOnceV2 => "read_committed",
        ProcessingGuarantee::AtLeastOnce => "read_uncommitted",
    };
    config.set("isolation.level", isolation);
    config
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

impl KafkaChangelogReader {
    pub(crate) fn new(settings: &Settings) -> Result<Self, WeirError> {
        let mut config = partition_reader_config(settings, "restore");
        config
            .set("auto.offset.reset", "error")
            // The end of a partition is known from a fetch that comes back
            // empty; do not let the broker hold it.
            .set("fetch.wait.max.ms", "10");
        let consumer = config
            .create_with_context(ReaderContext)
            .map_err(|e| WeirError::Kafka(format!("cannot create the changelog reader: {e}")))?;
        Ok(KafkaChangelogReader {
            consumer,
            session: RefCell::new(None),
        })
    }

    /// The session reading `range` from `range.from`: the current one if
    /// it is there, else a new assignment. `Err(Ok(end))` when the range
    /// holds nothing to read.
    fn session_for(&self, range: &ChangelogRange) -> Result<Result<(), i64>, RestoreFailure> {
        let (topic, partition) = (&*range.topic, range.partition);
        let mut session = self.session.borrow_mut();
        if let Some(current) = session.as_ref() {
            if &*current.topic == topic && current.partition == partition && Some(current.next) == range.from {
                return Ok(Ok(()));
            }
        }
        self.stop(&mut session)?;
        let (first, high) = self
            .consumer
            .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
            .map_err(|e| WeirError::Kafka(format!("cannot read the offsets of {topic}[{partition}]: {e}")))?;
        // A start outside the partition is stale. Otherwise the watermark
        // only feeds progress reports and skips reads of empty ranges; the
        // read itself finds the end.
        if range.from.is_some_and(|from| from < first || from > high) {
            return Err(RestoreFailure::OutOfRange);
        }
        let start_offset = range.from.unwrap_or(first);
        let end_estimate = range.to.unwrap_or(high);
        if start_offset >= end_estimate {
            return Ok(Err(range.to.unwrap_or(start_offset)));
        }
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(start_offset))
            .map_err(|e| WeirError::Kafka(e.to_string()))?;
        self.consumer
            .assign(&assignment)
            .map_err(|e| WeirError::Kafka(format!("cannot read {topic}[{partition}]: {e}")))?;
        let now = Instant::now();
        *session = Some(Session {
            topic: range.topic.clone(),
            partition,
            next: start_offset,
            start: start_offset,
            end_estimate,
            started: now,
            last_record: now,
            last_progress: now,
        });
        Ok(Ok(()))
    }

    /// Ends the current session, if any.
    fn stop(&self, session: &mut Option<Session>) -> Result<(), WeirError> {
        if let Some(ended) = session.take() {
            self.consumer.unassign().map_err(|e| {
                WeirError::Kafka(format!("cannot stop reading {}[{}]: {e}", ended.topic, ended.partition))
            })?;
        }
        Ok(())
    }

    /// Polls the session's partition for one slice of a read.
    fn read_slice(
        &self,
        session: &mut Session,
        range: &ChangelogRange,
        max_records: usize,
        visit: &mut ChangelogVisitor<'_>,
    ) -> Result<ReadProgress, RestoreFailure> {
        let (topic, partition) = (&*range.topic, range.partition);
        let started = Instant::now();
        // Records handed over in earlier batches of this slice.
        let mut handed = 0usize;
        let mut batch: Vec<ChangelogRecord> = Vec::with_capacity(BATCH_RECORDS.min(max_records).min(4096));
        let mut hand_over = |batch: &mut Vec<ChangelogRecord>, session: &Session| {
            visit(batch, (session.end_estimate - session.next).max(0) as u64)?;
            batch.clear();
            Ok::<(), WeirError>(())
        };
        let done = loop {
            match self.consumer.poll(POLL_WAIT) {
                Some(Ok(message)) if range.to.is_some_and(|to| message.offset() >= to) => break true,
                Some(Ok(message)) => {
                    session.last_record = Instant::now();
                    session.next = message.offset() + 1;
                    // A changelog record always has a key; skip anything else.
                    if let Some(key) = message.key() {
                        batch.push(ChangelogRecord {
                            offset: message.offset(),
                            key: key.to_vec(),
                            value: message.payload().map(<[u8]>::to_vec),
                        });
                    }
                    if range.to == Some(session.next) {
                        break true;
                    }
                    let slice_full = handed + batch.len() >= max_records;
                    if batch.len() >= BATCH_RECORDS || slice_full {
                        handed += batch.len();
                        hand_over(&mut batch, session)?;
                        if slice_full {
                            break false;
                        }
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => match range.to {
                    None => break true,
                    // Compaction may have removed the records just before the target.
                    Some(to) if self.position(topic, partition)? >= to => break true,
                    Some(_) => {}
                },
                Some(Err(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange,
                ))) => return Err(RestoreFailure::OutOfRange),
                Some(Err(KafkaError::MessageConsumptionFatal(code))) => {
                    return Err(WeirError::Kafka(format!("cannot read {topic}[{partition}]: {code}")).into())
                }
                // A broker that cannot be reached or is moving: librdkafka
                // retries, and the stall timeout bounds the wait.
                Some(Err(error)) => tracing::warn!(%error, topic = %topic, partition, "changelog read error; retrying"),
                None if session.last_record.elapsed() > STALL_TIMEOUT => {
                    return Err(WeirError::Kafka(format!(
                        "reading {topic}[{partition}] stalled at offset {}{}: no record and no end for {}s",
                        session.next,
                        range.to.map(|to| format!(" before offset {to}")).unwrap_or_default(),
                        STALL_TIMEOUT.as_secs()
                    ))
                    .into())
                }
                None => {}
            }
            if session.last_progress.elapsed() > PROGRESS_EVERY {
                session.last_progress = Instant::now();
                let read = session.next - session.start;
                tracing::info!(
                    topic = %topic,
                    partition,
                    at = session.next,
                    end = session.end_estimate,
                    remaining = (session.end_estimate - session.next).max(0),
                    records_per_s = (read as f64 / session.started.elapsed().as_secs_f64()) as u64,
                    "changelog read in progress"
                );
            }
            if started.elapsed() >= SLICE_TIME {
                break false;
            }
        };
        hand_over(&mut batch, session)?;
        Ok(if done {
            ReadProgress::Done(range.to.unwrap_or(session.next))
        } else {
            ReadProgress::More(session.next)
        })
    }

    /// The reader's position in a partition (the next offset it will read).
    fn position(&self, topic: &str, partition: i32) -> Result<i64, WeirError> {
        let positions = self
            .consumer
            .position()
            .map_err(|e| WeirError::Kafka(format!("cannot read the position in {topic}[{partition}]: {e}")))?;
        Ok(positions
            .find_partition(topic, partition)
            .and_then(|p| p.offset().to_raw())
            .unwrap_or(-1))
    }
}

impl ChangelogSource for KafkaChangelogReader {
    fn read_some(
        &self,
        range: &ChangelogRange,
        max_records: usize,
        visit: &mut ChangelogVisitor<'_>,
    ) -> Result<ReadProgress, RestoreFailure> {
        if let Err(end) = self.session_for(range)? {
            return Ok(ReadProgress::Done(end));
        }
        let mut session = self.session.borrow_mut();
        let current = session.as_mut().expect("a session was just opened");
        let read = self.read_slice(current, range, max_records, visit);
        if !matches!(read, Ok(ReadProgress::More(_))) {
            self.stop(&mut session)?;
        }
        read
    }
}
