//! Nodes of windowed operations: aggregations over time windows and
//! sessions, the suppression of a table's intermediate updates, and joins
//! of two streams within a time difference.
//!
//! Each keeps its [`StreamClock`] and a [`TimeIndex`] of what expires when
//! in an index store of its own, beside the stores of its windows.

use super::time_index::{ordered, StreamClock, TimeIndex};
use super::{Forwarder, Processor, ProcessorContext, TableEmitter, View};
use crate::error::{SerdeError, WeirError};
use crate::metrics::SkipReason;
use crate::record::{Change, Record};
use crate::serde::{read_framed, write_framed, ChangeSerde, Encoded, Serde, SerdeRef};
use crate::state::TypedStore;
use crate::window::{
    split_key_prefix, time_at, write_key_prefix, JoinWindows, SessionWindows, SlidingWindows, TimeWindows, Windowed,
};
use std::rc::Rc;
use std::sync::Arc;

/// Folds a value into a window's aggregate (`None`: the window's first).
pub(crate) type WindowAdder<K, V, A> = Arc<dyn Fn(&K, V, Option<A>) -> A + Send + Sync>;
/// Combines the aggregates of two sessions that a record joins into one.
pub(crate) type SessionMerger<K, A> = Arc<dyn Fn(&K, A, A) -> A + Send + Sync>;

/// What every windowed aggregation keeps beside its windows: its stream
/// time, and when each window leaves the store.
pub(crate) struct WindowTime {
    pub clock: StreamClock,
    /// Windows by the time they leave the store; each entry is a windowed
    /// key as stored.
    pub expiry: TimeIndex,
    /// How long past its close a window stays in the store (for queries).
    pub retention_ms: i64,
}

impl WindowTime {
    /// The stream time once a record at `timestamp` is seen (see
    /// [`WindowTime::advance`]); `None` for a record no window takes: a
    /// row said again after a takeover, or a negative timestamp (counted).
    fn take<K: Clone + 'static, A: Clone + 'static>(
        &self,
        ctx: &mut ProcessorContext<'_>,
        table: &TableEmitter<Windowed<K>, A, A>,
        timestamp: i64,
    ) -> Result<Option<i64>, WeirError> {
        if said_again(ctx) {
            return Ok(None);
        }
        if timestamp < 0 {
            skip(ctx, SkipReason::NegativeTimestamp);
            return Ok(None);
        }
        self.advance(ctx, table, timestamp).map(Some)
    }

    /// Moves the stream time to `timestamp` and deletes the windows whose
    /// time in the store is up (without telling downstream: they are final).
    fn advance<K: Clone + 'static, A: Clone + 'static>(
        &self,
        ctx: &mut ProcessorContext<'_>,
        table: &TableEmitter<Windowed<K>, A, A>,
        timestamp: i64,
    ) -> Result<i64, WeirError> {
        let now = self.clock.advance(ctx, timestamp)?;
        for (key, _) in self.expiry.take_due(ctx, now)? {
            let key = table.store.decode_key(&key)?;
            table.store.put(ctx, &key, None)?;
        }
        Ok(now)
    }
}

/// Whether a record is a table's row said again after a task took over
/// (see [`super::StoreTable`]): its time is the wall clock's, and a stream
/// operation has seen the record it repeats, so windows and stream joins
/// leave it out.
fn said_again(ctx: &ProcessorContext<'_>) -> bool {
    ctx.republishing
}

/// Counts a record that no window can take.
fn skip(ctx: &mut ProcessorContext<'_>, reason: SkipReason) {
    let topic = ctx.source.topic.clone();
    ctx.metrics.record_skip(reason, &topic);
}

/// Adds each record to every time window it falls in.
pub(crate) struct TimeWindowAggregateNode<K, V, A> {
    pub table: Rc<TableEmitter<Windowed<K>, A, A>>,
    pub windows: TimeWindows,
    pub time: WindowTime,
    pub adder: WindowAdder<K, V, A>,
    pub key_serde: SerdeRef<Windowed<K>>,
}

