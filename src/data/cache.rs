//! The data cache: where prepared data (tokenized text) lives, keyed by what it was made from.
//!
//! An entry is a directory `<root>/<kind>-<key>` whose key is a SHA-256 over the inputs' identity (path, size and
//! modification time of every file, and the settings that shape the result), so changed inputs make a new entry and
//! never a stale hit. An entry is written into a scratch sibling and renamed into place once complete (then the
//! parent directory is fsynced): a reader sees a whole entry or none, and two processes preparing the same entry at
//! once both end with the one that was renamed first. Imports only `config` (and `super::DataError`).
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use super::DataError;
use crate::config::DataConfig;

/// The cache root: `data.cache_dir`, else `$XDG_CACHE_HOME/spotrun/data`, else `~/.cache/spotrun/data`.
pub(crate) fn root(cfg: &DataConfig) -> PathBuf {
    if let Some(dir) = &cfg.cache_dir {
        return dir.clone();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("spotrun").join("data")
}

/// A key being built: settings and file identities fed to SHA-256, each length-prefixed so no two lists of parts
/// hash alike.
pub(crate) struct Key(Sha256);

impl Key {
    /// A key for entries of `kind` (`text`) made by format `version` of spotrun's writer.
    pub(crate) fn new(kind: &str, version: u32) -> Key {
        let mut k = Key(Sha256::new());
        k.part(kind.as_bytes());
        k.part(&version.to_le_bytes());
        k
    }

    pub(crate) fn part(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    /// A file's identity: its path (absolute when it can be made so), size and modification time.
    pub(crate) fn file(&mut self, path: &Path, key: &str) -> Result<(), DataError> {
        let m = std::fs::metadata(path).map_err(|source| DataError::Input {
            path: path.to_path_buf(),
            key: key.into(),
            message: format!("cannot be read: {source}"),
        })?;
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let mtime = m.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).unwrap_or_default();
        self.part(abs.as_os_str().as_encoded_bytes());
        self.part(&m.len().to_le_bytes());
        self.part(&mtime.as_nanos().to_le_bytes());
        Ok(())
    }

    /// The entry's directory name: `<kind>-<first 20 hex digits>`.
    pub(crate) fn finish(self, kind: &str) -> String {
        let digest = self.0.finalize();
        let hex: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
        format!("{kind}-{hex}")
    }
}

/// A cache entry being written: a scratch directory beside the final one, removed on drop unless published.
pub(crate) struct Scratch {
    pub(crate) dir: PathBuf,
    done: bool,
}

impl Scratch {
    /// Creates `<root>/.<name>.<pid>.<nanos>` (and the root).
    pub(crate) fn new(root: &Path, name: &str) -> Result<Scratch, DataError> {
        let nanos = std::time::SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let dir = root.join(format!(".{name}.{}.{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| cache_err(&dir, e))?;
        Ok(Scratch { dir, done: false })
    }

    /// Writes `bytes` as `name` inside the scratch directory, fsynced.
    pub(crate) fn write(&self, name: &str, bytes: &[u8]) -> Result<(), DataError> {
        use std::io::Write as _;
        let path = self.dir.join(name);
        let mut f = std::fs::File::create(&path).map_err(|e| cache_err(&path, e))?;
        f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| cache_err(&path, e))
    }

    /// Renames the scratch directory to `to` and fsyncs the parent. When another process published `to` first,
    /// this copy is dropped and theirs is used (same key, same content).
    pub(crate) fn publish(mut self, to: &Path) -> Result<(), DataError> {
        match std::fs::rename(&self.dir, to) {
            Ok(()) => self.done = true,
            Err(_) if to.join(DONE).exists() => return Ok(()),
            Err(e) => return Err(cache_err(to, e)),
        }
        if let Some(parent) = to.parent() {
            std::fs::File::open(parent).and_then(|d| d.sync_all()).map_err(|e| cache_err(parent, e))?;
        }
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The file every complete entry holds (written last into the scratch directory).
pub(crate) const DONE: &str = "meta.json";

/// Whether `dir` is a complete entry.
pub(crate) fn complete(dir: &Path) -> bool {
    dir.join(DONE).is_file()
}

pub(crate) fn cache_err(path: &Path, source: std::io::Error) -> DataError {
    DataError::Cache { path: path.to_path_buf(), source }
}

/// The files under `dir`, recursively, that `keep` accepts (names starting with `.` skipped, as hidden): what a
/// text or image-folder source reads, and what its cache key covers.
pub(crate) fn files_under(dir: &Path, keep: &dyn Fn(&Path) -> bool) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let p = entry.path();
        if p.is_dir() {
            out.extend(files_under(&p, keep)?);
        } else if keep(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_parts_and_a_scratch_entry_is_published_or_removed() {
        let key = |parts: &[&[u8]]| {
            let mut k = Key::new("text", 1);
            parts.iter().for_each(|p| k.part(p));
            k.finish("text")
        };
        assert_eq!(key(&[b"ab", b"c"]), key(&[b"ab", b"c"]));
        assert_ne!(key(&[b"ab", b"c"]), key(&[b"a", b"bc"]), "parts are length-prefixed");
        let root = tempfile::tempdir().unwrap();
        let s = Scratch::new(root.path(), "x").unwrap();
        let scratch = s.dir.clone();
        s.write("a", b"1").unwrap();
        drop(s);
        assert!(!scratch.exists(), "an unpublished entry is removed");
        let s = Scratch::new(root.path(), "x").unwrap();
        s.write(DONE, b"{}").unwrap();
        s.publish(&root.path().join("x")).unwrap();
        assert!(complete(&root.path().join("x")));
        let again = Scratch::new(root.path(), "x").unwrap();
        let dir = again.dir.clone();
        again.write(DONE, b"{}").unwrap();
        again.publish(&root.path().join("x")).unwrap();
        assert!(!dir.exists(), "a second writer's copy is dropped");
    }
}
