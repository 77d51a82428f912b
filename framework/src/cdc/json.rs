//! Debezium events in JSON, as Kafka Connect's `JsonConverter` writes them:
//! with the `{"schema": …, "payload": …}` wrapper (`schemas.enable=true`) or
//! without it, as the full envelope or flattened by `ExtractNewRecordState`.

use super::event::{ChangeEvent, Op, Snapshot, Source, TableEnvelope};
use super::types::Decimal;
use super::{EventDecoder, KeyDecoder, RowChange};
use crate::error::SerdeError;
use serde::de::{DeserializeOwned, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

/// Decodes JSON record keys: the struct of primary-key columns, with or
/// without the schema wrapper. A key type that is not a struct reads the
/// single column of a one-column key, so `i64` reads `{"user_id": 7}`.
///
/// ```
/// use weir::cdc::{JsonKey, KeyDecoder};
/// let keys = JsonKey::<i64>::new();
/// let wrapped = br#"{"schema":{"type":"struct","name":"app.users.Key","fields":[{"type":"int64","field":"user_id"}]},"payload":{"user_id":7}}"#;
/// assert_eq!(keys.decode_key("t", wrapped).unwrap(), Some(7));
/// assert_eq!(keys.decode_key("t", br#"{"user_id":8}"#).unwrap(), Some(8));
/// assert_eq!(keys.decode_key("t", b"null").unwrap(), None);
/// ```
pub struct JsonKey<K> {
    shape: KeyShape,
    _key: PhantomData<fn() -> K>,
}

impl<K> JsonKey<K> {
    pub fn new() -> Self {
        JsonKey {
            shape: KeyShape::default(),
            _key: PhantomData,
        }
    }
}

impl<K> Default for JsonKey<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: DeserializeOwned + 'static> KeyDecoder<K> for JsonKey<K> {
    fn decode_key(&self, topic: &str, bytes: &[u8]) -> Result<Option<K>, SerdeError> {
        let Some(body) = unwrap_schema(topic, bytes)?.map(|unwrapped| unwrapped.payload) else {
            return Ok(None);
        };
        self.shape
            .read(
                || serde_json::from_str::<K>(body),
                || serde_json::from_str::<SingleColumn<K>>(body).map(|c| c.0),
            )
            .map(Some)
            .map_err(|e| SerdeError::deserialize(topic, format!("key {body}: {e}")))
    }
}

/// Whether a topic's keys read as the key type itself or as the single
/// column of a key struct; the first key that reads decides, so that the
/// other reading is not tried on every record.
#[derive(Default)]
pub(super) struct KeyShape(AtomicU8);

// 0: no key has been read yet.
const SHAPE_WHOLE: u8 = 1;
const SHAPE_SINGLE_COLUMN: u8 = 2;

impl KeyShape {
    /// Reads a key by `whole` or `single`; when neither reads, the error is
    /// `whole`'s.
    pub(super) fn read<K, E>(
        &self,
        whole: impl FnOnce() -> Result<K, E>,
        single: impl FnOnce() -> Result<K, E>,
    ) -> Result<K, E> {
        match self.0.load(Ordering::Relaxed) {
            SHAPE_WHOLE => whole(),
            SHAPE_SINGLE_COLUMN => single(),
            _ => match whole() {
                Ok(key) => {
                    self.0.store(SHAPE_WHOLE, Ordering::Relaxed);
                    Ok(key)
                }
                Err(whole_error) => single()
                    .inspect(|_| self.0.store(SHAPE_SINGLE_COLUMN, Ordering::Relaxed))
                    .map_err(|_| whole_error),
            },
        }
    }
}

/// The only column of a one-column key struct.
pub(super) struct SingleColumn<K>(pub K);

impl<'de, K: Deserialize<'de>> Deserialize<'de> for SingleColumn<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ColumnVisitor<K>(PhantomData<K>);
        impl<'de, K: Deserialize<'de>> Visitor<'de> for ColumnVisitor<K> {
            type Value = SingleColumn<K>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key struct with one column")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let Some((_, value)) = map.next_entry::<IgnoredAny, K>()? else {
                    return Err(serde::de::Error::custom("the key struct has no column"));
                };
                if map.next_key::<IgnoredAny>()?.is_some() {
                    return Err(serde::de::Error::custom(
                        "the key has several columns; read it into a struct",
                    ));
                }
                Ok(SingleColumn(value))
            }
        }
        deserializer.deserialize_map(ColumnVisitor(PhantomData))
    }
}

