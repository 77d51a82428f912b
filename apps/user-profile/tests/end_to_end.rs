//! The pipeline as operators run it: `user-profile run` in two processes
//! against a broker, the reference ID-mapping service failing now and then,
//! one instance killed with SIGKILL in the middle of the changes, queries
//! of the god objects at each instance, and then `user-profile reprocess`
//! after the service's mappings changed. Runs on
//! the in-process cluster and on a broker process (Tansu, or the cluster in
//! `KAFKA_BOOTSTRAP_SERVERS`).

use id_mapping_service::{Behaviour, MappingService as ReferenceService};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use user_profile::generator::{CdcWriter, Generator};
use user_profile::model::GodObject;
use user_profile::pipeline::{reprocess_topology, run_topology, Format, MappingService, Topics};
use weir::runtime::StreamsConfig;
use weir::serde::Json;
use weir::testing::kafka::{eventually, read_compacted};
use weir_e2e::cluster::Cluster;
use weir_e2e::http::{http_get, metric_values};
use weir_e2e::instance::{as_environment, await_stable_group, Instance};

const BINARY: &str = env!("CARGO_BIN_EXE_user-profile");
const PARTITIONS: i32 = 6;
const USERS: usize = 300;
const CHANGES_PER_PHASE: usize = 1_500;
const WAIT: Duration = Duration::from_secs(180);

weir_e2e::on_every_cluster!(two_instances_a_kill_and_a_reprocess);

fn two_instances_a_kill_and_a_reprocess(cluster: &Cluster) {
    let prefix = cluster.name("");
    let topics = Topics::with_prefix(&prefix);
    for topic in [
        &topics.users,
        &topics.preferences,
        &topics.profiles,
        &topics.god_objects,
    ] {
        cluster.create_topic(topic.strip_prefix(&prefix).unwrap(), PARTITIONS);
    }
    let service = ReferenceService::start(Behaviour {
        latency_ms: 2,
        jitter_ms: 3,
        error_rate: 0.05,
        ..Behaviour::default()
    })
    .unwrap();
    let url = format!("http://{}", service.address());
    let application = format!("{prefix}user-profile");
    let logs = tempfile::tempdir().unwrap();
    let states = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];

    // Instances in other processes cannot create topics on the in-process
    // cluster: its internal topics are made here.
    let settings = |application: &str, state: &Path| environment(cluster, application, state);
    for (id, topology) in [
        (
            application.clone(),
            run_topology(&topics, &MappingService::at(&url), &Format::Json).unwrap(),
        ),
        (
            format!("{application}-reprocess-1"),
            reprocess_topology(&topics, &MappingService::at(&url), &Format::Json).unwrap(),
        ),
    ] {
        cluster.prepare_topics(
            &topology,
            &StreamsConfig::from_env_vars(settings(&id, states[0].path())),
        );
    }
    let start = |name: &str, subcommand: &[&str], state: &Path| {
        let mut command = Command::new(BINARY);
        command
            .args(subcommand)
            .args([
                "--mapping-url",
                &url,
                "--topic-prefix",
                &prefix,
                "--ops-address",
                "127.0.0.1:0",
            ])
            .envs(settings(&application, state));
        Instance::start(name, command, logs.path())
    };

    let mut writer = CdcWriter::with_settings(
        cluster.bootstrap_servers(),
        &topics.users,
        &topics.preferences,
        cluster.producer_settings(),
    )
    .unwrap();
    let mut generator = Generator::new(0x5eed, USERS);
    let mut feed = |records: Vec<user_profile::generator::CdcRecord>| {
        writer.write(&records, None).unwrap();
        writer.flush().unwrap();
    };
    feed(generator.snapshot());
    let mut first = start("first", &["run"], states[0].path());
    let god_objects = || -> HashMap<i64, GodObject> {
        read_compacted(
            cluster.bootstrap_servers(),
            &topics.god_objects,
            &Json::<i64>::new(),
            &Json::<GodObject>::new(),
        )
        .unwrap()
    };
    let started = eventually(WAIT, || Ok(!god_objects().is_empty())).unwrap();
    assert!(started, "the first instance wrote nothing:\n{}", first.log_tail());

    feed(generator.changes(CHANGES_PER_PHASE));
    let mut second = start("second", &["run"], states[1].path());
    feed(generator.changes(CHANGES_PER_PHASE));
    second.await_log("partitions assigned", WAIT);
    await_stable_group(&[&first, &second], WAIT);
    first.kill();
    feed(generator.changes(CHANGES_PER_PHASE));
    if !cluster.reassigns_after_a_member_dies() {
        first = start("first-restarted", &["run"], states[0].path());
    }

    let expected = |id_prefix: &str| -> HashMap<i64, GodObject> {
        generator
            .expected_god_objects(|id| format!("{id_prefix}{id}"))
            .into_iter()
            .collect()
    };
    let assert_converges = |expected: HashMap<i64, GodObject>, instances: &[&Instance]| {
        let converged = eventually(WAIT, || Ok(god_objects() == expected)).unwrap();
        if !converged {
            let actual = god_objects();
            let wrong: Vec<_> = expected
                .iter()
                .filter(|(id, god)| actual.get(id) != Some(god))
                .take(5)
                .map(|(id, god)| (god, actual.get(id)))
                .collect();
            let extra: Vec<_> = actual.keys().filter(|id| !expected.contains_key(id)).take(5).collect();
            let tails: Vec<String> = instances.iter().map(|i| i.log_tail()).collect();
            panic!(
                "user-god-object did not converge: {} of {} users, first wrong (expected, actual) {wrong:?}, \
                 unexpected {extra:?}\n{}",
                actual.len(),
                expected.len(),
                tails.join("\n")
            );
        }
    };
    assert_converges(expected("u2-"), &[&first, &second]);
    let mut running = vec![second.ops_address()];
    if !cluster.reassigns_after_a_member_dies() {
        running.push(first.ops_address());
    }
    // The topic can hold what the killed instance published before it
    // died while its task's new owner, reprocessing what that instance left
    // uncommitted, has not yet brought its store there again.
    let queries = || queries_answer(&running, &expected("u2-"), cluster.returns_offset_metadata());
    if !eventually(WAIT, || Ok(queries().is_ok())).unwrap() {
        panic!("{}", queries().unwrap_err());
    }
    let ready = http_get(&running[0], "/ready");
    assert_eq!(ready.status, 200, "{ready:?}");
    let metrics = http_get(&running[0], "/metrics").body;
    for name in [
        "weir_records_processed_total",
        "weir_records_produced_total",
        "weir_enrich_calls_total",
        "weir_cdc_events_total",
        "weir_node_records_forwarded_total{node=\"KTABLE-SOURCE",
        "weir_store_bytes{store=\"god-objects\"",
    ] {
        assert!(metrics.contains(name), "no {name} in /metrics:\n{metrics}");
    }
    // Everything is processed: no lag left, and the god objects are stored.
    let caught_up = eventually(WAIT, || {
        let metrics = http_get(&running[0], "/metrics").body;
        let lags = metric_values(&metrics, "weir_consumer_lag_records{");
        let stored = metric_values(&metrics, "weir_store_entries{store=\"god-objects\"");
        Ok(!lags.is_empty() && lags.iter().all(|lag| *lag == 0.0) && stored.iter().sum::<f64>() > 0.0)
    })
    .unwrap();
    assert!(caught_up, "{}", http_get(&running[0], "/metrics").body);

    // The mappings change; a re-run of the enrichment alone brings every
    // user's new id.
    service.controls().set_prefix("u3-");
    let mut reprocess = start(
        "reprocess",
        &["reprocess", "--run-id", "1"],
        states[0].path().join("r").as_path(),
    );
    assert_converges(expected("u3-"), &[&reprocess]);

    for instance in [&mut reprocess, &mut second, &mut first] {
        if instance.has_exited() {
            continue; // the killed one, where it was not restarted
        }
        let status = instance.terminate(Duration::from_secs(60));
        assert!(
            status.success(),
            "an instance did not stop cleanly:\n{}",
            instance.log_tail()
        );
    }
}

