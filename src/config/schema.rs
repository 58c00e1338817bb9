//! The typed configuration: one struct per TOML section, with the defaults a new user gets.
//!
//! Every section denies unknown keys, so a typo is an error that names the key instead of a silently ignored
//! setting. Cross-field rules (ranges, kinds that need other keys) live in `validate.rs`.
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A whole run configuration, as read from TOML and written back to `RUN_DIR/config.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub data: DataConfig,
    pub model: ModelConfig,
    pub optim: OptimConfig,
    pub schedule: ScheduleConfig,
    pub train: TrainConfig,
    pub checkpoint: CheckpointConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataSource {
    /// The built-in, seeded classification task (see `data::synthetic`).
    Synthetic,
    /// A safetensors file with train and val tensors.
    Safetensors,
    /// Token ids in nanoGPT's format: `data.path` = a directory with `train.bin`, `val.bin` and `meta.json`;
    /// without `data.path`, the built-in synthetic token stream sized by `[data.synthetic]`.
    Tokens,
    /// NumPy arrays: `data.path` = an `.npz` file or a directory of `NAME.npy` files, named by `data.x_train` ….
    Npy,
    /// Parquet: `data.path` = a file, a directory or a glob; columns chosen by `data.features` / `data.target`.
    Parquet,
    /// UTF-8 text files (`data.path`: a file, a directory or a glob), tokenized once with `data.tokenizer` into
    /// the data cache as nanoGPT token files.
    Text,
    /// An image folder (`data.path/train/<class>/*.png|jpg|jpeg` and `data.path/val/<class>/…`, torchvision's
    /// `ImageFolder` layout), decoded once to uint8 `data.shape` tensors into the data cache.
    Images,
}

/// `data.task`: what the targets of safetensors data are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// Integer labels `[N]`, cross-entropy, accuracy.
    #[default]
    Classification,
    /// Float targets `[N]` or `[N, D]`, mean squared error, mean absolute error.
    Regression,
}

/// `data.token_dtype`: how `train.bin` / `val.bin` store each token id (little-endian, no header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenDtype {
    #[default]
    Uint16,
    Uint32,
}

impl TokenDtype {
    /// Bytes per token id.
    pub fn size(self) -> usize {
        match self {
            TokenDtype::Uint16 => 2,
            TokenDtype::Uint32 => 4,
        }
    }
}

/// `data.on_device`: whether the whole dataset is copied to the accelerator once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDevice {
    /// Copy when the dataset takes at most half of the device's free memory.
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub source: DataSource,
    /// `classification` (default) or `regression`; for safetensors data.
    pub task: TaskKind,
    /// `tokens` data: `uint16` (nanoGPT's default) or `uint32`.
    pub token_dtype: TokenDtype,
    /// The safetensors file, or the token directory (relative paths are relative to the working directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    pub on_device: OnDevice,
    /// Tensor names inside the safetensors file.
    pub x_train: String,
    pub y_train: String,
    pub x_val: String,
    pub y_val: String,
    /// Per-sample input shape `[C, H, W]` (required by `model.kind = "cnn"` unless the file's tensors are 4-D).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shape: Option<Vec<i64>>,
    pub synthetic: SyntheticConfig,
    /// `parquet`: the input columns (numeric columns, or one list / fixed-size-list column); default: every numeric
    /// column but `data.target`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
    /// `parquet`: the label (integer or string; strings become class indices in sorted order) or regression
    /// column; default `label` (Hugging Face's name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `parquet`: the validation file(s) (a file, a directory or a glob), read like `data.path`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_path: Option<PathBuf>,
    /// The share held out for validation: `parquet` without `data.val_path`, rows chosen by `data.split_seed`;
    /// `text`, the end of the token stream. Default 0.1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_fraction: Option<f64>,
    /// The seed of the `data.val_fraction` split (not `train.seed`: a seed sweep keeps one validation set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_seed: Option<u64>,
    /// `text`: `"gpt2"` (the default: GPT-2's BPE, built in), `"chars"`, or the path of a Hugging Face
    /// `tokenizer.json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// Where prepared data (tokenized text) is cached (default `~/.cache/spotrun/data`); a
    /// placement key: not part of the run id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
    /// `images`: per-channel mean and standard deviation applied to each batch after scaling to [0, 1]
    /// (`(x / 255 - mean) / std`, as torchvision's `ToTensor` + `Normalize`); default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean: Option<Vec<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub std: Option<Vec<f64>>,
    /// `images`: skip (and count) files that do not decode instead of stopping with an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_bad: Option<bool>,
}

impl DataConfig {
    /// `data.val_fraction`, or its default 0.1.
    pub fn val_fraction(&self) -> f64 {
        self.val_fraction.unwrap_or(0.1)
    }

    /// `data.tokenizer`, or its default `gpt2`.
    pub fn tokenizer(&self) -> &str {
        self.tokenizer.as_deref().unwrap_or("gpt2")
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            source: DataSource::Synthetic,
            task: TaskKind::Classification,
            token_dtype: TokenDtype::Uint16,
            path: None,
            on_device: OnDevice::Auto,
            x_train: "x_train".into(),
            y_train: "y_train".into(),
            x_val: "x_val".into(),
            y_val: "y_val".into(),
            shape: None,
            synthetic: SyntheticConfig::default(),
            features: None,
            target: None,
            val_path: None,
            val_fraction: None,
            split_seed: None,
            tokenizer: None,
            cache_dir: None,
            mean: None,
            std: None,
            skip_bad: None,
        }
    }
}

/// `[data.synthetic]`: size and seed of the built-in tasks. For `data.source = "tokens"`, `train` and `val` count
/// tokens and `vocab` is the vocabulary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticConfig {
    pub train: usize,
    pub val: usize,
    pub features: usize,
    pub classes: usize,
    /// Synthetic tokens only: the vocabulary size (at most 27: the letters and a space, so samples read as text).
    pub vocab: usize,
    /// The data seed, separate from `train.seed` so replicate runs see the same data.
    pub seed: u64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig { train: 60_000, val: 10_000, features: 784, classes: 10, vocab: 27, seed: 1234 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Mlp,
    Cnn,
    /// nanoGPT's `GPT`, for `data.source = "tokens"`.
    Gpt,
    /// The user's own module, saved with `torch.jit.script(m).save(path)`: `model.path`.
    Torchscript,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Relu,
    Gelu,
    Tanh,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub kind: ModelKind,
    /// Hidden widths of the fully connected layers (for `cnn`, the layers after the convolutions).
    pub hidden: Vec<i64>,
    pub activation: Activation,
    pub dropout: f64,
    /// `cnn` only: output channels of each 3×3 convolution (each followed by the activation and a 2×2 max-pool).
    pub channels: Vec<i64>,
    /// Input features; inferred from the data when absent, an error when present and different.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inputs: Option<i64>,
    /// Number of classes; inferred from the labels when absent, an error when a label does not fit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classes: Option<i64>,
    /// `gpt`: transformer blocks, attention heads, embedding width, context length, biases in linear and
    /// LayerNorm layers (nanoGPT's `GPTConfig`).
    pub n_layer: i64,
    pub n_head: i64,
    pub n_embd: i64,
    pub block_size: i64,
    pub bias: bool,
    /// `gpt`: inferred from the token data's `meta.json`; an error when present and different.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<i64>,
    /// `torchscript`: the saved module (relative paths are relative to the working directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// `torchscript`: `sha256:<hex>` of the module file, filled in by spotrun when it reads a config (any value
    /// given is replaced), so the run id covers the file's content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_hash: Option<String>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            kind: ModelKind::Mlp,
            hidden: vec![1024, 1024],
            activation: Activation::Relu,
            dropout: 0.0,
            channels: vec![32, 64],
            inputs: None,
            classes: None,
            n_layer: 6,
            n_head: 6,
            n_embd: 384,
            block_size: 256,
            bias: false,
            vocab_size: None,
            path: None,
            file_hash: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimKind {
    Adamw,
    Sgd,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    pub kind: OptimKind,
    pub lr: f64,
    /// Decoupled for AdamW, L2 (added to the gradient) for SGD, as in torch.optim.
    pub weight_decay: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub nesterov: bool,
    /// Clip the global L2 norm of the gradients to this value before each step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_clip: Option<f64>,
    /// Which parameters get weight decay: `all`, or `matrices` (tensors of 2 or more dimensions, as nanoGPT's
    /// `configure_optimizers`). Default: `matrices` for `gpt`, `all` otherwise (see [`Config::decay`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decay: Option<Decay>,
}

/// `optim.decay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    All,
    Matrices,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            kind: OptimKind::Adamw,
            lr: 1e-3,
            weight_decay: 0.01,
            betas: [0.9, 0.999],
            eps: 1e-8,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            grad_clip: None,
            decay: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    Constant,
    Cosine,
    Step,
}

/// `[schedule]`: the learning rate as a pure function of the optimizer step (see `optim::schedule`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    pub kind: ScheduleKind,
    /// Linear warm-up from lr/warmup_steps to lr over this many steps (all kinds).
    pub warmup_steps: u64,
    /// `cosine`: the learning rate reached at the last step.
    pub min_lr: f64,
    /// `step`: multiply the learning rate by `gamma` every `step_size` optimizer steps.
    pub step_size: u64,
    pub gamma: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig { kind: ScheduleKind::Constant, warmup_steps: 0, min_lr: 0.0, step_size: 1000, gamma: 0.1 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bf16 autocast on CUDA, fp32 on CPU.
    Auto,
    Fp32,
    Bf16,
    Fp16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Run name, used in the default run directory `runs/<name>-<runid8>` (default: the config file's stem).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub epochs: usize,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub precision: Precision,
    pub seed: u64,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// CPU threads for libtorch; 0 = all cores.
    pub threads: usize,
    /// Read the loss back to the host every this many steps (0 = only at epoch end).
    pub log_every: u64,
    /// torch's deterministic algorithms (and the cuDNN/cuBLAS settings they need).
    pub deterministic: bool,
    /// Cap on optimizer steps per epoch (0 = a whole pass over the training data), for large token corpora.
    pub steps_per_epoch: u64,
    /// Cap on validation batches per evaluation (0 = the whole validation split).
    pub eval_batches: u64,
    /// Write TensorBoard event files under `RUN_DIR/tb/` (default on in sweeps; not part of the run id).
    pub tensorboard: bool,
    /// Gradient accumulation: each optimizer step sums the gradients of this many micro-batches of
    /// `batch_size / accumulate` samples, the loss normalised by the step's whole batch.
    pub accumulate: usize,
    /// An exponential moving average of the weights, e.g. `{ decay = 0.999, every = 1 }`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ema: Option<EmaConfig>,
    /// Evaluate with the EMA weights (needs `train.ema`).
    pub ema_eval: bool,
    /// Stop before `epochs` when a metric stops improving, e.g. `{ metric = "val_loss", patience = 3 }`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStopping>,
    /// How a fused group launches its AdamW update and its losses (not part of the run id: it changes rounding,
    /// as the device does, not what is computed).
    pub fused_step: FusedStep,
}

/// `train.fused_step`: the form of a fused group's step (see `trainer/fused.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FusedStep {
    /// `batched` on CUDA (where kernel launches, not FLOPs, are expected to cost; not measured yet), `per_run` on
    /// the CPU (where the two take the same time and `per_run` keeps a fused run bitwise its unfused self at the
    /// shapes BENCHMARKS.md names).
    #[default]
    Auto,
    /// torch's fused AdamW kernel once per run on its slices, and each run's loss computed alone: launches grow
    /// with the number of runs; the arithmetic is the unfused run's.
    PerRun,
    /// One AdamW kernel call over every run's stacked tensors and one loss over the batched output: launches per
    /// step do not grow with the number of runs; rounding differs from an unfused run's.
    Batched,
}

/// A per-epoch metric that runs are judged by (early stopping, sweep rankings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricName {
    ValLoss,
    ValAccuracy,
    TrainLoss,
    /// Language modelling: `exp(val_loss)`.
    ValPpl,
    /// Regression: mean absolute error.
    ValMae,
}

impl MetricName {
    pub fn higher_is_better(self) -> bool {
        matches!(self, MetricName::ValAccuracy)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MetricName::ValLoss => "val_loss",
            MetricName::ValAccuracy => "val_accuracy",
            MetricName::TrainLoss => "train_loss",
            MetricName::ValPpl => "val_ppl",
            MetricName::ValMae => "val_mae",
        }
    }
}

/// What a run trains, from its data and model keys: it decides the loss and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Classification,
    Regression,
    LanguageModel,
}

impl Task {
    /// The per-epoch metrics this task writes (early stopping and sweeps may judge runs by any of them).
    pub fn metrics(self) -> &'static [MetricName] {
        match self {
            Task::Classification => &[MetricName::ValLoss, MetricName::ValAccuracy, MetricName::TrainLoss],
            Task::Regression => &[MetricName::ValLoss, MetricName::ValMae, MetricName::TrainLoss],
            Task::LanguageModel => &[MetricName::ValLoss, MetricName::ValPpl, MetricName::TrainLoss],
        }
    }

    /// The metric runs are ranked by when a sweep names none.
    pub fn default_metric(self) -> MetricName {
        match self {
            Task::Classification => MetricName::ValAccuracy,
            _ => MetricName::ValLoss,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Task::Classification => "classification",
            Task::Regression => "regression",
            Task::LanguageModel => "language modelling",
        }
    }
}

impl Config {
    /// The task this config trains.
    pub fn task(&self) -> Task {
        match (self.data.source, self.data.task) {
            (DataSource::Tokens | DataSource::Text, _) => Task::LanguageModel,
            (_, TaskKind::Regression) => Task::Regression,
            _ => Task::Classification,
        }
    }

    /// `optim.decay`, resolved: nanoGPT's `matrices` for a GPT, `all` otherwise.
    pub fn decay(&self) -> Decay {
        self.optim.decay.unwrap_or(if self.model.kind == ModelKind::Gpt { Decay::Matrices } else { Decay::All })
    }
}

/// `train.ema`: `ema = decay_t · ema + (1 − decay_t) · weights` every `every` optimizer steps, with the warm-up
/// `decay_t = min(decay, (1 + t) / (10 + t))` at update `t` (so early averages are not dominated by the init).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmaConfig {
    pub decay: f64,
    #[serde(default = "one_step")]
    pub every: u64,
}

fn one_step() -> u64 {
    1
}

/// `train.early_stopping`: stop once `metric` has not improved by more than `min_delta` for `patience` epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    pub metric: MetricName,
    pub patience: usize,
    #[serde(default)]
    pub min_delta: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            name: None,
            epochs: 10,
            batch_size: 8192,
            eval_batch_size: 8192,
            precision: Precision::Auto,
            seed: 0,
            device: "auto".into(),
            threads: 0,
            log_every: 10,
            deterministic: false,
            steps_per_epoch: 0,
            eval_batches: 0,
            tensorboard: false,
            accumulate: 1,
            ema: None,
            ema_eval: false,
            early_stopping: None,
            fused_step: FusedStep::Auto,
        }
    }
}

/// `[checkpoint]`: when and where resume checkpoints are written. None of these change the results, so none of
/// them is part of the run id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Directory for checkpoints (default `RUN_DIR/checkpoints`); may be a mounted volume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Save after every this many epochs (0 = never at epoch ends).
    pub every_epochs: usize,
    /// Save after every this many optimizer steps (0 = off).
    pub every_steps: u64,
    /// Save when this many seconds passed since the last save (0 = off); checked after every step.
    pub every_seconds: f64,
    /// How many committed checkpoints to keep (at least 1; the newest is never deleted).
    pub keep_last: usize,
    /// Write checkpoints on a background thread while training goes on.
    #[serde(rename = "async")]
    pub background: bool,
    /// On a preemption signal, skip the final save if the last save took longer than this (seconds).
    pub grace_seconds: f64,
    /// Keep the checkpoint of the best epoch by this metric outside `keep_last`'s rotation, and write
    /// `RUN_DIR/best.safetensors`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_best: Option<MetricName>,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            dir: None,
            every_epochs: 1,
            every_steps: 0,
            every_seconds: 0.0,
            keep_last: 2,
            background: false,
            grace_seconds: 25.0,
            keep_best: None,
        }
    }
}

impl Serialize for OnDevice {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OnDevice::Auto => s.serialize_str("auto"),
            OnDevice::Always => s.serialize_bool(true),
            OnDevice::Never => s.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for OnDevice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = OnDevice;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"auto\", true or false")
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<OnDevice, E> {
                Ok(if b { OnDevice::Always } else { OnDevice::Never })
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<OnDevice, E> {
                match s {
                    "auto" => Ok(OnDevice::Auto),
                    "true" => Ok(OnDevice::Always),
                    "false" => Ok(OnDevice::Never),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(s), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}
