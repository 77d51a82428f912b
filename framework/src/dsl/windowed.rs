//! Windowed operations: aggregations over time windows and sessions, the
//! suppression of a table's intermediate updates, and joins of two streams
//! within a time difference. See [`crate::window`] for how time and
//! lateness work.

use super::ktable::WindowClose;
use super::{
    check_same_builder, required_serde, store_getter, Data, KGroupedStream, KStream, KTable, Materialized, Serdes,
};
use crate::error::WeirError;
use crate::processor::time_index::{IndexStore, StreamClock, TimeIndex};
use crate::processor::window::{
    HoldUntil, JoinInput, ListSerde, SessionAggregateNode, SlidingWindowAggregateNode, StreamJoin, StreamJoiner,
    SuppressNode, TimeWindowAggregateNode, WindowAdder, WindowTime, EXPIRY, HELD, RECORDS_EXPIRY,
};
use crate::processor::{Processor, TableEmitter};
use crate::serde::{Bytes, ChangeSerde, Serde, SerdeRef, I64};
use crate::state::TypedStore;
use crate::topology::StoreLayout;
use crate::window::{
    millis, JoinWindows, SessionWindows, SlidingWindows, Suppressed, TimeWindows, Windowed, WindowedSerde,
};
use std::rc::Rc;
use std::sync::Arc;

impl<K: Data, V: Data> KGroupedStream<K, V> {
    /// Aggregates per key and time window ([`TimeWindows`]): the result is
    /// a table keyed by [`Windowed`] keys, updated with every record, whose
    /// windows close once stream time passes their end by the grace period.
    ///
    /// ```
    /// use std::time::Duration;
    /// use weir::serde::{Utf8, I64};
    /// use weir::testing::{TestRecord, TopologyTestDriver};
    /// use weir::window::{TimeWindows, Windowed, WindowedSerde};
    /// use weir::{Consumed, Grouped, Materialized, Produced, StreamsBuilder};
    ///
    /// let builder = StreamsBuilder::new();
    /// builder
    ///     .stream("clicks", Consumed::with(Utf8, Utf8))
    ///     .group_by_key(Grouped::with(Utf8, Utf8))
    ///     .windowed_by(TimeWindows::of(Duration::from_secs(60)))
    ///     .count(Materialized::named("clicks-per-minute"))
    ///     .to_stream()
    ///     .to("clicks-per-minute", Produced::with(WindowedSerde::new(Utf8), weir::serde::Nullable(I64)));
    /// let driver = TopologyTestDriver::new(builder.build()?)?;
    /// let clicks = driver.input_topic("clicks", Utf8, Utf8);
    /// for at in [1_000, 59_000, 61_000] {
    ///     clicks.pipe_record(TestRecord::new("ada".to_string(), Some("/".to_string())).at(at))?;
    /// }
    /// let counts = driver.output_topic("clicks-per-minute", WindowedSerde::new(Utf8), weir::serde::Nullable(I64));
    /// assert_eq!(
    ///     counts.read_key_values()?,
    ///     [
    ///         (Windowed::new("ada".to_string(), 0, 60_000), Some(Some(1))),
    ///         (Windowed::new("ada".to_string(), 0, 60_000), Some(Some(2))),
    ///         (Windowed::new("ada".to_string(), 60_000, 120_000), Some(Some(1))),
    ///     ]
    /// );
    /// # Ok::<(), weir::WeirError>(())
    /// ```
    pub fn windowed_by(&self, windows: TimeWindows) -> TimeWindowedKStream<K, V> {
        if let Some(problem) = windows.invalid() {
            self.graph().borrow_mut().error(problem);
        }
        TimeWindowedKStream {
            grouped: self.clone(),
            windows: FixedWindows::Time(windows),
        }
    }

