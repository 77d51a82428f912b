//! How many tasks each sub-topology has, and which internal topics (with
//! which partition counts) follow from that. The test driver and the Kafka
//! runtime both start from this plan, so they create the same tasks.

use super::{changelog_topic, TopicRef, Topology};
use crate::error::WeirError;

/// What an internal topic is for; it decides the topic's cleanup policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InternalTopicKind {
    /// Records re-keyed between sub-topologies (`cleanup.policy=delete`).
    Repartition,
    /// Every write of a store (`cleanup.policy=compact`).
    Changelog,
}

/// An internal topic the application needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalTopic {
    pub name: String,
    pub partitions: i32,
    pub kind: InternalTopicKind,
}

/// The tasks and internal topics of a topology in one application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlan {
    /// The number of tasks (one per partition) of each sub-topology, by id.
    pub tasks: Vec<i32>,
    /// Repartition topics, then changelog topics.
    pub internal_topics: Vec<InternalTopic>,
}

impl PartitionPlan {
    /// The partition count of a topic the topology reads or an internal topic.
    pub fn partitions_of(&self, topology: &Topology, application_id: &str, topic: &str) -> Option<i32> {
        self.internal_topics
            .iter()
            .find(|t| t.name == topic)
            .map(|t| t.partitions)
            .or_else(|| {
                topology.subtopologies().iter().find_map(|sub| {
                    sub.source_topics
                        .iter()
                        .any(|t| t.resolve(application_id) == topic)
                        .then_some(self.tasks[sub.id])
                })
            })
    }
}

impl Topology {
    /// The user topics the topology reads (not its repartition topics).
    pub fn external_source_topics(&self) -> impl Iterator<Item = &str> {
        self.def.subtopologies.iter().flat_map(|sub| {
            sub.source_topics.iter().filter_map(|t| match t {
                TopicRef::External(name) => Some(name.as_str()),
                TopicRef::Repartition(_) => None,
            })
        })
    }

