//! What a task's state directory and its commits record about its stores.
//!
//! Two records, because they answer two questions:
//! - [`Checkpoint`] (`<task dir>/.checkpoint`): which changelog offsets the
//!   local store holds *exactly*. Written only when a task closes cleanly and
//!   deleted as soon as it reopens, since from then on the store takes writes
//!   that no commit covers yet. No checkpoint means the local store cannot be
//!   trusted and is rebuilt.
//! - [`CommitPosition`]: with each commit of a task's input offsets, the
//!   changelog offsets its stores had reached. A restore stops there, so the
//!   rebuilt state is the state the committed offsets belong to: the records
//!   after the commit are processed again from the same state, and produce the
//!   same outputs, even when some of their changelog writes reached the broker
//!   before a crash and their other outputs did not. It travels in the commit's
//!   metadata (so that any instance can read it) and in
//!   `<task dir>/.committed` (for brokers that do not return commit metadata).
//!
//! Both files are text, replaced atomically (write, sync, rename), so a crash
//! leaves the old file or the new one, never a torn one.

use crate::error::WeirError;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

const CHECKPOINT_FILE: &str = ".checkpoint";
const CHECKPOINT_VERSION: &str = "weir-checkpoint 1";
const COMMIT_FILE: &str = ".committed";
const COMMIT_VERSION: &str = "weir-committed 1";
/// The first word of a commit's metadata, and the encoding's version.
const METADATA_TAG: &str = "weir-changelogs 1";
/// Brokers refuse commit metadata above `offset.metadata.max.bytes`
/// (4096 by default); a longer one is left out.
const METADATA_LIMIT: usize = 4000;

/// Changelog offsets by (topic, partition): the next offset to restore from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub offsets: BTreeMap<(String, i32), i64>,
}

impl Checkpoint {
    /// The task's checkpoint, or `None` when it has none. A file that cannot
    /// be parsed counts as none (with a warning): the restore then starts
    /// from the beginning, which is always correct.
    pub fn read(task_dir: &Path) -> Result<Option<Checkpoint>, WeirError> {
        let Some(text) = read_text(&task_dir.join(CHECKPOINT_FILE))? else {
            return Ok(None);
        };
        let parsed = strip_version(&text, CHECKPOINT_VERSION).and_then(|lines| {
            let mut offsets = BTreeMap::new();
            for line in lines {
                let (topic, partition, offset) = topic_partition_offset(line)?;
                offsets.insert((topic, partition), offset);
            }
            Some(Checkpoint { offsets })
        });
        Ok(warn_if_unreadable(parsed, task_dir, CHECKPOINT_FILE))
    }

    /// Replaces the task's checkpoint file.
    pub fn write(&self, task_dir: &Path) -> Result<(), WeirError> {
        let mut text = format!("{CHECKPOINT_VERSION}\n");
        for ((topic, partition), offset) in &self.offsets {
            text.push_str(&format!("{topic} {partition} {offset}\n"));
        }
        write_atomically(task_dir, CHECKPOINT_FILE, &text)
    }

    /// Removes the task's checkpoint file, if any.
    pub fn delete(task_dir: &Path) -> Result<(), WeirError> {
        let path = task_dir.join(CHECKPOINT_FILE);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(WeirError::StateDir(format!("cannot remove {}: {e}", path.display())))
            }
            _ => Ok(()),
        }
    }
}

/// One commit of a task: the input offsets committed, and the changelog
/// offset each of its stores had reached (its changelog partitions are the
/// task's partition).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CommitPosition {
    /// (topic, partition) → the next offset to consume.
    pub inputs: BTreeMap<(String, i32), i64>,
    /// Store name → the offset after its last changelog write.
    pub changelog_ends: BTreeMap<String, i64>,
}

impl CommitPosition {
    /// The changelog ends as commit metadata; `None` when the task has no
    /// changelog or the text would be too long for a broker to keep.
    pub(crate) fn metadata(&self) -> Option<String> {
        if self.changelog_ends.is_empty() {
            return None;
        }
        let mut text = METADATA_TAG.to_string();
        for (store, end) in &self.changelog_ends {
            text.push_str(&format!(" {store}={end}"));
        }
        (text.len() <= METADATA_LIMIT).then_some(text)
    }