    /// Aggregates per key and sliding window ([`SlidingWindows`]): the
    /// window of `difference` ending at each record, and the one starting
    /// just after it when a later record falls in it. The result is a table
    /// keyed by [`Windowed`] keys (both ends included); a window closes
    /// once stream time passes its end by the grace period. The key's
    /// records are kept (`<store>-records`) until no open window can hold
    /// them, and a window a record touches is folded again from them.
    ///
    /// ```
    /// use std::time::Duration;
    /// use weir::serde::{Utf8, I64};
    /// use weir::testing::{TestRecord, TopologyTestDriver};
    /// use weir::window::{SlidingWindows, Windowed, WindowedSerde};
    /// use weir::{Consumed, Grouped, Materialized, StreamsBuilder};
    ///
    /// let builder = StreamsBuilder::new();
    /// builder
    ///     .stream("clicks", Consumed::with(Utf8, Utf8))
    ///     .group_by_key(Grouped::with(Utf8, Utf8))
    ///     .windowed_by_sliding(SlidingWindows::of(Duration::from_secs(10)))
    ///     // Closed windows stay a minute in the store, to be read.
    ///     .count(Materialized::named("clicks-in-10s").with_retention(Duration::from_secs(60)));
    /// let driver = TopologyTestDriver::new(builder.build()?)?;
    /// let clicks = driver.input_topic("clicks", Utf8, Utf8);
    /// for at in [20_000, 25_000, 33_000] {
    ///     clicks.pipe_record(TestRecord::new("ada".to_string(), Some("/".to_string())).at(at))?;
    /// }
    /// let windows = driver.store_contents("clicks-in-10s", WindowedSerde::new(Utf8), I64)?;
    /// let count = |start, end| windows.get(&Windowed::new("ada".to_string(), start, end)).copied();
    /// assert_eq!(count(10_000, 20_000), Some(1));
    /// assert_eq!(count(15_000, 25_000), Some(2));
    /// assert_eq!(count(20_001, 30_001), Some(1)); // after the first: the second
    /// assert_eq!(count(23_000, 33_000), Some(2));
    /// assert_eq!(count(25_001, 35_001), Some(1));
    /// assert_eq!(windows.len(), 5);
    /// # Ok::<(), weir::WeirError>(())
    /// ```
    pub fn windowed_by_sliding(&self, windows: SlidingWindows) -> TimeWindowedKStream<K, V> {
        if windows.difference_ms <= 0 {
            self.graph()
                .borrow_mut()
                .error("SlidingWindows: the time difference must be at least 1 ms".to_string());
        }
        TimeWindowedKStream {
            grouped: self.clone(),
            windows: FixedWindows::Sliding(windows),
        }
    }

    /// Aggregates per key and session ([`SessionWindows`]): the result is a
    /// table keyed by [`Windowed`] keys whose window runs from a session's
    /// first record to its last. When a record joins sessions, the merged
    /// ones are deleted from the table and the joined session takes their
    /// place. A session closes once stream time is past its end by the gap
    /// and the grace period: no record on time can reach it then, and one
    /// that would change it is late.
    pub fn windowed_by_session(&self, windows: SessionWindows) -> SessionWindowedKStream<K, V> {
        SessionWindowedKStream {
            grouped: self.clone(),
            windows,
        }
    }
}

/// A grouped stream cut into time windows, ready to aggregate; see
/// [`KGroupedStream::windowed_by`] and
/// [`KGroupedStream::windowed_by_sliding`].
pub struct TimeWindowedKStream<K, V> {
    grouped: KGroupedStream<K, V>,
    windows: FixedWindows,
}

/// Windows of a fixed size: set by the clock, or by the records.
#[derive(Debug, Clone, Copy)]
enum FixedWindows {
    Time(TimeWindows),
    Sliding(SlidingWindows),
}

impl<K: Data, V: Data> TimeWindowedKStream<K, V> {
    /// The number of records per key and window.
    pub fn count(&self, materialized: Materialized<i64>) -> KTable<Windowed<K>, i64> {
        let value = materialized.value.clone().unwrap_or_else(|| Arc::new(I64));
        self.aggregate_with(Arc::new(|_, _, count| count.unwrap_or(0) + 1), value, materialized)
    }

    /// Combines the values of each key and window, the first being the start.
    pub fn reduce(
        &self,
        reducer: impl Fn(V, V) -> V + Send + Sync + 'static,
        materialized: Materialized<V>,
    ) -> KTable<Windowed<K>, V> {
        let value = materialized
            .value
            .clone()
            .unwrap_or_else(|| self.grouped.grouped().value.clone());
        let adder = move |_: &K, value: V, aggregate: Option<V>| match aggregate {
            Some(aggregate) => reducer(aggregate, value),
            None => value,
        };
        self.aggregate_with(Arc::new(adder), value, materialized)
    }

