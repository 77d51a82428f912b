//! What happens to an input record that cannot be deserialized.

/// The policy for records whose key or value cannot be deserialized.
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
    /// Write the original key, value and headers to this topic, with headers
    /// that say what went wrong and where the record came from, count it, and
    /// go on. The headers are [`DLQ_ERROR_CLASS`], [`DLQ_ERROR_MESSAGE`],
    /// [`DLQ_SOURCE_TOPIC`], [`DLQ_SOURCE_PARTITION`] and [`DLQ_SOURCE_OFFSET`].
    DeadLetter(String),
}

impl ErrorHandler {
    pub fn dead_letter(topic: impl Into<String>) -> Self {
        ErrorHandler::DeadLetter(topic.into())
    }
}

/// Header of a dead letter: the kind of failure (for example `deserialization`).
pub const DLQ_ERROR_CLASS: &str = "weir.error.class";
/// Header of a dead letter: the error message.
pub const DLQ_ERROR_MESSAGE: &str = "weir.error.message";
/// Header of a dead letter: the topic the record was read from.
pub const DLQ_SOURCE_TOPIC: &str = "weir.source.topic";
/// Header of a dead letter: the partition, as decimal text.
pub const DLQ_SOURCE_PARTITION: &str = "weir.source.partition";
/// Header of a dead letter: the offset, as decimal text.
pub const DLQ_SOURCE_OFFSET: &str = "weir.source.offset";
