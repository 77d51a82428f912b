//! `TopologyTestDriver`: run a topology without a broker, deterministically.
//!
//! The driver keeps an in-memory log per topic (with partitions and
//! offsets), creates one task per (sub-topology, partition) exactly as the
//! Kafka runtime does, and processes every record it is given at once:
//! records written to a topic that the topology reads (repartition topics,
//! or a user topic read again downstream) are processed in turn, in order,
//! before the pipe call returns. Every output, repartition, changelog and
//! dead-letter topic can be read back, and every store inspected.
//!
//! ```
//! use weir::{StreamsBuilder, Consumed, Produced, serde::{Json, Utf8}};
//! use weir::testing::TopologyTestDriver;
//!
//! let builder = StreamsBuilder::new();
//! builder
//!     .stream("in", Consumed::with(Utf8, Json::<i32>::new()))
//!     .map_values(|n| n * 10)
//!     .to("out", Produced::with(Utf8, Json::<i32>::new()));
//! let driver = TopologyTestDriver::new(builder.build().unwrap()).unwrap();
//! let input = driver.input_topic("in", Utf8, Json::<i32>::new());
//! let output = driver.output_topic("out", Utf8, Json::<i32>::new());
//! input.pipe("a".to_string(), 4).unwrap();
//! assert_eq!(output.read_key_values().unwrap(), vec![("a".to_string(), Some(40))]);
//! ```

pub mod debezium;
pub mod kafka;
pub mod schema_registry;

use crate::enrich::{self, AnswerWait};
use crate::error::WeirError;
use crate::error_handler::ErrorHandler;
use crate::metrics::{RuntimeMetrics, TaskMetrics};
use crate::partition::partition_for_key;
use crate::record::{Header, OutputRecord, RawRecord};
use crate::runtime::{GlobalStore, GlobalStores, Task, TaskId, TaskSettings, DEFAULT_CACHE_MAX_BYTES};
use crate::serde::{Serde, SerdeRef};
use crate::state::{CacheBudget, InMemoryStores, RocksDbConfig, RocksDbStores, StoreSupplier};
use crate::topology::{changelog_topic, TopicRef, Topology};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hash;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which store backend the driver's tasks use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestStores {
    InMemory,
    /// RocksDB in a temporary directory that the driver removes when dropped.
    RocksDb(RocksDbConfig),
}

/// Settings of a [`TopologyTestDriver`].
#[derive(Debug, Clone)]
pub struct TestDriverConfig {
    pub application_id: String,
    /// Partition counts of user topics; others have `default_partitions`.
    /// Internal topics get the counts the topology implies.
    pub partitions: BTreeMap<String, i32>,
    pub default_partitions: i32,
    pub stores: TestStores,
    pub default_error_handler: ErrorHandler,
    /// What sinks do with records that cannot be serialized.
    pub production_error_handler: ErrorHandler,
    /// How long a pipe waits for enrichments to answer before it fails
    /// (default 30 s).
    pub async_timeout: Duration,
    /// As `statestore.cache.merge` in a running application: tables' changes
    /// wait in the store caches for [`TopologyTestDriver::commit`], and the
    /// consecutive updates of a key in between reach downstream as one
    /// change. Off by default: every update is passed on at once.
    pub merge_table_changes: bool,
}

impl Default for TestDriverConfig {
    fn default() -> Self {
        TestDriverConfig {
            application_id: "test-app".to_string(),
            partitions: BTreeMap::new(),
            default_partitions: 1,
            stores: TestStores::InMemory,
            default_error_handler: ErrorHandler::Fail,
            production_error_handler: ErrorHandler::Fail,
            async_timeout: Duration::from_secs(30),
            merge_table_changes: false,
        }
    }
}

impl TestDriverConfig {
    pub fn partitions(mut self, topic: &str, partitions: i32) -> Self {
        self.partitions.insert(topic.to_string(), partitions);
        self
    }

    pub fn default_partitions(mut self, partitions: i32) -> Self {
        self.default_partitions = partitions;
        self
    }

    pub fn stores(mut self, stores: TestStores) -> Self {
        self.stores = stores;
        self
    }

    pub fn application_id(mut self, id: impl Into<String>) -> Self {
        self.application_id = id.into();
        self
    }

    pub fn default_error_handler(mut self, handler: ErrorHandler) -> Self {
        self.default_error_handler = handler;
        self
    }