    /// Folds the values of each key and window into an aggregate that
    /// starts at `init()`; the store needs its serde.
    pub fn aggregate<A: Data>(
        &self,
        init: impl Fn() -> A + Send + Sync + 'static,
        adder: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
        materialized: Materialized<A>,
    ) -> KTable<Windowed<K>, A> {
        let value = required_serde(self.grouped.graph(), materialized.value.clone());
        let adder = move |key: &K, value: V, aggregate: Option<A>| adder(key, value, aggregate.unwrap_or_else(&init));
        self.aggregate_with(Arc::new(adder), value, materialized)
    }

    fn aggregate_with<A: Data>(
        &self,
        adder: WindowAdder<K, V, A>,
        value_serde: SerdeRef<A>,
        materialized: Materialized<A>,
    ) -> KTable<Windowed<K>, A> {
        match self.windows {
            FixedWindows::Time(windows) => windowed_aggregation(
                &self.grouped,
                "KSTREAM-WINDOWED-AGGREGATE",
                (value_serde, materialized),
                windows.grace_ms,
                None,
                move |parts| {
                    Ok(TimeWindowAggregateNode {
                        table: parts.table,
                        windows,
                        time: parts.time,
                        adder: adder.clone(),
                        key_serde: parts.windowed_serde,
                    })
                },
            ),
            // Both ends are in a sliding window: it closes once stream time
            // is past its end by more than the grace period.
            FixedWindows::Sliding(windows) => {
                let key_serde = self.grouped.grouped().key.clone();
                let records: SerdeRef<Vec<V>> = Arc::new(ListSerde(self.grouped.grouped().value.clone()));
                windowed_aggregation(
                    &self.grouped,
                    "KSTREAM-SLIDING-AGGREGATE",
                    (value_serde, materialized),
                    windows.grace_ms.saturating_add(1),
                    Some(records),
                    move |parts| {
                        let records = parts.records.ok_or_else(|| {
                            WeirError::InvalidTopology("a sliding aggregation without its records' store".into())
                        })?;
                        Ok(SlidingWindowAggregateNode {
                            table: parts.table,
                            windows,
                            time: parts.time,
                            records,
                            records_expiry: TimeIndex::new(parts.index, RECORDS_EXPIRY),
                            adder: adder.clone(),
                            key_serde: key_serde.clone(),
                            windowed_serde: parts.windowed_serde,
                        })
                    },
                )
            }
        }
    }
}

/// A grouped stream cut into sessions, ready to aggregate; see
/// [`KGroupedStream::windowed_by_session`].
///
/// ```
/// use std::time::Duration;
/// use weir::serde::{Utf8, I64};
/// use weir::testing::{TestRecord, TopologyTestDriver};
/// use weir::window::{SessionWindows, Windowed, WindowedSerde};
/// use weir::{Consumed, Grouped, Materialized, StreamsBuilder};
///
/// let builder = StreamsBuilder::new();
/// builder
///     .stream("clicks", Consumed::with(Utf8, Utf8))
///     .group_by_key(Grouped::with(Utf8, Utf8))
///     .windowed_by_session(SessionWindows::with_inactivity_gap(Duration::from_secs(10)).grace(Duration::from_secs(30)))
///     .count(Materialized::named("visits"));
/// let driver = TopologyTestDriver::new(builder.build()?)?;
/// let clicks = driver.input_topic("clicks", Utf8, Utf8);
/// // 12 s comes after 30 s, within the grace period: it joins the first
/// // session's two records.
/// for at in [0, 5_000, 30_000, 12_000] {
///     clicks.pipe_record(TestRecord::new("ada".to_string(), Some("/".to_string())).at(at))?;
/// }
/// let visits = driver.store_contents("visits", WindowedSerde::new(Utf8), I64)?;
/// assert_eq!(visits.get(&Windowed::new("ada".to_string(), 0, 12_000)), Some(&3));
/// assert_eq!(visits.get(&Windowed::new("ada".to_string(), 30_000, 30_000)), Some(&1));
/// # Ok::<(), weir::WeirError>(())
/// ```
pub struct SessionWindowedKStream<K, V> {
    grouped: KGroupedStream<K, V>,
    windows: SessionWindows,
}

impl<K: Data, V: Data> SessionWindowedKStream<K, V> {
    /// The number of records per key and session.
    pub fn count(&self, materialized: Materialized<i64>) -> KTable<Windowed<K>, i64> {
        let value = materialized.value.clone().unwrap_or_else(|| Arc::new(I64));
        self.aggregate_with(
            Arc::new(|_, _, count| count.unwrap_or(0) + 1),
            Arc::new(|_, a, b| a + b),
            value,
            materialized,
        )
    }

