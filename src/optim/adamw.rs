//! AdamW with exportable state, stepped by torch's fused kernel (`torch.optim.AdamW(fused=True)`).
//!
//! State: `<param>.exp_avg`, `<param>.exp_avg_sq` per parameter and one float `step` tensor on the device,
//! exactly what the kernel reads. No host sync per step; with a grad scaler's `found_inf` set the kernel leaves
//! everything unchanged and the step counter is rolled back, as torch.optim does.
use std::collections::HashMap;

use tch::{Kind, Tensor};

use super::{restore, OptimError, Optimizer};
use crate::ffi;

pub(crate) struct AdamW {
    names: Vec<String>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    step: Tensor,
    betas: [f64; 2],
    eps: f64,
    weight_decay: f64,
    /// Per parameter: whether weight decay applies (`optim.decay`).
    decays: Vec<bool>,
}

impl AdamW {
    /// Fresh (zero) state for `params`, named by `names` (same order).
    pub(crate) fn new(names: &[String], params: &[Tensor], betas: [f64; 2], eps: f64, weight_decay: f64) -> AdamW {
        let device = params.first().map_or(tch::Device::Cpu, Tensor::device);
        AdamW {
            names: names.to_vec(),
            exp_avg: params.iter().map(Tensor::zeros_like).collect(),
            exp_avg_sq: params.iter().map(Tensor::zeros_like).collect(),
            step: Tensor::zeros([], (Kind::Float, device)),
            betas,
            eps,
            weight_decay,
            decays: vec![true; params.len()],
        }
    }

    /// Weight decay only on the parameters whose entry in `decays` is true.
    pub(crate) fn with_decay_mask(mut self, decays: &[bool]) -> AdamW {
        self.decays = decays.to_vec();
        self
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, params: &[Tensor], lr: f64, found_inf: Option<&Tensor>) -> Result<(), OptimError> {
        let grads: Vec<Tensor> = params.iter().map(Tensor::grad).collect();
        tch::no_grad(|| -> Result<(), OptimError> {
            let _ = self.step.f_add_scalar_(1.0)?;
            // One fused call per weight-decay group (one call when every parameter decays).
            for decay in [true, false] {
                let pick = |v: &[Tensor]| -> Vec<Tensor> {
                    v.iter().zip(&self.decays).filter(|(_, &d)| d == decay).map(|(t, _)| t.shallow_clone()).collect()
                };
                let ps = pick(params);
                if ps.is_empty() {
                    continue;
                }
                let steps: Vec<Tensor> = ps.iter().map(|_| self.step.shallow_clone()).collect();
                let wd = if decay { self.weight_decay } else { 0.0 };
                let (g, m, v) = (pick(&grads), pick(&self.exp_avg), pick(&self.exp_avg_sq));
                ffi::fused_adamw(&ps, &g, &m, &v, &steps, lr, self.betas, wd, self.eps, found_inf)?;
            }
            if let Some(inf) = found_inf {
                let _ = self.step.f_sub_(inf)?;
            }
            Ok(())
        })
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("step".to_string(), self.step.shallow_clone())];
        for (i, name) in self.names.iter().enumerate() {
            out.push((format!("{name}.exp_avg"), self.exp_avg[i].shallow_clone()));
            out.push((format!("{name}.exp_avg_sq"), self.exp_avg_sq[i].shallow_clone()));
        }
        out
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<(), OptimError> {
        tch::no_grad(|| -> Result<(), OptimError> {
            restore(state, "step", &mut self.step)?;
            for (i, name) in self.names.iter().enumerate() {
                restore(state, &format!("{name}.exp_avg"), &mut self.exp_avg[i])?;
                restore(state, &format!("{name}.exp_avg_sq"), &mut self.exp_avg_sq[i])?;
            }
            Ok(())
        })
    }
}
