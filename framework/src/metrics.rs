//! Metric names in one place, and the per-task counters behind them.
//!
//! weir reports through the [`metrics`] facade: install any recorder (for
//! example `metrics-exporter-prometheus`) to export them. Tasks also keep
//! their own counts so that tests and the test driver can read them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Records dropped instead of processed, labelled by `reason` and `topic`.
pub const RECORDS_SKIPPED: &str = "weir_records_skipped_total";
/// Records sent to a dead-letter topic, labelled by source `topic`.
pub const RECORDS_DEAD_LETTERED: &str = "weir_records_dead_lettered_total";
/// Records processed by a task, labelled by source `topic`.
pub const RECORDS_PROCESSED: &str = "weir_records_processed_total";
/// Records written by a task's sinks (outputs and repartition topics, not
/// changelogs or dead letters), labelled by `topic`.
pub const RECORDS_PRODUCED: &str = "weir_records_produced_total";

/// Records each processor node passed to its children, labelled by `node`
/// (its name in `describe()`); a node's input is its parents' output.
pub const NODE_RECORDS_FORWARDED: &str = "weir_node_records_forwarded_total";
/// Answers a foreign-key join dropped because the left row had changed
/// since it asked (labelled `join`): expected while a row changes quickly.
pub const FK_JOIN_STALE_RESPONSES: &str = "weir_fk_join_stale_responses_total";
/// Records of an assigned partition not processed yet (the partition's end
/// minus the next offset to process), labelled by `topic` and `partition`;
/// reported from the first processed record of the partition, 0 once it
/// moves to another instance.
pub const CONSUMER_LAG: &str = "weir_consumer_lag_records";
/// Entries of a store partition (RocksDB's estimate), labelled by `store`
/// and `partition`.
pub const STORE_ENTRIES: &str = "weir_store_entries";
/// Bytes of a store partition on disk and in memtables (RocksDB stores
/// only), labelled by `store` and `partition`.
pub const STORE_BYTES: &str = "weir_store_bytes";

/// Changelog records written back into stores, labelled by `store`.
pub const RESTORED_RECORDS: &str = "weir_restore_records_total";
/// Changelog records left to restore, labelled by `store` (0 once done).
pub const RESTORE_REMAINING: &str = "weir_restore_remaining_records";
/// Offset resets of a consumed partition (librdkafka read it from its
/// beginning or end because its position was out of range), labelled by
/// `topic` and `partition`.
pub const OFFSET_RESETS: &str = "weir_offset_resets_total";
/// Commits of an instance (offsets, or transactions under exactly-once).
pub const COMMITS: &str = "weir_commits_total";
/// How long each commit took, in seconds.
pub const COMMIT_SECONDS: &str = "weir_commit_seconds";
/// Partition assignments and revocations an instance went through.
pub const REBALANCES: &str = "weir_rebalances_total";
/// Tasks an instance runs now.
pub const ACTIVE_TASKS: &str = "weir_active_tasks";

/// Calls an enrichment made to its service, retries included; every
/// enrichment metric is labelled by `enrichment` (its name).
pub const ENRICH_CALLS: &str = "weir_enrich_calls_total";
/// Records an enrichment answered from its cache.
pub const ENRICH_CACHE_HITS: &str = "weir_enrich_cache_hits_total";
/// Calls that retried a failed one.
pub const ENRICH_RETRIES: &str = "weir_enrich_retries_total";
/// Records whose enrichment failed for good (dead-lettered or fatal).
pub const ENRICH_FAILURES: &str = "weir_enrich_failures_total";
/// Calls under way.
pub const ENRICH_IN_FLIGHT: &str = "weir_enrich_in_flight";
/// Records waiting for enrichment.
pub const ENRICH_BUFFERED: &str = "weir_enrich_buffered";
/// The circuit breaker: 0 closed, 1 open, 2 half-open.
pub const ENRICH_BREAKER_STATE: &str = "weir_enrich_breaker_state";
/// How long each call took, in seconds.
pub const ENRICH_LATENCY_SECONDS: &str = "weir_enrich_latency_seconds";

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
    /// Its enrichment failed for good; it went to the dead-letter topic.
    EnrichmentDeadLettered,
    /// An output record that could not be serialized or that the brokers
    /// refused; the production error handler let it pass (the topic label
    /// names the output topic).
    ProductionError,
    /// The same, sent to the dead-letter topic.
    ProductionDeadLettered,
    /// It came after its window closed (a windowed aggregation, a
    /// suppression, a stream-stream join).
    LateRecord,
    /// A windowed aggregation cannot place a negative timestamp in a window.
    NegativeTimestamp,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::DeserializationError => "deserialization_error",
            SkipReason::DeadLettered => "dead_lettered",
            SkipReason::CdcTruncate => "cdc_truncate",
            SkipReason::CdcMessage => "cdc_message",
            SkipReason::EnrichmentDeadLettered => "enrichment_dead_lettered",
            SkipReason::ProductionError => "production_error",
            SkipReason::ProductionDeadLettered => "production_dead_lettered",
            SkipReason::LateRecord => "late_record",
            SkipReason::NegativeTimestamp => "negative_timestamp",
        }
    }
}

