//! Processor nodes: what the DSL compiles to, and what a task runs.
//!
//! A task owns one instance of every node of its sub-topology. A node
//! receives a typed [`Record`], does its work, and hands results to its
//! children through a [`Forwarder`]. Table nodes carry [`Change`]s so that
//! downstream joins and aggregations see both the new and the old value.
//!
//! [`Change`]: crate::record::Change

pub(crate) mod aggregate;
pub(crate) mod cdc;
pub(crate) mod enrich;
pub(crate) mod fk_join;
pub(crate) mod join;
pub(crate) mod sink;
pub(crate) mod source;
pub(crate) mod stream;
pub(crate) mod table;
pub(crate) mod time_index;
pub(crate) mod window;

use crate::error::WeirError;
use crate::error_handler::{dead_letter, Failure};
use crate::metrics::TaskMetrics;
use crate::record::{Change, OutputRecord, RawRecord, Record, SourceMetadata};
use std::any::Any;
use std::cell::RefCell;
use std::rc::Rc;

/// Collects a task's output records until the runtime sends them.
#[derive(Debug, Default)]
pub(crate) struct RecordCollector {
    records: Vec<OutputRecord>,
}

impl RecordCollector {
    pub(crate) fn send(&mut self, record: OutputRecord) {
        self.records.push(record);
    }

    pub(crate) fn drain(&mut self) -> std::vec::Drain<'_, OutputRecord> {
        self.records.drain(..)
    }
}

/// What a node may touch while it processes one input record.
pub(crate) struct ProcessorContext<'a> {
    /// The timestamp of the record being processed; outputs inherit it.
    pub timestamp: i64,
    pub source: &'a SourceMetadata,
    pub collector: &'a mut RecordCollector,
    pub metrics: &'a mut TaskMetrics,
    /// Whether tables are saying their rows again ([`Republish`]): a change
    /// that changes nothing is passed on then, so that a deleted row is
    /// published as deleted.
    pub republishing: bool,
}

impl ProcessorContext<'_> {
    /// `cause`, naming the input record that was being processed.
    pub(crate) fn failed_at_source(&self, cause: WeirError) -> WeirError {
        WeirError::Processing {
            topic: self.source.topic.to_string(),
            partition: self.source.partition,
            offset: self.source.offset,
            cause: Box::new(cause),
        }
    }
}

/// Sends `record` (the original key, value and headers) to the dead-letter
/// `topic`, with headers that name the failure (`class`, `message`), where
/// the record being processed came from and, for a record that could not
/// be written, the topic it was for (`target`).
pub(crate) fn send_dead_letter(
    ctx: &mut ProcessorContext<'_>,
    topic: &str,
    (class, message): (&str, String),
    target: Option<&str>,
    record: RawRecord,
) {
    let failure = Failure {
        class,
        message,
        source: Some(ctx.source),
        target,
    };
    ctx.collector.send(dead_letter(topic, failure, record));
}

/// A table kept in a store, as the task drives it from outside its nodes:
/// to say rows again, and to pass on the changes its store's cache
/// deferred.
///
/// *Republishing.* At-least-once: when a task takes over from an owner that
/// failed after its last commit, its stores roll back to that commit, but
/// what the owner published since (sink records, repartition records) stays
/// in the topics. Processing the same records again need not publish the
/// same changes (the task's inputs may interleave differently this time),
/// so a row published after the commit could stand for ever. The task
/// therefore has its tables republish the keys the rolled-back writes
/// touched (see the state manager), and what follows from them is
/// published again, deletions included. A task's tables share one key
/// type; keys are typed by the store they were read from, so a key read
/// from one table's changelog is republished by every table of its type.
///
/// *Deferred changes.* See [`crate::state`]'s cache: the task releases
/// them before it commits, and each goes downstream through
/// [`StoreTable::forward_released`].
pub(crate) trait StoreTable {
    /// A key as this table's store holds it, typed.
    fn decode(&self, key: &[u8]) -> Result<Box<dyn Any>, WeirError>;
    /// Forwards the current row of `key` (ignored when it is not this
    /// table's key type).
    fn republish(&self, ctx: &mut ProcessorContext<'_>, key: &dyn Any) -> Result<(), WeirError>;
    /// Forwards a change the store's cache deferred, from the stored value
    /// downstream was last told to the stored value now.
    fn forward_released(
        &self,
        ctx: &mut ProcessorContext<'_>,
        key: &[u8],
        new: Option<&[u8]>,
        old: Option<&[u8]>,
    ) -> Result<(), WeirError>;
}

/// How a node that keeps a table in a store writes the table and passes
/// its changes on: at once, or, when the store's cache defers changes, at
/// the task's next release, merged with the key's later changes. `view`
/// turns a stored value into the table's row.
pub(crate) struct TableEmitter<K, S, V> {
    pub store: Rc<crate::state::TypedStore<K, S>>,
    pub view: fn(S) -> V,
    pub out: Forwarder<K, Change<V>>,
}

impl<K: Clone + 'static, S: 'static, V: Clone + 'static> TableEmitter<K, S, V> {
    /// Writes `new` for `key`, whose stored value was `old`, and passes
    /// the change on (now or later, see above). While tables republish,
    /// nothing is deferred: a republished row must reach downstream even
    /// when it is unchanged.
    pub(crate) fn emit(
        &self,
        ctx: &mut ProcessorContext<'_>,
        key: K,
        new: Option<S>,
        old: Option<S>,
    ) -> Result<(), WeirError> {
        if self.store.defers() && !ctx.republishing {
            return self.store.put_deferred(ctx, &key, new.as_ref());
        }
        self.emit_now(ctx, key, new, old)
    }

