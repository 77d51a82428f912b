//! Debezium's output, written from Rust rows: to test CDC topologies and to
//! generate CDC traffic without a database and a Kafka Connect.
//!
//! [`Debezium`] writes keys and values as a MySQL or PostgreSQL
//! connector does through Kafka Connect's `JsonConverter`, with or without
//! the schema wrapper, or through Confluent's `AvroConverter`
//! ([`Debezium::avro`]); as the full envelope or flattened by
//! `ExtractNewRecordState` (`add.fields=op,table,source.ts_ms`,
//! `delete.handling.mode=rewrite`). Decimal columns are written in the
//! default `precise` mode (bytes, scale in the schema).
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

use crate::avro::SchemaRegistry;
use crate::cdc::{Decimal, Op};
use apache_avro::types::Value as Avro;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use base64::Engine;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;

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
            ColumnType::Float64 => json!({"type": "float64"}),
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

impl EventFormat {
    /// The layout without the wrapper question, which Avro does not ask.
    pub fn is_flattened(self) -> bool {
        matches!(self, EventFormat::Flattened { .. })
    }
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
    /// Set when records are written as Avro instead of JSON.
    avro: Option<AvroEncoding>,
    /// Source position: the binlog `pos` (MySQL) or `lsn` (PostgreSQL).
    position: AtomicI64,
}

/// The registry and the key and value schemas, registered on first use.
struct AvroEncoding {
    registry: SchemaRegistry,
    key: OnceLock<AvroSchema>,
    value: OnceLock<AvroSchema>,
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
            avro: None,
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

    /// Writes keys and values as Confluent's `AvroConverter` does: in the
    /// Confluent wire format, with the Avro form of the Connect schemas
    /// registered under `<topic>-key` and `<topic>-value` (the format's
    /// `schemas` flag does not apply).
    pub fn avro(mut self, registry: &SchemaRegistry) -> Self {
        self.avro = Some(AvroEncoding {
            registry: registry.clone(),
            key: OnceLock::new(),
            value: OnceLock::new(),
        });
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
        if let Some(avro) = &self.avro {
            let schema = avro.key.get_or_init(|| self.register(avro, "key", &self.key_schema()));
            return schema.encode(&payload);
        }
        let out = if self.schemas() {
            json!({"schema": self.key_schema(), "payload": payload})
        } else {
            payload
        };
        serde_json::to_vec(&out).expect("JSON values serialize")
    }

    fn key_schema(&self) -> Value {
        let fields: Vec<Value> = self.key_columns.iter().map(|c| c.schema(false)).collect();
        json!({"type": "struct", "fields": fields, "optional": false,
               "name": format!("{}.{}.Key", self.schema_prefix(), self.table)})
    }