    /// Combines the values of each key and session; merging sessions
    /// combines their values with the same `reducer`.
    pub fn reduce(
        &self,
        reducer: impl Fn(V, V) -> V + Send + Sync + 'static,
        materialized: Materialized<V>,
    ) -> KTable<Windowed<K>, V> {
        let value = materialized
            .value
            .clone()
            .unwrap_or_else(|| self.grouped.grouped().value.clone());
        let reducer = Arc::new(reducer);
        let adder = {
            let reducer = reducer.clone();
            move |_: &K, value: V, aggregate: Option<V>| match aggregate {
                Some(aggregate) => reducer(aggregate, value),
                None => value,
            }
        };
        let merger = move |_: &K, a: V, b: V| reducer(a, b);
        self.aggregate_with(Arc::new(adder), Arc::new(merger), value, materialized)
    }

    /// Folds the values of each key and session into an aggregate that
    /// starts at `init()`; `merger` combines two sessions' aggregates when
    /// a record joins them.
    pub fn aggregate<A: Data>(
        &self,
        init: impl Fn() -> A + Send + Sync + 'static,
        adder: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
        merger: impl Fn(&K, A, A) -> A + Send + Sync + 'static,
        materialized: Materialized<A>,
    ) -> KTable<Windowed<K>, A> {
        let value = required_serde(self.grouped.graph(), materialized.value.clone());
        let adder = move |key: &K, value: V, aggregate: Option<A>| adder(key, value, aggregate.unwrap_or_else(&init));
        self.aggregate_with(Arc::new(adder), Arc::new(merger), value, materialized)
    }

    fn aggregate_with<A: Data>(
        &self,
        adder: WindowAdder<K, V, A>,
        merger: crate::processor::window::SessionMerger<K, A>,
        value_serde: SerdeRef<A>,
        materialized: Materialized<A>,
    ) -> KTable<Windowed<K>, A> {
        let windows = self.windows;
        let key_serde = self.grouped.grouped().key.clone();
        // A session closes once stream time is past its end (its last
        // record) by more than the gap and the grace period.
        windowed_aggregation(
            &self.grouped,
            "KSTREAM-SESSION-AGGREGATE",
            (value_serde, materialized),
            windows.gap_ms.saturating_add(windows.grace_ms).saturating_add(1),
            None,
            move |parts| {
                Ok(SessionAggregateNode {
                    table: parts.table,
                    windows,
                    time: parts.time,
                    adder: adder.clone(),
                    merger: merger.clone(),
                    key_serde: key_serde.clone(),
                    windowed_serde: parts.windowed_serde,
                })
            },
        )
    }
}

/// Builds a windowed aggregation: its windows' store (keyed by
/// [`Windowed`] keys, in [`WindowedSerde`]'s format), an index store
/// `<store>-index` with its stream time and expiry, with `records` a store
/// of the key's records by time (`<store>-records`), and the node `make`
/// creates per task. `close_after_end` is how long after a window's end
/// it closes.
fn windowed_aggregation<K: Data, V: Data, A: Data, P: Processor<K, V> + 'static>(
    grouped: &KGroupedStream<K, V>,
    prefix: &str,
    (value_serde, materialized): (SerdeRef<A>, Materialized<A>),
    close_after_end: i64,
    records: Option<SerdeRef<Vec<V>>>,
    make: impl Fn(WindowedParts<K, V, A>) -> Result<P, WeirError> + Send + Sync + 'static,
) -> KTable<Windowed<K>, A> {
    let graph = grouped.graph().clone();
    let mut g = graph.borrow_mut();
    let store = materialized
        .name
        .unwrap_or_else(|| g.new_name(&format!("{prefix}-STATE-STORE")));
    let index = format!("{store}-index");
    let mut stores = vec![store.clone(), index.clone()];
    let records = records.map(|serde| {
        let getter = store_getter(&format!("{store}-records"), Arc::new(Bytes), serde);
        stores.push(getter.name.clone());
        getter
    });
    for name in &stores {
        g.add_store(name, StoreLayout::Plain);
    }
    let input = grouped.input(&mut g, &store);
    let windowed_serde: SerdeRef<Windowed<K>> = Arc::new(WindowedSerde::from_ref(grouped.grouped().key.clone()));
    let getter = store_getter(&store, windowed_serde.clone(), value_serde);
    let index_getter = store_getter(&index, Arc::new(Bytes), Arc::new(Bytes));
    let retention_ms = materialized.retention.map_or(0, millis);
    let node = g.add_processor(prefix, &[input], stores, {
        let getter = getter.clone();
        move |task, out| {
            let table = getter.kept_table(task, |aggregate| aggregate, out)?;
            let index = index_getter.typed(task)?;
            let records = records.as_ref().map(|records| records.typed(task)).transpose()?;
            make(WindowedParts {
                time: WindowTime {
                    clock: StreamClock::new(index.clone()),
                    expiry: TimeIndex::new(index.clone(), EXPIRY),
                    retention_ms,
                },
                table,
                index,
                records,
                windowed_serde: windowed_serde.clone(),
            })
        }
    });
    drop(g);
    let mut table = KTable::new(graph, node, getter.into_factory(), vec![store]);
    table.window_close = Some(WindowClose {
        end_of: Arc::new(|key: &Windowed<K>| key.window.end),
        after_end: close_after_end,
    });
    table
}

