//! [`Dataset`]: samples held in memory (features and labels or targets, train and validation), loaded from any
//! sample source and checked (dtypes, shapes, label range and coverage, finite values, agreement with the model
//! config), and its batches. Token data is [`super::TokenData`]; the sources' readers are the sibling modules.
use std::path::PathBuf;

use tch::{Device, Kind, Tensor};

use super::{file, fingerprint, images, npy, parquet, synthetic, to_device_async, DataError};
use crate::config::{DataConfig, DataSource, ModelConfig, TaskKind};

/// Samples in memory. `x_*` are `[N, features]` in their stored dtype; `y_*` are int64 labels `[N]`, or float32
/// regression targets `[N, D]`.
pub struct Dataset {
    pub x_train: Tensor,
    pub y_train: Tensor,
    pub x_val: Tensor,
    pub y_val: Tensor,
    /// Per-sample shape: `[features]`, or `[C, H, W]` for image data.
    pub sample_shape: Vec<i64>,
    /// Classes, or regression targets per sample.
    pub classes: i64,
    /// The class names, when the labels were strings or class folders (class `i` is `class_names[i]`, in sorted
    /// order).
    pub class_names: Option<Vec<String>>,
    /// Per-channel normalisation of uint8 image inputs in each batch (`data.mean` / `data.std`).
    pub norm: Option<Normalize>,
    /// Where the data came from, for messages.
    pub origin: String,
    /// `crc32:<8 hex>` over the four tensors as loaded (see [`fingerprint`]); checkpoints record it so a resume on
    /// changed data is caught.
    pub fingerprint: String,
    /// Things about the data worth a warning that do not stop training (e.g. classes with no training sample).
    pub warnings: Vec<String>,
}

impl Dataset {
    /// Loads and checks the data described by `data`, against `model.inputs` / `model.classes` when set.
    pub fn load(data: &DataConfig, model: &ModelConfig) -> Result<Dataset, DataError> {
        let (raw, path) = match data.source {
            DataSource::Synthetic => {
                let (train, val) = synthetic::generate(&data.synthetic);
                let f = data.synthetic.features as i64;
                let to_x = |s: &synthetic::Split| Tensor::from_slice(&s.x).reshape([s.y.len() as i64, f]);
                let raw = file::RawSplits {
                    x_train: to_x(&train),
                    y_train: Tensor::from_slice(&train.y),
                    x_val: to_x(&val),
                    y_val: Tensor::from_slice(&val.y),
                };
                (raw, PathBuf::from("<synthetic>"))
            }
            DataSource::Safetensors | DataSource::Tokens | DataSource::Text => {
                let path = data.path.clone().unwrap_or_default();
                (file::read(&path, data)?, path)
            }
            DataSource::Npy => {
                let path = data.path.clone().unwrap_or_default();
                let (raw, notes) = npy::read(&path, data)?;
                let mut d = Self::check(raw, &path, data, model)?;
                d.warnings.extend(notes);
                return Ok(d);
            }
            DataSource::Parquet => {
                let path = data.path.clone().unwrap_or_default();
                let (raw, extras) = parquet::read(data)?;
                let mut d = Self::check(raw, &path, data, model)?;
                d.warnings.extend(extras.notes);
                if let Some(names) = extras.class_names {
                    d.name_classes(names);
                }
                return Ok(d);
            }
            DataSource::Images => return Self::images(data, model, false),
        };
        Self::check(raw, &path, data, model)
    }

    /// An image folder: decoded (or read from the data cache), checked, its classes named, with the batch
    /// normalisation `data.mean` / `data.std` ask for. `progress`: a bar while decoding and a line saying where the
    /// tensors are cached.
    pub(super) fn images(data: &DataConfig, model: &ModelConfig, progress: bool) -> Result<Dataset, DataError> {
        let loaded = images::load(data, progress)?;
        if progress {
            tell!("{}", loaded.prepared.describe());
        }
        let path = data.path.clone().unwrap_or_default();
        let mut d = Self::check(loaded.raw, &path, data, model)?;
        d.warnings.extend(loaded.notes);
        d.name_classes(loaded.classes);
        if data.mean.is_some() || data.std.is_some() {
            let c = d.sample_shape.first().copied().unwrap_or(1) as usize;
            d.norm = Some(Normalize {
                mean: data.mean.clone().unwrap_or_else(|| vec![0.0; c]),
                std: data.std.clone().unwrap_or_else(|| vec![1.0; c]),
            });
        }
        Ok(d)
    }

