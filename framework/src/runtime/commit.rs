//! The commit protocol's rules: what a task's commit names, and when a task
//! may commit at all. No Kafka client here: the task manager asks these
//! questions and carries out the answers through [`super::broker`].
//!
//! The invariants (numbered as in the design):
//! 1. A commit that names a task's input offsets names its changelog
//!    offsets too, and the pair is consistent: the changelog offsets cover
//!    exactly the store writes of the input records before the input
//!    offsets. So every commit of a task names *every* input partition
//!    ([`InputPositions`] starts from the group's committed offsets, read
//!    in the same request as the changelog offsets), and a task whose
//!    asynchronous nodes hold records does not commit: their upstream
//!    store writes are done, their input offsets must not be. A commit
//!    point first passes on the table changes the store caches deferred
//!    (their changelog records are store writes of input records before
//!    the input offsets), which may hand enrichments more records to hold.
//!    At a commit point such a task's input pauses until its records are released
//!    (under exactly-once, where one transaction holds every task's
//!    writes, no task commits until none holds records).
//! 2. Only the current owner commits: a task whose input partitions are
//!    not all in the consumer's current, not lost, assignment does not
//!    commit. Because some brokers take a stale member's commit (and no
//!    check of ours can rule out a member stopped between its check and its
//!    request), a task also refuses to commit when another writer's records
//!    follow its fence in a changelog (see [`super::state_manager`]); what
//!    a stale member commits before the new owner's fence is consistent.
//! 3. Every output of a record is acknowledged before its input offset is
//!    committed: at-least-once flushes the producer first; exactly-once
//!    commits outputs and offsets in one transaction.
//! 4. An error reading committed offsets is an error, never "offset 0"
//!    ([`super::broker::Group::committed`]).
//! 5. Exactly-once: outputs, changelog writes and offsets in one
//!    transaction; after an abort every task is rebuilt from its changelog.

use super::broker::PartitionOffset;
use super::state_manager::ForeignWrites;
use crate::error::WeirError;
use std::collections::HashMap;
use std::sync::Arc;

/// The next offset to read of each of a task's input partitions.
///
/// It starts from the group's committed offsets (0, the beginning, where
/// none is committed: the consumer resets to the earliest offset), so a
/// commit names every input even when the task has read only some since
/// it opened; a commit that left one out would keep whatever another
/// holder committed for it, which need not match this task's changelogs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InputPositions {
    partition: i32,
    next: Vec<(Arc<str>, i64)>,
}

impl InputPositions {
    /// `topics`' positions at `partition` as the group committed them.
    pub(crate) fn from_committed(
        topics: impl IntoIterator<Item = Arc<str>>,
        partition: i32,
        committed: &HashMap<(Arc<str>, i32), Option<i64>>,
    ) -> Self {
        let next = topics
            .into_iter()
            .map(|topic| {
                let offset = committed
                    .get(&(topic.clone(), partition))
                    .copied()
                    .flatten()
                    .unwrap_or(0);
                (topic, offset)
            })
            .collect();
        InputPositions { partition, next }
    }

    /// Records that the record at `offset` of `topic` was processed.
    pub(crate) fn processed(&mut self, topic: &str, offset: i64) {
        if let Some((_, next)) = self.next.iter_mut().find(|(t, _)| &**t == topic) {
            *next = offset + 1;
        }
    }

    /// The next offset to process of `topic`.
    pub(crate) fn next_of(&self, topic: &str) -> Option<i64> {
        self.next.iter().find(|(t, _)| &**t == topic).map(|(_, next)| *next)
    }

    /// Where the consumer reads each input from, and what a commit names.
    pub(crate) fn offsets(&self) -> impl Iterator<Item = PartitionOffset> + '_ {
        self.next.iter().map(|(topic, offset)| PartitionOffset {
            topic: topic.clone(),
            partition: self.partition,
            offset: *offset,
        })
    }

    pub(crate) fn topics(&self) -> impl Iterator<Item = &Arc<str>> {
        self.next.iter().map(|(topic, _)| topic)
    }

    pub(crate) fn partition(&self) -> i32 {
        self.partition
    }
}

/// What a task may do at a commit point.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Commit these offsets: the inputs', then the changelogs'.
    Commit(Vec<PartitionOffset>),
    /// Its asynchronous nodes hold records: pause its input and commit
    /// once they are released.
    Drain,
    /// Not all of its partitions are this consumer's: never commit for it.
    NotOwned,
    /// Another writer's records follow its fence: it must not commit, and
    /// is reopened.
    Foreign(ForeignWrites),
    /// Its stores are restoring: it has not fenced or processed anything.
    Restoring,
}

/// What the task manager knows of one task at a commit point.
pub(crate) struct Candidate<'a> {
    pub inputs: &'a InputPositions,
    /// Whether every input partition is in the consumer's assignment.
    pub owned: bool,
    pub held_records: usize,
    /// The changelog offsets the task's state reflects (after a flush),
    /// or the foreign writes that make them unusable; `None` while its
    /// stores restore.
    pub changelogs: Option<Result<Vec<PartitionOffset>, ForeignWrites>>,
}

