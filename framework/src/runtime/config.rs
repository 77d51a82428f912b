//! [`StreamsConfig`]: an application's settings, from code, a TOML file and
//! the environment, checked all at once into [`Settings`].
//!
//! Keys follow Kafka Streams' names. Besides weir's own keys (listed in
//! [`WEIR_KEYS`]), any librdkafka property is passed through: without a
//! prefix it applies to every client (the place for `security.protocol`,
//! `sasl.*` and `ssl.*`), with `consumer.`, `producer.` or `admin.` in front
//! to that client only. A key that is neither is an error that names it, as
//! is a value librdkafka or weir rejects.

use crate::error::WeirError;
use crate::error_handler::ErrorHandler;
use crate::state::RocksDbConfig;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// weir's own keys, with what each one sets.
pub const WEIR_KEYS: &[(&str, &str)] = &[
    (
        "application.id",
        "the consumer group, and the prefix of internal topics and the state directory (required)",
    ),
    (
        "bootstrap.servers",
        "the Kafka brokers, host:port[,host:port] (required)",
    ),
    (
        "state.dir",
        "where stores and checkpoints live (default: <temp dir>/weir)",
    ),
    (
        "commit.interval.ms",
        "how often progress is committed (default: 30000, or 100 under exactly-once)",
    ),
    (
        "poll.ms",
        "the longest wait for new records before the loop checks for commits and shutdown (default: 100)",
    ),
    ("processing.guarantee", "at_least_once (default) or exactly_once_v2"),
    (
        "transaction.max.rewinds",
        "exactly-once: how many aborted transactions in a row (each rebuilding the tasks' state, after a wait \
         growing from 100 ms to 10 s) before the instance stops (default: 10)",
    ),
    (
        "input.wait.max.ms",
        "how long a task with several input partitions waits for one that has records on the way (the consumer \
         knows of them) before it processes the others' records out of time order (default: 1000)",
    ),
    (
        "num.stream.threads",
        "stream threads of the instance, each a consumer of the group with its own tasks (default: 1)",
    ),
    (
        "replication.factor",
        "replicas of the internal topics weir creates; -1 (default) takes the broker's default",
    ),
    (
        "state.store",
        "rocksdb (default) or in_memory (restored from the changelog at every start)",
    ),
    (
        "rocksdb.block.cache.bytes",
        "the block cache shared by every RocksDB store of the instance",
    ),
    (
        "rocksdb.write.buffer.bytes",
        "the cap on all memtables, charged to the block cache",
    ),
    ("rocksdb.memtable.bytes", "the size of one store's memtable"),
    (
        "statestore.cache.max.bytes",
        "the record caches in front of the stores, for all stream threads: recent reads, and the writes of the \
         batch being processed, which reach the stores in one write batch (default: 67108864; 0 caches no reads)",
    ),
    (
        "statestore.cache.merge",
        "true to hold a table's changes in the store cache until the next commit and pass on one change per key \
         (Kafka Streams' caching); false (default) passes every update on at once",
    ),
    (
        "default.error.handler",
        "for records that cannot be deserialized: fail (default), log_and_continue, or dead_letter:<topic>",
    ),
    (
        "production.error.handler",
        "for output records that cannot be serialized or that the brokers refuse (too large, invalid): fail \
         (default), log_and_continue, or dead_letter:<topic>",
    ),
    (
        "application.server",
        "host:port where this instance answers interactive queries; other instances name it as a key's owner",
    ),
];

/// librdkafka properties that weir sets itself; overriding them would break
/// the commit, assignment or transaction protocol.
const MANAGED_KEYS: &[(&str, &str)] = &[
    ("group.id", "application.id names the consumer group"),
    (
        "enable.auto.commit",
        "weir commits offsets after the outputs they produced",
    ),
    (
        "enable.auto.offset.store",
        "weir commits offsets after the outputs they produced",
    ),
    (
        "transactional.id",
        "weir derives it from application.id under exactly_once_v2",
    ),
    ("isolation.level", "processing.guarantee decides it"),
    (
        "partition.assignment.strategy",
        "weir needs the range assignor so that co-partitioned topics are assigned together",
    ),
    (
        "group.protocol",
        "weir needs the classic group protocol with the range assignor",
    ),
    (
        "enable.partition.eof",
        "weir's restore reads changelogs with its own settings",
    ),
    (
        "auto.offset.reset",
        "weir reads an input partition without a committed offset from its beginning, as part of the commit \
         protocol",
    ),
];

