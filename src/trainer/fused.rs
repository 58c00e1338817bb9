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
//! The step takes one of two [`Form`]s (`train.fused_step`, chosen by [`form`]): *per run*, torch's fused AdamW
//! kernel on each run's slices and each run's loss alone (the unfused arithmetic; launches grow with R), or
//! *batched*, one kernel call over the stacked tensors and one loss over the batched output (launches per step
//! independent of R; rounding differs).
//!
//! [`fusion_key`] says which configs may share a group, or why a config cannot be fused. Owns no files.
use std::collections::HashMap;

use tch::{Device, Kind, Tensor};

use super::fit::Trainer;
use crate::amp::{Autocast, Resolved};
use crate::config::{Config, Decay, FusedStep, ModelKind, OptimKind, Precision};
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

/// How a fused step launches its AdamW update and its losses: see the module header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    PerRun,
    Batched,
}

/// The form a group steps in: `train.fused_step` as set, `auto` batched on CUDA and per run on the CPU (both
/// measured in BENCHMARKS.md "Fused step, counted"). Batched needs `uniform`: every run with the same AdamW betas,
/// eps and step count (one kernel call takes them as scalars); a group without it steps per run.
pub(crate) fn form(setting: FusedStep, cuda: bool, uniform: bool) -> Form {
    match setting {
        FusedStep::Batched | FusedStep::Auto if uniform && (cuda || setting == FusedStep::Batched) => Form::Batched,
        _ => Form::PerRun,
    }
}

/// [`form`] for a group of `members` (not empty): their `train.fused_step` (the fusion key makes it one), on their
/// device, uniform when AdamW's betas and eps and the step count are every run's.
pub(crate) fn form_of(members: &[&Trainer]) -> Form {
    let first = members[0];
    let f = &first.cfg.optim;
    let uniform = members.iter().all(|t| (t.cfg.optim.betas, t.cfg.optim.eps, t.step) == (f.betas, f.eps, first.step));
    form(first.cfg.train.fused_step, first.device.is_cuda(), uniform)
}

/// The fused optimizer's per-run numbers, and its state with the run dimension first.
enum State {
    /// `step`: every run's step counter, `[R]` (the fused kernel reads one per run). `scratch`: under
    /// [`Form::Batched`] only.
    AdamW {
        exp_avg: Vec<Tensor>,
        exp_avg_sq: Vec<Tensor>,
        step: Tensor,
        scratch: Option<Scratch>,
    },
    Sgd {
        buffers: Vec<Tensor>,
        step: i64,
    },
}

/// What the batched AdamW update steps in place of the parameters: one buffer per parameter, each a view into one
/// flat tensor (zeroed in one launch), that the kernel steps with lr 1 and no weight decay, leaving minus each
/// run's unscaled update in it. Each view has its parameter's strides: the kernel walks its tensors' memory in
/// order and assumes one layout for all of them (a CNN's channels-last weights are not row-major).
struct Scratch {
    all: Tensor,
    parts: Vec<Tensor>,
}

impl Scratch {
    fn new(params: &[Param]) -> Result<Scratch, String> {
        let first = params.first().ok_or("a model without parameters")?;
        let numel: i64 = params.iter().map(|p| p.value.numel() as i64).sum();
        let all = Tensor::zeros([numel], (first.value.kind(), first.value.device()));
        let mut at = 0;
        let mut parts = Vec::with_capacity(params.len());
        for p in params {
            let (size, stride) = (p.value.size(), p.value.stride());
            let n = p.value.numel() as i64;
            let span = 1 + size.iter().zip(&stride).map(|(s, t)| (s - 1) * t).sum::<i64>();
            if span != n || stride.iter().any(|&t| t <= 0) {
                return Err(format!("`{}` is not one dense block (sizes {size:?}, strides {stride:?})", p.name));
            }
            parts.push(all.f_as_strided(size.as_slice(), stride.as_slice(), at).map_err(|e| e.to_string())?);
            at += n;
        }
        Ok(Scratch { all, parts })
    }
}

