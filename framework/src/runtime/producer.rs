//! The instance's producer: sends every task output (sink records,
//! repartition records, changelog writes, dead letters), tracks what the
//! brokers acknowledged, and, under exactly-once, wraps them with the
//! consumed offsets in transactions.

use super::broker::{Acknowledged, CommitFailure, GroupIdentity, Output, PartitionOffset};
use super::config::{ClientKind, ProcessingGuarantee, Settings, DELIVERY_TIMEOUT_KEYS};
use super::consumer::partition_list;
use super::consumer::KafkaHeaders;
use super::delivery_lag::DeliveryLag;
use super::health::Problems;
use crate::error::WeirError;
use crate::error_handler::{dead_letter, ErrorHandler, Failure};
use crate::metrics::{RuntimeMetrics, SkipReason};
use crate::record::{InputHeaders, OutputKind, OutputRecord, RawRecord};
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig};
use rdkafka::{ClientContext, Message};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a flush or a transaction step may take before the instance
/// gives up with an error.
const BROKER_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a flush waits for delivery reports before it looks again.
const FLUSH_POLL_SLICE: Duration = Duration::from_millis(1);

/// Waits until `producer` has no record in flight (each acknowledged or
/// failed, its delivery report served), or `timeout` passes.
///
/// rdkafka's own `flush` waits in slices of 100 ms that each last their
/// full length (its `poll` serves events until the slice is over), so a
/// flush with anything in flight took at least 100 ms: a tenth of every
/// second at one commit a second, and the same stall for every record that
/// arrived meanwhile. This waits in slices of a millisecond.
///
/// ```no_run
/// use rdkafka::config::ClientConfig;
/// use rdkafka::producer::{BaseProducer, BaseRecord};
/// use std::time::Duration;
///
/// let producer: BaseProducer = ClientConfig::new()
///     .set("bootstrap.servers", "localhost:9092")
///     .create()?;
/// producer
///     .send(BaseRecord::to("greetings").key("k").payload("hello"))
///     .map_err(|(error, _)| error)?;
/// weir::runtime::flush(&producer, Duration::from_secs(30))?;
/// # Ok::<(), rdkafka::error::KafkaError>(())
/// ```
pub fn flush<C: ProducerContext>(producer: &BaseProducer<C>, timeout: Duration) -> KafkaResult<()> {
    let deadline = Instant::now() + timeout;
    loop {
        // A zero timeout sends what lingers and reports, without waiting,
        // whether anything is still in flight.
        match producer.flush(Duration::ZERO) {
            Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) if Instant::now() < deadline => {
                producer.poll(FLUSH_POLL_SLICE)
            }
            done => return done,
        }
    }
}

/// librdkafka's default `message.timeout.ms`.
const LIBRDKAFKA_MESSAGE_TIMEOUT: Duration = Duration::from_secs(300);

/// What the brokers acknowledged since the producer started.
#[derive(Default)]
struct Deliveries {
    /// The first failed delivery; the instance stops on it.
    failure: Option<String>,
    /// Per topic and partition, what was acknowledged of the records sent
    /// to an explicit partition (changelogs among them).
    acknowledged: HashMap<String, Vec<Acknowledged>>,
    /// Output records the brokers refused, for the production error handler.
    refused: Vec<Refused>,
}

/// An output record the brokers refused (too large, invalid), with why.
struct Refused {
    topic: String,
    record: RawRecord,
    error: String,
}

/// Errors that refuse one record for good, whatever the retries: what the
/// production error handler is for.
fn refuses_the_record(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::InvalidTimestamp
    )
}

/// Receives delivery reports (on the thread that polls the producer).
pub(crate) struct DeliveryTracker {
    deliveries: Mutex<Deliveries>,
    /// Records whose delivery was reported, delivered or not.
    settled: AtomicU64,
    problems: Arc<Problems>,
}

impl ClientContext for DeliveryTracker {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka producer error");
        self.problems.client_error("producer", &error);
    }
}

/// The delivery opaque of a record: whether its acknowledged offset is
/// tracked (only offsets of records sent to an explicit partition are
/// needed, so the others skip the bookkeeping), and whether it is a user's
/// output (whose refusal the production error handler takes).
#[derive(Clone, Copy)]
struct Opaque(usize);

impl Opaque {
    const TRACKED: usize = 1;
    const OUTPUT: usize = 2;

