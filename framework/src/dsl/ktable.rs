//! `KTable`: the latest value per key, as a changelog of updates.

use super::{
    check_same_builder, store_getter, Data, ForeignKeyJoined, GetterFactory, Graph, Grouped, KGroupedTable, KStream,
    Produced,
};
use crate::processor::aggregate::{Selector, TableGroupByNode};
use crate::processor::fk_join::{
    ForeignKeyExtractor, ForeignKeyJoiner, HashSerde, LeftChangeNode, NoForeignKeyNode, Request, ResolveNode, Response,
    ResponseSerde, RightChangeNode, SubscribeNode, SubscriptionKeySerde, SubscriptionNode, SubscriptionSerde,
    ToSubscriptionNode, ValueHasher,
};
use crate::processor::join::{Combine, JoinGetter, TableJoinNode};
use crate::processor::table::{MappedGetter, TableMapNode, TableMapper, ToStreamNode};
use crate::processor::GetterRef;
use crate::record::Change;
use crate::runtime::TaskBuilder;
use crate::serde::{Nullable, SerdeRef};
use crate::topology::{StoreLayout, TopicRef};
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
    /// For a windowed aggregation's table: when each row's window closes.
    pub(crate) window_close: Option<WindowClose<K>>,
    _types: PhantomData<fn() -> (K, V)>,
}

/// When a windowed table's row is final: its window's end plus
/// `after_end` of stream time.
pub(crate) struct WindowClose<K> {
    pub end_of: Arc<dyn Fn(&K) -> i64 + Send + Sync>,
    pub after_end: i64,
}

impl<K> Clone for WindowClose<K> {
    fn clone(&self) -> Self {
        WindowClose {
            end_of: self.end_of.clone(),
            after_end: self.after_end,
        }
    }
}

