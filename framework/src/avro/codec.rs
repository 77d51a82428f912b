//! [`Avro`]: a weir serde for Avro records in the Confluent wire format.

use super::registry::{RegistryError, SchemaRegistry, WriterSchema};
use crate::error::{SerdeError, SerdeErrorKind};
use crate::serde::{Encoded, Serde};
use apache_avro::schema::{NamesRef, ResolvedSchema};
use apache_avro::{write_avro_datum_ref, AvroSchema, Schema};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, RwLock};

/// The first byte of every record in the Confluent wire format.
const MAGIC: u8 = 0;
/// The magic byte and the 4-byte schema id.
const HEADER_LEN: usize = 5;

/// How the subject a schema is registered under is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubjectStrategy {
    /// `<topic>-key` or `<topic>-value` (Confluent's default).
    #[default]
    TopicName,
    /// The record's full name, for one type on many topics.
    RecordName,
    /// `<topic>-<record full name>`, for many types on one topic.
    TopicRecordName,
}

/// Avro for keys or values of type `T` (serde-serializable, with an Avro
/// schema), in the Confluent wire format: byte 0, the writer schema's id
/// (4 bytes, big endian), the Avro binary encoding.
///
/// - Writing registers `T`'s schema under the subject the
///   [`SubjectStrategy`] names (or finds it registered) and caches the id.
/// - Reading fetches the writer schema by the record's id (cached) and
///   resolves it to `T`'s schema: a field added with a default, or one
///   removed, is read as `T` expects. A schema that cannot be resolved is a
///   deserialization error naming the subject, the ids and Avro's reason.
/// - A registry that stays unreachable after the configured attempts is an
///   [`SerdeErrorKind::Unavailable`] error: sources stop on it instead of
///   dead-lettering the record.
///
/// Kafka's null is not an Avro record; wrap the serde in
/// [`Nullable`](crate::serde::Nullable) for nullable values (tombstones).
///
/// ```no_run
/// use apache_avro::AvroSchema;
/// use serde::{Deserialize, Serialize};
/// use weir::avro::{Avro, SchemaRegistry};
/// use weir::serde::Nullable;
/// use weir::{Produced, StreamsBuilder};
///
/// #[derive(Serialize, Deserialize, AvroSchema, Clone)]
/// struct Profile { user_id: i64, email: String, dark_mode: Option<bool> }
///
/// let registry = SchemaRegistry::new("http://schema-registry:8081")?;
/// let builder = StreamsBuilder::new();
/// # let profiles: weir::KStream<String, Option<Profile>> = todo!();
/// profiles.to("user-profile", Produced::with(weir::serde::Utf8, Nullable(Avro::<Profile>::value(&registry))));
/// # Ok::<(), weir::WeirError>(())
/// ```
pub struct Avro<T> {
    registry: SchemaRegistry,
    schema: Arc<Schema>,
    /// Whether the schema refers to a named type by name, so that writing
    /// needs the table of names (resolving it costs more than the write).
    has_references: bool,
    /// The schema as registered (its full JSON, defaults included).
    schema_json: String,
    strategy: SubjectStrategy,
    is_key: bool,
    /// Writer schema ids by topic (each topic has one subject).
    ids: RwLock<HashMap<String, u32>>,
    /// Whether the records of a writer schema id are read straight into
    /// `T`, without an Avro value and resolution.
    direct: RwLock<HashMap<u32, bool>>,
    _type: PhantomData<fn() -> T>,
}

impl<T: AvroSchema> Avro<T> {
    /// Values of type `T`, with the schema `T` derives.
    pub fn value(registry: &SchemaRegistry) -> Self {
        Avro::with_schema(registry, T::get_schema(), false)
    }

    /// Keys of type `T`, with the schema `T` derives.
    pub fn key(registry: &SchemaRegistry) -> Self {
        Avro::with_schema(registry, T::get_schema(), true)
    }
}

impl<T> Avro<T> {
    /// `T` written and read as `schema` (for types without a derived schema,
    /// or to read with a schema of your own); `is_key` picks the subject's
    /// `-key` or `-value` suffix under [`SubjectStrategy::TopicName`].
    pub fn with_schema(registry: &SchemaRegistry, schema: Schema, is_key: bool) -> Self {
        let schema_json = serde_json::to_string(&schema).expect("an Avro schema serializes to JSON");
        Avro {
            registry: registry.clone(),
            has_references: has_references(&schema),
            schema: Arc::new(schema),
            schema_json,
            strategy: SubjectStrategy::default(),
            is_key,
            ids: RwLock::default(),
            direct: RwLock::default(),
            _type: PhantomData,
        }
    }

    fn root(&self) -> &Schema {
        &self.schema
    }

    /// Names subjects by `strategy` instead of by topic.
    pub fn subject_strategy(mut self, strategy: SubjectStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The subject the schema is registered under for `topic`.
    pub fn subject(&self, topic: &str) -> String {
        let record = || self.root().name().map(|n| n.fullname(None)).unwrap_or_default();
        match self.strategy {
            SubjectStrategy::TopicName if self.is_key => format!("{topic}-key"),
            SubjectStrategy::TopicName => format!("{topic}-value"),
            SubjectStrategy::RecordName => record(),
            SubjectStrategy::TopicRecordName => format!("{topic}-{}", record()),
        }
    }

    /// The id of the writer schema under `topic`'s subject, registered on
    /// the first record of the topic.
    fn writer_id(&self, topic: &str) -> Result<u32, RegistryError> {
        if let Some(id) = self.ids.read().unwrap_or_else(|p| p.into_inner()).get(topic) {
            return Ok(*id);
        }
        let id = self.registry.register(&self.subject(topic), &self.schema_json)?;
        self.ids
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.to_string(), id);
        Ok(id)
    }

