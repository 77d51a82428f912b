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
//! `weir_benches::floor`) does the same Kafka I/O with no processing; the
//! benchmark prints both rates and their ratio, and fails unless the
//! compacted `user-profile` holds exactly the profiles the events imply.
//!
//! `cargo bench -p weir-benches --bench cdc_join [-- <events> <users> <stream threads> <json|avro> [<client setting>=<value> ...]]`
//!
//! Client settings (`producer.linger.ms=20`) apply to weir and the floor alike.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use user_profile::generator::{CdcWriter, Generator};
use user_profile::pipeline::{join_topology, Format, Topics};
use weir::avro::SchemaRegistry;
use weir::embedded::EmbeddedKafka;
use weir::testing::kafka::read_compacted;
use weir::testing::schema_registry::TestSchemaRegistry;
use weir_benches::{rate, App};

const PARTITIONS: i32 = 6;
const TIMEOUT: Duration = Duration::from_secs(900);

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

    let extra_clients: Vec<(String, String)> = args
        .map(|arg| match arg.split_once('=') {
            Some((key, value)) => (key.to_string(), value.to_string()),
            None => panic!("client settings are <key>=<value>, not {arg}"),
        })
        .collect();

    let kafka = Arc::new(EmbeddedKafka::start().expect("the embedded cluster"));
    let topics = Topics::default();
    for topic in [&topics.users, &topics.preferences, &topics.profiles] {
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
    let clients: Vec<(&str, String)> = [("producer.compression.type", "lz4".to_string())]
        .into_iter()
        .chain(extra_clients.iter().map(|(key, value)| (key.as_str(), value.clone())))
        .collect();
    let floor = weir_benches::floor::pass_through(
        &kafka,
        &[&topics.users, &topics.preferences],
        PARTITIONS,
        threads,
        2 * written,
        &clients,
    );

    let threads_setting = ("num.stream.threads", threads.to_string());
    let app = App::start(
        &kafka,
        "cdc-join-bench",
        join_topology(&topics, &format).expect("the topology"),
        &[&clients[..], &[threads_setting]].concat(),
    );
    let started = Instant::now();
    // Each event is read twice: from its CDC topic, then from the
    // repartition topic that puts both tables on weir's key partitioning.
    let rebalances_at_start = app.rebalances();
    app.wait_for_processed(2 * written, TIMEOUT);
    let processed_in = started.elapsed();
    let rebalances = app.rebalances() - rebalances_at_start;
    app.close();
    let closed_in = started.elapsed();
    let weir_rate = rate(written, closed_in);
    let floor_rate = rate(written, floor);
    println!(
        "{} input, {threads} stream thread(s): processed in {:.2} s ({} events/s); closed after {:.2} s: {} events/s \
         end to end ({rebalances} rebalances on the clock)",
        if registry_server.is_some() { "Avro" } else { "JSON" },
        processed_in.as_secs_f64(),
        rate(written, processed_in),
        closed_in.as_secs_f64(),
        weir_rate,
    );
    println!(
        "pass-through floor (the same Kafka I/O, no processing): {:.2} s, {floor_rate} events/s; weir at {:.0}% of it",
        floor.as_secs_f64(),
        100.0 * weir_rate as f64 / floor_rate as f64
    );

    let profiles = read_compacted(
        kafka.bootstrap_servers(),
        &topics.profiles,
        &format.key_serde(),
        &format.profile_serde(),
    )
    .expect("user-profile read back");
    let profiles: BTreeMap<_, _> = profiles.into_iter().collect();
    let expected = generator.expected_profiles();
    assert!(
        profiles == expected,
        "user-profile does not hold the profiles the events imply: {} profiles, {} expected, {} differ",
        profiles.len(),
        expected.len(),
        expected.iter().filter(|(id, p)| profiles.get(id) != Some(p)).count()
    );
    println!("user-profile verified: {} profiles as the events imply", profiles.len());
}
