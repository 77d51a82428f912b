//! Time on the Kafka runtime, against both brokers: a processor's store is
//! restored from its changelog on a fresh state directory and its
//! wall-clock punctuations run between records; a table's rows expire
//! (`Consumed::ttl`) on the instance that restored them; and both go on
//! after an instance in its own process is killed mid-stream.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use weir::serde::Utf8;
use weir::testing::kafka::{eventually, read_compacted, read_topic};
use weir::{StreamsBuilder, Topology};
use weir_e2e::cluster::Cluster;
use weir_e2e::instance::{Instance, SESSION_EXPIRY};
use weir_e2e::timers::{self, Topics};

const BINARY: &str = env!("CARGO_BIN_EXE_weir-e2e-instance");
const WAIT: Duration = Duration::from_secs(90);

weir_e2e::on_every_cluster!(
    a_processor_expires_keys_on_the_wall_clock_across_a_restore,
    a_tables_rows_expire_on_the_instance_that_restored_them,
    leases_and_carts_expire_after_a_kill,
);

fn topology(input: &str, output: &str) -> Topology {
    let builder = StreamsBuilder::new();
    timers::leases(&builder, input, output);
    builder.build().unwrap()
}

fn a_processor_expires_keys_on_the_wall_clock_across_a_restore(cluster: &Cluster) {
    let input = cluster.create_topic("leases", 2);
    let output = cluster.create_topic("live-leases", 2);
    let producer = cluster.producer();
    let live = || read_compacted(cluster.bootstrap_servers(), &output, &Utf8, &Utf8).unwrap();
    let lease = |key: &str, millis: u64| {
        producer
            .send(&input, &Utf8, &Utf8, &key.to_string(), Some(&millis.to_string()))
            .unwrap();
        producer.flush().unwrap();
    };
    let await_live = |expected: &[(&str, &str)]| {
        let expected: HashMap<String, String> = expected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let converged = eventually(WAIT, || Ok(live() == expected)).unwrap();
        assert!(converged, "live leases {:?} never became {expected:?}", live());
    };

    let state = tempfile::tempdir().unwrap();
    let mut first = cluster.start(topology(&input, &output), &cluster.config("leases", state.path()));
    lease("short", 300);
    lease("long", 600_000);
    await_live(&[("long", "600000")]);
    // Lives 20 s: still held when the first instance closes.
    lease("restored", 20_000);
    await_live(&[("long", "600000"), ("restored", "20000")]);
    first.close().unwrap();

    // A fresh state directory under the same application: the deadlines
    // come back from the changelog, and this instance's punctuation
    // expires the lease the first one took.
    let state = tempfile::tempdir().unwrap();
    let mut second = cluster.start(topology(&input, &output), &cluster.config("leases", state.path()));
    assert!(second.metrics().restored_total() >= 2, "{:?}", second.metrics());
    await_live(&[("long", "600000")]);
    second.close().unwrap();
}

fn a_tables_rows_expire_on_the_instance_that_restored_them(cluster: &Cluster) {
    let input = cluster.create_topic("carts", 2);
    let output = cluster.create_topic("live-carts", 2);
    let topology = || {
        let builder = StreamsBuilder::new();
        timers::carts(&builder, &input, &output);
        builder.build().unwrap()
    };
    let producer = cluster.producer();
    let live = || read_compacted(cluster.bootstrap_servers(), &output, &Utf8, &Utf8).unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut first = cluster.start(topology(), &cluster.config("carts", state.path()));
    producer
        .send(&input, &Utf8, &Utf8, &"c1".to_string(), Some(&"2 items".to_string()))
        .unwrap();
    producer.flush().unwrap();
    let arrived = eventually(WAIT, || Ok(live().contains_key("c1"))).unwrap();
    assert!(arrived, "{:?}", live());
    first.close().unwrap();

    // The row and its deadline come back from their changelogs; the row
    // leaves 20 s after it was written, on this instance.
    let state = tempfile::tempdir().unwrap();
    let mut second = cluster.start(topology(), &cluster.config("carts", state.path()));
    let restored = second.metrics().restored;
    assert!(restored["carts"] >= 1 && restored["carts-ttl"] >= 2, "{restored:?}");
    let expired = eventually(WAIT, || Ok(live().is_empty())).unwrap();
    assert!(expired, "{:?}", live());
    second.close().unwrap();
}

/// Leases and carts written, the instance killed right after more of both
/// were written; an instance on a fresh state directory restores the
/// processor's deadlines and the carts with theirs (rolled back to the
/// last commit, the rest processed again) and expires each in time.
fn leases_and_carts_expire_after_a_kill(cluster: &Cluster) {
    let prefix = cluster.name("");
    let application = format!("{prefix}timers");
    let topics = Topics::with_prefix(&prefix);
    for topic in topics.all() {
        cluster.create_topic(topic.strip_prefix(&prefix).unwrap(), 2);
    }
    let logs = tempfile::tempdir().unwrap();
    let states = [(); 2].map(|_| tempfile::tempdir().unwrap());
    let instance = |name: &str, state: &Path| {
        let config = cluster.instance_settings(&application, "at_least_once", state);
        Instance::spawn(Path::new(BINARY), name, &["timers", &prefix], &config, logs.path())
    };
    let settings = cluster.instance_settings(&application, "at_least_once", states[0].path());
    let config = settings
        .iter()
        .fold(weir::runtime::StreamsConfig::default(), |c, (k, v)| c.set(k, v));
    cluster.prepare_topics(&timers::topology(&topics), &config);
    let producer = cluster.producer();
    let send = |topic: &str, key: &str, value: &str| {
        producer
            .send(topic, &Utf8, &Utf8, &key.to_string(), Some(&value.to_string()))
            .unwrap();
    };
    let live = |topic: &str| read_compacted(cluster.bootstrap_servers(), topic, &Utf8, &Utf8).unwrap();
    let said = |topic: &str, key: &str| {
        read_topic(cluster.bootstrap_servers(), topic)
            .unwrap()
            .iter()
            .any(|read| read.record.key.as_deref() == Some(key.as_bytes()) && read.record.value.is_some())
    };

    let mut first = instance("first", states[0].path());
    send(&topics.leases, "long", "600000");
    send(&topics.leases, "short", "300");
    send(&topics.carts, "c1", "1 item");
    producer.flush().unwrap();
    let arrived = eventually(WAIT, || {
        Ok(live(&topics.live_leases).contains_key("long") && live(&topics.live_carts).contains_key("c1"))
    })
    .unwrap();
    assert!(arrived, "{}", first.log_tail());
    send(&topics.leases, "killed", "15000");
    send(&topics.carts, "c2", "2 items");
    producer.flush().unwrap();
    first.kill();
    if !cluster.reassigns_after_a_member_dies() {
        std::thread::sleep(SESSION_EXPIRY);
    }

    let second = instance("second", states[1].path());
    let expected_leases = HashMap::from([("long".to_string(), "600000".to_string())]);
    let expired = eventually(Duration::from_secs(120), || {
        Ok(live(&topics.live_leases) == expected_leases && live(&topics.live_carts).is_empty())
    })
    .unwrap();
    assert!(
        expired,
        "leases {:?}, carts {:?}\n{}",
        live(&topics.live_leases),
        live(&topics.live_carts),
        second.log_tail()
    );
    // What was written just before the kill was processed, by one
    // instance or the other, before it expired.
    assert!(said(&topics.live_leases, "killed") && said(&topics.live_carts, "c2"));
}
