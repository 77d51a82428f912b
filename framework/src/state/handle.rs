//! A task's view of one store: logging to the changelog and typed access.

use super::cache::{CacheBudget, Released, StoreCache};
use super::{KeyValueStore, StoreReader, StoreSize, StoreWrite};
use crate::error::{SerdeError, WeirError};
use crate::processor::{ProcessorContext, RecordCollector, ValueGetter, View};
use crate::record::{OutputKind, OutputRecord, RawRecord};
use crate::serde::{serialize_present, SerdeRef};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

/// Where a store's writes are logged.
#[derive(Debug, Clone)]
pub(crate) struct Changelog {
    pub topic: Arc<str>,
    pub partition: i32,
}

/// One store of one task. Writes go to the store (through its cache, see
/// [`super::cache`]) and, when the store is logged, to its changelog
/// partition (the task's partition), so that the store can be rebuilt
/// anywhere from the topic alone.
pub(crate) struct StoreHandle {
    store: Box<dyn KeyValueStore>,
    cache: StoreCache,
    changelog: Option<Changelog>,
}

impl StoreHandle {
    pub(crate) fn new(store: Box<dyn KeyValueStore>, changelog: Option<Changelog>, cache: Rc<CacheBudget>) -> Self {
        StoreHandle {
            store,
            cache: StoreCache::new(cache),
            changelog,
        }
    }

    pub(crate) fn name(&self) -> &str {
        self.store.name()
    }

    pub(crate) fn changelog_topic(&self) -> Option<&Arc<str>> {
        self.changelog.as_ref().map(|c| &c.topic)
    }

    /// A reader for other threads; it sees writes once they are written back.
    pub(crate) fn reader(&self) -> Arc<dyn StoreReader> {
        self.store.reader()
    }

    pub(crate) fn size(&self) -> StoreSize {
        self.store.size()
    }

    /// Calls `read` with `key`'s current value.
    pub(crate) fn get<R>(&mut self, key: &[u8], read: impl FnOnce(Option<&[u8]>) -> R) -> Result<R, WeirError> {
        Ok(self.cache.get(self.store.as_ref(), key, read)?)
    }