impl<K: Clone + 'static, V: Clone, A: Clone + 'static> Processor<K, V> for TimeWindowAggregateNode<K, V, A> {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, record: Record<K, V>) -> Result<(), WeirError> {
        let Some(now) = self.time.take(ctx, &self.table, record.timestamp)? else {
            return Ok(());
        };
        let mut late = false;
        for window in self.windows.windows_for(record.timestamp) {
            if window.end.saturating_add(self.windows.grace_ms) <= now {
                late = true;
                continue;
            }
            let key = Windowed {
                key: record.key.clone(),
                window,
            };
            let old = self.table.store.get(&key, View::Latest)?;
            if old.is_none() {
                let stored = self.key_serde.to_bytes(self.table.store.serde_topic(), &key)?;
                let leaves = window
                    .end
                    .saturating_add(self.windows.grace_ms)
                    .saturating_add(self.time.retention_ms);
                self.time.expiry.insert(ctx, leaves, &stored.unwrap_or_default(), &[])?;
            }
            let new = (self.adder)(&record.key, record.value.clone(), old.clone());
            self.table.emit_now(ctx, key, Some(new), old)?;
        }
        if late {
            skip(ctx, SkipReason::LateRecord);
        }
        Ok(())
    }
}

/// Sliding windows ([`SlidingWindows`]): each record is kept (in a store
/// by key and time, until no window that may still change can hold it),
/// and the open windows it touches are folded again from the records they
/// hold: every window that holds it (the windows ending at a record up to
/// `difference` after it, and starting just after a record up to
/// `difference` before it), and the window starting just after it when a
/// later record falls in it.
pub(crate) struct SlidingWindowAggregateNode<K, V, A> {
    pub table: Rc<TableEmitter<Windowed<K>, A, A>>,
    pub windows: SlidingWindows,
    pub time: WindowTime,
    pub records: Rc<TypedStore<Vec<u8>, Vec<V>>>,
    /// When each key's records of one time leave `records`.
    pub records_expiry: TimeIndex,
    pub adder: WindowAdder<K, V, A>,
    pub key_serde: SerdeRef<K>,
    pub windowed_serde: SerdeRef<Windowed<K>>,
}

pub(crate) const RECORDS_EXPIRY: u8 = b'r';

