//! What a `spotrun train` run does at the epoch loop's events ([`super::epochs::Events`]): progress and
//! TensorBoard through its [`Observer`], checkpoints as its [`SavePolicy`] says through its [`Saver`], the best
//! epoch's weights, early stopping and the sweep's pruning hook. A fused group's members use it unchanged.
use std::path::PathBuf;
use std::time::Instant;

use tch::Device;

use super::epochs::{Events, StepInfo};
use super::fit::Trainer;
use super::metrics::EpochMetrics;
use super::observer::Observer;
use super::policy::{Event, SavePolicy};
use super::saver::Saver;
use super::types::{EpochHook, LoopEnd, StopAt};
use crate::checkpoint::{self, SaveReason};
use crate::config::Config;
use crate::error::Result;

/// One run's components at the loop's events.
pub(super) struct RunEvents<'r, 'a> {
    pub cfg: &'a Config,
    pub saver: &'r mut Saver<'a>,
    pub obs: &'r Observer,
    pub policy: SavePolicy,
    pub epoch_hook: Option<EpochHook>,
    pub stop_at: Option<StopAt>,
    pub run_dir: PathBuf,
}

impl Events for RunEvents<'_, '_> {
    fn step(&mut self, s: &StepInfo) {
        let st = s.stepped;
        self.obs.progress.step(st.step, s.epoch + 1, st.loss, s.rate);
        self.obs.step(st.step, st.loss, st.lr);
    }

    fn save_due(&self, s: &StepInfo) -> Option<SaveReason> {
        let (step, batches_done, steps_per_epoch) = (s.stepped.step, s.done, s.steps_per_epoch);
        let seconds_since_save = self.saver.seconds_since_save();
        self.policy.decide(Event::Step { step, batches_done, steps_per_epoch, seconds_since_save })
    }

    fn save(&mut self, t: &Trainer, cursor: (usize, usize), history: &[EpochMetrics], why: SaveReason) -> Result<()> {
        self.obs.before_save();
        let started = Instant::now();
        self.saver.save(t, cursor, history, why)?;
        self.obs.saved(t.step, started.elapsed().as_secs_f64());
        Ok(())
    }

    /// The best epoch, the record, early stopping or pruning, and the epoch's save.
    fn epoch(&mut self, t: &Trainer, m: EpochMetrics, history: &mut Vec<EpochMetrics>) -> Result<Option<LoopEnd>> {
        let epoch = m.epoch - 1;
        let m = self.mark_best(t, m, history)?;
        self.obs.epoch(&m)?;
        history.push(m);
        let stop = self.stop_after(epoch, history);
        let last = epoch + 1 == self.cfg.train.epochs || stop.is_some();
        let why = match stop {
            Some(LoopEnd::Paused) => Some(SaveReason::Pause),
            _ => self.policy.decide(Event::EpochEnd { epochs_done: epoch + 1, last }),
        };
        if let Some(why) = why {
            self.save(t, (epoch + 1, 0), history, why)?;
        }
        Ok(stop.or(last.then_some(LoopEnd::Completed)))
    }
}

impl RunEvents<'_, '_> {
    /// `checkpoint.keep_best`: records the best epoch so far in `m`, and when `m` is it, writes the weights it was
    /// evaluated with (the EMA's with `train.ema_eval`) to `RUN_DIR/best.safetensors`, before the epoch's
    /// checkpoint (a resume re-runs the epoch and writes it again).
    fn mark_best(&self, t: &Trainer, mut m: EpochMetrics, history: &[EpochMetrics]) -> Result<EpochMetrics> {
        let Some(metric) = self.cfg.checkpoint.keep_best else { return Ok(m) };
        let all: Vec<EpochMetrics> = history.iter().cloned().chain([m.clone()]).collect();
        let best = super::early::best(&all, metric).map(|b| b.epoch);
        m.best_epoch = best;
        if best == Some(m.epoch) {
            self.obs.ensure_owner()?;
            let evaluated = match (self.cfg.train.ema_eval, t.ema_weights()) {
                (true, Some(ema)) => ema,
                _ => t.weights(),
            };
            let host: Vec<(String, tch::Tensor)> =
                evaluated.into_iter().map(|(n, t)| (n, t.detach().to_device(Device::Cpu).contiguous())).collect();
            checkpoint::save(&self.run_dir.join("best.safetensors"), &host)?;
        }
        Ok(m)
    }

    /// Whether the run ends after `epoch`: early stopping, else the scheduler's stop, else the pruning hook (never
    /// after the last epoch).
    fn stop_after(&self, epoch: usize, metrics: &[EpochMetrics]) -> Option<LoopEnd> {
        let cfg = self.cfg;
        if let Some(es) = cfg.train.early_stopping.as_ref().filter(|es| super::early::should_stop(metrics, es)) {
            let what = es.metric.as_str();
            self.obs.line(&format!("early stopping after epoch {}: {what} stopped improving", epoch + 1));
            return Some(LoopEnd::EarlyStopped);
        }
        if let Some(s) = self.stop_at.filter(|s| epoch + 1 == s.epochs && s.epochs < cfg.train.epochs) {
            let (verb, end) = if s.finish { ("stopped", LoopEnd::Stopped) } else { ("paused", LoopEnd::Paused) };
            self.obs.line(&format!("{verb} by the sweep's scheduler after epoch {}", epoch + 1));
            return Some(end);
        }
        let hook = self.epoch_hook.as_ref();
        if epoch + 1 < cfg.train.epochs && hook.is_some_and(|h| (h.0)(metrics)) {
            self.obs.line(&format!("pruned after epoch {}", epoch + 1));
            return Some(LoopEnd::Pruned);
        }
        None
    }
}