    pub fn production_error_handler(mut self, handler: ErrorHandler) -> Self {
        self.production_error_handler = handler;
        self
    }

    pub fn async_timeout(mut self, timeout: Duration) -> Self {
        self.async_timeout = timeout;
        self
    }

    pub fn merge_table_changes(mut self, merge: bool) -> Self {
        self.merge_table_changes = merge;
        self
    }
}

/// A record as the driver takes it in or hands it out.
#[derive(Debug, Clone, PartialEq)]
pub struct TestRecord<K, V> {
    pub key: K,
    /// `None` is a null value (a tombstone).
    pub value: Option<V>,
    pub timestamp: i64,
    /// On input: `None` lets the default partitioner choose. On output: the
    /// partition the record was written to.
    pub partition: Option<i32>,
    pub headers: Vec<Header>,
}

impl<K, V> TestRecord<K, V> {
    pub fn new(key: K, value: Option<V>) -> Self {
        TestRecord {
            key,
            value,
            timestamp: 0,
            partition: None,
            headers: Vec::new(),
        }
    }

    pub fn at(mut self, timestamp: i64) -> Self {
        self.timestamp = timestamp;
        self
    }

    pub fn on_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
}

struct LoggedRecord {
    partition: i32,
    record: RawRecord,
}

#[derive(Default)]
struct TopicLog {
    next_offsets: Vec<i64>,
    records: Vec<LoggedRecord>,
    round_robin: i32,
}

struct DriverState {
    topology: Topology,
    config: TestDriverConfig,
    /// Partition counts of every topic the topology reads or writes.
    partitions: HashMap<String, i32>,
    /// Source topic → the sub-topology that reads it.
    routes: HashMap<String, usize>,
    tasks: BTreeMap<TaskId, Task>,
    /// Global table topic → its store, written as records are piped.
    globals: HashMap<String, GlobalStore>,
    /// Counts the records global tables skip.
    global_metrics: RuntimeMetrics,
    /// The wall clock punctuations see, in milliseconds since the epoch.
    wall_clock_ms: i64,
    logs: HashMap<String, TopicLog>,
    // Dropped after the tasks (declared later), so stores close first.
    _state_dir: Option<tempfile::TempDir>,
}

/// Runs a topology in process; see the [module documentation](self).
pub struct TopologyTestDriver {
    state: Rc<RefCell<DriverState>>,
}

impl TopologyTestDriver {
    /// A driver with [`TestDriverConfig::default`]: one partition per topic,
    /// in-memory stores, failing on bad input.
    pub fn new(topology: Topology) -> Result<Self, WeirError> {
        Self::with_config(topology, TestDriverConfig::default())
    }

    /// Checks that inputs processed together have equal partition counts and
    /// creates every task.
    pub fn with_config(topology: Topology, config: TestDriverConfig) -> Result<Self, WeirError> {
        if config.default_partitions < 1 || config.partitions.values().any(|&p| p < 1) {
            return Err(WeirError::Config("a topic needs at least one partition".into()));
        }
        let app = config.application_id.clone();
        let plan = topology.partition_plan(&app, &mut |topic| {
            Ok(*config.partitions.get(topic).unwrap_or(&config.default_partitions))
        })?;
        let task_partitions = &plan.tasks;
        let mut partitions = HashMap::new();
        let mut routes = HashMap::new();
        for sub in topology.subtopologies() {
            for topic in &sub.source_topics {
                partitions.insert(topic.resolve(&app), task_partitions[sub.id]);
                routes.insert(topic.resolve(&app), sub.id);
            }
        }
        for topic in &plan.internal_topics {
            partitions.insert(topic.name.clone(), topic.partitions);
        }
        for (topic, &count) in &config.partitions {
            partitions.entry(topic.clone()).or_insert(count);
        }
        let (supplier, state_dir): (Box<dyn StoreSupplier>, _) = match config.stores {
            TestStores::InMemory => (Box::new(InMemoryStores), None),
            TestStores::RocksDb(rocks) => {
                let dir = tempfile::tempdir()
                    .map_err(|e| WeirError::Other(format!("cannot create a state directory: {e}")))?;
                (Box::new(RocksDbStores::new(dir.path().join(&app), rocks)), Some(dir))
            }
        };
        let mut globals = HashMap::new();
        let mut readers = HashMap::new();
        for def in topology.globals() {
            let store = supplier.open("global", &def.store)?;
            readers.insert(def.store.clone(), store.reader());
            partitions.entry(def.topic.clone()).or_insert(config.default_partitions);
            globals.insert(
                def.topic.clone(),
                GlobalStore {
                    def: def.clone(),
                    store,
                },
            );
        }
        let global_stores = GlobalStores::new(readers);
        let wall_clock_ms = crate::record::now_ms();
        let cache = CacheBudget::new(DEFAULT_CACHE_MAX_BYTES, config.merge_table_changes);
        let settings = TaskSettings {
            application_id: &app,
            stores: supplier.as_ref(),
            default_error_handler: &config.default_error_handler,
            production_error_handler: &config.production_error_handler,
            cache: &cache,
            global_stores: &global_stores,
        };
        let mut tasks = BTreeMap::new();
        for sub in topology.subtopologies() {
            for partition in 0..task_partitions[sub.id] {
                let id = TaskId {
                    subtopology: sub.id,
                    partition,
                };
                let mut task = Task::new(&topology, id, &settings)?;
                // Wall-clock punctuations count from the driver's start.
                task.punctuate_wall_clock(wall_clock_ms)?;
                tasks.insert(id, task);
            }
        }
        Ok(TopologyTestDriver {
            state: Rc::new(RefCell::new(DriverState {
                topology,
                config,
                partitions,
                routes,
                tasks,
                globals,
                global_metrics: RuntimeMetrics::default(),
                wall_clock_ms,
                logs: HashMap::new(),
                _state_dir: state_dir,
            })),
        })
    }

