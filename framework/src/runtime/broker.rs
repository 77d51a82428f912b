//! What the task manager needs of the brokers, as three small traits: the
//! consumer group ([`Group`]: committed offsets, commits, the consumer's
//! assignment), a producer of task outputs ([`Output`]) and a reader of
//! changelog partitions ([`ChangelogSource`]).
//!
//! The stream thread implements them with rdkafka clients (its consumer,
//! [`RecordSender`](super::producer::RecordSender) and
//! [`KafkaChangelogReader`](super::changelog_reader::KafkaChangelogReader));
//! the commit protocol's simulation test implements them with a model of a
//! cluster whose members crash, stall and come back. The task manager and
//! the protocol itself hold no Kafka client.

use crate::error::WeirError;
use crate::record::OutputRecord;
use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

/// An offset of one partition: the next record to read, as Kafka commits it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PartitionOffset {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

/// Why the group did not take a commit.
#[derive(Debug)]
pub(crate) enum CommitRefused {
    /// Not now: the group is moving partitions or no longer counts this
    /// member in, or its coordinator is moving, loading or unreachable. The
    /// offsets stay where the last commit left them; a later commit point
    /// tries again.
    NotNow(String),
    Failed(WeirError),
}

/// The consumer group of a stream thread, as its consumer sees it.
pub(crate) trait Group {
    /// The group's committed offset of each of `partitions`, in order
    /// (`None`: nothing committed). An error for any one partition is an
    /// error of the whole call: a partition whose offset could not be read
    /// must not look like one that has none.
    fn committed(&self, partitions: &[(Arc<str>, i32)]) -> Result<Vec<Option<i64>>, WeirError>;

    /// Commits `offsets` in one request, each with `metadata` (this
    /// instance's `application.server`, for interactive queries).
    fn commit(&self, offsets: &[PartitionOffset], metadata: Option<&str>) -> Result<(), CommitRefused>;

    /// Whether the consumer may act for `topic[partition]`: the partition
    /// is in its current assignment and that assignment is not lost.
    fn owns(&self, topic: &str, partition: i32) -> bool;

    /// Moves the consumer's position in an assigned partition.
    fn seek(&self, topic: &str, partition: i32, offset: i64) -> Result<(), WeirError>;

    /// The group identity a transaction's offsets are sent with
    /// (exactly-once); opaque to the protocol, understood by [`Output`].
    fn transaction_identity(&self) -> Result<GroupIdentity, WeirError>;

    /// The end of `topic[partition]` as the consumer's last fetch saw it,
    /// without asking the broker; `None` before the first fetch.
    fn fetched_end(&self, topic: &str, partition: i32) -> Option<i64>;

    /// Whether the consumer knows that `topic[partition]` has records it
    /// has not handed out yet: its position (`next` until it has handed one
    /// out) is before the end its last fetch saw; transaction markers do
    /// not count.
    fn has_unread(&self, topic: &str, partition: i32, next: i64) -> bool;
}

/// A group's identity for a transaction, made by a [`Group`] and read by
/// the [`Output`] of the same implementation.
pub(crate) struct GroupIdentity(pub Box<dyn Any>);

/// What the brokers acknowledged of the records sent to one partition by
/// this producer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Acknowledged {
    /// The offset after the highest acknowledged record (`None`: none yet).
    pub end: Option<i64>,
    /// How many records were acknowledged in all.
    pub count: u64,
}

/// How a commit failed.
#[derive(Debug)]
pub(crate) enum CommitFailure {
    /// The transaction must be aborted; the instance can go on after that.
    Abortable(WeirError),
    /// The instance cannot go on: at-least-once commit errors, a producer
    /// fenced by a newer instance, brokers without transactions.
    Fatal(WeirError),
}

impl From<WeirError> for CommitFailure {
    fn from(error: WeirError) -> Self {
        CommitFailure::Fatal(error)
    }
}

