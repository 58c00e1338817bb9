//! Cross-field rules a type cannot express: positive sizes, ranges, and keys that other keys require.
//!
//! Pure: returns the dotted key and a message; `load.rs` adds the file name.
use super::schema::{Config, DataSource, ModelKind, TaskKind};

/// `train.threads` above this is a typo, not a machine: libtorch would try to start that many threads.
pub(super) const MAX_THREADS: usize = 4096;

/// Checks `c`; on failure returns `(key path, message)`.
/// A value a config key cannot take: the dotted key and why (the loader adds the file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct BadValue {
    pub key: String,
    pub message: String,
}

pub(super) fn validate(c: &Config) -> Result<(), BadValue> {
    train(c)?;
    optim(c)?;
    schedule(c)?;
    model(c)?;
    gpt(c)?;
    checkpoint(c)?;
    data(c)?;
    task(c)
}

/// `Err` for the first value out of range.
type Checked = Result<(), BadValue>;

/// `[train]`.
fn train(c: &Config) -> Checked {
    let err = |k: &str, m: String| Err(BadValue { key: k.to_string(), message: m });
    if c.train.epochs == 0 {
        return err("train.epochs", "must be at least 1".into());
    }
    if c.train.batch_size == 0 {
        return err("train.batch_size", "must be at least 1".into());
    }
    if c.train.eval_batch_size == 0 {
        return err("train.eval_batch_size", "must be at least 1".into());
    }
    if crate::device::parse_device(&c.train.device).is_none() {
        return err("train.device", format!("\"{}\" is not one of auto, cpu, cuda, cuda:N", c.train.device));
    }
    if let Some(es) = &c.train.early_stopping {
        if es.patience == 0 {
            return err("train.early_stopping.patience", "must be at least 1".into());
        }
        if !(es.min_delta.is_finite() && es.min_delta >= 0.0) {
            return err("train.early_stopping.min_delta", format!("must be >= 0, got {}", es.min_delta));
        }
    }
    if let Some(name) = &c.train.name {
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
            return err(
                "train.name",
                format!("\"{name}\" cannot name a run directory (it must not be empty, '.', '..' or contain '/')"),
            );
        }
    }
    if c.train.accumulate == 0 || !c.train.batch_size.is_multiple_of(c.train.accumulate) {
        return err(
            "train.accumulate",
            format!(
                "must be at least 1 and divide train.batch_size = {} (each micro-batch has batch_size / accumulate \
                 samples), got {}",
                c.train.batch_size, c.train.accumulate
            ),
        );
    }
    if let Some(ema) = &c.train.ema {
        if !(ema.decay > 0.0 && ema.decay < 1.0) {
            return err("train.ema.decay", format!("must be in (0, 1), got {}", ema.decay));
        }
        if ema.every == 0 {
            return err("train.ema.every", "must be at least 1".into());
        }
    }
    if c.train.ema_eval && c.train.ema.is_none() {
        return err("train.ema_eval", "needs train.ema, e.g. train.ema = { decay = 0.999 }".into());
    }
    if c.train.threads > MAX_THREADS {
        return err("train.threads", format!("must be at most {MAX_THREADS} (0 = all cores), got {}", c.train.threads));
    }
    Ok(())
}

/// `[optim]`.
fn optim(c: &Config) -> Checked {
    let err = |k: &str, m: String| Err(BadValue { key: k.to_string(), message: m });
    if !(c.optim.lr.is_finite() && c.optim.lr > 0.0) {
        return err("optim.lr", format!("must be a positive number, got {}", c.optim.lr));
    }
    if !(c.optim.weight_decay.is_finite() && c.optim.weight_decay >= 0.0) {
        return err("optim.weight_decay", format!("must be >= 0, got {}", c.optim.weight_decay));
    }
    for (i, b) in c.optim.betas.iter().enumerate() {
        if !(0.0..1.0).contains(b) {
            return err(&format!("optim.betas[{i}]"), format!("must be in [0, 1), got {b}"));
        }
    }
    if c.optim.eps.is_nan() || c.optim.eps <= 0.0 {
        return err("optim.eps", format!("must be > 0, got {}", c.optim.eps));
    }
    if !(0.0..1.0).contains(&c.optim.momentum) && c.optim.momentum != 0.0 {
        return err("optim.momentum", format!("must be in [0, 1), got {}", c.optim.momentum));
    }
    if c.optim.nesterov && (c.optim.momentum <= 0.0 || c.optim.dampening != 0.0) {
        return err(
            "optim.nesterov",
            "needs optim.momentum > 0 and optim.dampening = 0 (as in torch.optim.SGD)".into(),
        );
    }
    if let Some(g) = c.optim.grad_clip {
        if !(g.is_finite() && g > 0.0) {
            return err("optim.grad_clip", format!("must be a positive number, got {g}"));
        }
    }
    Ok(())
}

