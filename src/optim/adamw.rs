//! AdamW with exportable state, stepped by torch's fused kernel (`torch.optim.AdamW(fused=True)`).
//!
//! State: `<param>.exp_avg`, `<param>.exp_avg_sq` per parameter and one float `step` tensor on the device,
//! exactly what the kernel reads. No host sync per step; with a grad scaler's `found_inf` set the kernel leaves
//! everything unchanged and the step counter is rolled back, as torch.optim does.
//!
//! One kernel call takes parameters of one dtype, device and layout (the CUDA kernel requires it; the CPU one
//! does not): [`groups`] splits the list as torch's `_group_tensors_by_device_and_dtype` does, so a TorchScript
//! module with, say, fp32 and fp64 parameters steps as two calls. A model of one kind is one call, as before.
use std::collections::HashMap;

use tch::{Device, Kind, Tensor};

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

/// What one fused-kernel call needs its tensors to share: dtype, device and layout (dense, sparse or mkldnn).
type TensorKind = (Kind, Device, bool, bool);

/// Indices into `params` grouped by dtype, device and layout, as torch's `_group_tensors_by_device_and_dtype`:
/// groups in the order of their first parameter, each in list order.
pub(crate) fn groups(params: &[&Tensor]) -> Vec<Vec<usize>> {
    let mut out: Vec<(TensorKind, Vec<usize>)> = Vec::new();
    for (i, p) in params.iter().enumerate() {
        let key = (p.kind(), p.device(), p.is_sparse(), p.is_mkldnn());
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => g.push(i),
            None => out.push((key, vec![i])),
        }
    }
    out.into_iter().map(|(_, g)| g).collect()
}

impl Optimizer for AdamW {
    fn step(&mut self, params: &[Tensor], lr: f64, found_inf: Option<&Tensor>) -> Result<(), OptimError> {
        let grads: Vec<Tensor> = params.iter().map(Tensor::grad).collect();
        tch::no_grad(|| -> Result<(), OptimError> {
            let _ = self.step.f_add_scalar_(1.0)?;
            // One fused call per weight-decay group and kind of tensor (one call when every parameter decays and
            // all are alike).
            for decay in [true, false] {
                let mine: Vec<usize> = (0..params.len()).filter(|&i| self.decays[i] == decay).collect();
                for group in groups(&mine.iter().map(|&i| &params[i]).collect::<Vec<_>>()) {
                    let pick =
                        |v: &[Tensor]| -> Vec<Tensor> { group.iter().map(|&j| v[mine[j]].shallow_clone()).collect() };
                    let ps = pick(params);
                    let device = ps[0].device();
                    // The kernel reads the step on the parameters' device (a copy only for a model on two devices).
                    let step =
                        if device == self.step.device() { self.step.shallow_clone() } else { self.step.to(device) };
                    let steps: Vec<Tensor> = ps.iter().map(|_| step.shallow_clone()).collect();
                    let wd = if decay { self.weight_decay } else { 0.0 };
                    let (g, m, v) = (pick(&grads), pick(&self.exp_avg), pick(&self.exp_avg_sq));
                    let inf = found_inf.map(|f| if f.device() == device { f.shallow_clone() } else { f.to(device) });
                    ffi::fused_adamw(&ps, &g, &m, &v, &steps, lr, self.betas, wd, self.eps, inf.as_ref())?;
                }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn named(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("p{i}")).collect()
    }

    /// One AdamW step on `params` (their grads set to `grads`), lr 1e-2, weight decay 0.1.
    fn stepped(params: &[Tensor], grads: &[Tensor]) -> Vec<Tensor> {
        let params: Vec<Tensor> = params.iter().map(|p| p.copy().set_requires_grad(true)).collect();
        for (p, g) in params.iter().zip(grads) {
            (p * g).sum(p.kind()).backward();
        }
        let mut opt = AdamW::new(&named(params.len()), &params, [0.9, 0.999], 1e-8, 0.1);
        for _ in 0..2 {
            opt.step(&params, 1e-2, None).unwrap();
        }
        params
    }

    /// A TorchScript module may mix dtypes: fp32 and fp64 parameters are two kernel calls (on CUDA one call
    /// cannot take both), and each parameter ends where a step of it alone leaves it. PyTorch:
    /// `torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1, fused=True)` groups them the same way.
    #[test]
    fn mixed_dtypes_step_in_groups_and_as_each_parameter_alone() {
        tch::manual_seed(3);
        let opts = |k: Kind| (k, Device::Cpu);
        let params = [
            Tensor::randn([4, 3], opts(Kind::Float)),
            Tensor::randn([5], opts(Kind::Double)),
            Tensor::randn([3], opts(Kind::Float)),
            Tensor::randn([2, 2], opts(Kind::Double)),
        ];
        let grads: Vec<Tensor> = params.iter().map(|p| p.randn_like()).collect();
        assert_eq!(groups(&params.iter().collect::<Vec<_>>()), vec![vec![0, 2], vec![1, 3]]);
        let together = stepped(&params, &grads);
        for (i, (p, g)) in params.iter().zip(&grads).enumerate() {
            let alone = stepped(std::slice::from_ref(p), std::slice::from_ref(g));
            assert_eq!(together[i].kind(), p.kind());
            assert!(together[i].equal(&alone[0]), "parameter {i} differs from its update alone");
            assert!(!together[i].equal(p), "parameter {i} did not move");
        }
    }
}
