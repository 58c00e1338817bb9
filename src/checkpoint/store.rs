//! A directory of checkpoints (`checkpoint.dir`, possibly a mounted volume): commit, verify, list, load,
//! and apply retention.
//!
//! Layout: `<dir>/ckpt-<step, 10 digits>/{model.safetensors, state.safetensors, manifest.json}`. Each file is
//! written atomically (scratch, fsync, rename, fsync dir), the two tensor files on two threads at once so one's
//! fsync overlaps the other's writing; the manifest, holding a size and CRC-32 for every other file, is written
//! after both and is the commit point; the new checkpoint is read back and verified before retention may delete anything older.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tch::{Device, Tensor};

use super::atomic::write_atomic;
use super::manifest::{crc32_hex, FileEntry, Manifest, ManifestError, MANIFEST};
use super::retention::{self, Entry, State};
use super::tensors::{from_bytes, save, TensorIoError};

/// Model weights file inside a checkpoint (PyTorch `state_dict` names).
pub(super) const MODEL_FILE: &str = "model.safetensors";
/// Optimizer, grad-scaler and epoch-accumulator tensors.
pub(crate) const STATE_FILE: &str = "state.safetensors";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint write failed: {path}: {source}; the previous checkpoint is intact")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("checkpoint {path} failed verification right after writing: {source}")]
    Verify { path: PathBuf, source: Box<VerifyError> },
    #[error(transparent)]
    Tensor(#[from] TensorIoError),
    #[error("checkpoint writer thread panicked")]
    Thread,
}

/// Everything a checkpoint holds, already copied to host memory (safe to write while training goes on).
pub struct Snapshot {
    pub model: Vec<(String, Tensor)>,
    pub state: Vec<(String, Tensor)>,
    /// Filled except `files`, `save_seconds` and `created_unix_ms`, which the store sets.
    pub manifest: Manifest,
    pub started: Instant,
}

/// A committed, verified checkpoint.
#[derive(Debug, Clone)]
pub struct Committed {
    pub dir: PathBuf,
    pub step: u64,
    pub save_seconds: f64,
}

/// A checkpoint read back from disk.
pub struct Loaded {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub model: HashMap<String, Tensor>,
    pub state: HashMap<String, Tensor>,
}

/// Test-only fault injection, from the environment: `SPOTRUN_TEST_WRITE_DELAY_MS` sleeps before each file of a
/// checkpoint (to widen the window for kill tests); `SPOTRUN_TEST_ENOSPC_AT_SAVE=N` makes the N-th save of the
/// process fail like a full disk half-way through its first file.
#[derive(Debug, Clone, Default)]
struct Hooks {
    write_delay: Option<Duration>,
    enospc_at_save: Option<u64>,
}

impl Hooks {
    /// Compiled in only with the `test-hooks` feature (the integration tests'); a release binary ignores them.
    #[cfg(feature = "test-hooks")]
    fn from_env() -> Hooks {
        let num = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
        Hooks {
            write_delay: num("SPOTRUN_TEST_WRITE_DELAY_MS").map(Duration::from_millis),
            enospc_at_save: num("SPOTRUN_TEST_ENOSPC_AT_SAVE"),
        }
    }

    #[cfg(not(feature = "test-hooks"))]
    fn from_env() -> Hooks {
        Hooks::default()
    }
}

pub struct Store {
    dir: PathBuf,
    keep_last: usize,
    hooks: Hooks,
    saves: std::sync::atomic::AtomicU64,
}

