//! `KTable`: the latest value per key, as a changelog of updates.

use super::{check_same_builder, Data, GetterFactory, Graph, Grouped, KGroupedTable, KStream, Produced};
use crate::processor::aggregate::{Selector, TableGroupByNode};
use crate::processor::join::{Combine, JoinGetter, TableJoinNode};
use crate::processor::table::{MappedGetter, TableMapNode, TableMapper, ToStreamNode};
use crate::processor::GetterRef;
use crate::record::Change;
use crate::runtime::TaskBuilder;
use crate::serde::{Nullable, SerdeRef};
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;

/// A table with keys `K` and values `V`.
///
/// Every update forwards downstream; a deleted key forwards a tombstone.
/// Derived tables (filter, map_values, joins) are not stored: a lookup
/// computes their value from the stores of the tables they come from.
///
/// ```
/// use weir::{StreamsBuilder, Consumed, Produced, serde::{Json, Utf8}};
/// let builder = StreamsBuilder::new();
/// let users = builder.table("users", Consumed::with(Utf8, Json::<String>::new()));
/// let prefs = builder.table("prefs", Consumed::with(Utf8, Json::<bool>::new()));
/// users
///     .left_join(&prefs, |email, dark| (email.clone(), dark.copied().unwrap_or(false)))
///     .to("profiles", Produced::with(Utf8, Json::new()));
/// println!("{}", builder.build().unwrap().describe());
/// ```
pub struct KTable<K, V> {
    pub(crate) graph: Graph,
    pub(crate) node: usize,
    pub(crate) getter: GetterFactory<K, V>,
    /// The stores the getter reads; nodes that use the getter must run in
    /// the same task as these stores.
    pub(crate) getter_stores: Vec<String>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for KTable<K, V> {
    fn clone(&self) -> Self {
        KTable {
            graph: self.graph.clone(),
            node: self.node,
            getter: self.getter.clone(),
            getter_stores: self.getter_stores.clone(),
            _types: PhantomData,
        }
    }
}

impl<K: Data, V: Data> KTable<K, V> {
    pub(crate) fn new(graph: Graph, node: usize, getter: GetterFactory<K, V>, getter_stores: Vec<String>) -> Self {
        KTable {
            graph,
            node,
            getter,
            getter_stores,
            _types: PhantomData,
        }
    }

    fn map_table<V2: Data>(
        &self,
        prefix: &str,
        mapper: impl Fn(&K, V) -> Option<V2> + Send + Sync + 'static,
    ) -> KTable<K, V2> {
        let mapper: TableMapper<K, V, V2> = Arc::new(mapper);
        let node = self
            .graph
            .borrow_mut()
            .add_processor(prefix, &[self.node], Vec::new(), {
                let mapper = mapper.clone();
                move |_, out| {
                    Ok(TableMapNode {
                        mapper: mapper.clone(),
                        out,
                    })
                }
            });
        let parent = self.getter.clone();
        let getter: GetterFactory<K, V2> = Arc::new(move |task: &mut TaskBuilder<'_>| {
            Ok(Rc::new(MappedGetter {
                parent: parent(task)?,
                mapper: mapper.clone(),
            }) as GetterRef<K, V2>)
        });
        KTable::new(self.graph.clone(), node, getter, self.getter_stores.clone())
    }