/// `[schedule]`.
fn schedule(c: &Config) -> Checked {
    let err = |k: &str, m: String| Err(BadValue { key: k.to_string(), message: m });
    if !(c.schedule.min_lr >= 0.0 && c.schedule.min_lr <= c.optim.lr) {
        return err("schedule.min_lr", format!("must be in [0, optim.lr = {}], got {}", c.optim.lr, c.schedule.min_lr));
    }
    if c.schedule.step_size == 0 {
        return err("schedule.step_size", "must be at least 1".into());
    }
    if !(c.schedule.gamma > 0.0 && c.schedule.gamma <= 1.0) {
        return err("schedule.gamma", format!("must be in (0, 1], got {}", c.schedule.gamma));
    }
    Ok(())
}

/// `[model]` (and `data.shape`, which the model reads).
fn model(c: &Config) -> Checked {
    let err = |k: &str, m: String| Err(BadValue { key: k.to_string(), message: m });
    if !(0.0..1.0).contains(&c.model.dropout) {
        return err("model.dropout", format!("must be in [0, 1), got {}", c.model.dropout));
    }
    if let Some(i) = c.model.hidden.iter().position(|&h| h <= 0) {
        return err(&format!("model.hidden[{i}]"), "widths must be positive".into());
    }
    if let Some(i) = c.model.channels.iter().position(|&h| h <= 0) {
        return err(&format!("model.channels[{i}]"), "channel counts must be positive".into());
    }
    if c.model.kind == ModelKind::Cnn && c.model.channels.is_empty() {
        return err("model.channels", "a cnn needs at least one convolution".into());
    }
    if matches!(c.model.inputs, Some(n) if n <= 0) {
        return err("model.inputs", "must be positive".into());
    }
    let least = if c.data.task == TaskKind::Regression { 1 } else { 2 };
    if matches!(c.model.classes, Some(n) if n < least) {
        return err("model.classes", format!("must be at least {least}"));
    }
    if let Some(shape) = &c.data.shape {
        if shape.len() != 3 || shape.iter().any(|&d| d <= 0) {
            return err("data.shape", format!("must be [C, H, W] with positive sizes, got {shape:?}"));
        }
    }
    Ok(())
}

/// `model.kind = "gpt"` and the token data it needs.
fn gpt(c: &Config) -> Checked {
    let err = |k: &str, m: String| Err(BadValue { key: k.to_string(), message: m });
    let m = &c.model;
    match (m.kind == ModelKind::Torchscript, &m.path) {
        (true, None) => {
            return err("model.path", "model.kind = \"torchscript\" needs model.path (the saved module)".into())
        }
        (false, Some(_)) => return err("model.path", "is only used with model.kind = \"torchscript\"".into()),
        _ => {}
    }
    match (m.kind == ModelKind::Gpt, matches!(c.data.source, DataSource::Tokens | DataSource::Text)) {
        (true, false) => {
            return err("model.kind", "\"gpt\" trains on token data: set data.source = \"tokens\" or \"text\"".into())
        }
        (false, true) if m.kind == ModelKind::Torchscript => return Ok(()),
        (false, true) => {
            return err(
                "model.kind",
                "data.source = \"tokens\" or \"text\" needs model.kind = \"gpt\" or \"torchscript\" (mlp and cnn take \
                 samples)"
                    .into(),
            )
        }
        (false, false) => return Ok(()),
        (true, true) => {}
    }
    for (key, v) in [("n_layer", m.n_layer), ("n_head", m.n_head), ("n_embd", m.n_embd), ("block_size", m.block_size)] {
        if v < 1 {
            return err(&format!("model.{key}"), format!("must be at least 1, got {v}"));
        }
    }
    if m.n_embd % m.n_head != 0 {
        return err("model.n_embd", format!("must be a multiple of model.n_head = {} (got {})", m.n_head, m.n_embd));
    }
    if matches!(m.vocab_size, Some(v) if v < 2) {
        return err("model.vocab_size", "must be at least 2 (or left out: it is read from meta.json)".into());
    }
    Ok(())
}

