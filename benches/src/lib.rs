//! What the end-to-end benchmarks share: an application on the in-process
//! cluster, input written as fast as the producer goes, and a clock that
//! stops when the last output record arrives.
//!
//! Each benchmark is a `harness = false` program under `benches/` that
//! prints a table; run them with `cargo bench -p weir-benches`.

/// The allocator `user-profile` runs with: weir allocates per record
/// (decoded rows, output records), and glibc's allocator costs a tenth of
/// a stream thread's time here. The floor runs in the same process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use rdkafka::error::KafkaError;
use std::time::{Duration, Instant};
use weir::embedded::EmbeddedKafka;
use weir::runtime::{KafkaStreams, StreamsConfig, StreamsState};
use weir::testing::kafka::{consumer_from_beginning, TestConsumer};
use weir::Topology;

/// A running application on an embedded cluster, with its state in a
/// temporary directory.
pub struct App {
    streams: KafkaStreams,
    config: StreamsConfig,
    kafka: std::sync::Arc<EmbeddedKafka>,
    _state: tempfile::TempDir,
}

impl App {
    /// Starts `topology` as application `name`, with `settings` on top of
    /// the harness's, and waits until it runs.
    pub fn start(
        kafka: &std::sync::Arc<EmbeddedKafka>,
        name: &str,
        topology: Topology,
        settings: &[(&str, String)],
    ) -> App {
        let state = tempfile::tempdir().expect("a temporary directory");
        let config = StreamsConfig::new(name, kafka.bootstrap_servers())
            .set("state.dir", state.path().to_string_lossy())
            .set("consumer.session.timeout.ms", "6000")
            .set("consumer.heartbeat.interval.ms", "500");
        let config = settings
            .iter()
            .fold(config, |config, (key, value)| config.set(*key, value));
        App {
            streams: run(kafka, topology, &config),
            config,
            kafka: kafka.clone(),
            _state: state,
        }
    }

    /// Closes the application and starts `topology` again on the same
    /// state directory, after `meanwhile` ran.
    pub fn restart(mut self, topology: Topology, meanwhile: impl FnOnce()) -> App {
        self.streams.close().expect("a clean close");
        meanwhile();
        self.streams = run(&self.kafka, topology, &self.config);
        self
    }

    /// Waits until the application has processed `total` input records.
    pub fn wait_for_processed(&self, total: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let processed = self.processed();
            if processed >= total {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {processed} of {total} records were processed"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until the application has processed at least `at_least`
    /// input records and then nothing for `idle`; returns when it processed
    /// the last one (as near as a 5 ms sampling tells).
    pub fn wait_until_idle(&self, at_least: u64, idle: Duration, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        let (mut last, mut last_change) = (self.processed(), Instant::now());
        loop {
            std::thread::sleep(Duration::from_millis(5));
            let processed = self.processed();
            if processed != last {
                (last, last_change) = (processed, Instant::now());
            } else if processed >= at_least && last_change.elapsed() >= idle {
                return last_change;
            }
            assert!(Instant::now() < deadline, "only {processed} records were processed");
        }
    }

    /// Input records processed since the application (re)started.
    pub fn processed(&self) -> u64 {
        self.streams.metrics().processed
    }

    /// Rebalances this instance's stream threads took part in so far.
    pub fn rebalances(&self) -> u64 {
        self.streams.metrics().rebalances
    }

    /// Commits, flushes every output and stops.
    pub fn close(mut self) {
        self.streams.close().expect("a clean close");
    }
}

/// Starts `topology` and waits until it runs.
fn run(kafka: &std::sync::Arc<EmbeddedKafka>, topology: Topology, config: &StreamsConfig) -> KafkaStreams {
    let mut streams = KafkaStreams::new(topology, config)
        .expect("a valid configuration")
        .with_topic_admin(kafka.clone());
    streams.start().expect("the application starts");
    assert!(
        streams.wait_for_state(StreamsState::Running, Duration::from_secs(60)),
        "the application did not start: {:?}",
        streams.state()
    );
    streams
}

/// Counts the records arriving on a topic, from its beginning.
pub struct OutputCounter {
    consumer: TestConsumer,
    count: u64,
}

impl OutputCounter {
    pub fn new(kafka: &EmbeddedKafka, topic: &str) -> OutputCounter {
        let (consumer, _) = consumer_from_beginning(kafka.bootstrap_servers(), &[topic]).expect("a consumer");
        OutputCounter { consumer, count: 0 }
    }

    /// Waits until `total` records have arrived in all; returns when the
    /// last of them did.
    pub fn wait_for(&mut self, total: u64, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        while self.count < total {
            assert!(
                Instant::now() < deadline,
                "only {} of {total} records arrived",
                self.count
            );
            match self.consumer.poll(Duration::from_millis(50)) {
                Some(Ok(_)) => self.count += 1,
                Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                Some(Err(error)) => panic!("cannot read the output: {error}"),
            }
        }
        Instant::now()
    }
}

/// Records per second, rounded.
pub fn rate(records: u64, elapsed: Duration) -> u64 {
    (records as f64 / elapsed.as_secs_f64()).round() as u64
}