    fn of(record: &OutputRecord) -> Self {
        let tracked = if record.partition.is_some() { Self::TRACKED } else { 0 };
        let output = if record.kind == OutputKind::Output {
            Self::OUTPUT
        } else {
            0
        };
        Opaque(tracked | output)
    }

    fn tracked(self) -> bool {
        self.0 & Self::TRACKED != 0
    }

    fn output(self) -> bool {
        self.0 & Self::OUTPUT != 0
    }
}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        self.settled.fetch_add(1, Ordering::Relaxed);
        let opaque = Opaque(opaque);
        if !opaque.tracked() && result.is_ok() {
            return;
        }
        let mut deliveries = self.deliveries.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(message) => {
                let (partition, offset) = (message.partition(), message.offset());
                let offsets = match deliveries.acknowledged.get_mut(message.topic()) {
                    Some(offsets) => offsets,
                    None => deliveries.acknowledged.entry(message.topic().to_string()).or_default(),
                };
                if offsets.len() <= partition as usize {
                    offsets.resize(partition as usize + 1, Acknowledged::default());
                }
                let slot = &mut offsets[partition as usize];
                slot.end = Some(slot.end.unwrap_or(0).max(offset + 1));
                slot.count += 1;
            }
            // A record purged from the queue of a lost assignment was
            // never meant to arrive.
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::PurgeQueue), _)) => {}
            Err((KafkaError::MessageProduction(code), message)) if opaque.output() && refuses_the_record(*code) => {
                deliveries.refused.push(Refused {
                    topic: message.topic().to_string(),
                    record: RawRecord {
                        key: message.key().map(<[u8]>::to_vec),
                        value: message.payload().map(<[u8]>::to_vec),
                        timestamp: message.timestamp().to_millis().unwrap_or(-1),
                        headers: KafkaHeaders(message).to_headers(),
                    },
                    error: code.to_string(),
                })
            }
            Err((error, message)) => {
                if deliveries.failure.is_none() {
                    deliveries.failure = Some(format!(
                        "a record for {}[{}] was not delivered: {error}",
                        message.topic(),
                        message.partition()
                    ));
                }
            }
        }
    }
}

/// Sends task outputs to Kafka.
pub(crate) struct RecordSender {
    producer: BaseProducer<DeliveryTracker>,
    /// What happens to a user's output record the brokers refuse.
    on_error: ErrorHandler,
    metrics: Arc<RuntimeMetrics>,
    /// Records handed to the producer so far.
    sent: Cell<u64>,
    lag: RefCell<DeliveryLag>,
}

impl RecordSender {
    /// A producer for the instance; under exactly-once it is transactional
    /// with `transactional_id`, initialised and inside a first transaction.
    pub(crate) fn new(
        settings: &Settings,
        transactional_id: &str,
        metrics: Arc<RuntimeMetrics>,
        problems: Arc<Problems>,
    ) -> Result<Self, WeirError> {
        let mut config = settings.client_config(ClientKind::Producer);
        // Partition by murmur2 of the key bytes, as the Java client, Kafka
        // Streams and the test driver do.
        config.set("partitioner", "murmur2_random");
        config.set("enable.idempotence", "true");
        if settings.guarantee == ProcessingGuarantee::AtLeastOnce
            && DELIVERY_TIMEOUT_KEYS.iter().all(|key| config.get(key).is_none())
        {
            config.set("message.timeout.ms", settings.clients.max_delivery_ms().to_string());
        }
        // 0, no timeout, is taken for librdkafka's default.
        let delivery_timeout = DELIVERY_TIMEOUT_KEYS
            .iter()
            .find_map(|key| config.get(key).and_then(|v| v.trim().parse().ok()))
            .filter(|ms| *ms > 0)
            .map_or(LIBRDKAFKA_MESSAGE_TIMEOUT, Duration::from_millis);
        let transactional = settings.guarantee == ProcessingGuarantee::ExactlyOnceV2;
        if transactional {
            config.set("transactional.id", transactional_id);
            if config.get("transaction.timeout.ms").is_none() {
                config.set("transaction.timeout.ms", "10000");
            }
        }
        let producer: BaseProducer<DeliveryTracker> = config
            .create_with_context(DeliveryTracker {
                deliveries: Mutex::default(),
                settled: AtomicU64::new(0),
                problems,
            })
            .map_err(|e| WeirError::Kafka(format!("cannot create the producer: {e}")))?;
        let sender = RecordSender {
            producer,
            on_error: settings.production_error_handler.clone(),
            metrics,
            sent: Cell::new(0),
            lag: RefCell::new(DeliveryLag::new(delivery_timeout)),
        };
        if transactional {
            sender.producer.init_transactions(BROKER_TIMEOUT).map_err(|e| {
                WeirError::Kafka(format!("cannot initialise transactions as '{transactional_id}': {e}"))
            })?;
            sender.begin()?;
        }
        Ok(sender)
    }