/// The client a librdkafka property is meant for.
/// `statestore.cache.max.bytes` when unset: 64 MiB for the instance.
pub(crate) const DEFAULT_CACHE_MAX_BYTES: usize = 64 << 20;

const CLIENT_PREFIXES: [&str; 3] = ["consumer.", "producer.", "admin."];

/// At-least-once or exactly-once processing; see the crate's README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessingGuarantee {
    /// Outputs are flushed before offsets are committed; a crash may replay
    /// records whose outputs were already written.
    AtLeastOnce,
    /// Outputs, changelog writes and offsets commit in one Kafka transaction.
    ExactlyOnceV2,
}

/// Where stores keep their data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreBackend {
    RocksDb,
    InMemory,
}

/// An application's settings as text, collected from any number of sources;
/// [`StreamsConfig::settings`] checks them.
///
/// ```
/// use weir::runtime::{StreamsConfig, ProcessingGuarantee};
///
/// let config = StreamsConfig::new("user-profile", "localhost:9092")
///     .set("processing.guarantee", "exactly_once_v2")
///     .set("consumer.fetch.min.bytes", "1024")
///     .merge(StreamsConfig::from_toml_str("commit.interval.ms = 500").unwrap());
/// let settings = config.settings().unwrap();
/// assert_eq!(settings.guarantee, ProcessingGuarantee::ExactlyOnceV2);
/// assert_eq!(settings.commit_interval.as_millis(), 500);
///
/// let error = StreamsConfig::new("app", "localhost:9092").set("comit.interval.ms", "5").settings().unwrap_err();
/// assert!(error.to_string().contains("comit.interval.ms"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamsConfig {
    properties: BTreeMap<String, String>,
}

impl StreamsConfig {
    /// A configuration with the two required keys.
    pub fn new(application_id: &str, bootstrap_servers: &str) -> Self {
        StreamsConfig::default()
            .set("application.id", application_id)
            .set("bootstrap.servers", bootstrap_servers)
    }

