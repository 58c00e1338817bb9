//! `write_atomic`: the only way spotrun writes a file it must not tear.
//!
//! Guarantee: after `write_atomic(path, bytes)` returns `Ok`, `path` holds exactly `bytes` and survives a crash
//! or power loss; if it returns `Err` or the process dies at any point, `path` holds its previous content (or
//! does not exist) — never a mix. Mechanism: write a scratch sibling `.<name>.tmp-<host>-<pid>-<nanos>-<n>` (unique across
//! hosts and containers sharing a volume, and created exclusively), fsync it, rename it
//! over `path`, fsync the directory. A drop guard removes the scratch file on every error path.
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);
/// Test-only fault: when non-zero, the next write_atomic writes this many bytes and then fails with ENOSPC.
static ENOSPC_AFTER: AtomicU64 = AtomicU64::new(0);

/// Makes the next [`write_atomic`] behave like a full disk after `bytes` bytes (for tests of the failure path).
pub(crate) fn inject_enospc_once(bytes: usize) {
    ENOSPC_AFTER.store(bytes.max(1) as u64, Ordering::SeqCst);
}

/// Removes the scratch file unless disarmed.
struct Scratch(Option<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// `<host>-<pid>-<nanos>-<n>`: a scratch-name suffix no other process on any host sharing the volume uses (PIDs
/// alone repeat across containers: every pod's first process is PID 1).
pub(crate) fn unique_suffix() -> String {
    let host: String = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(16)
        .collect();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{host}-{}-{nanos}-{n}", std::process::id())
}

/// Atomically replaces `path` with `bytes` (see the module docs for the guarantee).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, &mut |w| w.write_all(bytes))
}

/// Like [`write_atomic`], with the content streamed by `fill` (buffered) instead of held in memory.
pub(super) fn write_atomic_with<T>(
    path: &Path,
    fill: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<T>,
) -> std::io::Result<T> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| std::io::Error::other("write_atomic: path has no file name"))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), unique_suffix()));
    let file = File::create_new(&tmp)?;
    let mut guard = Scratch(Some(tmp.clone()));
    let limit = ENOSPC_AFTER.swap(0, Ordering::SeqCst);
    let mut w = std::io::BufWriter::with_capacity(
        1 << 20,
        Limited { inner: file, left: if limit > 0 { Some(limit) } else { None } },
    );
    let out = fill(&mut w)?;
    let file = w.into_inner().map_err(|e| e.into_error())?.inner;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    guard.0 = None;
    File::open(&dir)?.sync_all()?;
    Ok(out)
}

/// A file that fails like a full disk (ENOSPC) after `left` bytes, for the test-only fault hook.
struct Limited {
    inner: File,
    left: Option<u64>,
}

impl Write for Limited {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.left {
            Some(0) => Err(std::io::Error::from_raw_os_error(28)),
            Some(left) => {
                let n = self.inner.write(&buf[..buf.len().min(left as usize)])?;
                self.left = Some(left - n as u64);
                Ok(n)
            }
            None => self.inner.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Appends one line to `path` and fsyncs (for `metrics.jsonl`: a crash loses at most the line being written).
pub(crate) fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(format!("{line}\n").as_bytes())?;
    f.sync_data()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_scratch_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two!").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two!");
        let names: Vec<_> = fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [std::ffi::OsString::from("a.bin")]);
    }

    #[test]
    fn failure_keeps_the_old_file_and_cleans_up() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.bin");
        write_atomic(&p, b"old").unwrap();
        // Renaming a file over a non-empty directory fails after the scratch file was written.
        let target = d.path().join("dir");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("x"), b"x").unwrap();
        assert!(write_atomic(&target, b"new").is_err());
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 2);
    }
}
