//! Data: the dataset held in memory once (on the accelerator when it fits), epoch order, and batches.
//!
//! Owns loading (built-in synthetic tasks, a safetensors file, NumPy arrays, Parquet files, image folders, or
//! nanoGPT token files), every check on the data
//! (dtypes, shapes, label range, token ids, agreement with `model.inputs` / `model.classes` / `data.shape` /
//! `model.vocab_size`), and the per-epoch permutation.
//! After [`Dataset::load`] returns, no training step touches the disk. Imports only `config` (and `ffi` for a
//! read-only view of tensor bytes, to fingerprint the data).
mod cache;
mod codec;
mod dataset;
mod file;
mod images;
mod npy;
mod order;
mod parquet;
pub(crate) mod rng;
mod synthetic;
mod text;
mod tokens;

use std::path::PathBuf;

use tch::{Device, Tensor};

use crate::config::{DataConfig, DataSource, ModelConfig, OnDevice};
pub(crate) use cache::files_under;
pub use codec::Codec;
pub use dataset::{Dataset, Normalize};
pub use images::{decode_image, ImageShape};
pub(crate) use order::epoch_permutation;
pub(crate) use rng::SplitMix64;
pub use text::{run_codec, PreparedText};
pub use tokens::TokenData;

/// Bad data: always names the file (or `<synthetic>`) and the config key or tensor involved.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: cannot read data file (data.path): {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: no tensor named `{name}` ({key}); the file has: {have}")]
    MissingTensor { path: PathBuf, key: String, name: String, have: String },
    #[error("{path}: tensor `{name}` ({key}) has dtype {dtype}; expected one of {allowed}")]
    Dtype { path: PathBuf, key: String, name: String, dtype: String, allowed: &'static str },
    #[error("{path}: {key}: {message}")]
    Shape { path: PathBuf, key: String, message: String },
    #[error("{path}: label {label} in `{name}` is out of range for {classes} classes ({key})")]
    LabelRange { path: PathBuf, key: String, name: String, label: i64, classes: i64 },
    #[error("{path}: `{name}` ({key}) holds {value} at index {index:?}; inputs must be finite numbers (fix the data)")]
    NonFinite { path: PathBuf, key: String, name: String, index: Vec<i64>, value: String },
    #[error("{path}: {key}: {message}")]
    Labels { path: PathBuf, key: String, message: String },
    /// An input of a prepared source (text): a file or folder that cannot be used, with the key naming it.
    #[error("{path}: {key}: {message}")]
    Input { path: PathBuf, key: String, message: String },
    #[error("{path}: cannot write the data cache (data.cache_dir): {source}")]
    Cache { path: PathBuf, source: std::io::Error },
}

/// A run's data, in memory once: samples `(x, y)` for the classifiers and regression, or token streams.
pub enum Data {
    Samples(Dataset),
    Tokens(TokenData),
}

impl Data {
    /// Loads and checks what `data` describes.
    pub fn load(data: &DataConfig, model: &ModelConfig) -> Result<Data, DataError> {
        Self::load_with(data, model, false)
    }

    /// [`Data::load`], with progress bars (on a terminal) and a line saying where prepared data is cached when
    /// `progress`.
    pub fn load_with(data: &DataConfig, model: &ModelConfig, progress: bool) -> Result<Data, DataError> {
        Ok(match data.source {
            DataSource::Tokens => Data::Tokens(TokenData::load(data, model)?),
            DataSource::Text => {
                let p = text::prepare(data, progress)?;
                if progress {
                    tell!("{}", p.describe());
                }
                Self::load_text_entry(data, model, &p.dir, p.token_dtype)?
            }
            DataSource::Images => Data::Samples(Dataset::images(data, model, progress)?),
            _ => Data::Samples(Dataset::load(data, model)?),
        })
    }

    /// Tokenized text from its cache entry `dir` (what [`Data::prepare`] made), without looking at the inputs again.
    pub fn load_prepared_text(data: &DataConfig, model: &ModelConfig, p: &PreparedData) -> Result<Data, DataError> {
        Self::load_text_entry(data, model, &p.dir, p.token_dtype.unwrap_or(data.token_dtype))
    }

    fn load_text_entry(
        data: &DataConfig,
        model: &ModelConfig,
        dir: &std::path::Path,
        token_dtype: crate::config::TokenDtype,
    ) -> Result<Data, DataError> {
        let tokens =
            DataConfig { source: DataSource::Tokens, path: Some(dir.to_path_buf()), token_dtype, ..data.clone() };
        let mut t = TokenData::load(&tokens, model)?;
        t.prepared = Some(dir.to_path_buf());
        Ok(Data::Tokens(t))
    }

    /// Prepares a text or image source into the data cache (nothing to do for the others, `Ok(None)`).
    pub fn prepare(data: &DataConfig, progress: bool) -> Result<Option<PreparedData>, DataError> {
        Ok(match data.source {
            DataSource::Text => {
                let p = text::prepare(data, progress)?;
                Some(PreparedData { line: p.describe(), dir: p.dir, token_dtype: Some(p.token_dtype) })
            }
            DataSource::Images => {
                let p = images::prepare(data, progress)?;
                Some(PreparedData { line: p.describe(), dir: p.dir, token_dtype: None })
            }
            _ => None,
        })
    }