/// What a windowed aggregation's node is made of, in one task.
struct WindowedParts<K, V, A> {
    table: Rc<TableEmitter<Windowed<K>, A, A>>,
    time: WindowTime,
    index: IndexStore,
    /// The key's records by time, for sliding windows.
    records: Option<Rc<TypedStore<Vec<u8>, Vec<V>>>>,
    windowed_serde: SerdeRef<Windowed<K>>,
}

impl<K: Data, V: Data> KTable<K, V> {
    /// Holds the table's updates back and passes on fewer of them:
    /// [`Suppressed::UntilWindowCloses`] says a windowed aggregation's
    /// final value per window, once, when the window closes;
    /// [`Suppressed::UntilTimeLimit`] says each key's latest value at most
    /// once per limit. Held updates are kept in a store of their own
    /// (named by `serdes`, or numbered), with its changelog, so that none
    /// is lost when the task moves. Time is the table's stream time: with
    /// no new records, nothing is said.
    ///
    /// ```
    /// use std::time::Duration;
    /// use weir::serde::{Nullable, Utf8, I64};
    /// use weir::testing::{TestRecord, TopologyTestDriver};
    /// use weir::window::{Suppressed, TimeWindows, Windowed, WindowedSerde};
    /// use weir::{Consumed, Grouped, Materialized, Produced, Serdes, StreamsBuilder};
    ///
    /// let builder = StreamsBuilder::new();
    /// builder
    ///     .stream("clicks", Consumed::with(Utf8, Utf8))
    ///     .group_by_key(Grouped::with(Utf8, Utf8))
    ///     .windowed_by(TimeWindows::of(Duration::from_secs(60)))
    ///     .count(Materialized::named("clicks-per-minute"))
    ///     .suppress(Suppressed::UntilWindowCloses, Serdes::with(WindowedSerde::new(Utf8), I64))
    ///     .to_stream()
    ///     .to("final-counts", Produced::with(WindowedSerde::new(Utf8), Nullable(I64)));
    /// let driver = TopologyTestDriver::new(builder.build()?)?;
    /// let clicks = driver.input_topic("clicks", Utf8, Utf8);
    /// for at in [1_000, 2_000, 3_000] {
    ///     clicks.pipe_record(TestRecord::new("ada".to_string(), Some("/".to_string())).at(at))?;
    /// }
    /// let counts = driver.output_topic("final-counts", WindowedSerde::new(Utf8), Nullable(I64));
    /// assert!(counts.read_key_values()?.is_empty());
    /// // A record a minute later closes the first window.
    /// clicks.pipe_record(TestRecord::new("bob".to_string(), Some("/".to_string())).at(60_000))?;
    /// assert_eq!(counts.read_key_values()?, [(Windowed::new("ada".to_string(), 0, 60_000), Some(Some(3)))]);
    /// # Ok::<(), weir::WeirError>(())
    /// ```
    ///
    /// Lookups of a suppressed table (a join on it) see the row its parent
    /// has now, held back or not.
    pub fn suppress(&self, suppressed: Suppressed, serdes: Serdes<K, V>) -> KTable<K, V> {
        let mut g = self.graph.borrow_mut();
        let until = match suppressed {
            Suppressed::UntilWindowCloses => match &self.window_close {
                Some(close) => HoldUntil::WindowCloses {
                    end_of: close.end_of.clone(),
                    close_after_end: close.after_end,
                },
                None => {
                    g.error(
                        "suppress(Suppressed::UntilWindowCloses) needs a windowed aggregation's table (or one \
                         filtered or mapped from it)"
                            .to_string(),
                    );
                    HoldUntil::TimeLimit(0)
                }
            },
            Suppressed::UntilTimeLimit(limit) => HoldUntil::TimeLimit(millis(limit)),
        };
        let until = Arc::new(until);
        let store = serdes
            .name
            .clone()
            .unwrap_or_else(|| g.new_name("KTABLE-SUPPRESS-STATE-STORE"));
        g.add_store(&store, StoreLayout::Plain);
        let index_getter = store_getter(&store, Arc::new(Bytes), Arc::new(Bytes));
        let (key_serde, value_serde) = (serdes.key, serdes.value);
        let node = g.add_processor("KTABLE-SUPPRESS", &[self.node], vec![store], move |task, out| {
            let index = index_getter.typed(task)?;
            let until = match &*until {
                HoldUntil::WindowCloses {
                    end_of,
                    close_after_end,
                } => HoldUntil::WindowCloses {
                    end_of: end_of.clone(),
                    close_after_end: *close_after_end,
                },
                HoldUntil::TimeLimit(limit) => HoldUntil::TimeLimit(*limit),
            };
            Ok(SuppressNode {
                clock: StreamClock::new(index.clone()),
                held: TimeIndex::new(index.clone(), HELD),
                index,
                until,
                key_serde: key_serde.clone(),
                change_serde: ChangeSerde::new(value_serde.clone()),
                out,
            })
        });
        drop(g);
        let mut table = KTable::new(
            self.graph.clone(),
            node,
            self.getter.clone(),
            self.getter_stores.clone(),
        );
        table.window_close = self.window_close.clone();
        table
    }
}