/// One parameter of every run, stacked `[R, ...]` (a leaf), and how the optimizer and [`Fused::scatter`] treat it.
struct Param {
    /// The `state_dict` name.
    name: String,
    value: Tensor,
    /// `optim.decay` applies weight decay to it.
    decay: bool,
    /// Held as `[R, in, out]`, the transpose of each run's `[out, in]` (a linear layer's weight): `bmm` on
    /// contiguous operands is ~35% faster than on transposed views (measured on the CPU). Its optimizer state
    /// follows.
    transposed: bool,
}

impl Param {
    /// Run `r`'s slice of `t` (this parameter's value or optimizer state), in PyTorch's layout.
    fn own(&self, t: &Tensor, r: i64) -> Tensor {
        if self.transposed {
            t.get(r).tr()
        } else {
            t.get(r)
        }
    }
}

/// R runs stacked: see the module header.
pub(crate) struct Fused {
    /// One per parameter, sorted by name as every member's trainer orders them.
    params: Vec<Param>,
    /// The layers, on shallow copies of the `params` leaves.
    net: FusedNet,
    state: State,
    /// Per-run hyperparameters, one entry per run.
    optim: Vec<crate::config::OptimConfig>,
    /// The same numbers as `[R]` tensors on the device, built once here (no host copy in a step).
    per_run: PerRun,
    /// Per-run epoch accumulators (`[R]`): the loss sum of the epoch in progress.
    pub loss_sum: Tensor,
    precision: Resolved,
    device: Device,
    form: Form,
}

/// The per-run numbers the fused step multiplies by, each `[R]` float32 on the training device: built once by
/// [`Fused::gather`], so that a step sends nothing from the host but its learning rates (SGD: one `[R]` tensor;
/// AdamW passes them to the kernel as arguments). Values are those the step built from host slices before (the
/// f64 config values rounded to f32), so the arithmetic and its results are unchanged.
struct PerRun {
    weight_decay: Tensor,
    /// `optim.momentum`.
    momentum: Tensor,
    /// `1 - optim.dampening`.
    damp: Tensor,
    /// Whether any run has weight decay (else the SGD step skips the term, as before).
    any_decay: bool,
    /// `optim.grad_clip` (infinity for a run without), or `None` when no run clips.
    clip: Option<Tensor>,
}

impl PerRun {
    fn new(optim: &[crate::config::OptimConfig], device: Device) -> PerRun {
        let of = |f: &dyn Fn(&crate::config::OptimConfig) -> f64| {
            let v: Vec<f64> = optim.iter().map(f).collect();
            upload(&v, device, counts::GATHER_TENSORS)
        };
        let clips = optim.iter().any(|o| o.grad_clip.is_some());
        PerRun {
            weight_decay: of(&|o| o.weight_decay),
            momentum: of(&|o| o.momentum),
            damp: of(&|o| 1.0 - o.dampening),
            any_decay: optim.iter().any(|o| o.weight_decay != 0.0),
            clip: clips.then(|| of(&|o| o.grad_clip.unwrap_or(f64::INFINITY))),
        }
    }
}

/// `values` as a `[R]` float32 tensor on `device`. On CUDA the host copy is pinned and the transfer
/// non-blocking: the host goes on queueing the step's kernels, which run after the copy in stream order (torch's
/// caching host allocator keeps the pinned block alive until the copy has run). On the CPU it is the host tensor.
/// `counter`: what [`counts`] counts it as.
fn upload(values: &[f64], device: Device, counter: usize) -> Tensor {
    counts::add(counter, 1);
    let v: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    crate::data::to_device_async(&Tensor::from_slice(&v), device)
}

/// `v` (`[R]`) shaped to broadcast against parameter `like` (`[R, 1, ...]`): a view, no copy.
fn along(v: &Tensor, like: &Tensor) -> Tensor {
    let mut shape = vec![1i64; like.dim()];
    shape[0] = -1;
    v.view(shape.as_slice())
}

/// The AdamW state of a group and its gradients, for one batched update.
struct Adam<'a> {
    grads: &'a [Tensor],
    exp_avg: &'a [Tensor],
    exp_avg_sq: &'a [Tensor],
    step: &'a mut Tensor,
    scratch: &'a Scratch,
}

