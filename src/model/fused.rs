//! The fused `mlp` and `cnn`: R runs of one architecture as one model (HFTA; the trainer's `fused.rs` stacks and
//! steps them). Every parameter has a leading run dimension, each linear layer is one batched matmul over it, and
//! each convolution one grouped convolution. Layers and names are those of `mlp.rs` and `cnn.rs`; the layer
//! structs hold shallow copies of the stacked leaves, so gradients reach the tensors the trainer optimizes.
use std::collections::BTreeMap;
use std::fmt::Display;
use std::ops::Div;

use tch::Tensor;

use super::activate;
use crate::config::{Activation, ModelConfig, ModelKind};

/// A `state_dict` prefix, built as `nn::Path` builds variable names: `&At::root() / "layers" / 0` is `layers.0`.
#[derive(Clone, Debug, Default)]
pub(crate) struct At(String);

impl At {
    pub(crate) fn root() -> At {
        At::default()
    }
}

impl<T: Display> Div<T> for &At {
    type Output = At;
    fn div(self, name: T) -> At {
        if self.0.is_empty() {
            At(name.to_string())
        } else {
            At(format!("{}.{name}", self.0))
        }
    }
}

impl<T: Display> Div<T> for At {
    type Output = At;
    fn div(self, name: T) -> At {
        &self / name
    }
}

/// The stacked parameters by `state_dict` name. Each is taken once, by the layer it belongs to; a name no layer
/// finds, or one no layer takes, is an error (never a silent fallback).
pub(crate) struct Lookup<'a> {
    left: BTreeMap<&'a str, &'a Tensor>,
}

impl<'a> Lookup<'a> {
    pub(crate) fn new(named: impl IntoIterator<Item = (&'a str, &'a Tensor)>) -> Lookup<'a> {
        Lookup { left: named.into_iter().collect() }
    }

    /// The parameter `at.leaf` (a shallow copy: the same leaf); `Err` names it when there is none.
    fn take(&mut self, at: &At, leaf: &str) -> Result<Tensor, String> {
        let name = (at / leaf).0;
        self.left
            .remove(name.as_str())
            .map(Tensor::shallow_clone)
            .ok_or_else(|| format!("the fused model has no parameter `{name}` (or it was taken twice)"))
    }

    /// `Err` names a parameter that no layer took.
    fn finish(self) -> Result<(), String> {
        match self.left.keys().next() {
            Some(name) => Err(format!("parameter `{name}` belongs to no layer of the fused model")),
            None => Ok(()),
        }
    }
}

/// R `nn.Linear`s: weight `[R, in, out]` (each run's PyTorch `[out, in]`, transposed: `bmm` on contiguous
/// operands is faster than on transposed views), bias `[R, out]`.
#[derive(Debug)]
struct Linear {
    weight: Tensor,
    bias: Tensor,
    /// Under autocast the bias goes into the matmul (`baddbmm`, as `nn.Linear`'s goes into `addmm`), so the layer
    /// computes and returns what `nn.Linear` does there: bf16 in, bf16 out, the bias added in the GEMM (an fp32
    /// bias added after a bf16 `bmm` gave fp32 outputs a bf16 rounding away from the unfused run's). In fp32 it
    /// is `bmm + bias`, as it always was: `baddbmm` rounds differently there at some shapes (e.g. 10 outputs),
    /// and fp32 fused runs keep their bits.
    autocast: bool,
}

impl Linear {
    fn new(p: &mut Lookup, at: &At, autocast: bool) -> Result<Linear, String> {
        Ok(Linear { weight: p.take(at, "weight")?, bias: p.take(at, "bias")?, autocast })
    }

    /// `[R, B, in]` to `[R, B, out]`: one batched matmul.
    fn forward(&self, x: &Tensor) -> Tensor {
        if self.autocast {
            self.bias.unsqueeze(1).baddbmm(x, &self.weight, 1, 1)
        } else {
            x.bmm(&self.weight) + self.bias.unsqueeze(1)
        }
    }
}

/// R 3×3 `nn.Conv2d`s with padding 1: weight `[R, out, in, 3, 3]`, bias `[R, out]`.
#[derive(Debug)]
struct Conv {
    weight: Tensor,
    bias: Tensor,
}

impl Conv {
    fn new(p: &mut Lookup, at: &At) -> Result<Conv, String> {
        Ok(Conv { weight: p.take(at, "weight")?, bias: p.take(at, "bias")? })
    }