    /// A handle to write records to `topic`.
    pub fn input_topic<K: 'static, V: 'static>(
        &self,
        topic: &str,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) -> TestInputTopic<K, V> {
        TestInputTopic {
            state: self.state.clone(),
            topic: topic.to_string(),
            key_serde: Arc::new(key_serde),
            value_serde: Arc::new(value_serde),
        }
    }

    /// A handle to read what arrived on `topic` (user, repartition,
    /// changelog or dead-letter topic alike), from its beginning.
    pub fn output_topic<K: 'static, V: 'static>(
        &self,
        topic: &str,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) -> TestOutputTopic<K, V> {
        TestOutputTopic {
            state: self.state.clone(),
            topic: topic.to_string(),
            key_serde: Arc::new(key_serde),
            value_serde: Arc::new(value_serde),
            position: Cell::new(0),
        }
    }

    /// The full name of a store's changelog topic in this driver.
    pub fn changelog_topic(&self, store: &str) -> String {
        changelog_topic(&self.state.borrow().config.application_id, store)
    }

    /// The full name of a repartition topic in this driver.
    pub fn repartition_topic(&self, name: &str) -> String {
        TopicRef::Repartition(name.to_string()).resolve(&self.state.borrow().config.application_id)
    }

    /// The partition count the driver uses for `topic`.
    pub fn partitions_of(&self, topic: &str) -> i32 {
        self.state.borrow().partition_count(topic)
    }

