//! Windows: ranges of time that group a stream's records per key, for
//! windowed aggregations ([`KGroupedStream::windowed_by`]) and for joins of
//! two streams ([`KStream::join_stream`]).
//!
//! Time is the records' timestamps. Each windowed operation follows its own
//! *stream time*: the largest timestamp it has seen, kept in its state so
//! that a task's next owner goes on from it. A window *closes* once stream
//! time passes its end by the grace period; a record that arrives for a
//! closed window is too late: it is dropped and counted
//! (`weir_records_skipped_total{reason="late_record"}`). Windows start at 0
//! or later, so a record with a negative timestamp cannot fall in one: it
//! is dropped and counted too (`reason="negative_timestamp"`).
//!
//! [`KGroupedStream::windowed_by`]: crate::KGroupedStream::windowed_by
//! [`KStream::join_stream`]: crate::KStream::join_stream

pub use crate::dsl::{SessionWindowedKStream, StreamJoined, TimeWindowedKStream};

use crate::error::SerdeError;
use crate::serde::{serialize_present, Encoded, Serde, SerdeRef};
use std::sync::Arc;
use std::time::Duration;

/// A window of time in milliseconds since the epoch: `[start, end)` for
/// time windows, `[start, end]` for sessions (the first and last record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

/// A key within one of its windows: the key of a windowed aggregation's
/// table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Windowed<K> {
    pub key: K,
    pub window: Window,
}

impl<K> Windowed<K> {
    pub fn new(key: K, start: i64, end: i64) -> Self {
        Windowed {
            key,
            window: Window { start, end },
        }
    }
}

pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Fixed-size windows, tumbling (each record in one window) or hopping
/// (windows that start every `advance` and overlap).
///
/// ```
/// use std::time::Duration;
/// use weir::window::TimeWindows;
/// let tumbling = TimeWindows::of(Duration::from_secs(60)).grace(Duration::from_secs(10));
/// let hopping = TimeWindows::of(Duration::from_secs(300)).advance_by(Duration::from_secs(60));
/// # let _ = (tumbling, hopping);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindows {
    pub(crate) size_ms: i64,
    pub(crate) advance_ms: i64,
    pub(crate) grace_ms: i64,
}

impl TimeWindows {
    /// Tumbling windows of `size`, with no grace period.
    pub fn of(size: Duration) -> Self {
        TimeWindows {
            size_ms: millis(size),
            advance_ms: millis(size),
            grace_ms: 0,
        }
    }

    /// Windows that start every `advance` (more than zero, at most the size).
    pub fn advance_by(mut self, advance: Duration) -> Self {
        self.advance_ms = millis(advance);
        self
    }

    /// How long past its end a window still takes late records.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace_ms = millis(grace);
        self
    }

    /// What is wrong with these windows, if anything.
    pub(crate) fn invalid(&self) -> Option<String> {
        if self.size_ms <= 0 {
            return Some("TimeWindows: the size must be at least 1 ms".into());
        }
        if self.advance_ms <= 0 || self.advance_ms > self.size_ms {
            return Some(format!(
                "TimeWindows: the advance ({} ms) must be more than 0 and at most the size ({} ms)",
                self.advance_ms, self.size_ms
            ));
        }
        None
    }

    /// The windows a record at `timestamp` (0 or later) falls in, the
    /// earliest first.
    pub(crate) fn windows_for(&self, timestamp: i64) -> impl Iterator<Item = Window> + '_ {
        let last_start = timestamp - timestamp.rem_euclid(self.advance_ms);
        let first_start = (timestamp - self.size_ms + 1).max(0);
        let first_start = first_start + (self.advance_ms - first_start.rem_euclid(self.advance_ms)) % self.advance_ms;
        (first_start..=last_start)
            .step_by(self.advance_ms as usize)
            .map(|start| Window {
                start,
                end: start + self.size_ms,
            })
    }
}

