//! `KStream`: an unbounded sequence of records, each an independent event.

use super::{check_same_builder, Data, Graph, Grouped, KGroupedStream, KTable, Produced, Repartitioned, Serdes};
use crate::processor::join::{StreamJoiner, StreamTableJoinNode};
use crate::processor::stream::{Predicate, SplitNode, StatelessNode, Transform};
use crate::record::Record;
use crate::topology::{TopicRef, TopologyBuilder};
use std::marker::PhantomData;
use std::sync::Arc;

/// A stream of records with keys `K` and values `V`.
///
/// ```
/// use weir::{StreamsBuilder, Consumed, Produced, serde::{Json, Utf8}};
/// let builder = StreamsBuilder::new();
/// builder
///     .stream("orders", Consumed::with(Utf8, Json::<u64>::new()))
///     .filter(|_, amount| *amount > 100)
///     .map_values(|amount| amount * 2)
///     .to("big-orders", Produced::with(Utf8, Json::new()));
/// assert!(builder.build().is_ok());
/// ```
pub struct KStream<K, V> {
    pub(crate) graph: Graph,
    pub(crate) node: usize,
    /// Whether an operation upstream may have changed the key, so that
    /// records may sit on another partition than their key's.
    pub(crate) key_changed: bool,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for KStream<K, V> {
    fn clone(&self) -> Self {
        KStream {
            graph: self.graph.clone(),
            node: self.node,
            key_changed: self.key_changed,
            _types: PhantomData,
        }
    }
}

impl<K: Data, V: Data> KStream<K, Option<V>> {
    /// The latest value of each key as a table kept in the store `store`
    /// (queryable, restored from `<application.id>-<store>-changelog`);
    /// `None` deletes the key. The stream must sit on its key's partition:
    /// after an operation that may change the key, repartition first.
    ///
    /// ```
    /// use weir::{StreamsBuilder, Consumed, Serdes, serde::{Json, Nullable, Utf8}};
    /// use weir::testing::TopologyTestDriver;
    /// let builder = StreamsBuilder::new();
    /// builder
    ///     .stream("prices", Consumed::with(Utf8, Nullable(Json::<u32>::new())))
    ///     .to_table("latest-prices", Serdes::with(Utf8, Json::new()));
    /// let driver = TopologyTestDriver::new(builder.build().unwrap()).unwrap();
    /// let prices = driver.input_topic("prices", Utf8, Nullable(Json::<u32>::new()));
    /// prices.pipe("apple".to_string(), Some(3)).unwrap();
    /// prices.pipe("pear".to_string(), Some(5)).unwrap();
    /// prices.pipe("apple".to_string(), None).unwrap();
    /// let table = driver.store_contents("latest-prices", Utf8, Json::<u32>::new()).unwrap();
    /// assert_eq!(table.into_iter().collect::<Vec<_>>(), vec![("pear".to_string(), 5)]);
    /// ```
    pub fn to_table(&self, store: &str, serdes: Serdes<K, V>) -> KTable<K, V> {
        if self.key_changed {
            let message = format!(
                "to_table('{store}'): the stream's key may have changed (map, select_key, flat_map), so records may \
                 not sit on their key's partition; call repartition(Repartitioned::with(..)) first"
            );
            self.graph.borrow_mut().error(message);
        }
        super::materialize(
            &self.graph,
            self.node,
            store,
            Some(store.to_string()),
            None,
            serdes.key,
            serdes.value,
        )
    }
}

impl<K: Data, V: Data> KStream<K, V> {
    pub(crate) fn new(graph: Graph, node: usize, key_changed: bool) -> Self {
        KStream {
            graph,
            node,
            key_changed,
            _types: PhantomData,
        }
    }

    fn stateless<K2: Data, V2: Data>(
        &self,
        prefix: &str,
        changes_key: bool,
        transform: impl Fn(Record<K, V>, &mut dyn FnMut(Record<K2, V2>)) + Send + Sync + 'static,
    ) -> KStream<K2, V2> {
        let transform: Transform<K, V, K2, V2> = Arc::new(transform);
        let node = self
            .graph
            .borrow_mut()
            .add_processor(prefix, &[self.node], Vec::new(), move |_, out| {
                Ok(StatelessNode {
                    transform: transform.clone(),
                    out,
                })
            });
        KStream::new(self.graph.clone(), node, self.key_changed || changes_key)
    }

