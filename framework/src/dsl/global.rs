//! `GlobalKTable`: a table every instance holds whole, joined by a key
//! computed from each record, without re-partitioning.

use super::{check_same_builder, Consumed, Data, Graph, KStream, StreamsBuilder};
use crate::error::SerdeError;
use crate::processor::join::{GlobalKeyOf, StreamGlobalJoinNode, StreamJoiner};
use crate::serde::SerdeRef;
use crate::topology::GlobalStoreDef;
use std::sync::Arc;

/// A table read whole by every instance: every partition of its topic,
/// kept current while the application runs, filled again from the topic
/// on every start (it has no changelog; its topic is its log). A stream
/// joins it by a key computed from each record ([`KStream::join_global`]),
/// so neither needs re-partitioning nor co-partitioning: what a small,
/// slowly changing reference table (countries, currencies, plans) is for.
///
/// A record whose key or value cannot be decoded is left out of the store
/// and counted (`weir_records_skipped_total`, reason
/// `deserialization_error`); so is a record without a key.
///
/// ```
/// use weir::{StreamsBuilder, Consumed, Produced, serde::{Json, Utf8}};
/// use weir::testing::TopologyTestDriver;
///
/// let builder = StreamsBuilder::new();
/// let countries = builder.global_table("countries", Consumed::with(Utf8, Utf8));
/// builder
///     .stream("users", Consumed::with(Utf8, Json::<(String, String)>::new())) // (name, country code)
///     .left_join_global(
///         &countries,
///         |_, (_, code)| Some(code.clone()),
///         |(name, _), country| format!("{name} from {}", country.map_or("nowhere", String::as_str)),
///     )
///     .to("greetings", Produced::with(Utf8, Utf8));
/// let driver = TopologyTestDriver::new(builder.build()?)?;
/// driver.input_topic("countries", Utf8, Utf8).pipe("fr".into(), "France".into())?;
/// let users = driver.input_topic("users", Utf8, Json::new());
/// users.pipe("u1".into(), ("Ada".to_string(), "fr".to_string()))?;
/// users.pipe("u2".into(), ("Bob".to_string(), "xx".to_string()))?;
/// let greetings = driver.output_topic("greetings", Utf8, Utf8).read_key_values()?;
/// assert_eq!(
///     greetings,
///     [("u1".to_string(), Some("Ada from France".to_string())), ("u2".to_string(), Some("Bob from nowhere".to_string()))]
/// );
/// # Ok::<(), weir::WeirError>(())
/// ```
pub struct GlobalKTable<K, V> {
    graph: Graph,
    store: String,
    topic: String,
    key: SerdeRef<K>,
    value: SerdeRef<V>,
}

impl StreamsBuilder {
    /// A global table of `topic` (see [`GlobalKTable`]); its store is named
    /// by [`Consumed::store`], or generated.
    pub fn global_table<K: Data, V: Data>(&self, topic: &str, consumed: Consumed<K, V>) -> GlobalKTable<K, V> {
        let mut graph = self.graph.borrow_mut();
        let store = consumed
            .store
            .unwrap_or_else(|| graph.new_name("GLOBALKTABLE-STATE-STORE"));
        let (key, value) = (consumed.key.clone(), consumed.value.clone());
        let check = move |topic: &str, k: Option<&[u8]>, v: Option<&[u8]>| -> Result<(), SerdeError> {
            let k = k.ok_or_else(|| SerdeError::deserialize(topic, "a global table's record needs a key"))?;
            key.deserialize(topic, Some(k))?;
            if v.is_some() {
                value.deserialize(topic, v)?;
            }
            Ok(())
        };
        graph.add_global_store(GlobalStoreDef {
            store: store.clone(),
            topic: topic.to_string(),
            check: Arc::new(check),
        });
        drop(graph);
        GlobalKTable {
            graph: self.graph.clone(),
            store,
            topic: topic.to_string(),
            key: consumed.key,
            value: consumed.value,
        }
    }
}

impl<K: Data, V: Data> KStream<K, V> {
    /// Joins each record with the row of `global` whose key `key` computes
    /// from the record; a record without a key or a row is dropped. Updates
    /// of the global table alone emit nothing.
    pub fn join_global<GK: Data, GV: Data, R: Data>(
        &self,
        global: &GlobalKTable<GK, GV>,
        key: impl Fn(&K, &V) -> Option<GK> + Send + Sync + 'static,
        joiner: impl Fn(&V, &GV) -> R + Send + Sync + 'static,
    ) -> KStream<K, R> {
        self.global_join(global, "KSTREAM-GLOBAL-JOIN", key, move |v, row| {
            row.map(|row| joiner(v, row))
        })
    }

    /// Like [`join_global`](Self::join_global), but a record without a key
    /// or a row is joined with `None`.
    pub fn left_join_global<GK: Data, GV: Data, R: Data>(
        &self,
        global: &GlobalKTable<GK, GV>,
        key: impl Fn(&K, &V) -> Option<GK> + Send + Sync + 'static,
        joiner: impl Fn(&V, Option<&GV>) -> R + Send + Sync + 'static,
    ) -> KStream<K, R> {
        self.global_join(global, "KSTREAM-GLOBAL-LEFTJOIN", key, move |v, row| {
            Some(joiner(v, row))
        })
    }

    fn global_join<GK: Data, GV: Data, R: Data>(
        &self,
        global: &GlobalKTable<GK, GV>,
        prefix: &str,
        key: impl Fn(&K, &V) -> Option<GK> + Send + Sync + 'static,
        join: impl Fn(&V, Option<&GV>) -> Option<R> + Send + Sync + 'static,
    ) -> KStream<K, R> {
        check_same_builder(&self.graph, &global.graph, "join_global");
        let join: StreamJoiner<V, GV, R> = Arc::new(join);
        let key_of: GlobalKeyOf<K, V, GK> = Arc::new(key);
        let (store, topic) = (global.store.clone(), global.topic.clone());
        let (key_serde, value_serde) = (global.key.clone(), global.value.clone());
        let mut graph = self.graph.borrow_mut();
        // The global store is not the task's: it is not declared, so that
        // the join stays in the stream's sub-topology.
        let node = graph.add_processor(prefix, &[self.node], Vec::new(), move |task, out| {
            Ok(StreamGlobalJoinNode {
                store: task.global_store(&store)?,
                topic: topic.as_str().into(),
                key_serde: key_serde.clone(),
                value_serde: value_serde.clone(),
                key_of: key_of.clone(),
                join: join.clone(),
                out,
            })
        });
        graph.annotate(node, format!("global table {} (topic {})", global.store, global.topic));
        drop(graph);
        KStream::new(self.graph.clone(), node, self.key_changed)
    }
}
