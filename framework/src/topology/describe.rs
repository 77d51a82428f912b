//! `Topology::describe()`: the topology as text, in Kafka Streams' layout.

use super::{NodeKind, TopologyDef};
use crate::error_handler::ErrorHandler;
use crate::topology::changelog_topic;
use std::fmt::{self, Write};

/// A printable description of a topology.
///
/// Internal topic names start with `<application.id>`, which the running
/// application fills in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyDescription {
    text: String,
}

const APP: &str = "<application.id>";

impl TopologyDescription {
    pub(crate) fn new(def: &TopologyDef) -> Self {
        let mut text = String::from("Topologies:\n");
        for sub in &def.subtopologies {
            let _ = writeln!(text, "   Sub-topology: {}", sub.id);
            for &id in &sub.nodes {
                let node = &def.nodes[id];
                let _ = match &node.kind {
                    NodeKind::Source { topic, on_error } => {
                        let dead_letters = match on_error {
                            Some(ErrorHandler::DeadLetter(dlq)) => format!(" (dead letters: {dlq})"),
                            _ => String::new(),
                        };
                        writeln!(
                            text,
                            "    Source: {} (topics: [{}]){dead_letters}",
                            node.name,
                            topic.resolve(APP)
                        )
                    }
                    NodeKind::Processor => writeln!(
                        text,
                        "    Processor: {} (stores: [{}])",
                        node.name,
                        node.stores.join(", ")
                    ),
                    NodeKind::Sink { topic } => {
                        writeln!(text, "    Sink: {} (topic: {})", node.name, topic.resolve(APP))
                    }
                };
                if let Some(note) = &node.note {
                    let _ = writeln!(text, "      # {note}");
                }
                let children: Vec<&str> = sub
                    .nodes
                    .iter()
                    .filter(|&&c| def.nodes[c].parents.contains(&id))
                    .map(|&c| def.nodes[c].name.as_str())
                    .collect();
                if !children.is_empty() {
                    let _ = writeln!(text, "      --> {}", children.join(", "));
                }
                if !node.parents.is_empty() {
                    let parents: Vec<&str> = node.parents.iter().map(|&p| def.nodes[p].name.as_str()).collect();
                    let _ = writeln!(text, "      <-- {}", parents.join(", "));
                }
            }
            if sub.source_topics.len() > 1 {
                let topics: Vec<String> = sub.source_topics.iter().map(|t| t.resolve(APP)).collect();
                let _ = writeln!(
                    text,
                    "    Co-partitioned inputs (equal partition counts required): [{}]",
                    topics.join(", ")
                );
            }
            for store in &sub.stores {
                let _ = writeln!(text, "    Store: {store} (changelog: {})", changelog_topic(APP, store));
            }
        }
        TopologyDescription { text }
    }
}

impl fmt::Display for TopologyDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