impl<K: Clone + 'static, V: Clone + 'static, A: Clone + 'static> Processor<K, V>
    for SlidingWindowAggregateNode<K, V, A>
{
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, record: Record<K, V>) -> Result<(), WeirError> {
        let Record { key, value, timestamp } = record;
        let Some(now) = self.time.take(ctx, &self.table, timestamp)? else {
            return Ok(());
        };
        for (entry, _) in self.records_expiry.take_due(ctx, now)? {
            self.records.put(ctx, &entry, None)?;
        }
        let (difference, grace) = (self.windows.difference_ms, self.windows.grace_ms);
        let closed = |end: i64| end.saturating_add(grace) < now;
        // The last window that holds it ends `difference` after it.
        if closed(timestamp.saturating_add(difference)) {
            skip(ctx, SkipReason::LateRecord);
            return Ok(());
        }
        let topic = self.table.store.serde_topic().to_string();
        let mut prefix = Vec::new();
        write_key_prefix(&*self.key_serde, &topic, &key, &mut prefix)?;
        let stored = buffer_key(&prefix, timestamp);
        let mut at_time = self.records.get(&stored, View::Latest)?.unwrap_or_default();
        if at_time.is_empty() {
            // Kept while a window that may still change can hold it: one
            // that ends `difference` after a record on time.
            let leaves = timestamp
                .saturating_add(2 * difference)
                .saturating_add(grace)
                .saturating_add(1);
            self.records_expiry.insert(ctx, leaves, &stored, &[])?;
        }
        at_time.push(value);
        self.records.put(ctx, &stored, Some(&at_time))?;

        // The key's records from just before the earliest window it
        // touches to the end of the latest.
        let (from, to) = (
            timestamp.saturating_sub(difference).saturating_sub(1),
            timestamp.saturating_add(difference).saturating_add(1),
        );
        let (from_bytes, to_bytes) = (ordered(from), ordered(to));
        let near: Vec<(i64, Vec<V>)> = self
            .records
            .entries_with_prefix_from_while(&prefix, &buffer_key(&prefix, from), |stored, _| {
                stored[prefix.len()..] <= to_bytes[..]
            })?
            .into_iter()
            .filter(|(stored, _)| stored[prefix.len()..] >= from_bytes[..])
            .map(|(stored, values)| (super::time_index::from_ordered(&stored[prefix.len()..]), values))
            .collect();
        let mut starts = std::collections::BTreeSet::new();
        for (time, _) in &near {
            // Windows start at 0 or later: those of early records are
            // all [0, difference].
            if (timestamp..=timestamp.saturating_add(difference)).contains(time) {
                starts.insert((time - difference).max(0));
            }
            if (timestamp.saturating_sub(difference).saturating_sub(1)..timestamp).contains(time) {
                starts.insert(time + 1);
            }
        }
        if near
            .iter()
            .any(|(time, _)| *time > timestamp && *time <= timestamp + difference)
        {
            starts.insert(timestamp + 1);
        }
        for start in starts {
            let end = start.saturating_add(difference);
            if closed(end) {
                continue;
            }
            let mut aggregate = None;
            for (_, values) in near.iter().filter(|(time, _)| (start..=end).contains(time)) {
                for value in values {
                    aggregate = Some((self.adder)(&key, value.clone(), aggregate));
                }
            }
            let Some(aggregate) = aggregate else { continue };
            let window = Windowed::new(key.clone(), start, end);
            let old = self.table.store.get(&window, View::Latest)?;
            if old.is_none() {
                let stored = self.windowed_serde.to_bytes(&topic, &window)?.unwrap_or_default();
                let leaves = end
                    .saturating_add(grace)
                    .saturating_add(self.time.retention_ms)
                    .saturating_add(1);
                self.time.expiry.insert(ctx, leaves, &stored, &[])?;
            }
            self.table.emit_now(ctx, window, Some(aggregate), old)?;
        }
        Ok(())
    }
}

/// Adds each record to its key's session: the sessions within the gap of
/// it merge with it into one, which replaces them (each replaced session
/// is deleted downstream).
pub(crate) struct SessionAggregateNode<K, V, A> {
    pub table: Rc<TableEmitter<Windowed<K>, A, A>>,
    pub windows: SessionWindows,
    pub time: WindowTime,
    pub adder: WindowAdder<K, V, A>,
    pub merger: SessionMerger<K, A>,
    pub key_serde: SerdeRef<K>,
    pub windowed_serde: SerdeRef<Windowed<K>>,
}

impl<K: Clone + 'static, V, A: Clone + 'static> Processor<K, V> for SessionAggregateNode<K, V, A> {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, record: Record<K, V>) -> Result<(), WeirError> {
        let Record { key, value, timestamp } = record;
        let Some(now) = self.time.take(ctx, &self.table, timestamp)? else {
            return Ok(());
        };
        let gap = self.windows.gap_ms;
        let topic = self.table.store.serde_topic().to_string();
        let mut prefix = Vec::new();
        write_key_prefix(&*self.key_serde, &topic, &key, &mut prefix)?;
        let from = timestamp.saturating_sub(gap);
        let to = timestamp.saturating_add(gap);
        // A key's sessions sort by their start: read up to the last that
        // starts within the gap after the record.
        let merging: Vec<(Windowed<K>, A)> = self
            .table
            .store
            .entries_with_prefix_while(&prefix, |stored, _| {
                time_at(&topic, stored, prefix.len()).is_ok_and(|start| start <= to)
            })?
            .into_iter()
            .filter(|(session, _)| session.window.end >= from)
            .collect();
        let start = merging.iter().map(|(s, _)| s.window.start).fold(timestamp, i64::min);
        let end = merging.iter().map(|(s, _)| s.window.end).fold(timestamp, i64::max);
        // A session closes once no record within the gap after its end can
        // be on time; a record that would change a closed one is late.
        let closed = |end: i64| end.saturating_add(gap).saturating_add(self.windows.grace_ms) < now;
        if closed(timestamp) || merging.iter().any(|(s, _)| closed(s.window.end)) {
            skip(ctx, SkipReason::LateRecord);
            return Ok(());
        }
        let merged = Windowed::new(key.clone(), start, end);
        let mut aggregate = None;
        let mut replaced = None;
        for (session, session_aggregate) in merging {
            aggregate = Some(match aggregate {
                Some(aggregate) => (self.merger)(&key, aggregate, session_aggregate.clone()),
                None => session_aggregate.clone(),
            });
            if session.window == merged.window {
                replaced = Some(session_aggregate);
            } else {
                self.table.emit_now(ctx, session, None, Some(session_aggregate))?;
            }
        }
        if replaced.is_none() {
            let stored = self.windowed_serde.to_bytes(&topic, &merged)?.unwrap_or_default();
            // A session is kept until no record can reach it any more, so
            // that one that would is seen to be late: such a record is
            // within the gap after its end, and on time for a session of
            // its own.
            let leaves = end
                .saturating_add(2 * gap)
                .saturating_add(self.windows.grace_ms)
                .saturating_add(self.time.retention_ms)
                .saturating_add(1);
            self.time.expiry.insert(ctx, leaves, &stored, &[])?;
        }
        let new = (self.adder)(&key, value, aggregate);
        self.table.emit_now(ctx, merged, Some(new), replaced)
    }
}

