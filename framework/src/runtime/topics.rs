//! Start-up checks and creation of topics: source topics must exist and
//! co-partitioned ones agree; internal topics (repartition, changelog) and
//! dead-letter topics are created when missing and checked when present.

use super::config::{ClientKind, Settings};
use crate::error::WeirError;
use crate::topology::{InternalTopicKind, PartitionPlan, Topology};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Checking cleanup policies is a courtesy: a cluster that does not answer
/// DescribeConfigs (librdkafka's mock cluster) should not hold up a start.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopicSpec {
    pub name: String,
    pub partitions: i32,
    /// `compact` for changelogs, `delete` for everything else.
    pub cleanup_policy: &'static str,
}

/// What the runtime needs from a cluster's topic administration. The
/// default is Kafka's admin API ([`KafkaTopicAdmin`]); an embedded cluster
/// brings its own (see [`EmbeddedKafka`](crate::embedded::EmbeddedKafka)).
pub trait TopicAdmin: Send + Sync {
    /// The partition count of every existing topic.
    fn partition_counts(&self) -> Result<BTreeMap<String, i32>, WeirError>;
    /// The `cleanup.policy` of each of `topics`, where the cluster reports it.
    fn cleanup_policies(&self, topics: &[&str]) -> Result<BTreeMap<String, String>, WeirError>;
    /// Creates `topics`; one that already exists is not an error.
    fn create_topics(&self, topics: &[NewTopicSpec]) -> Result<(), WeirError>;
}

/// Topic administration through Kafka's admin API.
pub struct KafkaTopicAdmin {
    admin: AdminClient<DefaultClientContext>,
    replication_factor: i32,
}

impl KafkaTopicAdmin {
    pub fn new(settings: &Settings) -> Result<Self, WeirError> {
        let admin = settings
            .client_config(ClientKind::Admin)
            .create()
            .map_err(|e| WeirError::Kafka(format!("cannot create the admin client: {e}")))?;
        Ok(KafkaTopicAdmin {
            admin,
            replication_factor: settings.replication_factor,
        })
    }
}

/// The partition counts of every topic a client's metadata request sees.
pub(crate) fn metadata_partition_counts(
    client: &rdkafka::client::Client<impl rdkafka::ClientContext>,
) -> Result<BTreeMap<String, i32>, WeirError> {
    let metadata = client
        .fetch_metadata(None, ADMIN_TIMEOUT)
        .map_err(|e| WeirError::Kafka(format!("cannot read the cluster's metadata: {e}")))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_string(), t.partitions().len() as i32))
        .collect())
}

impl TopicAdmin for KafkaTopicAdmin {
    fn partition_counts(&self) -> Result<BTreeMap<String, i32>, WeirError> {
        metadata_partition_counts(self.admin.inner())
    }

    fn cleanup_policies(&self, topics: &[&str]) -> Result<BTreeMap<String, String>, WeirError> {
        let resources: Vec<ResourceSpecifier<'_>> = topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
        let results = futures_executor::block_on(self.admin.describe_configs(
            resources.iter(),
            &AdminOptions::new().request_timeout(Some(DESCRIBE_TIMEOUT)),
        ))
        .map_err(|e| WeirError::Kafka(format!("cannot describe topic configurations: {e}")))?;
        let mut policies = BTreeMap::new();
        for (topic, result) in topics.iter().zip(results) {
            let resource =
                result.map_err(|e| WeirError::Kafka(format!("cannot describe the configuration of '{topic}': {e}")))?;
            if let Some(policy) = resource.get("cleanup.policy").and_then(|e| e.value.clone()) {
                policies.insert(topic.to_string(), policy);
            }
        }
        Ok(policies)
    }

    fn create_topics(&self, topics: &[NewTopicSpec]) -> Result<(), WeirError> {
        let new_topics: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| {
                NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(self.replication_factor))
                    .set("cleanup.policy", t.cleanup_policy)
            })
            .collect();
        let results = futures_executor::block_on(self.admin.create_topics(
            new_topics.iter(),
            &AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT)),
        ))
        .map_err(|e| WeirError::Kafka(format!("cannot create topics: {e}")))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(WeirError::Kafka(format!("cannot create topic '{topic}': {code}"))),
            }
        }
        Ok(())
    }
}