    /// Sets `key` to `value`, replacing an earlier value.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.properties.get(key).map(String::as_str)
    }

    /// `other`'s keys on top of these.
    pub fn merge(mut self, other: StreamsConfig) -> Self {
        self.properties.extend(other.properties);
        self
    }

    /// Reads TOML: dotted keys (`commit.interval.ms = 500`), quoted keys
    /// (`"application.id" = "app"`) and tables (`[consumer]` then
    /// `fetch.min.bytes = 1`) all name the same flat keys.
    pub fn from_toml_str(text: &str) -> Result<Self, WeirError> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| WeirError::Config(format!("invalid TOML configuration: {e}")))?;
        let mut config = StreamsConfig::default();
        flatten_toml("", &table, &mut config.properties)?;
        Ok(config)
    }

    /// Reads a TOML file; see [`StreamsConfig::from_toml_str`].
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self, WeirError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| WeirError::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml_str(&text).map_err(|e| WeirError::Config(format!("{}: {e}", path.display())))
    }

    /// The keys given as `WEIR_*` environment variables: `WEIR_COMMIT_INTERVAL_MS`
    /// sets `commit.interval.ms`, `WEIR_CONSUMER_FETCH_MIN_BYTES` sets
    /// `consumer.fetch.min.bytes` (lower case, `_` for `.`).
    pub fn from_env() -> Self {
        Self::from_env_vars(std::env::vars())
    }

    /// [`StreamsConfig::from_env`] over the given variables.
    pub fn from_env_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut config = StreamsConfig::default();
        for (name, value) in vars {
            if let Some(rest) = name.strip_prefix("WEIR_") {
                config
                    .properties
                    .insert(rest.to_ascii_lowercase().replace('_', "."), value);
            }
        }
        config
    }

    /// Checks every key and value; the error lists every problem found.
    pub fn settings(&self) -> Result<Settings, WeirError> {
        let mut problems = Vec::new();
        let mut clients = ClientProperties::default();
        for (key, value) in &self.properties {
            if WEIR_KEYS.iter().any(|(k, _)| k == key) {
                continue;
            }
            let (client, property) = match CLIENT_PREFIXES
                .iter()
                .find_map(|p| key.strip_prefix(p).map(|r| (*p, r)))
            {
                Some((prefix, property)) => (Some(prefix), property),
                None => (None, key.as_str()),
            };
            if let Some((_, why)) = MANAGED_KEYS.iter().find(|(k, _)| *k == property) {
                problems.push(format!("'{key}' cannot be set: {why}"));
                continue;
            }
            if let Err(problem) = check_librdkafka_property(property, value) {
                problems.push(match client {
                    None if problem.unknown => format!(
                        "unknown configuration key '{key}': neither a weir key ({}) nor a librdkafka property",
                        WEIR_KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
                    ),
                    _ => format!("invalid configuration key '{key}': {}", problem.message),
                });
                continue;
            }
            let target = match client {
                None => &mut clients.common,
                Some("consumer.") => &mut clients.consumer,
                Some("producer.") => &mut clients.producer,
                Some(_) => &mut clients.admin,
            };
            target.push((property.to_string(), value.clone()));
        }
        let settings = self.weir_settings(clients, &mut problems);
        match settings {
            Some(settings) if problems.is_empty() => Ok(settings),
            _ => Err(WeirError::Config(problems.join("; "))),
        }
    }

    fn weir_settings(&self, clients: ClientProperties, problems: &mut Vec<String>) -> Option<Settings> {
        let mut required = |key: &str| match self.get(key) {
            Some(value) if !value.trim().is_empty() => Some(value.trim().to_string()),
            _ => {
                problems.push(format!("'{key}' is required"));
                None
            }
        };
        let application_id = required("application.id");
        let bootstrap_servers = required("bootstrap.servers");
        if let Some(id) = &application_id {
            if !id.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
                problems.push(format!(
                    "invalid 'application.id' {id:?}: use letters, digits, '.', '_' and '-' (it names topics and directories)"
                ));
            }
        }
        let guarantee = match self.get("processing.guarantee").unwrap_or("at_least_once") {
            "at_least_once" => ProcessingGuarantee::AtLeastOnce,
            "exactly_once_v2" => ProcessingGuarantee::ExactlyOnceV2,
            other => {
                problems.push(format!(
                    "invalid 'processing.guarantee' {other:?}: expected at_least_once or exactly_once_v2"
                ));
                ProcessingGuarantee::AtLeastOnce
            }
        };
        let default_commit = match guarantee {
            ProcessingGuarantee::AtLeastOnce => 30_000,
            ProcessingGuarantee::ExactlyOnceV2 => 100,
        };
        let mut number = |key: &str, default: u64| match self.get(key) {
            None => default,
            Some(text) => match text.trim().parse::<u64>() {
                Ok(n) => n,
                Err(_) => {
                    problems.push(format!("invalid '{key}' {text:?}: expected a whole number"));
                    default
                }
            },
        };
        let commit_interval = Duration::from_millis(number("commit.interval.ms", default_commit));
        let poll_interval = Duration::from_millis(number("poll.ms", 100));
        let input_wait_max = Duration::from_millis(number("input.wait.max.ms", 1_000));
        let stream_threads = number("num.stream.threads", 1) as usize;
        let max_rewinds = number("transaction.max.rewinds", 10).min(u64::from(u32::MAX)) as u32;
        let defaults = RocksDbConfig::default();
        let rocksdb = RocksDbConfig {
            block_cache_bytes: number("rocksdb.block.cache.bytes", defaults.block_cache_bytes as u64) as usize,
            write_buffer_bytes: number("rocksdb.write.buffer.bytes", defaults.write_buffer_bytes as u64) as usize,
            memtable_bytes: number("rocksdb.memtable.bytes", defaults.memtable_bytes as u64) as usize,
        };
        let cache_max_bytes = number("statestore.cache.max.bytes", DEFAULT_CACHE_MAX_BYTES as u64) as usize;
        let merge_table_changes = match self.get("statestore.cache.merge").map(str::trim) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                problems.push(format!(
                    "invalid 'statestore.cache.merge' {other:?}: expected true or false"
                ));
                false
            }
        };
        if stream_threads == 0 {
            problems.push("invalid 'num.stream.threads' \"0\": an instance needs at least one stream thread".into());
        }
        let replication_factor = match self.get("replication.factor").map(|t| (t, t.trim().parse::<i32>())) {
            None => -1,
            Some((_, Ok(n))) if n == -1 || n > 0 => n,
            Some((text, _)) => {
                problems.push(format!(
                    "invalid 'replication.factor' {text:?}: expected -1 or a positive number"
                ));
                -1
            }
        };
        let store_backend = match self.get("state.store").unwrap_or("rocksdb") {
            "rocksdb" => StoreBackend::RocksDb,
            "in_memory" => StoreBackend::InMemory,
            other => {
                problems.push(format!(
                    "invalid 'state.store' {other:?}: expected rocksdb or in_memory"
                ));
                StoreBackend::RocksDb
            }
        };
        let mut handler = |key: &str| {
            let text = self.get(key).unwrap_or("fail");
            ErrorHandler::parse(text).unwrap_or_else(|| {
                problems.push(format!(
                    "invalid '{key}' {text:?}: expected fail, log_and_continue or dead_letter:<topic>"
                ));
                ErrorHandler::Fail
            })
        };
        let default_error_handler = handler("default.error.handler");
        let production_error_handler = handler("production.error.handler");
        let application_server = self.get("application.server").map(|text| text.trim().to_string());
        if let Some(server) = &application_server {
            let valid = server
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                problems.push(format!("invalid 'application.server' {server:?}: expected host:port"));
            }
        }
        let state_dir = self
            .get("state.dir")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("weir"));
        if guarantee == ProcessingGuarantee::AtLeastOnce {
            check_delivery_timeout(&clients, problems);
        }
        Some(Settings {
            application_id: application_id?,
            bootstrap_servers: bootstrap_servers?,
            state_dir,
            commit_interval,
            poll_interval,
            input_wait_max,
            max_rewinds,
            stream_threads: stream_threads.max(1),
            replication_factor,
            guarantee,
            store_backend,
            rocksdb,
            cache_max_bytes,
            merge_table_changes,
            default_error_handler,
            production_error_handler,
            application_server,
            clients,
        })
    }
}

