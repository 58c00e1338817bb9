//! The trainer: one run's model, optimizer, scaler and EMA, and what it does at one step ([`Trainer::train_batch`]:
//! shuffled large batches, mixed precision, no host sync per step) and at an epoch's end (evaluation, metrics).
//! Task generic: batches, loss and metrics come from a [`Task`], outputs from a [`Model`]. The epoch loop that
//! drives it is [`super::epochs`]; this module imports none of the loop's stages.
//!
//! Determinism contract (what exact resume relies on): the epoch order is a function of (seed, epoch); the
//! global RNG is reseeded from (seed, epoch, batch) before every step, so dropout masks do not depend on what ran
//! before in this process; the LR is a pure function of the step. Given the weights, the optimizer and scaler
//! state and (epoch, batch), the rest of the run is determined.
use std::time::Instant;

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::ema::Ema;
use super::metrics::EpochMetrics;
use crate::amp::{self, Autocast, GradScaler, Resolved, ScalerConfig};
use crate::config::{Config, Decay};
use crate::data::{Data, SplitMix64};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::optim::{self, Optimizer};
use crate::task::{self, Batch, Eval, Split, Task};

/// Tensors with their `state_dict` names, as a checkpoint stores them.
pub(super) type NamedTensors = Vec<(String, Tensor)>;

/// Drives one model over one dataset with one config. Build it, then call [`Trainer::fit`].
pub struct Trainer<'a> {
    pub(super) cfg: &'a Config,
    pub(super) model: &'a dyn Model,
    pub(super) task: Box<dyn Task + 'a>,
    pub(super) device: Device,
    pub(super) precision: Resolved,
    pub(super) names: Vec<String>,
    pub(super) params: Vec<Tensor>,
    pub(super) optimizer: Box<dyn Optimizer>,
    pub(super) scaler: Option<GradScaler>,
    /// Optimizer steps taken so far.
    pub step: u64,
    /// Sum of (batch loss × batch size) over the epoch in progress, and fp16 steps skipped in it (on the device).
    pub(super) loss_sum: Tensor,
    pub(super) skipped: Tensor,
    pub(super) ema: Option<Ema>,
    /// The loss of the last step, when it was read back (every `train.log_every` steps), and that step's LR.
    pub last_loss: Option<f64>,
    pub last_lr: f64,
}

/// What [`Trainer::fit`] produced.
pub struct FitOutcome {
    pub metrics: Vec<EpochMetrics>,
}

/// One run's optimizer step, as the epoch loop sees it: the step count after it, its LR, its loss when read back,
/// and the items it trained.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stepped {
    pub step: u64,
    pub lr: f64,
    pub loss: Option<f64>,
    pub items: usize,
}