    /// Registers the Avro form of a Connect schema under the topic's
    /// `key` or `value` subject.
    fn register(&self, avro: &AvroEncoding, part: &str, connect: &Value) -> AvroSchema {
        let subject = format!("{}-{part}", self.topic());
        AvroSchema::register(&avro.registry, &subject, avro_schema(connect, &mut Vec::new()))
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
        if let Some(avro) = &self.avro {
            let schema = avro
                .value
                .get_or_init(|| self.register(avro, "value", &self.value_schema()));
            return schema.encode(&payload);
        }
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

/// An Avro schema registered for a Debezium topic, with what it takes to
/// encode Connect's JSON payloads in it.
struct AvroSchema {
    id: u32,
    schema: Schema,
    json: Value,
    /// Record definitions by full name, for the types referred to by name.
    records: HashMap<String, Value>,
}

/// `payload`, a record's JSON as Kafka Connect's `JsonConverter` writes it
/// (without the schema wrapper), as Confluent's `AvroConverter` would have
/// written it with `schema` (an Avro schema as JSON), which is registered
/// under `subject`. For fixtures captured from a real connector.
///
/// # Panics
/// When the registry refuses the schema or the payload does not fit it.
///
/// ```
/// use serde_json::json;
/// use weir::avro::SchemaRegistry;
/// use weir::testing::debezium::connect_json_as_avro;
/// use weir::testing::schema_registry::TestSchemaRegistry;
///
/// let server = TestSchemaRegistry::start().unwrap();
/// let registry = SchemaRegistry::new(server.url()).unwrap();
/// let schema = json!({"type": "record", "name": "Key", "fields": [{"name": "id", "type": "int"}]});
/// let bytes = connect_json_as_avro(&registry, "accounts-key", &schema, &json!({"id": 7}));
/// assert_eq!(bytes, [0, 0, 0, 0, 1, 14]);
/// ```
pub fn connect_json_as_avro(registry: &SchemaRegistry, subject: &str, schema: &Value, payload: &Value) -> Vec<u8> {
    AvroSchema::register(registry, subject, schema.clone()).encode(payload)
}

impl AvroSchema {
    fn register(registry: &SchemaRegistry, subject: &str, json: Value) -> Self {
        let id = registry
            .register(subject, &json.to_string())
            .unwrap_or_else(|e| panic!("cannot register {subject}: {}", e.message));
        let schema = Schema::parse(&json).unwrap_or_else(|e| panic!("not a valid Avro schema: {e}"));
        let mut records = HashMap::new();
        collect_records(&json, &mut records);
        AvroSchema {
            id,
            schema,
            json,
            records,
        }
    }

    /// `payload` (Connect JSON) in the Confluent wire format.
    fn encode(&self, payload: &Value) -> Vec<u8> {
        let value = self.to_avro(&self.json, payload);
        let mut out = vec![0];
        out.extend_from_slice(&self.id.to_be_bytes());
        GenericDatumWriter::builder(&self.schema)
            .build()
            .and_then(|writer| writer.write_value(&mut out, value))
            .unwrap_or_else(|e| panic!("the payload {payload} does not fit its Avro schema: {e}"));
        out
    }

    fn to_avro(&self, schema: &Value, value: &Value) -> Avro {
        let bytes = |value: &Value| {
            base64::engine::general_purpose::STANDARD
                .decode(value.as_str().expect("bytes are base64 text"))
                .expect("bytes are base64 text")
        };
        match schema {
            Value::Array(branches) => {
                let index = branches
                    .iter()
                    .position(|b| (b == "null") == value.is_null())
                    .expect("an optional type is a union with null");
                Avro::Union(index as u32, Box::new(self.to_avro(&branches[index], value)))
            }
            Value::Object(object) if object["type"] == "record" => Avro::Record(
                object["fields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|field| {
                        let name = field["name"].as_str().expect("fields are named");
                        (name.to_string(), self.to_avro(&field["type"], &value[name]))
                    })
                    .collect(),
            ),
            Value::Object(object) if object.get("logicalType").is_some_and(|t| t == "decimal") => {
                Avro::Decimal(apache_avro::Decimal::from(bytes(value)))
            }
            Value::Object(object) => self.to_avro(&object["type"], value),
            Value::String(kind) => match kind.as_str() {
                "null" => Avro::Null,
                "boolean" => Avro::Boolean(value.as_bool().expect("a boolean")),
                "int" => Avro::Int(value.as_i64().expect("an int") as i32),
                "long" => Avro::Long(value.as_i64().expect("a long")),
                "double" => Avro::Double(value.as_f64().expect("a double")),
                "string" => Avro::String(value.as_str().expect("a string").to_string()),
                "bytes" => Avro::Bytes(bytes(value)),
                name => self.to_avro(&self.records[name], value),
            },
            other => panic!("not an Avro schema: {other}"),
        }
    }
}

fn collect_records(schema: &Value, records: &mut HashMap<String, Value>) {
    match schema {
        Value::Array(branches) => branches.iter().for_each(|b| collect_records(b, records)),
        Value::Object(object) if object["type"] == "record" => {
            // Referred to by its short name inside its namespace, else by its full name.
            if let Some(name) = object["name"].as_str() {
                records.insert(name.to_string(), schema.clone());
                if let Some(namespace) = object.get("namespace").and_then(Value::as_str) {
                    records.insert(format!("{namespace}.{name}"), schema.clone());
                }
            }
            for field in object["fields"].as_array().into_iter().flatten() {
                collect_records(&field["type"], records);
            }
        }
        _ => {}
    }
}

/// The Avro schema Confluent's `AvroConverter` makes of a Connect schema:
/// structs become records (a name seen before is referred to by name),
/// optional types unions with null (null first, unless the default is
/// not null), Connect's `Decimal` the `decimal` logical type, and semantic
/// types keep their name in `connect.name`.
fn avro_schema(connect: &Value, defined: &mut Vec<String>) -> Value {
    let name = connect["name"].as_str();
    let mut base = match connect["type"].as_str().unwrap_or_default() {
        "struct" => {
            let name = name.unwrap_or("ConnectDefault").to_string();
            if defined.contains(&name) {
                Value::String(name)
            } else {
                defined.push(name.clone());
                let fields: Vec<Value> = connect["fields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|field| {
                        let mut avro = json!({"name": field["field"], "type": avro_schema(field, defined)});
                        if field["optional"] == true {
                            avro["default"] = field.get("default").cloned().unwrap_or(Value::Null);
                        }
                        avro
                    })
                    .collect();
                json!({"type": "record", "name": name, "fields": fields, "connect.name": name})
            }
        }
        "int32" => json!("int"),
        "int64" => json!("long"),
        "float64" => json!("double"),
        other => json!(other),
    };
    if let (Some(name), Value::String(_)) = (name, &base) {
        if connect["type"] != "struct" {
            let mut semantic = json!({"type": base, "connect.version": 1, "connect.name": name});
            if let Some(parameters) = connect.get("parameters") {
                semantic["connect.parameters"] = parameters.clone();
            }
            if name == "org.apache.kafka.connect.data.Decimal" {
                let scale: u32 = connect["parameters"]["scale"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .expect("a decimal has a scale");
                semantic["logicalType"] = json!("decimal");
                semantic["precision"] = json!(64);
                semantic["scale"] = json!(scale);
            }
            base = semantic;
        }
    }
    if connect["optional"] != true {
        return base;
    }
    match connect.get("default") {
        Some(default) if !default.is_null() => json!([base, "null"]),
        _ => json!(["null", base]),
    }
}