    /// Plans the tasks and internal topics, given the partition count of
    /// each external source topic (`external_partitions` may fail, for a
    /// topic that does not exist).
    ///
    /// A sub-topology has as many tasks as its external source topics have
    /// partitions, which must agree: a task reads the same partition of each.
    /// Repartition topics take the count of the sub-topology that reads them:
    /// its external topics' count, or, when it reads only repartition topics,
    /// the largest count of the sub-topologies writing them (as Kafka Streams
    /// sizes co-partitioned repartition topics). A store's changelog has one
    /// partition per task of the store's sub-topology.
    pub fn partition_plan(
        &self,
        application_id: &str,
        external_partitions: &mut dyn FnMut(&str) -> Result<i32, WeirError>,
    ) -> Result<PartitionPlan, WeirError> {
        let subs = self.subtopologies();
        let mut counts: Vec<Option<i32>> = vec![None; subs.len()];
        for sub in subs {
            let mut externals = Vec::new();
            for topic in &sub.source_topics {
                if let TopicRef::External(name) = topic {
                    externals.push((name.as_str(), external_partitions(name)?));
                }
            }
            if externals.iter().any(|(_, c)| *c != externals[0].1) {
                let listed: Vec<String> = externals.iter().map(|(t, c)| format!("{t} ({c})")).collect();
                return Err(WeirError::InvalidTopology(format!(
                    "sub-topology {} reads topics with different partition counts: {}; topics that are joined \
                     must be co-partitioned (same partition count, same partitioning of keys)",
                    sub.id,
                    listed.join(", ")
                )));
            }
            counts[sub.id] = externals.first().map(|(_, c)| *c);
        }
        // A sub-topology that reads only repartition topics takes the largest
        // count of the sub-topologies writing them. Counts only grow, so this
        // settles, cycles included (a foreign-key join's two sides write each
        // other's input).
        let fixed: Vec<bool> = counts.iter().map(Option::is_some).collect();
        loop {
            let mut grew = false;
            for sub in subs.iter().filter(|sub| !fixed[sub.id]) {
                let largest_writer = sub
                    .source_topics
                    .iter()
                    .flat_map(|topic| subs.iter().filter(move |s| s.sink_topics.contains(topic)))
                    .filter_map(|writer| counts[writer.id])
                    .max();
                if largest_writer > counts[sub.id] {
                    counts[sub.id] = largest_writer;
                    grew = true;
                }
            }
            if !grew {
                break;
            }
        }
        let tasks = counts
            .into_iter()
            .enumerate()
            .map(|(id, c)| {
                c.ok_or_else(|| WeirError::InvalidTopology(format!("sub-topology {id} has no partition count")))
            })
            .collect::<Result<Vec<i32>, WeirError>>()?;
        let mut internal_topics = Vec::new();
        for sub in subs {
            for topic in sub.source_topics.iter().filter(|t| t.is_internal()) {
                internal_topics.push(InternalTopic {
                    name: topic.resolve(application_id),
                    partitions: tasks[sub.id],
                    kind: InternalTopicKind::Repartition,
                });
            }
        }
        for sub in subs {
            for store in &sub.stores {
                internal_topics.push(InternalTopic {
                    name: changelog_topic(application_id, store),
                    partitions: tasks[sub.id],
                    kind: InternalTopicKind::Changelog,
                });
            }
        }
        Ok(PartitionPlan { tasks, internal_topics })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serde::{Nullable, Utf8, I64};
    use crate::{Consumed, ForeignKeyJoined, Grouped, Materialized, Repartitioned, StreamsBuilder};

    #[test]
    fn a_regrouped_count_plans_its_repartition_and_changelog_topics() {
        let builder = StreamsBuilder::new();
        builder
            .table("users", Consumed::with(Utf8, Utf8))
            .group_by(
                |_, email| (email.clone(), 1i64),
                Grouped::with(Utf8, I64).named("by-email"),
            )
            .count(Materialized::named("counts"));
        let topology = builder.build().unwrap();
        let plan = topology
            .partition_plan("app", &mut |topic| match topic {
                "users" => Ok(4),
                other => Err(WeirError::Config(format!("no topic {other}"))),
            })
            .unwrap();
        assert_eq!(plan.tasks, vec![4, 4]);
        let topics: Vec<(&str, i32, InternalTopicKind)> = plan
            .internal_topics
            .iter()
            .map(|t| (t.name.as_str(), t.partitions, t.kind))
            .collect();
        assert!(topics.contains(&("app-by-email-repartition", 4, InternalTopicKind::Repartition)));
        assert!(topics.contains(&("app-counts-changelog", 4, InternalTopicKind::Changelog)));
        assert_eq!(plan.partitions_of(&topology, "app", "users"), Some(4));
        assert_eq!(topology.external_source_topics().collect::<Vec<_>>(), vec!["users"]);
    }

    #[test]
    fn joined_topics_with_different_partition_counts_are_rejected_by_name() {
        let builder = StreamsBuilder::new();
        let a = builder.table("a", Consumed::with(Utf8, Utf8));
        let b = builder.table("b", Consumed::with(Utf8, Utf8));
        a.join(&b, |x, y| format!("{x}{y}"));
        let topology = builder.build().unwrap();
        let error = topology
            .partition_plan("app", &mut |topic| Ok(if topic == "a" { 3 } else { 6 }))
            .unwrap_err()
            .to_string();
        assert!(error.contains("a (3)") && error.contains("b (6)"), "{error}");
    }

    #[test]
    fn a_foreign_key_join_between_re_partitioned_tables_settles_its_partition_counts() {
        // Both tables read only repartition topics, and each side of the
        // join writes the other's input: the plan must still settle.
        let builder = StreamsBuilder::new();
        let table = |topic: &str| {
            builder
                .stream(topic, Consumed::with(Utf8, Nullable(Utf8)))
                .repartition(Repartitioned::with(Utf8, Nullable(Utf8)).named(format!("{topic}-by-key")))
                .to_table(&format!("{topic}-store"), crate::Serdes::with(Utf8, Utf8))
        };
        let (orders, users) = (table("orders"), table("users"));
        orders.join_on_foreign_key(
            &users,
            |user: &String| Some(user.clone()),
            |order, user| format!("{order}{user}"),
            ForeignKeyJoined::with(Utf8, Utf8, Utf8, Utf8, Utf8).named("fk"),
        );
        let topology = builder.build().unwrap();
        let plan = topology
            .partition_plan("app", &mut |topic| Ok(if topic == "orders" { 3 } else { 5 }))
            .unwrap();
        let partitions = |name: &str| {
            plan.internal_topics
                .iter()
                .find(|t| t.name == name)
                .map(|t| t.partitions)
                .unwrap_or_else(|| panic!("no topic {name} in {:?}", plan.internal_topics))
        };
        // Each side reads only internal topics, so each takes the largest
        // count of its writers: 5, through the answers the users' side writes.
        for topic in [
            "app-orders-by-key-repartition",
            "app-users-by-key-repartition",
            "app-fk-subscription-repartition",
            "app-fk-response-repartition",
            "app-fk-subscriptions-changelog",
            "app-fk-changelog",
        ] {
            assert_eq!(partitions(topic), 5, "{topic}");
        }
        assert_eq!(
            plan.tasks.iter().filter(|&&tasks| tasks == 3).count(),
            1,
            "{:?}",
            plan.tasks
        );
    }
}
