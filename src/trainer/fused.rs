//! Horizontal fusion (HFTA, Wang et al., MLSys 2021): R runs of one architecture stepped as one model. Every
//! parameter gains a leading run dimension, each linear layer is one batched matmul over it, and each run keeps its
//! own batches (its seed's order), its own loss and its own hyperparameters (per-run tensors in the optimizer).
//!
//! A [`Fused`] is a transient view: [`Fused::gather`] stacks the members' [`Trainer`]s (weights, optimizer state,
//! epoch accumulators) and builds the layers (`model::FusedNet`, by `state_dict` name) on the stacked weights,
//! [`Fused::step`] trains them together, and [`Fused::scatter`] writes every run's slice back
//! into its own trainer, which then evaluates, checkpoints and reports exactly as an unfused run does. So a fused
//! run's checkpoint is an ordinary checkpoint: loadable alone, in PyTorch, or resumed unfused.
//!
//! The step takes one of two [`Form`]s (`train.fused_step`, chosen by [`form_of`]): *per run*, torch's fused
//! AdamW kernel on each run's slices and each run's loss alone (the unfused arithmetic; launches grow with R), or
//! *batched*, one kernel call over the stacked tensors and one loss over the batched output (launches per step
//! independent of R; rounding differs). The optimizer half is [`super::fused_optim`]; this module has the model,
//! the losses and the moves in and out of the members.
//!
//! [`fusion_key`] says which configs may share a group, or why a config cannot be fused. Owns no files.
use tch::{Device, Kind, Tensor};

use super::fit::Trainer;
use super::fused_optim::{counts, form, Form, FusedOptim, Param};
use crate::amp::{Autocast, Resolved};
use crate::config::{Config, Decay, ModelKind, OptimKind, Precision};
use crate::model::{FusedNet, Lookup};
use crate::optim;
use crate::task::{Eval, Split};

/// Runs whose configs give the same key can be trained as one fused model; `Err` says why this one cannot.
/// The key is the config with every per-run key (learning rate and the rest of the optimizer's numbers, the
/// schedule, gradient clipping, seed, epochs, early stopping, checkpointing, logging) set to one value.
pub(crate) fn fusion_key(cfg: &Config) -> Result<String, String> {
    if !matches!(cfg.model.kind, ModelKind::Mlp | ModelKind::Cnn) {
        let kind = serde_json::to_value(cfg.model.kind).ok().and_then(|v| v.as_str().map(str::to_string));
        return Err(format!(
            "model.kind = \"{}\" has no fused implementation yet (\"mlp\" and \"cnn\" fuse)",
            kind.unwrap_or_default()
        ));
    }
    let why = if cfg.model.dropout > 0.0 {
        Some("model.dropout > 0 draws each run's masks from its own RNG stream")
    } else if cfg.train.ema.is_some() {
        Some("train.ema is not fused")
    } else if cfg.train.accumulate > 1 {
        Some("train.accumulate > 1 is not fused")
    } else if cfg.train.precision == Precision::Fp16 {
        Some("train.precision = \"fp16\" needs a grad scaler per run")
    } else {
        None
    };
    if let Some(why) = why {
        return Err(why.to_string());
    }
    let mut c = cfg.clone();
    let momentum = c.optim.kind == OptimKind::Sgd && c.optim.momentum > 0.0;
    c.optim = crate::config::OptimConfig {
        kind: c.optim.kind,
        nesterov: c.optim.nesterov,
        decay: Some(cfg.decay()),
        momentum: if momentum { 1.0 } else { 0.0 },
        ..Default::default()
    };
    c.schedule = Default::default();
    c.checkpoint = Default::default();
    (c.train.seed, c.train.epochs, c.train.early_stopping, c.train.log_every) = (0, 0, None, 0);
    (c.train.tensorboard, c.train.name) = (false, None);
    serde_json::to_string(&c).map_err(|e| format!("cannot compare configs: {e}"))
}

/// [`form`] for a group of `members` (not empty): their `train.fused_step` (the fusion key makes it one), on their
/// device, uniform when AdamW's betas and eps and the step count are every run's.
pub(crate) fn form_of(members: &[&Trainer]) -> Form {
    let first = members[0];
    let f = &first.cfg.optim;
    let uniform = members.iter().all(|t| (t.cfg.optim.betas, t.cfg.optim.eps, t.step) == (f.betas, f.eps, first.step));
    form(first.cfg.train.fused_step, first.device.is_cuda(), uniform)
}

