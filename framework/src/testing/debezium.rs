//! Debezium's JSON output, written from Rust rows: to test CDC topologies
//! and to generate CDC traffic without a database and a Kafka Connect.
//!
//! [`Debezium`] writes keys and values as a MySQL or PostgreSQL
//! connector does through Kafka Connect's `JsonConverter`, with or without
//! the schema wrapper, as the full envelope or flattened by
//! `ExtractNewRecordState` (`add.fields=op,table,source.ts_ms`,
//! `delete.handling.mode=rewrite`). Decimal columns are written in the
//! default `precise` mode (base64 bytes, scale in the schema).
//!
//! ```
//! use weir::cdc::Op;
//! use weir::testing::debezium::{Column, ColumnType, Debezium, EventFormat};
//!
//! #[derive(serde::Serialize)]
//! struct User { user_id: i64, email: String }
//!
//! let users = Debezium::mysql("app", "users")
//!     .key_column(Column::new("user_id", ColumnType::Int64))
//!     .column(Column::new("email", ColumnType::String))
//!     .format(EventFormat::Envelope { schemas: true });
//! let key = users.key(&1i64);
//! let value = users.event(Op::Create, None, Some(&User { user_id: 1, email: "ada@example.com".into() }));
//! let json: serde_json::Value = serde_json::from_slice(&value).unwrap();
//! assert_eq!(json["payload"]["op"], "c");
//! assert_eq!(json["schema"]["name"], "mysql.app.users.Envelope");
//! assert_eq!(users.topic(), "mysql.app.users");
//! assert_eq!(serde_json::from_slice::<serde_json::Value>(&key).unwrap()["payload"]["user_id"], 1);
//! ```

use crate::cdc::{Decimal, Op};
use base64::Engine;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicI64, Ordering};

/// The Kafka Connect type of a column.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnType {
    Int32,
    Int64,
    Boolean,
    Float64,
    String,
    /// `org.apache.kafka.connect.data.Decimal`; the row holds it as decimal
    /// text (as [`Decimal`] serializes), the event as base64 bytes.
    Decimal {
        scale: u32,
    },
    /// `io.debezium.time.Date`
    Date,
    /// `io.debezium.time.MicroTimestamp`
    MicroTimestamp,
    /// `io.debezium.time.ZonedTimestamp`
    ZonedTimestamp,
    /// `io.debezium.data.Json`
    Json,
    /// `io.debezium.data.Enum` with its allowed labels.
    Enum(Vec<String>),
}

impl ColumnType {
    fn schema(&self) -> Value {
        let named = |kind: &str, name: &str| json!({"type": kind, "name": name, "version": 1});
        match self {
            ColumnType::Int32 => json!({"type": "int32"}),
            ColumnType::Int64 => json!({"type": "int64"}),
            ColumnType::Boolean => json!({"type": "boolean"}),
            ColumnType::Float64 => json!({"type": "double"}),
            ColumnType::String => json!({"type": "string"}),
            ColumnType::Decimal { scale } => json!({
                "type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
                "parameters": {"scale": scale.to_string()}
            }),
            ColumnType::Date => named("int32", "io.debezium.time.Date"),
            ColumnType::MicroTimestamp => named("int64", "io.debezium.time.MicroTimestamp"),
            ColumnType::ZonedTimestamp => named("string", "io.debezium.time.ZonedTimestamp"),
            ColumnType::Json => named("string", "io.debezium.data.Json"),
            ColumnType::Enum(labels) => json!({
                "type": "string", "name": "io.debezium.data.Enum", "version": 1,
                "parameters": {"allowed": labels.join(",")}
            }),
        }
    }
}

/// A column of the captured table.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub kind: ColumnType,
    pub optional: bool,
}

impl Column {
    /// A `NOT NULL` column.
    pub fn new(name: impl Into<String>, kind: ColumnType) -> Self {
        Column {
            name: name.into(),
            kind,
            optional: false,
        }
    }

    /// A nullable column.
    pub fn nullable(name: impl Into<String>, kind: ColumnType) -> Self {
        Column {
            optional: true,
            ..Column::new(name, kind)
        }
    }

    fn schema(&self, optional: bool) -> Value {
        let mut schema = self.kind.schema();
        schema["optional"] = Value::Bool(optional || self.optional);
        schema["field"] = Value::String(self.name.clone());
        schema
    }
}

/// How values are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventFormat {
    /// Debezium's envelope; `schemas` adds the `{"schema","payload"}` wrapper.
    Envelope { schemas: bool },
    /// `ExtractNewRecordState` rows; `schemas` adds the wrapper.
    Flattened { schemas: bool },
}