/// The exported counter of records processed from one topic; tasks look it
/// up once per source, not per record.
pub(crate) fn processed_counter(topic: &str) -> metrics::Counter {
    metrics::counter!(RECORDS_PROCESSED, "topic" => topic.to_string())
}

/// The exported counter of records one sink writes to `topic`.
pub(crate) fn produced_counter(topic: &str) -> metrics::Counter {
    metrics::counter!(RECORDS_PRODUCED, "topic" => topic.to_string())
}

/// Counters of one task.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TaskMetrics {
    pub processed: u64,
    pub skipped: BTreeMap<(SkipReason, Arc<str>), u64>,
    /// Change events per CDC topic.
    pub cdc_events: BTreeMap<Arc<str>, CdcCounts>,
}

impl TaskMetrics {
    pub(crate) fn record_skip(&mut self, reason: SkipReason, topic: &Arc<str>) {
        *self.skipped.entry((reason, topic.clone())).or_default() += 1;
        export_skip(reason, topic);
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

/// Counts a skip in the exported counters.
fn export_skip(reason: SkipReason, topic: &str) {
    metrics::counter!(RECORDS_SKIPPED, "reason" => reason.as_str(), "topic" => topic.to_string()).increment(1);
    if matches!(
        reason,
        SkipReason::DeadLettered | SkipReason::EnrichmentDeadLettered | SkipReason::ProductionDeadLettered
    ) {
        metrics::counter!(RECORDS_DEAD_LETTERED, "topic" => topic.to_string()).increment(1);
    }
}

/// Counters of a running instance, shared by its stream threads and the
/// [`KafkaStreams`](crate::runtime::KafkaStreams) handle, and exported
/// through the [`metrics`] facade as they change.
#[derive(Debug, Default)]
pub struct RuntimeMetrics {
    processed: AtomicU64,
    commits: AtomicU64,
    rebalances: AtomicU64,
    restored: Mutex<BTreeMap<String, u64>>,
    /// Per stream thread (by index): its active tasks and their counters.
    threads: Mutex<BTreeMap<usize, (u64, TaskMetrics)>>,
    /// Skips outside tasks: output records the brokers refused.
    skipped: Mutex<BTreeMap<(SkipReason, Arc<str>), u64>>,
}

/// A copy of an instance's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeSnapshot {
    /// Input records processed since the instance started.
    pub processed: u64,
    pub commits: u64,
    pub rebalances: u64,
    pub active_tasks: u64,
    /// Changelog records restored into each store since the instance started.
    pub restored: BTreeMap<String, u64>,
    /// The counters of every task the instance ran, as of its last commit.
    pub tasks: TaskMetrics,
}

impl RuntimeSnapshot {
    /// Changelog records restored into all stores.
    pub fn restored_total(&self) -> u64 {
        self.restored.values().sum()
    }
}

impl RuntimeMetrics {
    pub fn snapshot(&self) -> RuntimeSnapshot {
        let threads = self.threads();
        let mut tasks = TaskMetrics::default();
        threads.values().for_each(|(_, thread_tasks)| tasks.merge(thread_tasks));
        for (key, n) in self.skipped.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            *tasks.skipped.entry(key.clone()).or_default() += n;
        }
        RuntimeSnapshot {
            processed: self.processed.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            rebalances: self.rebalances.load(Ordering::Relaxed),
            active_tasks: threads.values().map(|(active, _)| active).sum(),
            restored: self.restored.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            tasks,
        }
    }

    fn threads(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, (u64, TaskMetrics)>> {
        self.threads.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn processed(&self, records: u64) {
        self.processed.fetch_add(records, Ordering::Relaxed);
    }

    pub(crate) fn committed(&self, took: Duration) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(COMMITS).increment(1);
        metrics::histogram!(COMMIT_SECONDS).record(took.as_secs_f64());
    }

    /// Stream thread `thread` now runs `active_tasks` tasks.
    pub(crate) fn rebalanced(&self, thread: usize, active_tasks: usize) {
        self.rebalances.fetch_add(1, Ordering::Relaxed);
        let mut threads = self.threads();
        threads.entry(thread).or_default().0 = active_tasks as u64;
        let total: u64 = threads.values().map(|(active, _)| active).sum();
        metrics::counter!(REBALANCES).increment(1);
        metrics::gauge!(ACTIVE_TASKS).set(total as f64);
    }

    /// Counts `records` restored into `store`, with `remaining` still to come.
    pub(crate) fn restored(&self, store: &str, records: u64, remaining: u64) {
        *self
            .restored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(store.to_string())
            .or_default() += records;
        metrics::counter!(RESTORED_RECORDS, "store" => store.to_string()).increment(records);
        metrics::gauge!(RESTORE_REMAINING, "store" => store.to_string()).set(remaining as f64);
    }

    /// Counts a record skipped outside a task (a refused output record).
    pub(crate) fn skipped(&self, reason: SkipReason, topic: &str) {
        *self
            .skipped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((reason, Arc::from(topic)))
            .or_default() += 1;
        export_skip(reason, topic);
    }

    /// Replaces the task counters of stream thread `thread` in the snapshot.
    pub(crate) fn set_tasks(&self, thread: usize, tasks: TaskMetrics) {
        self.threads().entry(thread).or_default().1 = tasks;
    }
}
