//! The per-partition gauges of a stream thread's tasks: consumer lag of
//! each input partition and the size of each store partition.

use crate::metrics::{CONSUMER_LAG, STORE_BYTES, STORE_ENTRIES};
use crate::state::StoreSize;

/// Sets an input partition's lag: its end as the consumer's last fetch saw
/// it minus the next offset to process.
pub(crate) fn set_lag(topic: &str, partition: i32, fetched_end: i64, next: i64) {
    lag_gauge(topic, partition).set((fetched_end - next).max(0) as f64);
}

/// Sets a store partition's size gauges.
pub(crate) fn set_store_size(store: &str, partition: i32, size: StoreSize) {
    let [entries, bytes] = store_gauges(store, partition);
    entries.set(size.entries as f64);
    if let Some(size_bytes) = size.bytes {
        bytes.set(size_bytes as f64);
    }
}

/// Zeroes the gauges of a task that leaves this instance (its next owner
/// reports them).
pub(crate) fn clear<'a>(partition: i32, inputs: impl Iterator<Item = &'a str>, stores: impl Iterator<Item = &'a str>) {
    for topic in inputs {
        lag_gauge(topic, partition).set(0.0);
    }
    for store in stores {
        store_gauges(store, partition).iter().for_each(|gauge| gauge.set(0.0));
    }
}

/// The consumer lag gauge of `topic[partition]`.
fn lag_gauge(topic: &str, partition: i32) -> metrics::Gauge {
    metrics::gauge!(CONSUMER_LAG, "topic" => topic.to_string(), "partition" => partition.to_string())
}

/// The entries and bytes gauges of a store's partition.
fn store_gauges(store: &str, partition: i32) -> [metrics::Gauge; 2] {
    let labels = [("store", store.to_string()), ("partition", partition.to_string())];
    [
        metrics::gauge!(STORE_ENTRIES, &labels),
        metrics::gauge!(STORE_BYTES, &labels),
    ]
}
