//! Helpers for tests that run against a Kafka cluster (an
//! [`EmbeddedKafka`](crate::embedded::EmbeddedKafka) or a real one): write
//! records as Kafka's Java client would, read a topic back, record by
//! record or as the last value per key (what a compacted topic holds once
//! compacted), and read what a consumer group has committed.
//!
//! ```
//! use weir::embedded::EmbeddedKafka;
//! use weir::serde::Utf8;
//! use weir::testing::kafka::{read_compacted, TestProducer};
//!
//! let kafka = EmbeddedKafka::start().unwrap();
//! kafka.create_topic("greetings", 3).unwrap();
//! let producer = TestProducer::new(kafka.bootstrap_servers()).unwrap();
//! producer.send("greetings", &Utf8, &Utf8, &"a".to_string(), Some(&"hello".to_string())).unwrap();
//! producer.send("greetings", &Utf8, &Utf8, &"a".to_string(), Some(&"bye".to_string())).unwrap();
//! producer.flush().unwrap();
//! let view = read_compacted(kafka.bootstrap_servers(), "greetings", &Utf8, &Utf8).unwrap();
//! assert_eq!(view["a"], "bye");
//! ```

use crate::error::WeirError;
use crate::record::{InputHeaders, RawRecord};
use crate::runtime::KafkaHeaders;
use crate::serde::Serde;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Writes records the way Kafka Connect (Debezium) and Kafka Streams do:
/// partitioned by murmur2 of the key bytes.
pub struct TestProducer {
    producer: BaseProducer,
}

impl TestProducer {
    pub fn new(bootstrap_servers: &str) -> Result<Self, WeirError> {
        Self::with_settings(bootstrap_servers, &[])
    }

    /// A producer with further librdkafka `settings` (`(key, value)` pairs).
    pub fn with_settings(bootstrap_servers: &str, settings: &[(&str, &str)]) -> Result<Self, WeirError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap_servers)
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5");
        for (key, value) in settings {
            config.set(*key, *value);
        }
        let producer = config
            .create()
            .map_err(|e| WeirError::Kafka(format!("cannot create a test producer: {e}")))?;
        Ok(TestProducer { producer })
    }

    /// Sends `value` (`None`: a tombstone) under `key`, serialized by the serdes.
    pub fn send<K, V>(
        &self,
        topic: &str,
        key_serde: &impl Serde<K>,
        value_serde: &impl Serde<V>,
        key: &K,
        value: Option<&V>,
    ) -> Result<(), WeirError> {
        let key = key_serde.to_bytes(topic, key)?;
        let value = match value {
            Some(value) => value_serde.to_bytes(topic, value)?,
            None => None,
        };
        self.send_raw(topic, None, key.as_deref(), value.as_deref())
    }

    /// Sends bytes as they are, to `partition` or to the key's partition.
    pub fn send_raw(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<(), WeirError> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(value) = value {
            record = record.payload(value);
        }
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((error, _)) => return Err(WeirError::Kafka(format!("cannot send to {topic}: {error}"))),
            }
        }
    }

    /// Waits until every record sent is acknowledged.
    pub fn flush(&self) -> Result<(), WeirError> {
        crate::runtime::flush(&self.producer, TIMEOUT)
            .map_err(|e| WeirError::Kafka(format!("cannot flush the test producer: {e}")))
    }
}

/// A record read back from a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub record: RawRecord,
}

/// Every record of `topic` from its beginning to its end as of now, in
/// offset order per partition (partitions one after another). Reads only
/// committed records of transactions.
pub fn read_topic(bootstrap_servers: &str, topic: &str) -> Result<Vec<ReadRecord>, WeirError> {
    let (consumer, partitions) = consumer_from_beginning(bootstrap_servers, &[topic])?;
    let mut pending: BTreeSet<i32> = partitions.into_iter().map(|(_, partition)| partition).collect();
    let mut records = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while !pending.is_empty() {
        if Instant::now() > deadline {
            return Err(WeirError::Kafka(format!("reading {topic} timed out")));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => records.push(ReadRecord {
                partition: message.partition(),
                offset: message.offset(),
                record: RawRecord {
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().map(<[u8]>::to_vec),
                    timestamp: message.timestamp().to_millis().unwrap_or(-1),
                    headers: KafkaHeaders(&message).to_headers(),
                },
            }),
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                pending.remove(&partition);
            }
            Some(Err(error)) => return Err(WeirError::Kafka(format!("cannot read {topic}: {error}"))),
            None => {}
        }
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    Ok(records)
}

/// A consumer outside any group, assigned every partition of `topics` from
/// its beginning (committed records of transactions only; the end of a
/// partition comes as a `PartitionEOF` error), and the partitions it got.
pub fn consumer_from_beginning(
    bootstrap_servers: &str,
    topics: &[&str],
) -> Result<(TestConsumer, Vec<(String, i32)>), WeirError> {
    let consumer: TestConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers)
        // Assigned partitions only: the group is never joined, but librdkafka
        // wants one.
        .set("group.id", "weir-test-reader")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        // The in-process cluster answers a fetch that finds nothing only
        // when the wait is over; a reader that times arrivals must not
        // wait 500 ms for each.
        .set("fetch.wait.max.ms", "10")
        .create_with_context(ReaderContext)
        .map_err(|e| WeirError::Kafka(format!("cannot create a test consumer: {e}")))?;
    let partitions = partitions_of(&consumer, topics)?;
    let mut assignment = TopicPartitionList::new();
    for (topic, partition) in &partitions {
        assignment
            .add_partition_offset(topic, *partition, Offset::Beginning)
            .map_err(|e| WeirError::Kafka(e.to_string()))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| WeirError::Kafka(format!("cannot read {}: {e}", topics.join(", "))))?;
    Ok((consumer, partitions))
}

