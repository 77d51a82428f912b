//! An in-process Kafka cluster: librdkafka's mock cluster, which speaks the
//! Kafka protocol on loopback ports. Demos and tests run weir against it
//! with no broker to install; other processes can connect to it too.
//!
//! The mock cluster has no admin API, so topics are created through
//! [`EmbeddedKafka::create_topic`] (the runtime does so through its
//! [`TopicAdmin`] implementation). It neither compacts topics nor hides
//! aborted transactions from `read_committed` consumers.
//!
//! ```
//! use weir::embedded::EmbeddedKafka;
//! let kafka = EmbeddedKafka::start().unwrap();
//! kafka.create_topic("users", 3).unwrap();
//! assert!(kafka.bootstrap_servers().contains(':'));
//! ```

use crate::error::WeirError;
use crate::runtime::{NewTopicSpec, TopicAdmin};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, DefaultProducerContext};
use rdkafka::types::RDKafkaApiKey;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientConfig;
use std::collections::BTreeMap;
use std::time::Duration;

/// A running mock cluster; it stops when dropped.
pub struct EmbeddedKafka {
    cluster: MockCluster<'static, DefaultProducerContext>,
    bootstrap_servers: String,
    /// Reads the cluster's metadata (the mock answers metadata requests).
    metadata: BaseProducer,
}

// SAFETY: the mock cluster's operations post requests to the cluster's own
// thread and wait for the answer; librdkafka makes them safe to call from
// any thread. The handle is only a pointer to that cluster.
unsafe impl Send for EmbeddedKafka {}
unsafe impl Sync for EmbeddedKafka {}

impl EmbeddedKafka {
    /// Starts a cluster of one broker.
    pub fn start() -> Result<Self, WeirError> {
        let cluster =
            MockCluster::new(1).map_err(|e| WeirError::Kafka(format!("cannot start the mock cluster: {e}")))?;
        let bootstrap_servers = cluster.bootstrap_servers();
        let metadata = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap_servers)
            .create()
            .map_err(|e| WeirError::Kafka(format!("cannot connect to the mock cluster: {e}")))?;
        Ok(EmbeddedKafka {
            cluster,
            bootstrap_servers,
            metadata,
        })
    }

    /// The `bootstrap.servers` of the cluster.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// Creates a topic with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), WeirError> {
        self.cluster
            .create_topic(topic, partitions, 1)
            .map_err(|e| WeirError::Kafka(format!("cannot create topic '{topic}' on the mock cluster: {e}")))
    }
}

/// A kind of request the cluster can be made to fail, for tests of what an
/// instance does when the brokers misbehave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Fetch,
    Produce,
    OffsetCommit,
    OffsetFetch,
    Heartbeat,
    /// The offsets of a transaction (exactly-once).
    TxnOffsetCommit,
    /// Fetches, refused as unauthorized for the topic (an ACL removed).
    UnauthorizedFetch,
}

impl Request {
    fn api_key(self) -> RDKafkaApiKey {
        match self {
            Request::Fetch => RDKafkaApiKey::Fetch,
            Request::Produce => RDKafkaApiKey::Produce,
            Request::OffsetCommit => RDKafkaApiKey::OffsetCommit,
            Request::OffsetFetch => RDKafkaApiKey::OffsetFetch,
            Request::Heartbeat => RDKafkaApiKey::Heartbeat,
            Request::TxnOffsetCommit => RDKafkaApiKey::TxnOffsetCommit,
            Request::UnauthorizedFetch => RDKafkaApiKey::Fetch,
        }
    }

    /// The error a broker of a sick cluster answers with: retriable (a
    /// leader or coordinator moving), except for a transaction's offsets,
    /// which it refuses as unauthorized, so that the transaction aborts,
    /// and for unauthorized fetches.
    fn error(self) -> RDKafkaRespErr {
        match self {
            Request::UnauthorizedFetch => RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
            Request::TxnOffsetCommit => RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED,
            Request::Fetch | Request::Produce => RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            Request::OffsetCommit | Request::OffsetFetch | Request::Heartbeat => {
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS
            }
        }
    }
}

impl EmbeddedKafka {
    /// Fails the next `times` requests of a kind with the error a sick
    /// broker would answer (see [`Request`]).
    pub fn fail_requests(&self, request: Request, times: usize) {
        self.cluster
            .request_errors(request.api_key(), &vec![request.error(); times]);
    }

    /// Takes the broker down (connections are refused) or back up.
    pub fn set_broker_up(&self, up: bool) -> Result<(), WeirError> {
        let changed = if up {
            self.cluster.broker_up(1)
        } else {
            self.cluster.broker_down(1)
        };
        changed.map_err(|e| WeirError::Kafka(format!("cannot change the mock broker: {e}")))
    }

    /// Delays every answer of the broker by `rtt`, as a distant or
    /// overloaded broker would (zero: answers at once again).
    pub fn set_round_trip_time(&self, rtt: Duration) -> Result<(), WeirError> {
        self.cluster
            .broker_round_trip_time(1, rtt)
            .map_err(|e| WeirError::Kafka(format!("cannot change the mock broker: {e}")))
    }
}

impl TopicAdmin for EmbeddedKafka {
    fn partition_counts(&self) -> Result<BTreeMap<String, i32>, WeirError> {
        crate::runtime::metadata_partition_counts(rdkafka::producer::Producer::client(&self.metadata))
    }

    /// The mock cluster keeps no topic configuration.
    fn cleanup_policies(&self, _topics: &[&str]) -> Result<BTreeMap<String, String>, WeirError> {
        Ok(BTreeMap::new())
    }

    fn create_topics(&self, topics: &[NewTopicSpec]) -> Result<(), WeirError> {
        topics.iter().try_for_each(|t| self.create_topic(&t.name, t.partitions))
    }
}