/// Flattens TOML tables into dotted keys.
fn flatten_toml(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, String>) -> Result<(), WeirError> {
    for (key, value) in table {
        let key = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let text = match value {
            toml::Value::Table(inner) => {
                flatten_toml(&key, inner, out)?;
                continue;
            }
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Float(x) => x.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(WeirError::Config(format!(
                    "configuration key '{key}' has a {} value; expected a string, number or boolean",
                    other.type_str()
                )))
            }
        };
        out.insert(key, text);
    }
    Ok(())
}

struct PropertyProblem {
    unknown: bool,
    message: String,
}

/// Asks librdkafka whether it knows `key` and accepts `value`.
fn check_librdkafka_property(key: &str, value: &str) -> Result<(), PropertyProblem> {
    let mut config = ClientConfig::new();
    config.set(key, value);
    match config.create_native_config() {
        Ok(_) => Ok(()),
        Err(rdkafka::error::KafkaError::ClientConfig(result, message, _, _)) => Err(PropertyProblem {
            unknown: result == rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN,
            message,
        }),
        Err(other) => Err(PropertyProblem {
            unknown: false,
            message: other.to_string(),
        }),
    }
}

/// librdkafka properties passed through to the clients.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientProperties {
    /// For every client.
    pub common: Vec<(String, String)>,
    pub consumer: Vec<(String, String)>,
    pub producer: Vec<(String, String)>,
    pub admin: Vec<(String, String)>,
}

impl ClientProperties {
    /// A property as one client gets it: its own value, else the common one.
    pub(crate) fn value(&self, kind: ClientKind, key: &str) -> Option<&str> {
        let own = match kind {
            ClientKind::Consumer => &self.consumer,
            ClientKind::Producer => &self.producer,
            ClientKind::Admin => &self.admin,
        };
        fn find<'a>(list: &'a [(String, String)], key: &str) -> Option<&'a str> {
            list.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
        }
        find(own, key).or_else(|| find(&self.common, key))
    }

    /// Under at-least-once, the longest a produced record may wait for its
    /// delivery (`message.timeout.ms`): the consumer's session timeout less
    /// one heartbeat. A member stalled for that long may have lost its
    /// partitions to another member; the records it queued before the
    /// stall then time out instead of arriving on top of the new owner's.
    pub(crate) fn max_delivery_ms(&self) -> u64 {
        let consumer = |key, default: u64| {
            self.value(ClientKind::Consumer, key)
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(default)
        };
        consumer("session.timeout.ms", 45_000)
            .saturating_sub(consumer("heartbeat.interval.ms", 3_000))
            .max(1)
    }
}