    /// The contents of a store, over all partitions.
    pub fn store_contents<K: Eq + Hash, V>(
        &self,
        store: &str,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) -> Result<HashMap<K, V>, WeirError> {
        let state = self.state.borrow();
        let layout = state.topology.store_layout(store).ok_or_else(|| {
            let known: Vec<&str> = state.topology.stores().collect();
            WeirError::Other(format!("no store '{store}'; the topology has [{}]", known.join(", ")))
        })?;
        let skip = layout.value_offset();
        let mut contents = HashMap::new();
        let mut failure = None;
        for task in state.tasks.values() {
            task.for_each_in_store(store, &mut |k, v| {
                let decoded = key_serde
                    .deserialize(store, Some(k))
                    .and_then(|k| Ok((k, value_serde.deserialize(store, v.get(skip..))?)));
                match decoded {
                    Ok((k, v)) => {
                        contents.insert(k, v);
                    }
                    Err(e) => failure = Some(e),
                }
            })?;
        }
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(contents),
        }
    }

    /// The counters of all tasks, added up.
    pub fn metrics(&self) -> TaskMetrics {
        let mut total = TaskMetrics::default();
        for task in self.state.borrow().tasks.values() {
            total.merge(task.metrics());
        }
        total
    }

    /// The topology the driver runs, for its description and its
    /// enrichments' metrics.
    pub fn topology(&self) -> Topology {
        self.state.borrow().topology.clone()
    }

    /// Flushes every store (as a commit would).
    pub fn flush(&self) -> Result<(), WeirError> {
        self.state.borrow_mut().tasks.values_mut().try_for_each(Task::flush)
    }

    /// Passes on the table changes the store caches deferred, and
    /// processes what they lead to, as a commit of a running application
    /// does first; only needed with
    /// [`TestDriverConfig::merge_table_changes`].
    ///
    /// ```
    /// use weir::serde::{Json, Utf8};
    /// use weir::testing::{TestDriverConfig, TestRecord, TopologyTestDriver};
    /// use weir::{Consumed, Produced, StreamsBuilder};
    ///
    /// let builder = StreamsBuilder::new();
    /// builder
    ///     .table("prefs", Consumed::with(Utf8, Json::<bool>::new()))
    ///     .to("out", Produced::with(Utf8, Json::new()));
    /// let config = TestDriverConfig::default().merge_table_changes(true);
    /// let driver = TopologyTestDriver::with_config(builder.build().unwrap(), config).unwrap();
    /// let prefs = driver.input_topic("prefs", Utf8, Json::<bool>::new());
    /// prefs.pipe_all([true, false, true].map(|dark| TestRecord::new("u1".to_string(), Some(dark)))).unwrap();
    /// let out = driver.output_topic("out", Utf8, Json::<bool>::new());
    /// assert!(out.read_key_values().unwrap().is_empty(), "deferred until the commit");
    /// driver.commit().unwrap();
    /// assert_eq!(out.read_key_values().unwrap(), [("u1".to_string(), Some(true))]);
    /// ```
    pub fn commit(&self) -> Result<(), WeirError> {
        self.state.borrow_mut().commit()
    }

    /// Moves the driver's wall clock on by `by` and runs the wall-clock
    /// punctuations that come due, then what their outputs lead to. The
    /// clock starts at the driver's creation and moves only here: stream
    /// time moves with the records' timestamps, wall-clock time with this.
    pub fn advance_wall_clock(&self, by: Duration) -> Result<(), WeirError> {
        self.state.borrow_mut().advance_wall_clock(by)
    }

    /// The driver's wall clock, in milliseconds since the epoch.
    pub fn wall_clock_ms(&self) -> i64 {
        self.state.borrow().wall_clock_ms
    }
}

impl DriverState {
    fn advance_wall_clock(&mut self, by: Duration) -> Result<(), WeirError> {
        self.wall_clock_ms += by.as_millis() as i64;
        let mut queue = VecDeque::new();
        let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        for id in ids {
            let now = self.wall_clock_ms;
            self.tasks.get_mut(&id).expect("listed").punctuate_wall_clock(now)?;
            self.route_outputs(id, &mut queue)?;
        }
        self.process_queue(queue)?;
        self.settle_async()?;
        self.tasks.values_mut().try_for_each(Task::write_back)
    }

    fn partition_count(&self, topic: &str) -> i32 {
        *self.partitions.get(topic).unwrap_or(&self.config.default_partitions)
    }

    /// Appends to a topic's log, choosing the partition like Kafka's
    /// default partitioner; returns where the record landed.
    fn append(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        record: RawRecord,
    ) -> Result<(i32, i64, usize), WeirError> {
        let count = self.partition_count(topic);
        let log = self.logs.entry(topic.to_string()).or_default();
        if log.next_offsets.is_empty() {
            log.next_offsets = vec![0; count as usize];
        }
        let partition = match (partition, &record.key) {
            (Some(p), _) if (0..count).contains(&p) => p,
            (Some(p), _) => {
                return Err(WeirError::Config(format!(
                    "topic '{topic}' has {count} partitions; there is no partition {p}"
                )))
            }
            (None, Some(key)) => partition_for_key(key, count),
            (None, None) => {
                log.round_robin = (log.round_robin + 1) % count;
                log.round_robin
            }
        };
        let offset = log.next_offsets[partition as usize];
        log.next_offsets[partition as usize] += 1;
        log.records.push(LoggedRecord { partition, record });
        Ok((partition, offset, log.records.len() - 1))
    }

