//! Table nodes: materializing a topic as a table, and the stateless table
//! operations (filter, map_values, to_stream) with their value getters.

use super::time_index::{from_ordered, ordered, IndexStore, TimeIndex};
use super::{Forwarder, GetterRef, Processor, ProcessorContext, TableEmitter, ValueGetter, View};
use crate::error::WeirError;
use crate::record::{Change, Record};
use crate::runtime::Punctuator;
use crate::serde::{serialize_present, SerdeRef};
use std::rc::Rc;
use std::sync::Arc;

/// Upserts each record into the table's store (a `None` value deletes) and
/// passes the change on with the value it replaced; with a TTL, notes
/// when each row was written.
pub(crate) struct TableSourceNode<K, V> {
    pub table: Rc<TableEmitter<K, V, V>>,
    pub ttl: Option<Rc<TtlIndex<K>>>,
}

impl<K: Clone + 'static, V: Clone + 'static> Processor<K, Option<V>> for TableSourceNode<K, V> {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, record: Record<K, Option<V>>) -> Result<(), WeirError> {
        let old = self.table.store.get(&record.key, View::Latest)?;
        let Record { key, value, timestamp } = record;
        // Deleting an absent key changes nothing: no write, no downstream
        // tombstone (a Debezium delete is followed by a second tombstone),
        // unless the tables republish their rows.
        if value.is_none() && old.is_none() {
            return match ctx.republishing {
                true => self
                    .table
                    .out
                    .forward(ctx, Record::new(key, Change::new(None, None), timestamp)),
                false => Ok(()),
            };
        }
        if let Some(ttl) = &self.ttl {
            ttl.touch(ctx, &key, value.is_some().then_some(timestamp))?;
        }
        self.table.emit(ctx, key, value, old)
    }
}

/// Maps each side of a change, where `None` drops the value (filter) — the
/// one node behind both `KTable::filter` and `KTable::map_values`.
pub(crate) type TableMapper<K, V, VR> = Arc<dyn Fn(&K, V) -> Option<VR> + Send + Sync>;

pub(crate) struct TableMapNode<K, V, VR> {
    pub mapper: TableMapper<K, V, VR>,
    pub out: Forwarder<K, Change<VR>>,
}

impl<K: Clone + 'static, V, VR: Clone + 'static> Processor<K, Change<V>> for TableMapNode<K, V, VR> {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, record: Record<K, Change<V>>) -> Result<(), WeirError> {
        let Change { new, old } = record.value;
        let change = Change::new(
            new.and_then(|v| (self.mapper)(&record.key, v)),
            old.and_then(|v| (self.mapper)(&record.key, v)),
        );
        if change.is_noop() && !ctx.republishing {
            return Ok(());
        }
        self.out.forward(ctx, Record::new(record.key, change, record.timestamp))
    }
}

/// The value getter of a mapped or filtered table: the parent's value, mapped.
pub(crate) struct MappedGetter<K, V, VR> {
    pub parent: GetterRef<K, V>,
    pub mapper: TableMapper<K, V, VR>,
}

impl<K, V, VR> ValueGetter<K, VR> for MappedGetter<K, V, VR> {
    fn get(&self, key: &K, view: View) -> Result<Option<VR>, WeirError> {
        Ok(self.parent.get(key, view)?.and_then(|v| (self.mapper)(key, v)))
    }
}

/// Turns a table's changes into a stream of its new values (`None` = deleted).
pub(crate) struct ToStreamNode<K, V> {
    pub out: Forwarder<K, Option<V>>,
}

impl<K: Clone + 'static, V: Clone + 'static> Processor<K, Change<V>> for ToStreamNode<K, V> {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, record: Record<K, Change<V>>) -> Result<(), WeirError> {
        let new = record.value.new;
        self.out.forward(ctx, Record::new(record.key, new, record.timestamp))
    }
}

/// A table's expiry ([`crate::Consumed::ttl`]): when each row was last
/// written, by the record's timestamp, in a store of its own. The store
/// holds, per row, `k` + key → deadline and, in a [`TimeIndex`] under `d`,
/// the key at its deadline, so that a check reads only the rows that are
/// due.
pub(crate) struct TtlIndex<K> {
    pub index: IndexStore,
    pub deadlines: TimeIndex,
    pub key_serde: SerdeRef<K>,
    pub ttl_ms: i64,
}

const BY_KEY: u8 = b'k';
pub(crate) const BY_DEADLINE: u8 = b'd';

impl<K: 'static> TtlIndex<K> {
    fn key_bytes(&self, key: &K) -> Result<Vec<u8>, WeirError> {
        let mut bytes = Vec::new();
        serialize_present(
            &*self.key_serde,
            self.index.serde_topic(),
            key,
            &mut bytes,
            "a table key",
        )?;
        Ok(bytes)
    }

    /// Records that `key` was written at `written_at`, or deleted (`None`).
    pub(crate) fn touch(
        &self,
        ctx: &mut ProcessorContext<'_>,
        key: &K,
        written_at: Option<i64>,
    ) -> Result<(), WeirError> {
        let key_bytes = self.key_bytes(key)?;
        let by_key = [&[BY_KEY][..], &key_bytes].concat();
        if let Some(old) = self.index.get(&by_key, View::Latest)? {
            self.deadlines.remove(ctx, from_ordered(&old), &key_bytes)?;
        }
        match written_at {
            Some(time) => {
                let deadline = time.saturating_add(self.ttl_ms);
                self.index.put(ctx, &by_key, Some(&ordered(deadline).to_vec()))?;
                self.deadlines.insert(ctx, deadline, &key_bytes, &[])
            }
            None => self.index.put(ctx, &by_key, None),
        }
    }

    /// Forgets the keys whose deadline is `now` or earlier and returns
    /// them, the earliest first.
    pub(crate) fn expire_due(&self, ctx: &mut ProcessorContext<'_>, now: i64) -> Result<Vec<K>, WeirError> {
        let topic = self.index.serde_topic();
        self.deadlines
            .take_due(ctx, now)?
            .into_iter()
            .map(|(key_bytes, _)| {
                self.index.put(ctx, &[&[BY_KEY][..], &key_bytes].concat(), None)?;
                Ok(self.key_serde.deserialize(topic, Some(&key_bytes))?)
            })
            .collect()
    }
}

/// Deletes a table's rows whose time is up, each with a tombstone
/// downstream and in the changelog, on a wall-clock punctuation.
pub(crate) struct ExpireRows<K, V> {
    pub table: Rc<TableEmitter<K, V, V>>,
    pub ttl: Rc<TtlIndex<K>>,
}

impl<K: Clone + 'static, V: Clone + 'static> Punctuator for ExpireRows<K, V> {
    fn punctuate(&self, ctx: &mut ProcessorContext<'_>, now: i64) -> Result<(), WeirError> {
        for key in self.ttl.expire_due(ctx, now)? {
            let old = self.table.store.get(&key, View::Latest)?;
            if old.is_some() {
                self.table.emit(ctx, key, None, old)?;
            }
        }
        Ok(())
    }
}