/// When a held update of a suppressed table is let go.
pub(crate) enum HoldUntil<K> {
    /// At its window's close: the end plus `close_after_end`.
    WindowCloses {
        end_of: Arc<dyn Fn(&K) -> i64 + Send + Sync>,
        close_after_end: i64,
    },
    /// This long after the first update held for its key.
    TimeLimit(i64),
}

/// Holds a table's updates back ([`crate::KTable::suppress`]) and passes
/// on each key's latest one when its time comes, as a change from the row
/// downstream last saw. Held updates wait in a [`TimeIndex`] (under `h`),
/// each with the timestamp of its latest update; a time limit also keeps
/// each held key's deadline under `k`.
pub(crate) struct SuppressNode<K, V> {
    pub clock: StreamClock,
    pub held: TimeIndex,
    pub index: Rc<TypedStore<Vec<u8>, Vec<u8>>>,
    pub until: HoldUntil<K>,
    pub key_serde: SerdeRef<K>,
    pub change_serde: ChangeSerde<V>,
    pub out: Forwarder<K, Change<V>>,
}

pub(crate) const HELD: u8 = b'h';
const HELD_KEY: u8 = b'k';

impl<K: Clone + 'static, V: Clone + 'static> SuppressNode<K, V> {
    fn topic(&self) -> String {
        self.index.serde_topic().to_string()
    }

    /// Passes on every update whose time has come.
    fn release_due(&self, ctx: &mut ProcessorContext<'_>, now: i64) -> Result<(), WeirError> {
        let topic = self.topic();
        for (key, held) in self.held.take_due(ctx, now)? {
            if matches!(self.until, HoldUntil::TimeLimit(_)) {
                self.index.put(ctx, &[&[HELD_KEY][..], &key].concat(), None)?;
            }
            let timestamp = time_at(&topic, &held, 0)?;
            let change = self.change_serde.deserialize(&topic, Some(&held[8..]))?;
            let key = self.key_serde.deserialize(&topic, Some(&key))?;
            let outer = ctx.timestamp;
            ctx.timestamp = timestamp;
            let forwarded = self.out.forward(ctx, Record::new(key, change, timestamp));
            ctx.timestamp = outer;
            forwarded?;
        }
        Ok(())
    }
}

