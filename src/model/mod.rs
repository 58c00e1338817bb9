//! Models: the [`Model`] trait the trainer drives, the built-in `mlp`, `cnn` and `gpt`, and the fused form of `mlp`
//! and `cnn` (R runs as one model) that the trainer's fused groups step.
//!
//! Owns parameter naming: every built-in model's variables are named exactly like the `state_dict` of the
//! PyTorch module quoted in its file, so weights move between spotrun and Python with safetensors alone.
//! Imports `config`, and `ffi` for one thing: the CNN's channels-last weight layout.
mod cnn;
mod fused;
mod gpt;
mod mlp;
mod torchscript;

use std::path::Path;

use tch::nn;
use tch::Tensor;

use crate::config::{Activation, BadValue, ModelConfig, ModelKind};
pub use cnn::Cnn;
pub(crate) use fused::{FusedNet, Lookup};
pub(crate) use gpt::{Gpt, GptShape};
pub(crate) use mlp::Mlp;
pub use torchscript::TorchScript;
pub(crate) use torchscript::HOW_TO_EXPORT;

/// What the trainer needs of a model: outputs from a batch of inputs (logits `[batch, classes]` from float
/// inputs `[batch, features]`, or `[batch, T, vocab]` from token ids `[batch, T]`).
///
/// Implemented for every `tch::nn::ModuleT`, so a Rust user can train their own tch model with
/// [`crate::trainer::Trainer`]: build it on a `VarStore`'s root path and hand both over.
pub trait Model {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor;

    /// [`Model::forward_t`] for a model whose forward can fail on bad input (a user's TorchScript module):
    /// the error instead of a panic. Used to check the output shape on one batch before training.
    fn try_forward(&self, xs: &Tensor, train: bool) -> Result<Tensor, String> {
        Ok(self.forward_t(xs, train))
    }

