//! The `cnn` model for inputs shaped `data.shape = [C, H, W]`. Parameter names equal the `state_dict` of this
//! PyTorch module (also in `scripts/spotrun_models.py`):
//!
//! ```python
//! class SpotrunCNN(nn.Module):
//!     def __init__(self, shape, channels, hidden, classes, activation="relu", dropout=0.0):
//!         super().__init__()
//!         c, h, w = shape
//!         self.shape = tuple(shape)
//!         self.convs = nn.ModuleList()
//!         for out in channels:
//!             self.convs.append(nn.Conv2d(c, out, 3, padding=1))
//!             c, h, w = out, h // 2, w // 2
//!         self.act = {"relu": nn.ReLU(), "gelu": nn.GELU(), "tanh": nn.Tanh()}[activation]
//!         self.mlp = SpotrunMLP(c * h * w, hidden, classes, activation, dropout)
//!     def forward(self, x):
//!         x = x.reshape(-1, *self.shape)
//!         for conv in self.convs:
//!             x = F.max_pool2d(self.act(conv(x)), 2)
//!         return self.mlp(x)
//! ```
use tch::nn::{self, Module, ModuleT};
use tch::Tensor;

use super::{activate, Mlp};
use crate::config::Activation;

/// 3×3 convolutions (`convs.N`), each with the activation and a 2×2 max-pool, then an [`Mlp`] (`mlp.*`).
#[derive(Debug)]
pub struct Cnn {
    shape: [i64; 3],
    convs: Vec<nn::Conv2D>,
    activation: Activation,
    mlp: Mlp,
}

impl Cnn {
    /// `None` when the image is too small for the number of 2×2 pools.
    pub fn new(
        p: &nn::Path,
        shape: [i64; 3],
        channels: &[i64],
        hidden: &[i64],
        classes: i64,
        activation: Activation,
        dropout: f64,
    ) -> Option<Cnn> {
        let [mut c, mut h, mut w] = shape;
        let conv_cfg = nn::ConvConfig { padding: 1, ..Default::default() };
        let mut convs = Vec::with_capacity(channels.len());
        for (i, &out) in channels.iter().enumerate() {
            convs.push(nn::conv2d(p / "convs" / i, c, out, 3, conv_cfg));
            (c, h, w) = (out, h / 2, w / 2);
        }
        if h == 0 || w == 0 {
            return None;
        }
        let mlp = Mlp::new(&(p / "mlp"), c * h * w, hidden, classes, activation, dropout);
        Some(Cnn { shape, convs, activation, mlp })
    }
}

impl ModuleT for Cnn {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let x = xs.reshape([-1, self.shape[0], self.shape[1], self.shape[2]]);
        let x = self.convs.iter().fold(x, |x, conv| activate(&conv.forward(&x), self.activation).max_pool2d_default(2));
        self.mlp.forward_t(&x, train)
    }
}
