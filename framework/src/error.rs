//! Error types shared across the crate.

use thiserror::Error;

/// A value that could not be turned into bytes or back.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{kind} on topic '{topic}': {message}")]
pub struct SerdeError {
    pub kind: SerdeErrorKind,
    pub topic: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SerdeErrorKind {
    Serialize,
    Deserialize,
    /// What the serde needs (a schema registry) could not be reached: the
    /// record is not bad, so it is not dead-lettered; processing stops.
    Unavailable,
}

impl std::fmt::Display for SerdeErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SerdeErrorKind::Serialize => "serialization failed",
            SerdeErrorKind::Deserialize => "deserialization failed",
            SerdeErrorKind::Unavailable => "serde dependency unavailable",
        })
    }
}

impl SerdeError {
    pub fn serialize(topic: &str, message: impl std::fmt::Display) -> Self {
        SerdeError {
            kind: SerdeErrorKind::Serialize,
            topic: topic.to_string(),
            message: message.to_string(),
        }
    }

    pub fn deserialize(topic: &str, message: impl std::fmt::Display) -> Self {
        SerdeError {
            kind: SerdeErrorKind::Deserialize,
            topic: topic.to_string(),
            message: message.to_string(),
        }
    }

    /// The same error with `what` (for example `key`) in front of the message.
    pub fn prefixed(self, what: &str) -> Self {
        SerdeError {
            message: format!("{what}: {}", self.message),
            ..self
        }
    }
}

/// A failure of a state store.
#[derive(Debug, Error)]
#[error("state store '{store}': {message}")]
pub struct StoreError {
    pub store: String,
    pub message: String,
}

impl StoreError {
    pub fn new(store: &str, message: impl std::fmt::Display) -> Self {
        StoreError {
            store: store.to_string(),
            message: message.to_string(),
        }
    }
}

/// Any error weir reports to the caller.
#[derive(Debug, Error)]
pub enum WeirError {
    /// The topology as written cannot run; the message says what to change.
    #[error("invalid topology: {0}")]
    InvalidTopology(String),
    /// The configuration is incomplete or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Serde(#[from] SerdeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A record failed and the error handler said to stop.
    #[error("processing stopped at {topic}[{partition}]@{offset}: {cause}")]
    Processing {
        topic: String,
        partition: i32,
        offset: i64,
        cause: Box<WeirError>,
    },
    /// A Kafka client or broker operation failed; the message says which.
    #[error("kafka: {0}")]
    Kafka(String),
    /// A file of the state directory could not be read or written.
    #[error("state directory: {0}")]
    StateDir(String),
    /// What was asked for cannot be answered now but will be later: an
    /// interactive query of a store that is restoring or moving.
    #[error("not available yet: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = WeirError> = std::result::Result<T, E>;
