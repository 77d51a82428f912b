//! Debezium events in Avro, as Confluent's `AvroConverter` writes them
//! through a Schema Registry: the full envelope or flattened by
//! `ExtractNewRecordState`.
//!
//! A record is decoded with its writer schema and turned into the JSON
//! Kafka Connect's `JsonConverter` would have written for it (unions
//! unwrapped, bytes as base64), which the JSON decoders then read. So Avro
//! and JSON events mean the same thing by construction: `op`, tombstones,
//! single-column keys, flattened rows and semantic types alike.

use super::json::{DecimalColumns, JsonEvents, KeyShape, Parsed, SingleColumn};
use super::{ChangeEvent, EventDecoder, KeyDecoder, RowChange};
use crate::avro::{writer_schema, SchemaRegistry, WriterSchema};
use crate::error::SerdeError;
use apache_avro::types::Value as Avro;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Number, Value as Json};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, RwLock};

/// Decodes Avro record keys (the struct of primary-key columns) in the
/// Confluent wire format. As with [`JsonKey`](super::JsonKey), a key type
/// that is not a struct reads the single column of a one-column key.
///
/// ```no_run
/// use weir::avro::SchemaRegistry;
/// use weir::cdc::AvroKey;
/// let registry = SchemaRegistry::new("http://schema-registry:8081")?;
/// let keys = AvroKey::<i64>::new(&registry);
/// # Ok::<(), weir::WeirError>(())
/// ```
pub struct AvroKey<K> {
    registry: SchemaRegistry,
    shape: KeyShape,
    _key: PhantomData<fn() -> K>,
}

impl<K> AvroKey<K> {
    pub fn new(registry: &SchemaRegistry) -> Self {
        AvroKey {
            registry: registry.clone(),
            shape: KeyShape::default(),
            _key: PhantomData,
        }
    }
}

impl<K: DeserializeOwned + 'static> KeyDecoder<K> for AvroKey<K> {
    fn decode_key(&self, topic: &str, bytes: &[u8]) -> Result<Option<K>, SerdeError> {
        let (_, json) = decode(&self.registry, topic, bytes)?;
        if json.is_null() {
            return Ok(None);
        }
        self.shape
            .read(
                || K::deserialize(&json),
                || SingleColumn::<K>::deserialize(&json).map(|c| c.0),
            )
            .map(Some)
            .map_err(|e| SerdeError::deserialize(topic, format!("key {json}: {e}")))
    }
}

/// Decodes Avro change events in the Confluent wire format: the Debezium
/// envelope (the default) or the flattened rows of `ExtractNewRecordState`.
///
/// Optional columns are unions with null (`["null", T]` or `[T, "null"]`);
/// `Decimal` columns are bytes whose scale the writer schema gives, either
/// as the `decimal` logical type or as Kafka Connect's `scale` parameter.
///
/// ```no_run
/// use weir::avro::SchemaRegistry;
/// use weir::cdc::{AvroEvents, AvroKey, Cdc};
/// # #[derive(serde::Deserialize)] struct Item;
/// let registry = SchemaRegistry::new("http://schema-registry:8081")?;
/// let items: Cdc<i64, Item> = Cdc::with_decoders(AvroKey::new(&registry), AvroEvents::flattened(&registry));
/// # Ok::<(), weir::WeirError>(())
/// ```
pub struct AvroEvents {
    registry: SchemaRegistry,
    /// Reads the decoded JSON: the layout and the configured decimal scales.
    json: JsonEvents,
    /// The decimal columns of each writer schema, by schema id.
    decimals: RwLock<HashMap<u32, Option<DecimalColumns>>>,
}

impl AvroEvents {
    /// The Debezium envelope: `op`, `before`, `after`, `source`, `ts_ms`, ….
    pub fn new(registry: &SchemaRegistry) -> Self {
        AvroEvents {
            registry: registry.clone(),
            json: JsonEvents::new(),
            decimals: RwLock::default(),
        }
    }

    /// Rows flattened by `ExtractNewRecordState`; see [`JsonEvents::flattened`].
    pub fn flattened(registry: &SchemaRegistry) -> Self {
        AvroEvents {
            json: JsonEvents::flattened(),
            ..Self::new(registry)
        }
    }