/// R runs stacked: see the module header.
pub(crate) struct Fused {
    /// One per parameter, sorted by name as every member's trainer orders them.
    params: Vec<Param>,
    /// The layers, on shallow copies of the `params` leaves.
    net: FusedNet,
    /// The stacked optimizer state and the per-run numbers.
    optim: FusedOptim,
    /// Per-run epoch accumulators (`[R]`): the loss sum of the epoch in progress.
    pub loss_sum: Tensor,
    precision: Resolved,
    device: Device,
}

/// Stacks `f` of every member along a new first dimension (detached).
fn stack(members: &[&Trainer], f: &dyn Fn(&Trainer) -> Tensor) -> Result<Tensor, String> {
    let ts: Vec<Tensor> = members.iter().map(|t| f(t).detach()).collect();
    Tensor::f_stack(&ts, 0).map_err(|e| e.to_string())
}

impl Fused {
    /// Stacks the members' state. All must have the same parameter names and shapes (same [`fusion_key`]).
    pub(super) fn gather(members: &[&Trainer]) -> Result<Fused, String> {
        let first = members.first().ok_or("an empty group")?;
        if let Some(t) = members.iter().find(|t| t.names != first.names) {
            return Err(format!("members differ in their parameters: {:?} and {:?}", first.names, t.names));
        }
        let decay_all = first.cfg.decay() == Decay::All;
        let mut params = Vec::with_capacity(first.names.len());
        for (i, (name, p)) in first.names.iter().zip(&first.params).enumerate() {
            let transposed = p.dim() == 2;
            let lay = |t: Tensor| if transposed { t.tr() } else { t };
            let value = stack(members, &|t| lay(t.params[i].shallow_clone()))?.set_requires_grad(true);
            params.push(Param { name: name.clone(), value, decay: decay_all || p.dim() >= 2, transposed });
        }
        let optim = FusedOptim::stack(members, &params, form_of(members), first.device)?;
        let image = match first.cfg.model.kind {
            ModelKind::Cnn => first.cfg.data.shape.as_deref().and_then(|s| <[i64; 3]>::try_from(s).ok()),
            _ => None,
        };
        let lookup = Lookup::new(params.iter().map(|p| (p.name.as_str(), &p.value)));
        let net = FusedNet::new(lookup, &first.cfg.model, image, first.precision != Resolved::Fp32)?;
        Ok(Fused {
            params,
            net,
            optim,
            loss_sum: stack(members, &|t| t.loss_sum.shallow_clone())?,
            precision: first.precision,
            device: first.device,
        })
    }

    /// The stacked leaves, in `params` order.
    fn leaves(&self) -> Vec<Tensor> {
        self.params.iter().map(|p| p.value.shallow_clone()).collect()
    }

    pub(super) fn runs(&self) -> usize {
        self.optim.runs()
    }

    /// Writes run `r`'s slice of everything back into `members[r]`, which has then taken every fused step
    /// itself (`step` optimizer steps in all).
    pub(super) fn scatter(&self, members: &mut [&mut Trainer], step: u64) -> Result<(), String> {
        let err = |e: tch::TchError| e.to_string();
        tch::no_grad(|| -> Result<(), String> {
            for (r, t) in members.iter_mut().enumerate() {
                let r = r as i64;
                if t.params.len() != self.params.len() {
                    return Err(format!("a member has {} parameters, the group {}", t.params.len(), self.params.len()));
                }
                for (p, fused) in t.params.iter().zip(&self.params) {
                    p.shallow_clone().f_copy_(&fused.own(&fused.value, r)).map_err(err)?;
                }
                let live: std::collections::HashMap<String, Tensor> = t.optimizer.state().into_iter().collect();
                for (key, src) in self.optim.run_state(&self.params, r) {
                    let dst = live.get(&key).ok_or_else(|| format!("optimizer state `{key}` missing"))?;
                    dst.shallow_clone().f_copy_(&src).map_err(err)?;
                }
                t.loss_sum.f_copy_(&self.loss_sum.get(r)).map_err(err)?;
                t.step = step;
            }
            Ok(())
        })
    }