/// Asks every running instance (by operations address) for each user:
/// the instance holding the user answers with its god object (or `404` for
/// a deleted user), the others redirect there, or, where the brokers keep
/// no commit metadata, say that the owner is not known. The first answer
/// that differs is the error.
fn queries_answer(running: &[String], expected: &HashMap<i64, GodObject>, names_owners: bool) -> Result<(), String> {
    let mut answered_here = vec![0; running.len()];
    for (index, address) in running.iter().enumerate() {
        for user_id in 0..USERS as i64 {
            let path = format!("/users/{user_id}");
            let mut answer = http_get(address, &path);
            if answer.status == 307 {
                let location = answer.location.clone().unwrap_or_default();
                let owner = running
                    .iter()
                    .find(|other| location == format!("http://{other}{path}"))
                    .unwrap_or_else(|| panic!("{address} sent {path} to {location}, not a running instance"));
                answer = http_get(owner, &path);
                assert!(answer.status != 307, "{owner} redirected {path} again: {answer:?}");
            } else if answer.status != 503 {
                answered_here[index] += 1;
            }
            let right = match (answer.status, expected.get(&user_id)) {
                (200, Some(god)) => serde_json::from_str::<GodObject>(&answer.body).ok().as_ref() == Some(god),
                (404, None) => true,
                (503, _) if !names_owners => answer.body.contains(r#""owner":null"#),
                _ => false,
            };
            if !right {
                let expected = expected.get(&user_id);
                return Err(format!("{address}{path}: {answer:?}, expected {expected:?}"));
            }
        }
    }
    if answered_here.contains(&0) {
        return Err(format!("answers from local stores per instance: {answered_here:?}"));
    }
    let bad_key = http_get(&running[0], "/users/ada");
    assert_eq!(bad_key.status, 400, "{bad_key:?}");
    Ok(())
}

/// The `WEIR_*` variables of an instance.
fn environment(cluster: &Cluster, application: &str, state: &Path) -> Vec<(String, String)> {
    as_environment(cluster.instance_settings(application, "at_least_once", state))
}
