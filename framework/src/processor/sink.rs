//! Sink nodes: typed records leave the task as bytes for a topic.

use super::{Processor, ProcessorContext};
use crate::error::WeirError;
use crate::record::{OutputRecord, RawRecord, Record};
use crate::serde::SerdeRef;
use std::sync::Arc;

pub(crate) struct SinkNode<K, V> {
    pub topic: Arc<str>,
    pub key_serde: SerdeRef<K>,
    pub value_serde: SerdeRef<V>,
    /// `weir_records_produced_total{topic}`.
    pub produced: metrics::Counter,
}

impl<K: 'static, V: 'static> Processor<K, V> for SinkNode<K, V> {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, record: Record<K, V>) -> Result<(), WeirError> {
        let key = self.key_serde.to_bytes(&self.topic, &record.key)?;
        let value = self.value_serde.to_bytes(&self.topic, &record.value)?;
        ctx.collector.send(OutputRecord {
            topic: self.topic.clone(),
            partition: None,
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
