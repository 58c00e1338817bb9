//! One `spotrun train` per run directory: an exclusive advisory lock (`flock`) on `RUN_DIR/.lock`, held until the
//! process exits, so a second launch of the same run (a double submit, a requeued job whose first copy is still
//! saving) stops at once instead of interleaving checkpoints and metrics. The kernel drops the lock when the
//! process dies, however it dies, so a stale lock cannot exist. Sweep workers are guarded by their lease instead.
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{Error, Result};

/// The lock file's name inside the run directory.
pub const LOCK_FILE: &str = ".lock";

/// A held run-directory lock; released when dropped or when the process exits.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Creates `dir` if needed and takes its lock, or fails with [`Error::Busy`] naming the holder's pid.
    /// File systems without `flock` support go unlocked (a warning is returned with the lock).
    pub fn acquire(dir: &Path) -> Result<(RunLock, Option<String>)> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {
                // Record the holder for the message a second process prints; the lock itself is what counts.
                let _ = file.set_len(0).and_then(|_| writeln!(file, "{}", std::process::id()));
                Ok((RunLock { _file: file }, None))
            }
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.seek(SeekFrom::Start(0)).and_then(|_| file.read_to_string(&mut pid));
                let pid = pid.trim();
                let holder = if pid.is_empty() { String::new() } else { format!(" (pid {pid})") };
                Err(Error::Busy(format!(
                    "{}: another spotrun process{holder} is training this run; wait for it to finish, or stop it \
                     (it checkpoints on SIGTERM) and run the same command again",
                    dir.display()
                )))
            }
            Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => Ok((
                RunLock { _file: file },
                Some(format!("{}: this file system cannot lock files; nothing stops a second process", path.display())),
            )),
            Err(TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_until_the_first_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let (first, warning) = RunLock::acquire(&dir).unwrap();
        assert!(warning.is_none());
        let err = RunLock::acquire(&dir).unwrap_err().to_string();
        assert!(err.contains("another spotrun process") && err.contains(&format!("pid {}", std::process::id())));
        drop(first);
        assert!(RunLock::acquire(&dir).is_ok(), "dropping the lock releases it");
    }
}
