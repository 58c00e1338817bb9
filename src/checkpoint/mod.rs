//! Durable output: atomic file writes and named tensors in safetensors.
//!
//! Takes plain named tensors and bytes; never imports `trainer`. Everything a run must not tear (weights,
//! config, checkpoints) goes through [`write_atomic`].
mod atomic;
mod tensors;

pub use atomic::{append_line, write_atomic};
pub use tensors::{from_bytes, load, save, to_bytes, TensorIoError};
