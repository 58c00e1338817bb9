//! Optimizers we own (state = named tensors that can be exported and imported), LR schedules, grad clipping.
//!
//! tch's `nn::Optimizer` wraps the C++ optimizers and cannot export their state (tch-rs#388), so exact resume
//! needs these. Numerics follow `torch.optim`; the unit tests quote the PyTorch script that produced the
//! expected values. Imports `config` and `ffi` only.
mod adamw;
mod clip;
mod schedule;
mod sgd;

use std::collections::HashMap;

use tch::Tensor;

use crate::config::{OptimConfig, OptimKind};
pub(crate) use adamw::AdamW;
pub(crate) use clip::clip_grad_norm;
pub(crate) use schedule::lr_at;
pub(crate) use sgd::Sgd;

#[derive(Debug, thiserror::Error)]
pub(crate) enum OptimError {
    #[error(transparent)]
    Shim(#[from] crate::ffi::ShimError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("optimizer state `{name}`: {problem}")]
    State { name: String, problem: String },
}

/// An optimizer whose whole state is a list of named tensors.
pub(crate) trait Optimizer {
    /// Updates `params` from their `.grad()` with learning rate `lr`. When `found_inf` (a grad scaler's flag) is
    /// non-zero, the step is skipped and the state is left as it was.
    fn step(&mut self, params: &[Tensor], lr: f64, found_inf: Option<&Tensor>) -> Result<(), OptimError>;
    /// The state as `(name, tensor)` pairs (shallow: the tensors alias the live state).
    fn state(&self) -> Vec<(String, Tensor)>;
    /// Copies a state exported by [`Optimizer::state`] back in; every expected name must be present and match.
    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<(), OptimError>;
}

/// Builds the configured optimizer for `params` (named by `names`, same order); `decays[i]` says whether weight
/// decay applies to `params[i]`.
pub(crate) fn build(cfg: &OptimConfig, names: &[String], params: &[Tensor], decays: &[bool]) -> Box<dyn Optimizer> {
    match cfg.kind {
        OptimKind::Adamw => {
            Box::new(AdamW::new(names, params, cfg.betas, cfg.eps, cfg.weight_decay).with_decay_mask(decays))
        }
        OptimKind::Sgd => Box::new(
            Sgd::new(names, params, cfg.momentum, cfg.dampening, cfg.nesterov, cfg.weight_decay)
                .with_decay_mask(decays),
        ),
    }
}

/// Copies `state[name]` into `dst`; a missing entry or another shape is an error naming the entry.
fn restore(state: &HashMap<String, Tensor>, name: &str, dst: &mut Tensor) -> Result<(), OptimError> {
    let src = state.get(name).ok_or_else(|| OptimError::State { name: name.into(), problem: "missing".into() })?;
    if src.size() != dst.size() {
        return Err(OptimError::State {
            name: name.into(),
            problem: format!("shape {:?}, expected {:?}", src.size(), dst.size()),
        });
    }
    dst.f_copy_(src)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    //! Expected values from PyTorch 2.11.0:
    //! ```python
    //! import torch
    //! def run(make, steps=3):
    //!     p = torch.nn.Parameter(torch.tensor([0.5, -1.0, 2.0, 0.0]))
    //!     opt = make([p])
    //!     for t in range(steps):
    //!         p.grad = torch.tensor([0.1, -0.2, 0.3, -0.4]) * (t + 1) + p.detach() * 0.5
    //!         opt.step()
    //!     return p.detach().tolist()
    //! run(lambda ps: torch.optim.AdamW(ps, lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01))
    //! run(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01))
    //! run(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01))
    //! run(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.5, dampening=0.3))
    //! run(lambda ps: torch.optim.SGD(ps, lr=0.1))
    //! ```
    use super::*;
    use tch::Kind;

    fn cfg(kind: OptimKind, f: impl FnOnce(&mut OptimConfig)) -> OptimConfig {
        let mut c = OptimConfig { kind, lr: 0.1, weight_decay: 0.0, ..Default::default() };
        f(&mut c);
        c
    }

    fn param() -> Tensor {
        Tensor::from_slice(&[0.5f32, -1.0, 2.0, 0.0]).set_requires_grad(true)
    }

    fn set_grad(p: &Tensor, t: usize) {
        let g = Tensor::from_slice(&[0.1f32, -0.2, 0.3, -0.4]) * (t as f64 + 1.0) + p.detach() * 0.5;
        let mut pg = p.grad();
        if pg.defined() {
            pg.copy_(&g);
        } else {
            // First step: create the grad through autograd so `.grad()` is defined.
            (p * &g).sum(Kind::Float).backward();
        }
    }

    fn run(c: &OptimConfig, steps: usize) -> (Vec<f32>, Box<dyn Optimizer>, Tensor) {
        let p = param();
        let names = vec!["w".to_string()];
        let mut opt = build(c, &names, std::slice::from_ref(&p), &[true]);
        for t in 0..steps {
            set_grad(&p, t);
            opt.step(std::slice::from_ref(&p), c.lr, None).unwrap();
        }
        (Vec::<f32>::try_from(&p.detach()).unwrap(), opt, p)
    }

    fn assert_close(got: &[f32], want: &[f64]) {
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 2e-6, "got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn adamw_matches_torch() {
        let (p, ..) = run(&cfg(OptimKind::Adamw, |c| c.weight_decay = 0.01), 3);
        assert_close(&p, &[0.198328257, -0.697071433, 1.693975449, 0.293353617]);
    }

    #[test]
    fn sgd_variants_match_torch() {
        let cases: [(OptimConfig, [f64; 4]); 4] = [
            (
                cfg(OptimKind::Sgd, |c| {
                    c.momentum = 0.9;
                    c.weight_decay = 0.01
                }),
                [0.270953089, -0.541906178, 1.17598033, 0.368672043],
            ),
            (
                cfg(OptimKind::Sgd, |c| {
                    c.momentum = 0.9;
                    c.nesterov = true;
                    c.weight_decay = 0.01
                }),
                [0.175548717, -0.351097435, 0.839029014, 0.547336876],
            ),
            (
                cfg(OptimKind::Sgd, |c| {
                    c.momentum = 0.5;
                    c.dampening = 0.3
                }),
                [0.357734621, -0.715469241, 1.488910675, 0.231889009],
            ),
            (cfg(OptimKind::Sgd, |_| {}), [0.37066251, -0.741325021, 1.540675044, 0.23210001]),
        ];
        for (c, want) in cases {
            assert_close(&run(&c, 3).0, &want);
        }
    }

    #[test]
    fn a_decay_mask_gives_each_parameter_the_update_of_its_group() {
        // Two parameters stepped together, only the first decayed, equal the same parameters stepped alone with
        // and without weight decay (nanoGPT's groups: `optim.decay = "matrices"`).
        for kind in [OptimKind::Adamw, OptimKind::Sgd] {
            let with = cfg(kind, |c| {
                c.weight_decay = 0.1;
                c.momentum = if kind == OptimKind::Sgd { 0.9 } else { 0.0 }
            });
            let without = OptimConfig { weight_decay: 0.0, ..with.clone() };
            let (decayed, ..) = run(&with, 3);
            let (plain, ..) = run(&without, 3);
            assert_ne!(decayed, plain, "{kind:?}: decay must change the update");
            let (a, b) = (param(), param());
            let names = vec!["a".to_string(), "b".to_string()];
            let both = [a.shallow_clone(), b.shallow_clone()];
            let mut opt = build(&with, &names, &both, &[true, false]);
            for t in 0..3 {
                set_grad(&a, t);
                set_grad(&b, t);
                opt.step(&both, with.lr, None).unwrap();
            }
            assert_eq!(Vec::<f32>::try_from(&a.detach()).unwrap(), decayed, "{kind:?}");
            assert_eq!(Vec::<f32>::try_from(&b.detach()).unwrap(), plain, "{kind:?}");
        }
    }

    #[test]
    fn state_survives_export_and_import_bit_for_bit() {
        for c in [cfg(OptimKind::Adamw, |c| c.weight_decay = 0.01), cfg(OptimKind::Sgd, |c| c.momentum = 0.9)] {
            let (straight, ..) = run(&c, 4);
            // Two steps, export, rebuild from the exported state and the weights, two more steps.
            let (_, opt, p) = run(&c, 2);
            let state: HashMap<String, Tensor> = opt.state().into_iter().map(|(k, v)| (k, v.copy())).collect();
            let p2 = p.detach().copy().set_requires_grad(true);
            let names = vec!["w".to_string()];
            let mut opt2 = build(&c, &names, std::slice::from_ref(&p2), &[true]);
            opt2.load_state(&state).unwrap();
            for t in 2..4 {
                set_grad(&p2, t);
                opt2.step(std::slice::from_ref(&p2), c.lr, None).unwrap();
            }
            assert_eq!(Vec::<f32>::try_from(&p2.detach()).unwrap(), straight, "{:?}", c.kind);
            let mut missing: HashMap<String, Tensor> =
                state.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect();
            missing.remove("step");
            assert!(opt2.load_state(&missing).is_err());
        }
    }

    #[test]
    fn found_inf_skips_the_step_and_keeps_the_state() {
        for c in [cfg(OptimKind::Adamw, |_| {}), cfg(OptimKind::Sgd, |c| c.momentum = 0.9)] {
            let p = param();
            let names = vec!["w".to_string()];
            let mut opt = build(&c, &names, std::slice::from_ref(&p), &[true]);
            set_grad(&p, 0);
            opt.step(std::slice::from_ref(&p), c.lr, Some(&Tensor::full([], 1.0, (Kind::Float, tch::Device::Cpu))))
                .unwrap();
            assert_eq!(Vec::<f32>::try_from(&p.detach()).unwrap(), [0.5, -1.0, 2.0, 0.0]);
            let step = opt.state().into_iter().find(|(k, _)| k == "step").unwrap().1;
            assert_eq!(step.double_value(&[]), 0.0);
        }
    }
}