    fn deliveries(&self) -> std::sync::MutexGuard<'_, Deliveries> {
        self.producer
            .context()
            .deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Fails on a failed delivery, and has the production error handler
    /// take the refused records; returns how many dead letters it sent.
    fn check_deliveries(&self) -> Result<usize, WeirError> {
        let refused = {
            let mut deliveries = self.deliveries();
            if let Some(failure) = &deliveries.failure {
                return Err(WeirError::Kafka(failure.clone()));
            }
            std::mem::take(&mut deliveries.refused)
        };
        let mut dead_letters = 0;
        for refused in refused {
            dead_letters += self.handle_refused(refused)?;
        }
        Ok(dead_letters)
    }

    /// Applies the production error handler to a refused output record;
    /// returns 1 when it sent a dead letter.
    fn handle_refused(&self, refused: Refused) -> Result<usize, WeirError> {
        let Refused { topic, record, error } = refused;
        match &self.on_error {
            ErrorHandler::Fail => Err(WeirError::Kafka(format!(
                "a record for {topic} was refused: {error} (production.error.handler can skip or dead-letter it)"
            ))),
            ErrorHandler::LogAndContinue => {
                tracing::warn!(topic, %error, "skipping an output record the brokers refused");
                self.metrics.skipped(SkipReason::ProductionError, &topic);
                Ok(0)
            }
            ErrorHandler::DeadLetter(dlq) => {
                let failure = Failure {
                    class: "production",
                    message: error,
                    source: None,
                    target: Some(&topic),
                };
                self.send(&dead_letter(dlq, failure, record))?;
                self.metrics.skipped(SkipReason::ProductionDeadLettered, &topic);
                Ok(1)
            }
        }
    }

    fn begin(&self) -> Result<(), WeirError> {
        self.producer
            .begin_transaction()
            .map_err(|e| WeirError::Kafka(format!("cannot begin a transaction: {e}")))
    }
}

