//! What happens to a record that cannot be deserialized (the error handler
//! of sources), or that cannot be serialized or produced (the production
//! error handler), and what a dead letter holds.

use crate::record::{Header, OutputKind, OutputRecord, RawRecord, SourceMetadata};
use std::sync::Arc;

/// The policy for records that cannot be read (sources, `default.error.handler`)
/// or written (sinks, `production.error.handler`).
///
/// ```
/// use weir::ErrorHandler;
/// let handler = ErrorHandler::dead_letter("orders-dlq");
/// assert_eq!(handler, ErrorHandler::DeadLetter("orders-dlq".to_string()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ErrorHandler {
    /// Stop processing with an error naming the record (the default).
    #[default]
    Fail,
    /// Log a warning, count the skip, and go on.
    LogAndContinue,
    /// Write the record's key, value and headers to this topic, with headers
    /// that say what went wrong and where the record came from, count it, and
    /// go on. The headers are [`DLQ_ERROR_CLASS`], [`DLQ_ERROR_MESSAGE`],
    /// [`DLQ_SOURCE_TOPIC`], [`DLQ_SOURCE_PARTITION`] and [`DLQ_SOURCE_OFFSET`]
    /// (where the input record is known), [`DLQ_TARGET_TOPIC`] (for records
    /// that could not be produced) and [`DLQ_TRUNCATED`] (when the copy was
    /// cut to [`DEAD_LETTER_MAX_BYTES`]).
    DeadLetter(String),
}

impl ErrorHandler {
    pub fn dead_letter(topic: impl Into<String>) -> Self {
        ErrorHandler::DeadLetter(topic.into())
    }

    /// Reads `fail`, `log_and_continue` or `dead_letter:<topic>`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "fail" => Some(ErrorHandler::Fail),
            "log_and_continue" => Some(ErrorHandler::LogAndContinue),
            other => match other.strip_prefix("dead_letter:") {
                Some(topic) if !topic.is_empty() => Some(ErrorHandler::dead_letter(topic)),
                _ => None,
            },
        }
    }
}

/// Header of a dead letter: the kind of failure (`deserialization`,
/// `enrichment`, `serialization`, `production`).
pub const DLQ_ERROR_CLASS: &str = "weir.error.class";
/// Header of a dead letter: the error message.
pub const DLQ_ERROR_MESSAGE: &str = "weir.error.message";
/// Header of a dead letter: the topic the record was read from.
pub const DLQ_SOURCE_TOPIC: &str = "weir.source.topic";
/// Header of a dead letter: the partition, as decimal text.
pub const DLQ_SOURCE_PARTITION: &str = "weir.source.partition";
/// Header of a dead letter: the offset, as decimal text.
pub const DLQ_SOURCE_OFFSET: &str = "weir.source.offset";
/// Header of a dead letter of a record that could not be written: the
/// topic it was for.
pub const DLQ_TARGET_TOPIC: &str = "weir.target.topic";
/// Header of a dead letter whose copy was cut to fit: the original sizes,
/// as `key=<bytes> value=<bytes>`.
pub const DLQ_TRUNCATED: &str = "weir.dlq.truncated";
/// The most bytes of key, value and headers a dead letter copies, well
/// under the brokers' default `message.max.bytes` (1 MB), so that a record
/// refused as too large can still be dead-lettered.
pub const DEAD_LETTER_MAX_BYTES: usize = 512 * 1024;
/// The most bytes of an error message a dead letter carries.
const MAX_MESSAGE_BYTES: usize = 4 * 1024;

/// What went wrong with a record, for its dead letter.
pub(crate) struct Failure<'a> {
    /// [`DLQ_ERROR_CLASS`].
    pub class: &'a str,
    pub message: String,
    /// The input record being processed, where known.
    pub source: Option<&'a SourceMetadata>,
    /// The topic a record that could not be written was for.
    pub target: Option<&'a str>,
}

