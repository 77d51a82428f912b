//! The typed DSL: [`StreamsBuilder`], [`KStream`], [`KTable`] and grouped
//! streams and tables. Each operation adds nodes to the topology graph;
//! [`StreamsBuilder::build`] compiles the graph into a [`Topology`].
//!
//! ```
//! use weir::{StreamsBuilder, Consumed, Produced, Grouped, Materialized};
//! use weir::serde::{Utf8, I64};
//!
//! let builder = StreamsBuilder::new();
//! let words = builder.stream("lines", Consumed::with(Utf8, Utf8))
//!     .flat_map_values(|line: String| line.split_whitespace().map(str::to_string).collect::<Vec<_>>());
//! words
//!     .group_by(|_, word| word.clone(), Grouped::with(Utf8, Utf8))
//!     .count(Materialized::named("word-counts"))
//!     .to("word-counts", Produced::with(Utf8, I64));
//! let topology = builder.build().unwrap();
//! assert_eq!(topology.subtopologies().len(), 2); // split by the repartition topic
//! ```

mod cdc;
mod enrich;
mod global;
mod grouped;
mod kstream;
mod ktable;
pub mod process;
mod windowed;

pub use global::GlobalKTable;
pub use grouped::{KGroupedStream, KGroupedTable};
pub use kstream::{BranchedKStream, KStream};
pub use ktable::KTable;
pub use windowed::{SessionWindowedKStream, StreamJoined, TimeWindowedKStream};

use crate::error::{SerdeError, WeirError};
use crate::error_handler::ErrorHandler;
use crate::processor::source::TimestampOf;
use crate::processor::table::{ExpireRows, TableSourceNode, TtlIndex, BY_DEADLINE};
use crate::processor::time_index::TimeIndex;
use crate::processor::{GetterRef, TableEmitter};
use crate::runtime::PunctuationType;
use crate::runtime::TaskBuilder;
use crate::serde::{Bytes, Encoded, Nullable, Serde, SerdeRef};
use crate::topology::{StoreLayout, TopicRef, Topology, TopologyBuilder};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// The bound on keys and values that flow through a topology.
pub trait Data: Clone + 'static {}
impl<T: Clone + 'static> Data for T {}

type Graph = Rc<RefCell<TopologyBuilder>>;

/// Creates a table's value getter for one task.
type GetterFactory<K, V> = Arc<dyn Fn(&mut TaskBuilder<'_>) -> Result<GetterRef<K, V>, WeirError> + Send + Sync>;

/// Builds a topology from streams and tables.
#[derive(Default)]
pub struct StreamsBuilder {
    graph: Graph,
}

impl StreamsBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A stream of every record of `topic`.
    pub fn stream<K: Data, V: Data>(&self, topic: &str, consumed: Consumed<K, V>) -> KStream<K, V> {
        let node = self.graph.borrow_mut().add_source(
            TopicRef::External(topic.to_string()),
            consumed.key,
            consumed.value,
            consumed.on_error,
            consumed.timestamp,
        );
        KStream::new(self.graph.clone(), node, false)
    }

    /// A table of the latest value per key of `topic`; a null value deletes
    /// the key. The table is materialized in a store (named by
    /// [`Consumed::store`], or generated) backed by a changelog topic.
    pub fn table<K: Data, V: Data>(&self, topic: &str, consumed: Consumed<K, V>) -> KTable<K, V> {
        let nullable: SerdeRef<Option<V>> = Arc::new(Nullable(consumed.value.clone()));
        // A tombstone keeps the time it arrived with.
        let timestamp = consumed.timestamp.map(|time_of| -> TimestampOf<K, Option<V>> {
            Arc::new(move |key, row, arrived| row.as_ref().map_or(arrived, |row| time_of(key, row, arrived)))
        });
        let source = self.graph.borrow_mut().add_source(
            TopicRef::External(topic.to_string()),
            consumed.key.clone(),
            nullable,
            consumed.on_error,
            timestamp,
        );
        materialize(
            &self.graph,
            source,
            topic,
            consumed.store,
            consumed.ttl,
            consumed.key,
            consumed.value,
        )
    }

    /// Compiles the topology built so far; reports every mistake found
    /// while building it.
    pub fn build(&self) -> Result<Topology, WeirError> {
        self.graph.borrow().clone().build()
    }
}