    /// `[B, R·in, H, W]` to `[B, R·out, H, W]`: one convolution in R groups (group r: run r's channels and filters).
    fn forward(&self, y: &Tensor, runs: i64) -> Tensor {
        let s = self.weight.size();
        let weight = self.weight.reshape([s[0] * s[1], s[2], s[3], s[4]]);
        y.conv2d(&weight, Some(self.bias.reshape([-1])), [1, 1], [1, 1], [1, 1], runs)
    }
}

/// The fused `mlp.rs`: `layers.N`, the activation after each, then `head`.
#[derive(Debug)]
struct Mlp {
    layers: Vec<Linear>,
    head: Linear,
    activation: Activation,
}

impl Mlp {
    fn new(p: &mut Lookup, at: &At, cfg: &ModelConfig, autocast: bool) -> Result<Mlp, String> {
        let layers =
            (0..cfg.hidden.len()).map(|i| Linear::new(p, &(at / "layers" / i), autocast)).collect::<Result<_, _>>()?;
        Ok(Mlp { layers, head: Linear::new(p, &(at / "head"), autocast)?, activation: cfg.activation })
    }

    /// `[R, B, features]` to `[R, B, classes]`.
    fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.layers.iter().fold(x.shallow_clone(), |h, layer| activate(&layer.forward(&h), self.activation));
        self.head.forward(&h)
    }
}

/// R runs of one `mlp` or `cnn` as one model: a CNN's `convs.N` (each with the activation and a 2×2 max pool) on
/// images `[C, H, W]`, then the MLP (`mlp.` in a CNN). An MLP has no convolutions.
#[derive(Debug)]
pub(crate) struct FusedNet {
    convs: Vec<Conv>,
    /// A CNN's `[C, H, W]`.
    image: Option<[i64; 3]>,
    mlp: Mlp,
}

impl FusedNet {
    /// Builds the layers of `cfg`'s model from the stacked parameters in `p` (linear weights `[R, in, out]`, the
    /// rest `[R, ...PyTorch's shape]`); `image` is a CNN's `[C, H, W]`; `autocast`: the model runs under
    /// autocast (bf16), where each linear layer computes as `nn.Linear` does there. `Err` names a parameter that
    /// is missing or left over, or a model kind that has no fused form.
    pub(crate) fn new(
        mut p: Lookup,
        cfg: &ModelConfig,
        image: Option<[i64; 3]>,
        autocast: bool,
    ) -> Result<FusedNet, String> {
        let root = At::root();
        let net = match cfg.kind {
            ModelKind::Mlp => FusedNet { convs: Vec::new(), image: None, mlp: Mlp::new(&mut p, &root, cfg, autocast)? },
            ModelKind::Cnn => {
                let image = Some(image.ok_or("a cnn needs data.shape = [C, H, W]")?);
                let convs = (0..cfg.channels.len())
                    .map(|i| Conv::new(&mut p, &(&root / "convs" / i)))
                    .collect::<Result<_, _>>()?;
                FusedNet { convs, image, mlp: Mlp::new(&mut p, &(&root / "mlp"), cfg, autocast)? }
            }
            ModelKind::Gpt | ModelKind::Torchscript => return Err(format!("no fused form of {:?}", cfg.kind)),
        };
        p.finish()?;
        Ok(net)
    }

