//! Horizontal fusion (HFTA, Wang et al., MLSys 2021): R runs of one architecture stepped as one model. Every
//! parameter gains a leading run dimension, each linear layer is one batched matmul over it, and each run keeps its
//! own batches (its seed's order), its own loss and its own hyperparameters (per-run tensors in the optimizer).
//!
//! A [`Fused`] is a transient view: [`Fused::gather`] stacks the members' [`Trainer`]s (weights, optimizer state,
//! epoch accumulators), [`Fused::step`] trains them together, and [`Fused::scatter`] writes every run's slice back
//! into its own trainer, which then evaluates, checkpoints and reports exactly as an unfused run does. So a fused
//! run's checkpoint is an ordinary checkpoint: loadable alone, in PyTorch, or resumed unfused.
//!
//! [`fusion_key`] says which configs may share a group, or why a config cannot be fused. Owns no files.
use std::collections::HashMap;

use tch::{Device, Kind, Tensor};

use super::fit::Trainer;
use crate::amp::{Autocast, Resolved};
use crate::config::{Activation, Config, Decay, ModelKind, OptimKind, Precision};
use crate::optim;
use crate::task::{Eval, Split};

/// Runs whose configs give the same key can be trained as one fused model; `Err` says why this one cannot.
/// The key is the config with every per-run key (learning rate and the rest of the optimizer's numbers, the
/// schedule, gradient clipping, seed, epochs, early stopping, checkpointing, logging) set to one value.
pub fn fusion_key(cfg: &Config) -> Result<String, String> {
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

/// The fused optimizer's per-run numbers, and its state with the run dimension first.
enum State {
    /// `step`: every run's step counter, `[R]` (the fused kernel reads one per run).
    AdamW {
        exp_avg: Vec<Tensor>,
        exp_avg_sq: Vec<Tensor>,
        step: Tensor,
    },
    Sgd {
        buffers: Vec<Tensor>,
        step: i64,
    },
}

/// R runs stacked: see the module header.
pub(crate) struct Fused {
    names: Vec<String>,
    /// `[R, ...]` leaves, one per parameter name (sorted, as every member's trainer orders them).
    params: Vec<Tensor>,
    decays: Vec<bool>,
    /// Per parameter: held as `[R, in, out]`, the transpose of each run's `[out, in]`.
    transposed: Vec<bool>,
    state: State,
    /// Per-run hyperparameters, one entry per run.
    optim: Vec<crate::config::OptimConfig>,
    /// Per-run epoch accumulators (`[R]`): the loss sum of the epoch in progress.
    pub loss_sum: Tensor,
    /// (weight, bias) parameter indices of the linear layers, then of the convolutions (a CNN), in order.
    layers: Vec<(usize, usize)>,
    convs: Vec<(usize, usize)>,
    /// A CNN's `[C, H, W]`.
    image: Option<[i64; 3]>,
    activation: Activation,
    precision: Resolved,
    device: Device,
}

impl Fused {
    /// Stacks the members' state. All must have the same parameter names and shapes (same [`fusion_key`]).
    pub fn gather(members: &[&Trainer]) -> Result<Fused, String> {
        let first = members.first().ok_or("an empty group")?;
        let names = first.names.clone();
        let stack = |f: &dyn Fn(&Trainer) -> Tensor| -> Result<Tensor, String> {
            let ts: Vec<Tensor> = members.iter().map(|t| f(t).detach()).collect();
            Tensor::f_stack(&ts, 0).map_err(|e| e.to_string())
        };
        // Linear weights are held `[R, in, out]` (each run's PyTorch `[out, in]` transposed): `bmm` on contiguous
        // operands is ~35% faster than on transposed views (measured on the CPU). Elementwise state follows.
        let transposed: Vec<bool> = first.params.iter().map(|p| p.dim() == 2).collect();
        let lay = |i: usize, t: Tensor| if transposed[i] { t.tr() } else { t };
        let mut params = Vec::with_capacity(names.len());
        for i in 0..names.len() {
            params.push(stack(&|t| lay(i, t.params[i].shallow_clone()))?.set_requires_grad(true));
        }
        let states: Vec<HashMap<String, Tensor>> =
            members.iter().map(|t| t.optimizer.state().into_iter().collect()).collect();
        let pick = |key: &str| -> Result<Tensor, String> {
            let ts: Vec<Tensor> = states
                .iter()
                .map(|s| {
                    s.get(key).map(Tensor::shallow_clone).ok_or_else(|| format!("optimizer state `{key}` missing"))
                })
                .collect::<Result<_, _>>()?;
            Tensor::f_stack(&ts, 0).map_err(|e| e.to_string())
        };
        let per_name = |suffix: &str| -> Result<Vec<Tensor>, String> {
            let ts: Vec<Tensor> = names.iter().map(|n| pick(&format!("{n}.{suffix}"))).collect::<Result<_, _>>()?;
            Ok(ts
                .into_iter()
                .enumerate()
                .map(|(i, t)| if transposed[i] { t.transpose(1, 2).contiguous() } else { t })
                .collect())
        };
        let step = pick("step")?;
        let state = match first.cfg.optim.kind {
            OptimKind::Adamw => {
                State::AdamW { exp_avg: per_name("exp_avg")?, exp_avg_sq: per_name("exp_avg_sq")?, step }
            }
            OptimKind::Sgd => State::Sgd {
                buffers: if first.cfg.optim.momentum > 0.0 { per_name("momentum_buffer")? } else { Vec::new() },
                step: step.f_int64_value(&[0]).map_err(|e| e.to_string())?,
            },
        };
        let decays = first.params.iter().map(|p| first.cfg.decay() == Decay::All || p.dim() >= 2).collect();
        let model = &first.cfg.model;
        let index = |n: &str| names.iter().position(|x| x == n).ok_or_else(|| format!("no parameter `{n}`"));
        let pair = |prefix: &str| -> Result<(usize, usize), String> {
            Ok((index(&format!("{prefix}.weight"))?, index(&format!("{prefix}.bias"))?))
        };
        let (mlp, convs, image) = match model.kind {
            ModelKind::Cnn => {
                let shape = first.cfg.data.shape.as_deref().and_then(|s| <[i64; 3]>::try_from(s).ok());
                let convs = (0..model.channels.len()).map(|i| pair(&format!("convs.{i}"))).collect::<Result<_, _>>()?;
                ("mlp.", convs, Some(shape.ok_or("a cnn needs data.shape = [C, H, W]")?))
            }
            _ => ("", Vec::new(), None),
        };
        let mut layers =
            (0..model.hidden.len()).map(|i| pair(&format!("{mlp}layers.{i}"))).collect::<Result<Vec<_>, _>>()?;
        layers.push(pair(&format!("{mlp}head"))?);
        Ok(Fused {
            names,
            params,
            decays,
            transposed,
            state,
            optim: members.iter().map(|t| t.cfg.optim.clone()).collect(),
            loss_sum: stack(&|t| t.loss_sum.shallow_clone())?,
            layers,
            convs,
            image,
            activation: first.cfg.model.activation,
            precision: first.precision,
            device: first.device,
        })
    }

    pub fn runs(&self) -> usize {
        self.optim.len()
    }

    /// Writes run `r`'s slice of everything back into `members[r]`, which has then taken every fused step
    /// itself (`step` optimizer steps in all).
    pub fn scatter(&self, members: &mut [&mut Trainer], step: u64) -> Result<(), String> {
        let err = |e: tch::TchError| e.to_string();
        tch::no_grad(|| -> Result<(), String> {
            for (r, t) in members.iter_mut().enumerate() {
                let r = r as i64;
                for (i, p) in t.params.iter().enumerate() {
                    p.shallow_clone().f_copy_(&self.own(i, &self.params[i], r)).map_err(err)?;
                }
                let live: HashMap<String, Tensor> = t.optimizer.state().into_iter().collect();
                let put = |key: &str, src: &Tensor| -> Result<(), String> {
                    let dst = live.get(key).ok_or_else(|| format!("optimizer state `{key}` missing"))?;
                    dst.shallow_clone().f_copy_(src).map(|_| ()).map_err(err)
                };
                match &self.state {
                    State::AdamW { exp_avg, exp_avg_sq, step } => {
                        for (n, (m, v)) in self.names.iter().zip(exp_avg.iter().zip(exp_avg_sq)) {
                            put(&format!("{n}.exp_avg"), &self.own_named(n, m, r))?;
                            put(&format!("{n}.exp_avg_sq"), &self.own_named(n, v, r))?;
                        }
                        put("step", &step.get(r))?;
                    }
                    State::Sgd { buffers, step } => {
                        for (n, b) in self.names.iter().zip(buffers) {
                            put(&format!("{n}.momentum_buffer"), &self.own_named(n, b, r))?;
                        }
                        put("step", &Tensor::from(*step))?;
                    }
                }
                t.loss_sum.f_copy_(&self.loss_sum.get(r)).map_err(err)?;
                t.step = step;
            }
            Ok(())
        })
    }

    /// Run `r`'s slice of parameter `i`'s tensor `t` (a parameter or its optimizer state), in PyTorch's layout.
    fn own(&self, i: usize, t: &Tensor, r: i64) -> Tensor {
        if self.transposed[i] {
            t.get(r).tr()
        } else {
            t.get(r)
        }
    }

    /// [`Fused::own`] by parameter name.
    fn own_named(&self, name: &str, t: &Tensor, r: i64) -> Tensor {
        let i = self.names.iter().position(|n| n == name).unwrap_or(0);
        self.own(i, t, r)
    }

    /// The outputs `[R, B, classes]` for inputs `[R, B, ...]`: one batched matmul per layer.
    fn forward(&self, x: &Tensor) -> Tensor {
        let r = x.size()[0];
        let b = x.size()[1];
        let last = self.layers.len() - 1;
        let mut h = match self.image {
            Some(image) => self.features(x, image),
            None => x.reshape([r, b, -1]),
        };
        for (l, &(w, bias)) in self.layers.iter().enumerate() {
            let (w, bias) = (&self.params[w], &self.params[bias]);
            h = h.bmm(w) + bias.unsqueeze(1);
            if l < last {
                h = crate::model::activate(&h, self.activation);
            }
        }
        h
    }

    /// A CNN's convolutions for inputs `[R, B, ...]`, as grouped convolutions over `[B, R·C, H, W]` (group r: run
    /// r's channels and filters), flattened per run to `[R, B, features]` in PyTorch's `flatten(1)` order.
    fn features(&self, x: &Tensor, [c, h, w]: [i64; 3]) -> Tensor {
        let (r, b) = (x.size()[0], x.size()[1]);
        let mut y = x.reshape([r, b, c, h, w]).transpose(0, 1).reshape([b, r * c, h, w]);
        for &(wi, bi) in &self.convs {
            let (weight, bias) = (&self.params[wi], &self.params[bi]);
            let s = weight.size();
            let weight = weight.reshape([s[0] * s[1], s[2], s[3], s[4]]);
            let z = y.conv2d(&weight, Some(bias.reshape([-1])), [1, 1], [1, 1], [1, 1], r);
            y = crate::model::activate(&z, self.activation).max_pool2d_default(2);
        }
        let per_run = y.size()[1] / r * y.size()[2] * y.size()[3];
        y.reshape([b, r, per_run]).transpose(0, 1).contiguous()
    }

    /// One optimizer step of every run on its own batch: `idx[r]` are run r's sample indices, `lrs[r]` its
    /// learning rate. `task` is any member's (they share the data). Returns the runs' losses `[R]`.
    pub fn step(&mut self, task: &dyn crate::task::Task, idx: &[Tensor], lrs: &[f64]) -> Result<Tensor, String> {
        let err = |e: tch::TchError| e.to_string();
        let runs = self.runs() as i64;
        crate::ffi::grads_to_none(&self.params).map_err(|e| e.to_string())?;
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
        let (total, out) = {
            let _ac = Autocast::enter(self.precision, self.device.is_cuda()).map_err(|e| e.to_string())?;
            let out = self.forward(&x);
            // The mean over all R·B items times R: each run's gradient is that of its own batch's mean loss.
            let flat = |t: &Tensor| {
                let mut s = t.size()[1..].to_vec();
                s[0] *= runs;
                t.reshape(s.as_slice())
            };
            (task.loss(&flat(&out), &flat(&y)) * runs as f64, out)
        };
        total.f_backward().map_err(err)?;
        let losses = tch::no_grad(|| {
            let out = out.detach();
            let per: Vec<Tensor> = (0..runs).map(|r| task.loss(&out.get(r), &y.get(r))).collect();
            Tensor::f_stack(&per, 0)
        })
        .map_err(err)?;
        tch::no_grad(|| self.clip().and_then(|()| self.update(lrs))).map_err(err)?;
        let losses = losses.to_kind(Kind::Float);
        let _ = self.loss_sum.f_add_(&(&losses * len as f64)).map_err(err)?;
        Ok(losses)
    }

    /// `optim.grad_clip` per run, as `torch.nn.utils.clip_grad_norm_` over that run's gradients alone.
    fn clip(&self) -> Result<(), tch::TchError> {
        if self.optim.iter().all(|o| o.grad_clip.is_none()) {
            return Ok(());
        }
        let grads: Vec<Tensor> = self.params.iter().map(Tensor::grad).collect();
        let mut sq: Option<Tensor> = None;
        for g in &grads {
            let dims: Vec<i64> = (1..g.dim() as i64).collect();
            let s = g.f_square()?.f_sum_dim_intlist(dims.as_slice(), false, Kind::Float)?;
            sq = Some(match sq {
                Some(t) => t + s,
                None => s,
            });
        }
        let Some(sq) = sq else { return Ok(()) };
        let max: Vec<f64> = self.optim.iter().map(|o| o.grad_clip.unwrap_or(f64::INFINITY)).collect();
        let max = Tensor::from_slice(&max).to_device(self.device).to_kind(Kind::Float);
        let coef = (max / (sq.f_sqrt()? + 1e-6)).f_clamp_max(1.0)?;
        for g in &grads {
            let mut shape = vec![1i64; g.dim()];
            shape[0] = self.runs() as i64;
            let _ = g.shallow_clone().f_mul_(&coef.f_reshape(shape.as_slice())?)?;
        }
        Ok(())
    }

    fn update(&mut self, lrs: &[f64]) -> Result<(), tch::TchError> {
        let grads: Vec<Tensor> = self.params.iter().map(Tensor::grad).collect();
        match &mut self.state {
            State::AdamW { exp_avg, exp_avg_sq, step } => {
                let _ = step.f_add_scalar_(1.0)?;
                // torch's fused AdamW kernel on each run's slices: the unfused optimizer's arithmetic exactly.
                for (r, (o, &lr)) in self.optim.iter().zip(lrs).enumerate() {
                    let r = r as i64;
                    for decay in [true, false] {
                        let pick: Vec<usize> = (0..self.params.len()).filter(|&i| self.decays[i] == decay).collect();
                        if pick.is_empty() {
                            continue;
                        }
                        let slice = |v: &[Tensor]| -> Vec<Tensor> { pick.iter().map(|&i| v[i].get(r)).collect() };
                        let steps: Vec<Tensor> = pick.iter().map(|_| step.get(r)).collect();
                        let wd = if decay { o.weight_decay } else { 0.0 };
                        let (ps, gs, ms, vs) = (slice(&self.params), slice(&grads), slice(exp_avg), slice(exp_avg_sq));
                        crate::ffi::fused_adamw(&ps, &gs, &ms, &vs, &steps, lr, o.betas, wd, o.eps, None)
                            .map_err(|e| tch::TchError::Torch(e.to_string()))?;
                    }
                }
            }
            State::Sgd { buffers, step } => {
                let o = &self.optim;
                let wd: Vec<f64> = o.iter().map(|o| o.weight_decay).collect();
                let mom: Vec<f64> = o.iter().map(|o| o.momentum).collect();
                let damp: Vec<f64> = o.iter().map(|o| 1.0 - o.dampening).collect();
                let neg_lr: Vec<f64> = lrs.iter().map(|l| -l).collect();
                let nesterov = o.first().is_some_and(|o| o.nesterov);
                for (i, (p, g)) in self.params.iter().zip(&grads).enumerate() {
                    let pr = |v: &[f64]| Fused::per_run_on(self.device, v, p);
                    let mut g = g.shallow_clone();
                    if self.decays[i] && wd.iter().any(|&w| w != 0.0) {
                        g = g.f_add(&(p * pr(&wd)))?;
                    }
                    if let Some(buf) = buffers.get_mut(i) {
                        if *step == 0 {
                            buf.f_copy_(&g)?;
                        } else {
                            let _ = buf.f_mul_(&pr(&mom))?.f_add_(&(&g * pr(&damp)))?;
                        }
                        g = if nesterov { g.f_add(&(&*buf * pr(&mom)))? } else { buf.shallow_clone() };
                    }
                    let _ = p.shallow_clone().f_add_(&(g * pr(&neg_lr)))?;
                }
                *step += 1;
            }
        }
        Ok(())
    }

    /// Every run's metrics on the validation items, as [`Trainer::evaluate`] computes them (the same batches of
    /// `train.eval_batch_size`, capped by `train.eval_batches`), with the whole group in each forward pass and one
    /// host sync. `first` is any member (they share the data and those keys).
    pub fn evaluate(&self, first: &Trainer) -> Result<Vec<Eval>, String> {
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
                let out = self.forward(&batch.x.unsqueeze(0).expand(shape.as_slice(), false));
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

    /// A per-run value as a tensor that broadcasts against parameter `like` (`[R, 1, ...]`).
    fn per_run_on(device: Device, values: &[f64], like: &Tensor) -> Tensor {
        let mut shape = vec![1i64; like.dim()];
        shape[0] = values.len() as i64;
        let v: Vec<f32> = values.iter().map(|&v| v as f32).collect();
        Tensor::from_slice(&v).to_device(device).reshape(shape.as_slice())
    }

    /// Every run's learning rate at optimizer step `step` (each with its own schedule and length).
    pub fn lrs(members: &[&Trainer], step: u64) -> Vec<f64> {
        members.iter().map(|t| optim::lr_at(&t.cfg.schedule, t.cfg.optim.lr, step, t.total_steps())).collect()
    }
}
