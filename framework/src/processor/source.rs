//! Source nodes: where raw records enter a task and become typed.

use super::{Forwarder, ProcessorContext};
use crate::error::{SerdeError, WeirError};
use crate::error_handler::*;
use crate::metrics::SkipReason;
use crate::record::{Header, OutputRecord, RawRecord, Record};
use crate::serde::SerdeRef;
use std::sync::Arc;

/// The entry point of a task for one source topic.
pub(crate) trait RawSource {
    fn process_raw(&mut self, ctx: &mut ProcessorContext<'_>, raw: &RawRecord) -> Result<(), WeirError>;
}

pub(crate) struct SourceNode<K, V> {
    pub key_serde: SerdeRef<K>,
    pub value_serde: SerdeRef<V>,
    pub on_error: ErrorHandler,
    pub out: Forwarder<K, V>,
}

impl<K: Clone + 'static, V: Clone + 'static> SourceNode<K, V> {
    fn decode(&self, topic: &str, raw: &RawRecord) -> Result<Record<K, V>, SerdeError> {
        let key = self
            .key_serde
            .deserialize(topic, raw.key.as_deref())
            .map_err(|e| SerdeError {
                message: format!("key: {}", e.message),
                ..e
            })?;
        let value = self
            .value_serde
            .deserialize(topic, raw.value.as_deref())
            .map_err(|e| SerdeError {
                message: format!("value: {}", e.message),
                ..e
            })?;
        Ok(Record::new(key, value, raw.timestamp))
    }
}

impl<K: Clone + 'static, V: Clone + 'static> RawSource for SourceNode<K, V> {
    fn process_raw(&mut self, ctx: &mut ProcessorContext<'_>, raw: &RawRecord) -> Result<(), WeirError> {
        let source = ctx.source;
        match self.decode(&source.topic, raw) {
            Ok(record) => self.out.forward(ctx, record),
            Err(error) => match &self.on_error {
                ErrorHandler::Fail => Err(WeirError::Processing {
                    topic: source.topic.to_string(),
                    partition: source.partition,
                    offset: source.offset,
                    cause: Box::new(error.into()),
                }),
                ErrorHandler::LogAndContinue => {
                    tracing::warn!(
                        topic = %source.topic, partition = source.partition, offset = source.offset,
                        %error, "skipping a record that cannot be deserialized"
                    );
                    ctx.metrics.record_skip(SkipReason::DeserializationError, &source.topic);
                    Ok(())
                }
                ErrorHandler::DeadLetter(dlq) => {
                    let mut headers = raw.headers.clone();
                    for (key, value) in [
                        (DLQ_ERROR_CLASS, "deserialization".to_string()),
                        (DLQ_ERROR_MESSAGE, error.to_string()),
                        (DLQ_SOURCE_TOPIC, source.topic.to_string()),
                        (DLQ_SOURCE_PARTITION, source.partition.to_string()),
                        (DLQ_SOURCE_OFFSET, source.offset.to_string()),
                    ] {
                        headers.push(Header {
                            key: key.to_string(),
                            value: value.into_bytes(),
                        });
                    }
                    ctx.collector.send(OutputRecord {
                        topic: Arc::from(dlq.as_str()),
                        partition: None,
                        record: RawRecord { headers, ..raw.clone() },
                    });
                    ctx.metrics.record_skip(SkipReason::DeadLettered, &source.topic);
                    Ok(())
                }
            },
        }
    }
}
