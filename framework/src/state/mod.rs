//! State stores: where tasks keep tables and aggregates.
//!
//! The layers, from the bottom:
//! - [`KeyValueStore`]: an ordered byte map; [`InMemoryStore`] and
//!   [`RocksDbStore`] implement it. Its [`StoreReader`] reads it from other
//!   threads (interactive queries) while the task writes.
//! - [`StoreSupplier`]: opens one store per task and store name; this is
//!   where the backend and its memory budget are chosen.
//! - `StoreCache` (crate-internal): recent reads, the current batch's
//!   writes and (with `statestore.cache.merge`) a table's changes deferred
//!   until the task's next commit, in front of a store, within a
//!   per-thread budget (`statestore.cache.max.bytes`).
//! - `StoreHandle` (crate-internal): a task's store, its cache and its
//!   changelog; every write through it is also sent to
//!   `<application.id>-<store>-changelog`.
//! - `TypedStore` (crate-internal): keys and values as Rust types, through
//!   the serdes the DSL was given.

mod cache;
pub(crate) mod handle;
mod memory;
mod rocksdb;

pub use cache::CacheBudget;
pub(crate) use handle::{StoreHandle, TypedStore};
pub use memory::{InMemoryStore, InMemoryStores};
pub use rocksdb::{RocksDbConfig, RocksDbStore, RocksDbStores};

use crate::error::StoreError;
use std::sync::Arc;

/// An ordered map of bytes to bytes, owned by one task.
pub trait KeyValueStore {
    /// The store's name in the topology.
    fn name(&self) -> &str;
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    fn delete(&mut self, key: &[u8]) -> Result<(), StoreError>;
    /// Visits every entry in key order.
    fn for_each(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StoreError>;
    /// Visits, in key order, the entries whose keys start with `prefix`,
    /// until `visit` returns `false`.
    fn for_each_with_prefix(
        &self,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        self.for_each_with_prefix_from(prefix, prefix, visit)
    }
    /// [`KeyValueStore::for_each_with_prefix`], starting at the first key
    /// at or after `from` (which starts with `prefix`); backends override
    /// it to seek there, past the entries (and deletions) before it,
    /// instead of scanning everything.
    fn for_each_with_prefix_from(
        &self,
        prefix: &[u8],
        from: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let mut going = true;
        self.for_each(&mut |key, value| {
            if going && key.starts_with(prefix) && key >= from {
                going = visit(key, value);
            }
        })
    }
    /// Makes every write so far durable in the backend.
    fn flush(&mut self) -> Result<(), StoreError>;
    /// A handle that reads this store from any thread while the task keeps
    /// writing; once the store is closed, its reads fail.
    fn reader(&self) -> Arc<dyn StoreReader>;
    /// How big the store is now, cheaply (estimates where the backend has them).
    fn size(&self) -> StoreSize;

    /// Applies many writes at once (`None` deletes), as a restore does;
    /// backends override it to write them in one batch.
    fn write_batch(&mut self, writes: &mut dyn Iterator<Item = StoreWrite<'_>>) -> Result<(), StoreError> {
        for (key, value) in writes {
            match value {
                Some(value) => self.put(key, value)?,
                None => self.delete(key)?,
            }
        }
        Ok(())
    }
}

/// A store's size, as [`KeyValueStore::size`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreSize {
    pub entries: u64,
    /// Bytes on disk and in memory, where the backend knows them cheaply.
    pub bytes: Option<u64>,
}

/// Reads a task's store from another thread, as interactive queries do.
pub trait StoreReader: Send + Sync {
    /// The value of `key` now; an error once the store is closed.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
}

/// One write of a batch: a key and its new value, `None` to delete it.
pub type StoreWrite<'a> = (&'a [u8], Option<&'a [u8]>);

/// Opens the stores of tasks. One supplier serves a whole instance, so a
/// backend can share memory (caches, write buffers) between all its stores.
pub trait StoreSupplier: Send + Sync {
    /// Opens (creating if needed) the store `store` of task `task_id`.
    fn open(&self, task_id: &str, store: &str) -> Result<Box<dyn KeyValueStore>, StoreError>;
    /// A short name for logs and `describe()`.
    fn kind(&self) -> &'static str;
    /// Whether stores keep their contents on disk across restarts, so that a
    /// restore can start from a checkpoint instead of the changelog's start.
    fn persistent(&self) -> bool;
}