impl Store {
    pub fn new(dir: PathBuf, keep_last: usize) -> Store {
        Store { dir, keep_last, hooks: Hooks::from_env(), saves: Default::default() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `snap` as a new checkpoint, commits it with its manifest, and verifies it. On failure the
    /// half-written directory is removed (it was never committed) and older checkpoints are untouched.
    /// Retention is separate ([`Store::apply_retention`]) so deleting old checkpoints stays off the save path.
    pub fn commit(&self, snap: Snapshot) -> Result<Committed, CheckpointError> {
        let dir = self.dir.join(format!("ckpt-{:010}", snap.manifest.step));
        let result = self.write(&dir, snap);
        let never_committed = matches!(std::fs::symlink_metadata(dir.join(MANIFEST)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound);
        if result.is_err() && never_committed {
            let _ = std::fs::remove_dir_all(&dir);
        }
        result
    }

    fn write(&self, dir: &Path, mut snap: Snapshot) -> Result<Committed, CheckpointError> {
        let n = self.saves.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let werr = |path: &Path, source| CheckpointError::Write { path: path.to_path_buf(), source };
        self.clear_way(dir).map_err(|e| werr(dir, e))?;
        std::fs::create_dir_all(dir).map_err(|e| werr(dir, e))?;
        let write = |name: &str, tensors: &[(String, Tensor)]| -> Result<FileEntry, CheckpointError> {
            self.delay();
            let written = save(&dir.join(name), tensors).map_err(|e| match e {
                TensorIoError::Write { path, source } => CheckpointError::Write { path, source },
                other => CheckpointError::Tensor(other),
            })?;
            Ok(FileEntry { name: name.to_string(), bytes: written.bytes, crc32: crc32_hex(written.crc32) })
        };
        let files = if self.hooks.enospc_at_save == Some(n) {
            // The fault hook is process-wide: write one file after the other so it hits the model file.
            let bytes: usize = snap.model.iter().map(|(_, t)| t.numel() * t.kind().elt_size_in_bytes()).sum();
            super::atomic::inject_enospc_once(bytes / 2);
            vec![write(MODEL_FILE, &snap.model)?, write(STATE_FILE, &snap.state)?]
        } else {
            // Both files at once: one file's fsync overlaps the other's writing (each is still its own atomic
            // write; the manifest below commits them together).
            let state_tensors = std::mem::take(&mut snap.state);
            let (model, state) = std::thread::scope(|s| {
                let state = s.spawn(move || write(STATE_FILE, &state_tensors));
                let model = write(MODEL_FILE, &snap.model);
                (model, state.join().map_err(|_| CheckpointError::Thread).and_then(|r| r))
            });
            vec![model?, state?]
        };
        self.delay();
        snap.manifest.files = files;
        snap.manifest.save_seconds = snap.started.elapsed().as_secs_f64();
        snap.manifest.created_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let mpath = dir.join(MANIFEST);
        write_atomic(&mpath, snap.manifest.to_json().as_bytes()).map_err(|e| werr(&mpath, e))?;
        verify(dir).map_err(|e| CheckpointError::Verify { path: dir.to_path_buf(), source: Box::new(e) })?;
        Ok(Committed { dir: dir.to_path_buf(), step: snap.manifest.step, save_seconds: snap.manifest.save_seconds })
    }

    /// Makes room for a new checkpoint directory at `dir`. Scratch of an interrupted save (no manifest) is
    /// removed; anything with a manifest (a checkpoint that resume skipped because it does not verify, load or
    /// read) is renamed aside to `unusable-ckpt-*`, kept for inspection, never deleted.
    fn clear_way(&self, dir: &Path) -> std::io::Result<()> {
        match std::fs::symlink_metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        match Manifest::read(dir) {
            Err(ManifestError::Absent { .. }) => std::fs::remove_dir_all(dir),
            _ => {
                let name = dir.file_name().unwrap_or_default().to_string_lossy();
                let aside = self.dir.join(format!("unusable-{name}-{}", super::atomic::unique_suffix()));
                std::fs::rename(dir, &aside)?;
                tell!("warning: {} could not be used; kept as {}", dir.display(), aside.display());
                Ok(())
            }
        }
    }

    fn delay(&self) {
        if let Some(d) = self.hooks.write_delay {
            std::thread::sleep(d);
        }
    }

    /// Every `ckpt-*` directory, oldest first, with what its manifest says it is. A directory that cannot be
    /// listed is an error (never "no checkpoints": that would restart the run); one that does not exist is empty.
    pub fn list(&self) -> std::io::Result<Vec<(Entry, PathBuf)>> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut v = Vec::new();
        for e in rd {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(step) = name.strip_prefix("ckpt-").and_then(|s| s.parse::<u64>().ok()) else { continue };
            let path = e.path();
            let state = match Manifest::read(&path) {
                Ok(_) => State::Committed,
                Err(ManifestError::Absent { .. }) => State::Scratch,
                Err(_) => State::Unknown,
            };
            v.push((Entry { name, step, state }, path));
        }
        v.sort_by_key(|(e, _)| e.step);
        Ok(v)
    }

    /// Deletes what `retention::to_delete` says; a failed delete is reported, never fatal. Call it only after
    /// a commit succeeded. Each directory is first renamed away (`.deleting-ckpt-*`, directory fsynced), so a kill
    /// part-way through a delete never leaves a `ckpt-*` directory whose manifest vouches for missing files;
    /// leftovers of such a kill are removed here next time.
    pub fn apply_retention(&self) {
        let listed = match self.list() {
            Ok(l) => l,
            Err(e) => return tell!("warning: retention skipped: cannot list {}: {e}", self.dir.display()),
        };
        let entries: Vec<Entry> = listed.iter().map(|(e, _)| e.clone()).collect();
        // The newest committed manifest names the best epoch's checkpoint (`checkpoint.keep_best`): kept.
        let newest = listed.iter().rev().find(|(e, _)| e.committed());
        let protect = newest.and_then(|(_, dir)| Manifest::read(dir).ok()).and_then(|m| m.best_step);
        let mut renamed = false;
        for name in retention::to_delete(&entries, self.keep_last, protect) {
            let from = self.dir.join(&name);
            let to = self.dir.join(format!("{TRASH_PREFIX}{name}-{}", super::atomic::unique_suffix()));
            match std::fs::rename(&from, &to) {
                Ok(()) => renamed = true,
                Err(e) => tell!("warning: could not delete old checkpoint {}: {e}", from.display()),
            }
        }
        if renamed {
            let _ = std::fs::File::open(&self.dir).and_then(|d| d.sync_all());
        }
        // What was just renamed, and what a process killed while deleting left behind.
        for path in self.leftover_trash() {
            match std::fs::remove_dir_all(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tell!("warning: could not delete old checkpoint {}: {e}", path.display())
                }
                _ => {}
            }
        }
    }

    /// `.deleting-ckpt-*` directories left by a process killed while deleting.
    fn leftover_trash(&self) -> Vec<PathBuf> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        rd.filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(TRASH_PREFIX))
            .map(|e| e.path())
            .collect()
    }

    /// The newest checkpoint that verifies and loads; each newer one that does not is reported via `warn` (a
    /// save that never committed included). `Err` when the directory cannot be listed.
    pub fn latest_good(&self, device: Device, warn: &mut dyn FnMut(Skipped)) -> std::io::Result<Option<Loaded>> {
        for (entry, path) in self.list()?.into_iter().rev() {
            let why = match entry.state {
                State::Scratch => {
                    warn(Skipped::Uncommitted(path));
                    continue;
                }
                State::Unknown => match Manifest::read(&path) {
                    Err(e) => e.to_string(),
                    Ok(_) => String::from("the manifest changed while it was being read"),
                },
                State::Committed => match load(&path, device) {
                    Ok(l) => return Ok(Some(l)),
                    Err(e) => e.to_string(),
                },
            };
            warn(Skipped::Bad { dir: path, why });
        }
        Ok(None)
    }
}

