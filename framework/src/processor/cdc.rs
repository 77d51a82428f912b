//! CDC sources: Debezium records decoded into table updates or change
//! events, with every event counted by operation.

use super::source::{Decode, Decoded};
use super::ProcessorContext;
use crate::cdc::{CdcTime, ChangeEvent, EventDecoder, KeyDecoder, Op, RowChange, TruncatePolicy};
use crate::error::{SerdeError, WeirError};
use crate::metrics::{SkipReason, CDC_EVENTS, CDC_OPS};
use crate::record::{InputRecord, Record};
use std::sync::Arc;

/// The exported per-operation counters of one CDC topic, looked up once per task.
pub(crate) struct CdcCounters {
    exported: Vec<metrics::Counter>,
}

impl CdcCounters {
    pub(crate) fn new(topic: &str) -> Self {
        CdcCounters {
            exported: CDC_OPS
                .iter()
                .map(|op| metrics::counter!(CDC_EVENTS, "topic" => topic.to_string(), "op" => *op))
                .collect(),
        }
    }

    /// Counts one event; `None` is a tombstone.
    fn count(&self, ctx: &mut ProcessorContext<'_>, op: Option<Op>) {
        let index = match op {
            Some(Op::Create) => 0,
            Some(Op::Update) => 1,
            Some(Op::Delete) => 2,
            Some(Op::Read) => 3,
            Some(Op::Truncate) => 4,
            Some(Op::Message) => 5,
            None => 6,
        };
        self.exported[index].increment(1);
        ctx.metrics.record_cdc_event(&ctx.source.topic, index);
    }
}

fn decode_key<K: 'static>(
    keys: &dyn KeyDecoder<K>,
    ctx: &ProcessorContext<'_>,
    raw: &InputRecord<'_>,
) -> Result<Option<K>, SerdeError> {
    match raw.key {
        Some(bytes) => keys.decode_key(&ctx.source.topic, bytes).map_err(|e| e.prefixed("key")),
        None => Ok(None),
    }
}

/// Decodes a Debezium topic into table updates: `Some(row)` upserts, `None`
/// deletes. Truncates and messages change nothing and are counted.
pub(crate) struct CdcTableDecoder<K, Row> {
    pub keys: Arc<dyn KeyDecoder<K>>,
    pub events: Arc<dyn EventDecoder<Row>>,
    pub truncate: TruncatePolicy,
    pub time: CdcTime,
    pub counters: CdcCounters,
}

/// A change with the time it carries, if the table takes one from it.
type TimedChange<Row> = (RowChange<Row>, Option<i64>);

impl<K, Row: 'static> CdcTableDecoder<K, Row> {
    /// The operation and new row of an event, and its time when the table
    /// takes one from the event (which then reads the event whole).
    fn row_change(&self, topic: &str, bytes: &[u8]) -> Result<Option<TimedChange<Row>>, SerdeError> {
        if self.time == CdcTime::Record {
            return Ok(self
                .events
                .decode_row_change(topic, bytes)?
                .map(|change| (change, None)));
        }
        Ok(self.events.decode_event(topic, bytes)?.map(|event| {
            let time = self.time.of(&event);
            let change = RowChange {
                op: event.op,
                after: event.after,
            };
            (change, time)
        }))
    }
}

impl<K: Clone + 'static, Row: Clone + 'static> Decode for CdcTableDecoder<K, Row> {
    type Key = K;
    type Value = Option<Row>;

    fn decode(
        &self,
        ctx: &mut ProcessorContext<'_>,
        raw: &InputRecord<'_>,
    ) -> Result<Option<Record<K, Option<Row>>>, WeirError> {
        let (change, time) = match raw.value {
            Some(bytes) => match self
                .row_change(&ctx.source.topic, bytes)
                .map_err(|e| e.prefixed("value"))?
            {
                Some((change, time)) => (Some(change), time),
                None => (None, None),
            },
            None => (None, None),
        };
        // An event is counted once it is read whole; a record that goes to
        // the error handler is counted there instead.
        let op = change.as_ref().map(|c| c.op);
        let row = match change {
            None => None,
            Some(change) => match change.op {
                Op::Truncate => {
                    self.counters.count(ctx, op);
                    return self.truncated(ctx);
                }
                Op::Message => {
                    self.counters.count(ctx, op);
                    ctx.metrics.record_skip(SkipReason::CdcMessage, &ctx.source.topic);
                    return Ok(None);
                }
                Op::Delete => None,
                Op::Create | Op::Update | Op::Read => change.after,
            },
        };
        let Some(key) = decode_key(&*self.keys, ctx, raw)? else {
            return Err(SerdeError::deserialize(
                &ctx.source.topic,
                "a change event with a null key: a table needs the primary key (read a keyless table with cdc_stream)",
            )
            .into());
        };
        self.counters.count(ctx, op);
        Ok(Some(Record::new(key, row, time.unwrap_or(raw.timestamp))))
    }
}

impl<K, Row> CdcTableDecoder<K, Row> {
    fn truncated<T>(&self, ctx: &mut ProcessorContext<'_>) -> Result<Option<T>, WeirError> {
        let source = ctx.source;
        match self.truncate {
            TruncatePolicy::Skip => {
                tracing::warn!(
                    topic = %source.topic, partition = source.partition, offset = source.offset,
                    "the table was truncated in the database; its rows stay in weir's table until they are \
                     deleted or re-snapshotted"
                );
                ctx.metrics.record_skip(SkipReason::CdcTruncate, &source.topic);
                Ok(None)
            }
            TruncatePolicy::Fail => Err(WeirError::Other(
                "the table was truncated in the database and the truncate policy is Fail".into(),
            )),
        }
    }
}

/// Decodes a Debezium topic into its change events, keyed by the (possibly
/// null) key. Tombstones carry no event; they are counted and dropped.
pub(crate) struct CdcStreamDecoder<K, Row> {
    pub keys: Arc<dyn KeyDecoder<K>>,
    pub events: Arc<dyn EventDecoder<Row>>,
    pub time: CdcTime,
    pub counters: CdcCounters,
}

impl<K: Clone + 'static, Row: Clone + 'static> Decode for CdcStreamDecoder<K, Row> {
    type Key = Option<K>;
    type Value = ChangeEvent<Row>;

    fn decode(&self, ctx: &mut ProcessorContext<'_>, raw: &InputRecord<'_>) -> Decoded<Option<K>, ChangeEvent<Row>> {
        let event = match raw.value {
            Some(bytes) => self
                .events
                .decode_event(&ctx.source.topic, bytes)
                .map_err(|e| e.prefixed("value"))?,
            None => None,
        };
        let Some(event) = event else {
            self.counters.count(ctx, None);
            return Ok(None);
        };
        let key = decode_key(&*self.keys, ctx, raw)?;
        self.counters.count(ctx, Some(event.op));
        let time = self.time.of(&event).unwrap_or(raw.timestamp);
        Ok(Some(Record::new(key, event, time)))
    }
}