impl<K, V> Clone for KTable<K, V> {
    fn clone(&self) -> Self {
        KTable {
            graph: self.graph.clone(),
            node: self.node,
            getter: self.getter.clone(),
            getter_stores: self.getter_stores.clone(),
            window_close: self.window_close.clone(),
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
            window_close: None,
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
        let mut table = KTable::new(self.graph.clone(), node, getter, self.getter_stores.clone());
        table.window_close = self.window_close.clone();
        table
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

    /// Foreign-key inner join: each row of this table joined with the row of
    /// `other` whose key `foreign_key` reads from its value; a row without
    /// a foreign key, or whose foreign key has no row in `other`, has no
    /// result. The result follows both tables: a change of a row of
    /// `other` updates the result of every row that names it.
    ///
    /// The tables need not be co-partitioned: the join ships each row's
    /// subscription to `other`'s partition of its foreign key and the
    /// answer back (see [`ForeignKeyJoined`] for its topics and stores).
    /// An answer to a version of a row that has changed since is dropped,
    /// so the result never pairs a row with a foreign key it no longer
    /// names, however the partitions interleave.
    ///
    /// ```
    /// use weir::{ForeignKeyJoined, StreamsBuilder, Consumed, Produced, serde::{Json, Utf8}};
    /// # #[derive(Clone, serde::Serialize, serde::Deserialize)]
    /// # struct Order { user_id: String, total: u64 }
    /// let builder = StreamsBuilder::new();
    /// let orders = builder.table("orders", Consumed::with(Utf8, Json::<Order>::new()));
    /// let users = builder.table("users", Consumed::with(Utf8, Json::<String>::new()));
    /// orders
    ///     .join_on_foreign_key(
    ///         &users,
    ///         |order| Some(order.user_id.clone()),
    ///         |order, email| format!("{} for {email}", order.total),
    ///         ForeignKeyJoined::with(Utf8, Json::new(), Utf8, Json::new(), Json::new()).named("orders-by-user"),
    ///     )
    ///     .to("orders-with-email", Produced::with(Utf8, Json::new()));
    /// # builder.build().unwrap();
    /// ```
    pub fn join_on_foreign_key<KO: Data + PartialEq, VO: Data, R: Data>(
        &self,
        other: &KTable<KO, VO>,
        foreign_key: impl Fn(&V) -> Option<KO> + Send + Sync + 'static,
        joiner: impl Fn(&V, &VO) -> R + Send + Sync + 'static,
        joined: ForeignKeyJoined<K, V, KO, VO, R>,
    ) -> KTable<K, R> {
        self.foreign_key_join(
            other,
            "KTABLE-FK-JOIN",
            Arc::new(foreign_key),
            Arc::new(move |v: &V, vo: Option<&VO>| vo.map(|vo| joiner(v, vo))),
            joined,
        )
    }

    /// Foreign-key left join: like [`KTable::join_on_foreign_key`], with a
    /// result for every row of this table, joined with `None` when it names
    /// no foreign key or its foreign key has no row in `other`.
    pub fn left_join_on_foreign_key<KO: Data + PartialEq, VO: Data, R: Data>(
        &self,
        other: &KTable<KO, VO>,
        foreign_key: impl Fn(&V) -> Option<KO> + Send + Sync + 'static,
        joiner: impl Fn(&V, Option<&VO>) -> R + Send + Sync + 'static,
        joined: ForeignKeyJoined<K, V, KO, VO, R>,
    ) -> KTable<K, R> {
        self.foreign_key_join(
            other,
            "KTABLE-FK-LEFTJOIN",
            Arc::new(foreign_key),
            Arc::new(move |v: &V, vo: Option<&VO>| Some(joiner(v, vo))),
            joined,
        )
    }

    /// Builds a foreign-key join; see `processor::fk_join` for how its
    /// nodes work together.
    fn foreign_key_join<KO: Data + PartialEq, VO: Data, R: Data>(
        &self,
        other: &KTable<KO, VO>,
        prefix: &str,
        foreign_key: ForeignKeyExtractor<V, KO>,
        joiner: ForeignKeyJoiner<V, VO, R>,
        joined: ForeignKeyJoined<K, V, KO, VO, R>,
    ) -> KTable<K, R> {
        check_same_builder(&self.graph, &other.graph, "join_on_foreign_key");
        let mut g = self.graph.borrow_mut();
        let name = joined.name.clone().unwrap_or_else(|| g.new_name(prefix));
        let subscription_topic = format!("{name}-subscription");
        let hasher_topic = TopicRef::Repartition(subscription_topic.clone());
        let hasher = {
            let serde = joined.value.clone();
            move |task: &TaskBuilder<'_>| ValueHasher {
                serde: serde.clone(),
                topic: task.topic(&hasher_topic),
            }
        };
        let hasher = Arc::new(hasher);

        // This table's side: each change becomes subscriptions, shipped to
        // the partition of `other` that holds their foreign key.
        let requests =
            g.add_processor::<K, Change<V>, K, _, _, _>(&format!("{prefix}-SUBSCRIBE"), &[self.node], Vec::new(), {
                let (foreign_key, hasher) = (foreign_key.clone(), hasher.clone());
                move |task, out| {
                    Ok(LeftChangeNode {
                        subscribe: SubscribeNode {
                            foreign_key: foreign_key.clone(),
                            hasher: hasher(task),
                        },
                        out,
                    })
                }
            });
        let to_subscription = g.add_processor::<K, _, KO, _, _, _>(
            &format!("{prefix}-SUBSCRIPTION-SEND"),
            &[requests],
            Vec::new(),
            |_, out| Ok(ToSubscriptionNode { out }),
        );
        let subscriptions_in = g.add_repartition(
            to_subscription,
            &subscription_topic,
            joined.foreign_key.clone(),
            Arc::new(SubscriptionSerde {
                primary_key: joined.key.clone(),
            }),
        );

        // `other`'s side: subscriptions are kept and answered, and a change
        // of a row answers every subscriber of its key.
        let subscription_store = format!("{name}-subscriptions");
        g.add_store(&subscription_store, StoreLayout::Plain);
        let key_serdes = SubscriptionKeySerde {
            foreign_key: joined.foreign_key.clone(),
            primary_key: joined.key.clone(),
        };
        let subscriptions = store_getter(&subscription_store, Arc::new(key_serdes.clone()), Arc::new(HashSerde));
        let mut stores = vec![subscription_store.clone()];
        stores.extend(other.getter_stores.iter().cloned());
        let answered = g.add_processor::<KO, _, K, Response<VO>, _, _>(
            &format!("{prefix}-SUBSCRIPTION-PROCESS"),
            &[subscriptions_in],
            stores,
            {
                let (subscriptions, right) = (subscriptions.clone(), other.getter.clone());
                move |task, out| {
                    Ok(SubscriptionNode {
                        subscriptions: subscriptions.typed(task)?,
                        right: right(task)?,
                        out,
                    })
                }
            },
        );
        let updated = g.add_processor::<KO, Change<VO>, K, Response<VO>, _, _>(
            &format!("{prefix}-FOREIGN-CHANGE"),
            &[other.node],
            vec![subscription_store],
            move |task, out| {
                Ok(RightChangeNode {
                    subscriptions: subscriptions.typed(task)?,
                    key_serdes: key_serdes.clone(),
                    out,
                })
            },
        );
        let responses = g.add_pass_through::<K, Response<VO>>(&format!("{prefix}-RESPONSES"), &[answered, updated]);
        let responses_in = g.add_repartition(
            responses,
            &format!("{name}-response"),
            joined.key.clone(),
            Arc::new(ResponseSerde {
                value: joined.foreign_value.clone(),
            }),
        );

        // Back on this table's side: rows without a foreign key are answered
        // here; an answer for the row as it is now makes the result.
        let unanswered = g.add_processor::<K, Request<KO>, K, Response<VO>, _, _>(
            &format!("{prefix}-NO-FOREIGN-KEY"),
            &[requests],
            Vec::new(),
            |_, out| Ok(NoForeignKeyNode::<K, VO> { out }),
        );
        g.add_store(&name, StoreLayout::Plain);
        let result = store_getter(&name, joined.key.clone(), joined.result.clone());
        let mut stores = vec![name.clone()];
        stores.extend(self.getter_stores.iter().cloned());
        let resolved = g.add_processor::<K, Response<VO>, K, Change<R>, _, _>(
            &format!("{prefix}-RESOLVE"),
            &[responses_in, unanswered],
            stores,
            {
                let (result, left, node) = (result.clone(), self.getter.clone(), name.clone());
                move |task, out| {
                    let table = result.kept_table(task, |row| row, out)?;
                    Ok(ResolveNode {
                        left: left(task)?,
                        hasher: hasher(task),
                        joiner: joiner.clone(),
                        result: table,
                        stale: metrics::counter!(crate::metrics::FK_JOIN_STALE_RESPONSES, "join" => node.clone()),
                    })
                }
            },
        );
        drop(g);
        KTable::new(self.graph.clone(), resolved, result.into_factory(), vec![name])
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
