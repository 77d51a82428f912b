//! Serdes: how keys and values become bytes on topics and in stores.
//!
//! A [`Serde`] both serializes and deserializes one Rust type. Kafka's null
//! (a missing key or value) is part of the contract: `deserialize` receives
//! `None` for it, and `serialize` answers [`Encoded::Null`] for a value that
//! must be written as null. The JSON serde maps JSON `null` to Kafka null, so
//! `Json<Option<T>>` reads and writes nullable values naturally.
//!
//! ```
//! use weir::serde::{Json, Serde};
//! let serde = Json::<Vec<u32>>::new();
//! let bytes = serde.to_bytes("t", &vec![1, 2]).unwrap().unwrap();
//! assert_eq!(bytes, b"[1,2]");
//! assert_eq!(serde.deserialize("t", Some(&bytes)).unwrap(), vec![1, 2]);
//! ```

mod change;

pub(crate) use change::{read_framed, write_framed, ChangeSerde};

use crate::error::SerdeError;
use std::marker::PhantomData;
use std::sync::Arc;

/// What [`Serde::serialize`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoded {
    /// Bytes were appended to the buffer.
    Bytes,
    /// The value is Kafka's null; nothing was appended.
    Null,
}

/// Turns values of one type into bytes and back.
pub trait Serde<T>: Send + Sync + 'static {
    /// Appends the encoding of `value` to `out` (which may already hold bytes
    /// of other values; only append).
    fn serialize(&self, topic: &str, value: &T, out: &mut Vec<u8>) -> Result<Encoded, SerdeError>;

    /// Decodes a value; `None` is Kafka's null.
    fn deserialize(&self, topic: &str, bytes: Option<&[u8]>) -> Result<T, SerdeError>;

    /// Serializes into a fresh buffer; `None` for Kafka's null.
    fn to_bytes(&self, topic: &str, value: &T) -> Result<Option<Vec<u8>>, SerdeError> {
        let mut out = Vec::new();
        Ok(match self.serialize(topic, value, &mut out)? {
            Encoded::Bytes => Some(out),
            Encoded::Null => None,
        })
    }
}

/// Appends the encoding of `value` to `out`, refusing a null: `what`
/// names what must be there ("a store key") in the error.
pub(crate) fn serialize_present<T: 'static>(
    serde: &dyn Serde<T>,
    topic: &str,
    value: &T,
    out: &mut Vec<u8>,
    what: &str,
) -> Result<(), SerdeError> {
    match serde.serialize(topic, value, out)? {
        Encoded::Bytes => Ok(()),
        Encoded::Null => Err(SerdeError::serialize(
            topic,
            format!("{what} must not serialize to null"),
        )),
    }
}

/// A shareable serde, as the DSL stores them.
pub type SerdeRef<T> = Arc<dyn Serde<T>>;

impl<T, S: Serde<T> + ?Sized> Serde<T> for Arc<S> {
    fn serialize(&self, topic: &str, value: &T, out: &mut Vec<u8>) -> Result<Encoded, SerdeError> {
        (**self).serialize(topic, value, out)
    }
    fn deserialize(&self, topic: &str, bytes: Option<&[u8]>) -> Result<T, SerdeError> {
        (**self).deserialize(topic, bytes)
    }
}

fn null_error(topic: &str, type_name: &str) -> SerdeError {
    SerdeError::deserialize(topic, format!("null where a {type_name} was expected"))
}

/// JSON through `serde_json`, for any `Serialize + DeserializeOwned` type.
pub struct Json<T>(PhantomData<fn() -> T>);

impl<T> Json<T> {
    pub fn new() -> Self {
        Json(PhantomData)
    }
}

impl<T> Default for Json<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for Json<T> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<T> Serde<T> for Json<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + 'static,
{
    fn serialize(&self, topic: &str, value: &T, out: &mut Vec<u8>) -> Result<Encoded, SerdeError> {
        let start = out.len();
        serde_json::to_writer(&mut *out, value).map_err(|e| SerdeError::serialize(topic, e))?;
        if &out[start..] == b"null" {
            out.truncate(start);
            return Ok(Encoded::Null);
        }
        Ok(Encoded::Bytes)
    }

    fn deserialize(&self, topic: &str, bytes: Option<&[u8]>) -> Result<T, SerdeError> {
        serde_json::from_slice(bytes.unwrap_or(b"null"))
            .map_err(|e| SerdeError::deserialize(topic, format!("invalid JSON: {e}")))
    }
}

/// UTF-8 text as `String`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Utf8;

