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

/// Why a record was not processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    /// Its key or value could not be deserialized; the error handler let it pass.
    DeserializationError,
    /// Its key or value could not be deserialized; it went to the dead-letter topic.
    DeadLettered,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::DeserializationError => "deserialization_error",
            SkipReason::DeadLettered => "dead_lettered",
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
}

impl TaskMetrics {
    pub(crate) fn record_skip(&mut self, reason: SkipReason, topic: &Arc<str>) {
        *self.skipped.entry((reason, topic.clone())).or_default() += 1;
        metrics::counter!(RECORDS_SKIPPED, "reason" => reason.as_str(), "topic" => topic.to_string()).increment(1);
        if reason == SkipReason::DeadLettered {
            metrics::counter!(RECORDS_DEAD_LETTERED, "topic" => topic.to_string()).increment(1);
        }
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
    }
}
