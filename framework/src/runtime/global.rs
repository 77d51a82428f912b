//! Global tables' stores: every instance fills them from every partition
//! of their topics and keeps them current, and every task reads them.
//!
//! The runtime fills them in a thread of their own: at start it reads
//! each topic to its end before any stream thread starts, so that the
//! first stream record already finds every row; then it applies new
//! records as they arrive, until the instance closes. The stores have no
//! changelog and no checkpoint: every start fills them again from the
//! topics. The test driver writes a record piped to a global topic into
//! its store at once.

use super::changelog_reader::{partition_reader_config, ReaderContext};
use super::config::Settings;
use crate::error::WeirError;
use crate::metrics::{RuntimeMetrics, SkipReason};
use crate::state::{KeyValueStore, StoreReader, StoreSupplier, StoreWrite};
use crate::topology::{GlobalStoreDef, Topology};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The global tables' stores of an instance, by store name, as tasks read
/// them.
#[derive(Clone, Default)]
pub struct GlobalStores(Arc<HashMap<String, Arc<dyn StoreReader>>>);

impl GlobalStores {
    pub(crate) fn new(readers: HashMap<String, Arc<dyn StoreReader>>) -> Self {
        GlobalStores(Arc::new(readers))
    }

    pub(crate) fn get(&self, store: &str) -> Result<Arc<dyn StoreReader>, WeirError> {
        self.0.get(store).cloned().ok_or_else(|| {
            WeirError::Other(format!(
                "the global table's store '{store}' is not open in this instance"
            ))
        })
    }
}

/// A global table's store as its writer holds it.
pub(crate) struct GlobalStore {
    pub def: GlobalStoreDef,
    pub store: Box<dyn KeyValueStore>,
}

impl GlobalStore {
    /// Writes the records of a batch of the store's topic that decode
    /// (`None` deletes); the others are counted as skipped and logged.
    pub(crate) fn apply<'a>(
        &mut self,
        records: impl IntoIterator<Item = (Option<&'a [u8]>, Option<&'a [u8]>)>,
        metrics: &RuntimeMetrics,
    ) -> Result<(), WeirError> {
        let topic = &self.def.topic;
        let mut writes: Vec<StoreWrite<'a>> = Vec::new();
        for (key, value) in records {
            match (self.def.check)(topic, key, value) {
                Ok(()) => writes.push((key.unwrap_or_default(), value)),
                Err(error) => {
                    tracing::warn!(%error, topic = %topic, store = %self.def.store, "a global table skips a record");
                    metrics.skipped(SkipReason::DeserializationError, topic);
                }
            }
        }
        Ok(self.store.write_batch(&mut writes.into_iter())?)
    }
}

/// The thread that fills the global tables' stores and keeps them current.
pub(crate) struct GlobalThread {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<(), WeirError>>,
}

/// A record's key and value, copied out of the consumer's buffer.
type OwnedRecord = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Records applied to a store in one write.
const BATCH_RECORDS: usize = 1_000;
/// The longest one poll waits.
const POLL_WAIT: Duration = Duration::from_millis(100);
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

impl GlobalThread {
    /// Opens the global tables' stores, empties them, and reads every
    /// partition of their topics to its end; returns once they are filled,
    /// with the thread that goes on applying new records. `None` for a
    /// topology without global tables.
    pub(crate) fn start(
        topology: &Topology,
        settings: &Settings,
        stores: Arc<dyn StoreSupplier>,
        metrics: Arc<RuntimeMetrics>,
    ) -> Result<(GlobalStores, Option<GlobalThread>), WeirError> {
        let defs = topology.globals().to_vec();
        if defs.is_empty() {
            return Ok((GlobalStores::default(), None));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready) = mpsc::channel();
        let settings = settings.clone();
        let thread_stop = stop.clone();
        let handle = std::thread::Builder::new()
            .name(format!("{}-global", settings.application_id))
            .spawn(move || {
                let mut filler = match Filler::open(&defs, &settings, stores.as_ref(), metrics) {
                    Ok(filler) => filler,
                    Err(error) => {
                        let _ = ready_tx.send(Err(WeirError::Other(error.to_string())));
                        return Err(error);
                    }
                };
                if let Err(error) = filler.bootstrap(&thread_stop) {
                    let _ = ready_tx.send(Err(WeirError::Other(error.to_string())));
                    return Err(error);
                }
                let _ = ready_tx.send(Ok(filler.readers()));
                filler.keep_current(&thread_stop)
            })
            .map_err(|e| WeirError::Other(format!("cannot start the global tables' thread: {e}")))?;
        let thread = GlobalThread { stop, handle };
        match ready.recv() {
            Ok(Ok(readers)) => Ok((GlobalStores::new(readers), Some(thread))),
            Ok(Err(error)) => {
                let _ = thread.stop();
                Err(error)
            }
            Err(_) => Err(thread
                .stop()
                .err()
                .unwrap_or_else(|| WeirError::Other("the global tables' thread ended while filling them".into()))),
        }
    }

