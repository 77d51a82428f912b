//! Running a topology against Kafka.
//!
//! A record's path through a running instance:
//! 1. [`KafkaStreams::start`] checks the source topics, creates internal
//!    topics ([`topics`](prepare_topics)) and starts the stream threads.
//! 2. Each stream thread's consumer joins the group `application.id` with
//!    the range assignor, so partition `p` of co-partitioned topics lands
//!    on one thread. On assignment, the task manager creates one [`Task`]
//!    per (sub-topology, partition), and its state manager restores the
//!    task's stores from their changelogs (from the checkpoint of a clean
//!    close when there is one, up to the changelog offsets of the last
//!    commit) and, under at-least-once, fences the changelogs and puts
//!    right what an uncommitted tail left behind. The consumer starts each
//!    input at the offset committed with those changelog offsets.
//! 3. Each polled record goes to its task, which runs it through the
//!    sub-topology's processors (a task with several input partitions
//!    takes their records in time order, `partition_group.rs`); the outputs (sinks, repartition topics,
//!    changelog writes, dead letters) go to the producer.
//! 4. Every `commit.interval.ms`, after an assignment and before a
//!    revocation, the task manager commits what the commit protocol allows
//!    (`commit.rs`): producer flushed, then each task's input offsets with
//!    the changelog offsets they belong to, or under exactly-once, one
//!    transaction.
//! 5. Interactive queries ([`KafkaStreams::store`]) read the tasks' stores
//!    from other threads ([`query`](ReadOnlyStore)).
//!
//! A [`Task`] itself knows nothing of Kafka: the test driver runs the very
//! same tasks without a broker. Nor do the task manager, the state manager
//! and the commit rules: they reach the brokers through the ports of
//! `broker.rs`, which the stream thread implements with rdkafka clients
//! and the protocol's simulation (`simulation/`, a test) with a model
//! cluster.

mod broker;
mod changelog_reader;
mod checkpoint;
mod commit;
mod config;
mod consumer;
mod delivery_lag;
mod gauges;
mod global;
mod health;
mod kafka_streams;
mod partition_group;
mod producer;
mod query;
#[cfg(test)]
mod simulation;
mod state_dir_lock;
mod state_manager;
mod stream_thread;
mod task;
mod task_manager;
mod topics;

pub use checkpoint::Checkpoint;
pub(crate) use config::DEFAULT_CACHE_MAX_BYTES;
pub use config::{
    ClientProperties, ProcessingGuarantee, Settings, StoreBackend, StreamsConfig, CLIENT_DEFAULTS, WEIR_KEYS,
};
pub(crate) use consumer::KafkaHeaders;
pub(crate) use global::GlobalStore;
pub use global::GlobalStores;
pub(crate) use kafka_streams::StateCell;
pub use kafka_streams::{KafkaStreams, ShutdownHandle, StatusHandle, StreamsState};
pub use producer::flush;
pub use query::{KeyLocation, ReadOnlyStore};
pub(crate) use task::Punctuator;
pub(crate) use task::TaskBuilder;
pub use task::{PunctuationType, Task, TaskId, TaskSettings};
pub(crate) use topics::metadata_partition_counts;
pub use topics::{prepare_topics, KafkaTopicAdmin, NewTopicSpec, TopicAdmin};
