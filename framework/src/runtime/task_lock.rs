//! Exclusive use of a task's state directory, from the task's open to its
//! close.
//!
//! The group can give a task to one stream thread while another still has
//! it open without having noticed that it lost it: a thread of the same
//! instance (or of another instance on the same state directory) that
//! stalled past its session or took too long in a rebalance. The new owner
//! then waits for the directory instead of wiping, restoring into or
//! checkpointing stores the old owner still writes, and the old owner's
//! close, which may delete the directory, cannot reach the new owner's
//! stores. Kafka Streams' state directory keeps per-task locks for the same
//! reason.
//!
//! The lock is an advisory `flock` on a file beside the task's directory,
//! not inside it, because dropping a task's state deletes its directory.
//! Each open of the file is a holder of its own, so two threads of one
//! process exclude each other as two processes do.

use crate::error::WeirError;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// The lock of one task directory; released when dropped.
pub(crate) struct TaskDirLock {
    file: File,
    path: PathBuf,
    held: bool,
}

impl TaskDirLock {
    /// Opens the lock file of `task_dir` (creating it), without taking it.
    pub(crate) fn open(task_dir: &Path) -> Result<Self, WeirError> {
        let path = task_dir.with_extension("lock");
        let error =
            |e: std::io::Error| WeirError::StateDir(format!("cannot open the lock file {}: {e}", path.display()));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(error)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(error)?;
        Ok(TaskDirLock {
            file,
            path,
            held: false,
        })
    }

    /// Takes the lock unless another holder has it; returns whether this
    /// one holds it now.
    pub(crate) fn try_take(&mut self) -> Result<bool, WeirError> {
        if !self.held {
            match self.file.try_lock() {
                Ok(()) => self.held = true,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => {
                    return Err(WeirError::StateDir(format!("cannot lock {}: {e}", self.path.display())))
                }
            }
        }
        Ok(self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_directory_has_one_holder_at_a_time_even_within_a_process() {
        let app = tempfile::tempdir().unwrap();
        let task_dir = app.path().join("1_0");
        let mut first = TaskDirLock::open(&task_dir).unwrap();
        let mut second = TaskDirLock::open(&task_dir).unwrap();
        assert!(first.try_take().unwrap());
        assert!(!second.try_take().unwrap(), "held by the first");
        assert!(first.try_take().unwrap(), "taking a held lock again is a no-op");
        // Deleting the task's state leaves the lock where it was.
        std::fs::create_dir_all(&task_dir).unwrap();
        std::fs::remove_dir_all(&task_dir).unwrap();
        assert!(!second.try_take().unwrap());
        drop(first);
        assert!(second.try_take().unwrap(), "free once the first is dropped");
        let mut other_task = TaskDirLock::open(&app.path().join("1_1")).unwrap();
        assert!(other_task.try_take().unwrap(), "each task has a lock of its own");
    }
}
