//! The logical graph that the DSL builds, split into sub-topologies.
//!
//! A [`Topology`] is a list of nodes (sources, processors, sinks), the
//! stores they use, and the sub-topologies they form: nodes connected by
//! parent edges or by a shared store run in one task, while a repartition
//! topic cuts the graph into separate sub-topologies. The runtime creates
//! one task per (sub-topology, input partition).

mod builder;
mod describe;
mod partitions;

pub(crate) use builder::{NodeFactory, TopologyBuilder};
pub use describe::TopologyDescription;
pub use partitions::{InternalTopic, InternalTopicKind, PartitionPlan};

use crate::enrich::{EnrichMetrics, EnrichStats};
use crate::error_handler::ErrorHandler;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A topic as the topology names it; internal topics get the application id
/// in front when an application runs the topology.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TopicRef {
    /// A topic the user named.
    External(String),
    /// An internal repartition topic: `<application.id>-<name>-repartition`.
    Repartition(String),
}

impl TopicRef {
    /// The topic's name in a Kafka cluster for this application.
    pub fn resolve(&self, application_id: &str) -> String {
        match self {
            TopicRef::External(name) => name.clone(),
            TopicRef::Repartition(name) => repartition_topic(application_id, name),
        }
    }

    pub fn is_internal(&self) -> bool {
        matches!(self, TopicRef::Repartition(_))
    }
}

/// The repartition topic of a re-keying step named `name` (a `Grouped`'s
/// name, for example).
pub fn repartition_topic(application_id: &str, name: &str) -> String {
    format!("{application_id}-{name}-repartition")
}

/// The changelog topic of a store.
pub fn changelog_topic(application_id: &str, store: &str) -> String {
    format!("{application_id}-{store}-changelog")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodeKind {
    /// `on_error` of `None` takes the application's default handler.
    Source {
        topic: TopicRef,
        on_error: Option<ErrorHandler>,
    },
    Processor,
    Sink {
        topic: TopicRef,
    },
}

#[derive(Clone)]
pub(crate) struct NodeDef {
    pub name: String,
    pub kind: NodeKind,
    pub parents: Vec<usize>,
    /// Stores the node reads or writes, directly or through a value getter.
    pub stores: Vec<String>,
    /// A remark `describe()` prints under the node, such as why a CDC
    /// source is re-partitioned.
    pub note: Option<String>,
    pub factory: NodeFactory,
}

/// How a store's values are laid out, for tools that read stores directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreLayout {
    /// The value as its serde writes it.
    Plain,
    /// A table aggregate: an 8-byte member count, then the value.
    Counted,
    /// An enrichment's cached answer: an 8-byte fetch time, then the answer.
    Cached,
}