/// The serdes of a stream-stream join's buffers (the key, the left and
/// the right values), and the name of its stores: `<name>-left`,
/// `<name>-right` and `<name>-index`, each with its changelog.
pub struct StreamJoined<K, V1, V2> {
    key: SerdeRef<K>,
    left: SerdeRef<V1>,
    right: SerdeRef<V2>,
    name: Option<String>,
}

impl<K: 'static, V1: 'static, V2: 'static> StreamJoined<K, V1, V2> {
    pub fn with(key: impl Serde<K>, left: impl Serde<V1>, right: impl Serde<V2>) -> Self {
        StreamJoined {
            key: Arc::new(key),
            left: Arc::new(left),
            right: Arc::new(right),
            name: None,
        }
    }

    /// Names the join's stores; without a name they are numbered like the
    /// nodes, so adding an operator before the join renames them.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

impl<K: Data, V: Data> KStream<K, V> {
    /// Joins each record with the other stream's records of its key whose
    /// timestamps are within `windows` of it, whichever comes first; the
    /// result's timestamp is the later of the two. Both streams must be
    /// partitioned by their key alike (repartition a stream whose key
    /// changed).
    ///
    /// ```
    /// use std::time::Duration;
    /// use weir::serde::Utf8;
    /// use weir::testing::{TestRecord, TopologyTestDriver};
    /// use weir::window::{JoinWindows, StreamJoined};
    /// use weir::{Consumed, Produced, StreamsBuilder};
    ///
    /// let builder = StreamsBuilder::new();
    /// let views = builder.stream("views", Consumed::with(Utf8, Utf8));
    /// let clicks = builder.stream("clicks", Consumed::with(Utf8, Utf8));
    /// views
    ///     .join_stream(
    ///         &clicks,
    ///         |view, click| format!("{view}->{click}"),
    ///         JoinWindows::of(Duration::from_secs(10)),
    ///         StreamJoined::with(Utf8, Utf8, Utf8).named("views-clicks"),
    ///     )
    ///     .to("click-through", Produced::with(Utf8, Utf8));
    /// let driver = TopologyTestDriver::new(builder.build()?)?;
    /// let record = |value: &str, at| TestRecord::new("ad-1".to_string(), Some(value.to_string())).at(at);
    /// driver.input_topic("views", Utf8, Utf8).pipe_record(record("view", 1_000))?;
    /// driver.input_topic("clicks", Utf8, Utf8).pipe_record(record("click", 4_000))?;
    /// driver.input_topic("clicks", Utf8, Utf8).pipe_record(record("too-late-a-click", 20_000))?;
    /// let joined = driver.output_topic("click-through", Utf8, Utf8).read_key_values()?;
    /// assert_eq!(joined, [("ad-1".to_string(), Some("view->click".to_string()))]);
    /// # Ok::<(), weir::WeirError>(())
    /// ```
    pub fn join_stream<V2: Data, R: Data>(
        &self,
        other: &KStream<K, V2>,
        joiner: impl Fn(&V, &V2) -> R + Send + Sync + 'static,
        windows: JoinWindows,
        joined: StreamJoined<K, V, V2>,
    ) -> KStream<K, R> {
        let joiner = move |left: Option<&V>, right: Option<&V2>| match (left, right) {
            (Some(left), Some(right)) => Some(joiner(left, right)),
            _ => None,
        };
        self.stream_join(other, "KSTREAM-JOIN", Arc::new(joiner), (false, false), windows, joined)
    }

