//! A task's stores from restore to close (Kafka Streams' state manager):
//! where each store's restore starts and stops, the fence and the
//! compensation of an uncommitted tail under at-least-once, which changelog
//! offsets a commit may name, and the checkpoint of a clean close.
//!
//! A local store is trusted only after a clean close (it then has a
//! [`Checkpoint`]); otherwise it is rebuilt from its changelog.
//!
//! At-least-once. The group keeps, with each task's input offsets, the
//! changelog offsets its state had at that commit (see [`super::commit`]).
//! A task that takes over restores each store *to that offset*, not to the
//! changelog's end: the input records after the commit are processed again
//! and must meet the state they met the first time, or a table's update
//! would see its own new value as the old one and an aggregation would
//! never subtract the old. Before a task's first commit the committed state
//! is empty. The records after the committed offset (the *tail*: writes of
//! an owner that failed before its next commit, or of a stale owner that
//! still runs) stay in the changelog, and a later restore to a later commit
//! would read them. So on opening, a task
//! 1. writes a *fence* record to each changelog partition and waits for its
//!    offset `F`;
//! 2. reads the tail `[committed, F)` and, for every key in it, writes the
//!    key's committed value (or a deletion) after the fence, so that from
//!    `F` on the changelog says again what the commit said, and has the
//!    task's tables republish those keys downstream (what the rolled-back
//!    writes published may stand in topics; see
//!    [`Republish`](crate::processor::Republish));
//! 3. from then on expects every record of the partition after `F` to be
//!    its own. A commit names the partition's offset only when the records
//!    the producer has had acknowledged since the fence fill `[F, end)`
//!    exactly; a record of another writer in between means that another
//!    instance believes it owns the task (one of the two is a stale member
//!    that has not noticed yet). Then the task does not commit and is
//!    reopened, which compensates the foreign records as a tail.
//!
//! A stale owner that writes after the new owner's fence thus never gets a
//! commit past it, and what it wrote before the fence is the new owner's
//! tail. The fence record has a reserved key that restores skip.
//!
//! Exactly-once. Changelog writes are part of the task's transactions, and
//! a restore reads the changelog `read_committed` to its end, which is the
//! last committed transaction; a stale owner's transactions are fenced by
//! the brokers. There is no fence record and no tail.

use super::broker::{
    Acknowledged, ChangelogRange, ChangelogRecord, ChangelogSource, Output, PartitionOffset, RestoreFailure,
};
use super::checkpoint::Checkpoint;
use super::task::{Task, TaskId};
use crate::error::WeirError;
use crate::metrics::RuntimeMetrics;
use crate::record::{now_ms, OutputRecord, RawRecord};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The key of fence records, which no store holds: restores and tail reads
/// skip it. Compaction keeps the latest fence of a partition.
pub(crate) const FENCE_KEY: &[u8] = b"\x00\xffweir.fence\xff\x00";

/// Where a task's stores come from when it opens.
pub(crate) struct OpenRequest<'a> {
    pub id: TaskId,
    /// `<state.dir>/<application.id>/<task id>`.
    pub dir: PathBuf,
    /// Each store of the task with its changelog topic.
    pub changelogs: Vec<(String, Arc<str>)>,
    /// At-least-once: the group's committed offsets of the changelog
    /// partitions (`None`: no commit has covered a write yet).
    /// Exactly-once: not used.
    pub committed: &'a HashMap<(Arc<str>, i32), Option<i64>>,
    pub exactly_once: bool,
    /// Whether stores keep their contents across restarts (checkpoints).
    pub persistent: bool,
    /// Written into fence records, to tell in the changelog who fenced.
    pub owner: &'a str,
}

/// A task's changelog partition and this incarnation's place in it.
#[derive(Debug, Clone)]
struct ChangelogState {
    store: String,
    topic: Arc<str>,
    partition: i32,
    /// The offset the store reflects after its restore.
    restored_to: i64,
    /// At-least-once: the fence this incarnation wrote.
    fence: Option<Fence>,
}

