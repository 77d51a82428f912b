//! Chaos with the pipeline as operators run it: three `user-profile run`
//! processes against a broker and the reference ID-mapping service
//! answering `503` to 5% of its calls, under a seeded schedule of SIGKILL,
//! SIGTERM and SIGSTOP (see `weir_e2e::chaos`) while Debezium events
//! arrive; then every instance running again: the compacted
//! `user-god-object` must hold exactly the users the events imply.
//! `WEIR_CHAOS_ROUNDS=n` runs n schedules.

use id_mapping_service::{Behaviour, MappingService as ReferenceService};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use user_profile::generator::{CdcWriter, Generator};
use user_profile::model::GodObject;
use user_profile::pipeline::{run_topology, Format, MappingService, Topics};
use weir::runtime::StreamsConfig;
use weir::serde::Json;
use weir::testing::kafka::{eventually, read_compacted};
use weir_e2e::chaos::{seeds, Chaos, Faults};
use weir_e2e::cluster::Cluster;
use weir_e2e::instance::{as_environment, Instance};

const BINARY: &str = env!("CARGO_BIN_EXE_user-profile");
const PARTITIONS: i32 = 6;
const INSTANCES: usize = 3;
const USERS: usize = 300;
const FAULTS: usize = 6;
const CHANGES_PER_FAULT: usize = 600;

weir_e2e::on_every_cluster!(the_god_objects_survive_kills_stops_and_stalls);

fn the_god_objects_survive_kills_stops_and_stalls(cluster: &Cluster) {
    let service = ReferenceService::start(Behaviour {
        latency_ms: 2,
        jitter_ms: 3,
        error_rate: 0.05,
        ..Behaviour::default()
    })
    .unwrap();
    let url = format!("http://{}", service.address());
    for seed in seeds() {
        let faults = round(cluster, &url, seed);
        eprintln!("seed {seed}: user-god-object exact after {faults:?}");
    }
}

fn round(cluster: &Cluster, url: &str, seed: u64) -> Faults {
    let prefix = cluster.name(&format!("{seed:x}-"));
    let topics = Topics::with_prefix(&prefix);
    for topic in [
        &topics.users,
        &topics.preferences,
        &topics.profiles,
        &topics.god_objects,
    ] {
        cluster.create_topic(topic.strip_prefix(&cluster.name("")).unwrap(), PARTITIONS);
    }
    let application = format!("{prefix}user-profile");
    let logs = tempfile::tempdir().unwrap();
    let states: Vec<_> = (0..INSTANCES).map(|_| tempfile::tempdir().unwrap()).collect();
    let settings = |state: &Path| cluster.instance_settings(&application, "at_least_once", state);
    let config = settings(states[0].path())
        .into_iter()
        .fold(StreamsConfig::default(), |c, (k, v)| c.set(k, v));
    let topology = run_topology(&topics, &MappingService::at(url), &Format::Json).unwrap();
    cluster.prepare_topics(&topology, &config);

    let mut writer = CdcWriter::with_settings(
        cluster.bootstrap_servers(),
        &topics.users,
        &topics.preferences,
        cluster.producer_settings(),
    )
    .unwrap();
    let mut generator = Generator::new(seed, USERS);
    let mut feed = |records: Vec<user_profile::generator::CdcRecord>| {
        writer.write(&records, None).unwrap();
        writer.flush().unwrap();
    };
    feed(generator.snapshot());
    let start = |slot: usize, incarnation: usize| {
        let mut command = Command::new(BINARY);
        command
            .args([
                "run",
                "--mapping-url",
                url,
                "--topic-prefix",
                &prefix,
                "--ops-address",
                "127.0.0.1:0",
            ])
            .envs(as_environment(settings(states[slot].path())));
        Instance::start(&format!("user-profile-{slot}.{incarnation}"), command, logs.path())
    };
    let mut chaos = Chaos::new(seed, INSTANCES, start);
    chaos.run(FAULTS, &mut |_| feed(generator.changes(CHANGES_PER_FAULT)));
    chaos.heal();
    if !cluster.reassigns_after_a_member_dies() {
        chaos.rejoin_after_sessions_expire();
    }
    feed(generator.changes(CHANGES_PER_FAULT));

    let expected: HashMap<i64, GodObject> = generator
        .expected_god_objects(|id| format!("u2-{id}"))
        .into_iter()
        .collect();
    let god_objects = || {
        read_compacted(
            cluster.bootstrap_servers(),
            &topics.god_objects,
            &Json::<i64>::new(),
            &Json::<GodObject>::new(),
        )
    };
    let converged = eventually(Duration::from_secs(240), || Ok(god_objects()? == expected)).unwrap();
    if !converged {
        let actual = god_objects().unwrap();
        let wrong: Vec<_> = expected
            .keys()
            .chain(actual.keys())
            .filter(|id| expected.get(id) != actual.get(id))
            .take(8)
            .map(|id| (id, expected.get(id), actual.get(id)))
            .collect();
        let report = chaos.report();
        drop(chaos);
        panic!(
            "user-god-object did not converge: first wrong (user, expected, found) {wrong:?}\n{report}\nlogs kept in {}",
            logs.keep().display()
        );
    }
    chaos.stop();
    chaos.faults
}