    /// Tied weights as `(alias, name)`: the alias names the same tensor in the PyTorch `state_dict`, so saved
    /// weights list it too (and loading accepts it).
    fn tied(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// The trainable parameters with their `state_dict` names, for a model that keeps them outside the
    /// `VarStore` it was built on (a TorchScript module); `None`: the `VarStore`'s variables.
    fn parameters(&self) -> Option<Vec<(String, Tensor)>> {
        None
    }

    /// Tensors saved and restored with the weights but never optimized (buffers such as BatchNorm statistics).
    fn state(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// Writes the model itself (a TorchScript module: the trained `model.pt`); `None` for models that are
    /// their weights alone.
    fn save_module(&self, _path: &std::path::Path) -> Option<Result<(), String>> {
        None
    }
}

impl<M: nn::ModuleT> Model for M {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        nn::ModuleT::forward_t(self, xs, train)
    }
}

/// Applies the activation to a freshly computed layer output. ReLU and tanh run in place: their backward needs
/// only their own output, and the layer that produced `x` (linear/conv) saves its input, not `x`, so this is
/// safe for autograd and saves one activation-sized allocation per layer.
pub(crate) fn activate(x: &Tensor, a: Activation) -> Tensor {
    match a {
        Activation::Relu => x.shallow_clone().relu_(),
        Activation::Tanh => x.shallow_clone().tanh_(),
        Activation::Gelu => x.gelu("none"),
    }
}

/// How many trainable scalars `net` has, as its banner shows them: its own parameters when it keeps them outside
/// `vs` (a TorchScript module, whose `VarStore` is empty), else `vs`'s variables. A tied tensor counts once;
/// buffers and frozen parameters do not count.
pub fn parameter_count(vs: &nn::VarStore, net: &dyn Model) -> i64 {
    let numel = |t: &Tensor| t.numel() as i64;
    match net.parameters() {
        Some(own) => own.iter().map(|(_, t)| numel(t)).sum(),
        None => vs.variables().values().map(numel).sum(),
    }
}

/// Builds the configured model on `p` for samples of `sample_shape` and `classes` outputs.
/// `Err` names the key and why for a shape the model cannot take.
pub fn build(p: &nn::Path, cfg: &ModelConfig, sample_shape: &[i64], classes: i64) -> Result<Box<dyn Model>, BadValue> {
    let features: i64 = sample_shape.iter().product();
    match cfg.kind {
        ModelKind::Mlp => Ok(Box::new(Mlp::new(p, features, &cfg.hidden, classes, cfg.activation, cfg.dropout))),
        ModelKind::Cnn => {
            let shape: [i64; 3] = sample_shape.try_into().map_err(|_| BadValue {
                key: "data.shape".to_string(),
                message: format!("model.kind = \"cnn\" needs data.shape = [C, H, W] (samples are {sample_shape:?})"),
            })?;
            let cnn = Cnn::new(p, shape, &cfg.channels, &cfg.hidden, classes, cfg.activation, cfg.dropout).ok_or_else(
                || BadValue {
                    key: "model.channels".to_string(),
                    message: format!(
                        "{} 2×2 pools shrink a {}×{} image to nothing",
                        cfg.channels.len(),
                        shape[1],
                        shape[2]
                    ),
                },
            )?;
            Ok(Box::new(cnn))
        }
        ModelKind::Gpt => Ok(Box::new(Gpt::new(p, &gpt_shape(cfg, classes), cfg.dropout))),
        ModelKind::Torchscript => {
            let path = cfg.path.clone().unwrap_or_default();
            let ts = TorchScript::load(&path, p.device()).map_err(|message| BadValue {
                key: "model.path".into(),
                message: format!("{}: {message}", path.display()),
            })?;
            Ok(Box::new(ts))
        }
    }
}

/// The GPT's shape from `[model]` and the vocabulary (which comes from the data).
pub fn gpt_shape(cfg: &ModelConfig, vocab_size: i64) -> GptShape {
    GptShape {
        vocab_size,
        block_size: cfg.block_size,
        n_layer: cfg.n_layer,
        n_head: cfg.n_head,
        n_embd: cfg.n_embd,
        bias: cfg.bias,
    }
}

/// How many parameters [`build`] would create, computed without allocating (u128: absurd configs such as
/// `model.hidden = [4000000000]` must be measured, not overflow), so a model that cannot fit is refused up front.
pub(crate) fn param_count(cfg: &ModelConfig, sample_shape: &[i64], classes: i64) -> u128 {
    let dense = |inputs: u128| {
        let mut sizes = vec![inputs];
        sizes.extend(cfg.hidden.iter().map(|&h| h.max(0) as u128));
        sizes.push(classes.max(0) as u128);
        sizes.windows(2).map(|w| w[0] * w[1] + w[1]).sum::<u128>()
    };
    match cfg.kind {
        ModelKind::Mlp => dense(sample_shape.iter().map(|&d| d.max(0) as u128).product()),
        ModelKind::Gpt => gpt_shape(cfg, classes).param_count(),
        // The file's size is the parameters' (and buffers') fp32 bytes, near enough for a memory check.
        ModelKind::Torchscript => {
            cfg.path.as_ref().and_then(|p| std::fs::metadata(p).ok()).map_or(0, |m| m.len() as u128 / 4)
        }
        ModelKind::Cnn => {
            let Ok([c, h, w]) = <[i64; 3]>::try_from(sample_shape) else { return 0 };
            let (mut c, mut h, mut w) = (c.max(0) as u128, h.max(0) as u128, w.max(0) as u128);
            let mut n = 0u128;
            for &out in &cfg.channels {
                let out = out.max(0) as u128;
                n += c * out * 9 + out;
                (c, h, w) = (out, h / 2, w / 2);
            }
            n + dense(c * h * w)
        }
    }
}

/// A one-line description, e.g. `mlp 784-1024-1024-10`.
pub fn describe(cfg: &ModelConfig, sample_shape: &[i64], classes: i64) -> String {
    let hidden: Vec<String> = cfg.hidden.iter().map(i64::to_string).collect();
    match cfg.kind {
        ModelKind::Mlp => {
            let mut sizes = vec![sample_shape.iter().product::<i64>().to_string()];
            sizes.extend(hidden);
            sizes.push(classes.to_string());
            format!("mlp {}", sizes.join("-"))
        }
        ModelKind::Cnn => {
            let ch: Vec<String> = cfg.channels.iter().map(i64::to_string).collect();
            format!("cnn {sample_shape:?} conv {} fc {}-{classes}", ch.join("-"), hidden.join("-"))
        }
        ModelKind::Gpt => format!(
            "gpt {} layers x {} wide, {} heads, block {}, vocab {classes}",
            cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.block_size
        ),
        ModelKind::Torchscript => format!("torchscript {}", cfg.path.as_deref().unwrap_or(Path::new("")).display()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parameter_names_match_the_pytorch_state_dict() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let cfg = ModelConfig { hidden: vec![8, 4], ..Default::default() };
        let _m = build(&vs.root(), &cfg, &[6], 3).unwrap();
        let mut names: Vec<String> = vs.variables().into_keys().collect();
        names.sort();
        assert_eq!(
            names,
            ["head.bias", "head.weight", "layers.0.bias", "layers.0.weight", "layers.1.bias", "layers.1.weight"]
        );

        let vs = nn::VarStore::new(tch::Device::Cpu);
        let cfg = ModelConfig { kind: ModelKind::Cnn, hidden: vec![5], channels: vec![2, 3], ..Default::default() };
        let m = build(&vs.root(), &cfg, &[1, 8, 8], 4).unwrap();
        let mut names: Vec<String> = vs.variables().into_keys().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "convs.0.bias",
                "convs.0.weight",
                "convs.1.bias",
                "convs.1.weight",
                "mlp.head.bias",
                "mlp.head.weight",
                "mlp.layers.0.bias",
                "mlp.layers.0.weight"
            ]
        );
        assert_eq!(vs.variables()["mlp.layers.0.weight"].size(), [5, 3 * 2 * 2]);
        assert_eq!(m.forward_t(&Tensor::zeros([7, 64], (tch::Kind::Float, tch::Device::Cpu)), false).size(), [7, 4]);
    }

