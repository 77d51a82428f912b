//! The mutable graph behind `StreamsBuilder`, and its compilation into a
//! [`Topology`].

use super::{
    EnrichmentDef, GlobalStoreDef, NodeDef, NodeKind, StoreDef, StoreLayout, SubTopology, TopicRef, Topology,
    TopologyDef,
};
use crate::enrich::EnrichStats;
use crate::error::WeirError;
use crate::error_handler::ErrorHandler;
use crate::processor::sink::SinkNode;
use crate::processor::source::{Decode, RawSource, SerdeDecoder, SourceNode, TimestampOf};
use crate::processor::stream::{identity, StatelessNode};
use crate::processor::{Forwarder, Processor, ProcessorRef};
use crate::record::OutputKind;
use crate::runtime::TaskBuilder;
use crate::serde::SerdeRef;
use std::any::Any;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;

type SourceFactory = dyn Fn(&mut TaskBuilder<'_>, &[&dyn Any]) -> Result<Box<dyn RawSource>, WeirError> + Send + Sync;
type ProcessorFactory = dyn Fn(&mut TaskBuilder<'_>, &[&dyn Any]) -> Result<Box<dyn Any>, WeirError> + Send + Sync;

/// Creates a node's instance for one task, given its children's instances
/// (each a `ProcessorRef<K, V>` of the node's output type, behind `Any`).
#[derive(Clone)]
pub(crate) enum NodeFactory {
    Source(Arc<SourceFactory>),
    /// Returns the node as a `ProcessorRef<K, V>` of its input type, behind `Any`.
    Processor(Arc<ProcessorFactory>),
}

#[derive(Default, Clone)]
pub(crate) struct TopologyBuilder {
    nodes: Vec<NodeDef>,
    stores: BTreeMap<String, StoreDef>,
    enrichments: Vec<EnrichmentDef>,
    globals: Vec<GlobalStoreDef>,
    errors: Vec<String>,
    counter: usize,
}

impl TopologyBuilder {
    /// A unique name in Kafka Streams' style, e.g. `KSTREAM-FILTER-0000000003`.
    pub(crate) fn new_name(&mut self, prefix: &str) -> String {
        let name = format!("{prefix}-{:010}", self.counter);
        self.counter += 1;
        name
    }

    pub(crate) fn node_name(&self, node: usize) -> &str {
        &self.nodes[node].name
    }

    /// Records that `node` is the enrichment `name`.
    pub(crate) fn add_enrichment(
        &mut self,
        node: usize,
        name: &str,
        stats: Arc<EnrichStats>,
        dead_letter_topic: Option<String>,
    ) {
        if self.enrichments.iter().any(|e| e.name == name) {
            self.error(format!(
                "enrichment name '{name}' is used twice; enrichment names must be unique"
            ));
        }
        let note = match &dead_letter_topic {
            Some(dlq) => format!("enrichment '{name}'; failures to {dlq}"),
            None => format!("enrichment '{name}'; a failure stops the instance"),
        };
        self.annotate(node, note);
        self.enrichments.push(EnrichmentDef {
            node,
            name: name.to_string(),
            stats,
            dead_letter_topic,
        });
    }

    /// Attaches a remark that `describe()` prints under the node.
    pub(crate) fn annotate(&mut self, node: usize, note: String) {
        self.nodes[node].note = Some(note);
    }

    /// Records a mistake in the topology; `build()` reports them all.
    pub(crate) fn error(&mut self, message: String) {
        self.errors.push(message);
    }

    pub(crate) fn add_store(&mut self, name: &str, layout: StoreLayout) {
        if self.stores.contains_key(name) {
            self.error(format!("store name '{name}' is used twice; store names must be unique"));
            return;
        }
        self.stores.insert(name.to_string(), StoreDef { layout });
    }

    fn push(
        &mut self,
        name: String,
        kind: NodeKind,
        parents: &[usize],
        stores: Vec<String>,
        factory: NodeFactory,
    ) -> usize {
        self.nodes.push(NodeDef {
            name,
            kind,
            parents: parents.to_vec(),
            stores,
            note: None,
            factory,
        });
        self.nodes.len() - 1
    }

    /// A node that reads `topic` and deserializes it into `Record<K, V>`.
    /// `on_error` of `None` takes the application's default handler.
    pub(crate) fn add_source<K: Clone + 'static, V: Clone + 'static>(
        &mut self,
        topic: TopicRef,
        key_serde: SerdeRef<K>,
        value_serde: SerdeRef<V>,
        on_error: Option<ErrorHandler>,
        timestamp: Option<TimestampOf<K, V>>,
    ) -> usize {
        self.add_decoding_source(topic, on_error, move |_| SerdeDecoder {
            key_serde: key_serde.clone(),
            value_serde: value_serde.clone(),
            timestamp: timestamp.clone(),
        })
    }

    /// A node that reads `topic` with the decoder `make` creates for each task.
    pub(crate) fn add_decoding_source<D, F>(
        &mut self,
        topic: TopicRef,
        on_error: Option<ErrorHandler>,
        make: F,
    ) -> usize
    where
        D: Decode + 'static,
        F: Fn(&mut TaskBuilder<'_>) -> D + Send + Sync + 'static,
    {
        let name = self.new_name("KSTREAM-SOURCE");
        let node_name = name.clone();
        let kind = NodeKind::Source {
            topic,
            on_error: on_error.clone(),
        };
        let factory = NodeFactory::Source(Arc::new(move |task, children| {
            Ok(Box::new(SourceNode {
                decoder: make(task),
                on_error: on_error.clone().unwrap_or_else(|| task.default_error_handler().clone()),
                out: Forwarder::from_children(&node_name, children)?,
                stream_time: task.stream_time(),
            }) as Box<dyn RawSource>)
        }));
        self.push(name, kind, &[], Vec::new(), factory)
    }

    /// A processor node of input `Record<KI, VI>` whose children receive
    /// `Record<KO, VO>`; `make` builds its instance for each task.
    pub(crate) fn add_processor<KI, VI, KO, VO, P, F>(
        &mut self,
        prefix: &str,
        parents: &[usize],
        stores: Vec<String>,
        make: F,
    ) -> usize
    where
        KI: 'static,
        VI: 'static,
        KO: Clone + 'static,
        VO: Clone + 'static,
        P: Processor<KI, VI> + 'static,
        F: Fn(&mut TaskBuilder<'_>, Forwarder<KO, VO>) -> Result<P, WeirError> + Send + Sync + 'static,
    {
        let name = self.new_name(prefix);
        let node_name = name.clone();
        let factory = NodeFactory::Processor(Arc::new(move |task, children| {
            let out = Forwarder::from_children(&node_name, children)?;
            let node: ProcessorRef<KI, VI> = Rc::new(RefCell::new(make(task, out)?));
            Ok(Box::new(node) as Box<dyn Any>)
        }));
        let id = self.push(name, NodeKind::Processor, parents, stores, factory);
        for &parent in parents {
            if matches!(self.nodes[parent].kind, NodeKind::Sink { .. }) {
                self.error(format!(
                    "{} cannot follow the sink {}",
                    self.nodes[id].name, self.nodes[parent].name
                ));
            }
        }
        id
    }

    /// A node that passes every record of its parents on unchanged: the
    /// meeting point of a merge, a split's branches, a join's two sides.
    pub(crate) fn add_pass_through<K: Clone + 'static, V: Clone + 'static>(
        &mut self,
        prefix: &str,
        parents: &[usize],
    ) -> usize {
        self.add_processor(prefix, parents, Vec::new(), |_, out| {
            Ok(StatelessNode {
                transform: identity::<K, V>(),
                out,
            })
        })
    }

    /// A node that writes its input to `topic`.
    pub(crate) fn add_sink<K: 'static, V: 'static>(
        &mut self,
        parent: usize,
        topic: TopicRef,
        key_serde: SerdeRef<K>,
        value_serde: SerdeRef<V>,
    ) -> usize {
        let id = self.add_processor::<K, V, (), (), _, _>("KSTREAM-SINK", &[parent], Vec::new(), {
            let topic = topic.clone();
            move |task, _| {
                let kind = match &topic {
                    TopicRef::External(_) => OutputKind::Output,
                    TopicRef::Repartition(_) => OutputKind::Internal,
                };
                let topic = task.topic(&topic);
                Ok(SinkNode {
                    produced: crate::metrics::produced_counter(&topic),
                    topic,
                    kind,
                    key_serde: key_serde.clone(),
                    value_serde: value_serde.clone(),
                    on_error: task.production_error_handler().clone(),
                })
            }
        });
        self.nodes[id].kind = NodeKind::Sink { topic };
        id
    }

    /// Ships `parent`'s records through the internal topic
    /// `<application.id>-<name>-repartition`, partitioned by their key, and
    /// returns the source node that reads them back (in a new sub-topology).
    pub(crate) fn add_repartition<K: Clone + 'static, V: Clone + 'static>(
        &mut self,
        parent: usize,
        name: &str,
        key_serde: SerdeRef<K>,
        value_serde: SerdeRef<V>,
    ) -> usize {
        let topic = TopicRef::Repartition(name.to_string());
        self.add_sink(parent, topic.clone(), key_serde.clone(), value_serde.clone());
        self.add_source(topic, key_serde, value_serde, Some(ErrorHandler::Fail), None)
    }

    /// Records a global table: `store` filled from the whole of `topic`.
    pub(crate) fn add_global_store(&mut self, global: GlobalStoreDef) {
        self.globals.push(global);
    }

    pub(crate) fn build(self) -> Result<Topology, WeirError> {
        let mut errors = self.errors;
        let global_topics: Vec<TopicRef> = self
            .globals
            .iter()
            .map(|g| TopicRef::External(g.topic.clone()))
            .collect();
        let mut sourced: BTreeMap<&TopicRef, &str> = BTreeMap::new();
        for (global, topic) in self.globals.iter().zip(&global_topics) {
            let named_twice = self.globals.iter().filter(|g| g.store == global.store).count() > 1;
            if named_twice || self.stores.contains_key(&global.store) {
                errors.push(format!(
                    "the store name '{}' is used twice; name each store once",
                    global.store
                ));
            }
            if let Some(first) = sourced.insert(topic, &global.store) {
                errors.push(format!(
                    "topic '{}' is read by two global tables ({first} and {}); read it once",
                    global.topic, global.store
                ));
            }
        }
        for node in &self.nodes {
            if let NodeKind::Source { topic, .. } = &node.kind {
                if let Some(first) = sourced.insert(topic, &node.name) {
                    errors.push(format!(
                        "topic '{}' is read by two sources ({first} and {}); read it once and reuse the stream or table",
                        topic.resolve("<application.id>"),
                        node.name
                    ));
                }
            }
        }
        if self.nodes.is_empty() {
            errors.push("the topology has no nodes; add a stream or a table".to_string());
        }
        if !errors.is_empty() {
            return Err(WeirError::InvalidTopology(errors.join("; ")));
        }
        let subtopologies = group_subtopologies(&self.nodes);
        Ok(Topology {
            def: Arc::new(TopologyDef {
                nodes: self.nodes,
                stores: self.stores,
                subtopologies,
                enrichments: self.enrichments,
                globals: self.globals,
            }),
        })
    }
}

/// Nodes linked by an edge or a shared store belong to one sub-topology.
fn group_subtopologies(nodes: &[NodeDef]) -> Vec<SubTopology> {
    let mut group: Vec<usize> = (0..nodes.len()).collect();
    fn root(group: &mut [usize], mut n: usize) -> usize {
        while group[n] != n {
            group[n] = group[group[n]];
            n = group[n];
        }
        n
    }
    let union = |group: &mut Vec<usize>, a: usize, b: usize| {
        let (ra, rb) = (root(group, a), root(group, b));
        group[ra.max(rb)] = ra.min(rb);
    };
    let mut store_users: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, node) in nodes.iter().enumerate() {
        for &parent in &node.parents {
            union(&mut group, id, parent);
        }
        for store in &node.stores {
            if let Some(&other) = store_users.get(store.as_str()) {
                union(&mut group, id, other);
            } else {
                store_users.insert(store, id);
            }
        }
    }
    let mut members: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for id in 0..nodes.len() {
        let r = root(&mut group, id);
        members.entry(r).or_default().push(id);
    }
    members
        .into_values()
        .enumerate()
        .map(|(index, ids)| {
            let mut sources = Vec::new();
            let mut sinks = Vec::new();
            let mut stores = BTreeSet::new();
            for &id in &ids {
                match &nodes[id].kind {
                    NodeKind::Source { topic, .. } => sources.push(topic.clone()),
                    NodeKind::Sink { topic } => sinks.push(topic.clone()),
                    NodeKind::Processor => {}
                }
                stores.extend(nodes[id].stores.iter().cloned());
            }
            SubTopology {
                id: index,
                nodes: ids,
                source_topics: sources,
                sink_topics: sinks,
                stores: stores.into_iter().collect(),
            }
        })
        .collect()
}