impl Output for RecordSender {
    fn send(&self, output: &OutputRecord) -> Result<(), WeirError> {
        let raw = &output.record;
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(&output.topic, Opaque::of(output).0).timestamp(raw.timestamp);
        if let Some(key) = raw.key.as_deref() {
            record = record.key(key);
        }
        if let Some(value) = raw.value.as_deref() {
            record = record.payload(value);
        }
        if let Some(partition) = output.partition {
            record = record.partition(partition);
        }
        if !raw.headers.is_empty() {
            let headers = raw.headers.iter().fold(OwnedHeaders::new(), |headers, h| {
                headers.insert(KafkaHeader {
                    key: &h.key,
                    value: Some(&h.value),
                })
            });
            record = record.headers(headers);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.sent.set(self.sent.get() + 1);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    self.producer.poll(Duration::from_millis(10));
                }
                // Refused before it left (librdkafka checks message.max.bytes).
                Err((KafkaError::MessageProduction(code), _))
                    if output.kind == OutputKind::Output && refuses_the_record(code) =>
                {
                    self.deliveries().refused.push(Refused {
                        topic: output.topic.to_string(),
                        record: raw.clone(),
                        error: code.to_string(),
                    });
                    return Ok(());
                }
                Err((error, _)) => {
                    return Err(WeirError::Kafka(format!(
                        "cannot send a record to {}: {error}",
                        output.topic
                    )))
                }
            }
        }
    }

    fn poll(&self, wait: Duration) -> Result<(), WeirError> {
        self.producer.poll(wait);
        self.check_deliveries().map(|_| ())
    }

    fn behind(&self) -> bool {
        let settled = self.producer.context().settled.load(Ordering::Relaxed);
        self.lag.borrow_mut().behind(Instant::now(), self.sent.get(), settled)
    }

    /// Flushes until no record is pending, dead letters of refused records
    /// included.
    fn flush(&self) -> Result<(), WeirError> {
        loop {
            flush(&self.producer, BROKER_TIMEOUT)
                .map_err(|e| WeirError::Kafka(format!("cannot flush the producer: {e}")))?;
            if self.check_deliveries()? == 0 {
                return Ok(());
            }
        }
    }

    fn purge(&self) {
        self.producer.purge(PurgeConfig::default().queue());
        // Purged records report their delivery as failed on the next poll.
        self.producer.poll(Duration::ZERO);
    }

    fn acknowledged(&self, topic: &str, partition: i32) -> Acknowledged {
        self.deliveries()
            .acknowledged
            .get(topic)
            .and_then(|partitions| partitions.get(partition as usize).copied())
            .unwrap_or_default()
    }

    /// Steps that fail with a retriable error are retried.
    fn commit_transaction(
        &self,
        offsets: &[PartitionOffset],
        metadata: Option<&str>,
        group: &GroupIdentity,
    ) -> Result<(), CommitFailure> {
        let group = group
            .0
            .downcast_ref::<ConsumerGroupMetadata>()
            .ok_or_else(|| WeirError::Other("a transaction's group identity is not a Kafka consumer's".into()))?;
        // Dead letters of refused records belong to this transaction.
        self.flush()?;
        if !offsets.is_empty() {
            let offsets = partition_list(offsets, metadata)?;
            retrying("add the consumed offsets to the transaction", || {
                self.producer
                    .send_offsets_to_transaction(&offsets, group, BROKER_TIMEOUT)
            })?;
        }
        retrying("commit the transaction", || {
            self.producer.commit_transaction(BROKER_TIMEOUT)
        })?;
        self.check_deliveries()?;
        Ok(self.begin()?)
    }

    fn abort_transaction(&self) -> Result<(), WeirError> {
        self.producer
            .abort_transaction(BROKER_TIMEOUT)
            .map_err(|e| WeirError::Kafka(format!("cannot abort the transaction: {e}")))?;
        self.deliveries().failure = None;
        self.begin()
    }
}

/// Runs a transaction step, again while it fails with a retriable error.
fn retrying(step: &str, mut run: impl FnMut() -> KafkaResult<()>) -> Result<(), CommitFailure> {
    const ATTEMPTS: usize = 3;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let error = match run() {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        let described = WeirError::Kafka(format!("cannot {step}: {error}"));
        match &error {
            KafkaError::Transaction(e) if e.is_retriable() && attempt < ATTEMPTS => {
                tracing::warn!(%error, attempt, "retrying a transaction step");
            }
            KafkaError::Transaction(e) if e.txn_requires_abort() => return Err(CommitFailure::Abortable(described)),
            _ if error.to_string().contains("not supported by broker") => {
                return Err(CommitFailure::Fatal(WeirError::Kafka(format!(
                    "cannot {step}: the brokers do not support Kafka transactions ({error}); exactly_once_v2 needs \
                     them, at_least_once does not"
                ))))
            }
            _ => return Err(CommitFailure::Fatal(described)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::EmbeddedKafka;
    use rdkafka::config::ClientConfig;

    #[test]
    fn flush_returns_once_every_record_is_settled() {
        let kafka = EmbeddedKafka::start().unwrap();
        kafka.create_topic("flushed", 3).unwrap();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", kafka.bootstrap_servers())
            // Records wait in the queue unless the flush sends them.
            .set("linger.ms", "1000")
            .create()
            .unwrap();
        for i in 0..1000 {
            let key = i.to_string();
            producer
                .send(BaseRecord::to("flushed").key(&key).payload("x"))
                .map_err(|(error, _)| error)
                .unwrap();
        }
        assert!(producer.in_flight_count() > 0);
        flush(&producer, Duration::from_secs(30)).unwrap();
        assert_eq!(producer.in_flight_count(), 0);
    }

    #[test]
    fn flush_gives_up_after_its_timeout() {
        // Nothing listens there: the record cannot be delivered.
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:9")
            .create()
            .unwrap();
        producer
            .send(BaseRecord::to("nowhere").key("k").payload("x"))
            .map_err(|(error, _)| error)
            .unwrap();
        let error = flush(&producer, Duration::from_millis(50)).unwrap_err();
        assert_eq!(error, KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
        // The record is still there (the count also holds the error events
        // of the refused connections that no poll has served yet).
        assert!(producer.in_flight_count() >= 1);
    }
}
