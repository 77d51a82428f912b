//! RocksDB-backed stores with one memory budget for the whole instance.
//!
//! Every store opened by one [`RocksDbStores`] shares a single LRU block
//! cache, and a write-buffer manager charges all memtables to that same
//! cache, so the instance's RocksDB memory stays near
//! `block_cache_bytes` however many tasks it runs. The write-ahead log is off:
//! the changelog topic is the durable copy, as in Kafka Streams.

use super::{KeyValueStore, StoreReader, StoreSize, StoreSupplier, StoreWrite};
use crate::error::StoreError;
use rocksdb::{BlockBasedOptions, Cache, IteratorMode, Options, WriteBatch, WriteBufferManager, WriteOptions, DB};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Memory sizes of the RocksDB backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RocksDbConfig {
    /// The block cache shared by all stores; memtables are charged to it too.
    pub block_cache_bytes: usize,
    /// The cap on all memtables of the instance (part of the cache budget).
    pub write_buffer_bytes: usize,
    /// The size of one memtable of one store.
    pub memtable_bytes: usize,
}

impl Default for RocksDbConfig {
    fn default() -> Self {
        RocksDbConfig {
            block_cache_bytes: 256 << 20,
            write_buffer_bytes: 128 << 20,
            memtable_bytes: 16 << 20,
        }
    }
}

/// Opens RocksDB stores under `<dir>/<task>/<store>`.
///
/// ```
/// use weir::state::{RocksDbConfig, RocksDbStores, StoreSupplier};
/// let dir = tempfile::tempdir().unwrap();
/// let stores = RocksDbStores::new(dir.path(), RocksDbConfig::default());
/// let mut store = stores.open("0_0", "users").unwrap();
/// store.put(b"u1", b"ada").unwrap();
/// assert_eq!(store.get(b"u1").unwrap(), Some(b"ada".to_vec()));
/// ```
pub struct RocksDbStores {
    dir: PathBuf,
    config: RocksDbConfig,
    cache: Cache,
    write_buffers: WriteBufferManager,
}

impl RocksDbStores {
    pub fn new(dir: impl AsRef<Path>, config: RocksDbConfig) -> Self {
        let cache = Cache::new_lru_cache(config.block_cache_bytes);
        let write_buffers =
            WriteBufferManager::new_write_buffer_manager_with_cache(config.write_buffer_bytes, false, cache.clone());
        RocksDbStores {
            dir: dir.as_ref().to_path_buf(),
            config,
            cache,
            write_buffers,
        }
    }

    fn options(&self) -> Options {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&self.cache);
        table.set_bloom_filter(10.0, false);
        table.set_cache_index_and_filter_blocks(true);
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_block_based_table_factory(&table);
        options.set_write_buffer_manager(&self.write_buffers);
        options.set_write_buffer_size(self.config.memtable_bytes);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        options
    }
}

// The cache and write-buffer manager are thread-safe RocksDB objects.
unsafe impl Sync for RocksDbStores {}
unsafe impl Send for RocksDbStores {}

impl StoreSupplier for RocksDbStores {
    fn open(&self, task_id: &str, store: &str) -> Result<Box<dyn KeyValueStore>, StoreError> {
        let path = self.dir.join(task_id).join(store);
        std::fs::create_dir_all(&path)
            .map_err(|e| StoreError::new(store, format!("cannot create {}: {e}", path.display())))?;
        let db = DB::open(&self.options(), &path)
            .map_err(|e| StoreError::new(store, format!("cannot open RocksDB at {}: {e}", path.display())))?;
        let mut write_options = WriteOptions::default();
        write_options.disable_wal(true);
        let db = Arc::new(db);
        Ok(Box::new(RocksDbStore {
            name: store.to_string(),
            reader: Arc::new(RocksDbReader {
                name: store.to_string(),
                db: RwLock::new(Some(db.clone())),
            }),
            db,
            write_options,
        }))
    }

    fn kind(&self) -> &'static str {
        "rocksdb"
    }

    fn persistent(&self) -> bool {
        true
    }
}

/// One RocksDB database holding one store of one task.
pub struct RocksDbStore {
    name: String,
    db: Arc<DB>,
    /// Handed to other threads; emptied when the store closes, so that the
    /// database closes with it and the task can open it again.
    reader: Arc<RocksDbReader>,
    write_options: WriteOptions,
}

