//! The order in which a task with several input partitions processes
//! their records (Kafka Streams' partition group): the record with the
//! smallest timestamp among the partitions' next ones, so that a join or
//! a window sees its inputs in time order however the consumer's fetches
//! interleave. A task with one input partition processes its records as
//! they arrive; this is for the others.
//!
//! Records wait in a queue per partition. A partition whose queue is
//! empty holds the task back while the consumer knows it has records not
//! handed out yet (its fetch is on the way), for at most
//! `input.wait.max.ms`; an empty partition with nothing more to read does
//! not. Timestamps are the records' own, as the brokers have them: a
//! source's timestamp extractor runs when the record is processed.

use crate::record::{InputRecord, RawRecord};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How many records a partition's queue holds before the consumer pauses
/// the partition. Large enough that a fetch's records fit: a paused
/// partition's fetched records are dropped and fetched again.
pub(crate) const MAX_QUEUED: usize = 10_000;

/// A record waiting in its partition's queue.
pub(crate) struct Queued {
    pub offset: i64,
    pub record: RawRecord,
}

struct Queue {
    topic: Arc<str>,
    records: VecDeque<Queued>,
    /// Since when the task has waited for this (empty) partition.
    waiting_since: Option<Instant>,
}

/// The queues of one task's input partitions (one per source topic; a
/// task reads one partition of each).
pub(crate) struct PartitionGroup {
    queues: Vec<Queue>,
    max_wait: Duration,
}

/// What the task should do next.
pub(crate) enum Next {
    /// Process this record of `topic`.
    Record(Arc<str>, Queued),
    /// Wait: an empty partition has records on the way.
    Wait,
    /// Nothing is queued.
    Empty,
}

impl PartitionGroup {
    pub(crate) fn new(topics: impl IntoIterator<Item = Arc<str>>, max_wait: Duration) -> Self {
        PartitionGroup {
            queues: topics
                .into_iter()
                .map(|topic| Queue {
                    topic,
                    records: VecDeque::new(),
                    waiting_since: None,
                })
                .collect(),
            max_wait,
        }
    }

    /// Queues a copy of `record`, read at `offset` of `topic`.
    pub(crate) fn push(&mut self, topic: &str, offset: i64, record: &InputRecord<'_>) {
        if let Some(queue) = self.queues.iter_mut().find(|q| &*q.topic == topic) {
            queue.waiting_since = None;
            queue.records.push_back(Queued {
                offset,
                record: RawRecord {
                    key: record.key.map(<[u8]>::to_vec),
                    value: record.value.map(<[u8]>::to_vec),
                    timestamp: record.timestamp,
                    headers: record.headers.to_headers(),
                },
            });
        }
    }

    /// The next record to process: the earliest of the queues' first
    /// records, unless an empty queue's partition has records on the way
    /// (`has_unread(topic)`) and the task has not waited for it for
    /// `max_wait` yet.
    pub(crate) fn next(&mut self, mut has_unread: impl FnMut(&str) -> bool) -> Next {
        let mut wait = false;
        for queue in self.queues.iter_mut().filter(|q| q.records.is_empty()) {
            if has_unread(&queue.topic) {
                let since = *queue.waiting_since.get_or_insert_with(Instant::now);
                wait |= since.elapsed() < self.max_wait;
            } else {
                queue.waiting_since = None;
            }
        }
        let earliest = self
            .queues
            .iter()
            .enumerate()
            .filter_map(|(index, q)| q.records.front().map(|head| (head.record.timestamp, index)))
            .min();
        match (earliest, wait) {
            (None, _) => Next::Empty,
            (Some(_), true) => Next::Wait,
            (Some((_, index)), false) => {
                let queue = &mut self.queues[index];
                let record = queue.records.pop_front().expect("a queued record");
                Next::Record(queue.topic.clone(), record)
            }
        }
    }

    /// The topics whose queue is full: the consumer should pause them.
    pub(crate) fn full(&self) -> impl Iterator<Item = &Arc<str>> {
        self.queues
            .iter()
            .filter(|q| q.records.len() >= MAX_QUEUED)
            .map(|q| &q.topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(max_wait: Duration) -> PartitionGroup {
        PartitionGroup::new([Arc::from("a"), Arc::from("b")], max_wait)
    }

    fn push(group: &mut PartitionGroup, topic: &str, offset: i64, timestamp: i64) {
        let headers = Vec::new();
        let record = InputRecord {
            key: None,
            value: Some(b"v"),
            timestamp,
            headers: &headers,
        };
        group.push(topic, offset, &record);
    }

    fn taken(group: &mut PartitionGroup, unread: &[&str]) -> Vec<(String, i64)> {
        let mut taken = Vec::new();
        while let Next::Record(topic, record) = group.next(|topic| unread.contains(&topic)) {
            taken.push((topic.to_string(), record.offset));
        }
        taken
    }

    #[test]
    fn records_are_taken_earliest_first_across_partitions() {
        let mut group = group(Duration::from_secs(60));
        for (offset, timestamp) in [(0, 10), (1, 30), (2, 50)] {
            push(&mut group, "a", offset, timestamp);
        }
        for (offset, timestamp) in [(0, 20), (1, 40)] {
            push(&mut group, "b", offset, timestamp);
        }
        let order = taken(&mut group, &[]);
        let expected = [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2)];
        assert_eq!(order, expected.map(|(t, o)| (t.to_string(), o)));
        assert!(matches!(group.next(|_| false), Next::Empty));
    }

    #[test]
    fn a_partition_with_records_on_the_way_holds_the_others_back_for_a_while() {
        let mut group = group(Duration::from_millis(50));
        push(&mut group, "a", 0, 10);
        push(&mut group, "a", 1, 20);
        assert!(matches!(group.next(|topic| topic == "b"), Next::Wait));
        // Its record arrives: it is earlier, so it goes first.
        push(&mut group, "b", 0, 5);
        assert_eq!(taken(&mut group, &["b"])[0], ("b".to_string(), 0));
        // `b` is empty again with more on the way: wait, then go on.
        push(&mut group, "a", 2, 30);
        assert!(matches!(group.next(|topic| topic == "b"), Next::Wait));
        std::thread::sleep(Duration::from_millis(60));
        assert!(matches!(group.next(|topic| topic == "b"), Next::Record(..)));
    }

    #[test]
    fn a_full_queue_asks_for_its_partition_to_pause() {
        let mut group = group(Duration::ZERO);
        for offset in 0..MAX_QUEUED as i64 {
            push(&mut group, "a", offset, offset);
        }
        assert_eq!(group.full().map(|t| t.to_string()).collect::<Vec<_>>(), ["a"]);
    }
}
