//! A task: one sub-topology instantiated for one partition.

use super::GlobalStores;
use crate::error::WeirError;
use crate::error_handler::ErrorHandler;
use crate::metrics::TaskMetrics;
use crate::processor::enrich::AsyncNode;
use crate::processor::source::RawSource;
use crate::processor::{ProcessorContext, RecordCollector, StoreTable};
use crate::record::{now_ms, InputRecord, OutputRecord, SourceMetadata};
use crate::serde::SerdeRef;
use crate::state::handle::Changelog;
use crate::state::{CacheBudget, StoreHandle, StoreReader, StoreSize, StoreSupplier, TypedStore};
use crate::topology::{changelog_topic, NodeFactory, NodeKind, TopicRef, Topology};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Names a task: its sub-topology and partition, printed as `1_4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    pub subtopology: usize,
    pub partition: i32,
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.subtopology, self.partition)
    }
}

/// What a task needs from the application that runs it.
pub struct TaskSettings<'a> {
    pub application_id: &'a str,
    pub stores: &'a dyn StoreSupplier,
    /// The error handler of sources that do not set their own.
    pub default_error_handler: &'a ErrorHandler,
    /// What sinks do with records that cannot be serialized.
    pub production_error_handler: &'a ErrorHandler,
    /// The store cache memory of the thread that runs the tasks.
    pub cache: &'a Rc<CacheBudget>,
    /// The instance's global tables.
    pub global_stores: &'a GlobalStores,
}

/// Handed to node factories while a task is instantiated.
pub(crate) struct TaskBuilder<'a> {
    id: TaskId,
    settings: &'a TaskSettings<'a>,
    stores: BTreeMap<String, Rc<RefCell<StoreHandle>>>,
    async_nodes: Vec<Rc<dyn AsyncNode>>,
    tables: BTreeMap<String, KeptTable>,
    punctuations: Vec<Scheduled>,
    stream_time: Rc<Cell<Option<i64>>>,
}

/// What a punctuation follows: the task's stream time (the largest record
/// timestamp it has processed, which only records move), or the wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PunctuationType {
    StreamTime,
    WallClockTime,
}

/// A node that does work on a schedule as well as on records.
pub(crate) trait Punctuator {
    /// Called once `time` (of the punctuation's kind) reaches a due point.
    fn punctuate(&self, ctx: &mut ProcessorContext<'_>, time: i64) -> Result<(), WeirError>;
}

/// A punctuation of a task, and when it is next due.
struct Scheduled {
    punctuator: Rc<dyn Punctuator>,
    kind: PunctuationType,
    interval_ms: i64,
    /// `None` until the first time of its kind is seen.
    next: Option<i64>,
}

/// A table kept in a store, beside the store, so that the task reaches both
/// without a lookup by name on every record.
struct KeptTable {
    table: Rc<dyn StoreTable>,
    store: Rc<RefCell<StoreHandle>>,
}

impl TaskBuilder<'_> {
    /// The task's instance of a store, opened on first use.
    fn store(&mut self, name: &str) -> Result<Rc<RefCell<StoreHandle>>, WeirError> {
        if let Some(handle) = self.stores.get(name) {
            return Ok(handle.clone());
        }
        let store = self.settings.stores.open(&self.id.to_string(), name)?;
        let changelog = Changelog {
            topic: changelog_topic(self.settings.application_id, name).into(),
            partition: self.id.partition,
        };
        let handle = Rc::new(RefCell::new(StoreHandle::new(
            store,
            Some(changelog),
            self.settings.cache.clone(),
        )));
        self.stores.insert(name.to_string(), handle.clone());
        Ok(handle)
    }

    /// A global table's store, which every task of the instance reads.
    pub(crate) fn global_store(&self, name: &str) -> Result<Arc<dyn StoreReader>, WeirError> {
        self.settings.global_stores.get(name)
    }

    pub(crate) fn typed_store<K: 'static, V: 'static>(
        &mut self,
        name: &str,
        key_serde: SerdeRef<K>,
        value_serde: SerdeRef<V>,
    ) -> Result<Rc<TypedStore<K, V>>, WeirError> {
        Ok(Rc::new(TypedStore::new(self.store(name)?, key_serde, value_serde)))
    }

    pub(crate) fn topic(&self, topic: &TopicRef) -> Arc<str> {
        topic.resolve(self.settings.application_id).into()
    }

    pub(crate) fn default_error_handler(&self) -> &ErrorHandler {
        self.settings.default_error_handler
    }

    pub(crate) fn production_error_handler(&self) -> &ErrorHandler {
        self.settings.production_error_handler
    }

    /// Has the task call `punctuator` every `interval` of `kind`'s time.
    pub(crate) fn schedule(&mut self, punctuator: Rc<dyn Punctuator>, kind: PunctuationType, interval: Duration) {
        self.punctuations.push(Scheduled {
            punctuator,
            kind,
            interval_ms: (interval.as_millis() as i64).max(1),
            next: None,
        });
    }

    /// The task's stream time, shared with its nodes: `None` before its
    /// first record.
    pub(crate) fn stream_time(&self) -> Rc<Cell<Option<i64>>> {
        self.stream_time.clone()
    }

    /// Lets the task drive a node whose outputs come later than its inputs.
    pub(crate) fn register_async_node(&mut self, node: Rc<dyn AsyncNode>) {
        self.async_nodes.push(node);
    }

    /// Names the table kept in `store`: it says its rows again and passes
    /// on the changes the store's cache deferred.
    pub(crate) fn keep_table(&mut self, store: &str, table: Rc<dyn StoreTable>) -> Result<(), WeirError> {
        let store_handle = self.store(store)?;
        self.tables.insert(
            store.to_string(),
            KeptTable {
                table,
                store: store_handle,
            },
        );
        Ok(())
    }
}

/// A source topic of a task: its node and its exported counter.
struct Source {
    topic: Arc<str>,
    node: Box<dyn RawSource>,
    processed: metrics::Counter,
}

/// One sub-topology running on one partition: it owns its processor
/// instances and its store partitions.
pub struct Task {
    id: TaskId,
    /// Looked up for every record, by topic name.
    sources: HashMap<Arc<str>, Source, foldhash::fast::RandomState>,
    stores: BTreeMap<String, Rc<RefCell<StoreHandle>>>,
    /// Enrichments, which hold records until their answers arrive.
    async_nodes: Vec<Rc<dyn AsyncNode>>,
    /// By store: the table kept in it.
    tables: BTreeMap<String, KeptTable>,
    punctuations: Vec<Scheduled>,
    /// The largest timestamp of the records processed; `None` before the first.
    stream_time: Rc<Cell<Option<i64>>>,
    collector: RecordCollector,
    metrics: TaskMetrics,
}

impl Task {
    /// Instantiates sub-topology `id.subtopology` for partition `id.partition`.
    pub fn new(topology: &Topology, id: TaskId, settings: &TaskSettings<'_>) -> Result<Task, WeirError> {
        let def = &topology.def;
        let sub = def
            .subtopologies
            .get(id.subtopology)
            .ok_or_else(|| WeirError::Other(format!("no sub-topology {}", id.subtopology)))?;
        let mut builder = TaskBuilder {
            id,
            settings,
            stores: BTreeMap::new(),
            async_nodes: Vec::new(),
            tables: BTreeMap::new(),
            punctuations: Vec::new(),
            stream_time: Rc::new(Cell::new(None)),
        };
        let mut instances: HashMap<usize, Box<dyn Any>> = HashMap::new();
        let mut sources = HashMap::default();
        // Children are created before their parents, which hold them.
        for &node_id in sub.nodes.iter().rev() {
            let node = &def.nodes[node_id];
            let children: Vec<&dyn Any> = sub
                .nodes
                .iter()
                .filter(|&&c| def.nodes[c].parents.contains(&node_id))
                .map(|c| instances[c].as_ref())
                .collect();
            match &node.factory {
                NodeFactory::Source(make) => {
                    let source = make(&mut builder, &children)?;
                    let NodeKind::Source { topic, .. } = &node.kind else {
                        return Err(WeirError::Other(format!(
                            "{} has a source factory but is no source",
                            node.name
                        )));
                    };
                    let topic = builder.topic(topic);
                    let processed = crate::metrics::processed_counter(&topic);
                    sources.insert(
                        topic.clone(),
                        Source {
                            topic,
                            node: source,
                            processed,
                        },
                    );
                }
                NodeFactory::Processor(make) => {
                    let instance = make(&mut builder, &children)?;
                    instances.insert(node_id, instance);
                }
            }
        }
        Ok(Task {
            id,
            sources,
            stores: builder.stores,
            async_nodes: builder.async_nodes,
            tables: builder.tables,
            punctuations: builder.punctuations,
            stream_time: builder.stream_time,
            collector: RecordCollector::default(),
            metrics: TaskMetrics::default(),
        })
    }

    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The topics this task reads.
    pub fn source_topics(&self) -> impl Iterator<Item = &str> {
        self.sources.keys().map(|t| &**t)
    }

    /// Processes one input record of `topic` (at `offset` of this task's partition).
    pub fn process(&mut self, topic: &str, offset: i64, record: &InputRecord<'_>) -> Result<(), WeirError> {
        let source = self
            .sources
            .get_mut(topic)
            .ok_or_else(|| WeirError::Other(format!("task {} does not read topic '{topic}'", self.id)))?;
        source.processed.increment(1);
        self.metrics.processed += 1;
        let metadata = SourceMetadata {
            topic: source.topic.clone(),
            partition: self.id.partition,
            offset,
        };
        let mut ctx = ProcessorContext {
            timestamp: record.timestamp,
            source: &metadata,
            collector: &mut self.collector,
            metrics: &mut self.metrics,
            republishing: false,
        };
        source
            .node
            .process_raw(&mut ctx, record)
            .map_err(|cause| located_at(&metadata, cause))?;
        // The source moved the stream time on with the record's time.
        if let Some(stream_time) = self.stream_time.get() {
            self.punctuate(PunctuationType::StreamTime, stream_time)?;
        }
        self.release_deferred_if_full()
    }

    /// The largest timestamp of the records this task processed, `None`
    /// before the first.
    pub fn stream_time(&self) -> Option<i64> {
        self.stream_time.get()
    }

    /// Runs the wall-clock punctuations due at `now_ms`. Their outputs join
    /// [`Task::drain_output`].
    pub fn punctuate_wall_clock(&mut self, now_ms: i64) -> Result<(), WeirError> {
        match self.punctuate(PunctuationType::WallClockTime, now_ms)? {
            true => self.release_deferred_if_full(),
            false => Ok(()),
        }
    }

    /// Runs each punctuation of `kind` that `now` reached, once, and moves
    /// it to the first due point after `now` (points missed meanwhile are
    /// skipped, not caught up); returns whether any ran. It is called after
    /// every record, so it allocates nothing unless one is due.
    fn punctuate(&mut self, kind: PunctuationType, now: i64) -> Result<bool, WeirError> {
        let mut ran = false;
        for scheduled in self.punctuations.iter_mut().filter(|s| s.kind == kind) {
            let next = *scheduled.next.get_or_insert(now + scheduled.interval_ms);
            if now < next {
                continue;
            }
            scheduled.next = Some(now - (now - next) % scheduled.interval_ms + scheduled.interval_ms);
            ran = true;
            let source = SourceMetadata {
                topic: Arc::from("(punctuation)"),
                partition: self.id.partition,
                offset: -1,
            };
            let mut ctx = ProcessorContext {
                timestamp: now,
                source: &source,
                collector: &mut self.collector,
                metrics: &mut self.metrics,
                republishing: false,
            };
            scheduled.punctuator.punctuate(&mut ctx, now).map_err(|cause| {
                WeirError::Other(format!("a {kind:?} punctuation of task {} failed: {cause}", self.id))
            })?;
        }
        Ok(ran)
    }

    /// Passes on the records whose asynchronous work (enrichment) finished
    /// since the last call; returns how many. Their outputs join
    /// [`Task::drain_output`].
    pub fn complete_async(&mut self) -> Result<u64, WeirError> {
        let mut released = 0;
        for node in &self.async_nodes {
            released += node.complete(&mut self.collector, &mut self.metrics)?;
        }
        self.release_deferred_if_full()?;
        Ok(released)
    }

    /// Passes on every table change the stores' caches deferred (see
    /// [`crate::state`]), with its changelog record, and what follows from
    /// them downstream, until no store of the task defers any: the task
    /// calls it before every commit, so that a commit's changelog offsets
    /// cover every write of the input records before its input offsets.
    /// The outputs join [`Task::drain_output`].
    pub fn release_deferred(&mut self) -> Result<(), WeirError> {
        loop {
            let mut released_any = false;
            for KeptTable { table, store } in self.tables.values() {
                let released = store.borrow_mut().release(&mut self.collector)?;
                released_any |= !released.is_empty();
                // Each key's change is passed on alone: downstream of a
                // table, only its own key is read from it.
                for change in released {
                    let mut ctx = ProcessorContext {
                        timestamp: change.timestamp,
                        source: &change.source,
                        collector: &mut self.collector,
                        metrics: &mut self.metrics,
                        republishing: false,
                    };
                    table
                        .forward_released(&mut ctx, &change.key, change.new.as_deref(), change.old.as_deref())
                        .map_err(|cause| located_at(&change.source, cause))?;
                }
            }
            // What was released may have written tables downstream.
            if !released_any {
                return Ok(());
            }
        }
    }

    /// Releases the deferred changes early when one store's have outgrown
    /// their share of the cache.
    fn release_deferred_if_full(&mut self) -> Result<(), WeirError> {
        match self.tables.values().any(|kept| kept.store.borrow().deferred_full()) {
            true => self.release_deferred(),
            false => Ok(()),
        }
    }

    /// Records held by asynchronous nodes, not yet passed on.
    pub fn held_records(&self) -> usize {
        self.async_nodes.iter().map(|n| n.held()).sum()
    }

    /// Whether an asynchronous node holds as many records as it allows, so
    /// that input should pause.
    pub fn backpressured(&self) -> bool {
        self.async_nodes.iter().any(|n| n.backpressured())
    }

    /// Takes the records produced since the last call: sink outputs,
    /// repartition records, changelog writes and dead letters, in order.
    pub fn drain_output(&mut self) -> std::vec::Drain<'_, OutputRecord> {
        self.collector.drain()
    }

    /// Flushes every store of the task.
    pub fn flush(&mut self) -> Result<(), WeirError> {
        self.stores.values().try_for_each(|s| s.borrow_mut().flush())
    }

    /// Writes the writes the stores' caches hold to the stores, a batch
    /// per store.
    pub fn write_back(&mut self) -> Result<(), WeirError> {
        self.stores.values().try_for_each(|s| s.borrow_mut().write_back())
    }

    /// The task's stores, each with its changelog topic.
    pub fn stores(&self) -> impl Iterator<Item = (&str, Option<Arc<str>>)> {
        self.stores
            .iter()
            .map(|(name, handle)| (name.as_str(), handle.borrow().changelog_topic().cloned()))
    }

    /// The task's stores, each with a reader for other threads.
    pub fn store_readers(&self) -> impl Iterator<Item = (&str, Arc<dyn StoreReader>)> {
        self.stores
            .iter()
            .map(|(name, handle)| (name.as_str(), handle.borrow().reader()))
    }

    /// The task's stores, each with its size now.
    pub fn store_sizes(&self) -> impl Iterator<Item = (&str, StoreSize)> {
        self.stores
            .iter()
            .map(|(name, handle)| (name.as_str(), handle.borrow().size()))
    }

    /// Writes records read back from a store's changelog into the store.
    pub fn restore(
        &mut self,
        store: &str,
        writes: &mut dyn Iterator<Item = crate::state::StoreWrite<'_>>,
    ) -> Result<(), WeirError> {
        let handle = self
            .stores
            .get(store)
            .ok_or_else(|| WeirError::Other(format!("task {} has no store '{store}'", self.id)))?;
        handle.borrow_mut().restore(writes)
    }

    /// Writes the current value of each of `keys` in `store` to the store's
    /// changelog again (a deletion where the store has no value), without
    /// changing the store: what a restore writes over an uncommitted tail.
    pub fn relog(&mut self, store: &str, keys: &mut dyn Iterator<Item = &[u8]>) -> Result<(), WeirError> {
        let handle = self
            .stores
            .get(store)
            .ok_or_else(|| WeirError::Other(format!("task {} has no store '{store}'", self.id)))?;
        let mut handle = handle.borrow_mut();
        for key in keys {
            handle.relog(&mut self.collector, key)?;
        }
        Ok(())
    }

    /// Has every table of the task say its current row again, downstream,
    /// for each key of `keys` (raw, as `store` holds them; see
    /// [`StoreTable`]). A store without a table (an enrichment's cache) has
    /// no keys to give.
    pub(crate) fn republish(&mut self, store: &str, keys: &mut dyn Iterator<Item = &[u8]>) -> Result<(), WeirError> {
        let Some(KeptTable { table: decoder, .. }) = self.tables.get(store) else {
            return Ok(());
        };
        let keys: Vec<Box<dyn Any>> = keys.map(|key| decoder.decode(key)).collect::<Result<_, _>>()?;
        let changelog = self
            .stores
            .get(store)
            .and_then(|h| h.borrow().changelog_topic().cloned());
        let source = SourceMetadata {
            topic: changelog.unwrap_or_else(|| Arc::from(store)),
            partition: self.id.partition,
            offset: -1,
        };
        let mut ctx = ProcessorContext {
            timestamp: now_ms(),
            source: &source,
            collector: &mut self.collector,
            metrics: &mut self.metrics,
            republishing: true,
        };
        for KeptTable { table, .. } in self.tables.values() {
            for key in &keys {
                table.republish(&mut ctx, key.as_ref())?;
            }
        }
        Ok(())
    }

    pub fn metrics(&self) -> &TaskMetrics {
        &self.metrics
    }

    /// Visits the raw entries of one of the task's stores, in key order.
    pub fn for_each_in_store(&self, store: &str, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<bool, WeirError> {
        match self.stores.get(store) {
            Some(handle) => {
                handle.borrow_mut().for_each(visit)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// `cause`, naming the input record it happened at unless it does already.
fn located_at(source: &SourceMetadata, cause: WeirError) -> WeirError {
    match cause {
        located @ WeirError::Processing { .. } => located,
        cause => WeirError::Processing {
            topic: source.topic.to_string(),
            partition: source.partition,
            offset: source.offset,
            cause: Box::new(cause),
        },
    }
}
