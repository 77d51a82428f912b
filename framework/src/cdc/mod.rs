//! Debezium change data capture: change events decoded natively into typed
//! tables and streams.
//!
//! [`StreamsBuilder::cdc_table`](crate::StreamsBuilder::cdc_table) reads a
//! Debezium topic as a [`KTable`](crate::KTable) of rows: `c`, `u` and `r`
//! events upsert `after`, `d` events and tombstones delete, and a deletion
//! produces one downstream tombstone even though Debezium sends a `d` event
//! and a tombstone for it. [`StreamsBuilder::cdc_stream`](crate::StreamsBuilder::cdc_stream)
//! gives the [`ChangeEvent`]s themselves.
//!
//! ```
//! use weir::StreamsBuilder;
//! use weir::cdc::Cdc;
//! use weir::serde::Json;
//! use weir::Produced;
//!
//! #[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
//! struct User { user_id: i64, email: String }
//! #[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
//! struct Preferences { user_id: i64, dark_mode: bool }
//!
//! let builder = StreamsBuilder::new();
//! let users = builder.cdc_table::<i64, User>("mysql.app.users", Cdc::json());
//! let prefs = builder.cdc_table::<i64, Preferences>("mysql.app.preferences", Cdc::json());
//! users
//!     .join(&prefs, |u, p| (u.email.clone(), p.dark_mode))
//!     .to("user-profile", Produced::with(Json::new(), Json::new()));
//! // Both tables are re-partitioned by weir's key serialization before the join:
//! println!("{}", builder.build().unwrap().describe());
//! ```
//!
//! # Formats
//!
//! Values are read by an [`EventDecoder`] and keys by a [`KeyDecoder`].
//! [`JsonEvents`] and [`JsonKey`] read Kafka Connect's JSON with or without
//! the schema wrapper, and [`JsonEvents::flattened`] reads the rows of the
//! `ExtractNewRecordState` transform. [`AvroEvents`] and [`AvroKey`] read
//! Confluent's Avro through a Schema Registry ([`Cdc::avro`]) with the same
//! meaning. Another format plugs in by implementing the two traits.
//!
//! # Partitioning
//!
//! Debezium's producer partitions by murmur2 of the key *bytes*, and two
//! tables' keys rarely have equal bytes for equal values (the schema wrapper
//! names the table, Avro keys carry schema ids, key columns may be named
//! differently). So a CDC table is re-partitioned by weir's own key
//! serialization (`<application.id>-<topic>-cdc-repartition`) unless the
//! topic is declared co-partitioned with [`Cdc::co_partitioned`];
//! `Topology::describe()` shows which.
//!
//! # Bad records and metrics
//!
//! A record that cannot be decoded goes to the source's error handler, by
//! default [`ErrorHandler::DeadLetter`] to `<topic>-dlq` (see
//! [`default_dead_letter_topic`]). Every event is counted by operation in
//! `weir_cdc_events_total{topic, op}` (`op` is `c`, `u`, `d`, `r`, `t`, `m`
//! or `tombstone`), and events a table does not apply (truncates, messages)
//! in `weir_records_skipped_total`.

mod avro;
mod event;
mod json;
mod types;

pub use avro::{AvroEvents, AvroKey};
pub use event::{ChangeEvent, LogicalMessage, Op, Snapshot, Source, Transaction};
pub use json::{JsonEvents, JsonKey};
/// The unscaled value of a [`Decimal`].
pub use num_bigint::BigInt;
pub use types::{
    Date, Decimal, DecimalError, JsonText, MicroTime, MicroTimestamp, NanoTimestamp, Time, Timestamp, ZonedTimestamp,
};

use crate::error::SerdeError;
use crate::error_handler::ErrorHandler;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Decodes the keys of a CDC topic.
pub trait KeyDecoder<K>: Send + Sync + 'static {
    /// `Ok(None)` when the key is null (a keyless table, a truncate event).
    fn decode_key(&self, topic: &str, bytes: &[u8]) -> Result<Option<K>, SerdeError>;
}

