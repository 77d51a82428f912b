//! The typed Debezium change event: what happened to a row, where and when.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// The operation of a change event (Debezium's `op` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Op {
    /// `c`: a row was inserted.
    #[serde(rename = "c")]
    Create,
    /// `u`: a row was updated.
    #[serde(rename = "u")]
    Update,
    /// `d`: a row was deleted.
    #[serde(rename = "d")]
    Delete,
    /// `r`: a row was read by a snapshot.
    #[serde(rename = "r")]
    Read,
    /// `t`: the table was truncated (no row, usually no key).
    #[serde(rename = "t")]
    Truncate,
    /// `m`: a logical decoding message (PostgreSQL `pg_logical_emit_message`).
    #[serde(rename = "m")]
    Message,
}

impl Op {
    /// Debezium's one-letter code.
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
            Op::Truncate => "t",
            Op::Message => "m",
        }
    }

    /// Whether the event carries the row's new state in `after`.
    pub fn is_upsert(self) -> bool {
        matches!(self, Op::Create | Op::Update | Op::Read)
    }
}

/// One Debezium change event of a table whose rows deserialize into `Row`.
///
/// ```
/// use weir::cdc::{ChangeEvent, Op};
/// #[derive(serde::Deserialize, Clone, Debug, PartialEq)]
/// struct User { user_id: i64, email: String }
///
/// let json = r#"{"before":null,"after":{"user_id":1,"email":"ada@example.com"},
///   "source":{"connector":"mysql","db":"app","table":"users","snapshot":"false","file":"binlog.000003","pos":154},
///   "op":"c","ts_ms":1700000000123}"#;
/// let event: ChangeEvent<User> = serde_json::from_str(json).unwrap();
/// assert_eq!(event.op, Op::Create);
/// assert_eq!(event.after.unwrap().email, "ada@example.com");
/// assert_eq!(event.source.file.as_deref(), Some("binlog.000003"));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent<Row> {
    pub op: Op,
    /// The row before the change (updates and deletes; how complete it is
    /// depends on the database, e.g. PostgreSQL's `REPLICA IDENTITY`).
    #[serde(default = "none")]
    pub before: Option<Row>,
    /// The row after the change (creates, updates, snapshot reads).
    #[serde(default = "none")]
    pub after: Option<Row>,
    #[serde(default)]
    pub source: Source,
    /// When Debezium processed the event, in milliseconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts_us: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts_ns: Option<i64>,
    /// Transaction metadata, when the connector provides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<Transaction>,
    /// The message of an `m` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<LogicalMessage>,
}

// A function rather than `Default` so that `Row` needs no `Default`.
fn none<T>() -> Option<T> {
    None
}

impl<Row> ChangeEvent<Row> {
    /// An event with this operation and rows and an empty source.
    pub fn new(op: Op, before: Option<Row>, after: Option<Row>) -> Self {
        ChangeEvent {
            op,
            before,
            after,
            source: Source::default(),
            ts_ms: None,
            ts_us: None,
            ts_ns: None,
            transaction: None,
            message: None,
        }
    }
}

/// Transaction metadata of an event (`provide.transaction.metadata`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub id: String,
    pub total_order: i64,
    pub data_collection_order: i64,
}

/// The payload of a PostgreSQL logical decoding message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogicalMessage {
    pub prefix: String,
    /// The message content as Debezium writes it (base64 in JSON).
    pub content: String,
}

/// Whether and how an event belongs to a snapshot. Debezium writes it as a
/// string (`"true"`, `"first"`, `"last"`, `"incremental"`, …) or, in older
/// versions, as a bool.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Snapshot {
    /// Streamed from the log, not part of a snapshot.
    #[default]
    False,
    True,
    First,
    FirstInDataCollection,
    Last,
    LastInDataCollection,
    Incremental,
    /// A value this version of weir does not know.
    Other(String),
}

impl Snapshot {
    /// Whether the event was produced by a snapshot (initial or incremental).
    pub fn is_snapshot(&self) -> bool {
        !matches!(self, Snapshot::False)
    }

    fn as_str(&self) -> &str {
        match self {
            Snapshot::False => "false",
            Snapshot::True => "true",
            Snapshot::First => "first",
            Snapshot::FirstInDataCollection => "first_in_data_collection",
            Snapshot::Last => "last",
            Snapshot::LastInDataCollection => "last_in_data_collection",
            Snapshot::Incremental => "incremental",
            Snapshot::Other(other) => other,
        }
    }

    fn parse(text: &str) -> Snapshot {
        match text {
            "false" => Snapshot::False,
            "true" => Snapshot::True,
            "first" => Snapshot::First,
            "first_in_data_collection" => Snapshot::FirstInDataCollection,
            "last" => Snapshot::Last,
            "last_in_data_collection" => Snapshot::LastInDataCollection,
            "incremental" => Snapshot::Incremental,
            other => Snapshot::Other(other.to_string()),
        }
    }
}

