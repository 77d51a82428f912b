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
    Acknowledged, ChangelogRange, ChangelogRecord, ChangelogSource, Output, PartitionOffset, ReadProgress,
    RestoreFailure,
};
use super::checkpoint::Checkpoint;
use super::task::{Task, TaskId};
use crate::error::WeirError;
use crate::metrics::RuntimeMetrics;
use crate::record::{now_ms, OutputKind, OutputRecord, RawRecord};
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

/// A task whose stores are restoring, slice by slice, between the stream
/// thread's other work (Kafka Streams' state updater): its input is paused
/// until [`Restoration::finish`].
pub(crate) struct Restoration {
    id: TaskId,
    dir: PathBuf,
    exactly_once: bool,
    persistent: bool,
    /// `None` only while the stores are rebuilt (the old ones closed first).
    task: Option<Task>,
    stores: Vec<StoreRestore>,
    /// The store being restored.
    current: usize,
    /// Whether the stores were already wiped once after a start offset
    /// turned out to be outside its changelog.
    rebuilt: bool,
}

/// One store's range and how far its restore got.
struct StoreRestore {
    store: String,
    /// `from` moves on as slices are read.
    range: ChangelogRange,
    restored: u64,
    started: Option<std::time::Instant>,
    /// The offset the store reflects once its range is read.
    done: Option<i64>,
}

impl Restoration {
    /// Opens a task's stores (see the module documentation): decides where
    /// each restore starts (the checkpoint of a clean close, else the
    /// beginning of emptied stores) and stops (the last commit, or the end
    /// under exactly-once), and has `create` make the task. Nothing is read
    /// yet: [`Restoration::step`] does that.
    pub(crate) fn begin(
        request: &OpenRequest<'_>,
        create: &mut dyn FnMut() -> Result<Task, WeirError>,
    ) -> Result<Self, WeirError> {
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
        let mut stores: Vec<StoreRestore> = request
            .changelogs
            .iter()
            .map(|(store, topic)| {
                let key = (topic.clone(), id.partition);
                StoreRestore {
                    store: store.clone(),
                    range: ChangelogRange {
                        topic: topic.clone(),
                        partition: id.partition,
                        from: checkpoint
                            .as_ref()
                            .and_then(|c| c.offsets.get(&(topic.to_string(), id.partition)).copied()),
                        // A partition no commit has covered holds no committed state.
                        to: (!request.exactly_once)
                            .then(|| request.committed.get(&key).copied().flatten().unwrap_or(0)),
                    },
                    restored: 0,
                    started: None,
                    done: None,
                }
            })
            .collect();
        let ahead_of_commit = stores
            .iter()
            .any(|s| matches!((s.range.from, s.range.to), (Some(from), Some(to)) if from > to));
        if request.persistent && stores.iter().any(|s| s.range.from.is_none()) && dir.exists() {
            tracing::info!(task = %id, "no checkpoint; rebuilding the task's stores from their changelogs");
            wipe(dir, &mut stores)?;
        } else if ahead_of_commit {
            tracing::info!(task = %id, "the stores are ahead of the last commit; rebuilding them");
            wipe(dir, &mut stores)?;
        }
        Ok(Restoration {
            id: *id,
            dir: dir.clone(),
            exactly_once: request.exactly_once,
            persistent: request.persistent,
            task: Some(create()?),
            stores,
            current: 0,
            rebuilt: false,
        })
    }