    /// Calls `read` with the value of `key` downstream was last told.
    pub(crate) fn get_forwarded<R>(
        &mut self,
        key: &[u8],
        read: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R, WeirError> {
        Ok(self.cache.get_forwarded(self.store.as_ref(), key, read)?)
    }

    /// Whether the table kept in this store defers its changes.
    pub(crate) fn defers(&self) -> bool {
        self.cache.defers()
    }

    /// Writes `value` (deletes on `None`) and logs the write.
    pub(crate) fn write(
        &mut self,
        ctx: &mut ProcessorContext<'_>,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), WeirError> {
        self.cache.write(key, value);
        self.log(ctx.collector, key, value, ctx.timestamp);
        Ok(())
    }

    /// Writes `value` (deletes on `None`) and defers the change and its
    /// changelog record to [`StoreHandle::release`].
    pub(crate) fn defer(
        &mut self,
        ctx: &ProcessorContext<'_>,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), WeirError> {
        Ok(self
            .cache
            .defer(self.store.as_ref(), key, value, ctx.timestamp, ctx.source)?)
    }

    /// Whether the deferred changes should be released before the commit.
    pub(crate) fn deferred_full(&self) -> bool {
        self.cache.deferred_full()
    }

    /// Takes the deferred changes and logs each key's latest value; the
    /// caller passes the changes on.
    pub(crate) fn release(&mut self, collector: &mut RecordCollector) -> Result<Vec<Released>, WeirError> {
        let released = self.cache.release(self.store.as_ref())?;
        for change in &released {
            self.log(collector, &change.key, change.new.as_deref(), change.timestamp);
        }
        Ok(released)
    }

    /// Logs `key`'s current value again (a deletion when it has none).
    pub(crate) fn relog(&mut self, collector: &mut RecordCollector, key: &[u8]) -> Result<(), WeirError> {
        let value = self.get(key, |value| value.map(<[u8]>::to_vec))?;
        self.log(collector, key, value.as_deref(), crate::record::now_ms());
        Ok(())
    }

    fn log(&self, collector: &mut RecordCollector, key: &[u8], value: Option<&[u8]>, timestamp: i64) {
        if let Some(changelog) = &self.changelog {
            collector.send(OutputRecord {
                topic: changelog.topic.clone(),
                partition: Some(changelog.partition),
                kind: OutputKind::Internal,
                record: RawRecord {
                    key: Some(key.to_vec()),
                    value: value.map(<[u8]>::to_vec),
                    timestamp,
                    headers: Vec::new(),
                },
            });
        }
    }

    /// Writes the cached writes to the store, in one batch.
    pub(crate) fn write_back(&mut self) -> Result<(), WeirError> {
        Ok(self.cache.write_back(self.store.as_mut())?)
    }

    /// Makes every write so far durable in the store.
    pub(crate) fn flush(&mut self) -> Result<(), WeirError> {
        self.write_back()?;
        Ok(self.store.flush()?)
    }

    /// Visits every entry, in key order.
    pub(crate) fn for_each(&mut self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), WeirError> {
        self.write_back()?;
        Ok(self.store.for_each(visit)?)
    }

    /// Visits, in key order, the entries whose keys start with `prefix`,
    /// the current batch's writes included, until `visit` returns `false`.
    pub(crate) fn for_each_with_prefix(
        &mut self,
        prefix: &[u8],
        from: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), WeirError> {
        self.write_back()?;
        Ok(self.store.for_each_with_prefix_from(prefix, from, visit)?)
    }

    /// Writes records read back from the changelog, without logging them again.
    pub(crate) fn restore(&mut self, writes: &mut dyn Iterator<Item = StoreWrite<'_>>) -> Result<(), WeirError> {
        self.write_back()?;
        self.store.write_batch(writes)?;
        self.cache.forget_reads();
        Ok(())
    }
}

/// Typed access to a task's store; processors and table value getters hold one.
pub(crate) struct TypedStore<K, V> {
    handle: Rc<RefCell<StoreHandle>>,
    /// The name given to serdes as the "topic" (the changelog topic, as Kafka
    /// Streams does, or the store name for an unlogged store).
    serde_topic: Arc<str>,
    key_serde: SerdeRef<K>,
    value_serde: SerdeRef<V>,
    buffers: RefCell<(Vec<u8>, Vec<u8>)>,
}

impl<K: 'static, V: 'static> TypedStore<K, V> {
    pub(crate) fn new(handle: Rc<RefCell<StoreHandle>>, key_serde: SerdeRef<K>, value_serde: SerdeRef<V>) -> Self {
        let serde_topic = {
            let h = handle.borrow();
            h.changelog_topic().cloned().unwrap_or_else(|| h.name().into())
        };
        TypedStore {
            handle,
            serde_topic,
            key_serde,
            value_serde,
            buffers: RefCell::new((Vec::new(), Vec::new())),
        }
    }

    fn encode_key(&self, key: &K, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        out.clear();
        serialize_present(&*self.key_serde, &self.serde_topic, key, out, "a store key")
    }

    /// A key as the store holds it, back as the table's key.
    pub(crate) fn decode_key(&self, bytes: &[u8]) -> Result<K, WeirError> {
        Ok(self.key_serde.deserialize(&self.serde_topic, Some(bytes))?)
    }

    /// A value as the store holds it, typed.
    pub(crate) fn decode_value(&self, bytes: Option<&[u8]>) -> Result<Option<V>, WeirError> {
        Ok(bytes
            .map(|bytes| self.value_serde.deserialize(&self.serde_topic, Some(bytes)))
            .transpose()?)
    }