/// Writes one table's change events as Debezium's JSON; see the
/// [module documentation](self).
pub struct Debezium {
    connector: &'static str,
    server: String,
    db: String,
    schema: Option<String>,
    table: String,
    key_columns: Vec<Column>,
    columns: Vec<Column>,
    format: EventFormat,
    /// Source position: the binlog `pos` (MySQL) or `lsn` (PostgreSQL).
    position: AtomicI64,
}

impl Debezium {
    /// A MySQL table `db.table`, captured by a connector whose
    /// `topic.prefix` is `mysql` (see [`Debezium::server`]).
    pub fn mysql(db: &str, table: &str) -> Self {
        Self::new("mysql", "mysql", db, None, table)
    }

    /// A PostgreSQL table `schema.table` in the database `db`, captured by a
    /// connector whose `topic.prefix` is `pg`.
    pub fn postgres(db: &str, schema: &str, table: &str) -> Self {
        Self::new("postgresql", "pg", db, Some(schema.to_string()), table)
    }

    fn new(connector: &'static str, server: &str, db: &str, schema: Option<String>, table: &str) -> Self {
        Debezium {
            connector,
            server: server.to_string(),
            db: db.to_string(),
            schema,
            table: table.to_string(),
            key_columns: Vec::new(),
            columns: Vec::new(),
            format: EventFormat::Envelope { schemas: false },
            position: AtomicI64::new(1000),
        }
    }

    /// Sets the connector's logical name (`topic.prefix`), which names the schemas.
    pub fn server(mut self, name: impl Into<String>) -> Self {
        self.server = name.into();
        self
    }

    /// A primary-key column (also a row column).
    pub fn key_column(mut self, column: Column) -> Self {
        self.key_columns.push(column.clone());
        self.columns.push(column);
        self
    }

    /// A non-key column.
    pub fn column(mut self, column: Column) -> Self {
        self.columns.push(column);
        self
    }

    pub fn format(mut self, format: EventFormat) -> Self {
        self.format = format;
        self
    }

    /// The Kafka topic Debezium writes: `<prefix>.<db>.<table>` (MySQL) or
    /// `<prefix>.<schema>.<table>` (PostgreSQL).
    pub fn topic(&self) -> String {
        format!("{}.{}", self.schema_prefix(), self.table)
    }

    fn schema_prefix(&self) -> String {
        format!("{}.{}", self.server, self.schema.as_deref().unwrap_or(&self.db))
    }

    fn schemas(&self) -> bool {
        matches!(
            self.format,
            EventFormat::Envelope { schemas: true } | EventFormat::Flattened { schemas: true }
        )
    }

    /// The record key: `key` as JSON; a scalar becomes the one-column key
    /// struct of the first key column.
    pub fn key<K: Serialize>(&self, key: &K) -> Vec<u8> {
        let mut payload = serde_json::to_value(key).expect("keys serialize to JSON");
        if !payload.is_object() {
            let column = self.key_columns.first().map_or("id", |c| c.name.as_str());
            payload = json!({ column: payload });
        }
        let out = if self.schemas() {
            let fields: Vec<Value> = self.key_columns.iter().map(|c| c.schema(false)).collect();
            json!({
                "schema": {"type": "struct", "fields": fields, "optional": false,
                           "name": format!("{}.{}.Key", self.schema_prefix(), self.table)},
                "payload": payload
            })
        } else {
            payload
        };
        serde_json::to_vec(&out).expect("JSON values serialize")
    }

    /// The record value of a change event. Rows serialize with serde; the
    /// values of decimal columns must serialize as decimal text.
    pub fn event<Row: Serialize>(&self, op: Op, before: Option<&Row>, after: Option<&Row>) -> Vec<u8> {
        let ts_ms = 1_700_000_000_000 + self.position.load(Ordering::Relaxed);
        let (before, after) = (before.map(|r| self.row(r)), after.map(|r| self.row(r)));
        let payload = match self.format {
            EventFormat::Envelope { .. } => json!({
                "before": before,
                "after": after,
                "source": self.source(op, ts_ms),
                "op": op.code(),
                "ts_ms": ts_ms + 7,
                "transaction": null
            }),
            EventFormat::Flattened { .. } => {
                let deleted = op == Op::Delete;
                let mut row = match (after, before) {
                    (Some(Value::Object(row)), _) | (None, Some(Value::Object(row))) => row,
                    _ => Map::new(),
                };
                row.insert("__op".into(), json!(op.code()));
                row.insert("__table".into(), json!(self.table));
                row.insert("__source_ts_ms".into(), json!(ts_ms));
                row.insert("__deleted".into(), json!(deleted.to_string()));
                Value::Object(row)
            }
        };
        let out = if self.schemas() {
            json!({"schema": self.value_schema(), "payload": payload})
        } else {
            payload
        };
        serde_json::to_vec(&out).expect("JSON values serialize")
    }