/// Decodes JSON change events: the Debezium envelope (the default) or the
/// flattened rows of `ExtractNewRecordState`. The schema wrapper is
/// recognised either way; its schema supplies the scales of `Decimal`
/// columns.
///
/// ```
/// use weir::cdc::{EventDecoder, JsonEvents, Op, Decimal};
/// #[derive(serde::Deserialize, Clone, Debug)]
/// struct Item { id: i32, price: Decimal }
///
/// // Without the schema, precise decimals need their scale.
/// let events = JsonEvents::new().decimal_scale("price", 2);
/// let event = events
///     .decode_event::<Item>("inventory.items", br#"{"op":"c","after":{"id":1,"price":"MDk="},"source":{}}"#)
///     .unwrap()
///     .unwrap();
/// assert_eq!(event.after.unwrap().price.to_string(), "123.45");
/// ```
pub struct JsonEvents {
    flattened: bool,
    /// Scales of decimal columns whose schema the records do not carry.
    decimal_scales: BTreeMap<String, u32>,
    /// Decimal columns per schema text seen, so a schema is parsed once.
    /// Looked up for every record by the whole schema text: a fast hash.
    schemas: RwLock<HashMap<String, DecimalColumns, foldhash::fast::RandomState>>,
}

/// `(column, scale)` of the decimal columns a record's rows carry as base64.
pub(super) type DecimalColumns = Arc<[(String, u32)]>;

/// Schemas remembered per decoder; a topic's schema changes rarely, so
/// hitting the bound means something is off, and forgetting is safe.
const SCHEMA_CACHE_LIMIT: usize = 256;

impl Default for JsonEvents {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonEvents {
    /// The Debezium envelope: `op`, `before`, `after`, `source`, `ts_ms`, ….
    pub fn new() -> Self {
        JsonEvents {
            flattened: false,
            decimal_scales: BTreeMap::new(),
            schemas: RwLock::default(),
        }
    }

    /// Rows flattened by `ExtractNewRecordState`: the row's columns plus the
    /// metadata fields it adds (`__op`, `__deleted`, `__table`,
    /// `__source_ts_ms`, …). A row with `__deleted` = `"true"` (or `__op` =
    /// `d`) is a deletion; without `__op` an upsert reads as `u`.
    pub fn flattened() -> Self {
        JsonEvents {
            flattened: true,
            ..Self::new()
        }
    }

    pub(super) fn is_flattened(&self) -> bool {
        self.flattened
    }

    /// The scale of a `Decimal` column sent as base64 bytes without the
    /// schema wrapper (Debezium's `decimal.handling.mode=precise`).
    pub fn decimal_scale(mut self, column: impl Into<String>, scale: u32) -> Self {
        self.decimal_scales.insert(column.into(), scale);
        self
    }