/// Keeps the updates (`None` deletes) that `input` forwards in a store and
/// makes them a table; `origin` names the store when `store` does not.
fn materialize<K: Data, V: Data>(
    graph_ref: &Graph,
    input: usize,
    origin: &str,
    store: Option<String>,
    ttl: Option<Duration>,
    key_serde: SerdeRef<K>,
    value_serde: SerdeRef<V>,
) -> KTable<K, V> {
    let mut graph = graph_ref.borrow_mut();
    let store = store.unwrap_or_else(|| graph.new_name(&format!("{origin}-STATE-STORE")));
    graph.add_store(&store, StoreLayout::Plain);
    let mut stores = vec![store.clone()];
    let ttl = ttl.map(|ttl| {
        let index = store_getter(&format!("{store}-ttl"), Arc::new(Bytes), Arc::new(Bytes));
        graph.add_store(&index.name, StoreLayout::Plain);
        stores.push(index.name.clone());
        (ttl, index)
    });
    let getter = store_getter(&store, key_serde.clone(), value_serde);
    let node = graph.add_processor("KTABLE-SOURCE", &[input], stores, {
        let getter = getter.clone();
        move |task, out| {
            let table = getter.kept_table(task, |row| row, out)?;
            let ttl = match &ttl {
                Some((ttl, index)) => {
                    let index = index.typed(task)?;
                    let expiry = Rc::new(TtlIndex {
                        deadlines: TimeIndex::new(index.clone(), BY_DEADLINE),
                        index,
                        key_serde: key_serde.clone(),
                        ttl_ms: ttl.as_millis() as i64,
                    });
                    let check = (*ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(60));
                    let expire = ExpireRows {
                        table: table.clone(),
                        ttl: expiry.clone(),
                    };
                    task.schedule(Rc::new(expire), PunctuationType::WallClockTime, check);
                    Some(expiry)
                }
                None => None,
            };
            Ok(TableSourceNode { table, ttl })
        }
    });
    drop(graph);
    KTable::new(graph_ref.clone(), node, getter.into_factory(), vec![store])
}

/// Typed access to a named store, as processors and value getters need it.
pub(crate) struct StoreGetter<K, V> {
    pub(crate) name: String,
    key_serde: SerdeRef<K>,
    value_serde: SerdeRef<V>,
}

impl<K, V> Clone for StoreGetter<K, V> {
    fn clone(&self) -> Self {
        StoreGetter {
            name: self.name.clone(),
            key_serde: self.key_serde.clone(),
            value_serde: self.value_serde.clone(),
        }
    }
}

pub(crate) fn store_getter<K, V>(name: &str, key_serde: SerdeRef<K>, value_serde: SerdeRef<V>) -> StoreGetter<K, V> {
    StoreGetter {
        name: name.to_string(),
        key_serde,
        value_serde,
    }
}

impl<K: 'static, V: 'static> StoreGetter<K, V> {
    pub(crate) fn typed(&self, task: &mut TaskBuilder<'_>) -> Result<Rc<crate::state::TypedStore<K, V>>, WeirError> {
        task.typed_store(&self.name, self.key_serde.clone(), self.value_serde.clone())
    }

    /// The task's table kept in this store, whose rows are its values as
    /// `view` shows them: it writes the store, passes changes on to `out`,
    /// and is registered with the task (see [`TaskBuilder::keep_table`]).
    pub(crate) fn kept_table<R: Clone + 'static>(
        &self,
        task: &mut TaskBuilder<'_>,
        view: fn(V) -> R,
        out: crate::processor::Forwarder<K, crate::record::Change<R>>,
    ) -> Result<Rc<TableEmitter<K, V, R>>, WeirError>
    where
        K: Clone,
        V: Clone,
    {
        let table = Rc::new(TableEmitter {
            store: self.typed(task)?,
            view,
            out,
        });
        task.keep_table(&self.name, table.clone())?;
        Ok(table)
    }

    pub(crate) fn into_factory(self) -> GetterFactory<K, V> {
        Arc::new(move |task: &mut TaskBuilder<'_>| Ok(self.typed(task)? as GetterRef<K, V>))
    }
}

/// How to read a topic: key and value serdes, the error handler, and for a
/// table the name of its store and the time its rows live.
pub struct Consumed<K, V> {
    pub(crate) key: SerdeRef<K>,
    pub(crate) value: SerdeRef<V>,
    pub(crate) on_error: Option<ErrorHandler>,
    pub(crate) store: Option<String>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) timestamp: Option<TimestampOf<K, V>>,
}

impl<K: 'static, V: 'static> Consumed<K, V> {
    pub fn with(key: impl Serde<K>, value: impl Serde<V>) -> Self {
        Consumed {
            key: Arc::new(key),
            value: Arc::new(value),
            on_error: None,
            store: None,
            ttl: None,
            timestamp: None,
        }
    }