    /// A truncate event (its record key is null).
    pub fn truncate(&self) -> Vec<u8> {
        self.event::<Value>(Op::Truncate, None, None)
    }

    fn row<Row: Serialize>(&self, row: &Row) -> Value {
        let mut value = serde_json::to_value(row).expect("rows serialize to JSON");
        for column in &self.columns {
            let ColumnType::Decimal { scale } = column.kind else {
                continue;
            };
            if let Some(cell) = value.get_mut(&column.name) {
                if let Some(text) = cell.as_str() {
                    let decimal: Decimal = text.parse().expect("decimal columns hold decimal text");
                    assert_eq!(decimal.scale(), scale, "column {} has scale {scale}", column.name);
                    *cell = json!(base64::engine::general_purpose::STANDARD.encode(decimal.to_be_bytes()));
                }
            }
        }
        value
    }

    fn source(&self, op: Op, ts_ms: i64) -> Value {
        let position = self.position.fetch_add(1, Ordering::Relaxed);
        let snapshot = if op == Op::Read { "true" } else { "false" };
        let mut source = json!({
            "version": "2.7.0.Final",
            "connector": self.connector,
            "name": self.server,
            "ts_ms": ts_ms,
            "snapshot": snapshot,
            "db": self.db,
            "sequence": null,
            "table": self.table,
        });
        let extra = if self.connector == "mysql" {
            json!({"server_id": 223344, "gtid": null, "file": "mysql-bin.000003", "pos": position,
                   "row": 0, "thread": 7, "query": null})
        } else {
            json!({"schema": self.schema, "txId": 700 + position, "lsn": 24_000_000 + position * 64, "xmin": null})
        };
        if let (Value::Object(source), Value::Object(extra)) = (&mut source, extra) {
            source.extend(extra);
        }
        source
    }

    fn value_schema(&self) -> Value {
        let name = format!("{}.{}", self.schema_prefix(), self.table);
        let row_fields: Vec<Value> = self.columns.iter().map(|c| c.schema(false)).collect();
        match self.format {
            EventFormat::Flattened { .. } => {
                let mut fields = row_fields;
                fields.push(json!({"type": "string", "optional": true, "field": "__op"}));
                fields.push(json!({"type": "string", "optional": true, "field": "__table"}));
                fields.push(json!({"type": "int64", "optional": true, "field": "__source_ts_ms"}));
                fields.push(json!({"type": "string", "optional": true, "field": "__deleted"}));
                json!({"type": "struct", "fields": fields, "optional": false, "name": format!("{name}.Value")})
            }
            EventFormat::Envelope { .. } => {
                let row = |side: &str| {
                    json!({"type": "struct", "fields": row_fields, "optional": true,
                           "name": format!("{name}.Value"), "field": side})
                };
                json!({
                    "type": "struct",
                    "fields": [
                        row("before"),
                        row("after"),
                        {"type": "struct", "optional": false, "name": format!("io.debezium.connector.{}.Source", self.connector),
                         "field": "source", "fields": [
                            {"type": "string", "optional": false, "field": "version"},
                            {"type": "string", "optional": false, "field": "connector"},
                            {"type": "string", "optional": false, "field": "name"},
                            {"type": "int64", "optional": false, "field": "ts_ms"},
                            {"type": "string", "optional": true, "name": "io.debezium.data.Enum", "version": 1,
                             "parameters": {"allowed": "true,last,false,incremental"}, "default": "false", "field": "snapshot"},
                            {"type": "string", "optional": false, "field": "db"},
                            {"type": "string", "optional": true, "field": "table"}
                        ]},
                        {"type": "string", "optional": false, "field": "op"},
                        {"type": "int64", "optional": true, "field": "ts_ms"},
                        {"type": "struct", "optional": true, "name": "event.block", "version": 1, "field": "transaction",
                         "fields": [
                            {"type": "string", "optional": false, "field": "id"},
                            {"type": "int64", "optional": false, "field": "total_order"},
                            {"type": "int64", "optional": false, "field": "data_collection_order"}
                        ]}
                    ],
                    "optional": false,
                    "name": format!("{name}.Envelope"),
                    "version": 1
                })
            }
        }
    }
}