/// `data.task` and the metrics the task offers.
fn task(c: &Config) -> Checked {
    let err = |k: &str, m: String| Err(BadValue { key: k.to_string(), message: m });
    let float_targets = [DataSource::Safetensors, DataSource::Npy, DataSource::Parquet];
    if c.data.task == TaskKind::Regression && !float_targets.contains(&c.data.source) {
        return err(
            "data.task",
            "\"regression\" reads float targets from data.source = \"safetensors\", \"npy\" or \"parquet\"".into(),
        );
    }
    let task = c.task();
    let offered: Vec<&str> = task.metrics().iter().map(|m| m.as_str()).collect();
    let not_offered = |key: &str, m: crate::config::MetricName| {
        err(key, format!("{} is not a {} metric; use one of {}", m.as_str(), task.name(), offered.join(", ")))
    };
    if let Some(es) = c.train.early_stopping.as_ref().filter(|es| !task.metrics().contains(&es.metric)) {
        return not_offered("train.early_stopping.metric", es.metric);
    }
    if let Some(m) = c.checkpoint.keep_best.filter(|m| !task.metrics().contains(m)) {
        return not_offered("checkpoint.keep_best", m);
    }
    Ok(())
}

/// `[checkpoint]`.
fn checkpoint(c: &Config) -> Checked {
    let err = |k: &str, m: String| Err(BadValue { key: k.to_string(), message: m });
    if c.checkpoint.keep_last == 0 {
        return err("checkpoint.keep_last", "must be at least 1".into());
    }
    if !(c.checkpoint.every_seconds >= 0.0 && c.checkpoint.every_seconds.is_finite()) {
        return err("checkpoint.every_seconds", format!("must be >= 0, got {}", c.checkpoint.every_seconds));
    }
    if c.checkpoint.grace_seconds.is_nan() || c.checkpoint.grace_seconds < 0.0 {
        return err("checkpoint.grace_seconds", format!("must be >= 0, got {}", c.checkpoint.grace_seconds));
    }
    Ok(())
}

/// `[data]`.
fn data(c: &Config) -> Checked {
    let err = |k: &str, m: String| Err(BadValue { key: k.to_string(), message: m });
    match c.data.source {
        DataSource::Safetensors if c.data.path.is_none() => {
            return err("data.path", "data.source = \"safetensors\" needs data.path".into());
        }
        DataSource::Synthetic => {
            let s = &c.data.synthetic;
            for (key, value, least) in
                [("train", s.train, 1), ("val", s.val, 1), ("features", s.features, 2), ("classes", s.classes, 2)]
            {
                if value < least {
                    return err(&format!("data.synthetic.{key}"), format!("must be at least {least}, got {value}"));
                }
            }
            if c.data.path.is_some() {
                return err("data.path", "is only used with data.source = \"safetensors\" or \"tokens\"".into());
            }
        }
        DataSource::Tokens if c.data.path.is_none() => {
            let s = &c.data.synthetic;
            for (key, value, least) in [("train", s.train, 2), ("val", s.val, 2), ("vocab", s.vocab, 2)] {
                if value < least {
                    return err(&format!("data.synthetic.{key}"), format!("must be at least {least}, got {value}"));
                }
            }
            if s.vocab > 27 {
                return err("data.synthetic.vocab", format!("must be at most 27 (a-z and space), got {}", s.vocab));
            }
        }
        DataSource::Safetensors | DataSource::Tokens => {}
        DataSource::Npy | DataSource::Parquet => tabular(c)?,
        DataSource::Text => prepared(c)?,
        DataSource::Images => images(c)?,
    }
    if c.data.source != DataSource::Parquet {
        let set = [
            ("data.features", c.data.features.is_some()),
            ("data.target", c.data.target.is_some()),
            ("data.val_path", c.data.val_path.is_some()),
            ("data.split_seed", c.data.split_seed.is_some()),
        ];
        if let Some((key, _)) = set.iter().find(|(_, on)| *on) {
            return err(key, "is only used with data.source = \"parquet\"".into());
        }
    }
    if !matches!(c.data.source, DataSource::Parquet | DataSource::Text) && c.data.val_fraction.is_some() {
        return err("data.val_fraction", "is only used with data.source = \"parquet\" or \"text\"".into());
    }
    if c.data.source != DataSource::Text && c.data.tokenizer.is_some() {
        return err("data.tokenizer", "is only used with data.source = \"text\"".into());
    }
    if c.data.source != DataSource::Images {
        let set = [
            ("data.mean", c.data.mean.is_some()),
            ("data.std", c.data.std.is_some()),
            ("data.skip_bad", c.data.skip_bad.is_some()),
        ];
        if let Some((key, _)) = set.iter().find(|(_, on)| *on) {
            return err(key, "is only used with data.source = \"images\"".into());
        }
    }
    Ok(())
}

