//! The one epoch loop. It drives one run (`spotrun train`, [`Trainer::fit`]) or a fused group of runs
//! (`worker --group`) the same way: components + a strategy, as burn-train's learner does.
//!
//! - A [`Member`] is one run in the loop: its [`Trainer`], its [`Events`] (the CLI's: observer, save policy,
//!   checkpoint writer; [`Trainer::fit`]'s: a callback), its cursor and history.
//! - A [`Strategy`] says how the runs of one chunk step: each with its own trainer ([`super::single::Unfused`]) or
//!   all as one fused model ([`super::group::FusedSteps`]).
//! - The loop steps the members furthest behind, from their common cursor, up to the next point where any member
//!   must act alone: its epoch's end, a save its policy asks for, a signal, a divergence. There each member
//!   evaluates, records and checkpoints through its own events.
//!
//! Rules settled once here for every kind of run: a signal is checked after every step, before the save policy,
//! so a preempted run saves once, through the preemption save that honours `checkpoint.grace_seconds`; a signal
//! on an epoch's last batch lets the epoch finish (evaluate, record, its epoch save) and preempts at the next
//! epoch's start. When a chunk of several runs does not fit (out of memory), the loop goes on with at most half as
//! many at a time, down to one. Imports the trainer, the metrics, the shared types and `boundary`; no stage.
use std::time::Instant;

use super::fit::{Stepped, Trainer};
use super::metrics::EpochMetrics;
use super::types::LoopEnd;
use crate::boundary::{self, Phase};
use crate::checkpoint::SaveReason;
use crate::error::{Error, Result};
use crate::task::Eval;