/// librdkafka's names of the producer's delivery timeout (the second is an
/// alias of the first).
pub(crate) const DELIVERY_TIMEOUT_KEYS: [&str; 2] = ["message.timeout.ms", "delivery.timeout.ms"];

/// A producer's delivery timeout must not outlast a stalled member's
/// session (see [`ClientProperties::max_delivery_ms`]).
fn check_delivery_timeout(clients: &ClientProperties, problems: &mut Vec<String>) {
    let bound = clients.max_delivery_ms();
    for key in DELIVERY_TIMEOUT_KEYS {
        let Some(value) = clients.value(ClientKind::Producer, key) else {
            continue;
        };
        if value.trim().parse::<u64>().is_ok_and(|v| v == 0 || v > bound) {
            problems.push(format!(
                "the producer's '{key}' ({value}) must be at most the consumer's session.timeout.ms less its \
                 heartbeat.interval.ms ({bound}) under at_least_once: a member stalled long enough to lose its \
                 partitions must not deliver what it queued before the stall on top of their next owner's writes"
            ));
        }
    }
}

/// Checked settings of an application; made by [`StreamsConfig::settings`].
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub application_id: String,
    pub bootstrap_servers: String,
    pub state_dir: PathBuf,
    pub commit_interval: Duration,
    pub poll_interval: Duration,
    /// How long a task with several input partitions waits for one that
    /// has records on the way (see [`super::partition_group`]).
    pub input_wait_max: Duration,
    /// Exactly-once: aborted transactions in a row before the instance stops.
    pub max_rewinds: u32,
    /// Stream threads of the instance (`num.stream.threads`).
    pub stream_threads: usize,
    /// Replicas of created internal topics; -1 for the broker's default.
    pub replication_factor: i32,
    pub guarantee: ProcessingGuarantee,
    pub store_backend: StoreBackend,
    pub rocksdb: RocksDbConfig,
    /// The store caches' memory, shared by all stream threads
    /// (`statestore.cache.max.bytes`).
    pub cache_max_bytes: usize,
    /// Whether tables' changes wait in the store caches until the next
    /// commit, merged per key (`statestore.cache.merge`).
    pub merge_table_changes: bool,
    pub default_error_handler: ErrorHandler,
    /// What happens to an output record that cannot be serialized or that
    /// the brokers refuse (too large, invalid).
    pub production_error_handler: ErrorHandler,
    /// Where this instance answers interactive queries (`host:port`).
    pub application_server: Option<String>,
    pub clients: ClientProperties,
}

/// The client properties weir sets unless the application sets them,
/// prefixed as in the configuration (`consumer.`, `producer.`).
///
/// ```
/// let backoff = weir::runtime::CLIENT_DEFAULTS.iter().find(|(key, _)| *key == "consumer.fetch.queue.backoff.ms");
/// assert_eq!(backoff, Some(&("consumer.fetch.queue.backoff.ms", "10")));
/// ```
pub const CLIENT_DEFAULTS: &[(&str, &str)] = &[
    // librdkafka stops fetching a partition whose local queue is full and
    // waits this long (1 s by default) before it looks again; a thread that
    // drains its queues faster than that would sit idle, half the time
    // under a backlog.
    ("consumer.fetch.queue.backoff.ms", "10"),
    ("producer.linger.ms", "5"),
];

/// The librdkafka client kinds weir creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientKind {
    Consumer,
    Producer,
    Admin,
}

