//! Stores for the simulation that behave like RocksDB with its write-ahead
//! log off: what a store held at its last flush survives the member's
//! crash (its task directory stays), anything later is lost; a deleted task
//! directory takes the store with it. Like RocksDB's `LOCK`, a store open
//! in one member cannot be opened by another on the same directory.

use crate::error::StoreError;
use crate::state::{InMemoryStore, KeyValueStore, StoreReader, StoreSize, StoreSupplier};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

type Entries = BTreeMap<Vec<u8>, Vec<u8>>;

/// The stores of a state directory, by task directory and store name;
/// shared across the incarnations of the slots on the directory.
pub(super) type Disk = Arc<Mutex<DiskState>>;

#[derive(Default)]
pub(super) struct DiskState {
    /// What each store held at its last flush.
    flushed: HashMap<(PathBuf, String), Entries>,
    /// The stores open now.
    open: HashSet<(PathBuf, String)>,
}

pub(super) struct SimStores {
    pub app_dir: PathBuf,
    pub disk: Disk,
}

impl StoreSupplier for SimStores {
    fn open(&self, task_id: &str, store: &str) -> Result<Box<dyn KeyValueStore>, StoreError> {
        let dir = self.app_dir.join(task_id);
        let key = (dir.clone(), store.to_string());
        let mut disk = self.disk.lock().unwrap_or_else(|p| p.into_inner());
        if disk.open.contains(&key) {
            return Err(StoreError::new(
                store,
                std::io::Error::other(format!("{}: lock held by another open of the store", dir.display())),
            ));
        }
        if !dir.exists() {
            disk.flushed.remove(&key);
            std::fs::create_dir_all(&dir).map_err(|e| StoreError::new(store, e))?;
        }
        let mut memory = InMemoryStore::new(store);
        for (k, v) in disk.flushed.get(&key).into_iter().flatten() {
            memory.put(k, v)?;
        }
        disk.open.insert(key.clone());
        Ok(Box::new(SimStore {
            memory,
            key,
            disk: self.disk.clone(),
        }))
    }

    fn kind(&self) -> &'static str {
        "simulated"
    }

    fn persistent(&self) -> bool {
        true
    }
}

struct SimStore {
    memory: InMemoryStore,
    key: (PathBuf, String),
    disk: Disk,
}

impl KeyValueStore for SimStore {
    fn name(&self) -> &str {
        self.memory.name()
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.memory.get(key)
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.memory.put(key, value)
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.memory.delete(key)
    }

    fn for_each(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StoreError> {
        self.memory.for_each(visit)
    }

    fn for_each_with_prefix_from(
        &self,
        prefix: &[u8],
        from: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        self.memory.for_each_with_prefix_from(prefix, from, visit)
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        let mut entries = Entries::new();
        self.memory.for_each(&mut |k, v| {
            entries.insert(k.to_vec(), v.to_vec());
        })?;
        self.disk
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .flushed
            .insert(self.key.clone(), entries);
        Ok(())
    }

    fn reader(&self) -> Arc<dyn StoreReader> {
        self.memory.reader()
    }

    fn size(&self) -> StoreSize {
        self.memory.size()
    }
}

impl Drop for SimStore {
    fn drop(&mut self) {
        self.disk
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .open
            .remove(&self.key);
    }
}