impl Serde<String> for Utf8 {
    fn serialize(&self, _: &str, value: &String, out: &mut Vec<u8>) -> Result<Encoded, SerdeError> {
        out.extend_from_slice(value.as_bytes());
        Ok(Encoded::Bytes)
    }

    fn deserialize(&self, topic: &str, bytes: Option<&[u8]>) -> Result<String, SerdeError> {
        let bytes = bytes.ok_or_else(|| null_error(topic, "string"))?;
        String::from_utf8(bytes.to_vec()).map_err(|e| SerdeError::deserialize(topic, format!("invalid UTF-8: {e}")))
    }
}

/// Raw bytes, passed through unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bytes;

impl Serde<Vec<u8>> for Bytes {
    fn serialize(&self, _: &str, value: &Vec<u8>, out: &mut Vec<u8>) -> Result<Encoded, SerdeError> {
        out.extend_from_slice(value);
        Ok(Encoded::Bytes)
    }

    fn deserialize(&self, topic: &str, bytes: Option<&[u8]>) -> Result<Vec<u8>, SerdeError> {
        bytes.map(<[u8]>::to_vec).ok_or_else(|| null_error(topic, "byte array"))
    }
}

/// A 64-bit signed integer, 8 bytes big-endian (Kafka's `LongSerializer` format).
#[derive(Debug, Clone, Copy, Default)]
pub struct I64;

impl Serde<i64> for I64 {
    fn serialize(&self, _: &str, value: &i64, out: &mut Vec<u8>) -> Result<Encoded, SerdeError> {
        out.extend_from_slice(&value.to_be_bytes());
        Ok(Encoded::Bytes)
    }

    fn deserialize(&self, topic: &str, bytes: Option<&[u8]>) -> Result<i64, SerdeError> {
        let bytes = bytes.ok_or_else(|| null_error(topic, "64-bit integer"))?;
        let array: [u8; 8] = bytes
            .try_into()
            .map_err(|_| SerdeError::deserialize(topic, format!("expected 8 bytes, got {}", bytes.len())))?;
        Ok(i64::from_be_bytes(array))
    }
}

/// Makes any serde nullable: `None` is Kafka's null, `Some` uses the inner serde.
///
/// ```
/// use weir::serde::{Nullable, Serde, Utf8};
/// let serde = Nullable(Utf8);
/// assert_eq!(serde.to_bytes("t", &None).unwrap(), None);
/// assert_eq!(serde.deserialize("t", Some(b"x")).unwrap(), Some("x".to_string()));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Nullable<S>(pub S);

impl<T: 'static, S: Serde<T>> Serde<Option<T>> for Nullable<S> {
    fn serialize(&self, topic: &str, value: &Option<T>, out: &mut Vec<u8>) -> Result<Encoded, SerdeError> {
        match value {
            Some(value) => self.0.serialize(topic, value, out),
            None => Ok(Encoded::Null),
        }
    }

    fn deserialize(&self, topic: &str, bytes: Option<&[u8]>) -> Result<Option<T>, SerdeError> {
        bytes.map(|b| self.0.deserialize(topic, Some(b))).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_null_is_kafka_null_both_ways() {
        let serde = Json::<Option<u32>>::new();
        assert_eq!(serde.to_bytes("t", &None).unwrap(), None);
        assert_eq!(serde.to_bytes("t", &Some(3)).unwrap(), Some(b"3".to_vec()));
        assert_eq!(serde.deserialize("t", None).unwrap(), None);
    }

    #[test]
    fn json_rejects_null_for_non_optional_types_with_a_clear_message() {
        let err = Json::<u32>::new().deserialize("orders", None).unwrap_err();
        assert_eq!(err.topic, "orders");
        assert!(err.message.contains("null"), "{err}");
    }

    #[test]
    fn json_appends_without_touching_earlier_bytes() {
        let mut buf = b"xy".to_vec();
        Json::<u8>::new().serialize("t", &7, &mut buf).unwrap();
        assert_eq!(buf, b"xy7");
    }

    #[test]
    fn primitive_serdes_round_trip_and_reject_bad_input() {
        assert_eq!(
            I64.deserialize("t", Some(&I64.to_bytes("t", &-5).unwrap().unwrap()))
                .unwrap(),
            -5
        );
        assert!(I64.deserialize("t", Some(b"abc")).is_err());
        assert!(Utf8.deserialize("t", Some(&[0xff, 0xfe])).is_err());
        assert!(Utf8.deserialize("t", None).is_err());
        assert_eq!(Bytes.deserialize("t", Some(&[1, 2])).unwrap(), vec![1, 2]);
    }
}
