//! Long restores, on the in-process cluster: a task's stores restore from
//! the stream thread's poll loop, slice by slice, so that the consumer
//! keeps its place in the group however long the restore takes, and a
//! shutdown in the middle returns at once, keeping what was restored for
//! the next start to continue from.
//!
//! The changelog is written directly (with the group's commit naming its
//! end, as an instance's commit would), so that a large store needs no
//! processing first. librdkafka's mock cluster keeps at most 5 MB of
//! records per partition (it deletes the oldest beyond that), so the
//! records are spread over many partitions: one instance restores them
//! all, one task after the other.

use std::time::{Duration, Instant};
use weir::runtime::{KafkaStreams, KeyLocation, StreamsConfig, StreamsState};
use weir::serde::Utf8;
use weir::testing::kafka::commit_offsets;
use weir::{Consumed, StreamsBuilder, Topology};
use weir_e2e::cluster::Cluster;

/// Partitions, and records per changelog partition: enough that the
/// restore outlasts the consumer's `max.poll.interval.ms` below, few
/// enough that each partition stays within the mock cluster's 5 MB.
const PARTITIONS: i32 = 20;
const RECORDS_PER_PARTITION: usize = 150_000;
const RECORDS: usize = PARTITIONS as usize * RECORDS_PER_PARTITION;
const MAX_POLL_INTERVAL: Duration = Duration::from_millis(3_000);
const WAIT: Duration = Duration::from_secs(120);

struct Setup {
    cluster: Cluster,
    input: String,
    changelog: String,
    _state: tempfile::TempDir,
    config: StreamsConfig,
}

impl Setup {
    /// An application whose one task has a store of `RECORDS` keys in its
    /// changelog, committed.
    fn new(application: &str) -> Self {
        let cluster = Cluster::embedded();
        let input = cluster.create_topic("accounts", PARTITIONS);
        let state = tempfile::tempdir().unwrap();
        let config = cluster
            .config(application, state.path())
            .set("consumer.session.timeout.ms", MAX_POLL_INTERVAL.as_millis().to_string())
            .set("consumer.heartbeat.interval.ms", "300")
            .set(
                "consumer.max.poll.interval.ms",
                MAX_POLL_INTERVAL.as_millis().to_string(),
            );
        let app = config.get("application.id").unwrap().to_string();
        let changelog = weir::topology::changelog_topic(&app, "accounts");
        let setup = Setup {
            cluster,
            input,
            changelog,
            _state: state,
            config,
        };
        setup.cluster.prepare_topics(&setup.topology(), &setup.config);
        let producer = setup.cluster.producer();
        let mut committed = Vec::new();
        for partition in 0..PARTITIONS {
            for i in 0..RECORDS_PER_PARTITION {
                let key = if i == 0 || i == RECORDS_PER_PARTITION - 1 {
                    key_of(partition, i)
                } else {
                    format!("p{partition}-{i}")
                };
                producer
                    .send_raw(
                        &setup.changelog,
                        Some(partition),
                        Some(key.as_bytes()),
                        Some(i.to_string().as_bytes()),
                    )
                    .unwrap();
            }
            committed.push((setup.input.as_str(), partition, 0));
            committed.push((setup.changelog.as_str(), partition, RECORDS_PER_PARTITION as i64));
        }
        producer.flush().unwrap();
        commit_offsets(setup.cluster.bootstrap_servers(), &app, &committed).unwrap();
        setup
    }

    fn topology(&self) -> Topology {
        let builder = StreamsBuilder::new();
        builder.table(&self.input, Consumed::with(Utf8, Utf8).store("accounts"));
        builder.build().unwrap()
    }

    fn start(&self) -> KafkaStreams {
        let mut streams = self.cluster.streams(self.topology(), &self.config);
        streams.start().unwrap();
        streams
    }
}

/// A key of record `i` that murmur2 puts on `partition`, where an
/// interactive query looks for it (the records the test queries have
/// such keys).
fn key_of(partition: i32, i: usize) -> String {
    (0..)
        .map(|n| format!("k{i}-{n}"))
        .find(|key| weir::partition::partition_for_key(key.as_bytes(), PARTITIONS) == partition)
        .expect("some key lands on every partition")
}

/// The store's value of `key`, once the instance answers for it.
fn value_of(streams: &KafkaStreams, key: &str) -> Option<String> {
    let store = streams.store("accounts", Utf8, Utf8).unwrap();
    match store.get(&key.to_string()).unwrap() {
        KeyLocation::Local(value) => value,
        other => panic!("{key} is not local: {other:?}"),
    }
}

/// The first and last key of every partition are in the store.
fn assert_every_partition_restored(streams: &KafkaStreams) {
    for partition in 0..PARTITIONS {
        for i in [0, RECORDS_PER_PARTITION - 1] {
            let key = key_of(partition, i);
            assert_eq!(value_of(streams, &key), Some(i.to_string()), "{key}");
        }
    }
}

#[test]
fn a_restore_longer_than_the_poll_interval_keeps_the_member_in_its_group() {
    let setup = Setup::new("long-restore");
    let started = Instant::now();
    let mut streams = setup.start();
    assert!(
        streams.wait_for_state(StreamsState::Running, WAIT),
        "the instance did not finish its restore: {:?}",
        streams.state()
    );
    let took = started.elapsed();
    assert!(
        took > 2 * MAX_POLL_INTERVAL,
        "the restore took {took:?}, not long enough to show anything; write more records"
    );
    let metrics = streams.metrics();
    assert_eq!(
        metrics.restored_total(),
        RECORDS as u64,
        "the restore ran more than once: the member lost its partitions ({metrics:?})"
    );
    assert_eq!(metrics.rebalances, 1, "{metrics:?}");
    assert_every_partition_restored(&streams);
    streams.close().unwrap();
}

#[test]
fn a_shutdown_in_the_middle_of_a_restore_is_prompt_and_the_next_start_continues_it() {
    let setup = Setup::new("stopped-restore");
    let mut first = setup.start();
    let restoring =
        weir::testing::kafka::eventually(WAIT, || Ok(first.metrics().restored_total() >= RECORDS as u64 / 10)).unwrap();
    assert!(restoring, "the restore did not start: {:?}", first.metrics());
    assert_ne!(
        first.state(),
        StreamsState::Running,
        "restored too fast to stop in the middle"
    );
    let stopping = Instant::now();
    first.close().unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "the shutdown waited {:?} for the restore",
        stopping.elapsed()
    );
    let restored_first = first.metrics().restored_total();
    assert!(restored_first < RECORDS as u64, "{restored_first}");
    drop(first);

    let mut second = setup.start();
    assert!(second.wait_for_state(StreamsState::Running, WAIT));
    let restored_second = second.metrics().restored_total();
    assert_eq!(
        restored_first + restored_second,
        RECORDS as u64,
        "the second start restores only what the first did not"
    );
    assert_every_partition_restored(&second);
    second.close().unwrap();
}
