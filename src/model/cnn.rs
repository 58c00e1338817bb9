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

/// 3×3 convolutions (`convs.N`), each with the activation and a 2×2 max-pool, then an `Mlp` (`mlp.*`).
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
            let conv = nn::conv2d(p / "convs" / i, c, out, 3, conv_cfg);
            // Channels-last weights make the convolutions (and the activations between them) NHWC, which
            // oneDNN and cuDNN run faster. Layout only: if the shim cannot do it the model is still correct.
            let _ = crate::ffi::channels_last(&conv.ws);
            convs.push(conv);
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn conv_weights_are_channels_last_and_the_output_is_unchanged() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        // One input channel: its standard strides also count as channels-last; they must still be re-laid out.
        let cnn = Cnn::new(&vs.root(), [1, 8, 8], &[4, 6], &[5], 2, Activation::Relu, 0.0).unwrap();
        for conv in &cnn.convs {
            let (size, stride) = (conv.ws.size(), conv.ws.stride());
            // NHWC strides for [out, in, kh, kw]: the input channel is the innermost dimension.
            assert_eq!(stride, [size[1] * size[2] * size[3], 1, size[3] * size[1], size[1]], "{size:?}");
        }
        tch::manual_seed(3);
        let x = Tensor::randn([2, 8 * 8], (tch::Kind::Float, tch::Device::Cpu));
        let got = cnn.forward_t(&x, false);
        // The same weights in the standard layout give the same logits (up to summation order).
        for conv in &cnn.convs {
            let standard = conv.ws.contiguous();
            tch::no_grad(|| conv.ws.shallow_clone().set_data(&standard));
            assert!(conv.ws.is_contiguous());
        }
        let want = cnn.forward_t(&x, false);
        assert!(got.allclose(&want, 1e-5, 1e-5, false));
    }
}