/// The producer of a stream thread's task outputs: sink records,
/// repartition records, changelog writes and dead letters.
pub(crate) trait Output {
    /// Queues one record (waiting for room when the queue is full).
    fn send(&self, record: &OutputRecord) -> Result<(), WeirError>;
    /// Serves delivery reports, waiting up to `wait` for one; a failed
    /// delivery is an error.
    fn poll(&self, wait: Duration) -> Result<(), WeirError>;
    /// Whether the thread should stop processing until the brokers have
    /// acknowledged more of what it sent (see [`super::delivery_lag`]).
    fn behind(&self) -> bool;
    /// Waits until every queued record is acknowledged, or fails.
    fn flush(&self) -> Result<(), WeirError>;
    /// Drops the records queued and not yet sent (they belong to tasks
    /// whose assignment was lost); their deliveries fail silently.
    fn purge(&self);
    /// What was acknowledged of the records sent to `topic[partition]`
    /// with an explicit partition (changelog writes).
    fn acknowledged(&self, topic: &str, partition: i32) -> Acknowledged;
    /// Exactly-once: commits the open transaction with the consumed
    /// `offsets` (each with `metadata`), then opens the next one.
    fn commit_transaction(
        &self,
        offsets: &[PartitionOffset],
        metadata: Option<&str>,
        group: &GroupIdentity,
    ) -> Result<(), CommitFailure>;
    /// Exactly-once: aborts the open transaction and opens the next one.
    fn abort_transaction(&self) -> Result<(), WeirError>;
}

/// One record read back from a changelog partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChangelogRecord {
    pub offset: i64,
    pub key: Vec<u8>,
    /// `None`: a deletion.
    pub value: Option<Vec<u8>>,
}

/// Which part of a changelog partition to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChangelogRange {
    pub topic: Arc<str>,
    pub partition: i32,
    /// The first offset to read; `None`: the partition's beginning.
    pub from: Option<i64>,
    /// The offset to stop before; `None`: the partition's end.
    pub to: Option<i64>,
}

/// Why a changelog read did not finish.
#[derive(Debug)]
pub(crate) enum RestoreFailure {
    /// The start offset is outside the partition: a checkpoint is stale.
    OutOfRange,
    Failed(WeirError),
}

impl From<WeirError> for RestoreFailure {
    fn from(error: WeirError) -> Self {
        RestoreFailure::Failed(error)
    }
}

/// Takes the records of a changelog read, batch by batch, each with an
/// estimate of how many records remain.
pub(crate) type ChangelogVisitor<'a> = dyn FnMut(&[ChangelogRecord], u64) -> Result<(), WeirError> + 'a;

/// How far a read of part of a changelog range got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadProgress {
    /// Records remain: the next read starts at this offset.
    More(i64),
    /// The range is read: what was handed over reflects the changelog up
    /// to this offset (`range.to` when given).
    Done(i64),
}

/// Reads changelog partitions, for restores.
pub(crate) trait ChangelogSource {
    /// Hands the next records of `range` (from `range.from`) to `visit` in
    /// offset order, in batches, at most about `max_records` of them, and
    /// returns soon when none arrive, so that a restore can go on in slices
    /// between the stream thread's other work.
    /// [`RestoreFailure::OutOfRange`] when `range.from` is before the
    /// partition's first offset.
    fn read_some(
        &self,
        range: &ChangelogRange,
        max_records: usize,
        visit: &mut ChangelogVisitor<'_>,
    ) -> Result<ReadProgress, RestoreFailure>;

    /// Hands all of `range` to `visit`; returns the offset after it (see
    /// [`ReadProgress::Done`]).
    fn read(&self, range: &ChangelogRange, visit: &mut ChangelogVisitor<'_>) -> Result<i64, RestoreFailure> {
        let mut range = range.clone();
        loop {
            match self.read_some(&range, usize::MAX, visit)? {
                ReadProgress::More(next) => range.from = Some(next),
                ReadProgress::Done(end) => return Ok(end),
            }
        }
    }
}
