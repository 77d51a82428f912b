//! What the broker process the suite runs (Tansu 0.6.0) does where Kafka
//! does otherwise, each shown by a probe with plain clients and asserted
//! per broker: the in-process cluster behaves as Kafka does. A probe that
//! starts failing on Tansu means the fault is gone and its workaround in
//! the suite (named in each probe) can go. With `KAFKA_BOOTSTRAP_SERVERS`
//! set, the cluster named is expected to behave as Kafka.

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::time::{Duration, Instant};
use weir::serde::Utf8;
use weir::testing::kafka::TestProducer;
use weir_e2e::cluster::Cluster;

/// Whether the cluster is the Tansu process the suite started.
fn is_tansu(cluster: &Cluster) -> bool {
    !cluster.is_embedded() && !cluster.supports_transactions()
}

/// Ten records in one batch, then ten in a second.
fn two_batches(cluster: &Cluster, topic: &str) {
    let producer = TestProducer::with_settings(
        cluster.bootstrap_servers(),
        &[("linger.ms", "500"), ("batch.num.messages", "10")],
    )
    .unwrap();
    for batch in 0..2 {
        for i in 0..10 {
            let n = batch * 10 + i;
            producer
                .send(topic, &Utf8, &Utf8, &format!("k{n}"), Some(&n.to_string()))
                .unwrap();
        }
        producer.flush().unwrap();
    }
}

fn consumer(cluster: &Cluster, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap()
}

/// A consumer of `topic`'s only partition from `offset`.
fn assigned_at(cluster: &Cluster, topic: &str, offset: i64) -> BaseConsumer {
    let consumer = consumer(cluster, &cluster.name(topic));
    let mut start = TopicPartitionList::new();
    start.add_partition_offset(topic, 0, Offset::Offset(offset)).unwrap();
    consumer.assign(&start).unwrap();
    consumer
}

/// The offsets `consumer` reads within `timeout`, up to `limit`.
fn read_offsets(consumer: &BaseConsumer, limit: usize, timeout: Duration) -> Vec<i64> {
    let deadline = Instant::now() + timeout;
    let mut offsets = Vec::new();
    while offsets.len() < limit && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            offsets.push(message.offset());
        }
    }
    offsets
}

weir_e2e::on_every_cluster!(
    a_fetch_from_inside_a_batch,
    a_resume_inside_a_batch,
    a_commit_from_outside_the_group
);

/// Tansu answers a fetch from an offset inside a record batch with nothing
/// of that batch: a consumer that starts there skips to the next batch.
/// (The suite's producers write one record per batch on Tansu.)
fn a_fetch_from_inside_a_batch(cluster: &Cluster) {
    let topic = cluster.create_topic("probe-inside", 1);
    two_batches(cluster, &topic);
    let consumer = assigned_at(cluster, &topic, 5);
    let offsets = read_offsets(&consumer, 15, Duration::from_secs(10));
    let expected: Vec<i64> = if is_tansu(cluster) {
        (10..20).collect()
    } else {
        (5..20).collect()
    };
    assert_eq!(offsets, expected);
}

/// The same fault after a pause: librdkafka drops what it fetched for a
/// paused partition and fetches again from the next record to hand out,
/// inside the batch, so on Tansu a pause and resume in the middle of a
/// batch skips the batch's rest. A consumer resuming from a committed
/// offset inside a batch meets it too. This is how an instance that pauses
/// its input (enrichment back-pressure, a commit waiting for lookups) loses
/// records on Tansu when its input was written in batches, as Kafka
/// Connect writes them.
fn a_resume_inside_a_batch(cluster: &Cluster) {
    let topic = cluster.create_topic("probe-resume", 1);
    two_batches(cluster, &topic);
    let consumer = assigned_at(cluster, &topic, 0);
    let mut offsets = read_offsets(&consumer, 5, Duration::from_secs(10));
    assert_eq!(offsets, (0..5).collect::<Vec<i64>>());
    let assignment = consumer.assignment().unwrap();
    consumer.pause(&assignment).unwrap();
    assert!(read_offsets(&consumer, 1, Duration::from_millis(500)).is_empty());
    consumer.resume(&assignment).unwrap();
    offsets.extend(read_offsets(&consumer, 15, Duration::from_secs(10)));
    let expected: Vec<i64> = if is_tansu(cluster) {
        (0..5).chain(10..20).collect()
    } else {
        (0..20).collect()
    };
    assert_eq!(offsets, expected);
}

/// A client that is not a member of an active group commits offsets for
/// it: Kafka refuses (the group has members, the client is none of them),
/// Tansu stores the commit. So a member that lost its partitions without
/// noticing can still move their committed offsets there, and weir cannot
/// rely on the broker to fence it (see the commit protocol's fences).
fn a_commit_from_outside_the_group(cluster: &Cluster) {
    let topic = cluster.create_topic("probe-commit", 1);
    two_batches(cluster, &topic);
    let group = cluster.name("probe-commit");
    let member = consumer(cluster, &group);
    member.subscribe(&[&topic]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while member.assignment().unwrap().count() == 0 {
        assert!(Instant::now() < deadline, "the member got no assignment");
        member.poll(Duration::from_millis(100));
    }
    let outsider = consumer(cluster, &group);
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(&topic, 0, Offset::Offset(7)).unwrap();
    let committed = outsider.commit(&offsets, CommitMode::Sync);
    if is_tansu(cluster) {
        committed.expect("Tansu takes a commit from outside the group");
        let mut read = TopicPartitionList::new();
        read.add_partition(&topic, 0);
        let stored = outsider.committed_offsets(read, Duration::from_secs(10)).unwrap();
        assert_eq!(stored.find_partition(&topic, 0).unwrap().offset(), Offset::Offset(7));
    } else {
        assert!(
            committed.is_err(),
            "a commit from outside an active group lands: {committed:?}"
        );
    }
}
