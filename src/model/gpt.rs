//! The `gpt` model: nanoGPT's `GPT` (karpathy/nanoGPT `model.py`), written like the tch examples.
//!
//! Token and position embeddings, `n_layer` pre-LayerNorm blocks (causal scaled-dot-product attention, then a
//! GELU MLP 4× wide), a final LayerNorm, and an `lm_head` tied to the token embedding. Init is nanoGPT's:
//! N(0, 0.02) weights, zero biases, N(0, 0.02/√(2·n_layer)) for the residual projections (`c_proj`). Parameter
//! names are the keys of nanoGPT's `state_dict` (`transformer.wte.weight`, `transformer.h.0.attn.c_attn.weight`,
//! …); the tied tensor is one variable here and is saved under both of its names, `transformer.wte.weight` and
//! `lm_head.weight`, so `GPT(config).load_state_dict(load_file(path))` works with `strict=True`. The PyTorch twin
//! is `SpotrunGPT` in `scripts/spotrun_models.py`.
use tch::nn::{self, Init, Module};
use tch::{Kind, Tensor};

use super::Model;

/// nanoGPT's `GPTConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GptShape {
    pub vocab_size: i64,
    pub block_size: i64,
    pub n_layer: i64,
    pub n_head: i64,
    pub n_embd: i64,
    pub bias: bool,
}

impl GptShape {
    /// Parameters, counting the tied embedding once (as `model.parameters()` does).
    pub fn param_count(&self) -> u128 {
        let (v, t, c, l) =
            (self.vocab_size as u128, self.block_size as u128, self.n_embd as u128, self.n_layer as u128);
        let b = u128::from(self.bias);
        let ln = c + b * c;
        let linear = |i: u128, o: u128| i * o + b * o;
        let block = 2 * ln + linear(c, 3 * c) + linear(c, c) + linear(c, 4 * c) + linear(4 * c, c);
        v * c + t * c + l * block + ln
    }
}

/// LayerNorm with an optional bias (PyTorch's `nn.LayerNorm` has no `bias=False` before 2.1; nanoGPT writes its own).
#[derive(Debug)]
struct LayerNorm {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl LayerNorm {
    fn new(p: nn::Path, n: i64, bias: bool) -> LayerNorm {
        let weight = p.var("weight", &[n], Init::Const(1.0));
        let bias = bias.then(|| p.var("bias", &[n], Init::Const(0.0)));
        LayerNorm { weight, bias }
    }
}

impl Module for LayerNorm {
    fn forward(&self, xs: &Tensor) -> Tensor {
        xs.layer_norm([self.weight.size()[0]], Some(&self.weight), self.bias.as_ref(), 1e-5, true)
    }
}

fn linear(p: nn::Path, i: i64, o: i64, bias: bool, stdev: f64) -> nn::Linear {
    let cfg = nn::LinearConfig { ws_init: Init::Randn { mean: 0.0, stdev }, bs_init: Some(Init::Const(0.0)), bias };
    nn::linear(p, i, o, cfg)
}

/// Dropout that costs nothing (and draws no random numbers) when `p` is 0.
fn dropout(x: Tensor, p: f64, train: bool) -> Tensor {
    if p > 0.0 && train {
        x.dropout(p, true)
    } else {
        x
    }
}

#[derive(Debug)]
struct Attention {
    c_attn: nn::Linear,
    c_proj: nn::Linear,
    n_head: i64,
    dropout: f64,
}

impl Attention {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let (b, t, c) = x.size3().unwrap_or_default();
        let heads = |m: &Tensor| m.view([b, t, self.n_head, c / self.n_head]).transpose(1, 2);
        let qkv = x.apply(&self.c_attn).split(c, 2);
        let (q, k, v) = (heads(&qkv[0]), heads(&qkv[1]), heads(&qkv[2]));
        let p = if train { self.dropout } else { 0.0 };
        let y = Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, p, true, None, false);
        dropout(y.transpose(1, 2).contiguous().view([b, t, c]).apply(&self.c_proj), self.dropout, train)
    }
}

#[derive(Debug)]
struct Block {
    ln_1: LayerNorm,
    attn: Attention,
    ln_2: LayerNorm,
    c_fc: nn::Linear,
    c_proj: nn::Linear,
    dropout: f64,
}

impl Block {
    fn new(p: nn::Path, s: &GptShape, dropout: f64) -> Block {
        let (c, bias) = (s.n_embd, s.bias);
        let residual = 0.02 / ((2 * s.n_layer) as f64).sqrt();
        let (a, m) = (&p / "attn", &p / "mlp");
        Block {
            ln_1: LayerNorm::new(&p / "ln_1", c, bias),
            attn: Attention {
                c_attn: linear(&a / "c_attn", c, 3 * c, bias, 0.02),
                c_proj: linear(&a / "c_proj", c, c, bias, residual),
                n_head: s.n_head,
                dropout,
            },
            ln_2: LayerNorm::new(&p / "ln_2", c, bias),
            c_fc: linear(&m / "c_fc", c, 4 * c, bias, 0.02),
            c_proj: linear(&m / "c_proj", 4 * c, c, bias, residual),
            dropout,
        }
    }

    fn forward_t(&self, x: Tensor, train: bool) -> Tensor {
        let x = &x + self.attn.forward_t(&x.apply(&self.ln_1), train);
        let h = x.apply(&self.ln_2).apply(&self.c_fc).gelu("none").apply(&self.c_proj);
        &x + dropout(h, self.dropout, train)
    }
}

/// nanoGPT's `GPT`: token ids `[B, T]` (T ≤ block_size) to logits `[B, T, vocab_size]`.
#[derive(Debug)]
pub(crate) struct Gpt {
    wte: Tensor,
    wpe: Tensor,
    h: Vec<Block>,
    ln_f: LayerNorm,
    dropout: f64,
}

/// `(alias, variable)`: the tied head is saved under both names, as nanoGPT's `state_dict` lists it.
pub(super) const TIED: (&str, &str) = ("lm_head.weight", "transformer.wte.weight");

impl Gpt {
    pub(crate) fn new(p: &nn::Path, s: &GptShape, dropout: f64) -> Gpt {
        let t = p / "transformer";
        let normal = Init::Randn { mean: 0.0, stdev: 0.02 };
        Gpt {
            wte: (&t / "wte").var("weight", &[s.vocab_size, s.n_embd], normal),
            wpe: (&t / "wpe").var("weight", &[s.block_size, s.n_embd], normal),
            h: (0..s.n_layer).map(|i| Block::new(&t / "h" / i, s, dropout)).collect(),
            ln_f: LayerNorm::new(&t / "ln_f", s.n_embd, s.bias),
            dropout,
        }
    }
}

impl Model for Gpt {
    fn forward_t(&self, idx: &Tensor, train: bool) -> Tensor {
        let t = idx.size().last().copied().unwrap_or(0);
        let pos = Tensor::arange(t, (Kind::Int64, idx.device()));
        let x =
            Tensor::embedding(&self.wte, idx, -1, false, false) + Tensor::embedding(&self.wpe, &pos, -1, false, false);
        let x = self.h.iter().fold(dropout(x, self.dropout, train), |x, b| b.forward_t(x, train));
        x.apply(&self.ln_f).linear::<Tensor>(&self.wte, None)
    }

    fn tied(&self) -> Vec<(String, String)> {
        vec![(TIED.0.to_string(), TIED.1.to_string())]
    }
}
