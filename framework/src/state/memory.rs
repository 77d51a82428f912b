//! A store that lives in a `BTreeMap`: fast, ordered, lost on restart
//! (its changelog restores it).

use super::{KeyValueStore, StoreSupplier};
use crate::error::StoreError;
use std::collections::BTreeMap;

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
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl InMemoryStore {
    pub fn new(name: impl Into<String>) -> Self {
        InMemoryStore {
            name: name.into(),
            entries: BTreeMap::new(),
        }
    }
}

impl KeyValueStore for InMemoryStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.entries.get(key).cloned())
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        match self.entries.get_mut(key) {
            Some(existing) => {
                existing.clear();
                existing.extend_from_slice(value);
            }
            None => {
                self.entries.insert(key.to_vec(), value.to_vec());
            }
        }
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.entries.remove(key);
        Ok(())
    }

    fn for_each(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StoreError> {
        self.entries.iter().for_each(|(k, v)| visit(k, v));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        Ok(())
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