    /// `key`'s value: the latest, or with [`View::Forwarded`] the one
    /// downstream was last told.
    pub(crate) fn get(&self, key: &K, view: View) -> Result<Option<V>, WeirError> {
        let mut buffers = self.buffers.borrow_mut();
        self.encode_key(key, &mut buffers.0)?;
        let mut handle = self.handle.borrow_mut();
        let decode = |bytes: Option<&[u8]>| self.decode_value(bytes);
        match view {
            View::Latest => handle.get(&buffers.0, decode)?,
            View::Forwarded => handle.get_forwarded(&buffers.0, decode)?,
        }
    }

    /// The name the store hands its serdes as the topic.
    pub(crate) fn serde_topic(&self) -> &str {
        &self.serde_topic
    }

    /// The entries whose keys, as stored, start with `prefix`, in key order.
    pub(crate) fn entries_with_prefix(&self, prefix: &[u8]) -> Result<Vec<(K, V)>, WeirError> {
        self.entries_with_prefix_while(prefix, |_, _| true)
    }

    /// [`TypedStore::entries_with_prefix`], up to the first entry (as
    /// stored) for which `take` says no.
    pub(crate) fn entries_with_prefix_while(
        &self,
        prefix: &[u8],
        take: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<Vec<(K, V)>, WeirError> {
        self.entries_with_prefix_from_while(prefix, prefix, take)
    }

    /// [`TypedStore::entries_with_prefix_while`] from the first key (as
    /// stored) at or after `from`, seeking past what is before it.
    pub(crate) fn entries_with_prefix_from_while(
        &self,
        prefix: &[u8],
        from: &[u8],
        mut take: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<Vec<(K, V)>, WeirError> {
        let mut raw = Vec::new();
        self.handle
            .borrow_mut()
            .for_each_with_prefix(prefix, from, &mut |key, value| {
                let taken = take(key, value);
                if taken {
                    raw.push((key.to_vec(), value.to_vec()));
                }
                taken
            })?;
        raw.into_iter()
            .map(|(key, value)| {
                let value = self.value_serde.deserialize(&self.serde_topic, Some(&value))?;
                Ok((self.decode_key(&key)?, value))
            })
            .collect()
    }

    /// Whether the table kept in this store defers its changes (see
    /// [`super::cache`]).
    pub(crate) fn defers(&self) -> bool {
        self.handle.borrow().defers()
    }

    /// Writes `value` for `key`, or deletes `key` when `value` is `None`.
    pub(crate) fn put(&self, ctx: &mut ProcessorContext<'_>, key: &K, value: Option<&V>) -> Result<(), WeirError> {
        self.write(ctx, key, value, false)
    }

    /// Writes like [`TypedStore::put`], deferring the change and its
    /// changelog record until the task releases them.
    pub(crate) fn put_deferred(
        &self,
        ctx: &mut ProcessorContext<'_>,
        key: &K,
        value: Option<&V>,
    ) -> Result<(), WeirError> {
        self.write(ctx, key, value, true)
    }

    fn write(
        &self,
        ctx: &mut ProcessorContext<'_>,
        key: &K,
        value: Option<&V>,
        deferred: bool,
    ) -> Result<(), WeirError> {
        let mut buffers = self.buffers.borrow_mut();
        let (key_buf, value_buf) = &mut *buffers;
        self.encode_key(key, key_buf)?;
        let value_bytes = match value {
            Some(value) => {
                value_buf.clear();
                serialize_present(&*self.value_serde, &self.serde_topic, value, value_buf, "a store value")?;
                Some(value_buf.as_slice())
            }
            None => None,
        };
        let mut handle = self.handle.borrow_mut();
        match deferred {
            true => handle.defer(ctx, key_buf, value_bytes),
            false => handle.write(ctx, key_buf, value_bytes),
        }
    }
}

impl<K: 'static, V: 'static> ValueGetter<K, V> for TypedStore<K, V> {
    fn get(&self, key: &K, view: View) -> Result<Option<V>, WeirError> {
        TypedStore::get(self, key, view)
    }
}