    /// The changelog ends in a commit's metadata, if it has weir's.
    pub(crate) fn ends_from_metadata(metadata: &str) -> Option<BTreeMap<String, i64>> {
        let ends = metadata.strip_prefix(METADATA_TAG)?;
        ends.split_whitespace()
            .map(|entry| {
                let (store, end) = entry.rsplit_once('=')?;
                Some((store.to_string(), end.parse().ok()?))
            })
            .collect()
    }

    /// The changelog ends that belong with the committed input offsets of a
    /// task (`committed`: offset and metadata per input partition), or
    /// `None` when no commit says.
    ///
    /// The metadata wins: each partition carries the ends of the last commit
    /// that included it, and changelog offsets only grow, so the largest is
    /// the latest commit's. Without metadata (some brokers drop it), the
    /// local record of the last commit counts if the broker holds exactly
    /// its input offsets, which tells that this commit went through.
    pub(crate) fn committed_ends(
        committed: &BTreeMap<(String, i32), (i64, String)>,
        local: Option<&CommitPosition>,
    ) -> Option<BTreeMap<String, i64>> {
        let mut from_metadata: Option<BTreeMap<String, i64>> = None;
        for ends in committed.values().filter_map(|(_, m)| Self::ends_from_metadata(m)) {
            let merged = from_metadata.get_or_insert_with(BTreeMap::new);
            for (store, end) in ends {
                let entry = merged.entry(store).or_insert(end);
                *entry = (*entry).max(end);
            }
        }
        if from_metadata.is_some() {
            return from_metadata;
        }
        let local = local?;
        let went_through = !local.inputs.is_empty()
            && local
                .inputs
                .iter()
                .all(|(partition, offset)| committed.get(partition).map(|(o, _)| o) == Some(offset));
        went_through.then(|| local.changelog_ends.clone())
    }

    /// The task's record of its last commit, if any (an unreadable file
    /// counts as none, with a warning).
    pub(crate) fn read(task_dir: &Path) -> Result<Option<CommitPosition>, WeirError> {
        let Some(text) = read_text(&task_dir.join(COMMIT_FILE))? else {
            return Ok(None);
        };
        let parsed = strip_version(&text, COMMIT_VERSION).and_then(|lines| {
            let mut position = CommitPosition::default();
            for line in lines {
                match line.split_once(' ')? {
                    ("input", rest) => {
                        let (topic, partition, offset) = topic_partition_offset(rest)?;
                        position.inputs.insert((topic, partition), offset);
                    }
                    ("changelog", rest) => {
                        let (store, end) = rest.rsplit_once(' ')?;
                        position.changelog_ends.insert(store.to_string(), end.parse().ok()?);
                    }
                    _ => return None,
                }
            }
            Some(position)
        });
        Ok(warn_if_unreadable(parsed, task_dir, COMMIT_FILE))
    }

    /// Replaces the task's record of its last commit.
    pub(crate) fn write(&self, task_dir: &Path) -> Result<(), WeirError> {
        let mut text = format!("{COMMIT_VERSION}\n");
        for ((topic, partition), offset) in &self.inputs {
            text.push_str(&format!("input {topic} {partition} {offset}\n"));
        }
        for (store, end) in &self.changelog_ends {
            text.push_str(&format!("changelog {store} {end}\n"));
        }
        write_atomically(task_dir, COMMIT_FILE, &text)
    }
}

fn read_text(path: &Path) -> Result<Option<String>, WeirError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(WeirError::StateDir(format!("cannot read {}: {e}", path.display()))),
    }
}

/// The non-empty lines after the version line, if it is `version`.
fn strip_version<'a>(text: &'a str, version: &str) -> Option<impl Iterator<Item = &'a str>> {
    let mut lines = text.lines();
    (lines.next()? == version).then(|| lines.filter(|l| !l.trim().is_empty()))
}

/// `<topic> <partition> <offset>`.
fn topic_partition_offset(line: &str) -> Option<(String, i32, i64)> {
    let mut fields = line.rsplitn(3, ' ');
    let offset = fields.next()?.parse().ok()?;
    let partition = fields.next()?.parse().ok()?;
    Some((fields.next()?.to_string(), partition, offset))
}