/// A fence record's offset, and the producer's acknowledged count for the
/// partition once it was acknowledged (so, counting the fence).
#[derive(Debug, Clone, Copy)]
struct Fence {
    offset: i64,
    acknowledged: u64,
}

/// Another writer's records after this task's fence.
#[derive(Debug)]
pub(crate) struct ForeignWrites {
    pub topic: Arc<str>,
    pub partition: i32,
    pub fence: i64,
    pub end: i64,
    pub own: u64,
}

impl std::fmt::Display for ForeignWrites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}[{}] holds {} records after this task's fence at {} that it did not write: another instance writes \
             to it",
            self.topic,
            self.partition,
            ((self.end - self.fence) as u64).saturating_sub(self.own),
            self.fence
        )
    }
}

/// The stores of one open task.
pub(crate) struct TaskState {
    dir: PathBuf,
    changelogs: Vec<ChangelogState>,
    exactly_once: bool,
}

impl TaskState {
    /// Opens a task's stores (see the module documentation): decides where
    /// each restore starts (the checkpoint of a clean close, else the
    /// beginning of emptied stores) and stops (the last commit, or the end
    /// under exactly-once), has `create` make the task, restores it, and
    /// under at-least-once fences the changelogs and compensates their
    /// tails. The compensating writes are sent before this returns.
    pub(crate) fn open(
        request: &OpenRequest<'_>,
        create: &mut dyn FnMut() -> Result<Task, WeirError>,
        source: &dyn ChangelogSource,
        output: &dyn Output,
        metrics: &RuntimeMetrics,
    ) -> Result<(Task, TaskState), WeirError> {
        let OpenRequest { id, dir, .. } = request;
        let checkpoint = if request.persistent {
            Checkpoint::read(dir)?
        } else {
            None
        };
        if request.persistent {
            // From now on the stores take writes that no commit covers: a
            // crash must leave no checkpoint behind.
            Checkpoint::delete(dir)?;
        }
        let mut ranges: Vec<(String, ChangelogRange)> = request
            .changelogs
            .iter()
            .map(|(store, topic)| {
                let key = (topic.clone(), id.partition);
                let range = ChangelogRange {
                    topic: topic.clone(),
                    partition: id.partition,
                    from: checkpoint
                        .as_ref()
                        .and_then(|c| c.offsets.get(&(topic.to_string(), id.partition)).copied()),
                    // A partition no commit has covered holds no committed state.
                    to: (!request.exactly_once).then(|| request.committed.get(&key).copied().flatten().unwrap_or(0)),
                };
                (store.clone(), range)
            })
            .collect();
        let ahead_of_commit = ranges
            .iter()
            .any(|(_, r)| matches!((r.from, r.to), (Some(from), Some(to)) if from > to));
        if request.persistent && ranges.iter().any(|(_, r)| r.from.is_none()) && dir.exists() {
            tracing::info!(task = %id, "no checkpoint; rebuilding the task's stores from their changelogs");
            wipe(dir, &mut ranges)?;
        } else if ahead_of_commit {
            tracing::info!(task = %id, "the stores are ahead of the last commit; rebuilding them");
            wipe(dir, &mut ranges)?;
        }
        let (mut task, changelogs) = match restore(*id, create, &ranges, source, metrics)? {
            Some(restored) => restored,
            None => {
                tracing::warn!(task = %id, "the checkpoint points outside the changelog; rebuilding the task's stores");
                wipe(dir, &mut ranges)?;
                restore(*id, create, &ranges, source, metrics)?.ok_or_else(|| {
                    WeirError::Kafka(format!("task {id}: a changelog cannot be read from its beginning"))
                })?
            }
        };
        let mut state = TaskState {
            dir: dir.clone(),
            changelogs,
            exactly_once: request.exactly_once,
        };
        if !request.exactly_once {
            state.fence(request.owner, output)?;
            state.compensate_tails(&mut task, source, output)?;
        }
        Ok((task, state))
    }

