//! Grouped streams and tables, and their aggregations.

use super::{required_serde, store_getter, Data, Graph, Grouped, KStream, KTable, Materialized};
use crate::processor::aggregate::{Adder, Counted, CountedSerde, StreamAggregateNode, Subtractor, TableAggregateNode};
use crate::processor::table::MappedGetter;
use crate::processor::GetterRef;
use crate::record::Change;
use crate::serde::{ChangeSerde, SerdeRef, I64};
use crate::topology::{StoreLayout, TopologyBuilder};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// A stream grouped by key, ready to aggregate.
///
/// ```
/// use weir::{StreamsBuilder, Consumed, Grouped, Materialized, serde::{Json, Utf8}};
/// let builder = StreamsBuilder::new();
/// let totals = builder
///     .stream("payments", Consumed::with(Utf8, Json::<u64>::new()))
///     .group_by_key(Grouped::with(Utf8, Json::new()))
///     .aggregate(|| 0u64, |_, amount, total| total + amount, Materialized::with(Json::new()).with_name("totals"));
/// # let _ = totals;
/// ```
pub struct KGroupedStream<K, V> {
    stream: KStream<K, V>,
    grouped: Grouped<K, V>,
    repartition: bool,
}

impl<K, V> Clone for KGroupedStream<K, V> {
    fn clone(&self) -> Self {
        KGroupedStream {
            stream: self.stream.clone(),
            grouped: self.grouped.clone(),
            repartition: self.repartition,
        }
    }
}

impl<K: Data, V: Data> KGroupedStream<K, V> {
    pub(crate) fn new(stream: KStream<K, V>, grouped: Grouped<K, V>, repartition: bool) -> Self {
        KGroupedStream {
            stream,
            grouped,
            repartition,
        }
    }

    /// The number of records per key.
    pub fn count(&self, materialized: Materialized<i64>) -> KTable<K, i64> {
        let value = materialized.value.clone().unwrap_or_else(|| Arc::new(I64));
        self.aggregate_with(
            |_, _, count| count.unwrap_or(0) + 1,
            value,
            (materialized.name, materialized.retention),
        )
    }

    /// Combines the values of each key, the first value being the start.
    pub fn reduce(
        &self,
        reducer: impl Fn(V, V) -> V + Send + Sync + 'static,
        materialized: Materialized<V>,
    ) -> KTable<K, V> {
        let value = materialized.value.clone().unwrap_or_else(|| self.grouped.value.clone());
        self.aggregate_with(
            move |_, v, agg| match agg {
                Some(agg) => reducer(agg, v),
                None => v,
            },
            value,
            (materialized.name, materialized.retention),
        )
    }

    /// Folds the values of each key into an aggregate that starts at `init()`.
    /// The store needs the aggregate's serde: `Materialized::with(serde)`.
    pub fn aggregate<A: Data>(
        &self,
        init: impl Fn() -> A + Send + Sync + 'static,
        adder: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
        materialized: Materialized<A>,
    ) -> KTable<K, A> {
        let value = required_serde(&self.stream.graph, materialized.value);
        self.aggregate_with(
            move |k, v, agg| adder(k, v, agg.unwrap_or_else(&init)),
            value,
            (materialized.name, materialized.retention),
        )
    }

    /// The node whose records an aggregation into `store` takes: the
    /// stream's, or a repartition topic's when the key may have changed
    /// (named after the grouping, or else after the store).
    pub(super) fn input(&self, graph: &mut TopologyBuilder, store: &str) -> usize {
        if !self.repartition {
            return self.stream.node;
        }
        let topic = self.grouped.name.clone().unwrap_or_else(|| store.to_string());
        graph.add_repartition(
            self.stream.node,
            &topic,
            self.grouped.key.clone(),
            self.grouped.value.clone(),
        )
    }

    pub(super) fn graph(&self) -> &Graph {
        &self.stream.graph
    }

    pub(super) fn grouped(&self) -> &Grouped<K, V> {
        &self.grouped
    }

    fn aggregate_with<A: Data>(
        &self,
        adder: impl Fn(&K, V, Option<A>) -> A + Send + Sync + 'static,
        value_serde: SerdeRef<A>,
        (name, retention): (Option<String>, Option<Duration>),
    ) -> KTable<K, A> {
        let adder: Adder<K, V, A> = Arc::new(adder);
        let graph = self.stream.graph.clone();
        let mut g = graph.borrow_mut();
        refuse_retention(&mut g, retention);
        let store = name.unwrap_or_else(|| g.new_name("KSTREAM-AGGREGATE-STATE-STORE"));
        g.add_store(&store, StoreLayout::Plain);
        let input = self.input(&mut g, &store);
        let getter = store_getter(&store, self.grouped.key.clone(), value_serde);
        let node = g.add_processor("KSTREAM-AGGREGATE", &[input], vec![store.clone()], {
            let getter = getter.clone();
            move |task, out| {
                let table = getter.kept_table(task, |aggregate| aggregate, out)?;
                Ok(StreamAggregateNode {
                    table,
                    adder: adder.clone(),
                })
            }
        });
        drop(g);
        KTable::new(graph, node, getter.into_factory(), vec![store])
    }
}

