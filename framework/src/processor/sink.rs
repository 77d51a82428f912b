//! Sink nodes: typed records leave the task as bytes for a topic.

use super::{send_dead_letter, Processor, ProcessorContext};
use crate::error::{SerdeError, WeirError};
use crate::error_handler::ErrorHandler;
use crate::metrics::SkipReason;
use crate::record::{OutputKind, OutputRecord, RawRecord, Record};
use crate::serde::SerdeRef;
use std::sync::Arc;

pub(crate) struct SinkNode<K, V> {
    pub topic: Arc<str>,
    /// [`OutputKind::Output`] for a topic the user named,
    /// [`OutputKind::Internal`] for a repartition topic.
    pub kind: OutputKind,
    pub key_serde: SerdeRef<K>,
    pub value_serde: SerdeRef<V>,
    /// The production error handler, for records of a user's topic that
    /// cannot be serialized (a repartition record that cannot be is an error).
    pub on_error: ErrorHandler,
    /// `weir_records_produced_total{topic}`.
    pub produced: metrics::Counter,
}

impl<K: 'static, V: 'static> Processor<K, V> for SinkNode<K, V> {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, record: Record<K, V>) -> Result<(), WeirError> {
        let key = self.key_serde.to_bytes(&self.topic, &record.key);
        let value = self.value_serde.to_bytes(&self.topic, &record.value);
        let (key, value) = match (key, value) {
            (Ok(key), Ok(value)) => (key, value),
            (key, value) => {
                let error = [key.as_ref().err(), value.as_ref().err()]
                    .into_iter()
                    .flatten()
                    .next()
                    .cloned()
                    .expect("one of the two failed");
                let serialized = RawRecord {
                    key: key.ok().flatten(),
                    value: value.ok().flatten(),
                    timestamp: record.timestamp,
                    headers: Vec::new(),
                };
                return self.unserializable(ctx, error, serialized);
            }
        };
        ctx.collector.send(OutputRecord {
            topic: self.topic.clone(),
            partition: None,
            kind: self.kind,
            record: RawRecord {
                key,
                value,
                timestamp: record.timestamp,
                headers: Vec::new(),
            },
        });
        self.produced.increment(1);
        Ok(())
    }
}

impl<K, V> SinkNode<K, V> {
    /// Applies the production error handler to a record that could not be
    /// serialized; `serialized` holds the part that could.
    fn unserializable(
        &self,
        ctx: &mut ProcessorContext<'_>,
        error: SerdeError,
        serialized: RawRecord,
    ) -> Result<(), WeirError> {
        if self.kind == OutputKind::Internal {
            return Err(ctx.failed_at_source(error.into()));
        }
        match &self.on_error {
            ErrorHandler::Fail => Err(ctx.failed_at_source(error.into())),
            ErrorHandler::LogAndContinue => {
                let source = ctx.source;
                tracing::warn!(
                    topic = %self.topic, source = %source.topic, partition = source.partition,
                    offset = source.offset, %error, "skipping an output record that cannot be serialized"
                );
                ctx.metrics.record_skip(SkipReason::ProductionError, &self.topic);
                Ok(())
            }
            ErrorHandler::DeadLetter(dlq) => {
                send_dead_letter(
                    ctx,
                    dlq,
                    ("serialization", error.to_string()),
                    Some(&self.topic),
                    serialized,
                );
                ctx.metrics.record_skip(SkipReason::ProductionDeadLettered, &self.topic);
                Ok(())
            }
        }
    }
}
