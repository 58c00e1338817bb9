//! Reading a dataset from a safetensors file, as written by Python's `safetensors` library.
//!
//! Inputs may be float32, float16, bfloat16 or uint8 (scaled by 1/255 when batched); labels any integer type.
//! Every error names the file, the config key and the tensor name.
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
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

/// Reads the file once into RAM and builds CPU tensors from it.
pub fn read(path: &Path, cfg: &DataConfig) -> Result<RawSplits, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Read { path: path.to_path_buf(), source })?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| DataError::Format { path: path.to_path_buf(), message: format!("not a safetensors file: {e}") })?;
    let get = |key: &str, name: &str, labels: bool| tensor(&st, path, key, name, labels);
    Ok(RawSplits {
        x_train: get("data.x_train", &cfg.x_train, false)?,
        y_train: get("data.y_train", &cfg.y_train, true)?,
        x_val: get("data.x_val", &cfg.x_val, false)?,
        y_val: get("data.y_val", &cfg.y_val, true)?,
    })
}

fn tensor(st: &SafeTensors, path: &Path, key: &str, name: &str, labels: bool) -> Result<Tensor, DataError> {
    let view = st.tensor(name).map_err(|_| {
        let mut have = st.names();
        have.sort();
        DataError::MissingTensor {
            path: path.to_path_buf(),
            key: key.into(),
            name: name.into(),
            have: have.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", "),
        }
    })?;
    let dtype = view.dtype();
    let kind = match (labels, dtype) {
        (false, Dtype::F32) => Kind::Float,
        (false, Dtype::F16) => Kind::Half,
        (false, Dtype::BF16) => Kind::BFloat16,
        (false, Dtype::U8) => Kind::Uint8,
        (true, Dtype::I64) => Kind::Int64,
        (true, Dtype::I32) => Kind::Int,
        (true, Dtype::I16) => Kind::Int16,
        (true, Dtype::I8) => Kind::Int8,
        (true, Dtype::U8) => Kind::Uint8,
        _ => {
            let allowed = if labels { "int64, int32, int16, int8, uint8" } else { "float32, float16, bfloat16, uint8" };
            return Err(DataError::Dtype {
                path: path.to_path_buf(),
                key: key.into(),
                name: name.into(),
                dtype: format!("{dtype:?}"),
                allowed,
            });
        }
    };
    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
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
    let t = Tensor::f_from_data_size(view.data(), &shape, kind).map_err(|e| shape_err(e.to_string()))?;
    Ok(if labels { t.to_kind(Kind::Int64) } else { t })
}
