//! Throughput of the user-profile join: Debezium CDC events of `users` and
//! `preferences` → re-partitioned by user id → two CDC tables in RocksDB →
//! left join → `user-profile`, at-least-once.
//!
//! The generator's history (a snapshot of every user and preferences row,
//! then updates and deletes) is written to the in-process cluster first;
//! the clock runs from the moment the application has its partitions until
//! it has processed every event and closed, so the time includes writing
//! every output and changelog record and the final commit.
//!
//! With `avro`, the events are in Avro as Confluent's `AvroConverter`
//! writes them and the outputs too, through an in-process Schema Registry:
//! the same pipeline, decoding another format.
//!
//! In the same run, on the same events, the pass-through floor (see
//! `user_profile::floor`) does the same Kafka I/O with no processing; the
//! benchmark prints both rates and their ratio, and fails unless the
//! compacted `user-profile` holds exactly the profiles the events imply.
//!
//! With `pipeline`, the application is the whole user-profile pipeline: the
//! join, then the enrichment of every profile from the reference ID-mapping
//! service (in process, answering in 5 ms, as in the demo) into
//! `user-god-object`. The clock stops when the last record is processed
//! (the enrichment sub-topology reads the join's output, so the count is
//! not known ahead; the end is when it stops growing), and the benchmark
//! fails unless the compacted `user-god-object` holds exactly the god
//! objects the events imply. The floor is still the join stage's.
//!
//! `cargo bench -p weir-benches --bench cdc_join [-- <events> <users> <stream threads> <json|avro> [pipeline] [<client setting>=<value> ...]]`
//!
//! Client settings (`producer.linger.ms=20`) apply to weir and the floor alike.

use id_mapping_service::{Behaviour, MappingService};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use user_profile::generator::{CdcWriter, Generator};
use user_profile::pipeline::{join_topology, run_topology, Format, MappingService as ServiceSettings, Topics};
use weir::avro::SchemaRegistry;
use weir::embedded::EmbeddedKafka;
use weir::serde::SerdeRef;
use weir::testing::kafka::{compact, read_topic};
use weir::testing::schema_registry::TestSchemaRegistry;
use weir_benches::{rate, App};