/// Decodes the values of a CDC topic.
pub trait EventDecoder<Row>: Send + Sync + 'static {
    /// The whole event; `Ok(None)` for a tombstone.
    fn decode_event(&self, topic: &str, bytes: &[u8]) -> Result<Option<ChangeEvent<Row>>, SerdeError>;

    /// Only what a table needs; `Ok(None)` for a tombstone. It need not
    /// decode `before`, so it is faster and accepts a partial `before`.
    fn decode_row_change(&self, topic: &str, bytes: &[u8]) -> Result<Option<RowChange<Row>>, SerdeError>;
}

/// What a change event does to a table: the operation and, for `c`, `u` and
/// `r`, the row after it.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange<Row> {
    pub op: Op,
    pub after: Option<Row>,
}

/// Which time a CDC record carries into the topology ([`Cdc::time`]): its
/// outputs' timestamps, the stream time punctuations go by, a table's TTL.
/// An event without the chosen time keeps its record's timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CdcTime {
    /// The Kafka record's timestamp, as the connector's producer set it.
    #[default]
    Record,
    /// The event's `ts_ms`: when Debezium processed the change.
    Connector,
    /// The event's `source.ts_ms`: when the change was made in the database.
    Database,
}

impl CdcTime {
    /// The time this choice takes from `event`, if it has one.
    pub(crate) fn of<Row>(self, event: &ChangeEvent<Row>) -> Option<i64> {
        match self {
            CdcTime::Record => None,
            CdcTime::Connector => event.ts_ms,
            CdcTime::Database => event.source.ts_ms,
        }
    }
}

/// What a CDC table does with a truncate event (`op` = `t`).
///
/// Debezium writes a truncate event once, with a null key, to one partition
/// of the topic, while a table's rows are spread over all partitions; no
/// task sees every row and the event together, so weir does not offer
/// "delete every row". Re-snapshot the table to clear it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TruncatePolicy {
    /// Keep the rows, log a warning, count the event as skipped (`cdc_truncate`).
    #[default]
    Skip,
    /// Stop processing with an error naming the event.
    Fail,
}

/// How to read a Debezium topic: the decoders, the error handler, and for a
/// table its store, partitioning and truncate policy.
///
/// ```
/// use weir::cdc::{Cdc, JsonEvents, TruncatePolicy};
/// use weir::ErrorHandler;
/// # #[derive(serde::Deserialize)] struct Item;
/// let items: Cdc<i64, Item> = Cdc::json()
///     .events(JsonEvents::new().decimal_scale("price", 2))
///     .on_error(ErrorHandler::dead_letter("items-errors"))
///     .on_truncate(TruncatePolicy::Fail)
///     .store("items");
/// ```
pub struct Cdc<K, Row> {
    pub(crate) keys: Arc<dyn KeyDecoder<K>>,
    pub(crate) events: Arc<dyn EventDecoder<Row>>,
    pub(crate) on_error: Option<ErrorHandler>,
    pub(crate) store: Option<String>,
    pub(crate) ttl: Option<std::time::Duration>,
    pub(crate) time: CdcTime,
    pub(crate) co_partitioned: bool,
    pub(crate) truncate: TruncatePolicy,
}

impl<K: DeserializeOwned + 'static, Row: DeserializeOwned + 'static> Cdc<K, Row> {
    /// JSON keys and Debezium envelopes, with or without the schema wrapper.
    pub fn json() -> Self {
        Self::with_decoders(JsonKey::new(), JsonEvents::new())
    }

    /// JSON keys and rows flattened by `ExtractNewRecordState`.
    pub fn flattened() -> Self {
        Self::with_decoders(JsonKey::new(), JsonEvents::flattened())
    }

    /// Avro keys and Debezium envelopes in the Confluent wire format, their
    /// schemas from `registry` (for flattened rows, use
    /// [`Cdc::with_decoders`] with [`AvroEvents::flattened`]).
    ///
    /// ```no_run
    /// use weir::avro::SchemaRegistry;
    /// use weir::cdc::Cdc;
    /// use weir::StreamsBuilder;
    /// #[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
    /// struct User { user_id: i64, email: String }
    ///
    /// let registry = SchemaRegistry::new("http://schema-registry:8081")?;
    /// let builder = StreamsBuilder::new();
    /// let users = builder.cdc_table::<i64, User>("mysql.app.users", Cdc::avro(&registry));
    /// # Ok::<(), weir::WeirError>(())
    /// ```
    pub fn avro(registry: &crate::avro::SchemaRegistry) -> Self {
        Self::with_decoders(AvroKey::new(registry), AvroEvents::new(registry))
    }
}

