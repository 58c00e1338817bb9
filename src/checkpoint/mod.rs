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
pub use manifest::{Manifest, SaveReason, FORMAT_VERSION};
pub(crate) use manifest::{ManifestError, MANIFEST};
pub use store::{load as load_checkpoint, verify, Snapshot, Store};
pub(crate) use store::{CheckpointError, Committed, Loaded, Skipped, STATE_FILE};
pub(crate) use tensors::TensorIoError;
pub use tensors::{from_bytes, load, save, save_with_metadata};
pub(crate) use writer::Writer;
