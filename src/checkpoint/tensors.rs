//! Named tensors ↔ safetensors bytes, readable by Python's `safetensors.torch.load_file`.
//!
//! Files are byte-deterministic: tensors are ordered by name and no metadata is written, so equal tensors
//! give identical files (what the resume tests compare).
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use tch::{Device, Kind, Tensor};

use super::atomic::write_atomic;

#[derive(Debug, thiserror::Error)]
pub enum TensorIoError {
    #[error("{path}: cannot write: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a valid safetensors file: {message}")]
    Format { path: PathBuf, message: String },
    #[error("tensor `{name}`: {message}")]
    Tensor { name: String, message: String },
}

impl TensorIoError {
    /// A bad file handed to us (exit 2), as opposed to a failure to write our own output (exit 1).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, TensorIoError::Read { .. } | TensorIoError::Format { .. })
    }
}

fn dtype_of(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Int16 => Dtype::I16,
        Kind::Int8 => Dtype::I8,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        _ => return None,
    })
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

/// Serialises `tensors` (copied to host memory) into safetensors bytes, sorted by name, no metadata.
pub fn to_bytes(tensors: &[(String, Tensor)]) -> Result<Vec<u8>, TensorIoError> {
    let mut host: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let terr = |message: String| TensorIoError::Tensor { name: name.clone(), message };
        let dtype = dtype_of(t.kind()).ok_or_else(|| terr(format!("unsupported dtype {:?}", t.kind())))?;
        let t = t.detach().to_device(Device::Cpu).contiguous();
        let numel = t.numel();
        let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut data, numel).map_err(|e| terr(e.to_string()))?;
        let shape = t.size().iter().map(|&d| d as usize).collect();
        host.push((name.clone(), dtype, shape, data));
    }
    host.sort_by(|a, b| a.0.cmp(&b.0));
    let views: Vec<(String, safetensors::tensor::TensorView)> = host
        .iter()
        .map(|(n, d, s, data)| {
            safetensors::tensor::TensorView::new(*d, s.clone(), data)
                .map(|v| (n.clone(), v))
                .map_err(|e| TensorIoError::Tensor { name: n.clone(), message: e.to_string() })
        })
        .collect::<Result<_, _>>()?;
    safetensors::serialize(views, None).map_err(|e| TensorIoError::Tensor { name: "*".into(), message: e.to_string() })
}

/// Writes `tensors` to `path` atomically (see [`write_atomic`]).
pub fn save(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), TensorIoError> {
    let bytes = to_bytes(tensors)?;
    write_atomic(path, &bytes).map_err(|source| TensorIoError::Write { path: path.to_path_buf(), source })
}

/// Reads every tensor of a safetensors file onto `device`.
pub fn load(path: &Path, device: Device) -> Result<HashMap<String, Tensor>, TensorIoError> {
    let bytes = std::fs::read(path).map_err(|source| TensorIoError::Read { path: path.to_path_buf(), source })?;
    from_bytes(&bytes, path, device)
}

/// Parses safetensors bytes (`path` is only for messages).
pub fn from_bytes(bytes: &[u8], path: &Path, device: Device) -> Result<HashMap<String, Tensor>, TensorIoError> {
    let ferr = |message: String| TensorIoError::Format { path: path.to_path_buf(), message };
    let st = SafeTensors::deserialize(bytes).map_err(|e| ferr(e.to_string()))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let kind = kind_of(view.dtype())
            .ok_or_else(|| ferr(format!("tensor `{name}` has unsupported dtype {:?}", view.dtype())))?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t =
            Tensor::f_from_data_size(view.data(), &shape, kind).map_err(|e| ferr(format!("tensor `{name}`: {e}")))?;
        out.insert(name, t.to_device(device));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_byte_deterministic() {
        let a = vec![
            ("b".to_string(), Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).reshape([2, 2])),
            ("a".to_string(), Tensor::from_slice(&[7i64])),
        ];
        let mut rev = a.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect::<Vec<_>>();
        rev.reverse();
        let bytes = to_bytes(&a).unwrap();
        assert_eq!(bytes, to_bytes(&rev).unwrap());
        let back = from_bytes(&bytes, Path::new("x"), Device::Cpu).unwrap();
        assert_eq!(back["b"].size(), [2, 2]);
        assert_eq!(Vec::<f32>::try_from(&back["b"].flatten(0, -1)).unwrap(), [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(back["a"].int64_value(&[0]), 7);
        assert!(from_bytes(&bytes[..bytes.len() - 3], Path::new("x"), Device::Cpu).is_err());
    }
}
