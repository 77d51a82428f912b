//! Interactive queries: reading a running instance's stores from any
//! thread, and naming the instance that holds a key kept elsewhere.
//!
//! - Each task registers its stores' readers once their restore is done and
//!   removes them when it closes; in between, a query of its partition is
//!   [`WeirError::Unavailable`].
//! - A key lives on the partition Kafka's default partitioner (murmur2)
//!   gives its bytes as the store's key serde writes them, out of the store
//!   sub-topology's task count. That is where weir keeps it when the store
//!   is fed through a repartition topic or a topic written with the same
//!   serde and partitioner, as Kafka Streams assumes for its key queries.
//! - The owner of another partition comes from the group's committed
//!   offsets: every instance commits its `application.server` as the
//!   metadata of the offsets it commits, and once right after an
//!   assignment for partitions that already have committed offsets.

use super::changelog_reader::ReaderContext;
use super::config::{ClientKind, Settings};
use super::GlobalStores;
use crate::error::WeirError;
use crate::partition::partition_for_key;
use crate::serde::{Encoded, Serde, SerdeRef};
use crate::state::StoreReader;
use crate::topology::{PartitionPlan, Topology};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::TopicPartitionList;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

const OWNER_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a queried key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLocation<V> {
    /// The key's partition is on this instance: its value, `None` when the
    /// store has no such key.
    Local(Option<V>),
    /// Another instance holds the key's partition; `owner` is its
    /// `application.server`, `None` when no instance has announced one yet
    /// (nothing committed for that partition, or no `application.server`
    /// configured).
    Elsewhere { partition: i32, owner: Option<String> },
}

/// A store partition of this instance, as queries see it.
enum Slot {
    /// Assigned here; its restore is not done.
    Restoring,
    Ready(Arc<dyn StoreReader>),
}

/// Where a store's partitions are, fixed once the instance has started.
struct Placement {
    /// The task count of the store's sub-topology.
    partitions: i32,
    /// A source topic of that sub-topology, whose committed offsets carry
    /// the owner of each partition.
    source_topic: String,
}

/// The stores of an instance's tasks, shared between the stream thread
/// (which registers them) and query handles.
pub(crate) struct LocalStores {
    slots: RwLock<HashMap<(String, i32), Slot>>,
    placements: OnceLock<HashMap<String, Placement>>,
    settings: Arc<Settings>,
    /// Reads committed offsets' metadata; created on the first query of a
    /// partition held elsewhere.
    owner_reader: OnceLock<Result<BaseConsumer<ReaderContext>, String>>,
    /// The global tables' stores, whole on every instance, once filled.
    globals: OnceLock<GlobalStores>,
}

impl LocalStores {
    pub(crate) fn new(settings: Arc<Settings>) -> Self {
        LocalStores {
            slots: RwLock::default(),
            placements: OnceLock::new(),
            settings,
            owner_reader: OnceLock::new(),
            globals: OnceLock::new(),
        }
    }

    /// The global tables' stores, filled; queries answer from them here.
    pub(crate) fn set_globals(&self, globals: GlobalStores) {
        let _ = self.globals.set(globals);
    }

    /// Records where each store's partitions are, once topics are known.
    pub(crate) fn place(&self, topology: &Topology, plan: &PartitionPlan) {
        let app = &self.settings.application_id;
        let placements = topology
            .subtopologies()
            .iter()
            .flat_map(|sub| {
                let source_topic = sub.source_topics[0].resolve(app);
                let partitions = plan.tasks[sub.id];
                sub.stores.iter().map(move |store| {
                    let placement = Placement {
                        partitions,
                        source_topic: source_topic.clone(),
                    };
                    (store.clone(), placement)
                })
            })
            .collect();
        let _ = self.placements.set(placements);
    }

    /// A store partition assigned here, being restored.
    pub(crate) fn restoring(&self, store: &str, partition: i32) {
        self.slots_mut().insert((store.to_string(), partition), Slot::Restoring);
    }

    /// A store partition assigned here, ready for queries.
    pub(crate) fn ready(&self, store: &str, partition: i32, reader: Arc<dyn StoreReader>) {
        self.slots_mut()
            .insert((store.to_string(), partition), Slot::Ready(reader));
    }

    /// A store partition no longer here.
    pub(crate) fn remove(&self, store: &str, partition: i32) {
        self.slots_mut().remove(&(store.to_string(), partition));
    }