/// A checkpoint directory [`Store::latest_good`] passed over on the way to the one it returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    /// No manifest: a save that was interrupted before it committed (normal after a kill).
    Uncommitted(PathBuf),
    /// Looked committed but does not verify, load, or have a readable manifest.
    Bad { dir: PathBuf, why: String },
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Skipped::Uncommitted(d) => write!(f, "ignoring {}: a save interrupted before it committed", d.display()),
            Skipped::Bad { dir, why } => write!(f, "skipping checkpoint {}: {why}", dir.display()),
        }
    }
}

/// Name prefix of a checkpoint directory renamed away to be deleted.
const TRASH_PREFIX: &str = ".deleting-";

/// Why a checkpoint directory does not verify or load.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {len} bytes, manifest says {expected} (truncated?)")]
    Size { path: PathBuf, len: u64, expected: u64 },
    #[error("{path}: checksum mismatch (corrupted)")]
    Checksum { path: PathBuf },
    #[error("{dir}: manifest lists no {name}")]
    Missing { dir: PathBuf, name: String },
    #[error(transparent)]
    Tensor(#[from] TensorIoError),
}

/// Checks a checkpoint directory: the manifest parses and every file has the recorded size and CRC-32.
/// Streams the files through a fixed buffer (no file-sized allocation).
pub fn verify(dir: &Path) -> Result<Manifest, VerifyError> {
    use std::io::Read;
    let m = Manifest::read(dir)?;
    let mut buf = vec![0u8; 4 << 20];
    for f in &m.files {
        let path = dir.join(&f.name);
        let err = |source: std::io::Error| VerifyError::Read { path: path.clone(), source };
        let mut file = std::fs::File::open(&path).map_err(err)?;
        let (mut crc, mut len) = (crc32fast::Hasher::new(), 0u64);
        loop {
            let n = file.read(&mut buf).map_err(err)?;
            if n == 0 {
                break;
            }
            crc.update(&buf[..n]);
            len += n as u64;
        }
        check_file(&path, f, len, crc.finalize())?;
    }
    Ok(m)
}

fn check_file(path: &Path, f: &FileEntry, len: u64, crc: u32) -> Result<(), VerifyError> {
    if len != f.bytes {
        return Err(VerifyError::Size { path: path.to_path_buf(), len, expected: f.bytes });
    }
    if crc32_hex(crc) != f.crc32 {
        return Err(VerifyError::Checksum { path: path.to_path_buf() });
    }
    Ok(())
}

fn verified_bytes(dir: &Path) -> Result<(Manifest, HashMap<String, Vec<u8>>), VerifyError> {
    let m = Manifest::read(dir)?;
    let mut bytes = HashMap::new();
    for f in &m.files {
        let path = dir.join(&f.name);
        let b = std::fs::read(&path).map_err(|source| VerifyError::Read { path: path.clone(), source })?;
        check_file(&path, f, b.len() as u64, crc32fast::hash(&b))?;
        bytes.insert(f.name.clone(), b);
    }
    Ok((m, bytes))
}

/// Verifies and reads a checkpoint directory onto `device`.
pub fn load(dir: &Path, device: Device) -> Result<Loaded, VerifyError> {
    let (manifest, bytes) = verified_bytes(dir)?;
    let get = |name: &str| -> Result<HashMap<String, Tensor>, VerifyError> {
        let b = bytes.get(name).ok_or_else(|| VerifyError::Missing { dir: dir.to_path_buf(), name: name.into() })?;
        Ok(from_bytes(b, &dir.join(name), device)?)
    };
    Ok(Loaded { dir: dir.to_path_buf(), model: get(MODEL_FILE)?, state: get(STATE_FILE)?, manifest })
}
