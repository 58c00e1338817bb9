//! An adaptive sweep's study: every decision (a trial started, a rung reached, a promotion, a stop) is a record
//! in the journal on the sweep volume ([`journal`]), the state is a replay of those records ([`state`]), and the
//! next decision a pure function of it ([`asha`]). This module is the worker's loop around them: read the
//! records it has not seen, work on a trial nobody holds (train it to its target rung, or write a stopped trial's
//! final weights), else decide, append the decision, and work on what it asks for. Any number of workers on any
//! number of machines run the same loop on one volume; a killed worker's trial is resumed from its checkpoint by
//! the next free worker, and a relaunched sweep continues the same study.
//!
//! Sits beside the claimer ([`super::claim`], which it trains through) and below the commands; nothing else in
//! the sweep imports it but them.
pub(crate) mod asha;
mod exploit;
#[cfg(test)]
mod fuzz;
pub(crate) mod journal;
pub(crate) mod launch;
pub(crate) mod pbt;
mod propose;
pub(crate) mod replay;
pub(crate) mod state;
pub(crate) mod summary;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use self::asha::Action;
use self::journal::{Appended, Decision, Journal, Record};
use self::state::{Phase, StudyState};
use super::claim::{self, ClaimEnd, ClaimOptions};
use super::error::SweepError;
use super::lease;
use super::loaded::LoadedSweep;
use super::record;
use super::retry::{verdict, Failure, RetrySettings, Verdict};
use super::schedule::{PbtSettings, Schedule, SchedulerKind};
use crate::data::SplitMix64;
use crate::error::{Error, Result};
use crate::trainer::{metric_value, EpochMetrics, StopAt};

/// How often a worker with nothing to do looks at the journal again.
const POLL: Duration = Duration::from_millis(500);

/// What one worker did in a study: trials it trained (to a rung or to the end), and trials that failed for good.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tally {
    pub trained: usize,
    pub failed: usize,
}

/// Runs this worker's part of the study until the study is complete.
pub(crate) fn run(ctx: &LoadedSweep, o: &ClaimOptions) -> Result<Tally> {
    let mut w = Worker::open(ctx.clone(), o)?;
    let mut tally = Tally::default();
    let pbt = w.schedule.kind == SchedulerKind::Pbt;
    loop {
        w.sync()?;
        // PBT decides for its paused trials before it trains (ASHA and TPE would create every config first).
        if pbt {
            let a = w.next_action();
            if !matches!(a, Action::Wait | Action::Complete) {
                w.act(a)?;
                continue;
            }
        }
        if let Some(trial) = w.free_trial() {
            w.work(trial, &mut tally)?;
            continue;
        }
        match w.next_action() {
            Action::Complete => {
                // What a worker killed while deleting left behind (`.deleting-…`) goes too.
                w.prune_copies();
                return Ok(tally);
            }
            Action::Wait => std::thread::sleep(w.wait_for()),
            a => w.act(a)?,
        }
    }
}

