//! One `spotrun train` per run directory: an exclusive advisory lock (`flock`) on `RUN_DIR/.lock` and on `.lock`
//! in the checkpoint directory, held until the process exits, so a second launch of the same run (a double submit, a requeued job whose first copy is still
//! saving) stops at once instead of interleaving checkpoints and metrics. The kernel drops the lock when the
//! process dies, however it dies, so a stale lock cannot exist. Sweep workers are guarded by their lease instead.
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{Error, Result};

/// The lock file's name inside the run directory.
pub(super) const LOCK_FILE: &str = ".lock";

/// `ENOLCK` on Linux: the file system (typically NFS without a lock manager) cannot lock.
const ENOLCK: i32 = 37;

/// A held run-directory lock (or none, where the file system cannot lock); released when dropped or when the
/// process exits.
#[derive(Debug)]
pub(super) struct RunLock {
    _file: Option<File>,
}

impl RunLock {
    /// Takes the lock of the existing directory `dir`, or fails with [`Error::Busy`] naming the holder's pid. Where
    /// locking is impossible (no `flock` support, a read-only directory without a lock file) the run goes on
    /// unlocked, with a warning returned beside the lock.
    pub(super) fn acquire(dir: &Path) -> Result<(RunLock, Option<String>)> {
        let path = dir.join(LOCK_FILE);
        let unlocked = |why: String| {
            let warning =
                format!("{}: cannot lock ({why}); nothing stops a second process on this run", path.display());
            Ok((RunLock { _file: None }, Some(warning)))
        };
        // Read-write to record the pid; a read-only directory (a finished run on a read-only mount) still locks
        // through a read-only descriptor, or goes unlocked when it has no lock file yet.
        let opened = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path);
        let (mut file, writable) = match opened {
            Ok(f) => (f, true),
            Err(e) => match File::open(&path) {
                Ok(f) => (f, false),
                Err(_) => return unlocked(e.to_string()),
            },
        };
        match file.try_lock() {
            Ok(()) => {
                // Record the holder for the message a second process prints; the lock itself is what counts.
                if writable {
                    let _ = file.set_len(0).and_then(|_| writeln!(file, "{}", std::process::id()));
                }
                Ok((RunLock { _file: Some(file) }, None))
            }
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.seek(SeekFrom::Start(0)).and_then(|_| file.read_to_string(&mut pid));
                let pid = pid.trim();
                let holder = if pid.is_empty() { String::new() } else { format!(" (pid {pid})") };
                Err(Error::Busy(format!(
                    "{}: another spotrun process{holder} is training a run here; wait for it to finish, or stop it \
                     (it checkpoints on SIGTERM) and run the same command again",
                    dir.display()
                )))
            }
            // No lock support (ENOTSUP), or NFS without a lock daemon (ENOLCK, 37 on Linux): go on unlocked.
            Err(TryLockError::Error(e))
                if e.kind() == std::io::ErrorKind::Unsupported || e.raw_os_error() == Some(ENOLCK) =>
            {
                unlocked(e.to_string())
            }
            Err(TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }
}

/// The locks a standalone run takes: its run directory and its checkpoint directory (two runs sharing one
/// checkpoint directory through `checkpoint.dir` would mix their checkpoints). A directory named twice (the same
/// path spelt two ways) is locked once.
#[derive(Debug, Default)]
pub(super) struct RunLocks {
    pending: Vec<std::path::PathBuf>,
    held: Vec<(std::path::PathBuf, RunLock, Option<String>)>,
}

impl RunLocks {
    pub(super) fn new(dirs: Vec<std::path::PathBuf>) -> RunLocks {
        RunLocks { pending: dirs, held: Vec::new() }
    }

    /// Locks each pending directory that exists, or every one (creating it) when `create`.
    pub(super) fn take(&mut self, create: bool) -> Result<()> {
        let (now, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.pending).into_iter().partition(|d| create || d.exists());
        self.pending = later;
        for dir in now {
            if std::fs::metadata(&dir).is_ok_and(|m| !m.is_dir()) {
                let e = std::io::Error::new(std::io::ErrorKind::NotADirectory, "exists but is not a directory");
                return Err(Error::io(&dir, e));
            }
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            let real = std::fs::canonicalize(&dir).map_err(|e| Error::io(&dir, e))?;
            if self.held.iter().all(|(p, _, _)| *p != real) {
                let (lock, warning) = RunLock::acquire(&real)?;
                self.held.push((real, lock, warning));
            }
        }
        Ok(())
    }

    /// Why a directory could not be locked, one line each.
    pub(super) fn warnings(&self) -> impl Iterator<Item = &str> {
        self.held.iter().filter_map(|(_, _, w)| w.as_deref())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_until_the_first_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        std::fs::create_dir(&dir).unwrap();
        let (first, warning) = RunLock::acquire(&dir).unwrap();
        assert!(warning.is_none());
        let err = RunLock::acquire(&dir).unwrap_err().to_string();
        assert!(err.contains("another spotrun process") && err.contains(&format!("pid {}", std::process::id())));
        drop(first);
        assert!(RunLock::acquire(&dir).is_ok(), "dropping the lock releases it");
    }

    #[test]
    fn run_locks_take_existing_directories_first_and_lock_a_path_spelt_twice_once() {
        let tmp = tempfile::tempdir().unwrap();
        let (run, ckpt) = (tmp.path().join("run"), tmp.path().join("run/checkpoints"));
        let again = tmp.path().join("run/checkpoints/../checkpoints");
        let mut locks = RunLocks::new(vec![run.clone(), ckpt.clone(), again]);
        locks.take(false).unwrap();
        assert!(!run.exists(), "nothing is created before take(true)");
        locks.take(true).unwrap();
        assert_eq!(locks.held.len(), 2, "the same directory is locked once");
        assert!(RunLock::acquire(&ckpt).is_err(), "the checkpoint directory is locked too");
    }
}