    /// Restores about `max_records` more records (one slice); returns
    /// whether every store is restored. A start offset outside its
    /// changelog (a stale checkpoint) rebuilds the stores from the
    /// beginning, with a task `create` makes anew.
    pub(crate) fn step(
        &mut self,
        create: &mut dyn FnMut() -> Result<Task, WeirError>,
        source: &dyn ChangelogSource,
        metrics: &RuntimeMetrics,
        max_records: usize,
    ) -> Result<bool, WeirError> {
        let Some(restoring) = self.stores.get_mut(self.current) else {
            return Ok(true);
        };
        let task = self.task.as_mut().expect("a restoring task has its stores");
        let store = restoring.store.as_str();
        restoring.started.get_or_insert_with(std::time::Instant::now);
        let mut restored = 0u64;
        let read = source.read_some(
            &restoring.range,
            max_records,
            &mut |records: &[ChangelogRecord], remaining| {
                let mut writes = records
                    .iter()
                    .filter(|r| r.key != FENCE_KEY)
                    .map(|r| (r.key.as_slice(), r.value.as_deref()));
                task.restore(store, &mut writes)?;
                restored += records.len() as u64;
                metrics.restored(store, records.len() as u64, remaining);
                Ok(())
            },
        );
        restoring.restored += restored;
        match read {
            Ok(ReadProgress::More(next)) => restoring.range.from = Some(next),
            Ok(ReadProgress::Done(end)) => {
                metrics.restored(store, 0, 0);
                if restoring.restored > 0 {
                    tracing::info!(
                        task = %self.id, store, records = restoring.restored, to = ?restoring.range.to,
                        elapsed_ms = restoring.started.map_or(0, |s| s.elapsed().as_millis() as u64),
                        "store restored from its changelog"
                    );
                }
                restoring.done = Some(end);
                self.current += 1;
            }
            Err(RestoreFailure::OutOfRange) if !self.rebuilt => {
                tracing::warn!(task = %self.id, "the checkpoint points outside the changelog; rebuilding the task's stores");
                self.task = None;
                wipe(&self.dir, &mut self.stores)?;
                self.task = Some(create()?);
                self.current = 0;
                self.rebuilt = true;
            }
            Err(RestoreFailure::OutOfRange) => {
                return Err(WeirError::Kafka(format!(
                    "task {}: a changelog cannot be read from its beginning",
                    self.id
                )))
            }
            Err(RestoreFailure::Failed(error)) => return Err(error),
        }
        Ok(self.current == self.stores.len())
    }

    /// The restored task, ready to process: under at-least-once its
    /// changelogs are fenced and their tails compensated first (the
    /// compensating writes are sent before this returns).
    pub(crate) fn finish(
        mut self,
        owner: &str,
        source: &dyn ChangelogSource,
        output: &dyn Output,
    ) -> Result<(Task, TaskState), WeirError> {
        let mut task = self.task.take().expect("a restoring task has its stores");
        let changelogs = self
            .stores
            .iter()
            .map(|s| ChangelogState {
                store: s.store.clone(),
                topic: s.range.topic.clone(),
                partition: s.range.partition,
                restored_to: s.done.expect("finish follows a complete restore"),
                fence: None,
            })
            .collect();
        let mut state = TaskState {
            dir: self.dir.clone(),
            changelogs,
            exactly_once: self.exactly_once,
        };
        if !self.exactly_once {
            state.fence(owner, output)?;
            state.compensate_tails(&mut task, source, output)?;
        }
        Ok((task, state))
    }

    /// Stops a restore that has not finished (the partitions move, the
    /// instance stops). What is restored is a prefix of each changelog,
    /// which a checkpoint may name, so that the next open continues where
    /// this one stopped; the open rebuilds the stores if the prefix turns
    /// out to be ahead of the commit it restores to.
    pub(crate) fn suspend(mut self) -> Result<(), WeirError> {
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        task.flush()?;
        if !self.persistent {
            return Ok(());
        }
        let checkpoint = Checkpoint {
            offsets: self
                .stores
                .iter()
                .map(|s| {
                    let at = s.done.or(s.range.from).unwrap_or(0);
                    ((s.range.topic.to_string(), s.range.partition), at)
                })
                .collect(),
        };
        tracing::info!(task = %self.id, "restore stopped before its end; the next open continues it");
        drop(task);
        checkpoint.write(&self.dir)
    }

    /// The task whose stores are restoring.
    pub(crate) fn task(&self) -> Option<&Task> {
        self.task.as_ref()
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

impl TaskState {
    /// Writes a fence record to every changelog partition and waits for
    /// their offsets.
    fn fence(&mut self, owner: &str, output: &dyn Output) -> Result<(), WeirError> {
        let timestamp = now_ms();
        for changelog in &self.changelogs {
            output.send(&OutputRecord {
                topic: changelog.topic.clone(),
                partition: Some(changelog.partition),
                kind: OutputKind::Internal,
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

/// Deletes a task's state and makes its restore start from the beginning.
fn wipe(dir: &Path, stores: &mut [StoreRestore]) -> Result<(), WeirError> {
    remove_state(dir)?;
    for store in stores {
        store.range.from = None;
        store.restored = 0;
        store.done = None;
    }
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
