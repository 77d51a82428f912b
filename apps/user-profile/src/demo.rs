//! `demo`: the whole pipeline on this machine alone — an in-process Kafka
//! (librdkafka's mock cluster), the reference ID-mapping service on a
//! loopback port, and the CDC generator — with progress while it runs and
//! a summary at the end: records per second per stage, end-to-end latency
//! percentiles, and whether the final `user-god-object` view is exactly
//! what the generated changes imply. With `avro`, every topic is in Avro
//! through an in-process Schema Registry.
//!
//! Given the address of a cluster, the demo runs on it instead, under topic
//! names and an application id of the run's own, so that its figures are a
//! real broker's (the in-process cluster's fetches are slower than a
//! broker's and get slower as its partitions fill).

use crate::generator::{CdcWriter, Generator};
use crate::model::GodObject;
use crate::pipeline::{run_topology, Format, MappingService, Topics};
use id_mapping_service::Behaviour;
use rdkafka::message::BorrowedMessage;
use rdkafka::Message;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use weir::avro::SchemaRegistry;
use weir::embedded::EmbeddedKafka;
use weir::runtime::{KafkaStreams, KafkaTopicAdmin, NewTopicSpec, StreamsConfig, StreamsState, TopicAdmin};
use weir::serde::Serde;
use weir::testing::kafka::consumer_from_beginning;
use weir::testing::schema_registry::TestSchemaRegistry;
use weir::WeirError;

const PARTITIONS: i32 = 6;

/// What `demo` runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// CDC records in all: the snapshot, then changes.
    pub events: usize,
    /// Users in the snapshot.
    pub users: usize,
    /// CDC records per second (`None`: as fast as the producer goes).
    pub rate: Option<u64>,
    /// The ID-mapping service's latency.
    pub service_latency: Duration,
    /// Share of the service's answers that are `503`s (retried).
    pub service_error_rate: f64,
    pub seed: u64,
    /// The pipeline's stream threads (`num.stream.threads`).
    pub stream_threads: usize,
    /// Avro through an in-process Schema Registry instead of JSON.
    pub avro: bool,
    /// How long to wait for the outputs to match after the last event.
    pub settle_timeout: Duration,
    /// A cluster to run on instead of the in-process one.
    pub bootstrap_servers: Option<String>,
    /// Further librdkafka settings of every producer of the run, the
    /// pipeline's and the generator's (for instance `batch.num.messages=1`
    /// for a broker that cannot serve a fetch from inside a batch).
    pub producer_settings: Vec<(String, String)>,
    /// weir settings of the pipeline over the demo's own (for instance
    /// `statestore.cache.max.bytes=0` to pass every table change on at once).
    pub settings: Vec<(String, String)>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            events: 1_000_000,
            users: 100_000,
            rate: None,
            service_latency: Duration::from_millis(5),
            service_error_rate: 0.001,
            seed: 42,
            stream_threads: 2,
            avro: false,
            settle_timeout: Duration::from_secs(600),
            bootstrap_servers: None,
            producer_settings: Vec::new(),
            settings: Vec::new(),
        }
    }
}

/// The outcome of a demo run.
#[derive(Debug)]
pub struct DemoReport {
    pub cdc_records: u64,
    pub profiles_out: u64,
    pub god_objects_out: u64,
    /// CDC records per second through the whole pipeline: every record
    /// over the time to the last god object.
    pub pipeline_rate: Option<f64>,
    /// CDC records per second through the pass-through floor of the join
    /// stage on the same records (see [`crate::floor`]), measured after
    /// the pipeline closed; only on the in-process cluster.
    pub floor_rate: Option<f64>,
    pub verified: Result<usize, String>,
}