impl<K: Clone + 'static, V: Clone + 'static> Processor<K, Change<V>> for SuppressNode<K, V> {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, record: Record<K, Change<V>>) -> Result<(), WeirError> {
        let topic = self.topic();
        // A row said again is held like any update, at the stream time it
        // arrives at: its own time is the wall clock's.
        let (now, time) = match said_again(ctx) {
            true => {
                let now = self.clock.current()?.unwrap_or(i64::MIN);
                (now, now)
            }
            false => (self.clock.advance(ctx, record.timestamp)?, record.timestamp),
        };
        let mut key = Vec::new();
        crate::serde::serialize_present(&*self.key_serde, &topic, &record.key, &mut key, "a table key")?;
        let deadline = match &self.until {
            HoldUntil::WindowCloses {
                end_of,
                close_after_end,
            } => {
                let closes = end_of(&record.key).saturating_add(*close_after_end);
                if closes <= now {
                    // A closed window's row said again was final already.
                    if !said_again(ctx) {
                        skip(ctx, SkipReason::LateRecord);
                    }
                    return self.release_due(ctx, now);
                }
                closes
            }
            HoldUntil::TimeLimit(limit) => {
                let by_key = [&[HELD_KEY][..], &key].concat();
                match self.index.get(&by_key, View::Latest)? {
                    Some(deadline) => time_at(&topic, &deadline, 0)?,
                    None => {
                        let deadline = time.saturating_add(*limit);
                        self.index.put(ctx, &by_key, Some(&deadline.to_be_bytes().to_vec()))?;
                        deadline
                    }
                }
            }
        };
        // Downstream is told the change from the row it saw before the
        // first held update to the latest one.
        let before = match self.held.get(deadline, &key)? {
            Some(held) => self.change_serde.deserialize(&topic, Some(&held[8..]))?.old,
            None => record.value.old,
        };
        let change = Change::new(record.value.new, before);
        if change.is_noop() {
            // A row added and deleted while held: downstream never saw it.
            self.held.remove(ctx, deadline, &key)?;
            if matches!(self.until, HoldUntil::TimeLimit(_)) {
                self.index.put(ctx, &[&[HELD_KEY][..], &key].concat(), None)?;
            }
            return self.release_due(ctx, now);
        }
        let mut held = time.to_be_bytes().to_vec();
        self.change_serde.serialize(&topic, &change, &mut held)?;
        self.held.insert(ctx, deadline, &key, &held)?;
        self.release_due(ctx, now)
    }
}

/// A list of values in a store: each as a 4-byte length and its bytes. A
/// join's buffer keeps a key's records of one timestamp in one entry.
pub(crate) struct ListSerde<V>(pub SerdeRef<V>);

impl<V: 'static> Serde<Vec<V>> for ListSerde<V> {
    fn serialize(&self, topic: &str, values: &Vec<V>, out: &mut Vec<u8>) -> Result<Encoded, SerdeError> {
        for value in values {
            write_framed(&*self.0, topic, value, out, "a joined stream's value")?;
        }
        Ok(Encoded::Bytes)
    }

    fn deserialize(&self, topic: &str, bytes: Option<&[u8]>) -> Result<Vec<V>, SerdeError> {
        let mut rest = bytes.unwrap_or_default();
        let mut values = Vec::new();
        while !rest.is_empty() {
            let (value, after) = read_framed(&*self.0, topic, rest)?;
            values.push(value);
            rest = after;
        }
        Ok(values)
    }
}

/// Which input of a stream-stream join a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Left,
    Right,
}

impl Side {
    fn tag(self) -> u8 {
        match self {
            Side::Left => b'L',
            Side::Right => b'R',
        }
    }
}

/// Combines a left and a right value, `None` for a side that found no
/// partner; answers `None` for a record alone that the join kind leaves out.
pub(crate) type StreamJoiner<V1, V2, R> = Arc<dyn Fn(Option<&V1>, Option<&V2>) -> Option<R> + Send + Sync>;

