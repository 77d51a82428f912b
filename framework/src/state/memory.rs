//! A store that lives in a `BTreeMap`: fast, ordered, lost on restart
//! (its changelog restores it).

use super::{KeyValueStore, StoreReader, StoreSize, StoreSupplier};
use crate::error::StoreError;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

type Entries = BTreeMap<Vec<u8>, Vec<u8>>;

/// An in-memory [`KeyValueStore`].
///
/// ```
/// use weir::state::{InMemoryStore, KeyValueStore};
/// let mut store = InMemoryStore::new("counts");
/// store.put(b"k", b"1").unwrap();
/// assert_eq!(store.get(b"k").unwrap(), Some(b"1".to_vec()));
/// ```
#[derive(Debug, Default)]
pub struct InMemoryStore {
    name: String,
    /// Shared with readers; only the task writes, so the lock is never
    /// contended on the processing path.
    entries: Arc<RwLock<Entries>>,
}

impl InMemoryStore {
    pub fn new(name: impl Into<String>) -> Self {
        InMemoryStore {
            name: name.into(),
            entries: Arc::default(),
        }
    }

    fn entries(&self) -> RwLockReadGuard<'_, Entries> {
        read(&self.entries)
    }

    fn entries_mut(&mut self) -> RwLockWriteGuard<'_, Entries> {
        // A reader that panicked cannot have left the map half-written.
        self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn read(entries: &RwLock<Entries>) -> RwLockReadGuard<'_, Entries> {
    entries.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl KeyValueStore for InMemoryStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.entries().get(key).cloned())
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let mut entries = self.entries_mut();
        match entries.get_mut(key) {
            Some(existing) => {
                existing.clear();
                existing.extend_from_slice(value);
            }
            None => {
                entries.insert(key.to_vec(), value.to_vec());
            }
        }
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.entries_mut().remove(key);
        Ok(())
    }

    fn for_each(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StoreError> {
        self.entries().iter().for_each(|(k, v)| visit(k, v));
        Ok(())
    }

    fn for_each_with_prefix_from(
        &self,
        prefix: &[u8],
        from: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let entries = self.entries();
        let mut from_prefix = entries
            .range::<[u8], _>((std::ops::Bound::Included(from), std::ops::Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix));
        for (k, v) in &mut from_prefix {
            if !visit(k, v) {
                break;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    fn size(&self) -> StoreSize {
        StoreSize {
            entries: self.entries().len() as u64,
            bytes: None,
        }
    }

    fn reader(&self) -> Arc<dyn StoreReader> {
        Arc::new(InMemoryReader(Arc::downgrade(&self.entries), self.name.clone()))
    }
}

/// Reads an [`InMemoryStore`] until the store is dropped.
struct InMemoryReader(std::sync::Weak<RwLock<Entries>>, String);

impl StoreReader for InMemoryReader {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let entries = self
            .0
            .upgrade()
            .ok_or_else(|| StoreError::new(&self.1, "the store is closed"))?;
        let value = read(&entries).get(key).cloned();
        Ok(value)
    }
}

/// Supplies an [`InMemoryStore`] per task and store.
#[derive(Debug, Default, Clone, Copy)]
pub struct InMemoryStores;

impl StoreSupplier for InMemoryStores {
    fn open(&self, _task_id: &str, store: &str) -> Result<Box<dyn KeyValueStore>, StoreError> {
        Ok(Box::new(InMemoryStore::new(store)))
    }

    fn kind(&self) -> &'static str {
        "in-memory"
    }

    fn persistent(&self) -> bool {
        false
    }
}
