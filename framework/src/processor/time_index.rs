//! Time kept in a task's state: entries waiting for a deadline, and the
//! stream time of a windowed operation. Both live in a store of their own
//! (with its changelog), so that a task's next owner goes on where the
//! last one stopped.

use super::{ProcessorContext, View};
use crate::error::WeirError;
use crate::state::TypedStore;
use std::cell::Cell;
use std::rc::Rc;

/// A time as bytes that sort as the times do, negative ones included.
pub(crate) fn ordered(time: i64) -> [u8; 8] {
    ((time as u64) ^ (1 << 63)).to_be_bytes()
}

pub(crate) fn from_ordered(bytes: &[u8]) -> i64 {
    let bytes: [u8; 8] = bytes.try_into().expect("8 bytes");
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

/// An index store, shared by the indexes and the clock of one operation;
/// each keeps its entries under a prefix byte of its own.
pub(crate) type IndexStore = Rc<TypedStore<Vec<u8>, Vec<u8>>>;

/// An entry taken out of a [`TimeIndex`], with its payload.
pub(crate) type Due = (Vec<u8>, Vec<u8>);

/// What a [`TimeIndex`] knows of its earliest deadline without reading
/// its store.
#[derive(Debug, Clone, Copy)]
enum Earliest {
    /// Not read since the task started (its store may have been restored).
    Unknown,
    Empty,
    /// No deadline is earlier than this one.
    NotBefore(i64),
}

/// Entries (byte strings, each with a payload) ordered by deadline, so
/// that what is due is read without a scan of the rest. It remembers a
/// bound on its earliest deadline, so that asking before anything is due
/// costs no read.
pub(crate) struct TimeIndex {
    store: IndexStore,
    prefix: u8,
    earliest: Cell<Earliest>,
}

impl TimeIndex {
    pub(crate) fn new(store: IndexStore, prefix: u8) -> Self {
        TimeIndex {
            store,
            prefix,
            earliest: Cell::new(Earliest::Unknown),
        }
    }

    fn key(&self, deadline: i64, entry: &[u8]) -> Vec<u8> {
        [&[self.prefix][..], &ordered(deadline), entry].concat()
    }

    /// Puts `entry` with `payload` at `deadline` (replacing its payload if
    /// it is there already).
    pub(crate) fn insert(
        &self,
        ctx: &mut ProcessorContext<'_>,
        deadline: i64,
        entry: &[u8],
        payload: &[u8],
    ) -> Result<(), WeirError> {
        self.store
            .put(ctx, &self.key(deadline, entry), Some(&payload.to_vec()))?;
        match self.earliest.get() {
            Earliest::Empty => self.earliest.set(Earliest::NotBefore(deadline)),
            Earliest::NotBefore(earliest) if deadline < earliest => self.earliest.set(Earliest::NotBefore(deadline)),
            _ => {}
        }
        Ok(())
    }

    /// The payload of `entry` at `deadline`, if it is there.
    pub(crate) fn get(&self, deadline: i64, entry: &[u8]) -> Result<Option<Vec<u8>>, WeirError> {
        self.store.get(&self.key(deadline, entry), View::Latest)
    }

    pub(crate) fn remove(&self, ctx: &mut ProcessorContext<'_>, deadline: i64, entry: &[u8]) -> Result<(), WeirError> {
        self.store.put(ctx, &self.key(deadline, entry), None)
    }

    /// Takes out the entries whose deadline is `now` or earlier and returns
    /// them with their payloads, the earliest first.
    pub(crate) fn take_due(&self, ctx: &mut ProcessorContext<'_>, now: i64) -> Result<Vec<Due>, WeirError> {
        // Seek past the entries taken before (deleted, but still read
        // over by a scan from the start until the store compacts them).
        let from = match self.earliest.get() {
            Earliest::Empty => return Ok(Vec::new()),
            Earliest::NotBefore(earliest) if earliest > now => return Ok(Vec::new()),
            Earliest::NotBefore(earliest) => self.key(earliest, &[]),
            Earliest::Unknown => vec![self.prefix],
        };
        let mut next = None;
        let due = self
            .store
            .entries_with_prefix_from_while(&[self.prefix], &from, |key, _| {
                let deadline = from_ordered(&key[1..9]);
                if deadline > now {
                    next = Some(deadline);
                }
                deadline <= now
            })?;
        self.earliest.set(next.map_or(Earliest::Empty, Earliest::NotBefore));
        due.into_iter()
            .map(|(key, payload)| {
                self.store.put(ctx, &key, None)?;
                Ok((key[9..].to_vec(), payload))
            })
            .collect()
    }
}

const STREAM_TIME_KEY: &[u8] = b"s";

/// The stream time of one windowed operation: the largest timestamp it
/// has seen. It is its own, not the task's, as in Kafka Streams, and it is
/// logged whenever it moves, so that a closed window stays closed on the
/// task's next owner.
pub(crate) struct StreamClock {
    store: IndexStore,
    /// `None` until read from the store.
    time: Cell<Option<Option<i64>>>,
}

impl StreamClock {
    pub(crate) fn new(store: IndexStore) -> Self {
        StreamClock {
            store,
            time: Cell::new(None),
        }
    }

    /// The stream time now: `None` before the first record.
    pub(crate) fn current(&self) -> Result<Option<i64>, WeirError> {
        if let Some(time) = self.time.get() {
            return Ok(time);
        }
        let time = self
            .store
            .get(&STREAM_TIME_KEY.to_vec(), View::Latest)?
            .filter(|bytes| bytes.len() == 8)
            .map(|bytes| from_ordered(&bytes));
        self.time.set(Some(time));
        Ok(time)
    }

    /// The stream time once `timestamp` is seen.
    pub(crate) fn advance(&self, ctx: &mut ProcessorContext<'_>, timestamp: i64) -> Result<i64, WeirError> {
        match self.current()? {
            Some(time) if time >= timestamp => Ok(time),
            _ => {
                self.store
                    .put(ctx, &STREAM_TIME_KEY.to_vec(), Some(&ordered(timestamp).to_vec()))?;
                self.time.set(Some(Some(timestamp)));
                Ok(timestamp)
            }
        }
    }
}
