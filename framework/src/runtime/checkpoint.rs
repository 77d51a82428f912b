//! Checkpoint files: for each store of a task, the changelog offset up to
//! which the local store already holds the changelog's writes. A restore
//! starts there instead of at the changelog's beginning.
//!
//! The file is `<task dir>/.checkpoint`, text, one `<topic> <partition>
//! <offset>` line per changelog partition after a version line. It is
//! replaced atomically (write, sync, rename), so a crash leaves the old
//! file or the new one, never a torn one.

use crate::error::WeirError;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

const FILE_NAME: &str = ".checkpoint";
const VERSION: &str = "weir-checkpoint 1";

/// Changelog offsets by (topic, partition): the next offset to restore from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub offsets: BTreeMap<(String, i32), i64>,
}

impl Checkpoint {
    fn path(task_dir: &Path) -> PathBuf {
        task_dir.join(FILE_NAME)
    }

    /// The task's checkpoint, or `None` when it has none. A file that cannot
    /// be parsed counts as none (with a warning): the restore then starts
    /// from the beginning, which is always correct.
    pub fn read(task_dir: &Path) -> Result<Option<Checkpoint>, WeirError> {
        let path = Self::path(task_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(WeirError::StateDir(format!("cannot read {}: {e}", path.display()))),
        };
        match Self::parse(&text) {
            Some(checkpoint) => Ok(Some(checkpoint)),
            None => {
                tracing::warn!(path = %path.display(), "ignoring an unreadable checkpoint file");
                Ok(None)
            }
        }
    }

    fn parse(text: &str) -> Option<Checkpoint> {
        let mut lines = text.lines();
        if lines.next()? != VERSION {
            return None;
        }
        let mut offsets = BTreeMap::new();
        for line in lines.filter(|l| !l.trim().is_empty()) {
            let mut fields = line.rsplitn(3, ' ');
            let offset = fields.next()?.parse().ok()?;
            let partition = fields.next()?.parse().ok()?;
            let topic = fields.next()?.to_string();
            offsets.insert((topic, partition), offset);
        }
        Some(Checkpoint { offsets })
    }

    /// Replaces the task's checkpoint file.
    pub fn write(&self, task_dir: &Path) -> Result<(), WeirError> {
        let path = Self::path(task_dir);
        let temporary = task_dir.join(format!("{FILE_NAME}.tmp"));
        let mut text = format!("{VERSION}\n");
        for ((topic, partition), offset) in &self.offsets {
            text.push_str(&format!("{topic} {partition} {offset}\n"));
        }
        let io = |e: std::io::Error| WeirError::StateDir(format!("cannot write {}: {e}", path.display()));
        std::fs::create_dir_all(task_dir).map_err(io)?;
        let mut file = std::fs::File::create(&temporary).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&temporary, &path).map_err(io)
    }

    /// Removes the task's checkpoint file, if any.
    pub fn delete(task_dir: &Path) -> Result<(), WeirError> {
        let path = Self::path(task_dir);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(WeirError::StateDir(format!("cannot remove {}: {e}", path.display())))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_tolerates_a_damaged_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Checkpoint::read(dir.path()).unwrap(), None);
        let mut checkpoint = Checkpoint::default();
        checkpoint.offsets.insert(("app-users-changelog".into(), 3), 1042);
        checkpoint.offsets.insert(("app-a b-changelog".into(), 0), 7);
        checkpoint.write(dir.path()).unwrap();
        assert_eq!(Checkpoint::read(dir.path()).unwrap(), Some(checkpoint));
        std::fs::write(dir.path().join(FILE_NAME), "garbage").unwrap();
        assert_eq!(Checkpoint::read(dir.path()).unwrap(), None);
        Checkpoint::delete(dir.path()).unwrap();
        Checkpoint::delete(dir.path()).unwrap();
        assert!(!dir.path().join(FILE_NAME).exists());
    }
}