    /// Writes and passes the change on at once, whether or not the store's
    /// cache defers changes: for windows, whose updates must reach a
    /// suppression downstream in the order of their records' times.
    pub(crate) fn emit_now(
        &self,
        ctx: &mut ProcessorContext<'_>,
        key: K,
        new: Option<S>,
        old: Option<S>,
    ) -> Result<(), WeirError> {
        self.store.put(ctx, &key, new.as_ref())?;
        let change = Change::new(new.map(self.view), old.map(self.view));
        self.out.forward(ctx, Record::new(key, change, ctx.timestamp))
    }
}

impl<K: Clone + 'static, S: 'static, V: Clone + 'static> StoreTable for TableEmitter<K, S, V> {
    fn decode(&self, key: &[u8]) -> Result<Box<dyn Any>, WeirError> {
        Ok(Box::new(self.store.decode_key(key)?))
    }

    fn republish(&self, ctx: &mut ProcessorContext<'_>, key: &dyn Any) -> Result<(), WeirError> {
        let Some(key) = key.downcast_ref::<K>() else {
            return Ok(());
        };
        let row = self.store.get(key, View::Latest)?.map(self.view);
        let change = Change::new(row.clone(), row);
        self.out.forward(ctx, Record::new(key.clone(), change, ctx.timestamp))
    }

    fn forward_released(
        &self,
        ctx: &mut ProcessorContext<'_>,
        key: &[u8],
        new: Option<&[u8]>,
        old: Option<&[u8]>,
    ) -> Result<(), WeirError> {
        let change = Change::new(
            self.store.decode_value(new)?.map(self.view),
            self.store.decode_value(old)?.map(self.view),
        );
        let key = self.store.decode_key(key)?;
        self.out.forward(ctx, Record::new(key, change, ctx.timestamp))
    }
}

/// A node that receives typed records.
pub(crate) trait Processor<K, V> {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, record: Record<K, V>) -> Result<(), WeirError>;
}

/// A node as its parents hold it; shared because a node may have several
/// parents (merges, both sides of a join).
pub(crate) type ProcessorRef<K, V> = Rc<RefCell<dyn Processor<K, V>>>;

/// Which value of a table's key a lookup wants, where a store's cache
/// defers changes (see [`crate::state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum View {
    /// The latest write: what a stream record is joined with.
    Latest,
    /// What downstream was last told: what a table-table join combines a
    /// change with, so that the old value it forwards is the joined row it
    /// forwarded before.
    Forwarded,
}

/// Reads the value of a key of a table, whatever node computes it.
pub(crate) trait ValueGetter<K, V> {
    fn get(&self, key: &K, view: View) -> Result<Option<V>, WeirError>;
}

pub(crate) type GetterRef<K, V> = Rc<dyn ValueGetter<K, V>>;

/// A node's children, all of one record type.
pub(crate) struct Forwarder<K, V> {
    children: Vec<ProcessorRef<K, V>>,
    /// Records passed on, exported per node.
    forwarded: metrics::Counter,
}

impl<K, V> Clone for Forwarder<K, V> {
    fn clone(&self) -> Self {
        Forwarder {
            children: self.children.clone(),
            forwarded: self.forwarded.clone(),
        }
    }
}

impl<K: Clone + 'static, V: Clone + 'static> Forwarder<K, V> {
    /// Builds the forwarder from the children the topology instantiated;
    /// each must be a `ProcessorRef<K, V>`.
    pub(crate) fn from_children(node: &str, children: &[&dyn Any]) -> Result<Self, WeirError> {
        let children = children
            .iter()
            .map(|child| {
                child.downcast_ref::<ProcessorRef<K, V>>().cloned().ok_or_else(|| {
                    WeirError::InvalidTopology(format!(
                        "a child of {node} does not accept the record type {} / {}",
                        std::any::type_name::<K>(),
                        std::any::type_name::<V>()
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Forwarder {
            children,
            forwarded: metrics::counter!(crate::metrics::NODE_RECORDS_FORWARDED, "node" => node.to_string()),
        })
    }

    /// Sends the record to every child (clones for all but the last).
    pub(crate) fn forward(&self, ctx: &mut ProcessorContext<'_>, record: Record<K, V>) -> Result<(), WeirError> {
        self.forwarded.increment(1);
        if let Some((last, rest)) = self.children.split_last() {
            for child in rest {
                child.borrow_mut().process(ctx, record.clone())?;
            }
            last.borrow_mut().process(ctx, record)?;
        }
        Ok(())
    }

    /// Sends the record to one child only.
    pub(crate) fn forward_to(
        &self,
        child: usize,
        ctx: &mut ProcessorContext<'_>,
        record: Record<K, V>,
    ) -> Result<(), WeirError> {
        match self.children.get(child) {
            Some(child) => {
                self.forwarded.increment(1);
                child.borrow_mut().process(ctx, record)
            }
            None => Ok(()),
        }
    }
}