    fn slots_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<(String, i32), Slot>> {
        self.slots.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The raw value of `key` in `store`, or where it is.
    fn locate(&self, store: &str, key: &[u8]) -> Result<KeyLocation<Vec<u8>>, WeirError> {
        if let Some(global) = self.globals.get().and_then(|g| g.get(store).ok()) {
            return Ok(KeyLocation::Local(global.get(key)?));
        }
        let placement = self
            .placements
            .get()
            .ok_or_else(|| WeirError::Unavailable("the instance has not started".into()))?
            .get(store)
            .ok_or_else(|| WeirError::Other(format!("the topology has no store '{store}'")))?;
        let partition = partition_for_key(key, placement.partitions);
        let reader = {
            let slots = self.slots.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            match slots.get(&(store.to_string(), partition)) {
                Some(Slot::Ready(reader)) => Some(reader.clone()),
                Some(Slot::Restoring) => {
                    return Err(WeirError::Unavailable(format!(
                        "partition {partition} of store '{store}' is being restored on this instance"
                    )))
                }
                None => None,
            }
        };
        if let Some(reader) = reader {
            return Ok(KeyLocation::Local(reader.get(key)?));
        }
        let owner = self.owner(&placement.source_topic, partition)?;
        if owner.is_some() && owner == self.settings.application_server {
            // Announced by this instance, which no longer (or not yet) runs
            // the task: a rebalance is under way.
            return Err(WeirError::Unavailable(format!(
                "partition {partition} of store '{store}' is moving between instances"
            )));
        }
        Ok(KeyLocation::Elsewhere { partition, owner })
    }

    /// The `application.server` committed with `topic`'s offset of `partition`.
    fn owner(&self, topic: &str, partition: i32) -> Result<Option<String>, WeirError> {
        let reader = self
            .owner_reader
            .get_or_init(|| {
                let mut config = self.settings.client_config(ClientKind::Consumer);
                // Fetches the group's offsets; never joins the group.
                config
                    .set("group.id", &self.settings.application_id)
                    .set("enable.auto.commit", "false");
                config
                    .create_with_context(ReaderContext)
                    .map_err(|e| format!("cannot create the owner lookup's consumer: {e}"))
            })
            .as_ref()
            .map_err(|e| WeirError::Kafka(e.clone()))?;
        let mut partitions = TopicPartitionList::new();
        partitions.add_partition(topic, partition);
        let committed = reader
            .committed_offsets(partitions, OWNER_LOOKUP_TIMEOUT)
            .map_err(|e| {
                WeirError::Kafka(format!(
                    "cannot read the committed offsets of {topic}[{partition}]: {e}"
                ))
            })?;
        let owner = committed
            .elements()
            .first()
            .map(|e| e.metadata().to_string())
            .filter(|metadata| !metadata.is_empty());
        Ok(owner)
    }
}

/// Reads one store of a running [`KafkaStreams`](super::KafkaStreams)
/// instance from any thread; made by
/// [`KafkaStreams::store`](super::KafkaStreams::store).
///
/// ```no_run
/// use weir::runtime::{KafkaStreams, KeyLocation, StreamsConfig};
/// use weir::serde::{Json, Utf8};
/// # fn app(topology: weir::Topology) -> weir::Result<()> {
/// let config = StreamsConfig::new("profiles", "localhost:9092").set("application.server", "10.0.0.7:9464");
/// let mut streams = KafkaStreams::new(topology, &config)?;
/// let profiles = streams.store("profiles", Utf8, Json::<String>::new())?;
/// streams.start()?;
/// match profiles.get(&"u1".to_string())? {
///     KeyLocation::Local(Some(profile)) => println!("{profile}"),
///     KeyLocation::Local(None) => println!("no such user"),
///     KeyLocation::Elsewhere { owner, .. } => println!("ask {owner:?}"),
/// }
/// # Ok(()) }
/// ```
pub struct ReadOnlyStore<K, V> {
    name: String,
    /// The name the serdes are given, as for the task's own reads.
    serde_topic: String,
    /// Where the serde's bytes start in a stored value (aggregates and
    /// caches keep a prefix).
    value_offset: usize,
    key_serde: SerdeRef<K>,
    value_serde: SerdeRef<V>,
    stores: Arc<LocalStores>,
}

impl<K, V> Clone for ReadOnlyStore<K, V> {
    fn clone(&self) -> Self {
        ReadOnlyStore {
            name: self.name.clone(),
            serde_topic: self.serde_topic.clone(),
            value_offset: self.value_offset,
            key_serde: self.key_serde.clone(),
            value_serde: self.value_serde.clone(),
            stores: self.stores.clone(),
        }
    }
}

impl<K: 'static, V: 'static> ReadOnlyStore<K, V> {
    /// `serde_topic` is the name the store's serdes were given: its
    /// changelog's, or a global table's topic.
    pub(crate) fn new(
        name: &str,
        serde_topic: String,
        value_offset: usize,
        key_serde: impl Serde<K> + 'static,
        value_serde: impl Serde<V> + 'static,
        stores: Arc<LocalStores>,
    ) -> Self {
        ReadOnlyStore {
            name: name.to_string(),
            serde_topic,
            value_offset,
            key_serde: Arc::new(key_serde),
            value_serde: Arc::new(value_serde),
            stores,
        }
    }

    /// The store's name in the topology.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value of `key` when this instance holds its partition, else the
    /// partition and its owner. [`WeirError::Unavailable`] while the
    /// partition is restored or moves between instances, or before start.
    pub fn get(&self, key: &K) -> Result<KeyLocation<V>, WeirError> {
        let mut bytes = Vec::new();
        if self.key_serde.serialize(&self.serde_topic, key, &mut bytes)? == Encoded::Null {
            return Err(WeirError::Other(format!(
                "a key of store '{}' cannot be null",
                self.name
            )));
        }
        Ok(match self.stores.locate(&self.name, &bytes)? {
            KeyLocation::Local(Some(stored)) => {
                let value = stored.get(self.value_offset..);
                KeyLocation::Local(Some(self.value_serde.deserialize(&self.serde_topic, value)?))
            }
            KeyLocation::Local(None) => KeyLocation::Local(None),
            KeyLocation::Elsewhere { partition, owner } => KeyLocation::Elsewhere { partition, owner },
        })
    }
}