    /// Records the class names; they are part of the data, so the fingerprint covers them (a resume where they
    /// changed is a resume on other data).
    fn name_classes(&mut self, names: Vec<String>) {
        let joined = Tensor::from_slice(names.join("\n").as_bytes());
        self.fingerprint = fingerprint(&[&self.x_train, &self.y_train, &self.x_val, &self.y_val, &joined]);
        self.class_names = Some(names);
    }

    fn check(
        raw: file::RawSplits,
        path: &std::path::Path,
        data: &DataConfig,
        model: &ModelConfig,
    ) -> Result<Dataset, DataError> {
        let err = |key: &str, message: String| DataError::Shape { path: path.to_path_buf(), key: key.into(), message };
        let (xt, xv) = (raw.x_train.size(), raw.x_val.size());
        let (nt, nv) = (raw.y_train.size()[0], raw.y_val.size()[0]);
        if xt[0] != nt {
            return Err(err(
                "data.y_train",
                format!("{} has {} samples but {} has {nt} labels", data.x_train, xt[0], data.y_train),
            ));
        }
        if xv[0] != nv {
            return Err(err(
                "data.y_val",
                format!("{} has {} samples but {} has {nv} labels", data.x_val, xv[0], data.y_val),
            ));
        }
        if xt[1..] != xv[1..] {
            return Err(err(
                "data.x_val",
                format!("per-sample shape {:?} differs from {}'s {:?}", &xv[1..], data.x_train, &xt[1..]),
            ));
        }
        let features: i64 = xt[1..].iter().product();
        let sample_shape = match (&data.shape, xt.len()) {
            (Some(s), _) if s.iter().product::<i64>() != features => {
                return Err(err(
                    "data.shape",
                    format!(
                        "{s:?} has {} elements but each sample has {features} ({:?})",
                        s.iter().product::<i64>(),
                        &xt[1..]
                    ),
                ));
            }
            (Some(s), _) => s.clone(),
            (None, 4) => xt[1..].to_vec(),
            (None, _) => vec![features],
        };
        if let Some(n) = model.inputs {
            if n != features {
                return Err(err("model.inputs", format!("is {n} but the data has {features} features per sample")));
            }
        }
        for (name, key, x) in [(&data.x_train, "data.x_train", &raw.x_train), (&data.x_val, "data.x_val", &raw.x_val)] {
            check_finite(x, path, key, name)?;
        }
        let (classes, warnings) = match data.task {
            TaskKind::Classification => check_labels(&raw, path, data, model)?,
            TaskKind::Regression => (check_targets(&raw, path, data, model)?, Vec::new()),
        };
        let fingerprint = fingerprint(&[&raw.x_train, &raw.y_train, &raw.x_val, &raw.y_val]);
        let flat = |x: Tensor| x.reshape([-1, features]);
        Ok(Dataset {
            x_train: flat(raw.x_train),
            y_train: raw.y_train,
            x_val: flat(raw.x_val),
            y_val: raw.y_val,
            sample_shape,
            classes,
            class_names: None,
            norm: None,
            origin: path.display().to_string(),
            fingerprint,
            warnings,
        })
    }

    pub fn features(&self) -> i64 {
        self.sample_shape.iter().product()
    }

    pub fn train_len(&self) -> usize {
        self.y_train.size()[0] as usize
    }

    pub fn val_len(&self) -> usize {
        self.y_val.size()[0] as usize
    }

    /// Bytes held by the four tensors.
    pub fn nbytes(&self) -> u64 {
        [&self.x_train, &self.y_train, &self.x_val, &self.y_val]
            .iter()
            .map(|t| t.numel() as u64 * t.kind().elt_size_in_bytes() as u64)
            .sum()
    }