/// `data.source = "images"`: a folder, `data.shape` with 1 or 3 channels, and `data.mean` / `data.std` with one
/// finite value per channel (std positive).
fn images(c: &Config) -> Checked {
    let err = |k: &str, m: String| Err(BadValue { key: k.to_string(), message: m });
    let d = &c.data;
    if d.path.is_none() {
        return err("data.path", "data.source = \"images\" needs data.path (a folder with train/ and val/)".into());
    }
    let Some(shape) = &d.shape else {
        return err("data.shape", "data.source = \"images\" needs data.shape = [C, H, W] (C = 1 or 3)".into());
    };
    if shape.len() != 3 || !matches!(shape[0], 1 | 3) || shape[1..].iter().any(|&s| !(1..=65_535).contains(&s)) {
        return err("data.shape", format!("must be [C, H, W] with C = 1 or 3 and sides 1..=65535, got {shape:?}"));
    }
    for (key, values, positive) in [("data.mean", &d.mean, false), ("data.std", &d.std, true)] {
        let Some(v) = values else { continue };
        if v.len() as i64 != shape[0] {
            return err(key, format!("needs one value per channel ({}), got {}", shape[0], v.len()));
        }
        if let Some(x) = v.iter().find(|x| !x.is_finite() || (positive && **x <= 0.0)) {
            let what = if positive { "positive finite numbers" } else { "finite numbers" };
            return err(key, format!("must hold {what}, got {x}"));
        }
    }
    Ok(())
}

/// `data.source = "text"`: the keys of a source spotrun prepares into its data cache.
fn prepared(c: &Config) -> Checked {
    let err = |k: &str, m: String| Err(BadValue { key: k.to_string(), message: m });
    let d = &c.data;
    if d.path.is_none() {
        return err("data.path", "data.source = \"text\" needs data.path (a file, a directory or a glob)".into());
    }
    if let Some(f) = d.val_fraction {
        if !(f > 0.0 && f < 1.0) {
            return err("data.val_fraction", format!("must be in (0, 1), got {f}"));
        }
    }
    if matches!(&d.tokenizer, Some(t) if t.is_empty()) {
        return err("data.tokenizer", "must be \"gpt2\", \"chars\" or the path of a tokenizer.json".into());
    }
    Ok(())
}

/// `data.source = "npy"` and `"parquet"`: a path, and (Parquet) one way of getting a validation set.
fn tabular(c: &Config) -> Checked {
    let err = |k: &str, m: String| Err(BadValue { key: k.to_string(), message: m });
    let d = &c.data;
    let name = if d.source == DataSource::Npy { "npy" } else { "parquet" };
    if d.path.is_none() {
        return err("data.path", format!("data.source = \"{name}\" needs data.path"));
    }
    if d.source == DataSource::Npy {
        return Ok(());
    }
    match (&d.val_path, d.val_fraction) {
        (Some(_), Some(_)) => err("data.val_fraction", "set data.val_path or data.val_fraction, not both".into()),
        (None, None) => err(
            "data.val_path",
            "parquet data needs a validation set: data.val_path, or data.val_fraction (e.g. 0.1)".into(),
        ),
        (None, Some(f)) if !(f > 0.0 && f < 1.0) => {
            err("data.val_fraction", format!("must be between 0 and 1 (exclusive), got {f}"))
        }
        (Some(_), None) if d.split_seed.is_some() => {
            err("data.split_seed", "seeds the data.val_fraction split; data.val_path is used as it is".into())
        }
        _ if matches!(&d.features, Some(f) if f.is_empty()) => {
            err("data.features", "is empty; name the input columns, or leave it out for every numeric column".into())
        }
        _ => Ok(()),
    }
}
