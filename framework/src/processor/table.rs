//! Table nodes: materializing a topic as a table, and the stateless table
//! operations (filter, map_values, to_stream) with their value getters.

use super::{Forwarder, GetterRef, Processor, ProcessorContext, TableEmitter, ValueGetter, View};
use crate::error::WeirError;
use crate::record::{Change, Record};
use std::rc::Rc;
use std::sync::Arc;

/// Upserts each record into the table's store (a `None` value deletes) and
/// passes the change on with the value it replaced.
pub(crate) struct TableSourceNode<K, V> {
    pub table: Rc<TableEmitter<K, V, V>>,
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
