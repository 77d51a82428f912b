//! Locks in the state directory: an instance's on its application
//! directory, for its life, and a task's on its task directory, from the
//! task's open to its close.
//!
//! The instance lock keeps two instances off one state directory. The task
//! lock is for the stream threads of one instance: the group can give a
//! task to one thread while another still has it open without having
//! noticed that it lost it (it stalled past its session, or took too long
//! in a rebalance). The new owner then waits for the directory instead of
//! wiping, restoring into or checkpointing stores the old owner still
//! writes, and the old owner's close, which may delete the directory,
//! cannot reach the new owner's stores. Kafka Streams' state directory
//! keeps per-task locks for the same reason.
//!
//! Both are advisory `flock`s, which two opens of a file in one process
//! hold apart as they do in two processes. A task's lock file sits beside
//! its directory, not inside it, because dropping a task's state deletes
//! the directory.

use crate::error::WeirError;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// Opens (creating) `path` and locks it; `None` while another holder has it.
pub(crate) fn try_lock_file(path: &Path) -> Result<Option<File>, WeirError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| WeirError::StateDir(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(WeirError::StateDir(format!("cannot lock {}: {e}", path.display()))),
    }
}

/// The lock of one task directory, taken when free; released when dropped.
pub(crate) struct TaskDirLock {
    path: PathBuf,
    held: Option<File>,
}

impl TaskDirLock {
    /// The lock of `task_dir`, not taken yet.
    pub(crate) fn new(task_dir: &Path) -> Self {
        TaskDirLock {
            path: task_dir.with_extension("lock"),
            held: None,
        }
    }

    /// Takes the lock unless another holder has it; returns whether this
    /// one holds it now.
    pub(crate) fn try_take(&mut self) -> Result<bool, WeirError> {
        if self.held.is_none() {
            if let Some(parent) = self.path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| WeirError::StateDir(format!("cannot create {}: {e}", parent.display())))?;
            }
            self.held = try_lock_file(&self.path)?;
        }
        Ok(self.held.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_directory_has_one_holder_at_a_time_even_within_a_process() {
        let app = tempfile::tempdir().unwrap();
        let task_dir = app.path().join("1_0");
        let mut first = TaskDirLock::new(&task_dir);
        let mut second = TaskDirLock::new(&task_dir);
        assert!(first.try_take().unwrap());
        assert!(!second.try_take().unwrap(), "held by the first");
        assert!(first.try_take().unwrap(), "taking a held lock again is a no-op");
        // Deleting the task's state leaves the lock where it was.
        std::fs::create_dir_all(&task_dir).unwrap();
        std::fs::remove_dir_all(&task_dir).unwrap();
        assert!(!second.try_take().unwrap());
        drop(first);
        assert!(second.try_take().unwrap(), "free once the first is dropped");
        let mut other_task = TaskDirLock::new(&app.path().join("1_1"));
        assert!(other_task.try_take().unwrap(), "each task has a lock of its own");
    }
}
