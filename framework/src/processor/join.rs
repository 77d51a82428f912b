//! Join nodes: table-table joins (one node per side, both feeding one
//! merge) and stream-table joins.
//!
//! A join kind (inner, left, outer) is a `combine` function from the two
//! sides' current values, either of which may be absent, to the joined value
//! or `None` when the join has no row for the key. Each side's node combines
//! its change with the other side's current value, so an update on either
//! side re-emits the joined row, and a row that stops existing becomes a
//! tombstone.

use super::{Forwarder, GetterRef, Processor, ProcessorContext, ValueGetter, View};
use crate::error::WeirError;
use crate::record::{Change, Record};
use crate::serde::SerdeRef;
use crate::state::StoreReader;
use std::sync::Arc;

pub(crate) type Combine<A, B, R> = Arc<dyn Fn(Option<&A>, Option<&B>) -> Option<R> + Send + Sync>;

/// One side of a table-table join; `combine` takes this side's value first.
/// The other side's value is the one its downstream was last told, so
/// that the old joined row forwarded is the new one forwarded before, even
/// while the other side's latest change is deferred.
pub(crate) struct TableJoinNode<K, VThis, VOther, R> {
    pub other: GetterRef<K, VOther>,
    pub combine: Combine<VThis, VOther, R>,
    pub out: Forwarder<K, Change<R>>,
}

impl<K: Clone + 'static, VThis, VOther, R: Clone + 'static> Processor<K, Change<VThis>>
    for TableJoinNode<K, VThis, VOther, R>
{
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, record: Record<K, Change<VThis>>) -> Result<(), WeirError> {
        let other = self.other.get(&record.key, View::Forwarded)?;
        let change = Change::new(
            (self.combine)(record.value.new.as_ref(), other.as_ref()),
            (self.combine)(record.value.old.as_ref(), other.as_ref()),
        );
        if change.is_noop() && !ctx.republishing {
            return Ok(());
        }
        self.out.forward(ctx, Record::new(record.key, change, record.timestamp))
    }
}

/// The value getter of a join's result table.
pub(crate) struct JoinGetter<K, A, B, R> {
    pub left: GetterRef<K, A>,
    pub right: GetterRef<K, B>,
    pub combine: Combine<A, B, R>,
}

impl<K, A, B, R> ValueGetter<K, R> for JoinGetter<K, A, B, R> {
    fn get(&self, key: &K, view: View) -> Result<Option<R>, WeirError> {
        let left = self.left.get(key, view)?;
        let right = self.right.get(key, view)?;
        Ok((self.combine)(left.as_ref(), right.as_ref()))
    }
}

/// The key of a global table's row that a stream record joins, if any.
pub(crate) type GlobalKeyOf<K, V, GK> = Arc<dyn Fn(&K, &V) -> Option<GK> + Send + Sync>;

/// Looks up each stream record in a global table by the key `key_of`
/// computes from it; only stream records trigger output.
pub(crate) struct StreamGlobalJoinNode<K, V, GK, GV, R> {
    pub store: Arc<dyn StoreReader>,
    /// The global table's topic, handed to its serdes.
    pub topic: Arc<str>,
    pub key_serde: SerdeRef<GK>,
    pub value_serde: SerdeRef<GV>,
    pub key_of: GlobalKeyOf<K, V, GK>,
    pub join: StreamJoiner<V, GV, R>,
    pub out: Forwarder<K, R>,
}

impl<K: Clone + 'static, V, GK: 'static, GV: 'static, R: Clone + 'static> Processor<K, V>
    for StreamGlobalJoinNode<K, V, GK, GV, R>
{
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, record: Record<K, V>) -> Result<(), WeirError> {
        let row = match (self.key_of)(&record.key, &record.value) {
            Some(key) => match self.key_serde.to_bytes(&self.topic, &key)? {
                Some(key) => self
                    .store
                    .get(&key)?
                    .map(|value| self.value_serde.deserialize(&self.topic, Some(&value)))
                    .transpose()?,
                None => None,
            },
            None => None,
        };
        match (self.join)(&record.value, row.as_ref()) {
            Some(joined) => self.out.forward(ctx, Record::new(record.key, joined, record.timestamp)),
            None => Ok(()),
        }
    }
}

/// Joins a stream value with the table row for its key, if any; `None`
/// drops the record (an inner join without a row).
pub(crate) type StreamJoiner<V, TV, R> = Arc<dyn Fn(&V, Option<&TV>) -> Option<R> + Send + Sync>;

/// Looks up each stream record's key in a table; only stream records trigger
/// output. `join` returns `None` when an inner join finds no table row.
pub(crate) struct StreamTableJoinNode<K, V, TV, R> {
    pub table: GetterRef<K, TV>,
    pub join: StreamJoiner<V, TV, R>,
    pub out: Forwarder<K, R>,
}

impl<K: Clone + 'static, V, TV, R: Clone + 'static> Processor<K, V> for StreamTableJoinNode<K, V, TV, R> {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, record: Record<K, V>) -> Result<(), WeirError> {
        let row = self.table.get(&record.key, View::Latest)?;
        match (self.join)(&record.value, row.as_ref()) {
            Some(joined) => self.out.forward(ctx, Record::new(record.key, joined, record.timestamp)),
            None => Ok(()),
        }
    }
}