/// The dead letter of `record` for `topic`: its key, value and headers, cut
/// to [`DEAD_LETTER_MAX_BYTES`], with headers naming the failure.
pub(crate) fn dead_letter(topic: &str, failure: Failure<'_>, mut record: RawRecord) -> OutputRecord {
    let mut message = failure.message;
    if message.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    let mut headers = vec![
        (DLQ_ERROR_CLASS, failure.class.to_string()),
        (DLQ_ERROR_MESSAGE, message),
    ];
    if let Some(source) = failure.source {
        headers.push((DLQ_SOURCE_TOPIC, source.topic.to_string()));
        headers.push((DLQ_SOURCE_PARTITION, source.partition.to_string()));
        headers.push((DLQ_SOURCE_OFFSET, source.offset.to_string()));
    }
    if let Some(target) = failure.target {
        headers.push((DLQ_TARGET_TOPIC, target.to_string()));
    }
    let header_bytes = |headers: &[Header]| headers.iter().map(|h| h.key.len() + h.value.len()).sum::<usize>();
    let length = |part: &Option<Vec<u8>>| part.as_ref().map_or(0, Vec::len);
    let ours: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() + 64;
    if ours + header_bytes(&record.headers) > DEAD_LETTER_MAX_BYTES / 2 {
        // The original headers are the least of what a dead letter must say.
        record.headers.clear();
    }
    let room = DEAD_LETTER_MAX_BYTES.saturating_sub(ours + header_bytes(&record.headers));
    let (key_length, value_length) = (length(&record.key), length(&record.value));
    if key_length + value_length > room {
        headers.push((DLQ_TRUNCATED, format!("key={key_length} value={value_length}")));
        let key_room = room / 2;
        if let Some(key) = record.key.as_mut() {
            key.truncate(key_room);
        }
        if let Some(value) = record.value.as_mut() {
            value.truncate(room - length(&record.key));
        }
    }
    record.headers.extend(headers.into_iter().map(|(key, value)| Header {
        key: key.to_string(),
        value: value.into_bytes(),
    }));
    OutputRecord {
        topic: Arc::from(topic),
        partition: None,
        kind: OutputKind::DeadLetter,
        record,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(record: &OutputRecord) -> usize {
        let r = &record.record;
        r.key.as_ref().map_or(0, Vec::len)
            + r.value.as_ref().map_or(0, Vec::len)
            + r.headers.iter().map(|h| h.key.len() + h.value.len()).sum::<usize>()
    }

    fn header<'a>(record: &'a OutputRecord, key: &str) -> Option<&'a [u8]> {
        Header::value_of(&record.record.headers, key)
    }

    fn failure(message: String) -> Failure<'static> {
        Failure {
            class: "production",
            message,
            source: None,
            target: Some("out"),
        }
    }

    #[test]
    fn a_dead_letter_of_any_record_fits_and_says_what_it_cut() {
        let small = RawRecord {
            key: Some(b"k".to_vec()),
            value: Some(vec![1; 100]),
            timestamp: 0,
            headers: vec![Header {
                key: "trace".into(),
                value: b"t".to_vec(),
            }],
        };
        let letter = dead_letter("dlq", failure("too large".into()), small.clone());
        assert_eq!(letter.record.value, small.value);
        assert_eq!(header(&letter, "trace"), Some(&b"t"[..]));
        assert_eq!(header(&letter, DLQ_TRUNCATED), None);
        assert_eq!(header(&letter, DLQ_TARGET_TOPIC), Some(&b"out"[..]));

        for (key, value, headers) in [(10, 5_000_000, 0), (3_000_000, 3_000_000, 0), (10, 10, 2_000_000)] {
            let huge = RawRecord {
                key: Some(vec![7; key]),
                value: Some(vec![8; value]),
                timestamp: 0,
                headers: vec![Header {
                    key: "big".into(),
                    value: vec![9; headers],
                }],
            };
            let letter = dead_letter("dlq", failure("x".repeat(100_000)), huge);
            assert!(size(&letter) <= DEAD_LETTER_MAX_BYTES, "{}", size(&letter));
            if key + value > DEAD_LETTER_MAX_BYTES / 2 {
                assert_eq!(
                    header(&letter, DLQ_TRUNCATED),
                    Some(format!("key={key} value={value}").as_bytes())
                );
            }
            assert!(header(&letter, DLQ_ERROR_MESSAGE).unwrap().len() <= MAX_MESSAGE_BYTES + 3);
        }
    }
}