    /// Whether records of `writer` are read straight into `T`: its schema
    /// is `T`'s, and reading that way worked (apache-avro's direct reader
    /// also wants the Rust type to bear the record's name).
    fn reads_directly(&self, writer: &WriterSchema) -> bool {
        if let Some(direct) = self.direct.read().unwrap_or_else(|p| p.into_inner()).get(&writer.id) {
            return *direct;
        }
        // Equality of canonical forms: defaults and docs do not change the encoding.
        let direct = writer.schema == *self.root();
        self.set_direct(writer.id, direct);
        direct
    }

    fn set_direct(&self, id: u32, direct: bool) {
        self.direct
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, direct);
    }

    /// A record through an Avro value, resolved to `T`'s schema.
    fn read_resolved(&self, topic: &str, writer: &WriterSchema, mut body: &[u8]) -> Result<T, SerdeError>
    where
        T: DeserializeOwned,
    {
        let id = writer.id;
        let value = writer
            .read_value(&mut body)
            .and_then(|value| value.resolve(self.root()))
            .map_err(|e| {
                SerdeError::deserialize(
                    topic,
                    format!(
                        "a record written with schema {id} cannot be read as '{}' (subject '{}'): {e}",
                        self.root().name().map(|n| n.fullname(None)).unwrap_or_default(),
                        self.subject(topic)
                    ),
                )
            })?;
        apache_avro::from_value::<T>(&value).map_err(|e| {
            SerdeError::deserialize(
                topic,
                format!("an Avro record of schema {id} does not fit the type: {e}"),
            )
        })
    }
}

/// A registry failure as a serde error of `kind` (or unavailable).
fn registry_error(kind: SerdeErrorKind, topic: &str, error: RegistryError) -> SerdeError {
    SerdeError {
        kind: if error.unavailable {
            SerdeErrorKind::Unavailable
        } else {
            kind
        },
        topic: topic.to_string(),
        message: error.message,
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Serde<T> for Avro<T> {
    fn serialize(&self, topic: &str, value: &T, out: &mut Vec<u8>) -> Result<Encoded, SerdeError> {
        let id = self
            .writer_id(topic)
            .map_err(|e| registry_error(SerdeErrorKind::Serialize, topic, e))?;
        out.push(MAGIC);
        out.extend_from_slice(&id.to_be_bytes());
        let resolved;
        let no_names = NamesRef::new();
        let names = if self.has_references {
            resolved = ResolvedSchema::try_from(&*self.schema);
            resolved.as_ref().map(ResolvedSchema::get_names).unwrap_or(&no_names)
        } else {
            &no_names
        };
        write_avro_datum_ref(&self.schema, names, value, out).map_err(|e| {
            let subject = self.subject(topic);
            SerdeError::serialize(topic, format!("not a valid '{subject}' record (schema {id}): {e}"))
        })?;
        Ok(Encoded::Bytes)
    }

    fn deserialize(&self, topic: &str, bytes: Option<&[u8]>) -> Result<T, SerdeError> {
        let bytes = bytes.ok_or_else(|| SerdeError::deserialize(topic, "null where an Avro record was expected"))?;
        let (writer, body) = writer_schema(&self.registry, topic, bytes)?;
        if !self.reads_directly(&writer) {
            return self.read_resolved(topic, &writer, body);
        }
        match writer.read::<T>(&mut &body[..]) {
            Ok(value) => Ok(value),
            Err(direct_error) => {
                let value = self.read_resolved(topic, &writer, body).map_err(|e| SerdeError {
                    message: format!("{}; read directly: {direct_error}", e.message),
                    ..e
                })?;
                // The record is fine; the direct reader is not for this type.
                self.set_direct(writer.id, false);
                Ok(value)
            }
        }
    }
}

fn has_references(schema: &Schema) -> bool {
    match schema {
        Schema::Ref { .. } => true,
        Schema::Record(record) => record.fields.iter().any(|f| has_references(&f.schema)),
        Schema::Union(union) => union.variants().iter().any(has_references),
        Schema::Array(array) => has_references(&array.items),
        Schema::Map(map) => has_references(&map.types),
        _ => false,
    }
}

/// The writer schema a record in the Confluent wire format names, and the
/// record's Avro body.
pub(crate) fn writer_schema<'a>(
    registry: &SchemaRegistry,
    topic: &str,
    bytes: &'a [u8],
) -> Result<(Arc<WriterSchema>, &'a [u8]), SerdeError> {
    if bytes.len() < HEADER_LEN || bytes[0] != MAGIC {
        return Err(SerdeError::deserialize(
            topic,
            format!(
                "not in the Confluent Avro wire format (magic byte 0 and a schema id): {} bytes starting {:02x?}",
                bytes.len(),
                &bytes[..bytes.len().min(HEADER_LEN)]
            ),
        ));
    }
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let writer = registry
        .schema(id)
        .map_err(|e| registry_error(SerdeErrorKind::Deserialize, topic, e))?;
    Ok((writer, &bytes[HEADER_LEN..]))
}
