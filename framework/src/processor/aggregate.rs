//! Aggregation nodes: grouped streams and grouped tables.
//!
//! Stream aggregation only adds. Table aggregation must also subtract: when a
//! row changes or leaves its group, the old value is taken out of the old
//! group. weir keeps, beside each table aggregate, the number of rows in its
//! group, so that a group whose last row leaves is deleted (a tombstone
//! downstream) instead of lingering as an "empty" aggregate.

use super::{Forwarder, Processor, ProcessorContext, TableEmitter, View};
use crate::error::{SerdeError, WeirError};
use crate::record::{Change, Record};
use crate::serde::{Encoded, Serde, SerdeRef};
use std::rc::Rc;
use std::sync::Arc;

/// Folds a value into the current aggregate of its key (`None`: the first).
pub(crate) type Adder<K, V, A> = Arc<dyn Fn(&K, V, Option<A>) -> A + Send + Sync>;
/// Takes a value back out of an aggregate.
pub(crate) type Subtractor<K, V, A> = Arc<dyn Fn(&K, V, A) -> A + Send + Sync>;

pub(crate) struct StreamAggregateNode<K, V, A> {
    pub table: Rc<TableEmitter<K, A, A>>,
    pub adder: Adder<K, V, A>,
}

impl<K: Clone + 'static, V, A: Clone + 'static> Processor<K, V> for StreamAggregateNode<K, V, A> {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, record: Record<K, V>) -> Result<(), WeirError> {
        let old = self.table.store.get(&record.key, View::Latest)?;
        let new = (self.adder)(&record.key, record.value, old.clone());
        self.table.emit(ctx, record.key, Some(new), old)
    }
}

/// Picks a table row's group and the value it contributes.
pub(crate) type Selector<K, V, K2, V2> = Arc<dyn Fn(&K, &V) -> (K2, V2) + Send + Sync>;

/// Re-keys a table's changes for a table `group_by`. When the new group
/// differs from the old one, the old value goes out as a subtraction for the
/// old group first, then the new value as an addition for the new group.
pub(crate) struct TableGroupByNode<K, V, K2, V2> {
    pub selector: Selector<K, V, K2, V2>,
    pub out: Forwarder<K2, Change<V2>>,
}

impl<K, V, K2: Clone + PartialEq + 'static, V2: Clone + 'static> Processor<K, Change<V>>
    for TableGroupByNode<K, V, K2, V2>
{
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, record: Record<K, Change<V>>) -> Result<(), WeirError> {
        let ts = record.timestamp;
        let old = record.value.old.map(|v| (self.selector)(&record.key, &v));
        let new = record.value.new.map(|v| (self.selector)(&record.key, &v));
        match (new, old) {
            (Some((new_key, new_value)), Some((old_key, old_value))) if new_key == old_key => self.out.forward(
                ctx,
                Record::new(new_key, Change::new(Some(new_value), Some(old_value)), ts),
            ),
            (new, old) => {
                if let Some((old_key, old_value)) = old {
                    self.out
                        .forward(ctx, Record::new(old_key, Change::new(None, Some(old_value)), ts))?;
                }
                if let Some((new_key, new_value)) = new {
                    self.out
                        .forward(ctx, Record::new(new_key, Change::new(Some(new_value), None), ts))?;
                }
                Ok(())
            }
        }
    }
}

/// A table aggregate and the number of rows in its group.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Counted<A> {
    pub members: u64,
    pub aggregate: A,
}

/// Length of the member count in front of each table aggregate in its store.
pub(crate) const COUNTED_PREFIX_LEN: usize = 8;

/// Stores a [`Counted`] as the member count (8 bytes, big-endian) followed by
/// the aggregate in its own serde's format.
pub(crate) struct CountedSerde<A>(pub SerdeRef<A>);

impl<A: 'static> Serde<Counted<A>> for CountedSerde<A> {
    fn serialize(&self, topic: &str, value: &Counted<A>, out: &mut Vec<u8>) -> Result<Encoded, SerdeError> {
        out.extend_from_slice(&value.members.to_be_bytes());
        self.0.serialize(topic, &value.aggregate, out)?;
        Ok(Encoded::Bytes)
    }

    fn deserialize(&self, topic: &str, bytes: Option<&[u8]>) -> Result<Counted<A>, SerdeError> {
        let bytes = bytes.ok_or_else(|| SerdeError::deserialize(topic, "null aggregate"))?;
        if bytes.len() < COUNTED_PREFIX_LEN {
            return Err(SerdeError::deserialize(
                topic,
                "aggregate shorter than its member count",
            ));
        }
        let (count, rest) = bytes.split_at(COUNTED_PREFIX_LEN);
        Ok(Counted {
            members: u64::from_be_bytes(count.try_into().expect("8 bytes")),
            aggregate: self.0.deserialize(topic, Some(rest))?,
        })
    }
}

pub(crate) struct TableAggregateNode<K, V, A> {
    pub table: Rc<TableEmitter<K, Counted<A>, A>>,
    pub adder: Adder<K, V, A>,
    pub subtractor: Subtractor<K, V, A>,
}

impl<K: Clone + 'static, V, A: Clone + 'static> Processor<K, Change<V>> for TableAggregateNode<K, V, A> {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, record: Record<K, Change<V>>) -> Result<(), WeirError> {
        let key = &record.key;
        let current = self.table.store.get(key, View::Latest)?;
        let previous = current.clone();
        let (mut members, mut aggregate) = match current {
            Some(c) => (c.members, Some(c.aggregate)),
            None => (0, None),
        };
        if let Some(old) = record.value.old {
            // A subtraction for a group we hold nothing for cannot be applied;
            // it can only follow state lost outside weir's control.
            if let Some(agg) = aggregate.take() {
                members = members.saturating_sub(1);
                aggregate = (members > 0).then(|| (self.subtractor)(key, old, agg));
            }
        }
        if let Some(new) = record.value.new {
            aggregate = Some((self.adder)(key, new, aggregate));
            members += 1;
        }
        let stored = aggregate.map(|aggregate| Counted { members, aggregate });
        if stored.is_none() && previous.is_none() {
            return Ok(());
        }
        self.table.emit(ctx, record.key, stored, previous)
    }
}