    /// Gathers a batch by index and converts the inputs to float32 on `device`: uint8 scaled by 1/255, then
    /// `norm` applied (the one place inputs become what the model sees; uint8 crosses to the device as uint8).
    pub fn batch(x: &Tensor, y: &Tensor, idx: &Tensor, device: Device, norm: Option<&Normalize>) -> (Tensor, Tensor) {
        let idx = idx.to_device(x.device());
        let xb = to_device_async(&x.index_select(0, &idx), device);
        let yb = to_device_async(&y.index_select(0, &idx), device);
        let xb = match xb.kind() {
            Kind::Float => xb,
            Kind::Uint8 => xb.to_kind(Kind::Float) / 255.0,
            _ => xb.to_kind(Kind::Float),
        };
        let xb = match norm {
            Some(n) => n.apply(&xb),
            None => xb,
        };
        (xb, yb)
    }
}

/// `(x - mean[c]) / std[c]` per channel `c` of `[B, C·H·W]` inputs already scaled to [0, 1], as torchvision's
/// `Normalize` after `ToTensor`.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Normalize {
    fn apply(&self, xb: &Tensor) -> Tensor {
        let c = self.mean.len() as i64;
        let dev = xb.device();
        let as_t = |v: &[f64]| Tensor::from_slice(v).to_kind(Kind::Float).to_device(dev).view([1, c, 1]);
        let (b, f) = (xb.size()[0], xb.size()[1]);
        ((xb.view([b, c, f / c]) - as_t(&self.mean)) / as_t(&self.std)).view([b, f])
    }
}

/// Classification labels: the number of classes after the range and coverage checks, and coverage warnings.
fn check_labels(
    raw: &file::RawSplits,
    path: &std::path::Path,
    data: &DataConfig,
    model: &ModelConfig,
) -> Result<(i64, Vec<String>), DataError> {
    let classes = check_label_range(raw, path, data, model)?;
    let warnings = label_coverage(&raw.y_train, &raw.y_val, classes, model.classes.is_some(), data)
        .map_err(|message| DataError::Labels { path: path.to_path_buf(), key: "data.y_val".into(), message })?;
    Ok((classes, warnings))
}

/// Regression targets: finite, the same width in both splits (and `model.classes` when set). Returns the width.
fn check_targets(
    raw: &file::RawSplits,
    path: &std::path::Path,
    data: &DataConfig,
    model: &ModelConfig,
) -> Result<i64, DataError> {
    for (name, key, y) in [(&data.y_train, "data.y_train", &raw.y_train), (&data.y_val, "data.y_val", &raw.y_val)] {
        check_finite(y, path, key, name)?;
    }
    let (dt, dv) = (raw.y_train.size()[1], raw.y_val.size()[1]);
    let err = |key: &str, message: String| DataError::Shape { path: path.to_path_buf(), key: key.into(), message };
    if dt != dv {
        return Err(err("data.y_val", format!("has {dv} targets per sample but {} has {dt}", data.y_train)));
    }
    match model.classes {
        Some(c) if c != dt => Err(err("model.classes", format!("is {c} but the data has {dt} targets per sample"))),
        _ => Ok(dt),
    }
}

/// The number of classes (`model.classes`, else the largest label + 1), after checking every label is in range.
fn check_label_range(
    raw: &file::RawSplits,
    path: &std::path::Path,
    data: &DataConfig,
    model: &ModelConfig,
) -> Result<i64, DataError> {
    let hi = label_range(&raw.y_train).1.max(label_range(&raw.y_val).1);
    let classes = model.classes.unwrap_or(hi + 1).max(2);
    for (name, key, y) in [(&data.y_train, "data.y_train", &raw.y_train), (&data.y_val, "data.y_val", &raw.y_val)] {
        let (l, h) = label_range(y);
        let bad = if l < 0 {
            Some(l)
        } else if h >= classes {
            Some(h)
        } else {
            None
        };
        if let Some(label) = bad {
            let key = if model.classes.is_some() && label >= 0 { "model.classes" } else { key };
            return Err(DataError::LabelRange {
                path: path.to_path_buf(),
                key: key.into(),
                name: name.clone(),
                label,
                classes,
            });
        }
    }
    Ok(classes)
}