impl<'a> Trainer<'a> {
    /// `vs` holds the model's variables (unless the model owns them: [`Model::parameters`]); their names (sorted)
    /// name the optimizer state.
    pub fn new(cfg: &'a Config, vs: &VarStore, model: &'a dyn Model, data: &'a Data, device: Device) -> Trainer<'a> {
        let mut named: Vec<(String, Tensor)> =
            model.parameters().unwrap_or_else(|| vs.variables().into_iter().collect());
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let (names, params): (Vec<String>, Vec<Tensor>) = named.into_iter().unzip();
        let decays: Vec<bool> = params.iter().map(|p| cfg.decay() == Decay::All || p.dim() >= 2).collect();
        let optimizer = optim::build(&cfg.optim, &names, &params, &decays);
        let precision = amp::resolve(cfg.train.precision, device.is_cuda());
        let scaler = (precision == Resolved::Fp16).then(|| GradScaler::new(ScalerConfig::default(), device));
        let loss_sum = Tensor::zeros([], (Kind::Float, device));
        let skipped = Tensor::zeros([], (Kind::Float, device));
        let task = task::build(cfg, data);
        let ema = cfg.train.ema.as_ref().map(|e| Ema::new(e, &params));
        Trainer {
            cfg,
            model,
            task,
            device,
            precision,
            names,
            params,
            optimizer,
            scaler,
            step: 0,
            loss_sum,
            skipped,
            ema,
            last_loss: None,
            last_lr: cfg.optim.lr,
        }
    }

    pub fn precision(&self) -> Resolved {
        self.precision
    }

    /// Training items per epoch: a full pass, or `train.steps_per_epoch` batches when that is shorter.
    pub fn epoch_len(&self) -> usize {
        let cap = self.cfg.train.steps_per_epoch as usize;
        let full = self.task.train_len();
        if cap == 0 {
            full
        } else {
            full.min(cap.saturating_mul(self.cfg.train.batch_size))
        }
    }

    pub fn steps_per_epoch(&self) -> u64 {
        self.epoch_len().div_ceil(self.cfg.train.batch_size) as u64
    }

    pub fn total_steps(&self) -> u64 {
        self.steps_per_epoch() * self.cfg.train.epochs as u64
    }

    /// One optimizer step on batch `b` (0-based) of epoch `epoch`, whose item order is `order`: the RNG reseeded
    /// from (seed, epoch, b), forward, backward, the update, the epoch's loss sum, the EMA. The loss is read back
    /// (one host sync) only on the steps `train.log_every` names.
    pub(super) fn train_batch(&mut self, epoch: usize, b: usize, order: &Tensor) -> Result<Stepped> {
        let (n, bs, seed) = (self.epoch_len(), self.cfg.train.batch_size, self.cfg.train.seed);
        let (start, len) = (b * bs, bs.min(n - b * bs));
        tch::manual_seed(SplitMix64::keyed(&[seed, epoch as u64, b as u64]).next_u64() as i64 >> 1);
        let idx = order.narrow(0, start as i64, len as i64);
        let batch = self.task.gather(&idx, Split::Train, self.device);
        let lr = optim::lr_at(&self.cfg.schedule, self.cfg.optim.lr, self.step, self.total_steps());
        let loss = self.train_step(&batch, lr)?;
        let _ = self.loss_sum.f_add_(&(loss.detach().to_kind(Kind::Float) * len as f64))?;
        if let Some(s) = &self.scaler {
            let _ = self.skipped.f_add_(s.found_inf())?;
        }
        self.step += 1;
        if let Some(ema) = &mut self.ema {
            ema.after_step(&self.params, self.step);
        }
        let loss = if self.logs_at(self.step) { Some(loss.f_double_value(&[])?) } else { None };
        Ok(Stepped { step: self.step, lr, loss, items: len })
    }

    /// Whether `train.log_every` reads the loss back at `step`.
    pub(super) fn logs_at(&self, step: u64) -> bool {
        let e = self.cfg.train.log_every;
        e > 0 && step.is_multiple_of(e)
    }

    /// The item order of epoch `epoch`: a function of (seed, epoch) only, cut to [`Trainer::epoch_len`].
    pub(super) fn epoch_order(&self, epoch: usize) -> Tensor {
        self.task.epoch_order(self.cfg.train.seed, epoch as u64).narrow(0, 0, self.epoch_len() as i64)
    }

    /// The LR of the step before this one (what an epoch with no step left reports).
    pub(super) fn previous_lr(&self) -> f64 {
        optim::lr_at(&self.cfg.schedule, self.cfg.optim.lr, self.step.saturating_sub(1), self.total_steps())
    }

    /// Zeroes the epoch's accumulators (the loss sum and the fp16 steps skipped) at the start of an epoch.
    pub(super) fn begin_epoch(&mut self) -> Result<()> {
        let _ = self.loss_sum.f_zero_()?;
        let _ = self.skipped.f_zero_()?;
        Ok(())
    }

    /// The metrics of epoch `epoch` (0-based) once its steps are done: the mean training loss, an evaluation (this
    /// trainer's, unless `eval` brings one made elsewhere: a fused group's), and the speed of the `trained` items
    /// since `t0`. `lr` is the LR of its last step.
    pub(super) fn end_epoch(
        &mut self,
        epoch: usize,
        lr: f64,
        trained: usize,
        t0: Instant,
        eval: Option<Eval>,
    ) -> Result<EpochMetrics> {
        let n = self.epoch_len();
        let train_loss = self.loss_sum.f_double_value(&[])? / n as f64;
        let train_seconds = t0.elapsed().as_secs_f64();
        self.check_finite(train_loss, epoch)?;
        let eval = match eval {
            Some(e) => e,
            None => self.evaluate()?,
        };
        let samples_per_sec = trained as f64 / train_seconds.max(1e-9);
        Ok(EpochMetrics {
            epoch: epoch + 1,
            step: self.step,
            train_loss,
            val_loss: eval.val_loss,
            val_accuracy: eval.val_accuracy,
            val_ppl: eval.val_ppl,
            val_mae: eval.val_mae,
            lr,
            samples_per_sec,
            tokens_per_sec: self.task.tokens_per_item().map(|t| samples_per_sec * t as f64),
            best_epoch: None,
            epoch_seconds: t0.elapsed().as_secs_f64(),
            skipped_steps: match &self.scaler {
                Some(_) => Some(self.skipped.f_double_value(&[])? as u64),
                None => None,
            },
        })
    }

    /// Items (tokens for a language model) per second, and their unit, for the progress bar.
    pub(super) fn rate(&self, trained: usize, seconds: f64) -> (f64, &'static str) {
        let per = trained as f64 / seconds.max(1e-9);
        match self.task.tokens_per_item() {
            Some(t) => (per * t as f64, "tokens"),
            None => (per, "samples"),
        }
    }

    /// Forward, backward, (unscale), (clip), optimizer step. Returns the batch loss (on the device).
    fn train_step(&mut self, batch: &Batch, lr: f64) -> Result<Tensor> {
        crate::ffi::grads_to_none(&self.params).map_err(|e| Error::Runtime(e.to_string()))?;
        let loss = self.forward_backward(batch)?;
        let grads: Vec<Tensor> = self.params.iter().map(Tensor::grad).collect();
        if let Some(s) = &mut self.scaler {
            s.unscale(&grads).map_err(|e| Error::Runtime(e.to_string()))?;
        }
        if let Some(max) = self.cfg.optim.grad_clip {
            let _ = optim::clip_grad_norm(&grads, max)?;
        }
        let found_inf = self.scaler.as_ref().map(GradScaler::found_inf);
        self.optimizer.step(&self.params, lr, found_inf).map_err(|e| Error::Runtime(e.to_string()))?;
        if let Some(s) = &mut self.scaler {
            s.update()?;
        }
        Ok(loss)
    }

    /// The gradients of the whole batch, summed over `train.accumulate` micro-batches of `batch_size /
    /// accumulate` items, each micro-batch's mean loss weighted by its share of the batch: the gradient of the
    /// batch's mean loss, as without accumulation (not a mean of per-micro-batch means). Returns the batch loss.
    fn forward_backward(&mut self, batch: &Batch) -> Result<Tensor> {
        let n = batch.x.size()[0];
        let parts = self.cfg.train.accumulate.max(1) as i64;
        let chunk = ((n + parts - 1) / parts).max(1);
        let mut total: Option<Tensor> = None;
        for start in (0..n).step_by(chunk as usize) {
            let len = chunk.min(n - start);
            let (x, y) = (batch.x.narrow(0, start, len), batch.y.narrow(0, start, len));
            let loss = {
                let _ac = Autocast::enter(self.precision, self.device.is_cuda())
                    .map_err(|e| Error::Runtime(e.to_string()))?;
                let l = self.task.loss(&self.model.forward_t(&x, true), &y);
                if len == n {
                    l
                } else {
                    l * (len as f64 / n as f64)
                }
            };
            match &mut self.scaler {
                Some(s) => s.scale(&loss).f_backward()?,
                None => loss.f_backward()?,
            }
            let loss = loss.detach();
            total = Some(match total {
                Some(t) => t + loss,
                None => loss,
            });
        }
        total.ok_or_else(|| Error::Runtime("an empty batch".into()))
    }

    /// The task's metrics on the validation items (`train.eval_batches` caps them), with one host sync.
    pub fn evaluate(&self) -> Result<Eval> {
        match (&self.ema, self.cfg.train.ema_eval) {
            (Some(ema), true) => ema.with_averages(&self.params, || self.evaluate_current()),
            _ => self.evaluate_current(),
        }
    }

    /// [`Trainer::evaluate`] with the weights as they are.
    fn evaluate_current(&self) -> Result<Eval> {
        let bs = self.cfg.train.eval_batch_size;
        let cap = (self.cfg.train.eval_batches > 0).then(|| (self.cfg.train.eval_batches as usize).saturating_mul(bs));
        let order = self.task.val_order(cap);
        let n = order.size()[0] as usize;
        let mut sums: Vec<Tensor> = Vec::new();
        tch::no_grad(|| -> Result<()> {
            let _ac =
                Autocast::enter(self.precision, self.device.is_cuda()).map_err(|e| Error::Runtime(e.to_string()))?;
            for start in (0..n).step_by(bs) {
                let idx = order.narrow(0, start as i64, bs.min(n - start) as i64);
                let batch = self.task.gather(&idx, Split::Val, self.device);
                let out = self.model.forward_t(&batch.x, false);
                let part = self.task.eval_sums(&out, &batch.y);
                if sums.is_empty() {
                    sums = part;
                } else {
                    for (s, p) in sums.iter_mut().zip(&part) {
                        let _ = s.f_add_(p)?;
                    }
                }
            }
            Ok(())
        })?;
        let host: Vec<f64> = sums.iter().map(|t| t.f_double_value(&[])).collect::<std::result::Result<_, _>>()?;
        Ok(self.task.finish_eval(&host, n))
    }

    pub(super) fn check_finite(&self, v: f64, epoch: usize) -> Result<()> {
        if v.is_finite() || self.precision == Resolved::Fp16 {
            return Ok(());
        }
        Err(Error::Diverged { value: v, epoch: epoch + 1, step: self.step })
    }
}