    /// Writes records, processes them and everything they lead to,
    /// enrichments included: it returns once no record waits for an answer.
    /// Records written together are enriched concurrently.
    fn pipe(&mut self, topic: &str, records: Vec<(Option<i32>, RawRecord)>) -> Result<(), WeirError> {
        if let Some(global) = self.globals.get_mut(topic) {
            let written = records.iter().map(|(_, r)| (r.key.as_deref(), r.value.as_deref()));
            global.apply(written, &self.global_metrics)?;
        }
        let mut queue = VecDeque::new();
        for (partition, record) in records {
            let (partition, offset, index) = self.append(topic, partition, record)?;
            if self.routes.contains_key(topic) {
                queue.push_back((topic.to_string(), partition, offset, index));
            }
        }
        let processed = self.process_queue(queue).and_then(|()| self.settle_async());
        // As the stream thread does after a batch: the stores hold the
        // writes before anyone reads them from outside.
        let written_back = self.tasks.values_mut().try_for_each(Task::write_back);
        processed.and(written_back)
    }

    /// Releases every task's deferred table changes and processes what they
    /// lead to (through repartition topics, other tasks' deferred changes),
    /// until none is left.
    fn commit(&mut self) -> Result<(), WeirError> {
        loop {
            let mut queue = VecDeque::new();
            let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
            for id in ids {
                self.tasks.get_mut(&id).expect("listed").release_deferred()?;
                self.route_outputs(id, &mut queue)?;
            }
            if queue.is_empty() {
                return self.tasks.values_mut().try_for_each(Task::write_back);
            }
            self.process_queue(queue)?;
            self.settle_async()?;
        }
    }

    /// Processes queued input records, and the records they write to topics
    /// the topology reads, until none is left.
    fn process_queue(&mut self, mut queue: VecDeque<(String, i32, i64, usize)>) -> Result<(), WeirError> {
        while let Some((topic, partition, offset, index)) = queue.pop_front() {
            let task_id = TaskId {
                subtopology: self.routes[&topic],
                partition,
            };
            let record = self.logs[&topic].records[index].record.clone();
            let task = self
                .tasks
                .get_mut(&task_id)
                .expect("a task per sub-topology and partition");
            if let Err(error) = task.process(&topic, offset, &record.as_input()) {
                // What the failed record produced before failing is not sent,
                // as a runtime would not commit it.
                task.drain_output();
                return Err(error);
            }
            self.route_outputs(task_id, &mut queue)?;
        }
        Ok(())
    }

    /// Appends a task's outputs to their topics, queueing those the topology reads.
    fn route_outputs(
        &mut self,
        task: TaskId,
        queue: &mut VecDeque<(String, i32, i64, usize)>,
    ) -> Result<(), WeirError> {
        let outputs: Vec<OutputRecord> = self
            .tasks
            .get_mut(&task)
            .map(|t| t.drain_output().collect())
            .unwrap_or_default();
        for OutputRecord {
            topic,
            partition,
            record,
            ..
        } in outputs
        {
            let (partition, offset, index) = self.append(&topic, partition, record)?;
            if self.routes.contains_key(&*topic) {
                queue.push_back((topic.to_string(), partition, offset, index));
            }
        }
        Ok(())
    }

    /// Waits for the answers of every record held by an enrichment and
    /// processes what they lead to.
    fn settle_async(&mut self) -> Result<(), WeirError> {
        let deadline = Instant::now() + self.config.async_timeout;
        loop {
            let answers_seen = enrich::ProcessAnswers.mark();
            let mut queue = VecDeque::new();
            let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
            for id in ids {
                let task = self.tasks.get_mut(&id).expect("listed");
                if task.held_records() > 0 && task.complete_async()? > 0 {
                    self.route_outputs(id, &mut queue)?;
                }
            }
            self.process_queue(queue)?;
            if self.tasks.values().all(|t| t.held_records() == 0) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let held: usize = self.tasks.values().map(Task::held_records).sum();
                return Err(WeirError::Other(format!(
                    "{held} record(s) still wait for enrichment after {:?} (TestDriverConfig::async_timeout)",
                    self.config.async_timeout
                )));
            }
            enrich::ProcessAnswers.wait(answers_seen, Duration::from_millis(10));
        }
    }
}

/// Writes typed records to a topic of a [`TopologyTestDriver`].
pub struct TestInputTopic<K, V> {
    state: Rc<RefCell<DriverState>>,
    topic: String,
    key_serde: SerdeRef<K>,
    value_serde: SerdeRef<V>,
}

