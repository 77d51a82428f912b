//! Running a topology: tasks, and (to come) the Kafka consumer/producer loop.
//!
//! A [`Task`] owns the processor instances and store partitions of one
//! sub-topology on one partition, and turns input records into output
//! records. Whatever feeds it (the test driver today, a Kafka consumer
//! group later) only moves raw records in and out.

mod task;

pub(crate) use task::TaskBuilder;
pub use task::{Task, TaskId, TaskSettings};
