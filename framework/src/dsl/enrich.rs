//! `enrich_async` on streams and tables: the DSL side of
//! [`crate::enrich`].

use super::{Data, KStream, KTable};
use crate::enrich::{Caller, DeadLetters, Enrichment};
use crate::processor::enrich::{Cache, CachedSerde, Combine, EnrichNode, EnrichProcessor, EnrichSpec, MaybeQuery};
use crate::serde::Nullable;
use crate::topology::StoreLayout;
use std::cell::RefCell;
use std::hash::Hash;
use std::rc::Rc;
use std::sync::Arc;

impl<K: Data + Eq + Hash, V: Data> KStream<K, V> {
    /// Looks up `enrichment`'s query for each record, without blocking the
    /// stream, and passes on `combine(key, value, answer)`. Records of one
    /// key keep their order; see [`crate::enrich`] for limits, retries,
    /// the circuit breaker, the cache and failures.
    ///
    /// ```
    /// use weir::{StreamsBuilder, Consumed, Produced, serde::{Json, Utf8}};
    /// use weir::enrich::{Enrichment, LookupError};
    /// use weir::testing::TopologyTestDriver;
    ///
    /// let builder = StreamsBuilder::new();
    /// let lengths = |word: String| async move { Ok::<_, LookupError>(word.len()) };
    /// builder
    ///     .stream("words", Consumed::with(Utf8, Utf8))
    ///     .enrich_async(
    ///         Enrichment::new("length", |_k: &String, word: &String| word.clone(), lengths),
    ///         |_k, word, length| format!("{word}={length}"),
    ///     )
    ///     .to("lengths", Produced::with(Utf8, Utf8));
    ///
    /// let driver = TopologyTestDriver::new(builder.build()?)?;
    /// driver.input_topic("words", Utf8, Utf8).pipe("k".into(), "weir".into())?;
    /// let out = driver.output_topic("lengths", Utf8, Utf8).read_key_values()?;
    /// assert_eq!(out, vec![("k".to_string(), Some("weir=4".to_string()))]);
    /// # Ok::<(), weir::WeirError>(())
    /// ```
    pub fn enrich_async<Q, R, VO>(
        &self,
        enrichment: Enrichment<K, V, Q, R>,
        combine: impl Fn(&K, V, R) -> VO + Send + Sync + 'static,
    ) -> KStream<K, VO>
    where
        Q: Clone + Send + 'static,
        R: Clone + Send + 'static,
        VO: Data,
    {
        let query = enrichment.query.clone();
        self.enrich_with(
            enrichment,
            Arc::new(move |k: &K, v: &V| Some(query(k, v))),
            |dead_letters| dead_letters,
            Arc::new(move |k: &K, v: V, answer: Option<R>| answer.map(|answer| combine(k, v, answer))),
        )
    }

    /// The node behind both `enrich_async`s: `query` says which records
    /// need a lookup, `combine` what each one becomes.
    fn enrich_with<VU, Q, R, VO>(
        &self,
        enrichment: Enrichment<K, VU, Q, R>,
        query: MaybeQuery<K, V, Q>,
        dead_letters_for: impl FnOnce(DeadLetters<K, VU>) -> DeadLetters<K, V>,
        combine: Combine<K, V, R, VO>,
    ) -> KStream<K, VO>
    where
        Q: Clone + Send + 'static,
        R: Clone + Send + 'static,
        VO: Data,
    {
        let Enrichment {
            name,
            lookup,
            options,
            cache,
            dead_letters,
            runtime,
            ..
        } = enrichment;
        let caller = Arc::new(Caller::new(&name, lookup, options, runtime));
        let dead_letter_topic = dead_letters.as_ref().map(|d| d.topic.clone());
        let spec = Arc::new(EnrichSpec {
            name: name.clone(),
            query,
            combine,
            dead_letters: dead_letters.map(dead_letters_for),
            caller: caller.clone(),
        });
        let mut graph = self.graph.borrow_mut();
        let cache_store = cache.as_ref().map(|_| format!("{name}-cache"));
        if let Some(store) = &cache_store {
            graph.add_store(store, StoreLayout::Cached);
        }
        let cache = cache.map(Arc::new);
        let node = graph.add_processor(
            "KSTREAM-ENRICH",
            &[self.node],
            cache_store.iter().cloned().collect(),
            move |task, out| {
                let cache = match (&cache, &cache_store) {
                    (Some(spec), Some(store)) => Some(Cache {
                        store: task.typed_store(
                            store,
                            spec.query_serde.clone(),
                            Arc::new(CachedSerde(spec.answer_serde.clone())),
                        )?,
                        ttl: spec.ttl,
                    }),
                    _ => None,
                };
                let node = Rc::new(RefCell::new(EnrichNode::new(spec.clone(), cache, out)));
                task.register_async_node(node.clone());
                Ok(EnrichProcessor(node))
            },
        );
        graph.add_enrichment(node, &name, caller.stats().clone(), dead_letter_topic);
        drop(graph);
        KStream::new(self.graph.clone(), node, self.key_changed)
    }
}

impl<K: Data + Eq + Hash, V: Data> KTable<K, V> {
    /// Enriches the table's changes: each update is looked up and passed on
    /// as `Some(combine(key, value, answer))`; a deletion needs no lookup and
    /// passes on as `None` (a tombstone when written with a nullable serde),
    /// still after the key's earlier updates. See [`KStream::enrich_async`].
    pub fn enrich_async<Q, R, VO>(
        &self,
        enrichment: Enrichment<K, V, Q, R>,
        combine: impl Fn(&K, V, R) -> VO + Send + Sync + 'static,
    ) -> KStream<K, Option<VO>>
    where
        Q: Clone + Send + 'static,
        R: Clone + Send + 'static,
        VO: Data,
    {
        let query = enrichment.query.clone();
        self.to_stream().enrich_with(
            enrichment,
            Arc::new(move |k: &K, v: &Option<V>| v.as_ref().map(|v| query(k, v))),
            |d| DeadLetters {
                topic: d.topic,
                key_serde: d.key_serde,
                value_serde: Arc::new(Nullable(d.value_serde)),
            },
            Arc::new(move |k: &K, v: Option<V>, answer: Option<R>| match (v, answer) {
                (Some(v), Some(answer)) => Some(Some(combine(k, v, answer))),
                (None, _) => Some(None),
                // A row always has a query, so it always has an answer.
                (Some(_), None) => None,
            }),
        )
    }
}