/// Every partition of `topics`, as the brokers' metadata lists them.
fn partitions_of<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topics: &[&str],
) -> Result<Vec<(String, i32)>, WeirError> {
    let mut partitions = Vec::new();
    for &topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .map_err(|e| WeirError::Kafka(format!("cannot read the metadata of {topic}: {e}")))?;
        partitions.extend(
            metadata
                .topics()
                .iter()
                .filter(|t| t.name() == topic)
                .flat_map(|t| t.partitions().iter().map(|p| (topic.to_string(), p.id()))),
        );
    }
    Ok(partitions)
}

/// The offsets consumer group `group` has committed for every partition of
/// `topics` (`None` where it has none), read without joining the group:
/// what an instance taking over a partition would resume from.
///
/// ```no_run
/// let committed = weir::testing::kafka::committed_offsets("localhost:9092", "my-app", &["orders"])?;
/// for (topic, partition, offset) in committed {
///     println!("{topic}[{partition}]: {offset:?}");
/// }
/// # Ok::<(), weir::WeirError>(())
/// ```
pub fn committed_offsets(
    bootstrap_servers: &str,
    group: &str,
    topics: &[&str],
) -> Result<Vec<(String, i32, Option<i64>)>, WeirError> {
    let consumer = group_client(bootstrap_servers, group)?;
    let mut partitions = TopicPartitionList::new();
    for (topic, partition) in partitions_of(&consumer, topics)? {
        partitions.add_partition(&topic, partition);
    }
    let committed = consumer
        .committed_offsets(partitions, TIMEOUT)
        .map_err(|e| WeirError::Kafka(format!("cannot read the offsets of group {group}: {e}")))?;
    Ok(committed
        .elements()
        .iter()
        .map(|e| {
            (
                e.topic().to_string(),
                e.partition(),
                e.offset().to_raw().filter(|o| *o >= 0),
            )
        })
        .collect())
}

/// Commits `offsets` (topic, partition, next offset to read) for consumer
/// group `group` without joining it, as an operator's reset tool does; the
/// group must have no active members on brokers that check.
///
/// ```no_run
/// weir::testing::kafka::commit_offsets("localhost:9092", "my-app", &[("orders", 0, 42)])?;
/// # Ok::<(), weir::WeirError>(())
/// ```
pub fn commit_offsets(bootstrap_servers: &str, group: &str, offsets: &[(&str, i32, i64)]) -> Result<(), WeirError> {
    let consumer = group_client(bootstrap_servers, group)?;
    let mut list = TopicPartitionList::new();
    for (topic, partition, offset) in offsets {
        list.add_partition_offset(topic, *partition, Offset::Offset(*offset))
            .map_err(|e| WeirError::Kafka(e.to_string()))?;
    }
    consumer
        .commit(&list, rdkafka::consumer::CommitMode::Sync)
        .map_err(|e| WeirError::Kafka(format!("cannot commit offsets for group {group}: {e}")))
}

/// A client of consumer group `group` that never joins it.
fn group_client(bootstrap_servers: &str, group: &str) -> Result<TestConsumer, WeirError> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create_with_context(ReaderContext)
        .map_err(|e| WeirError::Kafka(format!("cannot create a test consumer: {e}")))
}

/// A consumer of [`consumer_from_beginning`].
pub type TestConsumer = BaseConsumer<ReaderContext>;

/// The context of [`consumer_from_beginning`]'s consumers: librdkafka also
/// reports each end of partition as a client error, which its readers see
/// through `poll` anyway, so it is not logged; other errors are.
pub struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::warn!(%error, reason, "test consumer error");
        }
    }
}

impl ConsumerContext for ReaderContext {}

/// The last value per key of `topic`, without keys whose last record is a
/// tombstone: a compacted topic's content, whether compaction ran or not.
pub fn read_compacted<K: Eq + Hash, V>(
    bootstrap_servers: &str,
    topic: &str,
    key_serde: &impl Serde<K>,
    value_serde: &impl Serde<V>,
) -> Result<HashMap<K, V>, WeirError> {
    compact(topic, &read_topic(bootstrap_servers, topic)?, key_serde, value_serde)
}

/// [`read_compacted`] of records already read from `topic` (by
/// [`read_topic`]), for a caller that also looks at the records.
pub fn compact<K: Eq + Hash, V>(
    topic: &str,
    records: &[ReadRecord],
    key_serde: &impl Serde<K>,
    value_serde: &impl Serde<V>,
) -> Result<HashMap<K, V>, WeirError> {
    let mut view = HashMap::new();
    for read in records {
        let key = key_serde.deserialize(topic, read.record.key.as_deref())?;
        match read.record.value.as_deref() {
            Some(bytes) => view.insert(key, value_serde.deserialize(topic, Some(bytes))?),
            None => view.remove(&key),
        };
    }
    Ok(view)
}

/// Calls `check` until it returns true or `timeout` passes; returns the last answer.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> Result<bool, WeirError>) -> Result<bool, WeirError> {
    let deadline = Instant::now() + timeout;
    loop {
        if check()? {
            return Ok(true);
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
