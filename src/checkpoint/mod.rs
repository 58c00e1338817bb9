//! Durable output: atomic file writes, named tensors in safetensors, and resume checkpoints.
//!
//! Takes plain named tensors plus a manifest; never imports `trainer`. Everything a run must not tear
//! (weights, config, checkpoints) goes through [`write_atomic`]. A checkpoint is committed by its manifest,
//! written last, which carries a size and CRC-32 per file; loading verifies every file and falls back to older ones.
mod atomic;
mod manifest;
mod retention;
mod store;
mod tensors;
mod writer;

pub use atomic::write_atomic;
pub(crate) use atomic::{append_line, unique_suffix};
pub(crate) use manifest::crc32_hex;
pub use manifest::{FileEntry, Manifest, ManifestError, SaveReason, FORMAT_VERSION, MANIFEST};
pub use store::{
    load as load_checkpoint, verify, CheckpointError, Committed, Loaded, Skipped, Snapshot, Store, VerifyError,
    MODEL_FILE, STATE_FILE,
};
pub use tensors::{from_bytes, load, save, TensorIoError, Written};
pub(crate) use writer::Writer;