/// Runs the demo and prints its progress and summary.
pub fn run_demo(options: &DemoOptions) -> Result<DemoReport, WeirError> {
    let (embedded, bootstrap_servers) = match &options.bootstrap_servers {
        None => {
            let kafka = Arc::new(EmbeddedKafka::start()?);
            let servers = kafka.bootstrap_servers().to_string();
            (Some(kafka), servers)
        }
        Some(servers) => (None, servers.clone()),
    };
    // The in-process cluster keeps the last 5 MB of each partition: the
    // CDC topics must still hold every record when the floor reads them
    // after the pipeline. Settings given override it.
    let producer_settings: Vec<(String, String)> = embedded
        .iter()
        .map(|_| ("compression.type".to_string(), "lz4".to_string()))
        .chain(options.producer_settings.iter().cloned())
        .collect();
    // On a cluster of its own the run keeps the plain names; on a shared
    // one, names of its own keep it apart from earlier runs.
    let (application_id, topics) = match embedded {
        Some(_) => ("user-profile-demo".to_string(), Topics::default()),
        None => {
            let run = format!("demo-{}", now_ms());
            (format!("user-profile-{run}"), Topics::with_prefix(&format!("{run}-")))
        }
    };
    let service = id_mapping_service::MappingService::start(Behaviour {
        latency_ms: options.service_latency.as_millis() as u64,
        error_rate: options.service_error_rate,
        ..Behaviour::default()
    })
    .map_err(|e| WeirError::Other(format!("cannot start the ID-mapping service: {e}")))?;
    println!(
        "{} Kafka at {bootstrap_servers}, ID-mapping service at http://{} ({} ms, {:.1}% errors)",
        if embedded.is_some() { "in-process" } else { "given" },
        service.address(),
        options.service_latency.as_millis(),
        options.service_error_rate * 100.0
    );

    // Kept until the end of the run: the registry stops when dropped.
    let registry_server = options.avro.then(TestSchemaRegistry::start).transpose()?;
    let format = match &registry_server {
        Some(server) => {
            println!("in-process Schema Registry at {}: every topic in Avro", server.url());
            Format::Avro(SchemaRegistry::new(server.url())?)
        }
        None => Format::Json,
    };

    let state = tempfile::tempdir().map_err(|e| WeirError::StateDir(e.to_string()))?;
    let mut config = StreamsConfig::new(&application_id, &bootstrap_servers)
        .set("state.dir", state.path().to_string_lossy())
        .set("consumer.session.timeout.ms", "6000")
        .set("num.stream.threads", options.stream_threads.to_string())
        // As `run` does: a user's consecutive changes merged per commit.
        .set("statestore.cache.merge", "true")
        // Frequent commits keep the counters the summary reads fresh.
        .set("commit.interval.ms", "500");
    // The floor's clients take the `consumer.` and `producer.` ones too.
    let pipeline_settings = pipeline_settings(&producer_settings, options);
    for (key, value) in &pipeline_settings {
        config = config.set(key, value);
    }
    let service_url = MappingService::at(format!("http://{}", service.address()));
    let topology = run_topology(&topics, &service_url, &format)?;
    let streams = KafkaStreams::new(topology.clone(), &config)?;
    let admin: Arc<dyn TopicAdmin> = match &embedded {
        Some(kafka) => kafka.clone(),
        None => Arc::new(KafkaTopicAdmin::new(streams.settings())?),
    };
    admin.create_topics(&[
        topic_spec(&topics.users, "delete"),
        topic_spec(&topics.preferences, "delete"),
        topic_spec(&topics.profiles, "compact"),
        topic_spec(&topics.god_objects, "compact"),
    ])?;
    let mut streams = streams.with_topic_admin(admin);
    streams.start()?;
    if !streams.wait_for_state(StreamsState::Running, Duration::from_secs(60)) {
        return Err(WeirError::Other(format!(
            "the pipeline did not start: {:?}",
            streams.state()
        )));
    }
    let started = Instant::now();
    let outputs = OutputMonitor::start(&bootstrap_servers, &topics, &format, started)?;
    let mut generator = Generator::with_format(options.seed, options.users, &format);
    let writer_settings: Vec<(&str, &str)> = producer_settings
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    let mut writer =
        CdcWriter::with_settings(&bootstrap_servers, &topics.users, &topics.preferences, &writer_settings)?;
    let mut progress = Progress::new(started);
    writer.write_history(&mut generator, options.events, options.rate, |written| {
        progress.report(&streams, &outputs, written)
    })?;
    writer.flush()?;
    let written = writer.written();
    let generated_in = started.elapsed();
    println!(
        "generator done: {written} CDC records in {:.1}s",
        generated_in.as_secs_f64()
    );

    let expected = generator.expected_god_objects(|id| format!("u2-{id}"));
    let deadline = Instant::now() + options.settle_timeout;
    let mut cdc_done = None;
    let verified = loop {
        progress.report(&streams, &outputs, written);
        let cdc_in = cdc_records_in(&streams, &topics);
        if cdc_in >= written && cdc_done.is_none() {
            cdc_done = Some(started.elapsed());
        }
        let mismatch = outputs.mismatch(&expected);
        if mismatch.is_none() && cdc_done.is_some() {
            break Ok(expected.len());
        }
        if streams.state() == StreamsState::Error || Instant::now() > deadline {
            break Err(mismatch.unwrap_or_else(|| "the pipeline stopped".to_string()));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut report = DemoReport {
        cdc_records: written,
        profiles_out: outputs.seen.profiles.count(),
        god_objects_out: outputs.seen.god_objects.count(),
        pipeline_rate: outputs
            .seen
            .god_objects
            .last_arrival()
            .map(|last| written as f64 / last.as_secs_f64()),
        floor_rate: None,
        verified,
    };
    let enrichment = topology.enrichment_metrics()["id-mapping"];
    println!();
    println!("summary");
    let rate = |records: u64, elapsed: Option<Duration>| {
        elapsed.map_or("-".to_string(), |e| {
            format!("{:.0}/s", records as f64 / e.as_secs_f64())
        })
    };
    println!(
        "  CDC in            {:>9} records  {:>10}",
        report.cdc_records,
        rate(report.cdc_records, cdc_done)
    );
    println!(
        "  join out          {:>9} records  {:>10}",
        report.profiles_out,
        rate(report.profiles_out, outputs.seen.profiles.last_arrival())
    );
    println!(
        "  enrichment out    {:>9} records  {:>10}   ({} service calls, {} retries, {} cache hits)",
        report.god_objects_out,
        rate(report.god_objects_out, outputs.seen.god_objects.last_arrival()),
        enrichment.calls,
        enrichment.retries,
        enrichment.cache_hits
    );
    println!(
        "  latency, CDC event written → user-profile record read:    {}",
        outputs.seen.profiles.latency_summary()
    );
    println!(
        "  latency, CDC event written → user-god-object record read: {}",
        outputs.seen.god_objects.latency_summary()
    );
    match &report.verified {
        Ok(users) => {
            println!("  verified: user-god-object holds exactly the {users} users the generated changes imply")
        }
        Err(problem) => println!("  NOT verified: {problem}"),
    }
    outputs.stop();
    streams.close()?;
    if let Some(kafka) = &embedded {
        let floor = run_floor(kafka, &topics, options, &pipeline_settings, written);
        let share = report.pipeline_rate.map_or(String::new(), |rate| {
            format!(
                "; the whole pipeline ({rate:.0}/s) at {:.0}% of it",
                100.0 * rate / floor
            )
        });
        println!(
            "  pass-through floor of the join stage (the same Kafka I/O on the same records, no processing, \
             after the pipeline closed): {floor:.0}/s{share}"
        );
        report.floor_rate = Some(floor);
    }
    Ok(report)
}

/// The pipeline's settings beyond the demo's own: a short fetch wait (the
/// in-process cluster holds a fetch that finds nothing for the whole wait,
/// 500 ms by default, where a broker answers as soon as records arrive, and
/// each hop of the pipeline would add that), every producer's settings,
/// then the settings given.
fn pipeline_settings(producer_settings: &[(String, String)], options: &DemoOptions) -> Vec<(String, String)> {
    [("consumer.fetch.wait.max.ms".to_string(), "10".to_string())]
        .into_iter()
        .chain(
            producer_settings
                .iter()
                .map(|(key, value)| (format!("producer.{key}"), value.clone())),
        )
        .chain(options.settings.iter().cloned())
        .collect()
}

/// Runs the pass-through floor on the CDC records the pipeline read, with
/// its threads and client settings; returns its CDC records per second.
fn run_floor(
    kafka: &EmbeddedKafka,
    topics: &Topics,
    options: &DemoOptions,
    pipeline_settings: &[(String, String)],
    written: u64,
) -> f64 {
    let settings: Vec<(&str, String)> = pipeline_settings
        .iter()
        .map(|(key, value)| (key.as_str(), value.clone()))
        .collect();
    let took = crate::floor::pass_through(
        kafka,
        &[&topics.users, &topics.preferences],
        PARTITIONS,
        options.stream_threads,
        2 * written,
        &settings,
    );
    written as f64 / took.as_secs_f64()
}

fn topic_spec(name: &str, cleanup_policy: &'static str) -> NewTopicSpec {
    NewTopicSpec {
        name: name.to_string(),
        partitions: PARTITIONS,
        cleanup_policy,
    }
}

/// CDC records the pipeline consumed, as of its last commit.
fn cdc_records_in(streams: &KafkaStreams, topics: &Topics) -> u64 {
    let tasks = streams.metrics().tasks;
    [&topics.users, &topics.preferences]
        .iter()
        .filter_map(|topic| tasks.cdc_events.get(topic.as_str()))
        .map(|counts| counts.iter().sum::<u64>())
        .sum()
}

/// Prints a line a second.
struct Progress {
    started: Instant,
    last: Instant,
    /// God objects whose latency an earlier line reported.
    god_objects_reported: usize,
}

impl Progress {
    fn new(started: Instant) -> Self {
        Progress {
            started,
            last: started,
            god_objects_reported: 0,
        }
    }

    fn report(&mut self, streams: &KafkaStreams, outputs: &OutputMonitor, written: u64) {
        if self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last = Instant::now();
        let latencies = outputs.seen.god_objects.latencies_since(self.god_objects_reported);
        self.god_objects_reported += latencies.len();
        let latency = Percentiles::of(latencies).map_or(String::new(), |p| {
            format!("  latency p50 {} ms, p99 {} ms", p.p50, p.p99)
        });
        println!(
            "[{:>5.1}s] CDC written {:>9}  processed {:>9}  user-profile {:>9}  user-god-object {:>9}{latency}",
            self.started.elapsed().as_secs_f64(),
            written,
            streams.metrics().processed,
            outputs.seen.profiles.count(),
            outputs.seen.god_objects.count(),
        );
    }
}

/// Percentiles of a set of latencies, in milliseconds.
struct Percentiles {
    p50: u32,
    p95: u32,
    p99: u32,
    max: u32,
}

impl Percentiles {
    fn of(mut latencies: Vec<u32>) -> Option<Self> {
        latencies.sort_unstable();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
        (!latencies.is_empty()).then(|| Percentiles {
            p50: at(0.5),
            p95: at(0.95),
            p99: at(0.99),
            max: at(1.0),
        })
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {} ms, p95 {} ms, p99 {} ms, max {} ms",
            self.p50, self.p95, self.p99, self.max
        )
    }
}

/// Reads both output topics in a thread of its own: counts, the compacted
/// view of `user-god-object`, and the latency of each god object.
struct OutputMonitor {
    seen: Arc<OutputsSeen>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the monitor's thread has read so far.
#[derive(Default)]
struct OutputsSeen {
    profiles: TopicSeen,
    god_objects: TopicSeen,
    view: Mutex<BTreeMap<i64, GodObject>>,
    undecodable: AtomicU64,
    stop: AtomicBool,
}

/// Records of one topic, when the last arrived (milliseconds after the run
/// started), and each record's latency: from its timestamp, the time its CDC
/// event was written, to its arrival.
#[derive(Default)]
struct TopicSeen {
    records: AtomicU64,
    last_ms: AtomicU64,
    latencies_ms: Mutex<Vec<u32>>,
}

impl TopicSeen {
    fn arrived(&self, started: Instant, message: &BorrowedMessage<'_>) {
        self.records.fetch_add(1, Ordering::Relaxed);
        self.last_ms
            .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        if let Some(written) = message.timestamp().to_millis() {
            let latency = now_ms().saturating_sub(written.max(0) as u64);
            let latency = latency.min(u32::MAX as u64) as u32;
            self.latencies_ms.lock().expect("latencies").push(latency);
        }
    }

    /// The latencies of the records that arrived after the first `from`.
    fn latencies_since(&self, from: usize) -> Vec<u32> {
        let latencies = self.latencies_ms.lock().expect("latencies");
        latencies.get(from..).unwrap_or_default().to_vec()
    }

    fn latency_summary(&self) -> String {
        Percentiles::of(self.latencies_since(0)).map_or("no records".to_string(), |p| p.to_string())
    }

    fn count(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// How long after the start the last record arrived, if any did.
    fn last_arrival(&self) -> Option<Duration> {
        let last = self.last_ms.load(Ordering::Relaxed);
        (self.count() > 0).then(|| Duration::from_millis(last.max(1)))
    }
}

impl OutputMonitor {
    fn start(bootstrap_servers: &str, topics: &Topics, format: &Format, started: Instant) -> Result<Self, WeirError> {
        let (consumer, _) = consumer_from_beginning(bootstrap_servers, &[&topics.profiles, &topics.god_objects])?;
        let seen = Arc::new(OutputsSeen::default());
        let shared = seen.clone();
        let profiles_topic = topics.profiles.clone();
        let (keys, god_objects) = (format.key_serde(), format.god_object_serde());
        let thread = std::thread::spawn(move || {
            while !shared.stop.load(Ordering::Relaxed) {
                let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else {
                    continue;
                };
                if message.topic() == profiles_topic {
                    shared.profiles.arrived(started, &message);
                    continue;
                }
                shared.god_objects.arrived(started, &message);
                let topic = message.topic();
                let key = message.key().and_then(|k| keys.deserialize(topic, Some(k)).ok());
                let value = message.payload().map(|v| god_objects.deserialize(topic, Some(v)));
                let mut view = shared.view.lock().expect("view");
                match (key, value) {
                    (Some(key), None) => {
                        view.remove(&key);
                    }
                    (Some(key), Some(Ok(god_object))) => {
                        view.insert(key, god_object);
                    }
                    _ => {
                        shared.undecodable.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Ok(OutputMonitor {
            seen,
            thread: Some(thread),
        })
    }

    /// `None` when the god objects are exactly `expected`, else the first
    /// difference.
    fn mismatch(&self, expected: &BTreeMap<i64, GodObject>) -> Option<String> {
        let undecodable = self.seen.undecodable.load(Ordering::Relaxed);
        if undecodable > 0 {
            return Some(format!("{undecodable} user-god-object records could not be read"));
        }
        let view = self.seen.view.lock().expect("view");
        if view.len() != expected.len() {
            return Some(format!("{} god objects, {} users expected", view.len(), expected.len()));
        }
        for (id, wanted) in expected {
            if view.get(id) != Some(wanted) {
                return Some(format!("user {id}: {:?}, expected {wanted:?}", view.get(id)));
            }
        }
        None
    }

    fn stop(mut self) {
        self.seen.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