    /// Takes each record's time from its key and value (the third argument
    /// is the timestamp it arrived with), as Kafka Streams' timestamp
    /// extractors do: what follows (outputs, the stream time punctuations
    /// go by, a table's TTL) goes by it. A tombstone keeps the time it
    /// arrived with.
    ///
    /// ```
    /// use weir::{StreamsBuilder, Consumed, Produced, serde::{Json, Utf8}};
    /// use weir::testing::{TestRecord, TopologyTestDriver};
    ///
    /// #[derive(Clone, serde::Serialize, serde::Deserialize)]
    /// struct Click { page: String, at_ms: i64 }
    ///
    /// let builder = StreamsBuilder::new();
    /// builder
    ///     .stream("clicks", Consumed::with(Utf8, Json::<Click>::new()).timestamp(|_, click, _| click.at_ms))
    ///     .to("timed-clicks", Produced::with(Utf8, Json::new()));
    /// let driver = TopologyTestDriver::new(builder.build()?)?;
    /// let click = Click { page: "/".into(), at_ms: 1_700_000_000_000 };
    /// driver.input_topic("clicks", Utf8, Json::new()).pipe_record(TestRecord::new("u1".to_string(), Some(click)).at(5))?;
    /// let out = driver.output_topic("timed-clicks", Utf8, Json::<Click>::new()).read_records()?;
    /// assert_eq!(out[0].timestamp, 1_700_000_000_000);
    /// # Ok::<(), weir::WeirError>(())
    /// ```
    pub fn timestamp(mut self, time_of: impl Fn(&K, &V, i64) -> i64 + Send + Sync + 'static) -> Self {
        self.timestamp = Some(Arc::new(time_of));
        self
    }

    /// What to do with records that cannot be deserialized (default: the
    /// application's default handler).
    pub fn on_error(mut self, handler: ErrorHandler) -> Self {
        self.on_error = Some(handler);
        self
    }

    /// Names the store of a table read with these options.
    pub fn store(mut self, name: impl Into<String>) -> Self {
        self.store = Some(name.into());
        self
    }

    /// Deletes the rows of a table read with these options that have not
    /// been written for `ttl`: a row's time is its last record's
    /// timestamp, and the wall clock decides, checked every tenth of `ttl`
    /// (between 100 ms and a minute). Each expired row leaves as a deletion
    /// does, with a tombstone downstream and in the changelog. The
    /// deadlines are kept in a store of their own, `<store>-ttl`, ordered
    /// so that a check reads only the rows that are due.
    ///
    /// ```
    /// use std::time::Duration;
    /// use weir::{StreamsBuilder, Consumed, Produced, serde::Utf8};
    /// use weir::testing::{TestRecord, TopologyTestDriver};
    ///
    /// let builder = StreamsBuilder::new();
    /// builder
    ///     .table("sessions", Consumed::with(Utf8, Utf8).ttl(Duration::from_secs(600)))
    ///     .to("live-sessions", Produced::with(Utf8, Utf8));
    /// let driver = TopologyTestDriver::new(builder.build()?)?;
    /// let now = driver.wall_clock_ms();
    /// driver.input_topic("sessions", Utf8, Utf8).pipe_record(TestRecord::new("s1".to_string(), Some("ada".to_string())).at(now))?;
    /// driver.advance_wall_clock(Duration::from_secs(601))?;
    /// let live = driver.output_topic("live-sessions", Utf8, Utf8).read_key_values()?;
    /// assert_eq!(live, [("s1".to_string(), Some("ada".to_string())), ("s1".to_string(), None)]);
    /// # Ok::<(), weir::WeirError>(())
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// Key and value serdes, with an optional name; see [`Produced`],
/// [`Grouped`] and [`Repartitioned`].
pub struct Serdes<K, V> {
    pub(crate) key: SerdeRef<K>,
    pub(crate) value: SerdeRef<V>,
    pub(crate) name: Option<String>,
}

impl<K, V> Clone for Serdes<K, V> {
    fn clone(&self) -> Self {
        Serdes {
            key: self.key.clone(),
            value: self.value.clone(),
            name: self.name.clone(),
        }
    }
}

impl<K: 'static, V: 'static> Serdes<K, V> {
    pub fn with(key: impl Serde<K>, value: impl Serde<V>) -> Self {
        Serdes {
            key: Arc::new(key),
            value: Arc::new(value),
            name: None,
        }
    }

