//! `Topology::describe()`: the topology as data, printed as text in Kafka
//! Streams' layout or drawn as a Mermaid flowchart.

use super::{NodeKind, TopologyDef};
use crate::error_handler::ErrorHandler;
use crate::topology::changelog_topic;
use std::collections::BTreeMap;
use std::fmt::{self, Write};

/// A description of a topology: its sub-topologies, their nodes, stores
/// and topics. `Display` prints it as text; [`TopologyDescription::mermaid`]
/// draws it.
///
/// Internal topic names start with `<application.id>`, which the running
/// application fills in.
///
/// ```
/// use weir::{serde::Utf8, Consumed, Produced, StreamsBuilder};
/// let builder = StreamsBuilder::new();
/// builder
///     .stream("in", Consumed::with(Utf8, Utf8))
///     .to("out", Produced::with(Utf8, Utf8));
/// let description = builder.build().unwrap().describe();
/// assert!(description.to_string().contains("Source: KSTREAM-SOURCE-0000000000 (topics: [in])"));
/// assert!(description.mermaid().starts_with("flowchart LR\n"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyDescription {
    subtopologies: Vec<SubTopologyDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SubTopologyDescription {
    id: usize,
    nodes: Vec<NodeDescription>,
    /// The source topics, when there are several (they must be co-partitioned).
    co_partitioned: Vec<String>,
    /// Each store and its changelog topic.
    stores: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeDescription {
    name: String,
    kind: NodeDescriptionKind,
    note: Option<String>,
    /// Indexes of the node's children and parents in its sub-topology.
    children: Vec<usize>,
    parents: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum NodeDescriptionKind {
    Source {
        topic: String,
        dead_letters: Option<String>,
    },
    Processor {
        stores: Vec<String>,
        /// Where an enrichment's failures go.
        dead_letters: Option<String>,
    },
    Sink {
        topic: String,
    },
}

const APP: &str = "<application.id>";

impl TopologyDescription {
    pub(crate) fn new(def: &TopologyDef) -> Self {
        let subtopologies = def
            .subtopologies
            .iter()
            .map(|sub| {
                let index_of = |id: usize| sub.nodes.iter().position(|&n| n == id);
                let nodes = sub
                    .nodes
                    .iter()
                    .map(|&id| {
                        let node = &def.nodes[id];
                        let kind = match &node.kind {
                            NodeKind::Source { topic, on_error } => NodeDescriptionKind::Source {
                                topic: topic.resolve(APP),
                                dead_letters: match on_error {
                                    Some(ErrorHandler::DeadLetter(dlq)) => Some(dlq.clone()),
                                    _ => None,
                                },
                            },
                            NodeKind::Processor => NodeDescriptionKind::Processor {
                                stores: node.stores.clone(),
                                dead_letters: def
                                    .enrichments
                                    .iter()
                                    .find(|e| e.node == id)
                                    .and_then(|e| e.dead_letter_topic.clone()),
                            },
                            NodeKind::Sink { topic } => NodeDescriptionKind::Sink {
                                topic: topic.resolve(APP),
                            },
                        };
                        NodeDescription {
                            name: node.name.clone(),
                            kind,
                            note: node.note.clone(),
                            children: sub
                                .nodes
                                .iter()
                                .enumerate()
                                .filter(|(_, &c)| def.nodes[c].parents.contains(&id))
                                .map(|(index, _)| index)
                                .collect(),
                            parents: node.parents.iter().filter_map(|&p| index_of(p)).collect(),
                        }
                    })
                    .collect();
                SubTopologyDescription {
                    id: sub.id,
                    nodes,
                    co_partitioned: if sub.source_topics.len() > 1 {
                        sub.source_topics.iter().map(|t| t.resolve(APP)).collect()
                    } else {
                        Vec::new()
                    },
                    stores: sub
                        .stores
                        .iter()
                        .map(|store| (store.clone(), changelog_topic(APP, store)))
                        .collect(),
                }
            })
            .collect();
        TopologyDescription { subtopologies }
    }

    /// The topology as a Mermaid flowchart, to paste into a Markdown file
    /// (in a ```` ```mermaid ```` block) or a wiki.
    ///
    /// Each sub-topology is a box of its nodes; topics are parallelograms
    /// and stores cylinders, outside the boxes, so that a re-partitioning
    /// shows as a sink writing a topic that another sub-topology's source
    /// reads. Dotted arrows lead to dead-letter topics and to stores.
    pub fn mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        let mut topics = Shapes::new("t", "[/\"", "\"/]");
        let mut stores = Shapes::new("s", "[(\"", "\")]");
        let mut edges = String::new();
        for sub in &self.subtopologies {
            let _ = writeln!(out, "    subgraph sub{0}[\"Sub-topology {0}\"]", sub.id);
            for (index, node) in sub.nodes.iter().enumerate() {
                let id = format!("n{}_{index}", sub.id);
                let mut label = format!("{}<br/>{}", escape(&node.name), node.kind.name());
                if let Some(note) = &node.note {
                    let _ = write!(label, "<br/><i>{}</i>", escape(note));
                }
                let _ = writeln!(out, "        {id}[\"{label}\"]");
                let dead_letters = match &node.kind {
                    NodeDescriptionKind::Source { topic, dead_letters } => {
                        let _ = writeln!(edges, "    {} --> {id}", topics.id(topic));
                        dead_letters
                    }
                    NodeDescriptionKind::Processor {
                        stores: names,
                        dead_letters,
                    } => {
                        for store in names {
                            let _ = writeln!(edges, "    {id} -.- {}", stores.id(store));
                        }
                        dead_letters
                    }
                    NodeDescriptionKind::Sink { topic } => {
                        let _ = writeln!(edges, "    {id} --> {}", topics.id(topic));
                        &None
                    }
                };
                if let Some(dlq) = dead_letters {
                    let _ = writeln!(edges, "    {id} -. dead letters .-> {}", topics.id(dlq));
                }
                for child in &node.children {
                    let _ = writeln!(edges, "    {id} --> n{}_{child}", sub.id);
                }
            }
            out.push_str("    end\n");
        }
        out.push_str(&topics.declarations());
        out.push_str(&stores.declarations());
        out.push_str(&edges);
        out
    }
}

impl NodeDescriptionKind {
    fn name(&self) -> &'static str {
        match self {
            NodeDescriptionKind::Source { .. } => "source",
            NodeDescriptionKind::Processor { .. } => "processor",
            NodeDescriptionKind::Sink { .. } => "sink",
        }
    }
}

