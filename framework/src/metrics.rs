//! Metric names in one place, and the per-task counters behind them.
//!
//! weir reports through the [`metrics`] facade: install any recorder (for
//! example `metrics-exporter-prometheus`) to export them. Tasks also keep
//! their own counts so that tests and the test driver can read them.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Records dropped instead of processed, labelled by `reason` and `topic`.
pub const RECORDS_SKIPPED: &str = "weir_records_skipped_total";
/// Records sent to a dead-letter topic, labelled by source `topic`.
pub const RECORDS_DEAD_LETTERED: &str = "weir_records_dead_lettered_total";
/// Records processed by a task, labelled by source `topic`.
pub const RECORDS_PROCESSED: &str = "weir_records_processed_total";

/// Debezium change events read by CDC sources, labelled by `topic` and `op`
/// (`c`, `u`, `d`, `r`, `t`, `m`, or `tombstone`).
pub const CDC_EVENTS: &str = "weir_cdc_events_total";

/// The `op` labels of [`CDC_EVENTS`], in the order of [`CdcCounts`].
pub const CDC_OPS: [&str; 7] = ["c", "u", "d", "r", "t", "m", "tombstone"];

/// Events of one CDC topic per operation, indexed like [`CDC_OPS`].
pub type CdcCounts = [u64; 7];

/// Why a record was not processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    /// Its key or value could not be deserialized; the error handler let it pass.
    DeserializationError,
    /// Its key or value could not be deserialized; it went to the dead-letter topic.
    DeadLettered,
    /// A CDC table kept its rows on a truncate event.
    CdcTruncate,
    /// A CDC table has nothing to do with a logical decoding message.
    CdcMessage,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::DeserializationError => "deserialization_error",
            SkipReason::DeadLettered => "dead_lettered",
            SkipReason::CdcTruncate => "cdc_truncate",
            SkipReason::CdcMessage => "cdc_message",
        }
    }
}

/// The exported counter of records processed from one topic; tasks look it
/// up once per source, not per record.
pub(crate) fn processed_counter(topic: &str) -> metrics::Counter {
    metrics::counter!(RECORDS_PROCESSED, "topic" => topic.to_string())
}

/// Counters of one task.
#[derive(Debug, Default, Clone)]
pub struct TaskMetrics {
    pub processed: u64,
    pub skipped: BTreeMap<(SkipReason, Arc<str>), u64>,
    /// Change events per CDC topic.
    pub cdc_events: BTreeMap<Arc<str>, CdcCounts>,
}

impl TaskMetrics {
    pub(crate) fn record_skip(&mut self, reason: SkipReason, topic: &Arc<str>) {
        *self.skipped.entry((reason, topic.clone())).or_default() += 1;
        metrics::counter!(RECORDS_SKIPPED, "reason" => reason.as_str(), "topic" => topic.to_string()).increment(1);
        if reason == SkipReason::DeadLettered {
            metrics::counter!(RECORDS_DEAD_LETTERED, "topic" => topic.to_string()).increment(1);
        }
    }

    pub(crate) fn record_cdc_event(&mut self, topic: &Arc<str>, op_index: usize) {
        match self.cdc_events.get_mut(&**topic) {
            Some(counts) => counts[op_index] += 1,
            None => {
                let mut counts = CdcCounts::default();
                counts[op_index] = 1;
                self.cdc_events.insert(topic.clone(), counts);
            }
        }
    }

    /// Change events of one operation label (see [`CDC_OPS`]) over every topic.
    pub fn cdc_events_for(&self, op: &str) -> u64 {
        let Some(index) = CDC_OPS.iter().position(|o| *o == op) else {
            return 0;
        };
        self.cdc_events.values().map(|counts| counts[index]).sum()
    }

    /// All skips of one reason, over every topic.
    pub fn skipped_for(&self, reason: SkipReason) -> u64 {
        self.skipped
            .iter()
            .filter(|((r, _), _)| *r == reason)
            .map(|(_, n)| n)
            .sum()
    }

    pub(crate) fn merge(&mut self, other: &TaskMetrics) {
        self.processed += other.processed;
        for (key, n) in &other.skipped {
            *self.skipped.entry(key.clone()).or_default() += n;
        }
        for (topic, counts) in &other.cdc_events {
            let total = self.cdc_events.entry(topic.clone()).or_default();
            for (sum, n) in total.iter_mut().zip(counts) {
                *sum += n;
            }
        }
    }
}
