//! weir: stream processing for Rust in the style of Kafka Streams.
//!
//! Build a topology with the typed DSL ([`StreamsBuilder`], [`KStream`],
//! [`KTable`]), test it without a broker in the
//! [`TopologyTestDriver`](testing::TopologyTestDriver), and run it against
//! Kafka with [`KafkaStreams`](runtime::KafkaStreams), with state in RocksDB
//! stores backed by compacted changelog topics.
//!
//! ```
//! use weir::{StreamsBuilder, Consumed, Produced, serde::{Json, Utf8}};
//! use weir::testing::TopologyTestDriver;
//!
//! let builder = StreamsBuilder::new();
//! let users = builder.table("users", Consumed::with(Utf8, Json::<String>::new()));
//! let prefs = builder.table("prefs", Consumed::with(Utf8, Json::<bool>::new()));
//! users
//!     .join(&prefs, |email, dark_mode| format!("{email}:{dark_mode}"))
//!     .to("profiles", Produced::with(Utf8, Utf8));
//!
//! let driver = TopologyTestDriver::new(builder.build().unwrap()).unwrap();
//! let users_in = driver.input_topic("users", Utf8, Json::<String>::new());
//! let prefs_in = driver.input_topic("prefs", Utf8, Json::<bool>::new());
//! let profiles = driver.output_topic("profiles", Utf8, Utf8);
//! users_in.pipe("u1".into(), "ada@example.com".into()).unwrap();
//! prefs_in.pipe("u1".into(), true).unwrap();
//! users_in.pipe_tombstone("u1".into()).unwrap();
//! assert_eq!(
//!     profiles.read_key_values().unwrap(),
//!     vec![("u1".into(), Some("ada@example.com:true".into())), ("u1".into(), None)]
//! );
//! ```

pub mod avro;
pub mod cdc;
pub mod dsl;
pub mod embedded;
pub mod enrich;
pub mod error;
pub mod error_handler;
pub(crate) mod http_server;
pub mod metrics;
pub mod ops;
pub mod partition;
pub(crate) mod processor;
pub mod record;
pub mod runtime;
pub mod serde;
pub mod state;
pub mod testing;
pub mod topology;
pub mod window;

pub use dsl::process;
pub use dsl::{
    BranchedKStream, Consumed, Data, ForeignKeyJoined, GlobalKTable, Grouped, KGroupedStream, KGroupedTable, KStream,
    KTable, Materialized, Produced, Repartitioned, Serdes, StreamsBuilder,
};
pub use error::{Result, WeirError};
pub use error_handler::ErrorHandler;
pub use topology::Topology;