    /// Keeps the records for which `predicate` holds.
    pub fn filter(&self, predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> KStream<K, V> {
        self.stateless("KSTREAM-FILTER", false, move |r, emit| {
            if predicate(&r.key, &r.value) {
                emit(r)
            }
        })
    }

    /// Drops the records for which `predicate` holds.
    pub fn filter_not(&self, predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> KStream<K, V> {
        self.filter(move |k, v| !predicate(k, v))
    }

    /// Replaces key and value. The key may change, so a later join or
    /// `group_by_key` repartitions.
    pub fn map<K2: Data, V2: Data>(
        &self,
        mapper: impl Fn(K, V) -> (K2, V2) + Send + Sync + 'static,
    ) -> KStream<K2, V2> {
        self.stateless("KSTREAM-MAP", true, move |r, emit| {
            let (key, value) = mapper(r.key, r.value);
            emit(Record::new(key, value, r.timestamp))
        })
    }

    /// Replaces the value, keeping the key (and so the partition).
    pub fn map_values<V2: Data>(&self, mapper: impl Fn(V) -> V2 + Send + Sync + 'static) -> KStream<K, V2> {
        self.stateless("KSTREAM-MAPVALUES", false, move |r, emit| {
            let value = mapper(r.value);
            emit(Record::new(r.key, value, r.timestamp))
        })
    }

    /// Sets a new key computed from the record.
    pub fn select_key<K2: Data>(&self, selector: impl Fn(&K, &V) -> K2 + Send + Sync + 'static) -> KStream<K2, V> {
        self.stateless("KSTREAM-KEY-SELECT", true, move |r, emit| {
            let key = selector(&r.key, &r.value);
            emit(Record::new(key, r.value, r.timestamp))
        })
    }

    /// Turns each record into any number of records.
    pub fn flat_map<K2: Data, V2: Data, I>(&self, mapper: impl Fn(K, V) -> I + Send + Sync + 'static) -> KStream<K2, V2>
    where
        I: IntoIterator<Item = (K2, V2)>,
    {
        self.stateless("KSTREAM-FLATMAP", true, move |r, emit| {
            for (key, value) in mapper(r.key, r.value) {
                emit(Record::new(key, value, r.timestamp))
            }
        })
    }

    /// Turns each value into any number of values under the same key.
    pub fn flat_map_values<V2: Data, I>(&self, mapper: impl Fn(V) -> I + Send + Sync + 'static) -> KStream<K, V2>
    where
        I: IntoIterator<Item = V2>,
    {
        self.stateless("KSTREAM-FLATMAPVALUES", false, move |r, emit| {
            for value in mapper(r.value) {
                emit(Record::new(r.key.clone(), value, r.timestamp))
            }
        })
    }

    /// Calls `action` on each record and passes it on unchanged.
    pub fn peek(&self, action: impl Fn(&K, &V) + Send + Sync + 'static) -> KStream<K, V> {
        self.stateless("KSTREAM-PEEK", false, move |r, emit| {
            action(&r.key, &r.value);
            emit(r)
        })
    }

    /// Routes each record to the first branch whose predicate holds.
    ///
    /// ```
    /// use weir::{StreamsBuilder, Consumed, serde::{Json, Utf8}};
    /// let builder = StreamsBuilder::new();
    /// let [small, large, rest] = builder
    ///     .stream("n", Consumed::with(Utf8, Json::<i64>::new()))
    ///     .split()
    ///     .branch(|_, n| *n < 10)
    ///     .branch(|_, n| *n >= 1000)
    ///     .default_branch()
    ///     .try_into()
    ///     .unwrap_or_else(|_| unreachable!());
    /// # let _ = (small, large, rest);
    /// ```
    pub fn split(&self) -> BranchedKStream<K, V> {
        BranchedKStream {
            stream: self.clone(),
            predicates: Vec::new(),
        }
    }

    /// Interleaves this stream with another of the same types.
    pub fn merge(&self, other: &KStream<K, V>) -> KStream<K, V> {
        check_same_builder(&self.graph, &other.graph, "merge");
        let node = self
            .graph
            .borrow_mut()
            .add_pass_through::<K, V>("KSTREAM-MERGE", &[self.node, other.node]);
        KStream::new(self.graph.clone(), node, self.key_changed || other.key_changed)
    }

    /// Writes every record to `topic`.
    pub fn to(&self, topic: &str, produced: Produced<K, V>) {
        self.graph.borrow_mut().add_sink(
            self.node,
            TopicRef::External(topic.to_string()),
            produced.key,
            produced.value,
        );
    }

    /// Ships the records through an internal topic partitioned by their
    /// current key, so that each reaches the task that owns its key.
    pub fn repartition(&self, repartitioned: Repartitioned<K, V>) -> KStream<K, V> {
        let mut graph = self.graph.borrow_mut();
        let name = repartitioned
            .name
            .unwrap_or_else(|| graph.new_name("KSTREAM-REPARTITION"));
        let node = graph.add_repartition(self.node, &name, repartitioned.key, repartitioned.value);
        KStream::new(self.graph.clone(), node, false)
    }

    /// Joins each record with the table's current row for its key; records
    /// without a row are dropped. Table updates alone emit nothing.
    pub fn join<TV: Data, R: Data>(
        &self,
        table: &KTable<K, TV>,
        joiner: impl Fn(&V, &TV) -> R + Send + Sync + 'static,
    ) -> KStream<K, R> {
        self.stream_table_join(table, "KSTREAM-JOIN", move |v, row| row.map(|row| joiner(v, row)))
    }

    /// Like [`join`](Self::join), but records without a row are joined with `None`.
    pub fn left_join<TV: Data, R: Data>(
        &self,
        table: &KTable<K, TV>,
        joiner: impl Fn(&V, Option<&TV>) -> R + Send + Sync + 'static,
    ) -> KStream<K, R> {
        self.stream_table_join(table, "KSTREAM-LEFTJOIN", move |v, row| Some(joiner(v, row)))
    }

    fn stream_table_join<TV: Data, R: Data>(
        &self,
        table: &KTable<K, TV>,
        prefix: &str,
        join: impl Fn(&V, Option<&TV>) -> Option<R> + Send + Sync + 'static,
    ) -> KStream<K, R> {
        let join: StreamJoiner<V, TV, R> = Arc::new(join);
        check_same_builder(&self.graph, &table.graph, "join");
        let getter = table.getter.clone();
        let mut graph = self.graph.borrow_mut();
        let node = graph.add_processor(prefix, &[self.node], table.getter_stores.clone(), move |task, out| {
            Ok(StreamTableJoinNode {
                table: getter(task)?,
                join: join.clone(),
                out,
            })
        });
        if self.key_changed {
            refuse_changed_key(&mut graph, node);
        }
        drop(graph);
        KStream::new(self.graph.clone(), node, false)
    }

    /// Groups by a new key, through a repartition topic.
    pub fn group_by<K2: Data>(
        &self,
        selector: impl Fn(&K, &V) -> K2 + Send + Sync + 'static,
        grouped: Grouped<K2, V>,
    ) -> KGroupedStream<K2, V> {
        KGroupedStream::new(self.select_key(selector), grouped, true)
    }

    /// Groups by the current key; repartitions only if the key may have changed.
    pub fn group_by_key(&self, grouped: Grouped<K, V>) -> KGroupedStream<K, V> {
        KGroupedStream::new(self.clone(), grouped, self.key_changed)
    }
}

/// The branches of a [`KStream::split`] being declared.
pub struct BranchedKStream<K, V> {
    stream: KStream<K, V>,
    predicates: Vec<Predicate<K, V>>,
}

impl<K: Data, V: Data> BranchedKStream<K, V> {
    /// Adds a branch for the records that no earlier branch took and that
    /// satisfy `predicate`.
    pub fn branch(mut self, predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> Self {
        self.predicates.push(Arc::new(predicate));
        self
    }

    /// Ends the split with a last branch for the records no branch took;
    /// returns the branches in order, that one last.
    pub fn default_branch(self) -> Vec<KStream<K, V>> {
        self.finish(true)
    }

    /// Ends the split; records no branch took are dropped.
    pub fn no_default_branch(self) -> Vec<KStream<K, V>> {
        self.finish(false)
    }

    fn finish(self, has_default: bool) -> Vec<KStream<K, V>> {
        let KStream {
            graph,
            node,
            key_changed,
            ..
        } = self.stream;
        let branches = self.predicates.len() + usize::from(has_default);
        let predicates = self.predicates;
        let split = graph
            .borrow_mut()
            .add_processor("KSTREAM-BRANCH", &[node], Vec::new(), move |_, out| {
                Ok(SplitNode {
                    predicates: predicates.clone(),
                    has_default,
                    out,
                })
            });
        (0..branches)
            .map(|_| {
                let branch = graph
                    .borrow_mut()
                    .add_pass_through::<K, V>("KSTREAM-BRANCHCHILD", &[split]);
                KStream::new(graph.clone(), branch, key_changed)
            })
            .collect()
    }
}

/// Reports a join whose stream's key may have changed since it was read,
/// so that its records need not sit on their key's partition.
pub(super) fn refuse_changed_key(graph: &mut TopologyBuilder, node: usize) {
    let message = format!(
        "{}: a stream's key may have changed (map, select_key, flat_map) before this join, so records may not sit \
         on their key's partition; call repartition(Repartitioned::with(..)) before the join",
        graph.node_name(node)
    );
    graph.error(message);
}
