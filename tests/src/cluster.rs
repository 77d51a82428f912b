//! The clusters end-to-end tests run against: the in-process mock cluster,
//! or a broker in its own process — Tansu started on a free loopback port,
//! or any Kafka named by `KAFKA_BOOTSTRAP_SERVERS`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::embedded::EmbeddedKafka;
use weir::runtime::{KafkaStreams, KafkaTopicAdmin, NewTopicSpec, StreamsConfig, StreamsState, TopicAdmin};
use weir::testing::kafka::TestProducer;
use weir::Topology;

/// The variable that points the suite at an existing cluster.
pub const BOOTSTRAP_ENV: &str = "KAFKA_BOOTSTRAP_SERVERS";
/// The Tansu version the suite starts; `scripts/install-deps` installs it.
pub const TANSU_VERSION: &str = "0.6.0";

/// A broker process the cluster owns; killed when the cluster is dropped.
struct BrokerProcess {
    child: Child,
    _log_dir: tempfile::TempDir,
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cluster to run weir against, with a unique prefix for topic and
/// application names so that runs never collide on a shared cluster.
pub struct Cluster {
    bootstrap_servers: String,
    admin: Arc<dyn TopicAdmin>,
    /// The in-process cluster, when it is one (it can inject faults).
    embedded: Option<Arc<EmbeddedKafka>>,
    transactions: bool,
    /// Whether the group coordinator starts a new generation (and so new
    /// assignments) when a member dies without leaving.
    reassigns_after_death: bool,
    /// Whether an offset fetch returns the metadata committed with the offset.
    returns_offset_metadata: bool,
    /// librdkafka settings every producer writing to this cluster needs.
    producer_settings: &'static [(&'static str, &'static str)],
    prefix: String,
    _broker: Option<BrokerProcess>,
}

/// Sends the logs of in-process instances to the test's output when
/// `RUST_LOG` is set (`RUST_LOG=info cargo test -- --nocapture`).
fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

impl Cluster {
    /// librdkafka's mock cluster, in this process (reachable from child
    /// processes too, over loopback).
    pub fn embedded() -> Cluster {
        init_logging();
        let kafka = Arc::new(EmbeddedKafka::start().expect("the mock cluster starts"));
        Cluster {
            bootstrap_servers: kafka.bootstrap_servers().to_string(),
            admin: kafka.clone(),
            embedded: Some(kafka),
            transactions: true,
            reassigns_after_death: true,
            returns_offset_metadata: true,
            producer_settings: &[],
            prefix: unique_prefix(),
            _broker: None,
        }
    }

    /// The cluster of `KAFKA_BOOTSTRAP_SERVERS` when set, else a Tansu
    /// broker started for this cluster alone.
    pub fn broker() -> Cluster {
        init_logging();
        // Tansu 0.6.0 has no EndTxn, and its group coordinator drops a dead
        // member without starting a new generation. A fetch from an offset
        // inside a record batch returns nothing of that batch (only later
        // batches), so a consumer resuming from a committed offset in the
        // middle of a batch would silently skip the batch's rest: on Tansu
        // every producer writes one record per batch. Its offset fetch
        // returns no committed metadata. A cluster named by the user is
        // taken to be a full Kafka.
        let (bootstrap_servers, broker) = match std::env::var(BOOTSTRAP_ENV) {
            Ok(servers) if !servers.trim().is_empty() => (servers, None),
            _ => {
                let (servers, process) = start_tansu();
                (servers, Some(process))
            }
        };
        let settings = StreamsConfig::new("weir-e2e-admin", &bootstrap_servers)
            .settings()
            .expect("admin settings");
        let admin = Arc::new(KafkaTopicAdmin::new(&settings).expect("an admin client"));
        let cluster = Cluster {
            transactions: broker.is_none(),
            reassigns_after_death: broker.is_none(),
            returns_offset_metadata: broker.is_none(),
            producer_settings: if broker.is_some() {
                &[("batch.num.messages", "1")]
            } else {
                &[]
            },
            bootstrap_servers,
            admin,
            embedded: None,
            prefix: unique_prefix(),
            _broker: broker,
        };
        cluster.wait_until_reachable();
        cluster
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// Whether this is the in-process mock cluster.
    pub fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    /// The in-process cluster, to inject faults into.
    pub fn embedded_kafka(&self) -> Option<&EmbeddedKafka> {
        self.embedded.as_deref()
    }

    /// Whether the brokers support Kafka transactions (exactly-once).
    pub fn supports_transactions(&self) -> bool {
        self.transactions
    }

    /// Whether the partitions of a member that dies without leaving the
    /// group are assigned to the others.
    pub fn reassigns_after_a_member_dies(&self) -> bool {
        self.reassigns_after_death
    }

    /// Whether an offset fetch returns the metadata committed with the
    /// offset, which interactive queries read a partition's owner from.
    pub fn returns_offset_metadata(&self) -> bool {
        self.returns_offset_metadata
    }

    /// librdkafka settings every producer writing to this cluster needs.
    pub fn producer_settings(&self) -> &'static [(&'static str, &'static str)] {
        self.producer_settings
    }

