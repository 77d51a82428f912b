//! Source nodes: where raw records enter a task and become typed.
//!
//! A [`SourceNode`] runs a [`Decode`] on each raw record and applies the
//! source's [`ErrorHandler`] to the records it cannot decode. Plain sources
//! decode with a key and a value serde ([`SerdeDecoder`]); CDC sources
//! decode Debezium change events (see `processor::cdc`).

use super::{send_dead_letter, Forwarder, ProcessorContext};
use crate::error::{SerdeError, SerdeErrorKind, WeirError};
use crate::error_handler::ErrorHandler;
use crate::metrics::SkipReason;
use crate::record::{InputRecord, RawRecord, Record};
use crate::serde::SerdeRef;
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

/// The entry point of a task for one source topic.
pub(crate) trait RawSource {
    fn process_raw(&mut self, ctx: &mut ProcessorContext<'_>, raw: &InputRecord<'_>) -> Result<(), WeirError>;
}

/// What a decoder made of a raw record; see [`Decode::decode`].
pub(crate) type Decoded<K, V> = Result<Option<Record<K, V>>, WeirError>;

/// A record's time from its key, value and the timestamp it arrived with
/// ([`crate::Consumed::timestamp`]).
pub(crate) type TimestampOf<K, V> = Arc<dyn Fn(&K, &V, i64) -> i64 + Send + Sync>;

/// Turns a raw record into the typed record a source forwards.
pub(crate) trait Decode {
    type Key: Clone + 'static;
    type Value: Clone + 'static;

    /// `Ok(None)` when the record carries nothing to forward (the decoder
    /// counts why). A [`WeirError::Serde`] goes to the error handler; any
    /// other error stops the task.
    fn decode(&self, ctx: &mut ProcessorContext<'_>, raw: &InputRecord<'_>) -> Decoded<Self::Key, Self::Value>;
}

/// Decodes the key and the value with their serdes, and takes the record's
/// time from them if told how.
pub(crate) struct SerdeDecoder<K, V> {
    pub key_serde: SerdeRef<K>,
    pub value_serde: SerdeRef<V>,
    pub timestamp: Option<TimestampOf<K, V>>,
}

impl<K: Clone + 'static, V: Clone + 'static> Decode for SerdeDecoder<K, V> {
    type Key = K;
    type Value = V;

    fn decode(&self, ctx: &mut ProcessorContext<'_>, raw: &InputRecord<'_>) -> Decoded<K, V> {
        let topic = &ctx.source.topic;
        let key = self
            .key_serde
            .deserialize(topic, raw.key)
            .map_err(|e| e.prefixed("key"))?;
        let value = self
            .value_serde
            .deserialize(topic, raw.value)
            .map_err(|e| e.prefixed("value"))?;
        let timestamp = self
            .timestamp
            .as_ref()
            .map_or(raw.timestamp, |time_of| time_of(&key, &value, raw.timestamp));
        Ok(Some(Record::new(key, value, timestamp)))
    }
}

pub(crate) struct SourceNode<D: Decode> {
    pub decoder: D,
    pub on_error: ErrorHandler,
    pub out: Forwarder<D::Key, D::Value>,
    /// The task's stream time, which each decoded record moves on.
    pub stream_time: Rc<Cell<Option<i64>>>,
}

impl<D: Decode> RawSource for SourceNode<D> {
    fn process_raw(&mut self, ctx: &mut ProcessorContext<'_>, raw: &InputRecord<'_>) -> Result<(), WeirError> {
        match self.decoder.decode(ctx, raw) {
            Ok(Some(record)) => {
                // What follows (stores, sinks, stream time) takes the
                // record's time as the decoder read it; the record is
                // processed at a stream time that counts it.
                ctx.timestamp = record.timestamp;
                let time = record.timestamp;
                self.stream_time
                    .set(Some(self.stream_time.get().map_or(time, |t| t.max(time))));
                self.out.forward(ctx, record)
            }
            Ok(None) => Ok(()),
            Err(WeirError::Serde(error)) => handle_undecodable(ctx, &self.on_error, raw, error),
            Err(other) => Err(ctx.failed_at_source(other)),
        }
    }
}

/// Applies the error handler to a record that could not be decoded.
fn handle_undecodable(
    ctx: &mut ProcessorContext<'_>,
    on_error: &ErrorHandler,
    raw: &InputRecord<'_>,
    error: SerdeError,
) -> Result<(), WeirError> {
    let source = ctx.source;
    if error.kind == SerdeErrorKind::Unavailable {
        // The record may be fine; it is read again after a restart.
        return Err(ctx.failed_at_source(error.into()));
    }
    match on_error {
        ErrorHandler::Fail => Err(ctx.failed_at_source(error.into())),
        ErrorHandler::LogAndContinue => {
            tracing::warn!(
                topic = %source.topic, partition = source.partition, offset = source.offset,
                %error, "skipping a record that cannot be deserialized"
            );
            ctx.metrics.record_skip(SkipReason::DeserializationError, &source.topic);
            Ok(())
        }
        ErrorHandler::DeadLetter(dlq) => {
            let original = RawRecord {
                key: raw.key.map(<[u8]>::to_vec),
                value: raw.value.map(<[u8]>::to_vec),
                timestamp: raw.timestamp,
                headers: raw.headers.to_headers(),
            };
            send_dead_letter(ctx, dlq, ("deserialization", error.to_string()), None, original);
            ctx.metrics.record_skip(SkipReason::DeadLettered, &source.topic);
            Ok(())
        }
    }
}