/// Checks the topics a topology needs and creates the missing internal and
/// dead-letter ones; returns the plan of tasks and internal topics.
pub fn prepare_topics(
    topology: &Topology,
    settings: &Settings,
    admin: &dyn TopicAdmin,
) -> Result<PartitionPlan, WeirError> {
    let app = &settings.application_id;
    let existing = admin.partition_counts()?;
    let missing: Vec<&str> = topology
        .external_source_topics()
        .filter(|t| !existing.contains_key(*t))
        .collect();
    if !missing.is_empty() {
        return Err(WeirError::Config(format!(
            "source topic(s) missing from the cluster at {}: {}; create them before starting the application",
            settings.bootstrap_servers,
            missing.join(", ")
        )));
    }
    let plan = topology.partition_plan(app, &mut |topic| Ok(existing[topic]))?;

    let mut problems = Vec::new();
    let mut to_create = Vec::new();
    let mut to_check = Vec::new();
    for topic in &plan.internal_topics {
        let policy = match topic.kind {
            InternalTopicKind::Changelog => "compact",
            InternalTopicKind::Repartition => "delete",
        };
        match existing.get(&topic.name) {
            None => to_create.push(NewTopicSpec {
                name: topic.name.clone(),
                partitions: topic.partitions,
                cleanup_policy: policy,
            }),
            Some(&count) if count != topic.partitions => problems.push(format!(
                "internal topic '{}' has {count} partitions where the topology needs {}; delete it (or reset the \
                 application) so that weir recreates it",
                topic.name, topic.partitions
            )),
            Some(_) => to_check.push((topic.name.as_str(), topic.kind)),
        }
    }
    for (dead_letters, source) in topology.dead_letter_topics(app, &settings.default_error_handler) {
        if !existing.contains_key(&dead_letters) && !to_create.iter().any(|t| t.name == dead_letters) {
            to_create.push(NewTopicSpec {
                name: dead_letters,
                partitions: plan.partitions_of(topology, app, &source).unwrap_or(1),
                cleanup_policy: "delete",
            });
        }
    }
    check_cleanup_policies(admin, &to_check, &mut problems);
    if !problems.is_empty() {
        return Err(WeirError::Config(problems.join("; ")));
    }
    if !to_create.is_empty() {
        let names: Vec<&str> = to_create.iter().map(|t| t.name.as_str()).collect();
        tracing::info!(topics = ?names, "creating topics");
        admin.create_topics(&to_create)?;
        wait_for_topics(admin, &names)?;
    }
    Ok(plan)
}

/// A changelog must be compacted (or it loses history needed for restore);
/// a repartition topic must not be compacted only (or it loses records).
fn check_cleanup_policies(admin: &dyn TopicAdmin, topics: &[(&str, InternalTopicKind)], problems: &mut Vec<String>) {
    if topics.is_empty() {
        return;
    }
    let names: Vec<&str> = topics.iter().map(|(t, _)| *t).collect();
    let policies = match admin.cleanup_policies(&names) {
        Ok(policies) => policies,
        Err(error) => {
            tracing::warn!(%error, "cannot check the cleanup policy of internal topics");
            return;
        }
    };
    for (topic, kind) in topics {
        let Some(policy) = policies.get(*topic) else { continue };
        let compacted = policy.split(',').any(|p| p.trim() == "compact");
        let deletes = policy.split(',').any(|p| p.trim() == "delete");
        match kind {
            InternalTopicKind::Changelog if !compacted => problems.push(format!(
                "changelog topic '{topic}' has cleanup.policy={policy}; it must be compact so that stores can be restored"
            )),
            InternalTopicKind::Repartition if compacted && !deletes => problems.push(format!(
                "repartition topic '{topic}' has cleanup.policy={policy}; it must be delete, or records would be lost"
            )),
            _ => {}
        }
    }
}

/// Waits until created topics show up in the cluster's metadata.
fn wait_for_topics(admin: &dyn TopicAdmin, topics: &[&str]) -> Result<(), WeirError> {
    let deadline = Instant::now() + ADMIN_TIMEOUT;
    loop {
        let existing = admin.partition_counts()?;
        let missing: Vec<&str> = topics.iter().copied().filter(|t| !existing.contains_key(*t)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(WeirError::Kafka(format!(
                "created topics did not appear in the metadata: {}",
                missing.join(", ")
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