/// The state both sides of a stream-stream join share in a task: each
/// side's buffer of records by key and timestamp, one stream time, and
/// when each buffered record leaves.
///
/// A record joins the other side's buffered records within the window;
/// then it waits in its own buffer for the other side's later records,
/// until no record that is not late could still join it. Under a left or
/// outer join, a record that found no partner by then is passed on alone:
/// its expiry entry carries the flag [`UNMATCHED`], which a match clears.
pub(crate) struct StreamJoin<K, V1, V2, R> {
    pub left: Rc<TypedStore<Vec<u8>, Vec<V1>>>,
    pub right: Rc<TypedStore<Vec<u8>, Vec<V2>>>,
    pub clock: StreamClock,
    pub expiry: TimeIndex,
    pub windows: JoinWindows,
    pub key_serde: SerdeRef<K>,
    pub joiner: StreamJoiner<V1, V2, R>,
    /// Whether a left (right) record without a partner is passed on alone.
    pub left_alone: bool,
    pub right_alone: bool,
    pub out: Forwarder<K, R>,
}

pub(crate) const EXPIRY: u8 = b'e';
const UNMATCHED: &[u8] = &[1];
const MATCHED: &[u8] = &[0];

/// A buffer's key: the record's key with its length, then its timestamp.
fn buffer_key(prefix: &[u8], timestamp: i64) -> Vec<u8> {
    [prefix, &ordered(timestamp)].concat()
}

impl<K: Clone + 'static, V1: Clone + 'static, V2: Clone + 'static, R: Clone + 'static> StreamJoin<K, V1, V2, R> {
    fn topic(&self) -> String {
        self.left.serde_topic().to_string()
    }

    /// How far from a record's timestamp the other side's may be: before
    /// and after it, from `side`'s point of view.
    fn reach(&self, side: Side) -> (i64, i64) {
        match side {
            Side::Left => (self.windows.before_ms, self.windows.after_ms),
            Side::Right => (self.windows.after_ms, self.windows.before_ms),
        }
    }

    /// When a record at `timestamp` can no longer be joined by a record
    /// that is not late.
    fn leaves(&self, timestamp: i64) -> i64 {
        timestamp
            .saturating_add(self.windows.before_ms)
            .saturating_add(self.windows.after_ms)
            .saturating_add(self.windows.grace_ms)
            .saturating_add(1)
    }

    fn forward(&self, ctx: &mut ProcessorContext<'_>, key: K, value: R, timestamp: i64) -> Result<(), WeirError> {
        let outer = ctx.timestamp;
        ctx.timestamp = timestamp;
        let forwarded = self.out.forward(ctx, Record::new(key, value, timestamp));
        ctx.timestamp = outer;
        forwarded
    }

    /// Drops the buffered records no record can join any more, passing on
    /// those of a left or outer join that never found a partner.
    fn expire(&self, ctx: &mut ProcessorContext<'_>, now: i64) -> Result<(), WeirError> {
        let topic = self.topic();
        for (entry, flag) in self.expiry.take_due(ctx, now)? {
            let (&tag, stored) = entry
                .split_first()
                .ok_or_else(|| SerdeError::deserialize(&topic, "empty join expiry entry"))?;
            let stored = stored.to_vec();
            let unmatched = flag == UNMATCHED;
            let (key_bytes, time) = split_key_prefix(&topic, &stored)?;
            let timestamp = super::time_index::from_ordered(time);
            let key = || self.key_serde.deserialize(&topic, Some(key_bytes));
            if tag == Side::Left.tag() {
                let values = self.left.get(&stored, View::Latest)?.unwrap_or_default();
                self.left.put(ctx, &stored, None)?;
                for joined in values
                    .iter()
                    .filter(|_| unmatched)
                    .filter_map(|v| (self.joiner)(Some(v), None))
                {
                    self.forward(ctx, key()?, joined, timestamp)?;
                }
            } else {
                let values = self.right.get(&stored, View::Latest)?.unwrap_or_default();
                self.right.put(ctx, &stored, None)?;
                for joined in values
                    .iter()
                    .filter(|_| unmatched)
                    .filter_map(|v| (self.joiner)(None, Some(v)))
                {
                    self.forward(ctx, key()?, joined, timestamp)?;
                }
            }
        }
        Ok(())
    }