impl<K: 'static, V: 'static> TestInputTopic<K, V> {
    /// Writes `value` under `key` at timestamp 0.
    pub fn pipe(&self, key: K, value: V) -> Result<(), WeirError> {
        self.pipe_record(TestRecord::new(key, Some(value)))
    }

    /// Writes a tombstone (a null value) for `key`.
    pub fn pipe_tombstone(&self, key: K) -> Result<(), WeirError> {
        self.pipe_record(TestRecord::new(key, None))
    }

    pub fn pipe_record(&self, record: TestRecord<K, V>) -> Result<(), WeirError> {
        self.pipe_all([record])
    }

    /// Writes bytes as they are, for example input that cannot be deserialized.
    pub fn pipe_raw(
        &self,
        partition: Option<i32>,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        timestamp: i64,
        headers: Vec<Header>,
    ) -> Result<(), WeirError> {
        let record = RawRecord {
            key,
            value,
            timestamp,
            headers,
        };
        self.state.borrow_mut().pipe(&self.topic, vec![(partition, record)])
    }

    /// Writes several records before waiting for enrichments, so that
    /// records of different keys are looked up concurrently, as in a
    /// running application.
    pub fn pipe_all(&self, records: impl IntoIterator<Item = TestRecord<K, V>>) -> Result<(), WeirError> {
        let raw = records
            .into_iter()
            .map(|record| {
                let key = self.key_serde.to_bytes(&self.topic, &record.key)?;
                let value = match &record.value {
                    Some(value) => self.value_serde.to_bytes(&self.topic, value)?,
                    None => None,
                };
                let raw = RawRecord {
                    key,
                    value,
                    timestamp: record.timestamp,
                    headers: record.headers,
                };
                Ok((record.partition, raw))
            })
            .collect::<Result<Vec<_>, WeirError>>()?;
        self.state.borrow_mut().pipe(&self.topic, raw)
    }
}

/// Reads typed records from a topic of a [`TopologyTestDriver`], each
/// record once, in the order they were written.
pub struct TestOutputTopic<K, V> {
    state: Rc<RefCell<DriverState>>,
    topic: String,
    key_serde: SerdeRef<K>,
    value_serde: SerdeRef<V>,
    position: Cell<usize>,
}

impl<K: 'static, V: 'static> TestOutputTopic<K, V> {
    /// The records written since the last read.
    pub fn read_records(&self) -> Result<Vec<TestRecord<K, V>>, WeirError> {
        let state = self.state.borrow();
        let Some(log) = state.logs.get(&self.topic) else {
            return Ok(Vec::new());
        };
        let records = log.records[self.position.get()..]
            .iter()
            .map(|logged| {
                let raw = &logged.record;
                Ok(TestRecord {
                    key: self.key_serde.deserialize(&self.topic, raw.key.as_deref())?,
                    value: match &raw.value {
                        Some(bytes) => Some(self.value_serde.deserialize(&self.topic, Some(bytes))?),
                        None => None,
                    },
                    timestamp: raw.timestamp,
                    partition: Some(logged.partition),
                    headers: raw.headers.clone(),
                })
            })
            .collect::<Result<Vec<_>, WeirError>>()?;
        self.position.set(log.records.len());
        Ok(records)
    }

    /// Keys and values (`None`: tombstone) written since the last read.
    pub fn read_key_values(&self) -> Result<Vec<(K, Option<V>)>, WeirError> {
        Ok(self.read_records()?.into_iter().map(|r| (r.key, r.value)).collect())
    }

    /// The last value per key of the records since the last read, without
    /// the keys whose last record is a tombstone: what a compacted topic
    /// holds once compacted.
    pub fn read_key_values_to_map(&self) -> Result<HashMap<K, V>, WeirError>
    where
        K: Eq + Hash,
    {
        let mut map = HashMap::new();
        for (key, value) in self.read_key_values()? {
            match value {
                Some(value) => map.insert(key, value),
                None => map.remove(&key),
            };
        }
        Ok(map)
    }

    /// Whether every record has been read.
    pub fn is_empty(&self) -> bool {
        let state = self.state.borrow();
        state.logs.get(&self.topic).map_or(0, |l| l.records.len()) <= self.position.get()
    }
}