impl<K, Row> Cdc<K, Row> {
    /// Any key and event decoders (for example Avro).
    pub fn with_decoders(keys: impl KeyDecoder<K>, events: impl EventDecoder<Row>) -> Self {
        Cdc {
            keys: Arc::new(keys),
            events: Arc::new(events),
            on_error: None,
            store: None,
            ttl: None,
            time: CdcTime::Record,
            co_partitioned: false,
            truncate: TruncatePolicy::default(),
        }
    }

    /// Replaces the event decoder, e.g. with [`JsonEvents::decimal_scale`] set.
    pub fn events(mut self, events: impl EventDecoder<Row>) -> Self {
        self.events = Arc::new(events);
        self
    }

    /// What to do with records that cannot be decoded (default: dead-letter
    /// to [`default_dead_letter_topic`]).
    pub fn on_error(mut self, handler: ErrorHandler) -> Self {
        self.on_error = Some(handler);
        self
    }

    /// Names the table's store (default: generated from the topic).
    pub fn store(mut self, name: impl Into<String>) -> Self {
        self.store = Some(name.into());
        self
    }

    /// Deletes the table's rows that have not changed for `ttl`, as
    /// [`crate::Consumed::ttl`] does: a row's time is its last change
    /// record's timestamp (the time the connector wrote it), and each
    /// expired row leaves with a tombstone downstream.
    pub fn ttl(mut self, ttl: std::time::Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Which time each change carries (default [`CdcTime::Record`]). For a
    /// table, any other choice decodes each event whole (`before` and
    /// `source` too), as a CDC stream does, instead of only its operation
    /// and new row.
    ///
    /// ```
    /// use weir::{StreamsBuilder, Produced, cdc::{Cdc, CdcTime}, serde::{Bytes, Json}};
    /// use weir::testing::{TestRecord, TopologyTestDriver};
    ///
    /// #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
    /// struct User { user_id: i64, email: String }
    ///
    /// let builder = StreamsBuilder::new();
    /// builder
    ///     .cdc_table::<i64, User>("mysql.app.users", Cdc::json().time(CdcTime::Database))
    ///     .to("users", Produced::with(Json::new(), Json::new()));
    /// let driver = TopologyTestDriver::new(builder.build()?)?;
    /// let event = br#"{"op":"c","after":{"user_id":1,"email":"ada@example.com"},"source":{"ts_ms":1700000000000,"snapshot":"false"},"ts_ms":1700000000250}"#;
    /// driver
    ///     .input_topic("mysql.app.users", Bytes, Bytes)
    ///     .pipe_record(TestRecord::new(br#"{"user_id":1}"#.to_vec(), Some(event.to_vec())).at(5))?;
    /// let users = driver.output_topic("users", Json::<i64>::new(), Json::<User>::new()).read_records()?;
    /// assert_eq!(users[0].timestamp, 1_700_000_000_000);
    /// # Ok::<(), weir::WeirError>(())
    /// ```
    pub fn time(mut self, time: CdcTime) -> Self {
        self.time = time;
        self
    }

    /// Declares that equal keys of this topic sit on the same partition as in
    /// the topics it is joined with, as when Debezium writes byte-identical
    /// keys; the table then reads the topic in place instead of through a
    /// repartition topic. A wrong declaration gives wrong join results.
    pub fn co_partitioned(mut self) -> Self {
        self.co_partitioned = true;
        self
    }

    /// What a table does with a truncate event (default [`TruncatePolicy::Skip`]).
    pub fn on_truncate(mut self, policy: TruncatePolicy) -> Self {
        self.truncate = policy;
        self
    }
}

/// The dead-letter topic of a CDC source unless one is set: `<topic>-dlq`.
pub fn default_dead_letter_topic(topic: &str) -> String {
    format!("{topic}-dlq")
}
