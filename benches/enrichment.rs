//! Throughput of asynchronous enrichment against an HTTP service that
//! answers in 20 ms, at several in-flight limits, and of the cache-hit path.
//!
//! Each run starts an application on the in-process cluster — input topic
//! → `enrich_async` with the ready HTTP/JSON lookup → output topic — writes
//! the input and stops the clock when the last output record arrives. With
//! a 20 ms service a limit of `n` calls in flight cannot pass more than
//! `50 n` records/s; the table shows how close each limit gets. The
//! cache-hit run fails if any of its records called the service.
//!
//! `cargo bench -p weir-benches --bench enrichment` runs every limit and the
//! cache hits; `… -- 256 1024` runs only the limits given.

use id_mapping_service::{Behaviour, Mapping, MappingService};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::embedded::EmbeddedKafka;
use weir::enrich::{Enrichment, HttpJsonLookup};
use weir::serde::{Utf8, I64};
use weir::testing::kafka::TestProducer;
use weir::{Consumed, Produced, StreamsBuilder, Topology};
use weir_benches::{rate, App, OutputCounter};

const PARTITIONS: i32 = 6;
const LATENCY: Duration = Duration::from_millis(20);
/// Roughly how long each in-flight limit runs at its ideal rate.
const SECONDS_PER_RUN: u64 = 4;
const MAX_RECORDS: u64 = 60_000;
const CACHED_KEYS: u64 = 10_000;
const CACHED_RECORDS: u64 = 200_000;
const TIMEOUT: Duration = Duration::from_secs(600);

fn main() {
    let kafka = Arc::new(EmbeddedKafka::start().expect("the embedded cluster"));
    let service = MappingService::start(Behaviour {
        latency_ms: LATENCY.as_millis() as u64,
        ..Behaviour::default()
    })
    .expect("the ID-mapping service");

    println!("enrichment through a {} ms service", LATENCY.as_millis());
    println!(
        "{:>10} {:>9} {:>9} {:>12} {:>12}",
        "in flight", "records", "seconds", "records/s", "ideal/s"
    );
    let chosen: Vec<u64> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .map(|arg| arg.parse().expect("the arguments are in-flight limits"))
        .collect();
    let every_run = chosen.is_empty();
    let limits = if every_run { vec![1, 16, 64, 256, 1024] } else { chosen };
    for (run, limit) in limits.into_iter().enumerate() {
        let ideal = limit * 1000 / LATENCY.as_millis() as u64;
        let records = (ideal * SECONDS_PER_RUN).min(MAX_RECORDS);
        let mut bench = Bench::new(&kafka, &format!("limit-{run}"), &service, limit as usize, false);
        let elapsed = bench.run(0..records, |seq| seq as i64);
        println!(
            "{limit:>10} {records:>9} {:>9.2} {:>12} {ideal:>12}",
            elapsed.as_secs_f64(),
            rate(records, elapsed)
        );
        bench.app.close();
    }

    if !every_run {
        return;
    }
    println!();
    println!("cache hits ({CACHED_KEYS} keys looked up, then {CACHED_RECORDS} records over them)");
    let mut bench = Bench::new(&kafka, "cached", &service, 256, true);
    bench.run(0..CACHED_KEYS, |seq| seq as i64);
    let calls_before = service.controls().requests();
    // The hits are written while the application is stopped, so that the
    // clock measures weir, not the writer; it runs from the first batch of
    // hits processed to the last (the cache is a store and stays on disk).
    let Bench { mut inputs, app, .. } = bench;
    let app = app.restart(topology(&inputs, &service, 256, true), || {
        inputs.write(0..CACHED_RECORDS, |seq| (seq % CACHED_KEYS) as i64)
    });
    let (first, first_batch) = loop {
        let processed = app.processed();
        if processed > 0 {
            break (Instant::now(), processed);
        }
        std::thread::yield_now();
    };
    assert!(
        first_batch < CACHED_RECORDS,
        "all hits were processed before the clock could start; write more"
    );
    app.wait_for_processed(CACHED_RECORDS, TIMEOUT);
    let elapsed = first.elapsed();
    let measured = CACHED_RECORDS - first_batch;
    let calls = service.controls().requests() - calls_before;
    println!(
        "{measured:>9} records in {:.2} s: {} records/s, {calls} service calls",
        elapsed.as_secs_f64(),
        rate(measured, elapsed),
    );
    assert_eq!(calls, 0, "the cache-hit path called the service");
    app.close();
}

/// One application and its topics.
struct Bench {
    inputs: Inputs,
    outputs: OutputCounter,
    app: App,
}

impl Bench {
    fn new(kafka: &Arc<EmbeddedKafka>, name: &str, service: &MappingService, limit: usize, cached: bool) -> Bench {
        let inputs = Inputs {
            producer: TestProducer::new(kafka.bootstrap_servers()).expect("a producer"),
            topic: format!("{name}-users"),
            output: format!("{name}-mapped"),
            written: 0,
        };
        kafka.create_topic(&inputs.topic, PARTITIONS).expect("the input topic");
        kafka
            .create_topic(&inputs.output, PARTITIONS)
            .expect("the output topic");
        Bench {
            outputs: OutputCounter::new(kafka, &inputs.output),
            app: App::start(kafka, name, topology(&inputs, service, limit, cached), &[]),
            inputs,
        }
    }

    /// Writes one record per `seq` and returns how long until the last
    /// output arrived.
    fn run(&mut self, seqs: std::ops::Range<u64>, user: impl Fn(u64) -> i64) -> Duration {
        let started = Instant::now();
        self.inputs.write(seqs, user);
        self.outputs.wait_for(self.inputs.written, TIMEOUT) - started
    }
}

/// The input topic and its writer, and the output topic.
struct Inputs {
    producer: TestProducer,
    topic: String,
    output: String,
    written: u64,
}

impl Inputs {
    /// Writes one record per `seq` (key `user(seq)`, value `seq`).
    fn write(&mut self, seqs: std::ops::Range<u64>, user: impl Fn(u64) -> i64) {
        for seq in seqs.clone() {
            self.producer
                .send(&self.topic, &I64, &I64, &user(seq), Some(&(seq as i64)))
                .expect("a record sent");
        }
        self.producer.flush().expect("the input written");
        self.written += seqs.end - seqs.start;
    }
}

fn topology(inputs: &Inputs, service: &MappingService, limit: usize, cached: bool) -> Topology {
    let url = format!("http://{}/users/{{}}", service.address());
    let lookup = HttpJsonLookup::<i64, Mapping>::new(url).expect("a lookup");
    let mut enrichment = Enrichment::new("id-mapping", |user: &i64, _seq: &i64| *user, lookup)
        .max_in_flight(limit)
        .max_buffered(limit.max(1_000) * 4);
    if cached {
        enrichment = enrichment.cache(None);
    }
    let builder = StreamsBuilder::new();
    builder
        .stream(&inputs.topic, Consumed::with(I64, I64))
        .enrich_async(enrichment, |_, _seq, mapping: Mapping| mapping.new_user_id)
        .to(&inputs.output, Produced::with(I64, Utf8));
    builder.build().expect("a valid topology")
}
