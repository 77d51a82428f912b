//! The user-profile pipeline: MySQL `users` and `preferences` rows from
//! Debezium, joined on `user_id`, published as `user-profile`, enriched
//! with the user's id in the new system from the ID-mapping service and
//! published as `user-god-object`.
//!
//! - [`model`]: the rows read and the objects written;
//! - [`pipeline`]: the topologies of `run` and `reprocess`;
//! - [`generator`]: Debezium change events for both tables, and the state
//!   they imply;
//! - [`demo`]: everything in one process, verified at the end;
//! - [`floor`]: the Kafka I/O of the join stage alone, to measure it against.

pub mod demo;
pub mod floor;
pub mod generator;
pub mod model;
pub mod pipeline;