impl StoreLayout {
    /// Where the value its serde wrote starts in a stored value.
    pub(crate) fn value_offset(self) -> usize {
        match self {
            StoreLayout::Plain => 0,
            StoreLayout::Counted => crate::processor::aggregate::COUNTED_PREFIX_LEN,
            StoreLayout::Cached => 8,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct StoreDef {
    pub layout: StoreLayout,
}

/// A connected part of the topology; a task runs one of these on one partition.
#[derive(Debug, Clone)]
pub struct SubTopology {
    pub id: usize,
    /// Node ids, in creation order (parents before children).
    pub(crate) nodes: Vec<usize>,
    pub source_topics: Vec<TopicRef>,
    pub sink_topics: Vec<TopicRef>,
    pub stores: Vec<String>,
}

pub(crate) struct TopologyDef {
    pub nodes: Vec<NodeDef>,
    pub stores: BTreeMap<String, StoreDef>,
    pub subtopologies: Vec<SubTopology>,
    pub enrichments: Vec<EnrichmentDef>,
    pub globals: Vec<GlobalStoreDef>,
}

/// Checks that a record of a global table's topic decodes (key, value);
/// the store keeps only records that do.
pub(crate) type RecordCheck =
    dyn Fn(&str, Option<&[u8]>, Option<&[u8]>) -> Result<(), crate::error::SerdeError> + Send + Sync;

/// A global table's store: every instance fills it from every partition
/// of its topic, and every task reads it.
#[derive(Clone)]
pub(crate) struct GlobalStoreDef {
    pub store: String,
    pub topic: String,
    pub check: Arc<RecordCheck>,
}

/// An enrichment node, for its metrics and its dead-letter topic.
#[derive(Clone)]
pub(crate) struct EnrichmentDef {
    /// Its node in the topology.
    pub node: usize,
    pub name: String,
    pub stats: Arc<EnrichStats>,
    pub dead_letter_topic: Option<String>,
}

/// A built topology, ready to run in a test driver or against Kafka.
/// Cheap to clone; share it between instances.
///
/// ```
/// use weir::{StreamsBuilder, Consumed, Produced, serde::Utf8};
/// let builder = StreamsBuilder::new();
/// builder
///     .stream("in", Consumed::with(Utf8, Utf8))
///     .filter(|_, v: &String| !v.is_empty())
///     .to("out", Produced::with(Utf8, Utf8));
/// let topology = builder.build().unwrap();
/// assert_eq!(topology.subtopologies().len(), 1);
/// println!("{}", topology.describe());
/// ```
#[derive(Clone)]
pub struct Topology {
    pub(crate) def: Arc<TopologyDef>,
}

impl Topology {
    pub fn subtopologies(&self) -> &[SubTopology] {
        &self.def.subtopologies
    }

    /// The store names of the topology.
    pub fn stores(&self) -> impl Iterator<Item = &str> {
        self.def.stores.keys().map(String::as_str)
    }

    /// The topics of the global tables, each read whole by every instance.
    pub fn global_topics(&self) -> impl Iterator<Item = &str> {
        self.def.globals.iter().map(|g| g.topic.as_str())
    }

    pub(crate) fn globals(&self) -> &[GlobalStoreDef] {
        &self.def.globals
    }

    /// The sub-topology that reads `topic`, if any.
    pub fn subtopology_of_source(&self, topic: &TopicRef) -> Option<&SubTopology> {
        self.def.subtopologies.iter().find(|s| s.source_topics.contains(topic))
    }

    /// The counters of each enrichment, by name, over every task of this
    /// topology in the process.
    pub fn enrichment_metrics(&self) -> BTreeMap<String, EnrichMetrics> {
        self.def
            .enrichments
            .iter()
            .map(|e| (e.name.clone(), e.stats.snapshot()))
            .collect()
    }

    /// The dead-letter topics the sources and enrichments write to, given
    /// the application's default error handler, each with the topic or the
    /// enrichment it serves.
    pub fn dead_letter_topics(&self, application_id: &str, default: &ErrorHandler) -> BTreeSet<(String, String)> {
        self.def
            .nodes
            .iter()
            .filter_map(|node| match &node.kind {
                NodeKind::Source { topic, on_error } => match on_error.as_ref().unwrap_or(default) {
                    ErrorHandler::DeadLetter(dlq) => Some((dlq.clone(), topic.resolve(application_id))),
                    _ => None,
                },
                _ => None,
            })
            .chain(self.def.enrichments.iter().filter_map(|e| {
                let dlq = e.dead_letter_topic.clone()?;
                Some((dlq, format!("enrichment '{}'", e.name)))
            }))
            .collect()
    }

    pub(crate) fn store_layout(&self, store: &str) -> Option<StoreLayout> {
        self.def.stores.get(store).map(|s| s.layout)
    }

    /// A readable description of the sub-topologies, nodes, stores and topics.
    pub fn describe(&self) -> TopologyDescription {
        TopologyDescription::new(&self.def)
    }

    /// The description drawn as a Mermaid flowchart
    /// ([`TopologyDescription::mermaid`]).
    ///
    /// ```
    /// use weir::{serde::Utf8, Consumed, Produced, StreamsBuilder};
    /// let builder = StreamsBuilder::new();
    /// builder
    ///     .stream("in", Consumed::with(Utf8, Utf8))
    ///     .to("out", Produced::with(Utf8, Utf8));
    /// let chart = builder.build().unwrap().describe_mermaid();
    /// assert!(chart.contains(r#"t0[/"in"/]"#)); // the input topic's shape
    /// assert!(chart.contains("t0 --> n0_0")); // which the source reads
    /// ```
    pub fn describe_mermaid(&self) -> String {
        self.describe().mermaid()
    }
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.describe())
    }
}