    /// The data-cache entry of a prepared source (`None` for the others), without preparing it: `Err` when an input
    /// cannot be looked at.
    pub fn entry_dir(data: &DataConfig) -> Option<Result<PathBuf, DataError>> {
        match data.source {
            DataSource::Text => Some(text::entry_dir(data)),
            DataSource::Images => Some(images::entry_dir(data)),
            _ => None,
        }
    }

    /// Files the run directory keeps so the run can be used without the data: for tokenized text, `vocab.json`
    /// (the entry's meta.json) and the `tokenizer.json` copy.
    /// With class names (image folders, string labels), `classes.json`: the names as a JSON list, class `i` at
    /// index `i`.
    pub fn run_files(&self) -> Result<Vec<(&'static str, Vec<u8>)>, DataError> {
        if let Some(names) = self.class_names() {
            return Ok(vec![("classes.json", (serde_json::json!(names).to_string() + "\n").into_bytes())]);
        }
        let Data::Tokens(TokenData { prepared: Some(dir), .. }) = self else { return Ok(vec![]) };
        let mut out = Vec::new();
        for (from, to) in [("meta.json", "vocab.json"), ("tokenizer.json", "tokenizer.json")] {
            let path = dir.join(from);
            match std::fs::read(&path) {
                Ok(bytes) => out.push((to, bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && from != "meta.json" => {}
                Err(source) => return Err(DataError::Read { path, source }),
            }
        }
        Ok(out)
    }

    /// Another handle on the same tensors (no copy): what a long-lived worker hands each run of the data it
    /// loaded once.
    pub fn shallow_clone(&self) -> Data {
        match self {
            Data::Samples(d) => Data::Samples(Dataset {
                x_train: d.x_train.shallow_clone(),
                y_train: d.y_train.shallow_clone(),
                x_val: d.x_val.shallow_clone(),
                y_val: d.y_val.shallow_clone(),
                sample_shape: d.sample_shape.clone(),
                classes: d.classes,
                class_names: d.class_names.clone(),
                norm: d.norm.clone(),
                origin: d.origin.clone(),
                fingerprint: d.fingerprint.clone(),
                warnings: d.warnings.clone(),
            }),
            Data::Tokens(t) => Data::Tokens(TokenData {
                train: t.train.shallow_clone(),
                val: t.val.shallow_clone(),
                vocab_size: t.vocab_size,
                itos: t.itos.clone(),
                unigram_entropy: t.unigram_entropy,
                origin: t.origin.clone(),
                fingerprint: t.fingerprint.clone(),
                prepared: t.prepared.clone(),
            }),
        }
    }

    /// The names of the classes (class `i` is `names[i]`), when the data has them: an image folder's class
    /// folders, or string labels.
    pub fn class_names(&self) -> Option<&[String]> {
        match self {
            Data::Samples(d) => d.class_names.as_deref(),
            Data::Tokens(_) => None,
        }
    }

    pub fn origin(&self) -> &str {
        match self {
            Data::Samples(d) => &d.origin,
            Data::Tokens(t) => &t.origin,
        }
    }

    pub fn fingerprint(&self) -> &str {
        match self {
            Data::Samples(d) => &d.fingerprint,
            Data::Tokens(t) => &t.fingerprint,
        }
    }

    pub fn warnings(&self) -> &[String] {
        match self {
            Data::Samples(d) => &d.warnings,
            Data::Tokens(_) => &[],
        }
    }

    pub fn nbytes(&self) -> u64 {
        match self {
            Data::Samples(d) => d.nbytes(),
            Data::Tokens(t) => t.nbytes(),
        }
    }

    /// What the model is built for: the per-sample input shape and the number of outputs (classes, regression
    /// targets, or the vocabulary).
    pub fn model_io(&self) -> (Vec<i64>, i64) {
        match self {
            Data::Samples(d) => (d.sample_shape.clone(), d.classes),
            Data::Tokens(t) => (vec![], t.vocab_size),
        }
    }

    /// `60000 train / 10000 val`, or token counts.
    pub fn sizes(&self) -> String {
        match self {
            Data::Samples(d) => format!("{} train / {} val", d.train_len(), d.val_len()),
            Data::Tokens(t) => format!(
                "{} train / {} val tokens, vocab {}, unigram entropy {:.3} nats",
                t.train.numel(),
                t.val.numel(),
                t.vocab_size,
                t.unigram_entropy
            ),
        }
    }

    /// Moves the data to `device` once, if `policy` allows and (for `auto`) it takes at most half the free memory.
    /// Returns whether the data now lives on `device`.
    pub fn place(&mut self, device: Device, policy: OnDevice, free_bytes: Option<u64>) -> bool {
        let fits = free_bytes.is_some_and(|free| self.nbytes() <= free / 2);
        let go = match (device, policy) {
            (Device::Cpu, _) => return true,
            (_, OnDevice::Never) => false,
            (_, OnDevice::Always) => true,
            (_, OnDevice::Auto) => fits,
        };
        if go {
            let tensors: Vec<&mut Tensor> = match self {
                Data::Samples(d) => vec![&mut d.x_train, &mut d.y_train, &mut d.x_val, &mut d.y_val],
                Data::Tokens(t) => vec![&mut t.train, &mut t.val],
            };
            for t in tensors {
                *t = t.to_device(device);
            }
        }
        go
    }
}

/// A source prepared into the data cache (`spotrun prepare`): the entry, and the console line saying so.
pub struct PreparedData {
    pub dir: PathBuf,
    line: String,
    /// Tokenized text: the entry's id width.
    token_dtype: Option<crate::config::TokenDtype>,
}

impl PreparedData {
    /// `data: tokenized into DIR`, `data: decoded N images into DIR` or `data: cached in DIR`.
    pub fn describe(&self) -> String {
        self.line.clone()
    }
}

/// Every file `data` reads for `data.source = "npy"` or `"parquet"` (the `.npz`, each `.npy`, each Parquet file);
/// `None` for other sources or when a file set cannot be listed. A long-lived worker keys its data cache on them.
pub fn source_files(data: &DataConfig) -> Option<Vec<PathBuf>> {
    let path = data.path.clone()?;
    match data.source {
        DataSource::Npy if path.is_dir() => Some(
            [&data.x_train, &data.y_train, &data.x_val, &data.y_val]
                .iter()
                .map(|n| path.join(format!("{n}.npy")))
                .collect(),
        ),
        DataSource::Npy => Some(vec![path]),
        DataSource::Parquet => parquet::files(data).ok(),
        _ => None,
    }
}

/// Bytes the tensors of `data.source = "npy"` or `"parquet"` data will take, from the headers or footers alone
/// (for the memory check before loading); `None` for other sources, or when the headers are unreadable (loading
/// then reports why).
pub fn planned_bytes(data: &DataConfig) -> Option<u64> {
    match data.source {
        DataSource::Npy => npy::planned_bytes(data),
        DataSource::Parquet => parquet::planned_bytes(data),
        DataSource::Images => images::planned_bytes(data),
        _ => None,
    }
}

/// `t` on `device`. A batch gathered in host RAM for a GPU goes through pinned (page-locked) memory with a
/// non-blocking copy, so the host does not wait for the GPU: it gathers the next batch while the GPU still trains
/// on this one (PyTorch's pinned allocator keeps the buffer until the copy is done). Anything else is a plain copy
/// (none when `t` is already there).
pub(crate) fn to_device_async(t: &Tensor, device: Device) -> Tensor {
    if t.device() == Device::Cpu && device.is_cuda() {
        if let Ok(pinned) = t.f_pin_memory(device) {
            if let Ok(on) = pinned.f_to_device_(device, pinned.kind(), true, false) {
                return on;
            }
        }
    }
    t.to_device(device)
}

/// `crc32:<8 hex>` over each tensor's dtype, shape and bytes, in order. CRC-32 runs at several GB/s, so even a
/// large dataset adds little to start-up; it catches any changed, added or removed sample.
pub fn fingerprint(tensors: &[&Tensor]) -> String {
    let mut crc = crc32fast::Hasher::new();
    for t in tensors {
        crc.update(format!("{:?}{:?}", t.kind(), t.size()).as_bytes());
        match crate::ffi::host_bytes(t) {
            Some(b) => crc.update(b),
            None => {
                let host = t.to_device(Device::Cpu).contiguous();
                crc.update(crate::ffi::host_bytes(&host).unwrap_or_default());
            }
        }
    }
    format!("crc32:{:08x}", crc.finalize())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn fingerprint_sees_any_changed_value_shape_or_dtype() {
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).reshape([2, 2]);
        let y = Tensor::from_slice(&[0i64, 1]);
        let base = fingerprint(&[&x, &y]);
        assert!(base.starts_with("crc32:") && base.len() == 14, "{base}");
        assert_eq!(base, fingerprint(&[&x.copy(), &y.copy()]), "same data, same fingerprint");
        let x2 = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.5]).reshape([2, 2]);
        assert_ne!(base, fingerprint(&[&x2, &y]), "one value changed");
        assert_ne!(base, fingerprint(&[&x.reshape([4, 1]), &y]), "same bytes, other shape");
        assert_ne!(base, fingerprint(&[&x.to_kind(Kind::Double), &y]), "other dtype");
        assert_ne!(base, fingerprint(&[&y, &x]), "order matters");
        // a non-contiguous tensor is read through a contiguous copy, with the same result
        let xt = Tensor::from_slice(&[1.0f32, 3.0, 2.0, 4.0]).reshape([2, 2]).transpose(0, 1);
        assert!(!xt.is_contiguous());
        assert_eq!(base, fingerprint(&[&xt, &y]));
    }
}
