//! An exponential moving average of the weights (`train.ema`), kept on the device beside them.
//!
//! Update `t` (every `every` optimizer steps, counted from the start of the run) moves each average towards its
//! parameter by `1 − decay_t` with `decay_t = min(decay, (1 + t) / (10 + t))`: a warm-up, so the average is not
//! dominated by the initial weights early on. A pure function of the step, so a resume from a checkpoint (which
//! stores the averages as `ema.<name>`) continues the same sequence.
use std::collections::HashMap;

use tch::Tensor;

use crate::config::EmaConfig;

pub(crate) struct Ema {
    decay: f64,
    every: u64,
    shadow: Vec<Tensor>,
}

impl Ema {
    /// Averages that start as copies of `params`.
    pub(super) fn new(cfg: &EmaConfig, params: &[Tensor]) -> Ema {
        let shadow = tch::no_grad(|| params.iter().map(|p| p.detach().copy()).collect());
        Ema { decay: cfg.decay, every: cfg.every, shadow }
    }

    /// The decay of update number `t` (0-based).
    pub(super) fn decay_at(&self, t: u64) -> f64 {
        self.decay.min((1.0 + t as f64) / (10.0 + t as f64))
    }

    /// After optimizer step number `step` (1-based): updates when `step` is a multiple of `every`.
    pub(super) fn after_step(&mut self, params: &[Tensor], step: u64) {
        if !step.is_multiple_of(self.every) {
            return;
        }
        let weight = 1.0 - self.decay_at(step / self.every - 1);
        tch::no_grad(|| {
            for (e, p) in self.shadow.iter_mut().zip(params) {
                let _ = e.lerp_(p, weight);
            }
        });
    }

    /// The averages (aliases), in `names`' order.
    pub(super) fn tensors(&self) -> &[Tensor] {
        &self.shadow
    }

    /// Copies `ema.<name>` entries of a checkpoint back; every one must be present with its shape.
    pub(super) fn load(&mut self, state: &HashMap<String, Tensor>, names: &[String]) -> Result<(), String> {
        tch::no_grad(|| {
            for (name, dst) in names.iter().zip(&mut self.shadow) {
                let key = format!("ema.{name}");
                let src =
                    state.get(&key).ok_or_else(|| format!("state tensor `{key}` missing (train.ema was off?)"))?;
                dst.f_copy_(src).map_err(|e| format!("state tensor `{key}`: {e}"))?;
            }
            Ok(())
        })
    }

    /// Runs `f` with the averages in the parameters' place, then puts the parameters back.
    pub(super) fn with_averages<T>(&self, params: &[Tensor], f: impl FnOnce() -> T) -> T {
        let saved: Vec<Tensor> = tch::no_grad(|| params.iter().map(|p| p.detach().copy()).collect());
        tch::no_grad(|| {
            params.iter().zip(&self.shadow).for_each(|(p, e)| {
                p.shallow_clone().copy_(e);
            })
        });
        let out = f();
        tch::no_grad(|| {
            params.iter().zip(&saved).for_each(|(p, s)| {
                p.shallow_clone().copy_(s);
            })
        });
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_average_follows_the_warm_up_formula() {
        let p = Tensor::from_slice(&[0.0f32, 10.0]);
        let mut ema = Ema::new(&EmaConfig { decay: 0.5, every: 2 }, &[p.shallow_clone()]);
        assert_eq!(ema.decay_at(0), 0.1);
        assert_eq!(ema.decay_at(100), 0.5);
        let _ = p.shallow_clone().fill_(1.0);
        ema.after_step(std::slice::from_ref(&p), 1); // not a multiple of 2: no update
        assert_eq!(Vec::<f32>::try_from(&ema.tensors()[0]).unwrap(), [0.0, 10.0]);
        ema.after_step(std::slice::from_ref(&p), 2); // update 0: decay 0.1
        let got = Vec::<f32>::try_from(&ema.tensors()[0]).unwrap();
        assert!((got[0] - 0.9).abs() < 1e-6 && (got[1] - 1.9).abs() < 1e-6, "{got:?}");
        let seen = ema.with_averages(std::slice::from_ref(&p), || Vec::<f32>::try_from(&p).unwrap());
        assert_eq!(seen, got, "the averages stand in for the weights");
        assert_eq!(Vec::<f32>::try_from(&p).unwrap(), [1.0, 1.0], "and the weights come back");
    }
}
