//! Reading a dataset from a safetensors file, as written by Python's `safetensors` library.
//!
//! Inputs may be float32, float16, bfloat16 or uint8 (scaled by 1/255 when batched); labels any integer type.
//! Each tensor is read from the file straight into its own memory, so a dataset occupies RAM once.
//! Every error names the file, the config key and the tensor name.
use std::path::Path;

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

use safetensors::tensor::Metadata;
use safetensors::Dtype;
use tch::{Kind, Tensor};

use super::DataError;
use crate::config::DataConfig;

/// The four tensors of a file dataset, still on the CPU.
pub struct RawSplits {
    pub x_train: Tensor,
    pub y_train: Tensor,
    pub x_val: Tensor,
    pub y_val: Tensor,
}

/// Largest header accepted (the safetensors library's own limit).
const MAX_HEADER: u64 = 100_000_000;

/// Reads the header, then each of the four tensors straight from the file into its own CPU tensor: the data is in
/// memory once (not a file buffer plus tensors), and tensors the config does not name are never read.
pub fn read(path: &Path, cfg: &DataConfig) -> Result<RawSplits, DataError> {
    let read_err = |source: std::io::Error| DataError::Read { path: path.to_path_buf(), source };
    let format = |message: String| DataError::Format {
        path: path.to_path_buf(),
        message: format!("not a safetensors file: {message}"),
    };
    let mut file = File::open(path).map_err(read_err)?;
    let len = file.metadata().map_err(read_err)?.len();
    let mut n = [0u8; 8];
    if len < 8 {
        return Err(format(format!("{len} bytes is too short for a header")));
    }
    file.read_exact(&mut n).map_err(read_err)?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER || 8 + n > len {
        return Err(format(format!("header length {n} does not fit a {len}-byte file")));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).map_err(read_err)?;
    let meta: Metadata = serde_json::from_slice(&header).map_err(|e| format(format!("bad header: {e}")))?;
    let data_start = 8 + n;
    if data_start + meta.data_len() as u64 != len {
        return Err(format(format!(
            "the header describes {} bytes of tensor data but the file holds {} (truncated or corrupted?)",
            meta.data_len(),
            len - data_start
        )));
    }
    let source = Source { file, meta, data_start, path };
    Ok(RawSplits {
        x_train: source.tensor("data.x_train", &cfg.x_train, false)?,
        y_train: source.tensor("data.y_train", &cfg.y_train, true)?,
        x_val: source.tensor("data.x_val", &cfg.x_val, false)?,
        y_val: source.tensor("data.y_val", &cfg.y_val, true)?,
    })
}

/// An open safetensors file with its parsed header.
struct Source<'a> {
    file: File,
    meta: Metadata,
    /// Offset of the first tensor byte in the file.
    data_start: u64,
    path: &'a Path,
}

impl Source<'_> {
    fn tensor(&self, key: &str, name: &str, labels: bool) -> Result<Tensor, DataError> {
        let path = self.path;
        let info = self.meta.info(name).ok_or_else(|| {
            let mut have = self.meta.offset_keys();
            have.sort();
            DataError::MissingTensor {
                path: path.to_path_buf(),
                key: key.into(),
                name: name.into(),
                have: have.join(", "),
            }
        })?;
        let kind = kind_for(info.dtype, labels).ok_or_else(|| {
            let allowed = if labels { "int64, int32, int16, int8, uint8" } else { "float32, float16, bfloat16, uint8" };
            DataError::Dtype {
                path: path.to_path_buf(),
                key: key.into(),
                name: name.into(),
                dtype: format!("{:?}", info.dtype),
                allowed,
            }
        })?;
        let shape: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
        let shape_err = |message: String| DataError::Shape { path: path.to_path_buf(), key: key.into(), message };
        if labels && shape.len() != 1 {
            return Err(shape_err(format!("labels `{name}` must be 1-D [N], got {shape:?}")));
        }
        if !labels && shape.len() < 2 {
            return Err(shape_err(format!("inputs `{name}` must be [N, ...features], got {shape:?}")));
        }
        if shape[0] == 0 {
            return Err(shape_err(format!("`{name}` has no samples")));
        }
        let offset = self.data_start + info.data_offsets.0 as u64;
        let t = crate::ffi::cpu_tensor_filled(&shape, kind, |bytes| self.file.read_exact_at(bytes, offset))
            .map_err(|e| shape_err(e.to_string()))?
            .map_err(|source| DataError::Read { path: path.to_path_buf(), source })?;
        Ok(if labels { t.to_kind(Kind::Int64) } else { t })
    }
}

/// The tensor kind for a stored dtype, if spotrun accepts it for inputs (`labels = false`) or labels.
fn kind_for(dtype: Dtype, labels: bool) -> Option<Kind> {
    Some(match (labels, dtype) {
        (false, Dtype::F32) => Kind::Float,
        (false, Dtype::F16) => Kind::Half,
        (false, Dtype::BF16) => Kind::BFloat16,
        (false, Dtype::U8) => Kind::Uint8,
        (true, Dtype::I64) => Kind::Int64,
        (true, Dtype::I32) => Kind::Int,
        (true, Dtype::I16) => Kind::Int16,
        (true, Dtype::I8) => Kind::Int8,
        (true, Dtype::U8) => Kind::Uint8,
        _ => return None,
    })
}
