//! The record cache in front of each store: recently read values, so that a
//! join or an aggregation looking up the same keys again does not search
//! RocksDB's memtables each time; the writes of the current batch of
//! records, which reach the store together as one write batch; and, for a
//! store that keeps a table, the table's changes not yet passed on.
//!
//! Writes are cached only until the end of the batch of records being
//! processed (the stream thread writes them back before it commits, and
//! after every poll batch), so the store, its readers on other threads
//! (interactive queries) and its checkpoint see them shortly after, and a
//! flush always covers them.
//!
//! With `statestore.cache.merge`, a table's change is *deferred* instead
//! of passed on at once (as Kafka Streams' caching stores do): the cache
//! remembers the value downstream was last told, and the task releases the
//! deferred changes at its next commit, or sooner when they outgrow their
//! half of the store's share of the budget.
//! Consecutive updates of a key in between go downstream, and to the
//! changelog, as one change from the value last passed on to the latest;
//! an update that ends where it started goes nowhere.
//!
//! Reads are kept in two generations: a hit in the older one moves the
//! entry to the newer, and when the newer one outgrows half the store's
//! share of the budget (a quarter when deferred changes take the other
//! half), the older is dropped and the newer takes its place. That keeps what is read often at the cost of a map lookup,
//! within the budget, without the bookkeeping of an exact LRU.

use super::{KeyValueStore, StoreWrite};
use crate::error::StoreError;
use crate::record::SourceMetadata;
use indexmap::IndexMap;
use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;

/// Keys come from outside (CDC row keys), so the hasher is seeded per
/// process, and fast.
type Map<V> = HashMap<Box<[u8]>, V, foldhash::fast::RandomState>;

/// A cached value: `None` when the store has no value for the key.
type Value = Option<Box<[u8]>>;

/// What an entry is taken to cost besides its key and value bytes: the
/// map's slot and the two allocations' headers.
const ENTRY_OVERHEAD: usize = 64;

/// The cache memory of one stream thread, shared evenly by the stores its
/// tasks have open. The runtime makes one per thread from
/// `statestore.cache.max.bytes`; tasks made by hand take one in
/// [`crate::runtime::TaskSettings`].
///
/// ```
/// let budget = weir::state::CacheBudget::new(16 << 20, false);
/// # let _ = budget;
/// ```
#[derive(Debug)]
pub struct CacheBudget {
    bytes: usize,
    /// Whether tables' changes are deferred and merged (half the budget).
    merges: bool,
    stores: Cell<usize>,
}

impl CacheBudget {
    /// A budget of `bytes` for one thread's stores; 0 caches nothing. With
    /// `merge_table_changes` (`statestore.cache.merge`), half of it holds
    /// tables' changes until the task's next commit, merged per key;
    /// without, every table change is passed on at once.
    pub fn new(bytes: usize, merge_table_changes: bool) -> Rc<CacheBudget> {
        Rc::new(CacheBudget {
            bytes,
            merges: merge_table_changes,
            stores: Cell::new(0),
        })
    }

    fn per_store(&self) -> usize {
        self.bytes / self.stores.get().max(1)
    }
}

/// A table's change not yet passed on: the value downstream was last told,
/// and where the latest write of the key came from.
struct Deferred {
    forwarded: Value,
    timestamp: i64,
    source: SourceMetadata,
}

/// A deferred change, released: what downstream was last told of `key`
/// (`old`), the store's value now (`new`), and the latest write's record.
#[derive(Debug)]
pub(crate) struct Released {
    pub key: Box<[u8]>,
    pub old: Value,
    pub new: Value,
    pub timestamp: i64,
    pub source: SourceMetadata,
}

/// The cache of one store of one task.
pub(crate) struct StoreCache {
    /// Writes not yet in the store; they shadow everything else.
    pending: Map<Value>,
    newer: Map<Value>,
    older: Map<Value>,
    newer_bytes: usize,
    /// In the order their keys were first deferred, which is the order
    /// they are released in.
    deferred: IndexMap<Box<[u8]>, Deferred, foldhash::fast::RandomState>,
    deferred_bytes: usize,
    budget: Rc<CacheBudget>,
}