    /// Joins a record of `side` with the other side's buffer and buffers
    /// it. `this` and `other` are the two sides' buffers as `side` sees
    /// them, `join` the joiner with its arguments in `side`'s order.
    #[allow(clippy::too_many_arguments)]
    fn process_side<VT: Clone + 'static, VO: 'static>(
        &self,
        ctx: &mut ProcessorContext<'_>,
        side: Side,
        record: Record<K, VT>,
        this: &TypedStore<Vec<u8>, Vec<VT>>,
        other: &TypedStore<Vec<u8>, Vec<VO>>,
        join: impl Fn(&VT, &VO) -> Option<R>,
        alone: bool,
        other_alone: bool,
    ) -> Result<(), WeirError> {
        let Record { key, value, timestamp } = record;
        if said_again(ctx) {
            return Ok(());
        }
        let now = self.clock.advance(ctx, timestamp)?;
        let (before, after) = self.reach(side);
        if timestamp.saturating_add(after).saturating_add(self.windows.grace_ms) < now {
            skip(ctx, SkipReason::LateRecord);
            return self.expire(ctx, now);
        }
        self.expire(ctx, now)?;
        let topic = self.topic();
        let mut prefix = Vec::new();
        write_key_prefix(&*self.key_serde, &topic, &key, &mut prefix)?;
        let earliest = timestamp.saturating_sub(before);
        let from = ordered(earliest);
        let to = ordered(timestamp.saturating_add(after));
        let partners = other.entries_with_prefix_from_while(&prefix, &buffer_key(&prefix, earliest), |stored, _| {
            stored[prefix.len()..] <= to[..]
        })?;
        let mut matched = false;
        for (stored, values) in partners {
            let time = &stored[prefix.len()..];
            if time < &from[..] {
                continue;
            }
            let other_time = super::time_index::from_ordered(time);
            if other_alone {
                let expiry_entry = [&[other_side(side).tag()][..], &stored].concat();
                let leaves = self.leaves(other_time);
                if self.expiry.get(leaves, &expiry_entry)?.as_deref() == Some(UNMATCHED) {
                    self.expiry.insert(ctx, leaves, &expiry_entry, MATCHED)?;
                }
            }
            for partner in &values {
                matched = true;
                if let Some(joined) = join(&value, partner) {
                    self.forward(ctx, key.clone(), joined, timestamp.max(other_time))?;
                }
            }
        }
        let stored = buffer_key(&prefix, timestamp);
        let mut values = this.get(&stored, View::Latest)?.unwrap_or_default();
        let first = values.is_empty();
        values.push(value);
        this.put(ctx, &stored, Some(&values))?;
        // Records of one key and timestamp join the same partners, so they
        // share one expiry entry and its flag.
        if first || matched {
            let flag = if alone && !matched { UNMATCHED } else { MATCHED };
            let expiry_entry = [&[side.tag()][..], &stored].concat();
            self.expiry.insert(ctx, self.leaves(timestamp), &expiry_entry, flag)?;
        }
        Ok(())
    }
}

fn other_side(side: Side) -> Side {
    match side {
        Side::Left => Side::Right,
        Side::Right => Side::Left,
    }
}

/// A record of either input of a stream-stream join: both inputs reach
/// the join's one node in a task, tagged with their side.
#[derive(Debug, Clone)]
pub(crate) enum JoinInput<V1, V2> {
    Left(V1),
    Right(V2),
}

impl<K: Clone + 'static, V1: Clone + 'static, V2: Clone + 'static, R: Clone + 'static> Processor<K, JoinInput<V1, V2>>
    for StreamJoin<K, V1, V2, R>
{
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_>,
        record: Record<K, JoinInput<V1, V2>>,
    ) -> Result<(), WeirError> {
        let Record { key, value, timestamp } = record;
        match value {
            JoinInput::Left(value) => self.process_side(
                ctx,
                Side::Left,
                Record::new(key, value, timestamp),
                &self.left,
                &self.right,
                |left, right| (self.joiner)(Some(left), Some(right)),
                self.left_alone,
                self.right_alone,
            ),
            JoinInput::Right(value) => self.process_side(
                ctx,
                Side::Right,
                Record::new(key, value, timestamp),
                &self.right,
                &self.left,
                |right, left| (self.joiner)(Some(left), Some(right)),
                self.right_alone,
                self.left_alone,
            ),
        }
    }
}