/// A table re-grouped by [`KTable::group_by`], ready to aggregate. Each
/// aggregation adds new rows and subtracts the rows they replace; a group
/// whose last row leaves is deleted.
pub struct KGroupedTable<K, V> {
    graph: Graph,
    node: usize,
    grouped: Grouped<K, V>,
}

impl<K: Data, V: Data> KGroupedTable<K, V> {
    pub(crate) fn new(graph: Graph, node: usize, grouped: Grouped<K, V>) -> Self {
        KGroupedTable { graph, node, grouped }
    }

    /// The number of rows per group.
    pub fn count(&self, materialized: Materialized<i64>) -> KTable<K, i64> {
        let value = materialized.value.clone().unwrap_or_else(|| Arc::new(I64));
        self.aggregate_with(
            |_, _, count| count.unwrap_or(0) + 1,
            |_, _, count| count - 1,
            value,
            (materialized.name, materialized.retention),
        )
    }

    /// Combines the rows of each group with `adder`, taking replaced rows
    /// out with `subtractor`.
    pub fn reduce(
        &self,
        adder: impl Fn(V, V) -> V + Send + Sync + 'static,
        subtractor: impl Fn(V, V) -> V + Send + Sync + 'static,
        materialized: Materialized<V>,
    ) -> KTable<K, V> {
        let value = materialized.value.clone().unwrap_or_else(|| self.grouped.value.clone());
        self.aggregate_with(
            move |_, v, agg| match agg {
                Some(agg) => adder(agg, v),
                None => v,
            },
            move |_, v, agg| subtractor(agg, v),
            value,
            (materialized.name, materialized.retention),
        )
    }

    /// Folds each group's rows into an aggregate that starts at `init()`.
    pub fn aggregate<A: Data>(
        &self,
        init: impl Fn() -> A + Send + Sync + 'static,
        adder: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
        subtractor: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
        materialized: Materialized<A>,
    ) -> KTable<K, A> {
        let value = required_serde(&self.graph, materialized.value);
        self.aggregate_with(
            move |k, v, agg| adder(k, v, agg.unwrap_or_else(&init)),
            subtractor,
            value,
            (materialized.name, materialized.retention),
        )
    }

    fn aggregate_with<A: Data>(
        &self,
        adder: impl Fn(&K, V, Option<A>) -> A + Send + Sync + 'static,
        subtractor: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
        value_serde: SerdeRef<A>,
        (name, retention): (Option<String>, Option<Duration>),
    ) -> KTable<K, A> {
        let adder: Adder<K, V, A> = Arc::new(adder);
        let subtractor: Subtractor<K, V, A> = Arc::new(subtractor);
        let mut g = self.graph.borrow_mut();
        refuse_retention(&mut g, retention);
        let store = name.unwrap_or_else(|| g.new_name("KTABLE-AGGREGATE-STATE-STORE"));
        g.add_store(&store, StoreLayout::Counted);
        let topic = self.grouped.name.clone().unwrap_or_else(|| store.clone());
        let change_serde: SerdeRef<Change<V>> = Arc::new(ChangeSerde::new(self.grouped.value.clone()));
        let input = g.add_repartition(self.node, &topic, self.grouped.key.clone(), change_serde);
        let counted: SerdeRef<Counted<A>> = Arc::new(CountedSerde(value_serde));
        let store_access = store_getter(&store, self.grouped.key.clone(), counted);
        let node = g.add_processor("KTABLE-AGGREGATE", &[input], vec![store.clone()], {
            let store_access = store_access.clone();
            move |task, out| {
                let table = store_access.kept_table(task, |counted: Counted<A>| counted.aggregate, out)?;
                Ok(TableAggregateNode {
                    table,
                    adder: adder.clone(),
                    subtractor: subtractor.clone(),
                })
            }
        });
        drop(g);
        let getter = Arc::new(move |task: &mut crate::runtime::TaskBuilder<'_>| {
            Ok(Rc::new(MappedGetter {
                parent: store_access.typed(task)? as GetterRef<K, Counted<A>>,
                mapper: Arc::new(|_: &K, counted: Counted<A>| Some(counted.aggregate)),
            }) as GetterRef<K, A>)
        });
        KTable::new(self.graph.clone(), node, getter, vec![store])
    }
}

/// Reports a retention given to an aggregation without windows.
fn refuse_retention(graph: &mut TopologyBuilder, retention: Option<Duration>) {
    if retention.is_some() {
        graph.error("Materialized::with_retention is for windowed aggregations only".to_string());
    }
}