/// The topics or stores of a Mermaid drawing: one node each, however many
/// edges lead to it, with an id made from its order of appearance.
struct Shapes {
    prefix: &'static str,
    open: &'static str,
    close: &'static str,
    ids: BTreeMap<String, usize>,
}

impl Shapes {
    fn new(prefix: &'static str, open: &'static str, close: &'static str) -> Self {
        Shapes {
            prefix,
            open,
            close,
            ids: BTreeMap::new(),
        }
    }

    fn id(&mut self, name: &str) -> String {
        let next = self.ids.len();
        format!("{}{}", self.prefix, *self.ids.entry(name.to_string()).or_insert(next))
    }

    fn declarations(&self) -> String {
        let mut by_id: Vec<(&usize, &String)> = self.ids.iter().map(|(name, id)| (id, name)).collect();
        by_id.sort();
        by_id
            .into_iter()
            .map(|(id, name)| format!("    {}{id}{}{}{}\n", self.prefix, self.open, escape(name), self.close))
            .collect()
    }
}

/// Mermaid reads `"`, `<` and `>` in a label as syntax or HTML; entity
/// codes keep them text (`<application.id>` in internal topic names).
fn escape(text: &str) -> String {
    text.replace('"', "#quot;").replace('<', "#lt;").replace('>', "#gt;")
}

impl fmt::Display for TopologyDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Topologies:")?;
        for sub in &self.subtopologies {
            writeln!(f, "   Sub-topology: {}", sub.id)?;
            for node in &sub.nodes {
                match &node.kind {
                    NodeDescriptionKind::Source { topic, dead_letters } => {
                        write!(f, "    Source: {} (topics: [{topic}])", node.name)?;
                        match dead_letters {
                            Some(dlq) => writeln!(f, " (dead letters: {dlq})")?,
                            None => writeln!(f)?,
                        }
                    }
                    // An enrichment's dead letters are named in its note.
                    NodeDescriptionKind::Processor { stores, .. } => {
                        writeln!(f, "    Processor: {} (stores: [{}])", node.name, stores.join(", "))?
                    }
                    NodeDescriptionKind::Sink { topic } => writeln!(f, "    Sink: {} (topic: {topic})", node.name)?,
                }
                if let Some(note) = &node.note {
                    writeln!(f, "      # {note}")?;
                }
                let names =
                    |indexes: &[usize]| -> Vec<&str> { indexes.iter().map(|&i| sub.nodes[i].name.as_str()).collect() };
                if !node.children.is_empty() {
                    writeln!(f, "      --> {}", names(&node.children).join(", "))?;
                }
                if !node.parents.is_empty() {
                    writeln!(f, "      <-- {}", names(&node.parents).join(", "))?;
                }
            }
            if !sub.co_partitioned.is_empty() {
                writeln!(
                    f,
                    "    Co-partitioned inputs (equal partition counts required): [{}]",
                    sub.co_partitioned.join(", ")
                )?;
            }
            for (store, changelog) in &sub.stores {
                writeln!(f, "    Store: {store} (changelog: {changelog})")?;
            }
        }
        Ok(())
    }
}