    /// Like [`join_stream`](Self::join_stream), and each left record that
    /// no right record joined is passed on alone (with `None`), once no
    /// right record could still join it: when stream time is past its
    /// timestamp by `before + after + grace`.
    pub fn left_join_stream<V2: Data, R: Data>(
        &self,
        other: &KStream<K, V2>,
        joiner: impl Fn(&V, Option<&V2>) -> R + Send + Sync + 'static,
        windows: JoinWindows,
        joined: StreamJoined<K, V, V2>,
    ) -> KStream<K, R> {
        let joiner = move |left: Option<&V>, right: Option<&V2>| left.map(|left| joiner(left, right));
        self.stream_join(
            other,
            "KSTREAM-LEFTJOIN",
            Arc::new(joiner),
            (true, false),
            windows,
            joined,
        )
    }

    /// Like [`left_join_stream`](Self::left_join_stream), for the records
    /// of both sides.
    pub fn outer_join_stream<V2: Data, R: Data>(
        &self,
        other: &KStream<K, V2>,
        joiner: impl Fn(Option<&V>, Option<&V2>) -> R + Send + Sync + 'static,
        windows: JoinWindows,
        joined: StreamJoined<K, V, V2>,
    ) -> KStream<K, R> {
        let joiner = move |left: Option<&V>, right: Option<&V2>| Some(joiner(left, right));
        self.stream_join(
            other,
            "KSTREAM-OUTERJOIN",
            Arc::new(joiner),
            (true, true),
            windows,
            joined,
        )
    }

    fn stream_join<V2: Data, R: Data>(
        &self,
        other: &KStream<K, V2>,
        prefix: &str,
        joiner: StreamJoiner<V, V2, R>,
        (left_alone, right_alone): (bool, bool),
        windows: JoinWindows,
        joined: StreamJoined<K, V, V2>,
    ) -> KStream<K, R> {
        check_same_builder(&self.graph, &other.graph, "join_stream");
        let left = self.map_values(JoinInput::<V, V2>::Left);
        let right = other.map_values(JoinInput::<V, V2>::Right);
        let mut g = self.graph.borrow_mut();
        let name = joined.name.unwrap_or_else(|| g.new_name(prefix));
        let stores = [format!("{name}-left"), format!("{name}-right"), format!("{name}-index")];
        for store in &stores {
            g.add_store(store, StoreLayout::Plain);
        }
        let left_store = store_getter(&stores[0], Arc::new(Bytes), Arc::new(ListSerde(joined.left)));
        let right_store = store_getter(&stores[1], Arc::new(Bytes), Arc::new(ListSerde(joined.right)));
        let index_store = store_getter(&stores[2], Arc::new(Bytes), Arc::new(Bytes));
        let key_serde = joined.key;
        let node = g.add_processor(prefix, &[left.node, right.node], stores.to_vec(), move |task, out| {
            let index = index_store.typed(task)?;
            Ok(StreamJoin {
                left: left_store.typed(task)?,
                right: right_store.typed(task)?,
                clock: StreamClock::new(index.clone()),
                expiry: TimeIndex::new(index, EXPIRY),
                windows,
                key_serde: key_serde.clone(),
                joiner: joiner.clone(),
                left_alone,
                right_alone,
                out,
            })
        });
        if self.key_changed || other.key_changed {
            super::kstream::refuse_changed_key(&mut g, node);
        }
        drop(g);
        KStream::new(self.graph.clone(), node, false)
    }
}