    /// One optimizer step of every run on its own batch: `idx[r]` are run r's sample indices, `lrs[r]` its
    /// learning rate. `task` is any member's (they share the data). Returns the runs' losses `[R]`.
    pub(super) fn step(&mut self, task: &dyn crate::task::Task, idx: &[Tensor], lrs: &[f64]) -> Result<Tensor, String> {
        let err = |e: tch::TchError| e.to_string();
        let runs = self.runs() as i64;
        counts::add(counts::STEPS, 1);
        crate::ffi::grads_to_none(&self.leaves()).map_err(|e| e.to_string())?;
        let all = Tensor::f_cat(idx, 0).map_err(err)?;
        let batch = task.gather(&all, Split::Train, self.device);
        let len = idx.first().map_or(0, |t| t.size()[0]);
        let mut xs = batch.x.size();
        xs[0] = len;
        xs.insert(0, runs);
        let x = batch.x.f_reshape(xs.as_slice()).map_err(err)?;
        let mut ys = batch.y.size();
        ys[0] = len;
        ys.insert(0, runs);
        let y = batch.y.f_reshape(ys.as_slice()).map_err(err)?;
        let (total, losses) = {
            // The losses, the logged ones too, are computed under autocast, as the unfused step computes its loss.
            let _ac = Autocast::enter(self.precision, self.device.is_cuda()).map_err(|e| e.to_string())?;
            let out = self.net.forward(&x);
            // The mean over all R·B items times R: each run's gradient is that of its own batch's mean loss.
            let flat = |t: &Tensor| {
                let mut s = t.size()[1..].to_vec();
                s[0] *= runs;
                t.reshape(s.as_slice())
            };
            match self.optim.form() {
                Form::PerRun => {
                    counts::add(counts::LOSS_CALLS, 1 + runs as u64);
                    let total = task.loss(&flat(&out), &flat(&y)) * runs as f64;
                    let losses = tch::no_grad(|| {
                        let out = out.detach();
                        let per: Vec<Tensor> = (0..runs).map(|r| task.loss(&out.get(r), &y.get(r))).collect();
                        Tensor::f_stack(&per, 0)
                    })
                    .map_err(err)?;
                    (total, losses)
                }
                Form::Batched => {
                    counts::add(counts::LOSS_CALLS, 1);
                    let losses = task.losses_by_run(&out, &y).map_err(err)?;
                    (losses.f_sum(Kind::Float).map_err(err)?, losses.detach())
                }
            }
        };
        total.f_backward().map_err(err)?;
        let (params, device) = (&self.params, self.device);
        tch::no_grad(|| self.optim.clip(params).and_then(|()| self.optim.update(params, lrs, device))).map_err(err)?;
        let losses = losses.to_kind(Kind::Float);
        let _ = self.loss_sum.f_add_(&(&losses * len as f64)).map_err(err)?;
        Ok(losses)
    }

    /// Every run's metrics on the validation items, as [`Trainer::evaluate`] computes them (the same batches of
    /// `train.eval_batch_size`, capped by `train.eval_batches`), with the whole group in each forward pass and one
    /// host sync. `first` is any member (they share the data and those keys).
    pub(super) fn evaluate(&self, first: &Trainer) -> Result<Vec<Eval>, String> {
        let err = |e: tch::TchError| e.to_string();
        let (runs, bs) = (self.runs(), first.cfg.train.eval_batch_size);
        let cap =
            (first.cfg.train.eval_batches > 0).then(|| (first.cfg.train.eval_batches as usize).saturating_mul(bs));
        let order = first.task.val_order(cap);
        let n = order.size()[0] as usize;
        let mut sums: Vec<Vec<Tensor>> = (0..runs).map(|_| Vec::new()).collect();
        tch::no_grad(|| -> Result<(), String> {
            let _ac = Autocast::enter(self.precision, self.device.is_cuda()).map_err(|e| e.to_string())?;
            for start in (0..n).step_by(bs) {
                let idx = order.narrow(0, start as i64, bs.min(n - start) as i64);
                let batch = first.task.gather(&idx, Split::Val, self.device);
                let mut shape = batch.x.size();
                shape.insert(0, runs as i64);
                let out = self.net.forward(&batch.x.unsqueeze(0).expand(shape.as_slice(), false));
                for (r, acc) in sums.iter_mut().enumerate() {
                    let part = first.task.eval_sums(&out.get(r as i64), &batch.y);
                    if acc.is_empty() {
                        *acc = part;
                    } else {
                        for (s, p) in acc.iter_mut().zip(&part) {
                            let _ = s.f_add_(p).map_err(err)?;
                        }
                    }
                }
            }
            Ok(())
        })?;
        let flat: Vec<Tensor> = sums.iter().flatten().map(|t| t.to_kind(Kind::Double).reshape([1])).collect();
        let host = Vec::<f64>::try_from(Tensor::f_cat(&flat, 0).map_err(err)?.to_device(Device::Cpu)).map_err(err)?;
        let per = host.len() / runs.max(1);
        Ok(host.chunks(per.max(1)).map(|s| first.task.finish_eval(s, n)).collect())
    }

    /// Every run's learning rate at optimizer step `step` (each with its own schedule and length).
    pub(super) fn lrs(members: &[&Trainer], step: u64) -> Vec<f64> {
        members.iter().map(|t| optim::lr_at(&t.cfg.schedule, t.cfg.optim.lr, step, t.total_steps())).collect()
    }
}
