//! The record types that flow through a topology.
//!
//! A stream carries [`Record`]s whose value is the user's type; a table carries
//! records whose value is a [`Change`]: the new value and the one it replaced,
//! so that joins and aggregations downstream can undo what the old value did.

use std::sync::Arc;

/// A typed record inside a topology.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<K, V> {
    pub key: K,
    pub value: V,
    /// Milliseconds since the epoch, carried over from the input record.
    pub timestamp: i64,
}

impl<K, V> Record<K, V> {
    pub fn new(key: K, value: V, timestamp: i64) -> Self {
        Record { key, value, timestamp }
    }

    /// The same key and timestamp with another value.
    pub fn with_value<V2>(self, value: V2) -> Record<K, V2> {
        Record {
            key: self.key,
            value,
            timestamp: self.timestamp,
        }
    }
}

/// An update of one key of a table: `None` stands for "absent" (a deletion
/// when it is `new`, a first insertion when it is `old`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<V> {
    pub new: Option<V>,
    pub old: Option<V>,
}

impl<V> Change<V> {
    pub fn new(new: Option<V>, old: Option<V>) -> Self {
        Change { new, old }
    }

    /// A change that neither adds nor removes anything is not worth forwarding.
    pub fn is_noop(&self) -> bool {
        self.new.is_none() && self.old.is_none()
    }
}

/// A Kafka record header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Vec<u8>,
}

impl Header {
    /// The value of the first header named `key` among `headers`.
    ///
    /// ```
    /// use weir::record::Header;
    /// let headers = vec![Header { key: "weir.error.class".into(), value: b"production".to_vec() }];
    /// assert_eq!(Header::value_of(&headers, "weir.error.class"), Some(&b"production"[..]));
    /// assert_eq!(Header::value_of(&headers, "trace"), None);
    /// ```
    pub fn value_of<'a>(headers: &'a [Header], key: &str) -> Option<&'a [u8]> {
        headers.iter().find(|h| h.key == key).map(|h| h.value.as_slice())
    }
}

/// A record in its serialized form, as it arrives from or leaves for a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: i64,
    pub headers: Vec<Header>,
}

/// The headers of an input record, copied out only when a record goes to a
/// dead-letter topic.
pub trait InputHeaders {
    fn to_headers(&self) -> Vec<Header>;
}

impl InputHeaders for Vec<Header> {
    fn to_headers(&self) -> Vec<Header> {
        self.to_vec()
    }
}

/// An input record borrowed from where it was read (a consumer's buffer,
/// the test driver's log), so that reading a record copies nothing.
#[derive(Clone, Copy)]
pub struct InputRecord<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub timestamp: i64,
    pub headers: &'a dyn InputHeaders,
}

impl RawRecord {
    /// This record as a task reads it.
    pub fn as_input(&self) -> InputRecord<'_> {
        InputRecord {
            key: self.key.as_deref(),
            value: self.value.as_deref(),
            timestamp: self.timestamp,
            headers: &self.headers,
        }
    }
}

/// A serialized record on its way out: to a sink topic, a repartition topic,
/// a changelog or a dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    pub topic: Arc<str>,
    /// `None` lets the partitioner choose from the key bytes.
    pub partition: Option<i32>,
    pub kind: OutputKind,
    pub record: RawRecord,
}

/// What an output record is for, which decides what happens when the
/// brokers refuse it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// A record of a topic the user named: the production error handler
    /// decides.
    Output,
    /// A changelog or repartition record (or a fence): weir's own state,
    /// which must not go missing, so a refusal stops the instance.
    Internal,
    /// A dead letter: bounded in size; a refusal stops the instance.
    DeadLetter,
}

/// Where an input record came from; carried to error handlers and dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMetadata {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

/// Milliseconds since the epoch now, for records weir writes of its own
/// accord (fences, republished rows) and for cache entries.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