    /// The event's JSON with the schema wrapper off and base64 decimals
    /// converted; `None` for a tombstone.
    fn parse<'a>(&self, topic: &str, bytes: &'a [u8]) -> Result<Option<Parsed<'a>>, SerdeError> {
        let Some(unwrapped) = unwrap_schema(topic, bytes)? else {
            return Ok(None);
        };
        let decimals = match unwrapped.schema {
            Some(schema) => self.decimal_columns(topic, schema)?,
            None => self.configured_decimals(),
        };
        let Some(columns) = decimals else {
            return Ok(Some(Parsed::Text(unwrapped.payload)));
        };
        let json: Value = serde_json::from_str(unwrapped.payload).map_err(|e| not_an_event(topic, e))?;
        self.with_decimals(topic, json, &columns).map(Some)
    }

    /// The decimal columns set with [`JsonEvents::decimal_scale`], if any.
    pub(super) fn configured_decimals(&self) -> Option<DecimalColumns> {
        (!self.decimal_scales.is_empty()).then(|| self.with_configured(Vec::new()))
    }

    /// `columns` found in a schema, plus the configured ones it lacks.
    pub(super) fn with_configured(&self, mut columns: Vec<(String, u32)>) -> DecimalColumns {
        for (column, scale) in &self.decimal_scales {
            if !columns.iter().any(|(c, _)| c == column) {
                columns.push((column.clone(), *scale));
            }
        }
        columns.into()
    }

    /// An event's JSON with the base64 decimals of its rows as decimal text.
    pub(super) fn with_decimals(
        &self,
        topic: &str,
        mut json: Value,
        columns: &[(String, u32)],
    ) -> Result<Parsed<'static>, SerdeError> {
        if self.flattened {
            convert_decimals(topic, &mut json, columns)?;
        } else {
            for side in ["before", "after"] {
                if let Some(row) = json.get_mut(side) {
                    convert_decimals(topic, row, columns)?;
                }
            }
        }
        Ok(Parsed::Json(json))
    }

    fn decimal_columns(&self, topic: &str, schema: &str) -> Result<Option<DecimalColumns>, SerdeError> {
        if let Some(columns) = self.schemas.read().unwrap_or_else(|e| e.into_inner()).get(schema) {
            return Ok((!columns.is_empty()).then(|| columns.clone()));
        }
        let parsed: ConnectSchema = serde_json::from_str(schema)
            .map_err(|e| SerdeError::deserialize(topic, format!("invalid Kafka Connect schema: {e}")))?;
        let row = if self.flattened {
            Some(&parsed)
        } else {
            parsed
                .fields
                .iter()
                .find(|f| matches!(f.field.as_deref(), Some("after" | "before")))
        };
        let mut columns: Vec<(String, u32)> = Vec::new();
        for column in row.map(|r| r.fields.as_slice()).unwrap_or_default() {
            if column.name.as_deref() == Some("org.apache.kafka.connect.data.Decimal") {
                let name = column.field.clone().unwrap_or_default();
                let scale = column
                    .parameters
                    .get("scale")
                    .and_then(|s| s.as_str().map(str::to_string).or_else(|| Some(s.to_string())))
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| SerdeError::deserialize(topic, format!("decimal column '{name}' has no scale")))?;
                columns.push((name, scale));
            }
        }
        let columns = self.with_configured(columns);
        let mut cache = self.schemas.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= SCHEMA_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(schema.to_string(), columns.clone());
        Ok((!columns.is_empty()).then_some(columns))
    }

    /// Decodes a record value into a change event; `None` for a tombstone.
    pub fn decode_event<Row: DeserializeOwned>(
        &self,
        topic: &str,
        bytes: &[u8],
    ) -> Result<Option<ChangeEvent<Row>>, SerdeError> {
        self.parse(topic, bytes)?
            .map(|parsed| self.read_event(topic, &parsed))
            .transpose()
    }

    /// Decodes only what a table needs: the operation and the new row.
    pub fn decode_row_change<Row: DeserializeOwned>(
        &self,
        topic: &str,
        bytes: &[u8],
    ) -> Result<Option<RowChange<Row>>, SerdeError> {
        self.parse(topic, bytes)?
            .map(|parsed| self.read_row_change(topic, &parsed))
            .transpose()
    }

    /// The change event in an event's JSON, read as this decoder's layout.
    pub(super) fn read_event<Row: DeserializeOwned>(
        &self,
        topic: &str,
        parsed: &Parsed<'_>,
    ) -> Result<ChangeEvent<Row>, SerdeError> {
        let event = if self.flattened {
            flat_event(topic, parsed)?
        } else {
            parsed.read::<ChangeEvent<Row>>(topic)?
        };
        check_rows(topic, &event.op, event.after.is_some())?;
        Ok(event)
    }

    /// The operation and new row in an event's JSON.
    pub(super) fn read_row_change<Row: DeserializeOwned>(
        &self,
        topic: &str,
        parsed: &Parsed<'_>,
    ) -> Result<RowChange<Row>, SerdeError> {
        let change = if self.flattened {
            match parsed.read::<FlatMeta>(topic)?.op() {
                op if op.is_upsert() => RowChange {
                    op,
                    after: Some(parsed.read(topic)?),
                },
                op => RowChange { op, after: None },
            }
        } else {
            let envelope = parsed.read::<TableEnvelope<Row>>(topic)?;
            RowChange {
                op: envelope.op,
                after: envelope.after,
            }
        };
        check_rows(topic, &change.op, change.after.is_some())?;
        Ok(change)
    }
}

