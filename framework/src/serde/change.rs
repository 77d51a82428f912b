//! The wire format of a table [`Change`] on an internal repartition topic.
//!
//! A re-keying table `group_by` must ship both the new value (to add to its
//! new group) and the old one (to subtract from its old group). Layout: one
//! flag byte (bit 0: new present, bit 1: old present), then the new value as
//! a 4-byte big-endian length and its bytes, then the old value the same way.

use super::{Encoded, Serde, SerdeRef};
use crate::error::SerdeError;
use crate::record::Change;

const HAS_NEW: u8 = 1;
const HAS_OLD: u8 = 2;

pub(crate) struct ChangeSerde<V> {
    inner: SerdeRef<V>,
}

impl<V: 'static> ChangeSerde<V> {
    pub(crate) fn new(inner: SerdeRef<V>) -> Self {
        ChangeSerde { inner }
    }

    fn write_part(&self, topic: &str, value: &V, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        write_framed(&*self.inner, topic, value, out, "a table value")
    }

    fn read_part<'a>(&self, topic: &str, bytes: &'a [u8]) -> Result<(V, &'a [u8]), SerdeError> {
        read_framed(&*self.inner, topic, bytes)
    }
}

/// Appends `value` as a 4-byte big-endian length and its bytes; `what`
/// names it in the error when it would be null.
pub(crate) fn write_framed<V: 'static>(
    serde: &dyn Serde<V>,
    topic: &str,
    value: &V,
    out: &mut Vec<u8>,
    what: &str,
) -> Result<(), SerdeError> {
    let len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    super::serialize_present(serde, topic, value, out, what)?;
    let len =
        u32::try_from(out.len() - len_at - 4).map_err(|_| SerdeError::serialize(topic, "value larger than 4 GiB"))?;
    out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Reads a value [`write_framed`] wrote; returns it and the bytes after it.
pub(crate) fn read_framed<'a, V: 'static>(
    serde: &dyn Serde<V>,
    topic: &str,
    bytes: &'a [u8],
) -> Result<(V, &'a [u8]), SerdeError> {
    let truncated = || SerdeError::deserialize(topic, "truncated framed value");
    let len_bytes: [u8; 4] = bytes.get(..4).ok_or_else(truncated)?.try_into().unwrap();
    let len = u32::from_be_bytes(len_bytes) as usize;
    let body = bytes.get(4..4 + len).ok_or_else(truncated)?;
    Ok((serde.deserialize(topic, Some(body))?, &bytes[4 + len..]))
}

impl<V: 'static> Serde<Change<V>> for ChangeSerde<V> {
    fn serialize(&self, topic: &str, change: &Change<V>, out: &mut Vec<u8>) -> Result<Encoded, SerdeError> {
        let flags = change.new.as_ref().map_or(0, |_| HAS_NEW) | change.old.as_ref().map_or(0, |_| HAS_OLD);
        out.push(flags);
        for value in [&change.new, &change.old].into_iter().flatten() {
            self.write_part(topic, value, out)?;
        }
        Ok(Encoded::Bytes)
    }

    fn deserialize(&self, topic: &str, bytes: Option<&[u8]>) -> Result<Change<V>, SerdeError> {
        let bytes = bytes.ok_or_else(|| SerdeError::deserialize(topic, "null change record"))?;
        let (&flags, mut rest) = bytes
            .split_first()
            .ok_or_else(|| SerdeError::deserialize(topic, "empty change record"))?;
        let mut take = |present: bool| -> Result<Option<V>, SerdeError> {
            if !present {
                return Ok(None);
            }
            let (value, after) = self.read_part(topic, rest)?;
            rest = after;
            Ok(Some(value))
        };
        let new = take(flags & HAS_NEW != 0)?;
        let old = take(flags & HAS_OLD != 0)?;
        Ok(Change { new, old })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serde::Utf8;
    use std::sync::Arc;

    #[test]
    fn round_trips_every_shape_and_rejects_truncation() {
        let serde = ChangeSerde::new(Arc::new(Utf8));
        for change in [
            Change::new(Some("a".to_string()), Some("bb".to_string())),
            Change::new(Some("a".to_string()), None),
            Change::new(None, Some(String::new())),
        ] {
            let bytes = serde.to_bytes("t", &change).unwrap().unwrap();
            assert_eq!(serde.deserialize("t", Some(&bytes)).unwrap(), change);
            assert!(serde.deserialize("t", Some(&bytes[..bytes.len() - 1])).is_err());
        }
        assert!(serde.deserialize("t", Some(&[])).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]

        /// Repartition topics are written by weir, but read from a broker:
        /// any bytes read as a change or an error naming the topic.
        #[test]
        fn any_bytes_read_as_a_change_or_an_error(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let serde = ChangeSerde::new(Arc::new(Utf8));
            if let Err(error) = serde.deserialize("t-repartition", Some(&bytes)) {
                proptest::prop_assert!(error.to_string().contains("t-repartition"), "{}", error);
            }
        }
    }
}