/// Refuses NaN or ±Inf in an input tensor, naming the first offending index (training on them ends as a
/// misleading "diverged" or a NaN validation loss). Integer inputs are finite by construction.
fn check_finite(x: &Tensor, path: &std::path::Path, key: &str, name: &str) -> Result<(), DataError> {
    // min and max propagate NaN and are ±inf when any value is: two allocation-free passes decide it.
    let finite = |t: Tensor| t.double_value(&[]).is_finite();
    if !x.is_floating_point() || x.numel() == 0 || (finite(x.min()) && finite(x.max())) {
        return Ok(());
    }
    let bad = x.isfinite().logical_not();
    let index: Vec<i64> = Vec::<i64>::try_from(&bad.nonzero().get(0)).unwrap_or_default();
    let value = x.masked_select(&bad).get(0).double_value(&[]).to_string();
    Err(DataError::NonFinite { path: path.to_path_buf(), key: key.into(), name: name.into(), index, value })
}

/// Label coverage: a validation label no training sample has (with `classes` inferred from the labels) is an
/// error, since it silently adds output classes (a stray 99 builds a 100-class model); classes with no training
/// sample are a warning. Returns the warnings.
fn label_coverage(
    y_train: &Tensor,
    y_val: &Tensor,
    classes: i64,
    declared: bool,
    data: &DataConfig,
) -> Result<Vec<String>, String> {
    // Sorted distinct labels, not a count per class: `classes` comes from the data and may be huge.
    let distinct = |y: &Tensor| Vec::<i64>::try_from(&y.internal_unique(true, false).0).unwrap_or_default();
    let (train, val) = (distinct(y_train), distinct(y_val));
    let in_train = |c: &i64| train.binary_search(c).is_ok();
    if let (Some(&c), false) = (val.iter().find(|c| !in_train(c)), declared) {
        let n = y_val.eq(c).sum(Kind::Int64).int64_value(&[]);
        return Err(format!(
            "label {c} appears in `{}` ({n} samples) but never in `{}`, so {classes} classes would be inferred; fix \
             the labels, or set model.classes if the class is really missing from training",
            data.y_val, data.y_train
        ));
    }
    let unused = classes.saturating_sub(train.len() as i64);
    if unused <= 0 {
        return Ok(Vec::new());
    }
    let shown: Vec<String> = (0..classes).filter(|c| !in_train(c)).take(10).map(|c| c.to_string()).collect();
    let more = if unused > 10 { format!(" and {} more", unused - 10) } else { String::new() };
    Ok(vec![format!(
        "{unused} of {classes} classes have no training sample in `{}` (labels {}{more}); the model cannot learn them",
        data.y_train,
        shown.join(", ")
    )])
}

fn label_range(y: &Tensor) -> (i64, i64) {
    (y.min().int64_value(&[]), y.max().int64_value(&[]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// The host path gives the same batch on every device: a plain copy on the CPU; on a GPU (when the suite runs
    /// there, `scripts/gpu-check.sh`'s `cargo test` of the library) through pinned memory, non-blocking.
    #[test]
    fn a_batch_reaches_its_device_with_the_same_values() {
        let x = Tensor::arange(24, (Kind::Float, Device::Cpu)).reshape([6, 4]);
        let y = Tensor::arange(6, (Kind::Int64, Device::Cpu));
        let idx = Tensor::from_slice(&[4i64, 0, 2]);
        let mut devices = vec![Device::Cpu];
        if tch::Cuda::is_available() {
            devices.push(Device::Cuda(0));
        }
        for dev in devices {
            let (xb, yb) = Dataset::batch(&x, &y, &idx, dev, None);
            assert_eq!(xb.device(), dev);
            let want = x.index_select(0, &idx);
            assert!(xb.to_device(Device::Cpu).equal(&want), "{dev:?}");
            assert_eq!(Vec::<i64>::try_from(yb.to_device(Device::Cpu)).unwrap(), [4, 0, 2]);
        }
    }
}