/// An event's JSON: the text as received when nothing needs converting
/// (read in one pass), or parsed and converted.
pub(super) enum Parsed<'a> {
    Text(&'a str),
    Json(Value),
}

impl Parsed<'_> {
    fn read<T: DeserializeOwned>(&self, topic: &str) -> Result<T, SerdeError> {
        match self {
            Parsed::Text(text) => serde_json::from_str(text).map_err(|e| not_an_event(topic, e)),
            Parsed::Json(json) => T::deserialize(json).map_err(|e| not_an_event(topic, e)),
        }
    }
}

impl<Row: DeserializeOwned + 'static> EventDecoder<Row> for JsonEvents {
    fn decode_event(&self, topic: &str, bytes: &[u8]) -> Result<Option<ChangeEvent<Row>>, SerdeError> {
        JsonEvents::decode_event(self, topic, bytes)
    }

    fn decode_row_change(&self, topic: &str, bytes: &[u8]) -> Result<Option<RowChange<Row>>, SerdeError> {
        JsonEvents::decode_row_change(self, topic, bytes)
    }
}

fn not_an_event(topic: &str, error: impl fmt::Display) -> SerdeError {
    SerdeError::deserialize(topic, format!("not a Debezium change event: {error}"))
}

/// An upsert without its new row would silently become a deletion downstream.
fn check_rows(topic: &str, op: &Op, has_after: bool) -> Result<(), SerdeError> {
    if op.is_upsert() && !has_after {
        return Err(SerdeError::deserialize(
            topic,
            format!("a '{}' change event without an 'after' row", op.code()),
        ));
    }
    Ok(())
}

/// Rewrites base64 decimal columns of a row as decimal text, which
/// [`Decimal`] and plain numeric types read.
fn convert_decimals(topic: &str, row: &mut Value, columns: &[(String, u32)]) -> Result<(), SerdeError> {
    let Some(row) = row.as_object_mut() else {
        return Ok(());
    };
    for (column, scale) in columns {
        if let Some(Value::String(text)) = row.get_mut(column) {
            let decimal = Decimal::from_base64(text, *scale)
                .map_err(|e| SerdeError::deserialize(topic, format!("column '{column}': {e}")))?;
            *text = decimal.to_string();
        }
    }
    Ok(())
}

/// The metadata `ExtractNewRecordState` adds to a flattened row.
#[derive(Deserialize)]
struct FlatMeta {
    #[serde(rename = "__op", default)]
    op: Option<Op>,
    #[serde(rename = "__deleted", default, deserialize_with = "flag")]
    deleted: bool,
    #[serde(rename = "__ts_ms", default)]
    ts_ms: Option<i64>,
    #[serde(rename = "__source_ts_ms", default)]
    source_ts_ms: Option<i64>,
    #[serde(rename = "__db", default)]
    db: Option<String>,
    #[serde(rename = "__schema", default)]
    schema: Option<String>,
    #[serde(rename = "__table", default)]
    table: Option<String>,
    #[serde(rename = "__lsn", default)]
    lsn: Option<i64>,
    #[serde(rename = "__source_snapshot", alias = "__snapshot", default)]
    snapshot: Snapshot,
}

impl FlatMeta {
    fn op(&self) -> Op {
        match self.op {
            _ if self.deleted => Op::Delete,
            Some(op) => op,
            None => Op::Update,
        }
    }
}

/// `__deleted` is the text `"true"`/`"false"`; accept a bool too.
fn flag<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Bool(b) => Ok(b),
        Value::String(s) if s == "true" => Ok(true),
        Value::String(s) if s == "false" => Ok(false),
        Value::Null => Ok(false),
        other => Err(serde::de::Error::custom(format!(
            "__deleted must be \"true\" or \"false\", not {other}"
        ))),
    }
}