/// Sliding windows: for every record, the window of `difference` that
/// ends at it, and the one that starts just after it when a later record
/// falls in it; each holds the key's records from its start to its end,
/// both included. Unlike hopping windows, only windows that hold records
/// exist, and each distinct set of records close enough in time is one.
///
/// ```
/// use std::time::Duration;
/// use weir::window::SlidingWindows;
/// let last_five_minutes = SlidingWindows::of(Duration::from_secs(300)).grace(Duration::from_secs(30));
/// # let _ = last_five_minutes;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingWindows {
    pub(crate) difference_ms: i64,
    pub(crate) grace_ms: i64,
}

impl SlidingWindows {
    /// Windows of records at most `difference` apart, with no grace period.
    pub fn of(difference: Duration) -> Self {
        SlidingWindows {
            difference_ms: millis(difference),
            grace_ms: 0,
        }
    }

    /// How long past its end a window still takes late records.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace_ms = millis(grace);
        self
    }
}

/// Sessions: a key's records that follow each other within an inactivity
/// `gap` form one window from the first to the last; a record that falls
/// between two sessions merges them.
///
/// ```
/// use std::time::Duration;
/// use weir::window::SessionWindows;
/// let visits = SessionWindows::with_inactivity_gap(Duration::from_secs(1800)).grace(Duration::from_secs(60));
/// # let _ = visits;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionWindows {
    pub(crate) gap_ms: i64,
    pub(crate) grace_ms: i64,
}

impl SessionWindows {
    /// Sessions that end after `gap` without a record, with no grace period.
    pub fn with_inactivity_gap(gap: Duration) -> Self {
        SessionWindows {
            gap_ms: millis(gap),
            grace_ms: 0,
        }
    }

    /// How long past its end a session still takes late records.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace_ms = millis(grace);
        self
    }
}

/// Which records of two streams join: those of one key whose timestamps
/// are close enough. A left record at `t` joins the right records from
/// `t - before` to `t + after`, both included.
///
/// ```
/// use std::time::Duration;
/// use weir::window::JoinWindows;
/// // Payments up to 10 minutes after their order, none before it.
/// let windows = JoinWindows::of(Duration::from_secs(600)).before(Duration::ZERO).grace(Duration::from_secs(30));
/// # let _ = windows;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinWindows {
    pub(crate) before_ms: i64,
    pub(crate) after_ms: i64,
    pub(crate) grace_ms: i64,
}

impl JoinWindows {
    /// Records at most `difference` apart, either way; no grace period.
    pub fn of(difference: Duration) -> Self {
        JoinWindows {
            before_ms: millis(difference),
            after_ms: millis(difference),
            grace_ms: 0,
        }
    }

    /// How far before a left record a right record may be.
    pub fn before(mut self, before: Duration) -> Self {
        self.before_ms = millis(before);
        self
    }

    /// How far after a left record a right record may be.
    pub fn after(mut self, after: Duration) -> Self {
        self.after_ms = millis(after);
        self
    }

    /// How long past its window a record still joins late records.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace_ms = millis(grace);
        self
    }
}

/// What [`KTable::suppress`](crate::KTable::suppress) holds back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suppressed {
    /// Of a windowed table: nothing until the window closes, then its final
    /// value, once.
    UntilWindowCloses,
    /// Each key's updates for this long (of stream time) after the first
    /// one held; then its latest value, once.
    UntilTimeLimit(Duration),
}

/// The serde of [`Windowed`] keys, on topics and in stores: the key's
/// length (4 bytes, big-endian), the key in its own serde's format, then
/// the window's start and end (8 bytes each, big-endian). Windows start at
/// 0 or later, so a key's windows sort by their start.
///
/// ```
/// use weir::serde::{Serde, Utf8};
/// use weir::window::{Windowed, WindowedSerde};
/// let serde = WindowedSerde::new(Utf8);
/// let key = Windowed::new("ada".to_string(), 60_000, 120_000);
/// let bytes = serde.to_bytes("t", &key).unwrap().unwrap();
/// assert_eq!(bytes.len(), 4 + 3 + 16);
/// assert_eq!(serde.deserialize("t", Some(&bytes)).unwrap(), key);
/// ```
pub struct WindowedSerde<K>(SerdeRef<K>);

impl<K: 'static> WindowedSerde<K> {
    pub fn new(key: impl Serde<K>) -> Self {
        WindowedSerde(Arc::new(key))
    }

    pub(crate) fn from_ref(key: SerdeRef<K>) -> Self {
        WindowedSerde(key)
    }
}