    /// Settings for the clients of an instance (`producer.`-prefixed
    /// librdkafka properties) that this cluster needs.
    pub fn client_settings(&self) -> Vec<(String, String)> {
        self.producer_settings
            .iter()
            .map(|(key, value)| (format!("producer.{key}"), value.to_string()))
            .collect()
    }

    /// The configuration of an instance in its own process: `application`,
    /// `guarantee` (`at_least_once` or `exactly_once_v2`), its state
    /// directory, fast commits and group joins, and what this cluster needs.
    pub fn instance_settings(
        &self,
        application: &str,
        guarantee: &str,
        state: &std::path::Path,
    ) -> Vec<(String, String)> {
        [
            ("application.id", application.to_string()),
            ("bootstrap.servers", self.bootstrap_servers.clone()),
            ("state.dir", state.to_string_lossy().to_string()),
            ("processing.guarantee", guarantee.to_string()),
            ("commit.interval.ms", "200".to_string()),
            ("consumer.session.timeout.ms", "6000".to_string()),
            ("consumer.heartbeat.interval.ms", "500".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain(self.client_settings())
        .collect()
    }

    /// A producer of test input for this cluster.
    pub fn producer(&self) -> TestProducer {
        TestProducer::with_settings(&self.bootstrap_servers, self.producer_settings).expect("a test producer")
    }

    /// `name` made unique to this cluster's run.
    pub fn name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Creates the topic `self.name(name)`.
    pub fn create_topic(&self, name: &str, partitions: i32) -> String {
        let topic = self.name(name);
        self.admin
            .create_topics(&[NewTopicSpec {
                name: topic.clone(),
                partitions,
                cleanup_policy: "delete",
            }])
            .unwrap_or_else(|e| panic!("cannot create {topic}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.admin.partition_counts().unwrap().contains_key(&topic) {
            assert!(Instant::now() < deadline, "topic {topic} did not appear");
            std::thread::sleep(Duration::from_millis(100));
        }
        topic
    }

    /// A configuration for an instance of `application` (made unique) with
    /// fast commits and group joins.
    pub fn config(&self, application: &str, state_dir: &std::path::Path) -> StreamsConfig {
        let config = StreamsConfig::new(&self.name(application), &self.bootstrap_servers)
            .set("state.dir", state_dir.to_string_lossy())
            .set("commit.interval.ms", "100")
            .set("consumer.session.timeout.ms", "6000")
            .set("consumer.heartbeat.interval.ms", "500");
        self.client_settings()
            .into_iter()
            .fold(config, |config, (key, value)| config.set(key, value))
    }

    /// Creates the internal topics of an application ahead of its instances,
    /// for instances in other processes, which cannot create topics on the
    /// in-process cluster (it has no admin API).
    pub fn prepare_topics(&self, topology: &Topology, config: &StreamsConfig) {
        let settings = config.settings().expect("a valid configuration");
        weir::runtime::prepare_topics(topology, &settings, self.admin.as_ref()).expect("the topics are prepared");
    }

    /// An instance in this process, with the cluster's topic administration.
    pub fn streams(&self, topology: Topology, config: &StreamsConfig) -> KafkaStreams {
        KafkaStreams::new(topology, config)
            .expect("a valid configuration")
            .with_topic_admin(self.admin.clone())
    }

    /// [`Cluster::streams`], started; returns once it processes.
    pub fn start(&self, topology: Topology, config: &StreamsConfig) -> KafkaStreams {
        let mut streams = self.streams(topology, config);
        streams.start().expect("the instance starts");
        assert!(
            streams.wait_for_state(StreamsState::Running, Duration::from_secs(90)),
            "the instance did not start running: {:?}",
            streams.state()
        );
        streams
    }

    fn wait_until_reachable(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.admin.partition_counts() {
                Ok(_) => return,
                Err(error) if Instant::now() > deadline => {
                    panic!("the broker at {} is not reachable: {error}", self.bootstrap_servers)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

fn unique_prefix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "t{}-{nanos:x}-{}-",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The Tansu binary: on `PATH`, or where `cargo install` puts it.
fn tansu_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("tansu"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    on_path
        .into_iter()
        .chain(cargo_home.map(|h| h.join("bin").join("tansu")))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the end-to-end suite needs Tansu {TANSU_VERSION} (run scripts/install-deps) or a cluster in \
                 {BOOTSTRAP_ENV}"
            )
        })
}

/// Starts Tansu with in-memory storage on a free loopback port.
fn start_tansu() -> (String, BrokerProcess) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let log_dir = tempfile::tempdir().expect("a log directory");
    let log = std::fs::File::create(log_dir.path().join("tansu.log")).expect("a log file");
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(tansu_binary())
        .args(["broker", "--storage-engine", "memory://tansu/"])
        .args(["--listener-url", &url, "--advertised-listener-url", &url])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("Tansu starts");
    (
        format!("127.0.0.1:{port}"),
        BrokerProcess {
            child,
            _log_dir: log_dir,
        },
    )
}
