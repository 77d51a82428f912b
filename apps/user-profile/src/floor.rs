//! The pass-through floor: a plain rdkafka application that does exactly
//! the Kafka I/O of weir's join stage and nothing else, over the same
//! topics, with the same client settings and the same number of threads.
//! Per CDC event it reads the event, writes it to a repartition topic (by
//! its key, murmur2), reads it back, and writes a changelog record (to the
//! same partition) and an output record. No decoding, no stores, no join,
//! no commit: what the broker and the clients allow. The demo and the
//! `cdc_join` benchmark print weir's rate beside it.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::embedded::EmbeddedKafka;
use weir::runtime::CLIENT_DEFAULTS;

/// The topics the floor writes, named after its run.
struct FloorTopics {
    repartition: String,
    changelog: String,
    output: String,
}

/// Runs the floor over `inputs` (each with `partitions` partitions) on
/// `threads` threads until it has read `reads` records (each event twice:
/// from its input, then from the repartition topic) and every write is
/// acknowledged; returns how long that took. `settings` are the
/// application's `consumer.*` and `producer.*` settings, given to the
/// floor's clients as weir gives them to its own.
pub fn pass_through(
    kafka: &EmbeddedKafka,
    inputs: &[&str],
    partitions: i32,
    threads: usize,
    reads: u64,
    settings: &[(&str, String)],
) -> Duration {
    let topics = Arc::new(FloorTopics {
        repartition: "floor-repartition".into(),
        changelog: "floor-changelog".into(),
        output: "floor-output".into(),
    });
    for topic in [&topics.repartition, &topics.changelog, &topics.output] {
        kafka.create_topic(topic, partitions).expect("a floor topic");
    }
    let read = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|thread| {
            let servers = kafka.bootstrap_servers().to_string();
            let inputs: Vec<String> = inputs.iter().map(|t| t.to_string()).collect();
            let (topics, read) = (topics.clone(), read.clone());
            let settings: Vec<(String, String)> = settings.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
            // Partitions are dealt out as weir's range assignor deals tasks.
            let mine: Vec<i32> = (0..partitions).filter(|p| *p as usize % threads == thread).collect();
            std::thread::spawn(move || run_thread(&servers, &inputs, &mine, &topics, &read, reads, &settings))
        })
        .collect();
    for worker in workers {
        worker.join().expect("a floor thread");
    }
    started.elapsed()
}

fn run_thread(
    servers: &str,
    inputs: &[String],
    partitions: &[i32],
    topics: &FloorTopics,
    read: &AtomicU64,
    reads: u64,
    settings: &[(String, String)],
) {
    let client = |prefix: &str| {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", servers);
        let defaults = CLIENT_DEFAULTS.iter().map(|(key, value)| (*key, *value));
        let settings = settings.iter().map(|(key, value)| (key.as_str(), value.as_str()));
        for (key, value) in defaults.chain(settings) {
            if let Some(key) = key.strip_prefix(prefix) {
                config.set(key, value);
            }
        }
        config
    };
    let consumer: BaseConsumer = client("consumer.")
        .set("group.id", "floor")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        // The embedded cluster deletes a partition's oldest records beyond
        // 5 MB; a floor that falls that far behind must say so, not wait.
        .set("auto.offset.reset", "error")
        .create()
        .expect("a floor consumer");
    let mut assignment = TopicPartitionList::new();
    for &partition in partitions {
        for topic in inputs.iter().chain([&topics.repartition]) {
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .expect("a partition");
        }
    }
    consumer.assign(&assignment).expect("an assignment");
    let producer: BaseProducer = client("producer.")
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true")
        .create()
        .expect("a floor producer");
    while read.load(Ordering::Relaxed) < reads {
        let Some(polled) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = match polled {
            Ok(message) => message,
            Err(KafkaError::PartitionEOF(_)) => continue,
            Err(error) => panic!(
                "the floor cannot read: {error} (an offset out of range means the embedded cluster deleted \
                 records the floor had not read yet)"
            ),
        };
        read.fetch_add(1, Ordering::Relaxed);
        let (key, value) = (message.key().unwrap_or_default(), message.payload().unwrap_or_default());
        if message.topic() == topics.repartition {
            send(
                &producer,
                BaseRecord::to(&topics.changelog)
                    .partition(message.partition())
                    .key(key)
                    .payload(value),
            );
            send(&producer, BaseRecord::to(&topics.output).key(key).payload(value));
        } else {
            send(&producer, BaseRecord::to(&topics.repartition).key(key).payload(value));
        }
        producer.poll(Duration::ZERO);
    }
    weir::runtime::flush(&producer, Duration::from_secs(60)).expect("the floor's writes acknowledged");
}

fn send<'a>(producer: &BaseProducer, mut record: BaseRecord<'a, [u8], [u8]>) {
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                record = returned;
                producer.poll(Duration::from_millis(10));
            }
            Err((error, _)) => panic!("the floor cannot write: {error}"),
        }
    }
}