    #[test]
    fn param_count_matches_what_build_creates() {
        for cfg in [
            ModelConfig { hidden: vec![8, 4], ..Default::default() },
            ModelConfig { kind: ModelKind::Cnn, hidden: vec![5], channels: vec![2, 3], ..Default::default() },
        ] {
            let shape: &[i64] = if cfg.kind == ModelKind::Cnn { &[1, 8, 8] } else { &[6] };
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let m = build(&vs.root(), &cfg, shape, 3).unwrap();
            let built: i64 = vs.variables().values().map(Tensor::numel).map(|n| n as i64).sum();
            assert_eq!(param_count(&cfg, shape, 3), built as u128, "{:?}", cfg.kind);
            assert_eq!(parameter_count(&vs, m.as_ref()), built, "{:?}", cfg.kind);
        }
        let huge = ModelConfig { hidden: vec![4_000_000_000], ..Default::default() };
        assert_eq!(param_count(&huge, &[784], 10), 784 * 4_000_000_000 + 4_000_000_000 + 4_000_000_000 * 10 + 10);
    }

    #[test]
    fn gpt_names_are_nanogpts_state_dict_keys_and_the_count_matches() {
        for bias in [false, true] {
            let cfg = ModelConfig {
                kind: ModelKind::Gpt,
                n_layer: 2,
                n_head: 2,
                n_embd: 8,
                block_size: 5,
                bias,
                ..Default::default()
            };
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let m = build(&vs.root(), &cfg, &[], 11).unwrap();
            let mut names: Vec<String> = vs.variables().into_keys().collect();
            names.sort();
            let mut want: Vec<String> = ["transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight"]
                .map(String::from)
                .to_vec();
            for i in 0..2 {
                for (layer, has_bias) in [
                    ("ln_1", bias),
                    ("attn.c_attn", bias),
                    ("attn.c_proj", bias),
                    ("ln_2", bias),
                    ("mlp.c_fc", bias),
                    ("mlp.c_proj", bias),
                ] {
                    want.push(format!("transformer.h.{i}.{layer}.weight"));
                    if has_bias {
                        want.push(format!("transformer.h.{i}.{layer}.bias"));
                    }
                }
            }
            if bias {
                want.push("transformer.ln_f.bias".into());
            }
            want.sort();
            assert_eq!(names, want, "bias = {bias}");
            let built: i64 = vs.variables().values().map(Tensor::numel).map(|n| n as i64).sum();
            assert_eq!(param_count(&cfg, &[], 11), built as u128);
            let idx = Tensor::from_slice(&[1i64, 2, 3, 4, 5, 6]).reshape([2, 3]);
            assert_eq!(m.forward_t(&idx, false).size(), [2, 3, 11]);
            assert_eq!(m.tied(), [("lm_head.weight".to_string(), "transformer.wte.weight".to_string())]);
        }
    }

    #[test]
    fn cnn_needs_a_three_dim_shape() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let cfg = ModelConfig { kind: ModelKind::Cnn, ..Default::default() };
        assert_eq!(build(&vs.root(), &cfg, &[784], 10).err().map(|e| e.key), Some("data.shape".to_string()));
        assert_eq!(build(&vs.root(), &cfg, &[1, 2, 2], 10).err().map(|e| e.key), Some("model.channels".to_string()));
    }
}