/// The verdict on one task (invariants 1 and 2).
pub(crate) fn verdict(candidate: Candidate<'_>) -> Verdict {
    if !candidate.owned {
        return Verdict::NotOwned;
    }
    if candidate.held_records > 0 {
        return Verdict::Drain;
    }
    match candidate.changelogs {
        None => Verdict::Restoring,
        Some(Err(foreign)) => Verdict::Foreign(foreign),
        Some(Ok(changelogs)) => Verdict::Commit(candidate.inputs.offsets().chain(changelogs).collect()),
    }
}

/// Exactly-once: the waits between rewinds after aborted transactions,
/// and when to give up. Each rewind rebuilds the tasks' state from their
/// changelogs; a cause that persists (an authorization the brokers refuse,
/// a record they never take) would otherwise rebuild it in a loop.
#[derive(Debug)]
pub(crate) struct Rewinds {
    in_a_row: u32,
    max: u32,
}

impl Rewinds {
    const FIRST_WAIT: std::time::Duration = std::time::Duration::from_millis(100);
    const LONGEST_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

    pub(crate) fn new(max: u32) -> Self {
        Rewinds { in_a_row: 0, max }
    }

    /// Another transaction aborted on `cause`: how long to wait before the
    /// next, or the error to stop on once `max` aborted in a row.
    pub(crate) fn next(&mut self, cause: &WeirError) -> Result<std::time::Duration, WeirError> {
        self.in_a_row += 1;
        if self.in_a_row > self.max {
            return Err(WeirError::Kafka(format!(
                "{} transactions in a row were aborted (transaction.max.rewinds is {}); the last: {cause}",
                self.in_a_row, self.max
            )));
        }
        let doubled = Self::FIRST_WAIT.saturating_mul(1u32 << (self.in_a_row - 1).min(16));
        Ok(doubled.min(Self::LONGEST_WAIT))
    }

    /// A transaction committed: the count starts again.
    pub(crate) fn committed(&mut self) {
        self.in_a_row = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positions() -> InputPositions {
        let committed = HashMap::from([(("users".into(), 3), Some(40)), (("prefs".into(), 3), None)]);
        InputPositions::from_committed(["users".into(), "prefs".into()], 3, &committed)
    }

    fn offset(topic: &str, offset: i64) -> PartitionOffset {
        PartitionOffset {
            topic: topic.into(),
            partition: 3,
            offset,
        }
    }

    #[test]
    fn every_input_is_named_from_the_committed_offsets_on() {
        let mut inputs = positions();
        assert_eq!(
            inputs.offsets().collect::<Vec<_>>(),
            [offset("users", 40), offset("prefs", 0)]
        );
        inputs.processed("prefs", 7);
        assert_eq!(
            inputs.offsets().collect::<Vec<_>>(),
            [offset("users", 40), offset("prefs", 8)]
        );
    }

    #[test]
    fn a_task_commits_its_whole_pair_only_when_owned_restored_drained_and_alone_in_its_changelogs() {
        let inputs = positions();
        let candidate = |owned, held_records, changelogs| Candidate {
            inputs: &inputs,
            owned,
            held_records,
            changelogs,
        };
        let changelog = || Some(Ok(vec![offset("app-users-changelog", 12)]));
        match verdict(candidate(true, 0, changelog())) {
            Verdict::Commit(offsets) => assert_eq!(
                offsets,
                [
                    offset("users", 40),
                    offset("prefs", 0),
                    offset("app-users-changelog", 12)
                ]
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(verdict(candidate(false, 0, changelog())), Verdict::NotOwned));
        assert!(matches!(verdict(candidate(false, 3, changelog())), Verdict::NotOwned));
        assert!(matches!(verdict(candidate(true, 3, changelog())), Verdict::Drain));
        let foreign = ForeignWrites {
            topic: "app-users-changelog".into(),
            partition: 3,
            fence: 10,
            end: 14,
            own: 2,
        };
        assert!(matches!(
            verdict(candidate(true, 0, Some(Err(foreign)))),
            Verdict::Foreign(_)
        ));
        assert!(matches!(verdict(candidate(true, 0, None)), Verdict::Restoring));
        assert!(matches!(verdict(candidate(false, 0, None)), Verdict::NotOwned));
    }

    #[test]
    fn rewinds_wait_longer_each_time_and_stop_after_the_most_in_a_row() {
        let cause = WeirError::Kafka("the transaction was aborted".into());
        let mut rewinds = Rewinds::new(8);
        let waits: Vec<u128> = (0..8).map(|_| rewinds.next(&cause).unwrap().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 6400, 10_000]);
        let error = rewinds.next(&cause).unwrap_err().to_string();
        assert!(
            error.contains("9 transactions in a row") && error.contains("aborted"),
            "{error}"
        );
        rewinds.committed();
        assert_eq!(rewinds.next(&cause).unwrap().as_millis(), 100);
    }
}