impl Serialize for Snapshot {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Snapshot {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SnapshotVisitor;
        impl<'de> Visitor<'de> for SnapshotVisitor {
            type Value = Snapshot;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a snapshot marker (string or bool)")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Snapshot, E> {
                Ok(if v { Snapshot::True } else { Snapshot::False })
            }
            fn visit_str<E>(self, v: &str) -> Result<Snapshot, E> {
                Ok(Snapshot::parse(v))
            }
            fn visit_unit<E>(self) -> Result<Snapshot, E> {
                Ok(Snapshot::False)
            }
        }
        deserializer.deserialize_any(SnapshotVisitor)
    }
}

/// Where a change came from. The fields common to Debezium's connectors and
/// those of MySQL and PostgreSQL are typed; any other connector-specific
/// field is kept in [`Source::extra`].
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Source {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connector: Option<String>,
    /// The connector's logical name (`topic.prefix`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// When the change was made in the database, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts_us: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts_ns: Option<i64>,
    pub snapshot: Snapshot,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<String>,
    /// The database schema (PostgreSQL, SQL Server, Oracle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    // MySQL
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gtid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pos: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    // PostgreSQL
    #[serde(rename = "txId", skip_serializing_if = "Option::is_none")]
    pub tx_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lsn: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xmin: Option<i64>,
    /// Fields of other connectors, as JSON.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

// By hand rather than derived with `flatten`, which would buffer every
// field of every event before reading it.
impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SourceVisitor;
        impl<'de> Visitor<'de> for SourceVisitor {
            type Value = Source;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Debezium source block")
            }
            fn visit_unit<E>(self) -> Result<Source, E> {
                Ok(Source::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Source, A::Error> {
                let mut s = Source::default();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match &*key {
                        "version" => s.version = map.next_value()?,
                        "connector" => s.connector = map.next_value()?,
                        "name" => s.name = map.next_value()?,
                        "ts_ms" => s.ts_ms = map.next_value()?,
                        "ts_us" => s.ts_us = map.next_value()?,
                        "ts_ns" => s.ts_ns = map.next_value()?,
                        "snapshot" => s.snapshot = map.next_value()?,
                        "db" => s.db = map.next_value()?,
                        "sequence" => s.sequence = map.next_value()?,
                        "schema" => s.schema = map.next_value()?,
                        "table" => s.table = map.next_value()?,
                        "server_id" => s.server_id = map.next_value()?,
                        "gtid" => s.gtid = map.next_value()?,
                        "file" => s.file = map.next_value()?,
                        "pos" => s.pos = map.next_value()?,
                        "row" => s.row = map.next_value()?,
                        "thread" => s.thread = map.next_value()?,
                        "query" => s.query = map.next_value()?,
                        "txId" => s.tx_id = map.next_value()?,
                        "lsn" => s.lsn = map.next_value()?,
                        "xmin" => s.xmin = map.next_value()?,
                        other => {
                            let value: serde_json::Value = map.next_value()?;
                            if !value.is_null() {
                                s.extra.insert(other.to_string(), value);
                            }
                        }
                    }
                }
                Ok(s)
            }
        }
        deserializer.deserialize_any(SourceVisitor)
    }
}

/// The part of an envelope a table needs: the operation and the new row.
/// `before` and `source` are skipped unread, which is faster and tolerates a
/// partial `before` (PostgreSQL deletes carry only the key columns by default).
#[derive(Deserialize)]
pub(crate) struct TableEnvelope<Row> {
    pub op: Op,
    #[serde(default = "none")]
    pub after: Option<Row>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reads_strings_and_bools() {
        for (json, expected) in [
            ("true", Snapshot::True),
            ("false", Snapshot::False),
            ("\"false\"", Snapshot::False),
            ("\"last\"", Snapshot::Last),
            ("\"incremental\"", Snapshot::Incremental),
            ("\"last_in_data_collection\"", Snapshot::LastInDataCollection),
            ("\"future\"", Snapshot::Other("future".into())),
        ] {
            assert_eq!(serde_json::from_str::<Snapshot>(json).unwrap(), expected, "{json}");
        }
        assert!(Snapshot::Incremental.is_snapshot());
        assert!(!Snapshot::False.is_snapshot());
    }

    #[test]
    fn source_keeps_unknown_connector_fields() {
        let source: Source = serde_json::from_str(
            r#"{"connector":"sqlserver","change_lsn":"00000025:00000d98:0002","commit_lsn":null,"snapshot":true}"#,
        )
        .unwrap();
        assert_eq!(source.connector.as_deref(), Some("sqlserver"));
        assert_eq!(source.extra["change_lsn"], "00000025:00000d98:0002");
        assert!(!source.extra.contains_key("commit_lsn"));
        let back: Source = serde_json::from_value(serde_json::to_value(&source).unwrap()).unwrap();
        assert_eq!(back, source);
    }
}