impl Adam<'_> {
    /// Every run's AdamW step in one kernel call over the stacked tensors ([`Form::Batched`]; `o` is any run's
    /// optimizer config: betas and eps are the group's). The kernel steps the zeroed scratch buffers with lr 1 and
    /// no weight decay, which updates the moments as AdamW does and leaves minus each run's unscaled update in them;
    /// then, per parameter, `p *= 1 - lr·wd` (if it decays) and `p += lr · scratch`, with `[R]` lr and weight decay
    /// broadcast over the run dimension. Launches: one kernel call, 1 + 2 per parameter, whatever R is; one `[R]`
    /// tensor of learning rates sent per step (as SGD's).
    fn batched(
        self,
        params: &[Param],
        o: &crate::config::OptimConfig,
        per: &PerRun,
        lrs: &[f64],
        device: Device,
    ) -> Result<(), tch::TchError> {
        let _ = self.step.f_add_scalar_(1.0)?;
        let _ = self.scratch.all.shallow_clone().f_zero_()?;
        let parts = &self.scratch.parts;
        // Every run is at the same step (`form` checked): run 0's counter stands for all.
        let steps: Vec<Tensor> = parts.iter().map(|_| self.step.get(0)).collect();
        counts::add(counts::OPTIMIZER_CALLS, 1);
        crate::ffi::fused_adamw(
            parts,
            self.grads,
            self.exp_avg,
            self.exp_avg_sq,
            &steps,
            1.0,
            o.betas,
            0.0,
            o.eps,
            None,
        )
        .map_err(|e| tch::TchError::Torch(e.to_string()))?;
        let lr = upload(lrs, device, counts::HOST_TENSORS);
        let keep = if per.any_decay { Some(lr.f_mul(&per.weight_decay)?.f_neg()?.f_add_scalar(1.0)?) } else { None };
        for (param, s) in params.iter().zip(parts) {
            let p = param.value.shallow_clone();
            if let (true, Some(keep)) = (param.decay, &keep) {
                let _ = p.shallow_clone().f_mul_(&along(keep, &p))?;
            }
            let _ = p.shallow_clone().f_addcmul_(s, &along(&lr, &p))?;
        }
        Ok(())
    }
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
        let form = form_of(members);
        let state = Fused::stack_state(members, &params, form)?;
        let image = match first.cfg.model.kind {
            ModelKind::Cnn => first.cfg.data.shape.as_deref().and_then(|s| <[i64; 3]>::try_from(s).ok()),
            _ => None,
        };
        let lookup = Lookup::new(params.iter().map(|p| (p.name.as_str(), &p.value)));
        let net = FusedNet::new(lookup, &first.cfg.model, image, first.precision != Resolved::Fp32)?;
        let optim: Vec<crate::config::OptimConfig> = members.iter().map(|t| t.cfg.optim.clone()).collect();
        Ok(Fused {
            params,
            net,
            state,
            per_run: PerRun::new(&optim, first.device),
            optim,
            loss_sum: stack(members, &|t| t.loss_sum.shallow_clone())?,
            precision: first.precision,
            device: first.device,
            form,
        })
    }

    /// The members' optimizer states, stacked in the layout of `params`.
    fn stack_state(members: &[&Trainer], params: &[Param], form: Form) -> Result<State, String> {
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
        let per_param = |suffix: &str| -> Result<Vec<Tensor>, String> {
            params
                .iter()
                .map(|p| {
                    let t = pick(&format!("{}.{suffix}", p.name))?;
                    Ok(if p.transposed { t.transpose(1, 2).contiguous() } else { t })
                })
                .collect()
        };
        let step = pick("step")?;
        let first = &members[0].cfg.optim;
        Ok(match first.kind {
            OptimKind::Adamw => State::AdamW {
                exp_avg: per_param("exp_avg")?,
                exp_avg_sq: per_param("exp_avg_sq")?,
                step,
                scratch: match form {
                    Form::Batched => Some(Scratch::new(params)?),
                    Form::PerRun => None,
                },
            },
            OptimKind::Sgd => State::Sgd {
                buffers: if first.momentum > 0.0 { per_param("momentum_buffer")? } else { Vec::new() },
                step: step.f_int64_value(&[0]).map_err(|e| e.to_string())?,
            },
        })
    }

    /// The stacked leaves, in `params` order.
    fn leaves(&self) -> Vec<Tensor> {
        self.params.iter().map(|p| p.value.shallow_clone()).collect()
    }

    pub(super) fn runs(&self) -> usize {
        self.optim.len()
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
                let live: HashMap<String, Tensor> = t.optimizer.state().into_iter().collect();
                let put = |key: &str, src: &Tensor| -> Result<(), String> {
                    let dst = live.get(key).ok_or_else(|| format!("optimizer state `{key}` missing"))?;
                    dst.shallow_clone().f_copy_(src).map(|_| ()).map_err(err)
                };
                match &self.state {
                    State::AdamW { exp_avg, exp_avg_sq, step, .. } => {
                        for (p, (m, v)) in self.params.iter().zip(exp_avg.iter().zip(exp_avg_sq)) {
                            put(&format!("{}.exp_avg", p.name), &p.own(m, r))?;
                            put(&format!("{}.exp_avg_sq", p.name), &p.own(v, r))?;
                        }
                        put("step", &step.get(r))?;
                    }
                    State::Sgd { buffers, step } => {
                        for (p, b) in self.params.iter().zip(buffers) {
                            put(&format!("{}.momentum_buffer", p.name), &p.own(b, r))?;
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
            match self.form {
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
        tch::no_grad(|| self.clip().and_then(|()| self.update(lrs))).map_err(err)?;
        let losses = losses.to_kind(Kind::Float);
        let _ = self.loss_sum.f_add_(&(&losses * len as f64)).map_err(err)?;
        Ok(losses)
    }

    /// `optim.grad_clip` per run, as `torch.nn.utils.clip_grad_norm_` over that run's gradients alone.
    fn clip(&self) -> Result<(), tch::TchError> {
        let Some(max) = &self.per_run.clip else { return Ok(()) };
        let grads: Vec<Tensor> = self.params.iter().map(|p| p.value.grad()).collect();
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
        let coef = (max / (sq.f_sqrt()? + 1e-6)).f_clamp_max(1.0)?;
        for g in &grads {
            let _ = g.shallow_clone().f_mul_(&along(&coef, g))?;
        }
        Ok(())
    }

    fn update(&mut self, lrs: &[f64]) -> Result<(), tch::TchError> {
        let grads: Vec<Tensor> = self.params.iter().map(|p| p.value.grad()).collect();
        match &mut self.state {
            State::AdamW { exp_avg, exp_avg_sq, step, scratch: Some(scratch) } => {
                let adam = Adam { grads: &grads, exp_avg, exp_avg_sq, step, scratch };
                adam.batched(&self.params, &self.optim[0], &self.per_run, lrs, self.device)?;
            }
            State::AdamW { exp_avg, exp_avg_sq, step, .. } => {
                let values = self.params.iter().map(|p| p.value.shallow_clone()).collect::<Vec<_>>();
                let _ = step.f_add_scalar_(1.0)?;
                // torch's fused AdamW kernel on each run's slices: the unfused optimizer's arithmetic exactly.
                for (r, (o, &lr)) in self.optim.iter().zip(lrs).enumerate() {
                    let r = r as i64;
                    for decay in [true, false] {
                        let pick: Vec<usize> = (0..values.len()).filter(|&i| self.params[i].decay == decay).collect();
                        if pick.is_empty() {
                            continue;
                        }
                        let slice = |v: &[Tensor]| -> Vec<Tensor> { pick.iter().map(|&i| v[i].get(r)).collect() };
                        let steps: Vec<Tensor> = pick.iter().map(|_| step.get(r)).collect();
                        let wd = if decay { o.weight_decay } else { 0.0 };
                        let (ps, gs, ms, vs) = (slice(&values), slice(&grads), slice(exp_avg), slice(exp_avg_sq));
                        counts::add(counts::OPTIMIZER_CALLS, 1);
                        crate::ffi::fused_adamw(&ps, &gs, &ms, &vs, &steps, lr, o.betas, wd, o.eps, None)
                            .map_err(|e| tch::TchError::Torch(e.to_string()))?;
                    }
                }
            }
            State::Sgd { buffers, step } => {
                let per = &self.per_run;
                // The one tensor a step sends: every run's learning rate, negated.
                let neg_lr = upload(&lrs.iter().map(|l| -l).collect::<Vec<_>>(), self.device, counts::HOST_TENSORS);
                let nesterov = self.optim.first().is_some_and(|o| o.nesterov);
                for (i, (param, g)) in self.params.iter().zip(&grads).enumerate() {
                    let p = &param.value;
                    let mut g = g.shallow_clone();
                    if param.decay && per.any_decay {
                        g = g.f_add(&(p * along(&per.weight_decay, p)))?;
                    }
                    if let Some(buf) = buffers.get_mut(i) {
                        if *step == 0 {
                            buf.f_copy_(&g)?;
                        } else {
                            let _ = buf.f_mul_(&along(&per.momentum, p))?.f_add_(&(&g * along(&per.damp, p)))?;
                        }
                        g = if nesterov { g.f_add(&(&*buf * along(&per.momentum, p)))? } else { buf.shallow_clone() };
                    }
                    let _ = p.shallow_clone().f_add_(&(g * along(&neg_lr, p)))?;
                }
                *step += 1;
            }
        }
        Ok(())
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

/// Test-only (`test-hooks`): what the fused steps of this process built and launched, for the bench that counts
/// them (`benches/fused_counts.rs`). With `SPOTRUN_TEST_FUSED_COUNTS` set, [`counts::report`] prints the totals
/// per step at every chunk's end as one `fused counts:` line on stderr. Without the feature every call is a no-op.
pub(super) mod counts {
    /// Fused steps taken.
    pub(crate) const STEPS: usize = 0;
    /// Tensors built from host values and sent to the device during a step (each a host-to-device copy on a GPU).
    pub(crate) const HOST_TENSORS: usize = 1;
    /// Calls of torch's fused optimizer kernel (`_fused_adamw_`).
    pub(crate) const OPTIMIZER_CALLS: usize = 2;
    /// Loss computations (`Task::loss`), the one that is backpropagated included.
    pub(crate) const LOSS_CALLS: usize = 3;
    /// Tensors built from host values and sent to the device by [`super::Fused::gather`], once per chunk.
    pub(crate) const GATHER_TENSORS: usize = 4;

    #[cfg(feature = "test-hooks")]
    static COUNTS: [std::sync::atomic::AtomicU64; 5] = [const { std::sync::atomic::AtomicU64::new(0) }; 5];

    /// Adds `n` to counter `which`.
    pub(crate) fn add(which: usize, n: u64) {
        #[cfg(feature = "test-hooks")]
        COUNTS[which].fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        let _ = (which, n);
    }

    /// Prints the counts of the chunk that ends (per step, and those of its gather), and resets them, when `SPOTRUN_TEST_FUSED_COUNTS` is set.
    pub(crate) fn report(runs: usize) {
        #[cfg(feature = "test-hooks")]
        if std::env::var_os("SPOTRUN_TEST_FUSED_COUNTS").is_some() {
            let take = |i: usize| COUNTS[i].swap(0, std::sync::atomic::Ordering::Relaxed);
            let (steps, host, optim, loss) = (take(STEPS), take(HOST_TENSORS), take(OPTIMIZER_CALLS), take(LOSS_CALLS));
            let per = |n: u64| n as f64 / steps.max(1) as f64;
            eprintln!(
                "fused counts: {runs} runs, {steps} steps; at the chunk's start: {} host tensors; per step: {} host \
                 tensors, {} optimizer kernel calls, {} loss calls",
                take(GATHER_TENSORS),
                per(host),
                per(optim),
                per(loss)
            );
        }
        let _ = runs;
    }
}

#[cfg(test)]
mod tests {
    use super::{form, Form};
    use crate::config::FusedStep;

    #[test]
    fn auto_is_batched_on_cuda_only_and_batched_needs_uniform_runs() {
        use FusedStep::{Auto, Batched, PerRun};
        // (setting, on CUDA, uniform) -> form
        let cases = [
            ((Auto, false, true), Form::PerRun),
            ((Auto, true, true), Form::Batched),
            ((Auto, true, false), Form::PerRun),
            ((Batched, false, true), Form::Batched),
            ((Batched, true, true), Form::Batched),
            ((Batched, true, false), Form::PerRun),
            ((PerRun, true, true), Form::PerRun),
            ((PerRun, false, true), Form::PerRun),
        ];
        for ((s, cuda, uniform), want) in cases {
            assert_eq!(form(s, cuda, uniform), want, "{s:?}, cuda {cuda}, uniform {uniform}");
        }
    }
}