/// The study's definition: what its records mean only under (the method, its seed and count, the parameters,
/// the base config, the runs a fixed method expands to, the schedule, the metric). A sweep file edited so that
/// any of these changed is refused by a study that began under another; `retries`, `lease_seconds` and the like
/// may change.
pub(crate) fn definition(ctx: &LoadedSweep, s: &Schedule) -> String {
    use sha2::{Digest, Sha256};
    let sw = &ctx.sweep;
    let ids: Vec<&str> = ctx.runs.iter().map(|r| r.id.as_str()).collect();
    let text = format!(
        "{}|{}|{}|{:?}|{}|{ids:?}|{s:?}|{}",
        sw.method.name(),
        sw.seed,
        sw.count,
        sw.params,
        sw.base,
        sw.metric.as_str()
    );
    Sha256::digest(text.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Refuses a sweep whose study began under another definition (checked by the launcher before it starts workers;
/// each worker checks again when it opens the study).
pub(crate) fn check_definition(ctx: &LoadedSweep) -> Result<()> {
    let Some(s) = ctx.sweep.schedule else { return Ok(()) };
    let journal = Journal::new(&ctx.layout.root);
    if !journal.exists()? {
        return Ok(());
    }
    let mut first = Vec::new();
    journal.read_from(0, &mut first)?;
    match first.first().map(|r| &r.decision) {
        Some(Decision::Begin { definition: d, .. }) if *d == definition(ctx, &s) => Ok(()),
        _ => Err(changed(ctx, &journal)),
    }
}

fn changed(ctx: &LoadedSweep, journal: &Journal) -> Error {
    SweepError::Study {
        path: journal.path(0),
        message: format!(
            "this study began under another definition of sweep `{}` (its runs, scheduler or metric changed since); \
             a study's definition is the sweep as first launched: launch that file again, or give the changed sweep \
             a new name",
            ctx.sweep.name
        ),
    }
    .into()
}

/// One worker's view of the study.
struct Worker<'a> {
    /// The sweep; for TPE, its runs are the trials created so far (rebuilt from the journal).
    ctx: LoadedSweep,
    /// The sweep as loaded: the configs a fixed method expands to, where new trials come from.
    base: LoadedSweep,
    o: &'a ClaimOptions,
    schedule: Schedule,
    journal: Journal,
    records: Vec<Record>,
    state: StudyState,
    /// Trials that failed in this process and wait for a retry: (errors, not before).
    backoff: HashMap<usize, (usize, Instant)>,
    /// No proposal is new any more: the study has as many configs as trials.
    exhausted: bool,
}

impl<'a> Worker<'a> {
    /// Reads the journal, beginning the study if nobody has, and checks that it is this sweep's.
    fn open(ctx: LoadedSweep, o: &'a ClaimOptions) -> Result<Worker<'a>> {
        let schedule = ctx.sweep.schedule.ok_or_else(|| SweepError::Usage("not a scheduled sweep".into()))?;
        let journal = Journal::new(&ctx.layout.root);
        let def = definition(&ctx, &schedule);
        let configs = propose::configs(&ctx);
        let begin = Decision::Begin {
            definition: def.clone(),
            scheduler: schedule.name().into(),
            min_epochs: schedule.min_epochs,
            eta: schedule.eta,
            epochs: schedule.epochs,
            configs,
        };
        let mut w = Worker {
            base: ctx.clone(),
            ctx,
            o,
            schedule,
            journal,
            records: Vec::new(),
            state: StudyState::default(),
            backoff: HashMap::new(),
            exhausted: false,
        };
        if !w.journal.exists()? {
            w.journal.append(0, &begin)?;
        }
        w.sync()?;
        if w.state.definition.as_deref() != Some(def.as_str()) {
            return Err(changed(&w.ctx, &w.journal));
        }
        Ok(w)
    }

    /// What the scheduler decides next from the records so far (ASHA and Hyperband, or PBT).
    fn next_action(&self) -> Action {
        let (sw, higher) = (&self.ctx.sweep, self.ctx.sweep.metric.higher_is_better());
        match (self.schedule.kind, sw.pbt) {
            (SchedulerKind::Pbt, Some(p)) => {
                pbt::decide(&self.state, &self.schedule, &p, self.configs(), higher, sw.seed)
            }
            _ => asha::decide(&self.state, &self.schedule, self.configs(), higher),
        }
    }

    /// Records the decision `a` asks for (a lost race is decided again on the next round).
    fn act(&mut self, a: Action) -> Result<()> {
        let d = match a {
            Action::Promote { trial, from, to } => Decision::Promoted { trial, from, to },
            Action::Stop { trial, epoch } => Decision::Stopped { trial, epoch },
            Action::Exploit { trial, donor, epoch } => {
                let (sw, p) = (
                    &self.ctx.sweep,
                    self.ctx.sweep.pbt.unwrap_or(PbtSettings {
                        quantile: 0.25,
                        resample_probability: 0.25,
                        keep_copies: false,
                    }),
                );
                let seed = SplitMix64::keyed(&[sw.seed, trial as u64, epoch as u64]).next_u64();
                let values = pbt::explore(&self.state.trials[donor].values, &sw.params, &p, seed);
                Decision::Exploited { trial, donor, epoch, values }
            }
            Action::Create { bracket } => match propose::next(&self.base, &self.state)? {
                Some(p) => {
                    let (trial, origin) = (self.state.trials.len(), self.ctx.sweep.method.name().to_string());
                    Decision::Created { trial, index: p.index, run: p.id, origin, bracket, values: p.overrides }
                }
                // Every proposal repeats a trial: the search space is used up (the same in every worker).
                None => {
                    self.exhausted = true;
                    return Ok(());
                }
            },
            Action::Wait | Action::Complete => return Ok(()),
        };
        self.commit(d).map(|_| ())
    }

    /// How many configs the study starts: the sweep's, or the trials so far once proposals are used up.
    fn configs(&self) -> usize {
        if self.exhausted {
            self.state.trials.len()
        } else {
            propose::configs(&self.base)
        }
    }

    /// Reads and applies the records this worker has not seen (for TPE, the new trials become the sweep's runs,
    /// and `sweep.json` lists them).
    fn sync(&mut self) -> Result<()> {
        let from = self.records.len();
        let trials = self.state.trials.len();
        self.journal.read_from(from as u64, &mut self.records)?;
        for (seq, r) in self.records.iter().enumerate().skip(from) {
            self.state.apply(&r.decision, &self.schedule).map_err(|message| SweepError::Study {
                path: self.journal.path(seq as u64),
                message: format!("{message}; the journal is damaged (edited by hand?)"),
            })?;
        }
        let pbt = self.schedule.kind == SchedulerKind::Pbt && self.records.len() > from;
        if pbt || (self.state.trials.len() > trials && self.ctx.sweep.method == super::spec::Method::Tpe) {
            let runs = propose::trial_runs(&self.ctx, &self.state, &self.journal)?;
            self.ctx = self.ctx.clone().with_runs(runs);
            self.ctx.plan.write(&self.ctx.layout)?;
        }
        Ok(())
    }

    /// Appends `d` as the next record, unless it no longer follows from the records (another worker decided it,
    /// or something that makes it moot, first). A lost race re-reads and tries again.
    fn commit(&mut self, d: Decision) -> Result<bool> {
        loop {
            self.sync()?;
            let mut next = self.state.clone();
            if next.apply(&d, &self.schedule).is_err() {
                return Ok(false);
            }
            match self.journal.append(self.state.applied, &d)? {
                Appended::Written => {
                    self.sync()?;
                    return Ok(true);
                }
                Appended::Lost => continue,
            }
        }
    }

    /// A trial with work to do that no live worker holds: training to a rung, or stopped without its weights. The
    /// first by index; under PBT the least advanced (lowest target epoch), so that the population trains side by
    /// side and is ranked together at each interval, rather than the first trials racing to the end alone.
    fn free_trial(&self) -> Option<usize> {
        let now = Instant::now();
        let pbt = self.schedule.kind == SchedulerKind::Pbt;
        let free = self.state.trials.iter().enumerate().filter_map(|(i, t)| {
            let needs_work = match t.phase {
                Phase::Training { to } => Some(to),
                Phase::Stopped { at } => (!record::maybe_present(&self.dir(i).join(record::DONE))).then_some(at),
                _ => None,
            };
            let waiting = self.backoff.get(&i).is_some_and(|&(_, at)| at > now);
            let target = needs_work.filter(|_| !waiting)?;
            let held = lease::holder(&self.dir(i), self.ctx.sweep.lease_seconds).is_some();
            (!held).then_some((if pbt { target } else { 0 }, i))
        });
        let mut free = free;
        if pbt {
            free.min().map(|(_, i)| i)
        } else {
            free.next().map(|(_, i)| i)
        }
    }

    fn dir(&self, trial: usize) -> std::path::PathBuf {
        self.ctx.layout.run_dir(&self.state.trials[trial].run)
    }

    /// How long to sleep when there is nothing to do: the poll interval, or less when a retry is due sooner.
    fn wait_for(&self) -> Duration {
        let now = Instant::now();
        let soonest = self.backoff.values().map(|&(_, at)| at.saturating_duration_since(now)).min();
        soonest.map_or(POLL, |d| d.clamp(Duration::from_millis(50), POLL))
    }

    /// Trains trial `i` to its target (or writes its final weights when it was stopped), and records the result.
    fn work(&mut self, i: usize, tally: &mut Tally) -> Result<()> {
        let t = &self.state.trials[i];
        let run = self.ctx.runs.get(t.index).filter(|r| r.id == t.run).ok_or_else(|| SweepError::Study {
            path: self.journal.path(0),
            message: format!("trial {i} is run {} at index {}, which this sweep does not have", t.run, t.index),
        })?;
        let (stop_at, target) = match t.phase {
            Phase::Training { to } if to < self.schedule.epochs => (Some(StopAt { epochs: to, finish: false }), to),
            Phase::Training { to } => (None, to),
            Phase::Stopped { at } => (Some(StopAt { epochs: at, finish: true }), at),
            _ => return Ok(()),
        };
        let pbt = self.schedule.kind == SchedulerKind::Pbt;
        // PBT: the trial's latest exploit is carried out under its lease, before it trains (idempotent).
        let exploit = match (pbt, t.exploits.last()) {
            (true, Some(&(donor, epoch))) => {
                let seq = self
                    .records
                    .iter()
                    .rposition(|r| matches!(r.decision, Decision::Exploited { trial, .. } if trial == i));
                Some((self.dir(i), self.dir(donor), epoch, seq.unwrap_or(0) as u64))
            }
            _ => None,
        };
        let before = || match &exploit {
            Some((to, from, epoch, seq)) => exploit::apply(to, from, *epoch, *seq),
            None => Ok(()),
        };
        let result = claim::run_until(&self.ctx, run, self.o, stop_at, pbt, &before);
        let metric = self.ctx.sweep.metric;
        let at = |h: &[EpochMetrics], e: usize| {
            h.iter().find(|m| m.epoch == e).map(|m| metric_value(m, metric)).filter(|v| v.is_finite())
        };
        match result {
            Ok(ClaimEnd::Paused { history, lease }) => {
                tally.trained += 1;
                if pbt {
                    // Kept before the pause is recorded: a later exploit copies exactly this epoch's state.
                    exploit::keep_interval(&self.dir(i), target)?;
                }
                // Recorded while the lease is held: no other worker claims the run to pause it again.
                self.commit(Decision::Reached { trial: i, epoch: target, metric: at(&history, target) })?;
                lease.release();
                self.prune_copies();
            }
            Ok(ClaimEnd::Trained { history, .. }) if stop_at.is_none_or(|s| !s.finish) => {
                tally.trained += 1;
                let epoch = history.last().map_or(target, |m| m.epoch);
                self.commit(Decision::Finished { trial: i, epoch, metric: at(&history, epoch) })?;
                self.prune_copies();
            }
            Ok(ClaimEnd::Trained { .. }) => {}
            Ok(ClaimEnd::AlreadyDone) => self.finished_elsewhere(i)?,
            Err(Error::Busy(_)) => {}
            Err(e @ (Error::Preempted { .. } | Error::NotOwner(_))) => return Err(e),
            Err(e) => self.failed(i, &e, tally)?,
        }
        Ok(())
    }

    /// PBT: deletes, in every trial's directory, the copies no trial can use any more (`pbt::obsolete`), unless
    /// `keep_copies = true`. A failure is a warning: the copies stay and the next prune tries again.
    fn prune_copies(&self) {
        let keep = self.ctx.sweep.pbt.is_none_or(|p| p.keep_copies);
        if keep || self.schedule.kind != SchedulerKind::Pbt {
            return;
        }
        let epochs = pbt::obsolete(&self.state, &self.schedule, self.configs());
        for i in 0..self.state.trials.len() {
            if let Err(e) = exploit::prune(&self.dir(i), &epochs) {
                tell!("warning: PBT copies of trial {i} not deleted: {e}");
            }
        }
    }

    /// `done.json` was there already (a worker finished the run and died before recording it).
    fn finished_elsewhere(&mut self, i: usize) -> Result<()> {
        if !matches!(self.state.trials[i].phase, Phase::Training { .. }) {
            return Ok(());
        }
        let dir = self.dir(i);
        let done: Option<record::Done> = record::read_json(&dir.join(record::DONE));
        let last = done.and_then(|d| d.last);
        let epoch = last.as_ref().map_or(self.schedule.epochs, |m| m.epoch);
        let metric = last.map(|m| metric_value(&m, self.ctx.sweep.metric)).filter(|v| v.is_finite());
        self.commit(Decision::Finished { trial: i, epoch, metric }).map(|_| ())
    }

    /// A failed attempt: `failed` in the journal once the retry rule gave up (`failed.json` written), else a
    /// retry after the rule's delay.
    fn failed(&mut self, i: usize, e: &Error, tally: &mut Tally) -> Result<()> {
        let short = crate::config::short_id(&self.state.trials[i].run).to_string();
        tell!("error: trial {i} {short}: {e}");
        if record::maybe_present(&self.dir(i).join(record::FAILED)) {
            tally.failed += 1;
            return self.commit(Decision::Failed { trial: i }).map(|_| ());
        }
        let errors = self.backoff.get(&i).map_or(0, |b| b.0) + 1;
        let retries = self.o.retries.unwrap_or(self.ctx.sweep.retries) as usize;
        let delay = match verdict(errors, Failure::of(e), RetrySettings { retries, backoff_seconds: 2.0 }) {
            Verdict::Retry { delay_seconds } => delay_seconds,
            Verdict::GiveUp => 3600.0,
        };
        self.backoff.insert(i, (errors, Instant::now() + Duration::from_secs_f64(delay)));
        Ok(())
    }
}