    /// The scale of a `Decimal` column whose writer schema says only
    /// `bytes` (a converter that drops Connect's parameters).
    pub fn decimal_scale(mut self, column: impl Into<String>, scale: u32) -> Self {
        self.json = self.json.decimal_scale(column, scale);
        self
    }

    /// The event as JSON with its decimals as text; `None` for a null record.
    fn parse(&self, topic: &str, bytes: &[u8]) -> Result<Option<Parsed<'static>>, SerdeError> {
        let (writer, json) = decode(&self.registry, topic, bytes)?;
        if json.is_null() {
            return Ok(None);
        }
        match self.decimal_columns(topic, writer.id, &writer.json)? {
            Some(columns) => self.json.with_decimals(topic, json, &columns).map(Some),
            None => Ok(Some(Parsed::Json(json))),
        }
    }

    fn decimal_columns(&self, topic: &str, id: u32, schema: &str) -> Result<Option<DecimalColumns>, SerdeError> {
        if let Some(columns) = self.decimals.read().unwrap_or_else(|p| p.into_inner()).get(&id) {
            return Ok(columns.clone());
        }
        let schema: Json = serde_json::from_str(schema)
            .map_err(|e| SerdeError::deserialize(topic, format!("schema {id} is not JSON: {e}")))?;
        let row = if self.json.is_flattened() {
            Some(&schema)
        } else {
            envelope_row(&schema)
        };
        let mut columns = Vec::new();
        for field in row.and_then(|r| r["fields"].as_array()).into_iter().flatten() {
            let name = field["name"].as_str().unwrap_or_default();
            if let Some(scale) = decimal_scale(topic, name, &field["type"])? {
                columns.push((name.to_string(), scale));
            }
        }
        let columns = self.json.with_configured(columns);
        let columns = (!columns.is_empty()).then_some(columns);
        self.decimals
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, columns.clone());
        Ok(columns)
    }
}

impl<Row: DeserializeOwned + 'static> EventDecoder<Row> for AvroEvents {
    fn decode_event(&self, topic: &str, bytes: &[u8]) -> Result<Option<ChangeEvent<Row>>, SerdeError> {
        self.parse(topic, bytes)?
            .map(|parsed| self.json.read_event(topic, &parsed))
            .transpose()
    }

    fn decode_row_change(&self, topic: &str, bytes: &[u8]) -> Result<Option<RowChange<Row>>, SerdeError> {
        self.parse(topic, bytes)?
            .map(|parsed| self.json.read_row_change(topic, &parsed))
            .transpose()
    }
}

/// A record in the Confluent wire format, as JSON, with its writer schema.
fn decode(registry: &SchemaRegistry, topic: &str, bytes: &[u8]) -> Result<(Arc<WriterSchema>, Json), SerdeError> {
    let (writer, mut body) = writer_schema(registry, topic, bytes)?;
    let value = writer
        .read_value(&mut body)
        .map_err(|e| SerdeError::deserialize(topic, format!("not a valid record of schema {}: {e}", writer.id)))?;
    Ok((writer, to_json(value)))
}

/// The row record of an envelope schema: the type of `before` or `after`
/// where it is defined (the other side refers to it by name).
fn envelope_row(envelope: &Json) -> Option<&Json> {
    envelope["fields"]
        .as_array()?
        .iter()
        .filter(|f| matches!(f["name"].as_str(), Some("before" | "after")))
        .flat_map(|f| branches(&f["type"]))
        .find(|t| t["type"] == "record")
}

/// The types of a union, or the type itself.
fn branches(schema: &Json) -> impl Iterator<Item = &Json> {
    match schema {
        Json::Array(types) => types.iter().collect::<Vec<_>>().into_iter(),
        other => vec![other].into_iter(),
    }
}

/// The scale of a column whose type is a decimal, however the converter
/// said so: the `decimal` logical type, or Connect's `Decimal` with its
/// `scale` parameter.
fn decimal_scale(topic: &str, column: &str, schema: &Json) -> Result<Option<u32>, SerdeError> {
    let Some(decimal) = branches(schema)
        .find(|t| t["logicalType"] == "decimal" || t["connect.name"] == "org.apache.kafka.connect.data.Decimal")
    else {
        return Ok(None);
    };
    let scale = match (&decimal["scale"], &decimal["connect.parameters"]["scale"]) {
        (Json::Number(n), _) => n.as_u64(),
        (_, Json::String(s)) => s.parse().ok(),
        _ => None,
    };
    scale
        .and_then(|s| u32::try_from(s).ok())
        .map(Some)
        .ok_or_else(|| SerdeError::deserialize(topic, format!("decimal column '{column}' has no scale")))
}

