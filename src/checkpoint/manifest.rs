//! The checkpoint manifest: what a checkpoint holds, with a size and CRC-32 per file. Written last: its presence is
//! the commit point, and a checkpoint directory without a valid manifest does not exist as far as resume is
//! concerned.
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Bumped whenever the checkpoint layout changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's file name inside a checkpoint directory.
pub const MANIFEST: &str = "manifest.json";

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
    pub files: Vec<FileEntry>,
    /// Why it was written: `epoch`, `steps`, `seconds`, `signal`, `final`.
    pub reason: String,
    /// Seconds from the start of the save to the commit (used to predict whether a save fits a grace period).
    pub save_seconds: f64,
    pub created_unix_ms: u128,
}

/// CRC-32 as 8 lowercase hex digits (the manifest's checksum format).
pub fn crc32_hex(crc: u32) -> String {
    format!("{crc:08x}")
}

impl Manifest {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parses a manifest file; `Err` says why it is not a valid manifest.
    pub fn read(dir: &Path) -> Result<Manifest, String> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let m: Manifest =
            serde_json::from_str(&text).map_err(|e| format!("{}: invalid manifest: {e}", path.display()))?;
        if m.format_version != FORMAT_VERSION {
            return Err(format!(
                "{}: format_version {} (this spotrun reads {FORMAT_VERSION})",
                path.display(),
                m.format_version
            ));
        }
        Ok(m)
    }
}