fn flat_event<Row: DeserializeOwned>(topic: &str, row: &Parsed<'_>) -> Result<ChangeEvent<Row>, SerdeError> {
    let meta: FlatMeta = row.read(topic)?;
    let op = meta.op();
    let (before, after) = match op {
        Op::Delete => (Some(row.read(topic)?), None),
        Op::Truncate | Op::Message => (None, None),
        _ => (None, Some(row.read(topic)?)),
    };
    let mut event = ChangeEvent::new(op, before, after);
    event.ts_ms = meta.ts_ms;
    event.source = Source {
        ts_ms: meta.source_ts_ms,
        db: meta.db,
        schema: meta.schema,
        table: meta.table,
        lsn: meta.lsn,
        snapshot: meta.snapshot,
        ..Source::default()
    };
    Ok(event)
}

/// A record's JSON with the schema wrapper taken off.
struct Unwrapped<'a> {
    payload: &'a str,
    schema: Option<&'a str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wrapper<'a> {
    #[serde(borrow, default)]
    schema: Option<&'a RawValue>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
}

/// Takes off the `{"schema", "payload"}` wrapper when there is one; `None`
/// when the record is null (`null`, or a wrapper with a null payload).
fn unwrap_schema<'a>(topic: &str, bytes: &'a [u8]) -> Result<Option<Unwrapped<'a>>, SerdeError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| SerdeError::deserialize(topic, format!("invalid UTF-8: {e}")))?
        .trim();
    if text == "null" {
        return Ok(None);
    }
    if starts_with_wrapper_key(text) {
        // A row or key may itself have a column named "schema" or
        // "payload"; only an object of exactly these two is a wrapper.
        if let Ok(wrapper) = serde_json::from_str::<Wrapper<'a>>(text) {
            let payload = wrapper.payload.map(RawValue::get).filter(|p| *p != "null");
            let schema = wrapper.schema.map(RawValue::get).filter(|s| *s != "null");
            return Ok(payload.map(|payload| Unwrapped { payload, schema }));
        }
    }
    Ok(Some(Unwrapped {
        payload: text,
        schema: None,
    }))
}

fn starts_with_wrapper_key(text: &str) -> bool {
    let Some(inner) = text.strip_prefix('{') else {
        return false;
    };
    let inner = inner.trim_start();
    inner.starts_with("\"schema\"") || inner.starts_with("\"payload\"")
}

/// The parts of a Kafka Connect JSON schema the decoder reads.
#[derive(Deserialize)]
struct ConnectSchema {
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    parameters: BTreeMap<String, Value>,
    #[serde(default)]
    fields: Vec<ConnectSchema>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapper_detection_leaves_rows_with_a_schema_column_alone() {
        let unwrapped = unwrap_schema("t", br#"{"schema":"public","id":1}"#).unwrap().unwrap();
        assert_eq!(unwrapped.payload, r#"{"schema":"public","id":1}"#);
        let unwrapped = unwrap_schema("t", br#" { "payload" : {"id":1}, "schema" : null } "#)
            .unwrap()
            .unwrap();
        assert_eq!(unwrapped.payload, r#"{"id":1}"#);
        assert!(unwrap_schema("t", br#"{"schema":null,"payload":null}"#)
            .unwrap()
            .is_none());
        assert!(unwrap_schema("t", b" null ").unwrap().is_none());
        assert!(unwrap_schema("t", &[0xff]).is_err());
    }

    #[test]
    fn single_column_keys_and_struct_keys() {
        #[derive(Deserialize, Debug, PartialEq)]
        struct OrderLine {
            order_id: i64,
            line: i32,
        }
        let lines = JsonKey::<OrderLine>::new();
        assert_eq!(
            lines.decode_key("t", br#"{"order_id":1,"line":2}"#).unwrap(),
            Some(OrderLine { order_id: 1, line: 2 })
        );
        let scalar = JsonKey::<i64>::new();
        let err = scalar.decode_key("t", br#"{"order_id":1,"line":2}"#).unwrap_err();
        assert!(err.message.contains("key"), "{err}");
        assert_eq!(scalar.decode_key("t", br#"{"id":5}"#).unwrap(), Some(5));
        assert!(scalar.decode_key("t", br#"{"id":"five"}"#).is_err());
        assert_eq!(
            JsonKey::<String>::new().decode_key("t", br#"{"email":"a@b"}"#).unwrap(),
            Some("a@b".into())
        );
    }
}