/// An Avro value as Kafka Connect's `JsonConverter` writes it: unions as
/// their branch, bytes and decimals as base64, logical dates and times as
/// their numbers, enums as their symbol.
fn to_json(value: Avro) -> Json {
    let base64 = |bytes: &[u8]| Json::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    match value {
        Avro::Null => Json::Null,
        Avro::Boolean(b) => Json::Bool(b),
        Avro::Int(n) | Avro::Date(n) | Avro::TimeMillis(n) => Json::from(n),
        Avro::Long(n)
        | Avro::TimeMicros(n)
        | Avro::TimestampMillis(n)
        | Avro::TimestampMicros(n)
        | Avro::TimestampNanos(n)
        | Avro::LocalTimestampMillis(n)
        | Avro::LocalTimestampMicros(n)
        | Avro::LocalTimestampNanos(n) => Json::from(n),
        Avro::Float(f) => float(f64::from(f)),
        Avro::Double(f) => float(f),
        Avro::Bytes(bytes) | Avro::Fixed(_, bytes) => base64(&bytes),
        Avro::Decimal(decimal) => match <Vec<u8>>::try_from(decimal) {
            Ok(bytes) => base64(&bytes),
            Err(e) => Json::String(format!("<invalid decimal: {e}>")),
        },
        Avro::BigDecimal(decimal) => Json::String(decimal.to_string()),
        Avro::Duration(duration) => base64(&<[u8; 12]>::from(duration)),
        Avro::String(text) | Avro::Enum(_, text) => Json::String(text),
        Avro::Uuid(uuid) => Json::String(uuid.to_string()),
        Avro::Union(_, value) => to_json(*value),
        Avro::Array(items) => Json::Array(items.into_iter().map(to_json).collect()),
        Avro::Map(entries) => Json::Object(entries.into_iter().map(|(k, v)| (k, to_json(v))).collect()),
        Avro::Record(fields) => Json::Object(fields.into_iter().map(|(k, v)| (k, to_json(v))).collect::<Map<_, _>>()),
    }
}

/// JSON has no NaN or infinities; they stay visible as text (which a float
/// column then refuses with an error) rather than becoming null.
fn float(f: f64) -> Json {
    Number::from_f64(f).map_or_else(|| Json::String(f.to_string()), Json::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_scales_come_from_the_logical_type_or_connect_parameters() {
        let logical =
            serde_json::json!(["null", {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}]);
        assert_eq!(decimal_scale("t", "price", &logical).unwrap(), Some(2));
        let connect = serde_json::json!({"type": "bytes", "connect.name": "org.apache.kafka.connect.data.Decimal",
            "connect.parameters": {"scale": "4"}});
        assert_eq!(decimal_scale("t", "price", &connect).unwrap(), Some(4));
        assert_eq!(decimal_scale("t", "name", &serde_json::json!("string")).unwrap(), None);
        let unscaled = serde_json::json!({"type": "bytes", "logicalType": "decimal"});
        let err = decimal_scale("t", "price", &unscaled).unwrap_err();
        assert!(err.message.contains("'price' has no scale"), "{err}");
    }

    #[test]
    fn avro_values_become_connect_json() {
        let record = Avro::Record(vec![
            ("id".into(), Avro::Long(7)),
            ("note".into(), Avro::Union(1, Box::new(Avro::String("hi".into())))),
            ("gone".into(), Avro::Union(0, Box::new(Avro::Null))),
            ("blob".into(), Avro::Bytes(vec![0, 1, 2])),
            (
                "price".into(),
                Avro::Decimal(apache_avro::Decimal::from(vec![0x30, 0x39])),
            ),
            ("day".into(), Avro::Date(19_000)),
            ("color".into(), Avro::Enum(1, "green".into())),
            ("ratio".into(), Avro::Double(f64::NAN)),
        ]);
        assert_eq!(
            to_json(record),
            serde_json::json!({"id": 7, "note": "hi", "gone": null, "blob": "AAEC", "price": "MDk=",
                               "day": 19000, "color": "green", "ratio": "NaN"})
        );
    }
}
