//! One run, unfused: [`Trainer::fit`] (the library's: no checkpoints, no signals) and `spotrun train`, one run
//! through the stages ([`super::prepare`], [`super::open`], [`super::attach`], the
//! epoch loop [`super::epochs`], [`super::outputs`]) with the unfused strategy, [`Unfused`]: the run's own
//! trainer takes each step (dropout reseeding, EMA, fp16 scaling and accumulation live there). Its sibling for
//! fused groups is [`super::group`]; neither imports the other.
use std::time::Instant;

use tch::Tensor;

use super::attach::{self, Attach, Attached};
use super::epochs::{self, Events, Member, StepInfo, Strategy};
use super::fit::{FitOutcome, Stepped, Trainer};
use super::metrics::EpochMetrics;
use super::outputs::{self, Ending};
use super::process::{self, Deterministic};
use super::progress::Progress;
use super::types::{LoopEnd, TrainOptions, TrainSummary};
use super::{open, prepare};
use crate::checkpoint::SaveReason;
use crate::error::{Error, Result};
use crate::task::Eval;

/// Runs `spotrun train` end to end: bad input leaves files untouched, and the same command starts a run, resumes
/// it from the newest checkpoint that verifies, or reports that it already finished.
pub fn train(opts: &TrainOptions) -> Result<TrainSummary> {
    let signals = process::signals()?;
    let loaded = prepare::load_config(opts)?;
    let _deterministic = Deterministic::set(loaded.config.train.deterministic)?;
    let mut p = prepare::prepare(loaded, opts)?;
    let (mut o, store) = open::open(&mut p, opts)?;
    let mut a = match attach::attach(&p, &mut o, store, opts, signals, false)? {
        Attach::Train(a) => *a,
        Attach::Finished(summary) => return Ok(summary),
    };
    let started = Instant::now();
    let (end, history) = {
        let mut members = [a.member(&p, opts)];
        epochs::run(&mut members, &mut Unfused::default(), &|| signals.received(), &|_| {});
        let [m] = members;
        (m.end, m.history)
    };
    let end = end.ok_or_else(|| Error::Runtime("the run was never started".into()))??;
    let Attached { trainer, saver, obs, .. } = a;
    outputs::conclude(&p, Ending { trainer: &trainer, saver, obs }, end, history, started)
}

/// Each run steps with its own trainer (one run at a time).
#[derive(Default)]
pub(super) struct Unfused {
    /// The epoch in progress and its item order (a function of the seed and the epoch; one run per `Unfused`).
    epoch: usize,
    order: Option<Tensor>,
}

impl Strategy for Unfused {
    fn width(&self) -> usize {
        1
    }

    fn doing(&self, first: &Trainer, _: usize, epoch: usize) -> String {
        let bs = first.cfg.train.batch_size;
        format!("training epoch {} (train.batch_size = {bs}, device {:?})", epoch + 1, first.device)
    }

    /// The order is made once an epoch (chunks end at every mid-epoch save), as the run's own loop did.
    fn begin(&mut self, runs: &[&Trainer], epoch: usize) -> Result<()> {
        if self.order.is_none() || self.epoch != epoch {
            (self.epoch, self.order) = (epoch, runs.first().map(|t| t.epoch_order(epoch)));
        }
        Ok(())
    }

    fn step(&mut self, runs: &mut [&mut Trainer], b: usize) -> Result<Vec<Stepped>> {
        let (Some(order), [t]) = (&self.order, runs) else {
            return Err(Error::Runtime("an unfused step takes one run".into()));
        };
        t.train_batch(self.epoch, b, order).map(|s| vec![s])
    }

    fn end(&mut self, _: &mut [&mut Trainer], _: bool) -> Result<Option<Vec<Eval>>> {
        Ok(None)
    }
}

/// [`Trainer::fit`]'s events: progress, and the caller's callback after every epoch; no checkpoints.
struct FitEvents<'p, 'f> {
    progress: &'p Progress,
    on_epoch: &'f mut dyn FnMut(&EpochMetrics) -> Result<()>,
    /// The last epoch to train (0-based).
    last: usize,
}

impl Events for FitEvents<'_, '_> {
    fn step(&mut self, s: &StepInfo) {
        self.progress.step(s.stepped.step, s.epoch + 1, s.stepped.loss, s.rate);
    }

    fn save_due(&self, _: &StepInfo) -> Option<SaveReason> {
        None
    }

    fn save(&mut self, _: &Trainer, _: (usize, usize), _: &[EpochMetrics], _: SaveReason) -> Result<()> {
        Ok(())
    }

    fn epoch(&mut self, _: &Trainer, m: EpochMetrics, history: &mut Vec<EpochMetrics>) -> Result<Option<LoopEnd>> {
        self.progress.epoch(&m);
        (self.on_epoch)(&m)?;
        let last = m.epoch > self.last;
        history.push(m);
        Ok(last.then_some(LoopEnd::Completed))
    }
}

impl Trainer<'_> {
    /// Trains every epoch, calling `on_epoch` after each (e.g. to append to metrics.jsonl). No checkpoints and no
    /// signal handling: that is `spotrun train` ([`train`]), on the same loop.
    pub fn fit(
        &mut self,
        progress: &Progress,
        on_epoch: &mut dyn FnMut(&EpochMetrics) -> Result<()>,
    ) -> Result<FitOutcome> {
        let last = self.cfg.train.epochs.saturating_sub(1);
        let metrics = self.fit_epochs(0, last, progress, on_epoch)?;
        progress.finish();
        Ok(FitOutcome { metrics })
    }

    /// One whole epoch (0-based `epoch`) from its first batch: train, then evaluate.
    pub fn epoch(&mut self, epoch: usize, progress: &Progress) -> Result<EpochMetrics> {
        let mut metrics = self.fit_epochs(epoch, epoch, progress, &mut |_| Ok(()))?;
        metrics.pop().ok_or_else(|| Error::Runtime("epoch stopped without a reason".into()))
    }

    /// Epochs `first..=last` through the one loop, unfused.
    fn fit_epochs(
        &mut self,
        first: usize,
        last: usize,
        progress: &Progress,
        on_epoch: &mut dyn FnMut(&EpochMetrics) -> Result<()>,
    ) -> Result<Vec<EpochMetrics>> {
        let events = Box::new(FitEvents { progress, on_epoch, last });
        let mut members = [Member::new(self, events, (first, 0), Vec::new())];
        epochs::run(&mut members, &mut Unfused::default(), &|| None, &|_| {});
        let [m] = members;
        m.end.unwrap_or(Ok(LoopEnd::Completed)).map(|_| m.history)
    }
}