    /// Writes a fence record to every changelog partition and waits for
    /// their offsets.
    fn fence(&mut self, owner: &str, output: &dyn Output) -> Result<(), WeirError> {
        let timestamp = now_ms();
        for changelog in &self.changelogs {
            output.send(&OutputRecord {
                topic: changelog.topic.clone(),
                partition: Some(changelog.partition),
                record: RawRecord {
                    key: Some(FENCE_KEY.to_vec()),
                    value: Some(owner.as_bytes().to_vec()),
                    timestamp,
                    headers: Vec::new(),
                },
            })?;
        }
        output.flush()?;
        for changelog in &mut self.changelogs {
            let Acknowledged { end, count } = output.acknowledged(&changelog.topic, changelog.partition);
            let end = end.ok_or_else(|| {
                WeirError::Kafka(format!(
                    "the fence of {}[{}] was flushed but not acknowledged",
                    changelog.topic, changelog.partition
                ))
            })?;
            changelog.fence = Some(Fence {
                offset: end - 1,
                acknowledged: count,
            });
        }
        Ok(())
    }

    /// Reads each changelog's tail (from the restored offset to the fence),
    /// writes the committed value of every key in it again, and has the
    /// store's table republish those keys downstream (what the rolled-back
    /// writes published may stand in topics).
    fn compensate_tails(
        &self,
        task: &mut Task,
        source: &dyn ChangelogSource,
        output: &dyn Output,
    ) -> Result<(), WeirError> {
        for changelog in &self.changelogs {
            let Some(fence) = changelog.fence else { continue };
            if fence.offset <= changelog.restored_to {
                continue;
            }
            let mut keys: HashSet<Vec<u8>> = HashSet::new();
            let tail = ChangelogRange {
                topic: changelog.topic.clone(),
                partition: changelog.partition,
                from: Some(changelog.restored_to),
                to: Some(fence.offset),
            };
            source
                .read(&tail, &mut |records, _| {
                    keys.extend(records.iter().filter(|r| r.key != FENCE_KEY).map(|r| r.key.clone()));
                    Ok(())
                })
                .map_err(|failure| match failure {
                    RestoreFailure::OutOfRange => WeirError::Kafka(format!(
                        "the tail of {}[{}] from {} is no longer in the changelog",
                        changelog.topic, changelog.partition, changelog.restored_to
                    )),
                    RestoreFailure::Failed(error) => error,
                })?;
            if keys.is_empty() {
                continue;
            }
            tracing::info!(
                task = %task.id(), store = %changelog.store, keys = keys.len(),
                from = changelog.restored_to, to = fence.offset,
                "writing the committed values of the keys an uncommitted changelog tail changed"
            );
            task.relog(&changelog.store, &mut keys.iter().map(Vec::as_slice))?;
            task.republish(&changelog.store, &mut keys.iter().map(Vec::as_slice))?;
            for record in task.drain_output() {
                output.send(&record)?;
            }
        }
        Ok(())
    }

    /// The changelog offsets a commit of this task names now (exact once
    /// the producer is flushed): after each partition's last acknowledged
    /// write. Under at-least-once an error when another writer's records
    /// sit after the fence. Exactly-once commits no changelog offsets.
    pub(crate) fn committable_offsets(&self, output: &dyn Output) -> Result<Vec<PartitionOffset>, ForeignWrites> {
        if self.exactly_once {
            return Ok(Vec::new());
        }
        self.changelogs
            .iter()
            .map(|changelog| {
                let fence = changelog.fence.expect("at-least-once tasks are fenced when they open");
                let acknowledged = output.acknowledged(&changelog.topic, changelog.partition);
                let end = acknowledged.end.unwrap_or(fence.offset + 1);
                let own = acknowledged.count + 1 - fence.acknowledged;
                if (end - fence.offset) as u64 != own {
                    return Err(ForeignWrites {
                        topic: changelog.topic.clone(),
                        partition: changelog.partition,
                        fence: fence.offset,
                        end,
                        own,
                    });
                }
                Ok(PartitionOffset {
                    topic: changelog.topic.clone(),
                    partition: changelog.partition,
                    offset: end,
                })
            })
            .collect()
    }