const PARTITIONS: i32 = 6;
const TIMEOUT: Duration = Duration::from_secs(900);
/// How long the whole pipeline must process nothing to be done.
const IDLE: Duration = Duration::from_secs(2);

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let events: usize = args
        .next()
        .map_or(1_000_000, |a| a.parse().expect("a number of events"));
    let users: usize = args.next().map_or(100_000, |a| a.parse().expect("a number of users"));
    let threads: usize = args
        .next()
        .map_or(1, |a| a.parse().expect("a number of stream threads"));
    let registry_server = match args.next().as_deref() {
        None | Some("json") => None,
        Some("avro") => Some(TestSchemaRegistry::start().expect("the test schema registry")),
        Some(other) => panic!("the format is json or avro, not {other}"),
    };
    let format = match &registry_server {
        Some(server) => Format::Avro(SchemaRegistry::new(server.url()).expect("a registry client")),
        None => Format::Json,
    };

    let mut whole_pipeline = false;
    let mut extra_clients: Vec<(String, String)> = Vec::new();
    for arg in args {
        match arg.split_once('=') {
            Some((key, value)) => extra_clients.push((key.to_string(), value.to_string())),
            None if arg == "pipeline" => whole_pipeline = true,
            None => panic!("after the format come `pipeline` and client settings (<key>=<value>), not {arg}"),
        }
    }

    let kafka = Arc::new(EmbeddedKafka::start().expect("the embedded cluster"));
    let topics = Topics::default();
    for topic in [
        &topics.users,
        &topics.preferences,
        &topics.profiles,
        &topics.god_objects,
    ] {
        kafka.create_topic(topic, PARTITIONS).expect("a topic");
    }
    let mut writer =
        CdcWriter::new(kafka.bootstrap_servers(), &topics.users, &topics.preferences).expect("a CDC writer");
    let written_since = Instant::now();
    let mut generator = Generator::with_format(7, users, &format);
    writer
        .write_history(&mut generator, events, None, |_| {})
        .expect("the history written");
    writer.flush().expect("the history flushed");
    let written = writer.written();
    println!(
        "{written} CDC events of {users} users written in {:.1} s",
        written_since.elapsed().as_secs_f64()
    );

    // Compressed as the CDC input is: the embedded cluster keeps only the
    // last 5 MB of each partition, and the repartition topic must not
    // outgrow that before it is read.
    // The user-profile application's own setting: a user's consecutive
    // changes merge between commits (`statestore.cache.merge=false` on the
    // command line passes every update on).
    let clients: Vec<(&str, String)> = [
        ("producer.compression.type", "lz4".to_string()),
        ("statestore.cache.merge", "true".to_string()),
    ]
    .into_iter()
    .chain(extra_clients.iter().map(|(key, value)| (key.as_str(), value.clone())))
    .collect();
    let floor = user_profile::floor::pass_through(
        &kafka,
        &[&topics.users, &topics.preferences],
        PARTITIONS,
        threads,
        2 * written,
        &clients,
    );

    let threads_setting = ("num.stream.threads", threads.to_string());
    let service = whole_pipeline.then(|| {
        MappingService::start(Behaviour {
            latency_ms: 5,
            ..Behaviour::default()
        })
        .expect("the ID-mapping service")
    });
    let topology = match &service {
        Some(service) => {
            let lookup = ServiceSettings::at(format!("http://{}", service.address()));
            run_topology(&topics, &lookup, &format)
        }
        None => join_topology(&topics, &format),
    };
    let app = App::start(
        &kafka,
        "cdc-join-bench",
        topology.expect("the topology"),
        &[&clients[..], &[threads_setting]].concat(),
    );
    let started = Instant::now();
    let rebalances_at_start = app.rebalances();
    // Each event is read twice: from its CDC topic, then from the
    // repartition topic that puts both tables on weir's key partitioning.
    let processed_in = if whole_pipeline {
        app.wait_until_idle(2 * written, IDLE, TIMEOUT) - started
    } else {
        app.wait_for_processed(2 * written, TIMEOUT);
        started.elapsed()
    };
    let rebalances = app.rebalances() - rebalances_at_start;
    // In the pipeline's case the idle wait is not on the clock; the close is.
    let closing = Instant::now();
    app.close();
    let closed_in = processed_in + closing.elapsed();
    let weir_rate = rate(written, closed_in);
    let floor_rate = rate(written, floor);
    println!(
        "{} input, {}, {threads} stream thread(s): processed in {:.2} s ({} events/s); closed after {:.2} s: {} events/s \
         end to end ({rebalances} rebalances on the clock)",
        if registry_server.is_some() { "Avro" } else { "JSON" },
        if whole_pipeline { "join and enrichment" } else { "join" },
        processed_in.as_secs_f64(),
        rate(written, processed_in),
        closed_in.as_secs_f64(),
        weir_rate,
    );
    let ratio = format!("; weir at {:.0}% of it", 100.0 * weir_rate as f64 / floor_rate as f64);
    println!(
        "pass-through floor of the join stage (the same Kafka I/O, no processing): {:.2} s, {floor_rate} events/s{}",
        floor.as_secs_f64(),
        if whole_pipeline { "" } else { &ratio }
    );

    let (profiles, profile_records) = verify_compacted(
        &kafka,
        &topics.profiles,
        &format,
        &format.profile_serde(),
        &generator.expected_profiles(),
    );
    println!("user-profile verified: {profiles} profiles as the events imply, in {profile_records} records");
    if let Some(service) = service {
        let expected = generator.expected_god_objects(|id| format!("u2-{id}"));
        let (god_objects, god_object_records) = verify_compacted(
            &kafka,
            &topics.god_objects,
            &format,
            &format.god_object_serde(),
            &expected,
        );
        println!(
            "user-god-object verified: {god_objects} god objects in {god_object_records} records, {} service calls",
            service.controls().requests()
        );
    }
}

/// Reads `topic` (user-id keys in `format`) compacted and fails unless it
/// holds exactly `expected`; returns how many keys it holds and how many
/// records it took (a table's consecutive changes merge in the store
/// caches between commits).
fn verify_compacted<V: PartialEq + 'static>(
    kafka: &EmbeddedKafka,
    topic: &str,
    format: &Format,
    value_serde: &SerdeRef<V>,
    expected: &BTreeMap<i64, V>,
) -> (usize, usize) {
    let records = read_topic(kafka.bootstrap_servers(), topic).unwrap_or_else(|e| panic!("{topic} read back: {e}"));
    let view: BTreeMap<i64, V> = compact(topic, &records, &format.key_serde(), value_serde)
        .unwrap_or_else(|e| panic!("{topic} read back: {e}"))
        .into_iter()
        .collect();
    assert!(
        &view == expected,
        "{topic} does not hold what the events imply: {} keys, {} expected, {} differ",
        view.len(),
        expected.len(),
        expected
            .iter()
            .filter(|(key, value)| view.get(key) != Some(value))
            .count()
    );
    (view.len(), records.len())
}
