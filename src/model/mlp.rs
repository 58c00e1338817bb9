//! The `mlp` model. Parameter names equal the `state_dict` of this PyTorch module (also in
//! `scripts/spotrun_models.py`):
//!
//! ```python
//! class SpotrunMLP(nn.Module):
//!     def __init__(self, inputs, hidden, classes, activation="relu", dropout=0.0):
//!         super().__init__()
//!         sizes = [inputs, *hidden]
//!         self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
//!         self.head = nn.Linear(sizes[-1], classes)
//!         self.act = {"relu": nn.ReLU(), "gelu": nn.GELU(), "tanh": nn.Tanh()}[activation]
//!         self.drop = nn.Dropout(dropout)
//!     def forward(self, x):
//!         x = x.flatten(1)
//!         for layer in self.layers:
//!             x = self.drop(self.act(layer(x)))
//!         return self.head(x)
//! ```
use tch::nn::{self, Module};
use tch::Tensor;

use super::activate;
use crate::config::Activation;

/// Fully connected layers (`layers.N`), activation and dropout after each, then a linear `head`.
#[derive(Debug)]
pub(crate) struct Mlp {
    layers: Vec<nn::Linear>,
    head: nn::Linear,
    activation: Activation,
    dropout: f64,
}

impl Mlp {
    pub(crate) fn new(
        p: &nn::Path,
        inputs: i64,
        hidden: &[i64],
        classes: i64,
        activation: Activation,
        dropout: f64,
    ) -> Mlp {
        let mut sizes = vec![inputs];
        sizes.extend_from_slice(hidden);
        let layers = sizes
            .windows(2)
            .enumerate()
            .map(|(i, w)| nn::linear(p / "layers" / i, w[0], w[1], Default::default()))
            .collect();
        let head = nn::linear(p / "head", sizes[sizes.len() - 1], classes, Default::default());
        Mlp { layers, head, activation, dropout }
    }

    /// The hidden stack without the head (shared with the CNN's classifier).
    pub(crate) fn features_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.layers.iter().fold(xs.flatten(1, -1), |x, layer| {
            let h = activate(&layer.forward(&x), self.activation);
            if self.dropout > 0.0 {
                h.dropout(self.dropout, train)
            } else {
                h
            }
        })
    }
}

impl nn::ModuleT for Mlp {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.features_t(xs, train).apply(&self.head)
    }
}