    /// Flushes the task's stores and writes the checkpoint of a clean close:
    /// each store reflects its changelog up to `offsets` (what the commit
    /// just made named) or, where none is given, up to its restore.
    pub(crate) fn checkpoint(
        &self,
        task: &mut Task,
        offsets: &[PartitionOffset],
        output: &dyn Output,
        persistent: bool,
    ) -> Result<(), WeirError> {
        task.flush()?;
        if !persistent {
            return Ok(());
        }
        let named: BTreeMap<(&str, i32), i64> = offsets.iter().map(|o| ((&*o.topic, o.partition), o.offset)).collect();
        let checkpoint = Checkpoint {
            offsets: self
                .changelogs
                .iter()
                .map(|c| {
                    let acknowledged = output.acknowledged(&c.topic, c.partition).end.unwrap_or(0);
                    let offset = named
                        .get(&(&*c.topic, c.partition))
                        .copied()
                        .unwrap_or_else(|| acknowledged.max(c.restored_to));
                    ((c.topic.to_string(), c.partition), offset)
                })
                .collect(),
        };
        checkpoint.write(&self.dir)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Creates the task and replays each range into its store; `None` when a
/// start offset is out of range.
fn restore(
    id: TaskId,
    create: &mut dyn FnMut() -> Result<Task, WeirError>,
    ranges: &[(String, ChangelogRange)],
    source: &dyn ChangelogSource,
    metrics: &RuntimeMetrics,
) -> Result<Option<(Task, Vec<ChangelogState>)>, WeirError> {
    let mut task = create()?;
    let mut changelogs = Vec::with_capacity(ranges.len());
    for (store, range) in ranges {
        let started = std::time::Instant::now();
        let mut restored = 0u64;
        let read = source.read(range, &mut |records: &[ChangelogRecord], remaining| {
            let mut writes = records
                .iter()
                .filter(|r| r.key != FENCE_KEY)
                .map(|r| (r.key.as_slice(), r.value.as_deref()));
            task.restore(store, &mut writes)?;
            restored += records.len() as u64;
            metrics.restored(store, records.len() as u64, remaining);
            Ok(())
        });
        metrics.restored(store, 0, 0);
        let restored_to = match read {
            Ok(next) => next,
            Err(RestoreFailure::OutOfRange) => return Ok(None),
            Err(RestoreFailure::Failed(error)) => return Err(error),
        };
        if restored > 0 {
            tracing::info!(
                task = %id, store, records = restored, from = ?range.from, to = ?range.to,
                elapsed_ms = started.elapsed().as_millis() as u64, "store restored from its changelog"
            );
        }
        changelogs.push(ChangelogState {
            store: store.clone(),
            topic: range.topic.clone(),
            partition: range.partition,
            restored_to,
            fence: None,
        });
    }
    Ok(Some((task, changelogs)))
}

/// Deletes a task's state and makes its restore start from the beginning.
fn wipe(dir: &Path, ranges: &mut [(String, ChangelogRange)]) -> Result<(), WeirError> {
    remove_state(dir)?;
    ranges.iter_mut().for_each(|(_, r)| r.from = None);
    Ok(())
}

/// Deletes a task's state directory, if any.
pub(crate) fn remove_state(dir: &Path) -> Result<(), WeirError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(WeirError::StateDir(format!("cannot remove {}: {e}", dir.display())))
        }
        _ => Ok(()),
    }
}