fn warn_if_unreadable<T>(parsed: Option<T>, task_dir: &Path, file: &str) -> Option<T> {
    if parsed.is_none() {
        tracing::warn!(path = %task_dir.join(file).display(), "ignoring an unreadable file");
    }
    parsed
}

fn write_atomically(task_dir: &Path, file: &str, text: &str) -> Result<(), WeirError> {
    let path = task_dir.join(file);
    let temporary = task_dir.join(format!("{file}.tmp"));
    let io = |e: std::io::Error| WeirError::StateDir(format!("cannot write {}: {e}", path.display()));
    std::fs::create_dir_all(task_dir).map_err(io)?;
    let mut handle = std::fs::File::create(&temporary).map_err(io)?;
    handle.write_all(text.as_bytes()).map_err(io)?;
    handle.sync_all().map_err(io)?;
    std::fs::rename(&temporary, &path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_a_damaged_file_counts_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Checkpoint::read(dir.path()).unwrap(), None);
        let mut checkpoint = Checkpoint::default();
        checkpoint.offsets.insert(("app-users-changelog".into(), 3), 1042);
        checkpoint.offsets.insert(("app-a b-changelog".into(), 0), 7);
        checkpoint.write(dir.path()).unwrap();
        assert_eq!(Checkpoint::read(dir.path()).unwrap(), Some(checkpoint));
        std::fs::write(dir.path().join(CHECKPOINT_FILE), "garbage").unwrap();
        assert_eq!(Checkpoint::read(dir.path()).unwrap(), None);
        Checkpoint::delete(dir.path()).unwrap();
        Checkpoint::delete(dir.path()).unwrap();
        assert!(!dir.path().join(CHECKPOINT_FILE).exists());
    }

    fn position() -> CommitPosition {
        CommitPosition {
            inputs: [(("users".to_string(), 2), 40), (("preferences".to_string(), 2), 17)].into(),
            changelog_ends: [("users".to_string(), 35), ("profiles".to_string(), 12)].into(),
        }
    }

    #[test]
    fn commit_positions_round_trip_through_files_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(CommitPosition::read(dir.path()).unwrap(), None);
        position().write(dir.path()).unwrap();
        assert_eq!(CommitPosition::read(dir.path()).unwrap(), Some(position()));
        std::fs::write(dir.path().join(COMMIT_FILE), format!("{COMMIT_VERSION}\nnonsense\n")).unwrap();
        assert_eq!(CommitPosition::read(dir.path()).unwrap(), None);

        let metadata = position().metadata().unwrap();
        assert_eq!(metadata, "weir-changelogs 1 profiles=12 users=35");
        assert_eq!(
            CommitPosition::ends_from_metadata(&metadata),
            Some(position().changelog_ends)
        );
        assert_eq!(CommitPosition::ends_from_metadata("someone else's"), None);
        assert_eq!(CommitPosition::default().metadata(), None);
        let long = CommitPosition {
            changelog_ends: (0..500).map(|i| (format!("store-{i}"), i)).collect(),
            ..CommitPosition::default()
        };
        assert_eq!(long.metadata(), None);
    }

    #[test]
    fn committed_ends_come_from_the_latest_metadata_then_from_a_matching_local_record() {
        let committed = |users: i64, users_meta: &str, prefs: i64, prefs_meta: &str| {
            BTreeMap::from([
                (("users".to_string(), 2), (users, users_meta.to_string())),
                (("preferences".to_string(), 2), (prefs, prefs_meta.to_string())),
            ])
        };
        // The partitions were last committed by different commits: the later wins.
        let ends = CommitPosition::committed_ends(
            &committed(
                40,
                "weir-changelogs 1 users=35 profiles=12",
                9,
                "weir-changelogs 1 users=30 profiles=14",
            ),
            Some(&position()),
        );
        assert_eq!(
            ends,
            Some([("users".to_string(), 35), ("profiles".to_string(), 14)].into())
        );
        // No metadata: the local record counts when its commit went through...
        let ends = CommitPosition::committed_ends(&committed(40, "", 17, ""), Some(&position()));
        assert_eq!(ends, Some(position().changelog_ends));
        // ...and not when the broker holds other offsets.
        assert_eq!(
            CommitPosition::committed_ends(&committed(38, "", 17, ""), Some(&position())),
            None
        );
        assert_eq!(CommitPosition::committed_ends(&committed(40, "", 17, ""), None), None);
    }
}
