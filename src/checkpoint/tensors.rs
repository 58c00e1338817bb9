//! Named tensors ↔ safetensors bytes, readable by Python's `safetensors.torch.load_file`.
//!
//! Files are byte-deterministic: tensors are ordered by name and metadata (only a run's final weights carry any:
//! the class names) is sorted by key, so equal tensors give identical files (what the resume tests compare).
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use tch::{Device, Kind, Tensor};

use std::io::Write;

use super::atomic::write_atomic_with;

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
    /// An I/O error while streaming tensors to a writer.
    #[error("{0}")]
    Stream(std::io::Error),
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

/// Size and CRC-32 of what was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub bytes: u64,
    pub crc32: u32,
}

/// Streams `tensors` in the safetensors format to `w`: sorted by name, `metadata` as the header's `__metadata__`
/// (string keys and values, as the format allows; omitted when empty), each tensor copied to host memory one at a
/// time (no whole-file buffer), with a CRC-32 computed on the way.
fn write_to(
    w: &mut dyn Write,
    tensors: &[(String, Tensor)],
    metadata: &[(String, String)],
) -> Result<Written, TensorIoError> {
    let mut order: Vec<&(String, Tensor)> = tensors.iter().collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let meta: serde_json::Map<String, serde_json::Value> =
            metadata.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
        header.insert("__metadata__".into(), serde_json::Value::Object(meta));
    }
    let mut offset = 0u64;
    for (name, t) in &order {
        let dtype = dtype_of(t.kind()).ok_or_else(|| TensorIoError::Tensor {
            name: name.clone(),
            message: format!("unsupported dtype {:?}", t.kind()),
        })?;
        let len = t.numel() as u64 * t.kind().elt_size_in_bytes() as u64;
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": format!("{dtype:?}"), "shape": t.size(), "data_offsets": [offset, offset + len] }),
        );
        offset += len;
    }
    let mut text = serde_json::Value::Object(header).to_string().into_bytes();
    while !text.len().is_multiple_of(8) {
        text.push(b' '); // the format pads the header to 8-byte alignment with spaces
    }
    let mut crc = crc32fast::Hasher::new();
    let io = TensorIoError::Stream;
    for chunk in [&(text.len() as u64).to_le_bytes()[..], &text[..]] {
        w.write_all(chunk).map_err(io)?;
        crc.update(chunk);
    }
    for (name, t) in order {
        // Contiguous CPU tensors are written straight from their storage; others go through one host copy.
        let host;
        let bytes = match crate::ffi::host_bytes(t) {
            Some(b) => b,
            None => {
                host = t.detach().to_device(Device::Cpu).contiguous();
                crate::ffi::host_bytes(&host).ok_or_else(|| TensorIoError::Tensor {
                    name: name.clone(),
                    message: "cannot read tensor data".into(),
                })?
            }
        };
        w.write_all(bytes).map_err(io)?;
        crc.update(bytes);
    }
    Ok(Written { bytes: 8 + text.len() as u64 + offset, crc32: crc.finalize() })
}

/// Serialises `tensors` into safetensors bytes in memory (see [`write_to`]).
#[cfg(test)]
pub(super) fn to_bytes(tensors: &[(String, Tensor)]) -> Result<Vec<u8>, TensorIoError> {
    let mut out = Vec::new();
    write_to(&mut out, tensors, &[])?;
    Ok(out)
}

/// Writes `tensors` to `path` atomically (scratch file, fsync, rename, fsync dir); returns size and CRC-32.
pub fn save(path: &Path, tensors: &[(String, Tensor)]) -> Result<Written, TensorIoError> {
    save_with_metadata(path, tensors, &[])
}

/// [`save`], with string `metadata` in the header's `__metadata__` (read by Python's
/// `safe_open(path, "pt").metadata()`).
pub fn save_with_metadata(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &[(String, String)],
) -> Result<Written, TensorIoError> {
    let mut tensor_err = None;
    let result = write_atomic_with(path, &mut |w| {
        write_to(w, tensors, metadata).map_err(|e| match e {
            TensorIoError::Stream(io) => io,
            other => {
                tensor_err = Some(other);
                std::io::Error::other("tensor error")
            }
        })
    });
    result.map_err(|source| tensor_err.take().unwrap_or(TensorIoError::Write { path: path.to_path_buf(), source }))
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
#[allow(clippy::unwrap_used, clippy::expect_used)]
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
        let mut with = Vec::new();
        write_to(&mut with, &a, &[("spotrun.classes".into(), "[\"a\"]".into())]).unwrap();
        let st = SafeTensors::read_metadata(&with).unwrap().1;
        assert_eq!(st.metadata().as_ref().unwrap()["spotrun.classes"], "[\"a\"]");
        assert_eq!(from_bytes(&with, Path::new("x"), Device::Cpu).unwrap().len(), 2);
    }
}