    /// The outputs `[R, B, classes]` for inputs `[R, B, ...]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let (r, b) = (x.size()[0], x.size()[1]);
        let h = match self.image {
            Some(image) => self.features(x, image),
            None => x.reshape([r, b, -1]),
        };
        self.mlp.forward(&h)
    }

    /// The convolutions for inputs `[R, B, ...]`, as grouped convolutions over `[B, R·C, H, W]`, flattened per run
    /// to `[R, B, features]` in PyTorch's `flatten(1)` order.
    fn features(&self, x: &Tensor, [c, h, w]: [i64; 3]) -> Tensor {
        let (r, b) = (x.size()[0], x.size()[1]);
        let mut y = x.reshape([r, b, c, h, w]).transpose(0, 1).reshape([b, r * c, h, w]);
        for conv in &self.convs {
            y = activate(&conv.forward(&y, r), self.mlp.activation).max_pool2d_default(2);
        }
        let per_run = y.size()[1] / r * y.size()[2] * y.size()[3];
        y.reshape([b, r, per_run]).transpose(0, 1).contiguous()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn zeros(shape: &[i64]) -> Tensor {
        Tensor::zeros(shape, (tch::Kind::Float, tch::Device::Cpu))
    }

    /// A 2-run `mlp 6-4-3`: `layers.0` `[2, 6, 4]`, `head` `[2, 4, 3]`.
    fn mlp_params() -> Vec<(String, Tensor)> {
        vec![
            ("head.bias".into(), zeros(&[2, 3])),
            ("head.weight".into(), zeros(&[2, 4, 3])),
            ("layers.0.bias".into(), zeros(&[2, 4])),
            ("layers.0.weight".into(), zeros(&[2, 6, 4])),
        ]
    }

    fn build(params: &[(String, Tensor)], cfg: &ModelConfig) -> Result<FusedNet, String> {
        FusedNet::new(Lookup::new(params.iter().map(|(n, t)| (n.as_str(), t))), cfg, None, false)
    }

    /// Under bf16 autocast (on the CPU here) a fused linear layer gives each run what `nn.Linear` (`linear`, i.e.
    /// `addmm`) gives it under the same autocast: bf16 outputs, and on the 2-core VM's CPU the same values. PyTorch:
    /// `with torch.autocast("cpu", torch.bfloat16): torch.baddbmm(b[:, None], x, w.transpose(1, 2))` equals
    /// `torch.stack([F.linear(x[r], w[r], b[r]) for r in range(R)])`.
    #[test]
    fn under_bf16_autocast_a_fused_linear_layer_is_nn_linear_per_run() {
        use tch::{Device, Kind};
        tch::manual_seed(7);
        let (runs, batch, inputs, outputs) = (3, 40, 24, 20);
        let w = Tensor::randn([runs, outputs, inputs], (Kind::Float, Device::Cpu)) * 0.2;
        let b = Tensor::randn([runs, outputs], (Kind::Float, Device::Cpu)) * 0.2;
        let x = Tensor::randn([runs, batch, inputs], (Kind::Float, Device::Cpu));
        let layer = Linear { weight: w.transpose(1, 2).contiguous(), bias: b.shallow_clone(), autocast: true };
        let ac = crate::amp::Autocast::enter(crate::amp::Resolved::Bf16, false).unwrap();
        let fused = layer.forward(&x);
        let alone: Vec<Tensor> = (0..runs).map(|r| x.get(r).linear(&w.get(r), Some(b.get(r)))).collect();
        drop(ac);
        let alone = Tensor::stack(&alone, 0);
        assert_eq!((fused.kind(), alone.kind()), (Kind::BFloat16, Kind::BFloat16));
        let diff = (fused.to_kind(Kind::Float) - alone.to_kind(Kind::Float)).abs().max().double_value(&[]);
        assert_eq!(diff, 0.0, "fused and nn.Linear outputs differ under bf16 autocast by {diff}");
        // And in fp32, the fp32 layer: fp32 in and out, bmm + bias.
        let fp32 = Linear { autocast: false, ..layer };
        assert!(fp32.forward(&x).equal(&(x.bmm(&fp32.weight) + b.unsqueeze(1))));
    }

    #[test]
    fn layers_are_found_by_their_state_dict_names_and_nothing_falls_back() {
        let cfg = ModelConfig { hidden: vec![4], ..Default::default() };
        let net = build(&mlp_params(), &cfg).unwrap();
        assert_eq!(net.forward(&zeros(&[2, 5, 6])).size(), [2, 5, 3]);
        assert_eq!((&At::root() / "mlp" / "layers" / 0).0, "mlp.layers.0");

        let mut missing = mlp_params();
        missing.retain(|(n, _)| n != "head.bias");
        assert!(build(&missing, &cfg).unwrap_err().contains("`head.bias`"));
        let mut extra = mlp_params();
        extra.push(("layers.1.weight".into(), zeros(&[2, 4, 4])));
        assert!(build(&extra, &cfg).unwrap_err().contains("`layers.1.weight` belongs to no layer"));
        let deeper = ModelConfig { hidden: vec![4, 4], ..Default::default() };
        assert!(build(&mlp_params(), &deeper).unwrap_err().contains("`layers.1.weight`"));
        let cnn = ModelConfig { kind: ModelKind::Cnn, ..Default::default() };
        assert!(build(&mlp_params(), &cnn).unwrap_err().contains("data.shape"));
    }
}
