//! Checkpoint files: for each store of a task, the changelog offset up to
//! which the local store holds the changelog's writes *exactly*. A restore
//! starts there instead of at the changelog's beginning.
//!
//! A checkpoint is written only when a task closes cleanly, and deleted as
//! soon as the task reopens: from then on the store takes writes that no
//! commit covers yet, so after a crash there is no checkpoint and the store
//! is rebuilt.
//!
//! The file is `<task dir>/.checkpoint`, text, one `<topic> <partition>
//! <offset>` line per changelog partition after a version line. It is
//! replaced atomically (write, sync, rename), so a crash leaves the old
//! file or the new one, never a torn one.

use crate::error::WeirError;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

const CHECKPOINT_FILE: &str = ".checkpoint";
const CHECKPOINT_VERSION: &str = "weir-checkpoint 1";
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

/// The file's text; bytes that are not UTF-8 read as text no parser takes
/// (a damaged file counts as none, it does not stop the task).
fn read_text(path: &Path) -> Result<Option<String>, WeirError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8(bytes).unwrap_or_default())),
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
    use proptest::strategy::Strategy;

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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]

        /// A checkpoint file is local state a crash, a disk or a person can
        /// damage: any content reads as a checkpoint or as none.
        #[test]
        fn any_checkpoint_file_reads_as_a_checkpoint_or_none(
            text in proptest::prop_oneof![
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
                "weir-checkpoint 1\n([a-z .-]{0,12} -?[0-9]{0,20} -?[0-9]{0,25}\n){0,4}".prop_map(String::into_bytes),
            ]
        ) {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(CHECKPOINT_FILE), &text).unwrap();
            if let Some(checkpoint) = Checkpoint::read(dir.path()).unwrap() {
                checkpoint.write(dir.path()).unwrap();
                proptest::prop_assert_eq!(Checkpoint::read(dir.path()).unwrap(), Some(checkpoint));
            }
        }
    }
}