/// One optimizer step of one run, as its events see it.
#[derive(Debug, Clone, Copy)]
pub(super) struct StepInfo {
    /// The epoch in progress (0-based) and the batches of it done.
    pub epoch: usize,
    pub done: usize,
    pub steps_per_epoch: usize,
    pub stepped: Stepped,
    /// Items (or tokens) per second in this epoch so far, and their unit.
    pub rate: (f64, &'static str),
}

/// What a run reports to, and asks, at the loop's events.
pub(super) trait Events {
    /// After every optimizer step (progress, logging).
    fn step(&mut self, s: &StepInfo);
    /// Whether the run must save after this step (asked only when no signal arrived).
    fn save_due(&self, s: &StepInfo) -> Option<SaveReason>;
    /// Saves the run at `cursor`.
    fn save(&mut self, t: &Trainer, cursor: (usize, usize), history: &[EpochMetrics], why: SaveReason) -> Result<()>;
    /// After an epoch produced `m`: records it into `history`, saves as the policy says, and says whether the run
    /// ends here (its last epoch, early stopping, pruning).
    fn epoch(&mut self, t: &Trainer, m: EpochMetrics, history: &mut Vec<EpochMetrics>) -> Result<Option<LoopEnd>>;
}

/// How the runs of one chunk step.
pub(super) trait Strategy {
    /// The most runs one chunk may step together.
    fn width(&self) -> usize;
    /// What a failing chunk was doing, for its error.
    fn doing(&self, first: &Trainer, runs: usize, epoch: usize) -> String;
    /// Before the first step of a chunk of `runs`, all at the same cursor in `epoch`.
    fn begin(&mut self, runs: &[&Trainer], epoch: usize) -> Result<()>;
    /// One optimizer step of every run on its batch `b`.
    fn step(&mut self, runs: &mut [&mut Trainer], b: usize) -> Result<Vec<Stepped>>;
    /// After the chunk's last step: the runs' state written back, and, when `evaluate`, their evaluations (`None`:
    /// each trainer evaluates itself).
    fn end(&mut self, runs: &mut [&mut Trainer], evaluate: bool) -> Result<Option<Vec<Eval>>>;
    /// After an epoch ended for the members `ended` (indices into the loop's members).
    fn epoch_ended(&self, _epoch: usize, _ended: &[(usize, EpochMetrics)]) {}
}

/// One run in the loop.
pub(super) struct Member<'r, 'a> {
    pub trainer: &'r mut Trainer<'a>,
    pub events: Box<dyn Events + 'r>,
    pub cursor: (usize, usize),
    pub history: Vec<EpochMetrics>,
    /// `Some` once the run ended (finished, stopped, pruned, preempted or failed).
    pub end: Option<Result<LoopEnd>>,
    /// When this process started the run's epoch in progress, and the items it trained in it since.
    epoch_started: Instant,
    trained: usize,
    /// Whether this process has taken a step of the run (an out-of-memory before that is the config's).
    stepped: bool,
}

impl<'r, 'a> Member<'r, 'a> {
    pub(super) fn new(
        trainer: &'r mut Trainer<'a>,
        events: Box<dyn Events + 'r>,
        cursor: (usize, usize),
        history: Vec<EpochMetrics>,
    ) -> Member<'r, 'a> {
        trainer.last_lr = trainer.previous_lr();
        Member {
            trainer,
            events,
            cursor,
            history,
            end: None,
            epoch_started: Instant::now(),
            trained: 0,
            stepped: false,
        }
    }
}

/// How a chunk of steps ended.
struct Chunk {
    done: usize,
    signal: Option<i32>,
    saves: Vec<(usize, SaveReason)>,
    /// Members whose loss read back was not finite: (member, value).
    diverged: Vec<(usize, f64)>,
    /// Every member's evaluation, when the strategy made them at the epoch's end.
    evals: Option<Vec<Eval>>,
}

/// Runs every member until it ends; `interrupt` says whether a preemption signal arrived, `say` prints the loop's
/// own lines (a narrowed chunk).
pub(super) fn run(
    members: &mut [Member],
    strategy: &mut dyn Strategy,
    interrupt: &dyn Fn() -> Option<i32>,
    say: &dyn Fn(&str),
) {
    let mut width = strategy.width();
    loop {
        let active: Vec<usize> = (0..members.len()).filter(|&i| members[i].end.is_none()).collect();
        let Some(lead) = active.iter().map(|&i| members[i].cursor).min() else { return };
        let group: Vec<usize> = active.iter().copied().filter(|&i| members[i].cursor == lead).take(width).collect();
        let batches = members[group[0]].trainer.steps_per_epoch() as usize;
        let others = active.iter().map(|&i| members[i].cursor).filter(|c| c.0 == lead.0 && c.1 > lead.1);
        let stop_at = others.map(|c| c.1).min().unwrap_or(batches);
        let c = match step_chunk(members, &group, strategy, lead, stop_at, interrupt) {
            Ok(c) => c,
            Err(e) if group.len() > 1 && out_of_memory(&e) => {
                width = group.len() / 2;
                say(&format!(
                    "warning: {} runs fused do not fit ({e}); going on with at most {width} at a time",
                    group.len()
                ));
                continue;
            }
            Err(e) => {
                fail(members, &group, e);
                continue;
            }
        };
        settle(members, &group, lead.0, c, strategy, interrupt);
    }
}

/// Ends the members of `group` with `e` (each its own copy; errors are not `Clone`). An out-of-memory before this
/// process took a step of a run is the config asking for too much (exit 2); later it may be fragmentation or a
/// neighbour on the GPU (exit 1).
fn fail(members: &mut [Member], group: &[usize], e: Error) {
    if let [i] = group {
        let m = &mut members[*i];
        m.end = Some(Err(if m.stepped { e } else { oom_before_training(e) }));
        return;
    }
    for &i in group {
        let m = &mut members[i];
        m.end = Some(Err(if m.stepped { copy_error(&e) } else { oom_before_training(copy_error(&e)) }));
    }
}

/// The trainers of `group`, in order, for the strategy to step.
fn trainers_mut<'m, 'a>(members: &'m mut [Member<'_, 'a>], group: &[usize]) -> Vec<&'m mut Trainer<'a>> {
    let picked = members.iter_mut().enumerate().filter(|(i, _)| group.contains(i));
    picked.map(|(_, m)| &mut *m.trainer).collect()
}

/// Steps the members `group` (all at `at`) up to batch `stop_at` or the first step after which one of them must
/// act alone.
fn step_chunk(
    members: &mut [Member],
    group: &[usize],
    strategy: &mut dyn Strategy,
    at: (usize, usize),
    stop_at: usize,
    interrupt: &dyn Fn() -> Option<i32>,
) -> Result<Chunk> {
    let (epoch, start) = at;
    let doing = strategy.doing(members[group[0]].trainer, group.len(), epoch);
    for &i in group {
        let m = &mut members[i];
        if start == 0 || m.trained == 0 {
            (m.epoch_started, m.trained) = (Instant::now(), 0);
        }
        if start == 0 {
            m.trainer.begin_epoch()?;
        }
    }
    boundary::catch(Phase::Training, &|| doing.clone(), || {
        let runs: Vec<&Trainer> = group.iter().map(|&i| &*members[i].trainer).collect();
        strategy.begin(&runs, epoch)?;
        let steps_per_epoch = members[group[0]].trainer.steps_per_epoch() as usize;
        let mut c = Chunk { done: start, signal: None, saves: Vec::new(), diverged: Vec::new(), evals: None };
        for b in start..stop_at {
            let stepped = strategy.step(&mut trainers_mut(members, group), b)?;
            c.done = b + 1;
            let infos = observe(members, group, &stepped, (epoch, c.done, steps_per_epoch), &mut c.diverged);
            c.signal = interrupt();
            if c.signal.is_some() {
                break;
            }
            for (i, s) in infos {
                c.saves.extend(members[i].events.save_due(&s).map(|why| (i, why)));
            }
            if !c.saves.is_empty() || !c.diverged.is_empty() {
                break;
            }
        }
        let evaluate = c.done == steps_per_epoch && c.diverged.is_empty();
        c.evals = strategy.end(&mut trainers_mut(members, group), evaluate)?;
        Ok(c)
    })
}

/// After one step of `group`: each member's trainer and events see it, except a member whose loss diverged (it
/// goes into `diverged`). Returns the steps the events saw. `at` is (epoch, batches done, batches an epoch).
fn observe(
    members: &mut [Member],
    group: &[usize],
    stepped: &[Stepped],
    at: (usize, usize, usize),
    diverged: &mut Vec<(usize, f64)>,
) -> Vec<(usize, StepInfo)> {
    let mut seen = Vec::with_capacity(group.len());
    for (&i, s) in group.iter().zip(stepped) {
        let m = &mut members[i];
        (m.stepped, m.trained) = (true, m.trained + s.items);
        (m.trainer.last_loss, m.trainer.last_lr) = (s.loss, s.lr);
        if let Some(v) = s.loss.filter(|v| m.trainer.check_finite(*v, at.0).is_err()) {
            diverged.push((i, v));
            continue;
        }
        let rate = m.trainer.rate(m.trained, m.epoch_started.elapsed().as_secs_f64());
        let info = StepInfo { epoch: at.0, done: at.1, steps_per_epoch: at.2, stepped: *s, rate };
        m.events.step(&info);
        seen.push((i, info));
    }
    seen
}

/// What the members of `group` do once a chunk stopped: divergence, saves, a signal, the epoch's end.
fn settle(
    members: &mut [Member],
    group: &[usize],
    epoch: usize,
    c: Chunk,
    strategy: &dyn Strategy,
    interrupt: &dyn Fn() -> Option<i32>,
) {
    for &i in group {
        members[i].cursor = (epoch, c.done);
    }
    for &(i, value) in &c.diverged {
        let step = members[i].trainer.step;
        members[i].end = Some(Err(Error::Diverged { value, epoch: epoch + 1, step }));
    }
    for &(i, why) in &c.saves {
        let m = &mut members[i];
        if m.end.is_none() {
            if let Err(e) = m.events.save(m.trainer, m.cursor, &m.history, why) {
                m.end = Some(Err(e));
            }
        }
    }
    if c.done < members[group[0]].trainer.steps_per_epoch() as usize {
        if let Some(signal) = c.signal {
            for m in members.iter_mut().filter(|m| m.end.is_none()) {
                m.end = Some(Ok(LoopEnd::Preempted { signal, cursor: m.cursor }));
            }
        }
        return;
    }
    let mut ended = Vec::new();
    for (k, &i) in group.iter().enumerate() {
        let m = &mut members[i];
        if m.end.is_some() {
            continue;
        }
        let eval = c.evals.as_ref().map(|e| e[k]);
        let end = end_epoch(m, epoch, eval, &mut ended, i);
        m.cursor = (epoch + 1, 0);
        m.end = match end {
            Ok(None) => interrupt().map(|signal| Ok(LoopEnd::Preempted { signal, cursor: (epoch + 1, 0) })),
            Ok(Some(end)) => Some(Ok(end)),
            Err(e) => Some(Err(e)),
        };
    }
    strategy.epoch_ended(epoch, &ended);
}

/// Member `m` (index `i`) at the end of epoch `epoch`: its metrics (with `eval` when the strategy made it), then
/// its events. `Some` ends the run.
fn end_epoch(
    m: &mut Member,
    epoch: usize,
    eval: Option<Eval>,
    ended: &mut Vec<(usize, EpochMetrics)>,
    i: usize,
) -> Result<Option<LoopEnd>> {
    let (lr, trained, started) = (m.trainer.last_lr, m.trained, m.epoch_started);
    let bs = m.trainer.cfg.train.eval_batch_size;
    let doing = format!("evaluating epoch {} (train.eval_batch_size = {bs})", epoch + 1);
    let t = &mut *m.trainer;
    let metrics =
        boundary::catch(Phase::Training, &|| doing.clone(), || t.end_epoch(epoch, lr, trained, started, eval))?;
    ended.push((i, metrics.clone()));
    m.events.epoch(m.trainer, metrics, &mut m.history)
}

/// Whether `e` is an allocation failure (typed, or a libtorch error saying so).
fn out_of_memory(e: &Error) -> bool {
    matches!(e, Error::OutOfMemory { .. }) || boundary::is_out_of_memory(&e.to_string())
}

/// An out-of-memory before this process finished a step is the config asking for too much (exit 2, like one
/// found before training).
fn oom_before_training(e: Error) -> Error {
    match e {
        Error::OutOfMemory { message, .. } => Error::OutOfMemory { message, before_training: true },
        other => other,
    }
}

/// The same error for every member of a group that one failure stopped (errors are not `Clone`).
pub(super) fn copy_error(e: &Error) -> Error {
    match e {
        Error::OutOfMemory { message, before_training } => {
            Error::OutOfMemory { message: message.clone(), before_training: *before_training }
        }
        other => Error::Runtime(other.to_string()),
    }
}