/// Writes `key` as the start of a windowed key: its length, then its bytes.
pub(crate) fn write_key_prefix<K: 'static>(
    serde: &dyn Serde<K>,
    topic: &str,
    key: &K,
    out: &mut Vec<u8>,
) -> Result<(), SerdeError> {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    serialize_present(serde, topic, key, out, "a windowed key")?;
    let length = u32::try_from(out.len() - at - 4).map_err(|_| SerdeError::serialize(topic, "key over 4 GiB"))?;
    out[at..at + 4].copy_from_slice(&length.to_be_bytes());
    Ok(())
}

/// Splits a windowed key's bytes into the key's bytes and what follows.
pub(crate) fn split_key_prefix<'a>(topic: &str, bytes: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), SerdeError> {
    let malformed = || SerdeError::deserialize(topic, "malformed windowed key");
    let length = bytes.get(..4).ok_or_else(malformed)?;
    let length = u32::from_be_bytes(length.try_into().expect("4 bytes")) as usize;
    let key = bytes.get(4..4 + length).ok_or_else(malformed)?;
    Ok((key, &bytes[4 + length..]))
}

/// Reads a big-endian time at `at` of `bytes`.
pub(crate) fn time_at(topic: &str, bytes: &[u8], at: usize) -> Result<i64, SerdeError> {
    let time = bytes
        .get(at..at + 8)
        .ok_or_else(|| SerdeError::deserialize(topic, "malformed windowed key"))?;
    Ok(i64::from_be_bytes(time.try_into().expect("8 bytes")))
}

impl<K: 'static> Serde<Windowed<K>> for WindowedSerde<K> {
    fn serialize(&self, topic: &str, value: &Windowed<K>, out: &mut Vec<u8>) -> Result<Encoded, SerdeError> {
        write_key_prefix(&*self.0, topic, &value.key, out)?;
        out.extend_from_slice(&value.window.start.to_be_bytes());
        out.extend_from_slice(&value.window.end.to_be_bytes());
        Ok(Encoded::Bytes)
    }

    fn deserialize(&self, topic: &str, bytes: Option<&[u8]>) -> Result<Windowed<K>, SerdeError> {
        let bytes = bytes.ok_or_else(|| SerdeError::deserialize(topic, "null windowed key"))?;
        let (key, window) = split_key_prefix(topic, bytes)?;
        if window.len() != 16 {
            return Err(SerdeError::deserialize(topic, "malformed windowed key"));
        }
        Ok(Windowed {
            key: self.0.deserialize(topic, Some(key))?,
            window: Window {
                start: time_at(topic, window, 0)?,
                end: time_at(topic, window, 8)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starts(windows: TimeWindows, timestamp: i64) -> Vec<i64> {
        windows.windows_for(timestamp).map(|w| w.start).collect()
    }

    #[test]
    fn a_record_falls_in_every_window_that_contains_it() {
        let tumbling = TimeWindows::of(Duration::from_millis(10));
        assert_eq!(starts(tumbling, 0), [0]);
        assert_eq!(starts(tumbling, 9), [0]);
        assert_eq!(starts(tumbling, 10), [10]);
        let hopping = TimeWindows::of(Duration::from_millis(10)).advance_by(Duration::from_millis(3));
        assert_eq!(starts(hopping, 11), [3, 6, 9]);
        assert_eq!(starts(hopping, 2), [0]);
        assert_eq!(starts(hopping, 12), [3, 6, 9, 12]);
        for t in 0..100 {
            let expected: Vec<i64> = (0..=t).filter(|s| s % 3 == 0 && t < s + 10).collect();
            assert_eq!(starts(hopping, t), expected, "at {t}");
        }
    }

    #[test]
    fn a_windowed_key_is_refused_when_malformed() {
        let serde = WindowedSerde::new(crate::serde::Utf8);
        assert!(serde.deserialize("t", Some(&[0, 0, 0, 9, b'a'])).is_err());
        assert!(serde.deserialize("t", Some(&[0, 0, 0, 1, b'a', 0])).is_err());
        assert!(serde.deserialize("t", None).is_err());
    }
}