impl Drop for RocksDbStore {
    fn drop(&mut self) {
        // Waits for reads in progress; later ones fail.
        let mut slot = self.reader.db.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        *slot = None;
    }
}

/// Reads a [`RocksDbStore`] from any thread while it is open.
struct RocksDbReader {
    name: String,
    db: RwLock<Option<Arc<DB>>>,
}

impl StoreReader for RocksDbReader {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let slot = self.db.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let db = slot
            .as_ref()
            .ok_or_else(|| StoreError::new(&self.name, "the store is closed"))?;
        let value = db.get_pinned(key).map_err(|e| StoreError::new(&self.name, e))?;
        Ok(value.map(|slice| slice.to_vec()))
    }
}

impl RocksDbStore {
    fn error(&self, e: rocksdb::Error) -> StoreError {
        StoreError::new(&self.name, e)
    }
}

impl KeyValueStore for RocksDbStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let pinned = self.db.get_pinned(key).map_err(|e| self.error(e))?;
        Ok(pinned.map(|slice| slice.to_vec()))
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.db
            .put_opt(key, value, &self.write_options)
            .map_err(|e| self.error(e))
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.db.delete_opt(key, &self.write_options).map_err(|e| self.error(e))
    }

    fn for_each(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StoreError> {
        for entry in self.db.iterator(IteratorMode::Start) {
            let (k, v) = entry.map_err(|e| self.error(e))?;
            visit(&k, &v);
        }
        Ok(())
    }

    fn for_each_with_prefix_from(
        &self,
        prefix: &[u8],
        from: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let from = IteratorMode::From(from, rocksdb::Direction::Forward);
        for entry in self.db.iterator(from) {
            let (k, v) = entry.map_err(|e| self.error(e))?;
            if !k.starts_with(prefix) || !visit(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.db.flush().map_err(|e| self.error(e))
    }

    fn write_batch(&mut self, writes: &mut dyn Iterator<Item = StoreWrite<'_>>) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for (key, value) in writes {
            match value {
                Some(value) => batch.put(key, value),
                None => batch.delete(key),
            }
        }
        self.db.write_opt(batch, &self.write_options).map_err(|e| self.error(e))
    }

    fn reader(&self) -> Arc<dyn StoreReader> {
        self.reader.clone()
    }

    fn size(&self) -> StoreSize {
        let property = |name: &str| self.db.property_int_value(name).ok().flatten().unwrap_or(0);
        StoreSize {
            entries: property("rocksdb.estimate-num-keys"),
            bytes: Some(property("rocksdb.total-sst-files-size") + property("rocksdb.cur-size-all-mem-tables")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_after_flush_and_iterates_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let stores = RocksDbStores::new(dir.path(), RocksDbConfig::default());
        {
            let mut store = stores.open("1_2", "s").unwrap();
            store.put(b"b", b"2").unwrap();
            store.put(b"a", b"1").unwrap();
            store.put(b"c", b"3").unwrap();
            store.delete(b"c").unwrap();
            let writes = [
                (&b"d"[..], Some(&b"4"[..])),
                (&b"b"[..], None),
                (&b"b"[..], Some(&b"2"[..])),
            ];
            store.write_batch(&mut writes.into_iter()).unwrap();
            store.flush().unwrap();
        }
        let store = stores.open("1_2", "s").unwrap();
        let reader = store.reader();
        assert_eq!(reader.get(b"d").unwrap(), Some(b"4".to_vec()));
        let mut seen = Vec::new();
        store.for_each(&mut |k, v| seen.push((k.to_vec(), v.to_vec()))).unwrap();
        assert_eq!(
            seen,
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"2".to_vec()),
                (b"d".to_vec(), b"4".to_vec())
            ]
        );
        assert!(dir.path().join("1_2").join("s").exists());
        drop(store);
        // A reader does not keep the database open: the store opens again.
        assert!(reader.get(b"d").unwrap_err().to_string().contains("closed"));
        stores.open("1_2", "s").unwrap();
    }

    #[test]
    fn size_estimates_entries_and_counts_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let stores = RocksDbStores::new(dir.path(), RocksDbConfig::default());
        let mut store = stores.open("0_0", "s").unwrap();
        for i in 0..100u32 {
            store.put(&i.to_be_bytes(), b"value").unwrap();
        }
        store.flush().unwrap();
        let size = store.size();
        assert_eq!(size.entries, 100);
        assert!(size.bytes.unwrap() > 0, "{size:?}");
    }
}
