//! The fused group's optimizer (see [`super::fused`]): every run's AdamW or SGD state stacked with the run
//! dimension first, its per-run numbers as `[R]` device tensors, per-run gradient clipping, and the step in either
//! [`Form`]: per run (torch's fused AdamW kernel on each run's slices, the unfused arithmetic) or batched (one
//! kernel call over the stacked tensors, whatever R is). Also the test-only step [`counts`].
//!
//! Imports the trainer (`fit`) for the members' state; imported by `fused` and, for the counts, `group`. Owns no
//! files.
use std::collections::HashMap;

use tch::{Device, Kind, Tensor};

use super::fit::Trainer;
use crate::config::{FusedStep, OptimConfig, OptimKind};

/// How a fused step launches its AdamW update and its losses: see the module header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Form {
    PerRun,
    Batched,
}

/// The form a group steps in: `train.fused_step` as set; `auto` per run on the CPU (where both forms take the
/// same time and per run is the unfused arithmetic: BENCHMARKS.md "Fused step, counted") and batched on CUDA
/// (chosen by launch count; `scripts/gpu-check.sh` times both). Batched needs `uniform`: every run with the same
/// AdamW betas, eps and step count (one kernel call takes them as scalars); a group without it steps per run.
pub(super) fn form(setting: FusedStep, cuda: bool, uniform: bool) -> Form {
    let batched = match setting {
        FusedStep::PerRun => false,
        FusedStep::Batched => true,
        FusedStep::Auto => cuda,
    };
    if batched && uniform {
        Form::Batched
    } else {
        Form::PerRun
    }
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

/// One parameter of every run, stacked `[R, ...]` (a leaf), and how the optimizer and `Fused::scatter` treat it.
pub(super) struct Param {
    /// The `state_dict` name.
    pub(super) name: String,
    pub(super) value: Tensor,
    /// `optim.decay` applies weight decay to it.
    pub(super) decay: bool,
    /// Held as `[R, in, out]`, the transpose of each run's `[out, in]` (a linear layer's weight): `bmm` on
    /// contiguous operands is ~35% faster than on transposed views (measured on the CPU). Its optimizer state
    /// follows.
    pub(super) transposed: bool,
}

impl Param {
    /// Run `r`'s slice of `t` (this parameter's value or optimizer state), in PyTorch's layout.
    pub(super) fn own(&self, t: &Tensor, r: i64) -> Tensor {
        if self.transposed {
            t.get(r).tr()
        } else {
            t.get(r)
        }
    }
}

/// The per-run numbers the fused step multiplies by, each `[R]` float32 on the training device: built once by
/// `Fused::gather`, so that a step sends nothing from the host but its learning rates (SGD: one `[R]` tensor;
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
    fn new(optim: &[OptimConfig], device: Device) -> PerRun {
        let of = |f: &dyn Fn(&OptimConfig) -> f64| {
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

/// `g` (a parameter's gradient) with `p`'s strides: itself when they agree (autograd lays a dense leaf's gradient
/// out as the leaf), else a copy. The fused AdamW kernel walks its tensors' memory in order, and on CUDA refuses
/// lists whose tensors' strides differ.
fn laid_out_as(g: &Tensor, p: &Tensor) -> Result<Tensor, tch::TchError> {
    if g.stride() == p.stride() {
        return Ok(g.shallow_clone());
    }
    let out = p.f_empty_like()?;
    out.shallow_clone().f_copy_(g)?;
    Ok(out)
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
        o: &OptimConfig,
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

/// The stacked optimizer of a fused group: built by [`FusedOptim::stack`] at a chunk's start.
pub(super) struct FusedOptim {
    state: State,
    /// Per-run hyperparameters, one entry per run.
    optim: Vec<OptimConfig>,
    /// The same numbers as `[R]` tensors on the device, built once here (no host copy in a step).
    per_run: PerRun,
    form: Form,
}

impl FusedOptim {
    /// The members' optimizer states, stacked in the layout of `params`, with their per-run numbers on `device`.
    pub(super) fn stack(
        members: &[&Trainer],
        params: &[Param],
        form: Form,
        device: Device,
    ) -> Result<FusedOptim, String> {
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
                    let t = if p.transposed { t.transpose(1, 2).contiguous() } else { t };
                    // The kernel reads state and parameter element by element in memory order.
                    laid_out_as(&t, &p.value).map_err(|e| e.to_string())
                })
                .collect()
        };
        let step = pick("step")?;
        let first = &members[0].cfg.optim;
        let state = match first.kind {
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
        };
        let optim: Vec<OptimConfig> = members.iter().map(|t| t.cfg.optim.clone()).collect();
        Ok(FusedOptim { state, per_run: PerRun::new(&optim, device), optim, form })
    }

    /// Run `r`'s optimizer state, named as its own optimizer names it, in PyTorch's layout.
    pub(super) fn run_state(&self, params: &[Param], r: i64) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        match &self.state {
            State::AdamW { exp_avg, exp_avg_sq, step, .. } => {
                for (p, (m, v)) in params.iter().zip(exp_avg.iter().zip(exp_avg_sq)) {
                    out.push((format!("{}.exp_avg", p.name), p.own(m, r)));
                    out.push((format!("{}.exp_avg_sq", p.name), p.own(v, r)));
                }
                out.push(("step".into(), step.get(r)));
            }
            State::Sgd { buffers, step } => {
                for (p, b) in params.iter().zip(buffers) {
                    out.push((format!("{}.momentum_buffer", p.name), p.own(b, r)));
                }
                out.push(("step".into(), Tensor::from(*step)));
            }
        }
        out
    }

    pub(super) fn form(&self) -> Form {
        self.form
    }

    pub(super) fn runs(&self) -> usize {
        self.optim.len()
    }

    /// `optim.grad_clip` per run, as `torch.nn.utils.clip_grad_norm_` over that run's gradients alone.
    pub(super) fn clip(&self, params: &[Param]) -> Result<(), tch::TchError> {
        let Some(max) = &self.per_run.clip else { return Ok(()) };
        let grads: Vec<Tensor> = params.iter().map(|p| p.value.grad()).collect();
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

    /// One optimizer step of every run: `lrs[r]` is run r's learning rate.
    pub(super) fn update(&mut self, params: &[Param], lrs: &[f64], device: Device) -> Result<(), tch::TchError> {
        let grads: Vec<Tensor> =
            params.iter().map(|p| laid_out_as(&p.value.grad(), &p.value)).collect::<Result<_, _>>()?;
        match &mut self.state {
            State::AdamW { exp_avg, exp_avg_sq, step, scratch: Some(scratch) } => {
                let adam = Adam { grads: &grads, exp_avg, exp_avg_sq, step, scratch };
                adam.batched(params, &self.optim[0], &self.per_run, lrs, device)?;
            }
            State::AdamW { exp_avg, exp_avg_sq, step, .. } => {
                let values = params.iter().map(|p| p.value.shallow_clone()).collect::<Vec<_>>();
                let _ = step.f_add_scalar_(1.0)?;
                // torch's fused AdamW kernel on each run's slices: the unfused optimizer's arithmetic exactly.
                for (r, (o, &lr)) in self.optim.iter().zip(lrs).enumerate() {
                    let r = r as i64;
                    for decay in [true, false] {
                        let pick: Vec<usize> = (0..values.len()).filter(|&i| params[i].decay == decay).collect();
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
                let neg_lr = upload(&lrs.iter().map(|l| -l).collect::<Vec<_>>(), device, counts::HOST_TENSORS);
                let nesterov = self.optim.first().is_some_and(|o| o.nesterov);
                for (i, (param, g)) in params.iter().zip(&grads).enumerate() {
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

    /// A gradient laid out otherwise than its parameter (here: transposed, as a channels-last one would be) is
    /// copied into the parameter's layout with the same values; one that agrees is passed on as it is.
    #[test]
    fn a_gradient_gets_its_parameters_layout() {
        use tch::{Device, Kind, Tensor};
        let p = Tensor::zeros([2, 3, 4], (Kind::Float, Device::Cpu));
        let g = Tensor::arange(24, (Kind::Float, Device::Cpu)).reshape([2, 4, 3]).transpose(1, 2);
        assert_ne!(g.stride(), p.stride());
        let out = super::laid_out_as(&g, &p).unwrap();
        assert_eq!(out.stride(), p.stride());
        assert!(out.equal(&g));
        let same = super::laid_out_as(&out, &p).unwrap();
        assert_eq!(same.data_ptr(), out.data_ptr(), "no copy when the layouts agree");
    }

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
