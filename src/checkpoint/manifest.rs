//! The checkpoint manifest: what a checkpoint holds, with a size and CRC-32 per file. Written last: its presence is
//! the commit point, and a checkpoint directory without a valid manifest does not exist as far as resume is
//! concerned.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Bumped whenever the checkpoint layout changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's file name inside a checkpoint directory.
pub(crate) const MANIFEST: &str = "manifest.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    /// CRC-32 (IEEE) of the file, 8 hex digits: catches torn, truncated and bit-flipped files at GB/s.
    pub crc32: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// Hash of the resolved config (the run id).
    pub run_id: String,
    /// The resolved config itself, so a resume can tell which keys changed.
    pub config: serde_json::Value,
    /// The epoch in progress (0-based) and how many of its batches are done: the data cursor.
    pub epoch: usize,
    pub batch: usize,
    /// Optimizer steps taken (drives the LR schedule).
    pub step: u64,
    /// Whether every configured epoch had finished when this was written.
    pub finished: bool,
    /// Per-epoch metrics so far (JSON objects, as in metrics.jsonl).
    pub metrics: Vec<serde_json::Value>,
    /// How the RNG is restored: spotrun reseeds from (seed, epoch, batch) before every step, so no generator
    /// state needs saving.
    pub rng: String,
    /// CRC-32 over the training and validation tensors as loaded (dtype, shape, bytes): a resume on different data
    /// is refused. Absent in checkpoints written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_fingerprint: Option<String>,
    /// `checkpoint.keep_best`: the step of the best epoch's checkpoint, which retention keeps beyond `keep_last`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_step: Option<u64>,
    /// The device type the run trained on when this was written: `cpu` or `cuda` (`train.device` is outside the
    /// run id, so a run may move). Absent in checkpoints written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// What `train.precision` resolved to on that device: `fp32`, `bf16` or `fp16` (`auto` resolves per device).
    /// Absent in checkpoints written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
    pub files: Vec<FileEntry>,
    /// Why it was written.
    pub reason: SaveReason,
    /// Seconds from the start of the save to the commit (used to predict whether a save fits a grace period).
    pub save_seconds: f64,
    pub created_unix_ms: u128,
}

/// Why a checkpoint was written (`reason` in the manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaveReason {
    /// `checkpoint.every_epochs`.
    Epoch,
    /// `checkpoint.every_steps`.
    Steps,
    /// `checkpoint.every_seconds`.
    Seconds,
    /// A preemption signal.
    Signal,
    /// The end of the run (every epoch done, early stopping, pruning).
    Final,
    /// An adaptive sweep's scheduler paused the run at a rung (it resumes from here when promoted).
    Pause,
    /// Written by something else (a benchmark, a newer spotrun).
    #[serde(other)]
    Other,
}

impl std::fmt::Display for SaveReason {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let s = serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_string));
        f.write_str(s.as_deref().unwrap_or("other"))
    }
}

/// Why a checkpoint directory's manifest could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// No manifest: the save was interrupted before its commit point, so this is not a checkpoint.
    #[error("{path}: no manifest (a save interrupted before it committed)")]
    Absent { path: PathBuf },
    /// The manifest exists but could not be read (EIO, EISDIR, a stale NFS handle): the checkpoint may be good.
    #[error("{path}: cannot read the manifest: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The manifest was read but is not one this spotrun understands.
    #[error("{path}: invalid manifest: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// CRC-32 as 8 lowercase hex digits (the manifest's checksum format).
pub(crate) fn crc32_hex(crc: u32) -> String {
    format!("{crc:08x}")
}

impl Manifest {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parses a manifest file. An absent manifest (a save that never committed), one that cannot be read (an I/O
    /// error: not "absent") and one that is not a valid manifest are three different errors.
    pub fn read(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(MANIFEST);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ManifestError::Absent { path }),
            Err(source) => return Err(ManifestError::Read { path, source }),
        };
        let m: Manifest = serde_json::from_str(&text)
            .map_err(|e| ManifestError::Invalid { path: path.clone(), message: e.to_string() })?;
        // Files are named inside the checkpoint directory: a name that leads elsewhere (`../x`, `/dev/zero`) would
        // make verification read outside it (or forever).
        if let Some(f) =
            m.files.iter().find(|f| f.name.is_empty() || f.name.contains('/') || f.name == ".." || f.name == ".")
        {
            let message = format!("file name {:?} is not a plain name inside the checkpoint directory", f.name);
            return Err(ManifestError::Invalid { path, message });
        }
        if m.format_version != FORMAT_VERSION {
            let message = format!("format_version {} (this spotrun reads {FORMAT_VERSION})", m.format_version);
            return Err(ManifestError::Invalid { path, message });
        }
        Ok(m)
    }
}
