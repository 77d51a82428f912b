//! Avro through a Confluent-compatible Schema Registry.
//!
//! - [`SchemaRegistry`]: the registry client (URLs, authentication,
//!   timeouts, retries while it is unreachable), caching schemas by id.
//! - [`Avro`]: a [`Serde`](crate::serde::Serde) for serde types with an Avro
//!   schema (`#[derive(AvroSchema)]`), in the Confluent wire format; writes
//!   register the writer schema once per topic, reads resolve the writer
//!   schema to the reader's, so compatible evolutions keep a running
//!   application reading.
//!
//! Debezium's Avro events are read by [`crate::cdc::Cdc::avro`].
//!
//! For tests, [`crate::testing::schema_registry`] runs a registry in process.

mod codec;
mod registry;

pub(crate) use codec::writer_schema;
pub use codec::{Avro, SubjectStrategy};
pub(crate) use registry::WriterSchema;
pub use registry::{SchemaRegistry, SchemaRegistryBuilder};
