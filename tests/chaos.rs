//! Chaos on real brokers with the profiles workload (a join and an
//! aggregation through a repartition topic): three instances in their own
//! processes under a seeded schedule of SIGKILL, SIGTERM and SIGSTOP (see
//! [`weir_e2e::chaos`]) while input arrives, then every instance running
//! again: the compacted outputs must equal the reference computed from the
//! inputs. At least once, on the in-process cluster and on a broker process.
//! `WEIR_CHAOS_ROUNDS=n` runs n schedules; a failure prints its seed, the
//! schedule, the histories of the wrong keys and the instances' logs.

use std::path::Path;
use std::time::Duration;
use weir::runtime::StreamsConfig;
use weir_e2e::chaos::{seeds, Chaos, Faults};
use weir_e2e::cluster::Cluster;
use weir_e2e::instance::Instance;
use weir_e2e::workload::{await_outputs, topology, Generator, Input, Topics, PARTITIONS};

const BINARY: &str = env!("CARGO_BIN_EXE_weir-e2e-instance");
const INSTANCES: usize = 3;
const USERS: usize = 300;
const FAULTS: usize = 6;
const CHANGES_PER_FAULT: usize = 400;

weir_e2e::on_every_cluster!(instances_killed_stopped_and_stalled_lose_no_update);

fn instances_killed_stopped_and_stalled_lose_no_update(cluster: &Cluster) {
    let mut total = Faults::default();
    for seed in seeds() {
        let faults = round(cluster, seed);
        total.kills += faults.kills;
        total.terminations += faults.terminations;
        total.stalls += faults.stalls;
        total.long_stalls += faults.long_stalls;
        total.failures += faults.failures;
        eprintln!("seed {seed}: outputs exact after {faults:?}");
    }
    eprintln!("all rounds: {total:?}, losses found: 0");
}

/// One schedule on fresh topics; returns the faults it ran.
fn round(cluster: &Cluster, seed: u64) -> Faults {
    let prefix = cluster.name(&format!("{seed:x}-"));
    let application = format!("{prefix}chaos");
    let topics = Topics::with_prefix(&prefix);
    for topic in topics.all() {
        cluster.create_topic(topic.strip_prefix(&cluster.name("")).unwrap(), PARTITIONS);
    }
    let logs = tempfile::tempdir().unwrap();
    let states: Vec<_> = (0..INSTANCES).map(|_| tempfile::tempdir().unwrap()).collect();
    let settings = |state: &Path| cluster.instance_settings(&application, "at_least_once", state);
    let config = settings(states[0].path())
        .into_iter()
        .fold(StreamsConfig::default(), |c, (k, v)| c.set(k, v));
    cluster.prepare_topics(&topology(&topics), &config);

    let mut generator = Generator::new(seed, USERS);
    let mut input = Input::new(cluster, &topics);
    input.write(generator.snapshot());
    let start = |slot: usize, incarnation: usize| {
        let name = format!("instance-{slot}.{incarnation}");
        Instance::spawn(
            Path::new(BINARY),
            &name,
            &["profiles", &prefix],
            &settings(states[slot].path()),
            logs.path(),
        )
    };
    let mut chaos = Chaos::new(seed, INSTANCES, start);
    chaos.run(FAULTS, &mut |_| input.write(generator.changes(CHANGES_PER_FAULT)));
    chaos.heal();
    if !cluster.reassigns_after_a_member_dies() {
        chaos.rejoin_after_sessions_expire();
    }
    input.write(generator.changes(CHANGES_PER_FAULT));
    if let Err(problem) = await_outputs(
        cluster,
        &topics,
        &application,
        &input.reference,
        Duration::from_secs(240),
    ) {
        let report = chaos.report();
        drop(chaos);
        panic!("{problem}\n{report}\nlogs kept in {}", logs.keep().display());
    }
    chaos.stop();
    chaos.faults
}