    /// Keeps the rows for which `predicate` holds; a row that stops matching
    /// is deleted downstream.
    pub fn filter(&self, predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> KTable<K, V> {
        self.map_table("KTABLE-FILTER", move |k, v| predicate(k, &v).then_some(v))
    }

    /// Drops the rows for which `predicate` holds.
    pub fn filter_not(&self, predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> KTable<K, V> {
        self.filter(move |k, v| !predicate(k, v))
    }

    /// Maps every row's value.
    pub fn map_values<V2: Data>(&self, mapper: impl Fn(V) -> V2 + Send + Sync + 'static) -> KTable<K, V2> {
        self.map_table("KTABLE-MAPVALUES", move |_, v| Some(mapper(v)))
    }

    /// The table's updates as a stream: `Some(value)` for an upsert, `None`
    /// for a deletion.
    pub fn to_stream(&self) -> KStream<K, Option<V>> {
        let node = self
            .graph
            .borrow_mut()
            .add_processor("KTABLE-TOSTREAM", &[self.node], Vec::new(), |_, out| {
                Ok(ToStreamNode::<K, V> { out })
            });
        KStream::new(self.graph.clone(), node, false)
    }

    /// Writes every update to `topic`, deletions as tombstones (null values).
    pub fn to(&self, topic: &str, produced: Produced<K, V>) {
        let value: SerdeRef<Option<V>> = Arc::new(Nullable(produced.value));
        self.to_stream().to(
            topic,
            Produced {
                key: produced.key,
                value,
                name: produced.name,
            },
        );
    }

    /// Inner join: a row for each key present in both tables.
    pub fn join<V2: Data, R: Data>(
        &self,
        other: &KTable<K, V2>,
        joiner: impl Fn(&V, &V2) -> R + Send + Sync + 'static,
    ) -> KTable<K, R> {
        self.table_join(other, "KTABLE-JOIN", move |a, b| Some(joiner(a?, b?)))
    }

    /// Left join: a row for each key of this table, joined with the other's
    /// row when there is one.
    pub fn left_join<V2: Data, R: Data>(
        &self,
        other: &KTable<K, V2>,
        joiner: impl Fn(&V, Option<&V2>) -> R + Send + Sync + 'static,
    ) -> KTable<K, R> {
        self.table_join(other, "KTABLE-LEFTJOIN", move |a, b| Some(joiner(a?, b)))
    }

    /// Outer join: a row for each key present in either table.
    pub fn outer_join<V2: Data, R: Data>(
        &self,
        other: &KTable<K, V2>,
        joiner: impl Fn(Option<&V>, Option<&V2>) -> R + Send + Sync + 'static,
    ) -> KTable<K, R> {
        self.table_join(other, "KTABLE-OUTERJOIN", move |a, b| {
            (a.is_some() || b.is_some()).then(|| joiner(a, b))
        })
    }

    /// Both sides get a node that combines their change with the other
    /// side's current row; a merge node unites their outputs.
    fn table_join<V2: Data, R: Data>(
        &self,
        other: &KTable<K, V2>,
        prefix: &str,
        combine: impl Fn(Option<&V>, Option<&V2>) -> Option<R> + Send + Sync + 'static,
    ) -> KTable<K, R> {
        let combine: Combine<V, V2, R> = Arc::new(combine);
        check_same_builder(&self.graph, &other.graph, "join");
        let mut graph = self.graph.borrow_mut();
        let this_side = {
            let (combine, other_getter) = (combine.clone(), other.getter.clone());
            graph.add_processor(
                &format!("{prefix}THIS"),
                &[self.node],
                other.getter_stores.clone(),
                move |task, out| {
                    Ok(TableJoinNode {
                        other: other_getter(task)?,
                        combine: combine.clone(),
                        out,
                    })
                },
            )
        };
        let other_side = {
            let flipped: Combine<V2, V, R> = {
                let combine = combine.clone();
                Arc::new(move |b: Option<&V2>, a: Option<&V>| combine(a, b))
            };
            let this_getter = self.getter.clone();
            graph.add_processor(
                &format!("{prefix}OTHER"),
                &[other.node],
                self.getter_stores.clone(),
                move |task, out| {
                    Ok(TableJoinNode {
                        other: this_getter(task)?,
                        combine: flipped.clone(),
                        out,
                    })
                },
            )
        };
        let merged = graph.add_pass_through::<K, Change<R>>("KTABLE-MERGE", &[this_side, other_side]);
        drop(graph);
        let (left, right) = (self.getter.clone(), other.getter.clone());
        let getter: GetterFactory<K, R> = Arc::new(move |task: &mut TaskBuilder<'_>| {
            Ok(Rc::new(JoinGetter {
                left: left(task)?,
                right: right(task)?,
                combine: combine.clone(),
            }) as GetterRef<K, R>)
        });
        let mut stores = self.getter_stores.clone();
        stores.extend(other.getter_stores.iter().cloned());
        stores.sort();
        stores.dedup();
        KTable::new(self.graph.clone(), merged, getter, stores)
    }

    /// Groups rows by a new key and value, for a table aggregation. A row
    /// that moves to another group is subtracted from the old one.
    pub fn group_by<K2: Data + PartialEq, V2: Data>(
        &self,
        selector: impl Fn(&K, &V) -> (K2, V2) + Send + Sync + 'static,
        grouped: Grouped<K2, V2>,
    ) -> KGroupedTable<K2, V2> {
        let selector: Selector<K, V, K2, V2> = Arc::new(selector);
        let node = self
            .graph
            .borrow_mut()
            .add_processor("KTABLE-SELECT", &[self.node], Vec::new(), move |_, out| {
                Ok(TableGroupByNode {
                    selector: selector.clone(),
                    out,
                })
            });
        KGroupedTable::new(self.graph.clone(), node, grouped)
    }
}
