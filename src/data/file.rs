//! Reading a dataset from a safetensors file, as written by Python's `safetensors` library.
//!
//! Inputs may be float32, float16, bfloat16 or uint8 (scaled by 1/255 when batched); labels any integer type;
//! regression targets float32, float16 or bfloat16, `[N]` or `[N, D]` (held as float32 `[N, D]`).
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
use crate::config::{DataConfig, TaskKind};

/// What a tensor in the file is for: it decides the dtypes and shapes accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Inputs,
    Labels,
    Targets,
}

/// The four tensors of a file dataset, still on the CPU.
pub(super) struct RawSplits {
    pub x_train: Tensor,
    pub y_train: Tensor,
    pub x_val: Tensor,
    pub y_val: Tensor,
}

/// Largest header accepted (the safetensors library's own limit).
const MAX_HEADER: u64 = 100_000_000;

/// Reads the header, then each of the four tensors straight from the file into its own CPU tensor: the data is in
/// memory once (not a file buffer plus tensors), and tensors the config does not name are never read.
pub(super) fn read(path: &Path, cfg: &DataConfig) -> Result<RawSplits, DataError> {
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
    let y = target_role(cfg);
    Ok(RawSplits {
        x_train: source.tensor("data.x_train", &cfg.x_train, Role::Inputs)?,
        y_train: source.tensor("data.y_train", &cfg.y_train, y)?,
        x_val: source.tensor("data.x_val", &cfg.x_val, Role::Inputs)?,
        y_val: source.tensor("data.y_val", &cfg.y_val, y)?,
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
    fn tensor(&self, key: &str, name: &str, role: Role) -> Result<Tensor, DataError> {
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
        let kind = kind_for(info.dtype, role).ok_or_else(|| {
            let allowed = match role {
                Role::Labels => {
                    "int64, int32, int16, int8, uint8 (or set data.task = \"regression\" for float targets)"
                }
                Role::Inputs => "float32, float16, bfloat16, uint8",
                Role::Targets => "float32, float16, bfloat16 (data.task = \"regression\")",
            };
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
        check_shape(&shape, role, name).map_err(shape_err)?;
        let offset = self.data_start + info.data_offsets.0 as u64;
        let t = crate::ffi::cpu_tensor_filled(&shape, kind, |bytes| self.file.read_exact_at(bytes, offset))
            .map_err(|e| shape_err(e.to_string()))?
            .map_err(|source| DataError::Read { path: path.to_path_buf(), source })?;
        Ok(match role {
            Role::Labels => t.to_kind(Kind::Int64),
            Role::Targets => t.to_kind(Kind::Float).reshape([shape[0], -1]),
            Role::Inputs => t,
        })
    }
}

/// The role of `data.y_*`: class labels, or regression targets with `data.task = "regression"`.
pub(super) fn target_role(cfg: &DataConfig) -> Role {
    if cfg.task == TaskKind::Regression {
        Role::Targets
    } else {
        Role::Labels
    }
}

/// The shape rules every file source shares: labels `[N]`, targets `[N]` or `[N, D]`, inputs `[N, ...]`, N > 0.
pub(super) fn check_shape(shape: &[i64], role: Role, name: &str) -> Result<(), String> {
    if role == Role::Labels && shape.len() != 1 {
        return Err(format!("labels `{name}` must be 1-D [N], got {shape:?}"));
    }
    if role == Role::Targets && !(1..=2).contains(&shape.len()) {
        return Err(format!("regression targets `{name}` must be [N] or [N, D], got {shape:?}"));
    }
    if role == Role::Inputs && shape.len() < 2 {
        return Err(format!("inputs `{name}` must be [N, ...features], got {shape:?}"));
    }
    if shape.first() == Some(&0) {
        return Err(format!("`{name}` has no samples"));
    }
    Ok(())
}

/// The tensor kind for a stored dtype, if spotrun accepts it for inputs (`labels = false`) or labels.
fn kind_for(dtype: Dtype, role: Role) -> Option<Kind> {
    use Role::{Inputs, Labels, Targets};
    Some(match (role, dtype) {
        (Inputs | Targets, Dtype::F32) => Kind::Float,
        (Inputs | Targets, Dtype::F16) => Kind::Half,
        (Inputs | Targets, Dtype::BF16) => Kind::BFloat16,
        (Inputs, Dtype::U8) => Kind::Uint8,
        (Labels, Dtype::I64) => Kind::Int64,
        (Labels, Dtype::I32) => Kind::Int,
        (Labels, Dtype::I16) => Kind::Int16,
        (Labels, Dtype::I8) => Kind::Int8,
        (Labels, Dtype::U8) => Kind::Uint8,
        _ => return None,
    })
}