impl StoreCache {
    pub(crate) fn new(budget: Rc<CacheBudget>) -> Self {
        budget.stores.set(budget.stores.get() + 1);
        StoreCache {
            pending: Map::default(),
            newer: Map::default(),
            older: Map::default(),
            newer_bytes: 0,
            deferred: IndexMap::default(),
            deferred_bytes: 0,
            budget,
        }
    }

    /// Whether table changes are deferred: only with a merging budget of
    /// more than 0.
    pub(crate) fn defers(&self) -> bool {
        self.budget.merges && self.budget.bytes > 0
    }

    /// Calls `read` with `key`'s value, from the cache or else from `store`
    /// (then cached).
    pub(crate) fn get<R>(
        &mut self,
        store: &dyn KeyValueStore,
        key: &[u8],
        read: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R, StoreError> {
        if let Some(value) = self.pending.get(key).or_else(|| self.newer.get(key)) {
            return Ok(read(value.as_deref()));
        }
        let value = match self.older.remove_entry(key) {
            Some((key, value)) => {
                let result = read(value.as_deref());
                self.remember(key, value);
                return Ok(result);
            }
            None => store.get(key)?.map(Vec::into_boxed_slice),
        };
        let result = read(value.as_deref());
        self.remember(key.into(), value);
        Ok(result)
    }

    /// Calls `read` with the value of `key` that downstream was last told:
    /// the latest, unless a change of it is deferred.
    pub(crate) fn get_forwarded<R>(
        &mut self,
        store: &dyn KeyValueStore,
        key: &[u8],
        read: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R, StoreError> {
        match self.deferred.get(key) {
            Some(deferred) => Ok(read(deferred.forwarded.as_deref())),
            None => self.get(store, key, read),
        }
    }

    /// Takes a write; it reaches the store at the next write-back.
    pub(crate) fn write(&mut self, key: &[u8], value: Option<&[u8]>) {
        self.pending.insert(key.into(), value.map(Into::into));
    }

    /// Takes a write of a table whose change is deferred until
    /// [`StoreCache::release`]; `timestamp` and `source` are the record's
    /// that wrote it.
    pub(crate) fn defer(
        &mut self,
        store: &dyn KeyValueStore,
        key: &[u8],
        value: Option<&[u8]>,
        timestamp: i64,
        source: &SourceMetadata,
    ) -> Result<(), StoreError> {
        match self.deferred.get_mut(key) {
            Some(deferred) => {
                deferred.timestamp = timestamp;
                deferred.source.clone_from(source);
            }
            None => {
                let forwarded: Value = self.get(store, key, |value| value.map(Box::from))?;
                // The key twice (here and pending), the value passed on and
                // the latest one.
                self.deferred_bytes += 2 * key.len()
                    + forwarded.as_ref().map_or(0, |v| v.len())
                    + value.map_or(0, <[u8]>::len)
                    + 2 * ENTRY_OVERHEAD;
                let deferred = Deferred {
                    forwarded,
                    timestamp,
                    source: source.clone(),
                };
                self.deferred.insert(key.into(), deferred);
            }
        }
        self.write(key, value);
        Ok(())
    }

    /// Whether the deferred changes have outgrown their half of the
    /// store's share of the budget, so that they should be released now.
    pub(crate) fn deferred_full(&self) -> bool {
        self.deferred_bytes > self.budget.per_store() / 2
    }

    /// Takes every deferred change, in the order its key was first
    /// deferred, leaving out those whose key ended where it started.
    pub(crate) fn release(&mut self, store: &dyn KeyValueStore) -> Result<Vec<Released>, StoreError> {
        let deferred = std::mem::take(&mut self.deferred);
        self.deferred_bytes = 0;
        let mut released = Vec::with_capacity(deferred.len());
        for (key, deferred) in deferred {
            let new = self.get(store, &key, |value| value.map(Box::from))?;
            if new != deferred.forwarded {
                released.push(Released {
                    key,
                    old: deferred.forwarded,
                    new,
                    timestamp: deferred.timestamp,
                    source: deferred.source,
                });
            }
        }
        Ok(released)
    }

    /// Writes the pending writes to `store` in one batch; they stay cached
    /// as recent reads.
    pub(crate) fn write_back(&mut self, store: &mut dyn KeyValueStore) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut pending: Vec<_> = std::mem::take(&mut self.pending).into_iter().collect();
        // In key order, RocksDB finds each key's place in its memtable next
        // to the previous one's instead of searching from the top.
        pending.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
        let mut writes = pending
            .iter()
            .map(|(key, value)| -> StoreWrite<'_> { (key, value.as_deref()) });
        store.write_batch(&mut writes)?;
        for (key, value) in pending {
            self.older.remove(&key);
            self.remember(key, value);
        }
        Ok(())
    }

    /// Forgets every cached read, after the store was written around the
    /// cache (a restore). Pending writes must have been written back, and
    /// no change may be deferred.
    pub(crate) fn forget_reads(&mut self) {
        debug_assert!(
            self.pending.is_empty() && self.deferred.is_empty(),
            "writes were pending or deferred while the store was restored"
        );
        self.newer = Map::default();
        self.older = Map::default();
        self.newer_bytes = 0;
    }

    fn remember(&mut self, key: Box<[u8]>, value: Value) {
        let share = self.budget.per_store();
        if share == 0 {
            return;
        }
        let value_len = value.as_ref().map_or(0, |v| v.len());
        let key_len = key.len();
        match self.newer.insert(key, value) {
            Some(replaced) => self.newer_bytes = self.newer_bytes - replaced.map_or(0, |v| v.len()) + value_len,
            None => self.newer_bytes += key_len + value_len + ENTRY_OVERHEAD,
        }
        // Two generations of reads: each half the share, or a quarter when
        // deferred changes take the other half.
        let generation = if self.budget.merges { share / 4 } else { share / 2 };
        if self.newer_bytes > generation {
            self.older = std::mem::take(&mut self.newer);
            self.newer_bytes = 0;
        }
    }
}

impl Drop for StoreCache {
    fn drop(&mut self) {
        self.budget.stores.set(self.budget.stores.get() - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::InMemoryStore;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// A store that counts its reads and batches.
    struct Counting {
        inner: InMemoryStore,
        reads: Cell<usize>,
        batches: usize,
    }

    impl KeyValueStore for Counting {
        fn name(&self) -> &str {
            "counting"
        }
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.reads.set(self.reads.get() + 1);
            self.inner.get(key)
        }
        fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
            self.inner.put(key, value)
        }
        fn delete(&mut self, key: &[u8]) -> Result<(), StoreError> {
            self.inner.delete(key)
        }
        fn for_each(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StoreError> {
            self.inner.for_each(visit)
        }
        fn flush(&mut self) -> Result<(), StoreError> {
            Ok(())
        }
        fn reader(&self) -> std::sync::Arc<dyn crate::state::StoreReader> {
            self.inner.reader()
        }
        fn size(&self) -> crate::state::StoreSize {
            self.inner.size()
        }
        fn write_batch(&mut self, writes: &mut dyn Iterator<Item = StoreWrite<'_>>) -> Result<(), StoreError> {
            self.batches += 1;
            self.inner.write_batch(writes)
        }
    }

    fn counting() -> Counting {
        Counting {
            inner: InMemoryStore::new("counting"),
            reads: Cell::new(0),
            batches: 0,
        }
    }

    fn read(cache: &mut StoreCache, store: &Counting, key: &[u8]) -> Option<Vec<u8>> {
        cache.get(store, key, |v| v.map(<[u8]>::to_vec)).unwrap()
    }

    #[test]
    fn a_batch_of_writes_reaches_the_store_at_once_and_reads_hit_the_cache() {
        let mut store = counting();
        let mut cache = StoreCache::new(CacheBudget::new(1 << 20, false));
        cache.write(b"a", Some(b"1"));
        cache.write(b"b", Some(b"2"));
        cache.write(b"a", None);
        assert_eq!(read(&mut cache, &store, b"b"), Some(b"2".to_vec()));
        assert_eq!(read(&mut cache, &store, b"a"), None);
        assert_eq!(store.inner.get(b"b").unwrap(), None, "not written back yet");
        cache.write_back(&mut store).unwrap();
        assert_eq!(store.batches, 1);
        assert_eq!(store.inner.get(b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(store.inner.get(b"a").unwrap(), None);
        assert_eq!(read(&mut cache, &store, b"b"), Some(b"2".to_vec()));
        assert_eq!(read(&mut cache, &store, b"c"), None);
        assert_eq!(read(&mut cache, &store, b"c"), None);
        assert_eq!(store.reads.get(), 1, "only c's first read reached the store");
    }

    #[test]
    fn the_stores_of_a_thread_share_its_budget() {
        let budget = CacheBudget::new(1000, false);
        let first = StoreCache::new(budget.clone());
        assert_eq!(budget.per_store(), 1000);
        let second = StoreCache::new(budget.clone());
        assert_eq!(budget.per_store(), 500);
        drop(first);
        drop(second);
        assert_eq!(budget.stores.get(), 0);
    }

    fn source(offset: i64) -> SourceMetadata {
        SourceMetadata {
            topic: "input".into(),
            partition: 0,
            offset,
        }
    }

    #[test]
    fn deferred_changes_of_a_key_are_released_as_one_from_the_value_last_passed_on() {
        let mut store = counting();
        store.inner.put(b"a", b"0").unwrap();
        let mut cache = StoreCache::new(CacheBudget::new(1 << 20, true));
        cache.defer(&store, b"a", Some(b"1"), 10, &source(0)).unwrap();
        cache.defer(&store, b"b", Some(b"5"), 11, &source(1)).unwrap();
        cache.defer(&store, b"a", Some(b"2"), 12, &source(2)).unwrap();
        cache.defer(&store, b"c", Some(b"7"), 13, &source(3)).unwrap();
        cache.defer(&store, b"c", None, 14, &source(4)).unwrap();
        let forwarded =
            |cache: &mut StoreCache, key: &[u8]| cache.get_forwarded(&store, key, |v| v.map(<[u8]>::to_vec)).unwrap();
        assert_eq!(
            forwarded(&mut cache, b"a"),
            Some(b"0".to_vec()),
            "downstream still knows 0"
        );
        assert_eq!(
            read(&mut cache, &store, b"a"),
            Some(b"2".to_vec()),
            "readers see the latest"
        );
        let released = cache.release(&store).unwrap();
        let summary: Vec<_> = released
            .iter()
            .map(|r| {
                (
                    r.key.to_vec(),
                    r.old.as_deref().map(<[u8]>::to_vec),
                    r.new.as_deref().map(<[u8]>::to_vec),
                    r.timestamp,
                    r.source.offset,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (b"a".to_vec(), Some(b"0".to_vec()), Some(b"2".to_vec()), 12, 2),
                (b"b".to_vec(), None, Some(b"5".to_vec()), 11, 1),
            ],
            "c was created and deleted in between: nothing to pass on"
        );
        assert_eq!(forwarded(&mut cache, b"a"), Some(b"2".to_vec()));
        assert!(cache.release(&store).unwrap().is_empty());
    }

    #[test]
    fn deferred_changes_outgrow_half_the_share_of_the_budget() {
        let store = counting();
        let mut cache = StoreCache::new(CacheBudget::new(2_000, true));
        let mut key = 0u32;
        while !cache.deferred_full() {
            cache
                .defer(&store, &key.to_be_bytes(), Some(&[0; 20]), 0, &source(0))
                .unwrap();
            key += 1;
        }
        assert!((5..=15).contains(&key), "{key} changes of about 100 bytes filled 1,000");
        cache.release(&store).unwrap();
        assert!(!cache.deferred_full());
        assert!(
            !StoreCache::new(CacheBudget::new(0, true)).defers(),
            "a budget of 0 passes every change on"
        );
        assert!(
            !StoreCache::new(CacheBudget::new(2_000, false)).defers(),
            "so does one that does not merge"
        );
    }

    #[derive(Debug, Clone)]
    enum Deferral {
        Defer(u8, Option<u8>),
        ReadForwarded(u8),
        Release,
    }

    fn deferral() -> impl Strategy<Value = Deferral> {
        prop_oneof![
            6 => (0u8..12, proptest::option::of(0u8..3)).prop_map(|(k, v)| Deferral::Defer(k, v)),
            2 => (0u8..12).prop_map(Deferral::ReadForwarded),
            1 => Just(Deferral::Release),
        ]
    }

    proptest! {
        /// Whatever the writes and releases, each released change starts
        /// from what downstream was last told of its key and ends at the
        /// key's latest value, never the same; and once released, nothing
        /// differs between the two.
        #[test]
        fn released_changes_chain_from_what_downstream_saw_to_the_latest(
            steps in proptest::collection::vec(deferral(), 1..120),
            budget in 0usize..3000,
        ) {
            let mut store = counting();
            let mut cache = StoreCache::new(CacheBudget::new(budget.max(1), true));
            let mut latest: BTreeMap<u8, u8> = BTreeMap::new();
            let mut seen: BTreeMap<u8, u8> = BTreeMap::new();
            let release = |cache: &mut StoreCache, store: &Counting, latest: &BTreeMap<u8, u8>, seen: &mut BTreeMap<u8, u8>| -> Result<(), TestCaseError> {
                for change in cache.release(store).unwrap() {
                    let key = change.key[0];
                    prop_assert_eq!(change.old.as_deref().map(|v| v[0]), seen.get(&key).copied());
                    prop_assert_eq!(change.new.as_deref().map(|v| v[0]), latest.get(&key).copied());
                    prop_assert_ne!(&change.old, &change.new);
                    match change.new {
                        Some(v) => seen.insert(key, v[0]),
                        None => seen.remove(&key),
                    };
                }
                prop_assert_eq!(&*seen, latest);
                Ok(())
            };
            for (i, step) in steps.into_iter().enumerate() {
                match step {
                    Deferral::Defer(k, v) => {
                        cache.defer(&store, &[k], v.as_ref().map(std::slice::from_ref), i as i64, &source(i as i64)).unwrap();
                        match v {
                            Some(v) => latest.insert(k, v),
                            None => latest.remove(&k),
                        };
                    }
                    Deferral::ReadForwarded(k) => {
                        let forwarded = cache.get_forwarded(&store, &[k], |v| v.map(|v| v[0])).unwrap();
                        prop_assert_eq!(forwarded, seen.get(&k).copied());
                    }
                    Deferral::Release => release(&mut cache, &store, &latest, &mut seen)?,
                }
                if i % 7 == 0 {
                    cache.write_back(&mut store).unwrap();
                }
            }
            release(&mut cache, &store, &latest, &mut seen)?;
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        Read(u8),
        Write(u8, Option<u8>),
        WriteBack,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => any::<u8>().prop_map(|k| Step::Read(k % 40)),
            4 => (any::<u8>(), proptest::option::of(any::<u8>())).prop_map(|(k, v)| Step::Write(k % 40, v)),
            1 => Just(Step::WriteBack),
        ]
    }

    proptest! {
        /// Through any reads, writes and write-backs, with a budget small
        /// enough to rotate often, the cache reads as a plain map would,
        /// and after a write-back the store holds exactly that map.
        #[test]
        fn reads_as_the_writes_made_it(
            initial in proptest::collection::btree_map(0u8..40, any::<u8>(), 0..20),
            steps in proptest::collection::vec(step(), 1..200),
            budget in 0usize..2000,
        ) {
            let mut store = counting();
            for (k, v) in &initial {
                store.inner.put(&[*k], &[*v]).unwrap();
            }
            let mut model: BTreeMap<u8, u8> = initial;
            let mut cache = StoreCache::new(CacheBudget::new(budget, false));
            for step in steps {
                match step {
                    Step::Read(k) => {
                        prop_assert_eq!(read(&mut cache, &store, &[k]), model.get(&k).map(|v| vec![*v]));
                    }
                    Step::Write(k, v) => {
                        cache.write(&[k], v.as_ref().map(std::slice::from_ref));
                        match v {
                            Some(v) => model.insert(k, v),
                            None => model.remove(&k),
                        };
                    }
                    Step::WriteBack => cache.write_back(&mut store).unwrap(),
                }
            }
            cache.write_back(&mut store).unwrap();
            let mut held = BTreeMap::new();
            store.inner.for_each(&mut |k, v| { held.insert(k[0], v[0]); }).unwrap();
            prop_assert_eq!(held, model);
        }
    }
}
