//! SGD with momentum, dampening, Nesterov and (L2) weight decay, following `torch.optim.SGD` step for step.
//!
//! State: `<param>.momentum_buffer` per parameter (when momentum > 0) and a `step` counter; as in torch, the
//! first step initialises the buffer with the gradient itself.
use std::collections::HashMap;

use tch::{Kind, Tensor};

use super::{restore, OptimError, Optimizer};

pub(crate) struct Sgd {
    names: Vec<String>,
    buffers: Vec<Tensor>,
    step: Tensor,
    momentum: f64,
    dampening: f64,
    nesterov: bool,
    weight_decay: f64,
    /// Per parameter: whether weight decay applies (`optim.decay`).
    decays: Vec<bool>,
}

impl Sgd {
    pub(crate) fn new(
        names: &[String],
        params: &[Tensor],
        momentum: f64,
        dampening: f64,
        nesterov: bool,
        weight_decay: f64,
    ) -> Sgd {
        let buffers = if momentum > 0.0 { params.iter().map(Tensor::zeros_like).collect() } else { Vec::new() };
        Sgd {
            names: names.to_vec(),
            buffers,
            step: Tensor::zeros([], (Kind::Int64, tch::Device::Cpu)),
            momentum,
            dampening,
            nesterov,
            weight_decay,
            decays: vec![true; params.len()],
        }
    }

    /// Weight decay only on the parameters whose entry in `decays` is true.
    pub(crate) fn with_decay_mask(mut self, decays: &[bool]) -> Sgd {
        self.decays = decays.to_vec();
        self
    }

    fn update(&mut self, params: &[Tensor], lr: f64) -> Result<(), tch::TchError> {
        let first = self.step.f_int64_value(&[])? == 0;
        for (i, p) in params.iter().enumerate() {
            let mut g = p.grad();
            if self.weight_decay != 0.0 && self.decays[i] {
                g = g.f_add(&(p * self.weight_decay))?;
            }
            if self.momentum > 0.0 {
                let buf = &mut self.buffers[i];
                if first {
                    buf.f_copy_(&g)?;
                } else {
                    let _ = buf.f_mul_scalar_(self.momentum)?.f_add_(&(&g * (1.0 - self.dampening)))?;
                }
                g = if self.nesterov { g.f_add(&(&*buf * self.momentum))? } else { buf.shallow_clone() };
            }
            let _ = p.shallow_clone().f_sub_(&(g * lr))?;
        }
        let _ = self.step.f_add_scalar_(1)?;
        Ok(())
    }
}

impl Optimizer for Sgd {
    /// With `found_inf` (fp16) this reads the flag back to the host: one sync per step, as torch's GradScaler.
    fn step(&mut self, params: &[Tensor], lr: f64, found_inf: Option<&Tensor>) -> Result<(), OptimError> {
        if let Some(inf) = found_inf {
            if inf.f_double_value(&[])? != 0.0 {
                return Ok(());
            }
        }
        tch::no_grad(|| self.update(params, lr)).map_err(OptimError::from)
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("step".to_string(), self.step.shallow_clone())];
        for (name, buf) in self.names.iter().zip(&self.buffers) {
            out.push((format!("{name}.momentum_buffer"), buf.shallow_clone()));
        }
        out
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<(), OptimError> {
        tch::no_grad(|| -> Result<(), OptimError> {
            restore(state, "step", &mut self.step)?;
            for (i, name) in self.names.iter().enumerate().take(self.buffers.len()) {
                restore(state, &format!("{name}.momentum_buffer"), &mut self.buffers[i])?;
            }
            Ok(())
        })
    }
}
