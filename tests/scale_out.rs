//! Scale-out and failover with instances in their own processes: one
//! instance starts, a second joins mid-stream (a rebalance), then the first
//! is killed with SIGKILL mid-stream. Once the survivor has caught up, the
//! compacted view of every output must equal the reference computed from
//! the inputs: no key missing, no stale value. Runs at-least-once and
//! exactly-once, on the in-process cluster and on a broker process.
//!
//! What the test brokers cannot show: neither Tansu 0.6.0 nor the mock
//! cluster hides aborted transactions from `read_committed` readers, so the
//! writes of the killed instance's open transaction stay visible. The
//! workload's aggregation is a union, which such replays cannot corrupt;
//! the exactly-once run checks the transactional path end to end, not that
//! aborted writes are filtered.

use std::path::Path;
use std::time::{Duration, Instant};
use weir::runtime::StreamsConfig;
use weir::serde::Utf8;
use weir::testing::kafka::{eventually, read_compacted};
use weir_e2e::cluster::Cluster;
use weir_e2e::instance::{await_stable_group, Instance, SESSION_EXPIRY};
use weir_e2e::workload::{await_outputs, topology, Generator, Input, Topics, PARTITIONS};

const BINARY: &str = env!("CARGO_BIN_EXE_weir-e2e-instance");
const USERS: usize = 500;
const CHANGES_PER_PHASE: usize = 3_000;

#[test]
fn at_least_once_on_the_embedded_cluster() {
    scale_out(&Cluster::embedded(), "at_least_once");
}

#[test]
fn at_least_once_on_a_broker_process() {
    scale_out(&Cluster::broker(), "at_least_once");
}

#[test]
fn exactly_once_on_the_embedded_cluster() {
    scale_out(&Cluster::embedded(), "exactly_once_v2");
}

#[test]
fn exactly_once_on_a_broker_process() {
    scale_out(&Cluster::broker(), "exactly_once_v2");
}

fn scale_out(cluster: &Cluster, guarantee: &str) {
    let prefix = cluster.name("");
    let application = format!("{prefix}scale-out");
    let topics = Topics::with_prefix(&prefix);
    for topic in topics.all() {
        cluster.create_topic(topic.strip_prefix(&prefix).unwrap(), PARTITIONS);
    }
    let mut generator = Generator::new(0x5eed, USERS);
    let mut input = Input::new(cluster, &topics);
    let logs = tempfile::tempdir().unwrap();
    let states = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let instance = |name: &str, state: &Path| {
        let config = cluster.instance_settings(&application, guarantee, state);
        Instance::spawn(Path::new(BINARY), name, &["profiles", &prefix], &config, logs.path())
    };

    let settings = cluster.instance_settings(&application, guarantee, states[0].path());
    let config = settings.iter().fold(StreamsConfig::default(), |c, (k, v)| c.set(k, v));
    cluster.prepare_topics(&topology(&topics), &config);

    let clock = Instant::now();
    let phase = |name: &str| eprintln!("[{:>6.1}s] {name}", clock.elapsed().as_secs_f64());
    input.write(generator.snapshot());
    phase("snapshot written");
    if guarantee == "exactly_once_v2" && !cluster.supports_transactions() {
        // The first commit finds out; the instance exits non-zero, saying why.
        let mut only = instance("only", states[0].path());
        let status = only.wait(Duration::from_secs(90));
        assert!(
            !status.success() && only.log().contains("do not support Kafka transactions"),
            "{}",
            only.log_tail()
        );
        return;
    }
    let mut first = instance("first", states[0].path());
    let started = eventually(Duration::from_secs(90), || {
        Ok(!read_compacted(cluster.bootstrap_servers(), &topics.profiles, &Utf8, &Utf8)?.is_empty())
    })
    .unwrap();
    assert!(started, "the first instance produced nothing:\n{}", first.log_tail());

    phase("first instance processing");
    input.write(generator.changes(CHANGES_PER_PHASE));
    let mut second = instance("second", states[1].path());
    input.write(generator.changes(CHANGES_PER_PHASE));
    second.await_log("partitions assigned", Duration::from_secs(90));
    phase("second instance assigned");

    // The first instance leads the group: the harder loss, since the
    // coordinator must hand the leadership over before anything is
    // reassigned.
    input.write(generator.changes(CHANGES_PER_PHASE / 2));
    await_stable_group(&[&first, &second], Duration::from_secs(90));
    first.kill();
    phase("first instance killed");
    input.write(generator.changes(CHANGES_PER_PHASE / 2));
    if !cluster.reassigns_after_a_member_dies() {
        // Tansu 0.6.0 drops the dead member without starting a new
        // generation, so the survivor keeps only its own partitions until a
        // member joins: restart the killed instance on its state directory,
        // as an orchestrator would, once the dead member's session is over
        // (a join before then makes a generation that still has it).
        std::thread::sleep(SESSION_EXPIRY);
        first = instance("first-restarted", states[0].path());
        phase("first instance restarted");
    }

    if let Err(problem) = await_outputs(
        cluster,
        &topics,
        &application,
        &input.reference,
        Duration::from_secs(180),
    ) {
        panic!(
            "{problem}\nthe instances' logs are kept in {}\n{}\n{}",
            logs.keep().display(),
            first.log_tail(),
            second.log_tail()
        );
    }
    phase("outputs converged");
    for instance in [&mut second, &mut first] {
        if !instance.has_exited() {
            let status = instance.terminate(Duration::from_secs(60));
            assert!(
                status.success(),
                "an instance did not stop cleanly: {status}\n{}",
                instance.log_tail()
            );
        }
    }
    if std::env::var_os("WEIR_E2E_KEEP_LOGS").is_some() {
        eprintln!("the instances' logs are kept in {}", logs.keep().display());
    }
}