impl Settings {
    /// A librdkafka configuration for one client kind: the bootstrap
    /// servers, the common pass-through properties, then the client's own.
    pub(crate) fn client_config(&self, kind: ClientKind) -> ClientConfig {
        let mut config = ClientConfig::new();
        // rdkafka sets librdkafka's log level from the tracing filter in
        // force when the client is made; weir reads librdkafka's warnings
        // (offset resets), so they are always reported to its callbacks,
        // which pass them on to tracing's filter.
        if matches!(
            config.log_level,
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error
        ) {
            config.set_log_level(RDKafkaLogLevel::Warning);
        }
        config.set("bootstrap.servers", &self.bootstrap_servers);
        let (own, prefix) = match kind {
            ClientKind::Consumer => (&self.clients.consumer, "consumer."),
            ClientKind::Producer => (&self.clients.producer, "producer."),
            ClientKind::Admin => (&self.clients.admin, "admin."),
        };
        for (key, value) in CLIENT_DEFAULTS {
            if let Some(key) = key.strip_prefix(prefix) {
                config.set(key, *value);
            }
        }
        for (key, value) in self.clients.common.iter().chain(own) {
            config.set(key, value);
        }
        config
    }

    /// `<state.dir>/<application.id>`: the instance's stores and checkpoints.
    pub fn app_dir(&self) -> PathBuf {
        self.state_dir.join(&self.application_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> StreamsConfig {
        StreamsConfig::new("app", "localhost:9092")
    }

    #[test]
    fn defaults_follow_the_guarantee() {
        let settings = base().settings().unwrap();
        assert_eq!(settings.guarantee, ProcessingGuarantee::AtLeastOnce);
        assert_eq!(settings.commit_interval, Duration::from_secs(30));
        let eos = base()
            .set("processing.guarantee", "exactly_once_v2")
            .settings()
            .unwrap();
        assert_eq!(eos.commit_interval, Duration::from_millis(100));
        assert_eq!(settings.store_backend, StoreBackend::RocksDb);
        assert_eq!(settings.default_error_handler, ErrorHandler::Fail);
        assert_eq!(settings.stream_threads, 1);
        assert_eq!(settings.cache_max_bytes, 64 << 20);
        let uncached = base().set("statestore.cache.max.bytes", "0").settings().unwrap();
        assert_eq!(uncached.cache_max_bytes, 0);
        assert!(!settings.merge_table_changes);
        let merging = base().set("statestore.cache.merge", "true").settings().unwrap();
        assert!(merging.merge_table_changes);
    }

    #[test]
    fn every_bad_key_and_value_is_named() {
        let error = StreamsConfig::default()
            .set("aplication.id", "x")
            .set("commit.interval.ms", "soon")
            .set("consumer.fetch.min.byte", "1")
            .set("producer.linger.ms", "-5")
            .set("consumer.group.id", "mine")
            .set("processing.guarantee", "exactly_once")
            .set("default.error.handler", "dead_letter:")
            .set("application.server", "localhost")
            .set("num.stream.threads", "0")
            .set("statestore.cache.max.bytes", "lots")
            .set("statestore.cache.merge", "yes")
            .settings()
            .unwrap_err()
            .to_string();
        for expected in [
            "unknown configuration key 'aplication.id'",
            "'application.id' is required",
            "'bootstrap.servers' is required",
            "invalid 'commit.interval.ms' \"soon\"",
            "invalid configuration key 'consumer.fetch.min.byte'",
            "invalid configuration key 'producer.linger.ms'",
            "'consumer.group.id' cannot be set",
            "invalid 'processing.guarantee' \"exactly_once\"",
            "invalid 'default.error.handler'",
            "invalid 'application.server' \"localhost\": expected host:port",
            "invalid 'num.stream.threads' \"0\"",
            "invalid 'statestore.cache.max.bytes' \"lots\"",
            "invalid 'statestore.cache.merge' \"yes\": expected true or false",
        ] {
            assert!(error.contains(expected), "missing {expected:?} in: {error}");
        }
    }

    #[test]
    fn a_delivery_timeout_must_not_outlast_a_stalled_members_session() {
        let settings = base()
            .set("consumer.session.timeout.ms", "6000")
            .set("consumer.heartbeat.interval.ms", "500");
        assert_eq!(settings.settings().unwrap().clients.max_delivery_ms(), 5_500);
        let error = settings
            .clone()
            .set("producer.message.timeout.ms", "30000")
            .settings()
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("'message.timeout.ms' (30000)") && error.contains("(5500)"),
            "{error}"
        );
        assert!(settings.clone().set("message.timeout.ms", "5000").settings().is_ok());
        let exactly_once = settings.set("processing.guarantee", "exactly_once_v2");
        assert!(exactly_once
            .set("producer.message.timeout.ms", "30000")
            .settings()
            .is_ok());
    }

    #[test]
    fn librdkafka_properties_pass_through_to_their_clients() {
        let settings = base()
            .set("security.protocol", "plaintext")
            .set("consumer.session.timeout.ms", "6000")
            .set("producer.linger.ms", "5")
            .set("admin.request.timeout.ms", "1000")
            .settings()
            .unwrap();
        let consumer = settings.client_config(ClientKind::Consumer);
        assert_eq!(consumer.get("security.protocol"), Some("plaintext"));
        assert_eq!(consumer.get("session.timeout.ms"), Some("6000"));
        assert_eq!(consumer.get("linger.ms"), None);
        let producer = settings.client_config(ClientKind::Producer);
        assert_eq!(producer.get("linger.ms"), Some("5"));
        assert_eq!(producer.get("bootstrap.servers"), Some("localhost:9092"));
        assert_eq!(
            settings.client_config(ClientKind::Admin).get("request.timeout.ms"),
            Some("1000")
        );
    }

    #[test]
    fn toml_tables_and_environment_variables_name_flat_keys() {
        let from_file = StreamsConfig::from_toml_str(
            r#"
            "application.id" = "profiles"
            bootstrap.servers = "broker:9092"
            commit.interval.ms = 250
            [consumer]
            fetch.min.bytes = 1
            "#,
        )
        .unwrap();
        assert_eq!(from_file.get("bootstrap.servers"), Some("broker:9092"));
        assert_eq!(from_file.get("consumer.fetch.min.bytes"), Some("1"));
        let env = StreamsConfig::from_env_vars([
            ("WEIR_COMMIT_INTERVAL_MS".to_string(), "50".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ]);
        let settings = from_file.merge(env).settings().unwrap();
        assert_eq!(settings.application_id, "profiles");
        assert_eq!(settings.commit_interval, Duration::from_millis(50));
        assert_eq!(settings.clients.consumer, vec![("fetch.min.bytes".into(), "1".into())]);
        let error = StreamsConfig::from_toml_str("topics = [1, 2]").unwrap_err().to_string();
        assert!(error.contains("'topics'"), "{error}");
    }

    /// Configuration comes from files and the environment: any text, and
    /// any value for any key, is a configuration or an error.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn key() -> impl Strategy<Value = String> {
            let known: Vec<&'static str> = WEIR_KEYS
                .iter()
                .map(|(k, _)| *k)
                .chain([
                    "session.timeout.ms",
                    "heartbeat.interval.ms",
                    "message.timeout.ms",
                    "consumer.session.timeout.ms",
                    "producer.linger.ms",
                    "group.id",
                    "sasl.password",
                ])
                .collect();
            prop_oneof![3 => proptest::sample::select(known).prop_map(str::to_string), 1 => "[a-z.]{0,20}"]
        }

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                proptest::sample::select(vec![
                    "",
                    "0",
                    "-1",
                    "1",
                    "18446744073709551615",
                    "18446744073709551616",
                    "-9223372036854775808",
                    "1e9",
                    "true",
                    "exactly_once_v2",
                    "dead_letter",
                    "dead_letter:",
                    "in_memory",
                    "host:99999",
                    "::",
                ])
                .prop_map(str::to_string),
                "\\PC{0,12}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4_000))]

            #[test]
            fn any_text_is_a_configuration_or_an_error(text in "\\PC{0,80}") {
                if let Ok(config) = StreamsConfig::from_toml_str(&text) {
                    let _ = config.settings();
                }
            }

            #[test]
            fn any_value_of_any_key_is_a_setting_or_an_error(entries in proptest::collection::vec((key(), value()), 0..8)) {
                let config = entries.into_iter().fold(base(), |config, (k, v)| config.set(k, v));
                let _ = config.settings();
                let table: toml::Table = config
                    .properties
                    .iter()
                    .map(|(k, v)| (k.clone(), toml::Value::String(v.clone())))
                    .collect();
                let parsed = StreamsConfig::from_toml_str(&toml::to_string(&table).unwrap());
                prop_assert_eq!(parsed.map(|c| c.properties).ok(), Some(config.properties));
            }
        }
    }
}