    /// Whether the thread has ended (on an error, unless stopped).
    pub(crate) fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Stops the thread; its error, if it stopped on one.
    pub(crate) fn stop(self) -> Result<(), WeirError> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .join()
            .unwrap_or_else(|_| Err(WeirError::Other("the global tables' thread panicked".into())))
    }
}

/// The global thread's tables: each with its own consumer, so that the
/// end of a partition, which a consumer reports by partition number only,
/// names its topic.
struct Filler {
    tables: Vec<GlobalTable>,
    metrics: Arc<RuntimeMetrics>,
}

struct GlobalTable {
    consumer: BaseConsumer<ReaderContext>,
    global: GlobalStore,
    /// Partitions not read to their end yet.
    unfilled: BTreeSet<i32>,
}

impl Filler {
    fn open(
        defs: &[GlobalStoreDef],
        settings: &Settings,
        supplier: &dyn StoreSupplier,
        metrics: Arc<RuntimeMetrics>,
    ) -> Result<Self, WeirError> {
        let tables = defs
            .iter()
            .map(|def| GlobalTable::open(def, settings, supplier))
            .collect::<Result<_, _>>()?;
        Ok(Filler { tables, metrics })
    }

    fn readers(&self) -> HashMap<String, Arc<dyn StoreReader>> {
        self.tables
            .iter()
            .map(|t| (t.global.def.store.clone(), t.global.store.reader()))
            .collect()
    }

    /// Reads until every partition reported its end.
    fn bootstrap(&mut self, stop: &AtomicBool) -> Result<(), WeirError> {
        let started = Instant::now();
        while self.tables.iter().any(|t| !t.unfilled.is_empty()) && !stop.load(Ordering::SeqCst) {
            self.poll()?;
        }
        tracing::info!(
            tables = self.tables.len(),
            millis = started.elapsed().as_millis() as u64,
            "global tables filled"
        );
        Ok(())
    }

    fn keep_current(&mut self, stop: &AtomicBool) -> Result<(), WeirError> {
        while !stop.load(Ordering::SeqCst) {
            self.poll()?;
        }
        Ok(())
    }

    fn poll(&mut self) -> Result<(), WeirError> {
        let wait = POLL_WAIT / self.tables.len() as u32;
        for table in &mut self.tables {
            table.poll_batch(wait, &self.metrics)?;
        }
        Ok(())
    }
}

impl GlobalTable {
    fn open(def: &GlobalStoreDef, settings: &Settings, supplier: &dyn StoreSupplier) -> Result<Self, WeirError> {
        let mut config = partition_reader_config(settings, "global");
        config.set("auto.offset.reset", "earliest");
        let consumer: BaseConsumer<ReaderContext> = config
            .create_with_context(ReaderContext)
            .map_err(|e| WeirError::Kafka(format!("cannot create the global tables' consumer: {e}")))?;
        let metadata = consumer
            .fetch_metadata(Some(&def.topic), METADATA_TIMEOUT)
            .map_err(|e| WeirError::Kafka(format!("cannot read the metadata of '{}': {e}", def.topic)))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == def.topic && t.error().is_none())
            .map(|t| t.partitions().len() as i32)
            .unwrap_or(0);
        if partitions == 0 {
            return Err(WeirError::Config(format!(
                "the topic '{}' of the global table '{}' does not exist",
                def.topic, def.store
            )));
        }
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            assignment
                .add_partition_offset(&def.topic, partition, Offset::Beginning)
                .map_err(|e| WeirError::Kafka(e.to_string()))?;
        }
        consumer
            .assign(&assignment)
            .map_err(|e| WeirError::Kafka(format!("cannot read '{}': {e}", def.topic)))?;
        let mut store = supplier.open("global", &def.store)?;
        clear(store.as_mut())?;
        Ok(GlobalTable {
            consumer,
            global: GlobalStore {
                def: def.clone(),
                store,
            },
            unfilled: (0..partitions).collect(),
        })
    }

    /// Polls up to a batch of records, waiting at most `wait` for the
    /// first, and writes them to the store.
    fn poll_batch(&mut self, wait: Duration, metrics: &RuntimeMetrics) -> Result<(), WeirError> {
        let mut batch: Vec<OwnedRecord> = Vec::new();
        let mut wait = wait;
        while batch.len() < BATCH_RECORDS {
            match self.consumer.poll(wait) {
                None => break,
                Some(Ok(message)) => {
                    batch.push((message.key().map(<[u8]>::to_vec), message.payload().map(<[u8]>::to_vec)))
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    self.unfilled.remove(&partition);
                }
                Some(Err(error)) => tracing::warn!(%error, topic = %self.global.def.topic, "global table consumer"),
            }
            wait = Duration::ZERO;
        }
        self.global
            .apply(batch.iter().map(|(k, v)| (k.as_deref(), v.as_deref())), metrics)
    }
}

/// Deletes every entry of `store`: the stores are filled from their topics
/// on every start.
fn clear(store: &mut dyn KeyValueStore) -> Result<(), WeirError> {
    let mut keys = Vec::new();
    store.for_each(&mut |key, _| keys.push(key.to_vec()))?;
    let mut deletes = keys.iter().map(|key| (key.as_slice(), None));
    Ok(store.write_batch(&mut deletes)?)
}