    /// Names what these serdes are for: a repartition topic
    /// (`<application.id>-<name>-repartition`) for [`Grouped`] and
    /// [`Repartitioned`].
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// How to write a topic.
pub type Produced<K, V> = Serdes<K, V>;
/// How to ship records through a repartition topic when grouping by a new key.
pub type Grouped<K, V> = Serdes<K, V>;
/// How to ship records through an explicit repartition topic.
pub type Repartitioned<K, V> = Serdes<K, V>;

/// The serdes of a foreign-key join ([`KTable::join_on_foreign_key`]):
/// it ships the left table's keys (`K`) and the foreign keys (`KO`) through
/// its subscription and response topics, hashes the left values (`V`) to
/// tell a current answer from a stale one, ships the right rows (`VO`) in
/// its answers and keeps the result (`R`) in a store. With a name, its
/// topics are `<application.id>-<name>-subscription-repartition` and
/// `<application.id>-<name>-response-repartition`, and its stores
/// `<name>-subscriptions` (on the right table's side) and `<name>` (the
/// result).
pub struct ForeignKeyJoined<K, V, KO, VO, R> {
    pub(crate) key: SerdeRef<K>,
    pub(crate) value: SerdeRef<V>,
    pub(crate) foreign_key: SerdeRef<KO>,
    pub(crate) foreign_value: SerdeRef<VO>,
    pub(crate) result: SerdeRef<R>,
    pub(crate) name: Option<String>,
}

impl<K: 'static, V: 'static, KO: 'static, VO: 'static, R: 'static> ForeignKeyJoined<K, V, KO, VO, R> {
    /// The serdes of the left table's key and value, of the right table's
    /// key and value, and of the result.
    pub fn with(
        key: impl Serde<K>,
        value: impl Serde<V>,
        foreign_key: impl Serde<KO>,
        foreign_value: impl Serde<VO>,
        result: impl Serde<R>,
    ) -> Self {
        ForeignKeyJoined {
            key: Arc::new(key),
            value: Arc::new(value),
            foreign_key: Arc::new(foreign_key),
            foreign_value: Arc::new(foreign_value),
            result: Arc::new(result),
            name: None,
        }
    }

    /// Names the join's topics and stores (see above); without a name they
    /// are numbered like the nodes, so adding an operator before the join
    /// renames them.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// How to keep the result of an aggregation: the store name and the serde
/// of the aggregate. `count` defaults to [`crate::serde::I64`] and `reduce`
/// to the grouped value serde; `aggregate` needs one.
pub struct Materialized<A> {
    pub(crate) name: Option<String>,
    pub(crate) value: Option<SerdeRef<A>>,
    pub(crate) retention: Option<Duration>,
}

impl<A> Default for Materialized<A> {
    fn default() -> Self {
        Materialized {
            name: None,
            value: None,
            retention: None,
        }
    }
}

impl<A: 'static> Materialized<A> {
    /// A store with this value serde and a generated name.
    pub fn with(value: impl Serde<A>) -> Self {
        Materialized {
            name: None,
            value: Some(Arc::new(value)),
            retention: None,
        }
    }

    /// A store with this name (its changelog is `<application.id>-<name>-changelog`).
    pub fn named(name: impl Into<String>) -> Self {
        Materialized {
            name: Some(name.into()),
            value: None,
            retention: None,
        }
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn with_value_serde(mut self, value: impl Serde<A>) -> Self {
        self.value = Some(Arc::new(value));
        self
    }

    /// For a windowed aggregation: how long a window stays in the store
    /// after it closes, for interactive queries (none by default). Only
    /// windowed aggregations take it.
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = Some(retention);
        self
    }
}

/// The aggregate's serde, which `aggregate` cannot do without: a missing one
/// is reported by `build()`, and a stand-in that never runs takes its place.
fn required_serde<A: 'static>(graph: &Graph, serde: Option<SerdeRef<A>>) -> SerdeRef<A> {
    serde.unwrap_or_else(|| {
        graph
            .borrow_mut()
            .error("aggregate needs the aggregate's serde: pass Materialized::with(serde)".to_string());
        Arc::new(MissingSerde)
    })
}

/// Records an error when two streams or tables of different builders meet.
fn check_same_builder(graph: &Graph, other: &Graph, operation: &str) {
    if !Rc::ptr_eq(graph, other) {
        graph.borrow_mut().error(format!(
            "{operation} of streams or tables from two different StreamsBuilders"
        ));
    }
}

/// Stands in for a serde the user did not give; `build()` fails before it
/// could ever run.
struct MissingSerde;

impl<T> Serde<T> for MissingSerde {
    fn serialize(&self, topic: &str, _: &T, _: &mut Vec<u8>) -> Result<Encoded, SerdeError> {
        Err(SerdeError::serialize(topic, "no serde was configured"))
    }
    fn deserialize(&self, topic: &str, _: Option<&[u8]>) -> Result<T, SerdeError> {
        Err(SerdeError::deserialize(topic, "no serde was configured"))
    }
}
