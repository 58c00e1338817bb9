//! Claim-and-train, in this process: claim a run's lease, *then* check its `done.json` marker, train it through
//! [`crate::trainer::train`] (a fused group through [`crate::trainer::train_group`]), record how the attempt ended,
//! and only then release the lease. That order is what keeps a run from being trained twice. `spotrun worker`
//! calls it in every mode: `--index I` trains exactly run I (skipped if done, resumed if partial, refused with
//! exit 75 while another live worker holds it); `--next` claims free runs one after another until none is left;
//! the launcher's jobs (`--serve`) claim a run, a group or a part of one.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::SweepError;
use super::expand::PlannedRun;
use super::lease::{self, ClaimError, Lease};
use super::loaded::LoadedSweep;
use super::prune::should_prune;
use super::record::{self, Attempt, AttemptEnd, AttemptEvent, Done, Failed, RunEnd};
use super::retry::{verdict, Failure, RetrySettings, Verdict};
use super::status;
use crate::checkpoint::Store;
use crate::config::LoadedConfig;
use crate::error::{Error, Result};
use crate::trainer::{self, EpochHook, EpochMetrics, OwnerCheck, StopAt, TrainOptions};

/// How `spotrun worker` trains the runs it claims (the launcher passes them on to its children).
#[derive(Debug, Clone, Default)]
pub(crate) struct ClaimOptions {
    pub volume: Option<PathBuf>,
    /// CPU threads for each run (`train.threads`); None keeps the config's.
    pub threads: Option<usize>,
    /// Overrides the sweep file's `retries`.
    pub retries: Option<u32>,
    pub quiet: bool,
    /// How many runs share this worker's device slot (for `device_seconds`).
    pub share: usize,
    /// `--no-fuse`: one run at a time.
    pub no_fuse: bool,
}

/// How claiming one run ended: trained (to its end: completed, stopped early, pruned or stopped at a rung),
/// paused at an adaptive scheduler's rung, or found done already. `history` is every epoch's metrics so far. A
/// paused run's lease is still held (`lease`), so that the study records the pause before another worker can
/// claim the run; it is released when dropped.
#[derive(Debug)]
pub(super) enum ClaimEnd {
    Trained { end: RunEnd, epochs: usize, history: Vec<EpochMetrics> },
    Paused { history: Vec<EpochMetrics>, lease: Lease },
    AlreadyDone,
}

/// `spotrun worker --index I`.
pub(super) fn run_index(ctx: &LoadedSweep, index: usize, o: &ClaimOptions) -> Result<ClaimEnd> {
    run_one(ctx, ctx.run(index)?, o)
}

/// `spotrun worker --next`: trains free runs until none is left, a fused group at a time where the sweep fuses.
/// The data and libtorch stay loaded from one run to the next. Returns (trained, failed) counts.
pub(super) fn run_next(ctx: &LoadedSweep, o: &ClaimOptions) -> Result<(usize, usize)> {
    let mut tally = Tally::new(ctx, o);
    loop {
        let mut claimed = false;
        for (g, group) in ctx.groups.iter().enumerate() {
            if !group.runs.iter().any(|&i| tally.free(ctx, i)) {
                continue;
            }
            for (i, result) in run_group(ctx, g, o)? {
                claimed |= tally.count(ctx, i, result)?;
            }
        }
        if !claimed {
            return Ok((tally.trained, tally.failed));
        }
        if let Some(delay) = tally.retry_delay(ctx) {
            std::thread::sleep(delay);
        }
    }
}

/// What `worker --next` saw of each run in this process: the errors counted per run, so that a run that fails
/// before recording an attempt (a full or read-only volume) is not retried forever.
struct Tally {
    settings: RetrySettings,
    /// Errors per run, and whether the retry rule gave up on the run after the last one.
    errors: Vec<(usize, bool)>,
    trained: usize,
    failed: usize,
}

impl Tally {
    /// `--next` waits 2 s before its first retry round, then twice as long each round.
    const BACKOFF_SECONDS: f64 = 2.0;

    fn new(ctx: &LoadedSweep, o: &ClaimOptions) -> Tally {
        let retries = o.retries.unwrap_or(ctx.sweep.retries) as usize;
        let settings = RetrySettings { retries, backoff_seconds: Tally::BACKOFF_SECONDS };
        Tally { settings, errors: vec![(0, false); ctx.runs.len()], trained: 0, failed: 0 }
    }

    /// Whether run `i` is worth claiming: not given up on here, not done or failed, not held by a live worker.
    fn free(&self, ctx: &LoadedSweep, i: usize) -> bool {
        let dir = ctx.layout.run_dir(&ctx.runs[i].id);
        !(self.errors[i].1
            || record::maybe_present(&dir.join(record::DONE))
            || record::maybe_present(&dir.join(record::FAILED))
            || lease::holder(&dir, ctx.sweep.lease_seconds).is_some())
    }

    /// Counts how claiming run `i` ended; true when it was claimed (trained, or failed under this worker). A
    /// preemption, or a lease lost to another worker, ends `--next`.
    fn count(&mut self, ctx: &LoadedSweep, i: usize, result: Result<ClaimEnd>) -> Result<bool> {
        let run = &ctx.runs[i];
        match result {
            Ok(ClaimEnd::Trained { .. } | ClaimEnd::Paused { .. }) => self.trained += 1,
            Ok(ClaimEnd::AlreadyDone) | Err(Error::Busy(_)) => return Ok(false),
            Err(e @ (Error::Preempted { .. } | Error::NotOwner(_))) => return Err(e),
            Err(e) => {
                let errors = self.errors[i].0 + 1;
                let gave_up = verdict(errors, Failure::of(&e), self.settings) == Verdict::GiveUp;
                self.errors[i] = (errors, gave_up);
                tell!("error: run #{} {}: {e}", run.index, crate::config::short_id(&run.id));
                let dir = ctx.layout.run_dir(&run.id);
                if record::maybe_present(&dir.join(record::FAILED)) || gave_up {
                    self.failed += 1;
                }
            }
        }
        Ok(true)
    }

    /// How long to wait before the next round, when a run is waiting for a retry: the retry rule's delay for
    /// the run that failed most often.
    fn retry_delay(&self, ctx: &LoadedSweep) -> Option<Duration> {
        let pending = ctx.runs.iter().filter(|r| {
            let d = ctx.layout.run_dir(&r.id);
            !record::maybe_present(&d.join(record::DONE)) && !record::maybe_present(&d.join(record::FAILED))
        });
        let worst = pending.map(|r| self.errors[r.index]).filter(|&(n, gave_up)| n > 0 && !gave_up).max()?;
        match verdict(worst.0, Failure::Other, self.settings) {
            Verdict::Retry { delay_seconds } => Some(Duration::from_secs_f64(delay_seconds)),
            Verdict::GiveUp => None,
        }
    }
}

fn run_one(ctx: &LoadedSweep, run: &PlannedRun, o: &ClaimOptions) -> Result<ClaimEnd> {
    run_until(ctx, run, o, None, false, &|| Ok(()))
}

/// Claims and trains `run` as [`run_index`] does, up to where an adaptive scheduler ends it this time (`stop_at`):
/// a pause (its checkpoint committed, the lease released, no `done.json`) or a stop (its final weights, and
/// `done.json` with outcome `stopped`). `allow_change`: the run's config may differ from its checkpoint's (a PBT
/// trial's hyperparameters change at its exploits; the study's records are its schedule). `before` runs under
/// the lease, before training (a PBT exploit's copy); its error is the attempt's.
pub(super) fn run_until(
    ctx: &LoadedSweep,
    run: &PlannedRun,
    o: &ClaimOptions,
    stop_at: Option<StopAt>,
    allow_change: bool,
    before: &dyn Fn() -> Result<()>,
) -> Result<ClaimEnd> {
    let mut held = match take(ctx, run, o)? {
        Taken::Done(outcome) => return Ok(outcome),
        Taken::Held(h) => h,
    };
    held.opts.stop_at = stop_at;
    held.opts.allow_config_change = allow_change;
    let started = Instant::now();
    let result = before().and_then(|()| trainer::train(&held.opts));
    held.end(ctx, run, o, result, started, true)
}

/// `spotrun worker --group G`: the free runs of group `g` trained together as one fused model (a group of one
/// is [`run_index`]). Runs done or held elsewhere are skipped; each trained run gets its own outcome.
pub(super) fn run_group(ctx: &LoadedSweep, g: usize, o: &ClaimOptions) -> Result<Vec<(usize, Result<ClaimEnd>)>> {
    run_runs(ctx, &ctx.group(g)?.runs, o)
}

/// [`run_group`] for any runs of one group (`runs`: indices into the sweep's runs).
pub(super) fn run_runs(ctx: &LoadedSweep, runs: &[usize], o: &ClaimOptions) -> Result<Vec<(usize, Result<ClaimEnd>)>> {
    if let [only] = runs {
        return Ok(vec![(*only, run_index(ctx, *only, o))]);
    }
    let mut held = Vec::new();
    let mut out = Vec::new();
    for &i in runs {
        match take(ctx, &ctx.runs[i], o) {
            Ok(Taken::Held(h)) => held.push((i, h)),
            Ok(Taken::Done(outcome)) => out.push((i, Ok(outcome))),
            Err(e) => out.push((i, Err(e))),
        }
    }
    let opts: Vec<TrainOptions> = held.iter().map(|(_, h)| h.opts.clone()).collect();
    let started = Instant::now();
    let say = |line: &str| {
        if !o.quiet {
            tell!("{line}");
        }
    };
    let results = if opts.is_empty() { Vec::new() } else { trainer::train_group(&opts, &say) };
    for ((i, h), result) in held.into_iter().zip(results) {
        out.push((i, h.end(ctx, &ctx.runs[i], o, result, started, false)));
    }
    let _ = status::write_results(&ctx.layout, &ctx.plan);
    out.sort_by_key(|(i, _)| *i);
    Ok(out)
}

/// A run this worker took: its lease, its attempt record, and the options it trains with.
struct Held {
    dir: PathBuf,
    lease: Lease,
    attempt: AttemptRecorder,
    owner: OwnerCheck,
    device: String,
    opts: TrainOptions,
}

/// What [`take`] found.
enum Taken {
    Held(Box<Held>),
    Done(ClaimEnd),
}

/// Claims `run`: its lease, then (under it) a second look for `done.json`, then its attempt's start record.
fn take(ctx: &LoadedSweep, run: &PlannedRun, o: &ClaimOptions) -> Result<Taken> {
    let dir = ctx.layout.run_dir(&run.id);
    if let Some(outcome) = finished_already(run, &dir, true)? {
        return Ok(Taken::Done(outcome));
    }
    std::fs::create_dir_all(&dir).map_err(|e| SweepError::io(&dir, e))?;
    let lease = claim(ctx, run, &dir)?;
    // Checked again under the lease: another worker may have finished the run in between.
    match finished_already(run, &dir, false) {
        Ok(None) => {}
        other => {
            lease.release();
            return other.map(|o| Taken::Done(o.unwrap_or(ClaimEnd::AlreadyDone)));
        }
    }
    let attempt = AttemptRecorder { host: lease::hostname(), gen: lease.info().gen };
    let resume_step = Store::new(dir.join("checkpoints"), 1)
        .list()
        .map_err(|e| SweepError::io(dir.join("checkpoints"), e))?
        .into_iter()
        .rfind(|(e, _)| e.committed())
        .map_or(0, |(e, _)| e.step);
    record::append_attempt(&dir, &attempt.record(AttemptEvent::Start, resume_step))?;
    let mut cfg = run.config.clone();
    if let Some(t) = o.threads {
        cfg.train.threads = t;
    }
    // Text and image folders are prepared once per sweep, on its volume (every worker, on any machine, finds the
    // entry there), unless the sweep names a data.cache_dir (a placement key: the run id is the same).
    if matches!(cfg.data.source, crate::config::DataSource::Text | crate::config::DataSource::Images) {
        cfg.data.cache_dir.get_or_insert_with(|| ctx.layout.root.join("data"));
    }
    let owner = {
        let (dir, gen) = (dir.clone(), attempt.gen);
        OwnerCheck(Arc::new(move || {
            if lease::still_newest(&dir, gen) {
                return Ok(());
            }
            Err("another worker took this run over (this one stalled past lease_seconds); stopped without writing"
                .to_string())
        }))
    };
    let device = cfg.train.device.clone();
    let opts = TrainOptions {
        owner_check: Some(owner.clone()),
        run_dir: Some(dir.clone()),
        quiet: o.quiet,
        loaded: Some(LoadedConfig { config: cfg, origin: ctx.sweep.file.clone() }),
        epoch_hook: pruning_hook(ctx, run),
        hparams: Some(hparams(ctx, run)),
        ..TrainOptions::default()
    };
    Ok(Taken::Held(Box::new(Held { dir, lease, attempt, owner, device, opts })))
}

impl Held {
    /// Records how the training attempt that began at `started` ended: `done.json`, a failure, or nothing at all
    /// when another worker owns the run now.
    fn end(
        self: Box<Self>,
        ctx: &LoadedSweep,
        run: &PlannedRun,
        o: &ClaimOptions,
        result: Result<trainer::TrainSummary>,
        started: Instant,
        results: bool,
    ) -> Result<ClaimEnd> {
        let Held { dir, lease, attempt, owner, device, .. } = *self;
        let mut end = attempt.record(AttemptEvent::End, 0);
        end.seconds = started.elapsed().as_secs_f64();
        match result {
            Err(e @ Error::NotOwner(_)) => {
                // Another worker owns the run now: write nothing more (its lease file is newer than ours).
                lease.abandon();
                Err(e)
            }
            Ok(_) if (owner.0)().is_err() => {
                lease.abandon();
                let short = crate::config::short_id(&run.id);
                Err(Error::NotOwner(format!("run #{} {short}: taken over before it was marked done", run.index)))
            }
            Ok(summary) if summary.status == trainer::RunStatus::Paused => {
                Claimed { ctx, run, o, dir: &dir, lease, results }.paused(end, summary)
            }
            Ok(summary) => Claimed { ctx, run, o, dir: &dir, lease, results }.done(end, &summary, &device),
            Err(e) => Claimed { ctx, run, o, dir: &dir, lease, results }.failed(end, e),
        }
    }
}

/// `done.json` there: the run is done. `failed.json` there: an error saying how to retry it. Before the claim
/// (`before_claim`) an unreadable record is an error naming it; under the lease, anything but a positive "absent"
/// counts as there.
fn finished_already(run: &PlannedRun, dir: &Path, before_claim: bool) -> Result<Option<ClaimEnd>> {
    let there = |p: &Path| if before_claim { record::present(p) } else { Ok(record::maybe_present(p)) };
    if there(&dir.join(record::DONE))? {
        return Ok(Some(ClaimEnd::AlreadyDone));
    }
    if !there(&dir.join(record::FAILED))? {
        return Ok(None);
    }
    let short = crate::config::short_id(&run.id);
    let path = dir.join(record::FAILED);
    let why = match record::read_json::<Failed>(&path) {
        Some(f) if before_claim => {
            format!("failed for good after {} failure(s): {}", f.failures, f.error.lines().next().unwrap_or(""))
        }
        Some(_) => "was marked failed by another worker while this one claimed it".to_string(),
        None => "failed for good (failed.json is unreadable)".to_string(),
    };
    let msg = format!("run #{} {short} {why}; delete {} to retry it", run.index, path.display());
    Err(SweepError::RunFailed(msg).into())
}

/// Claims the run's lease, or says who holds it (exit 75).
fn claim(ctx: &LoadedSweep, run: &PlannedRun, dir: &Path) -> Result<Lease> {
    Lease::claim(dir, ctx.sweep.lease_seconds).map_err(|e| {
        match e {
            ClaimError::Held(l) => SweepError::Busy(format!(
                "run #{} {} is held by {} pid {} (lease {}, heartbeat {:.0}s ago); not starting it twice",
                run.index,
                crate::config::short_id(&run.id),
                l.host,
                l.pid,
                l.gen,
                lease::now_ms().saturating_sub(l.heartbeat_unix_ms) as f64 / 1000.0
            )),
            ClaimError::Io(p, e) => SweepError::io(p, e),
        }
        .into()
    })
}

/// Builds this process's `attempts.jsonl` records.
struct AttemptRecorder {
    host: String,
    gen: u64,
}

impl AttemptRecorder {
    fn record(&self, event: AttemptEvent, step: u64) -> Attempt {
        Attempt {
            event,
            pid: std::process::id(),
            host: self.host.clone(),
            lease: self.gen,
            unix_ms: lease::now_ms(),
            step,
            outcome: None,
            exit_code: None,
            error: None,
            seconds: 0.0,
        }
    }
}

/// A run this worker holds the lease of, once its training attempt ended.
struct Claimed<'a> {
    ctx: &'a LoadedSweep,
    run: &'a PlannedRun,
    o: &'a ClaimOptions,
    dir: &'a Path,
    lease: Lease,
    /// Rewrite the sweep's results files afterwards (a group rewrites them once, after its last run).
    results: bool,
}

impl Claimed<'_> {
    /// The run trained to its end: the attempt's end, `done.json`, the lease released, the results refreshed.
    fn done(self, mut end: Attempt, summary: &trainer::TrainSummary, device: &str) -> Result<ClaimEnd> {
        let Claimed { ctx, run, o, dir, lease, results } = self;
        end.step = summary.metrics.last().map_or(0, |m| m.step);
        end.outcome = Some(AttemptEnd::Done);
        record::append_attempt(dir, &end)?;
        let wall = record::wall_seconds(dir, &record::attempts(dir));
        let run_end = RunEnd::of(summary.status);
        let done = Done {
            run_id: run.id.clone(),
            index: run.index,
            outcome: run_end,
            epochs: summary.metrics.len(),
            last: summary.metrics.last().cloned(),
            wall_seconds: wall,
            device_seconds: wall / o.share.max(1) as f64,
            device: describe_device(device),
            host: end.host.clone(),
            finished_unix_ms: lease::now_ms(),
        };
        record::write_json(&dir.join(record::DONE), &done)?;
        lease.release();
        if results {
            let _ = status::write_results(&ctx.layout, &ctx.plan);
        }
        Ok(ClaimEnd::Trained { end: run_end, epochs: summary.metrics.len(), history: summary.metrics.clone() })
    }

    /// The scheduler paused the run at a rung: the attempt's end, no `done.json`; the lease goes to the caller.
    fn paused(self, mut end: Attempt, summary: trainer::TrainSummary) -> Result<ClaimEnd> {
        let Claimed { ctx, dir, lease, results, .. } = self;
        end.step = summary.metrics.last().map_or(0, |m| m.step);
        end.outcome = Some(AttemptEnd::Paused);
        record::append_attempt(dir, &end)?;
        if results {
            let _ = status::write_results(&ctx.layout, &ctx.plan);
        }
        Ok(ClaimEnd::Paused { history: summary.metrics, lease })
    }

    /// The attempt failed (or was preempted): its end recorded, and `failed.json` when the retry rule gives up
    /// on the run (bad input and out-of-memory at once, anything else after `retries` failures).
    fn failed(self, mut end: Attempt, e: Error) -> Result<ClaimEnd> {
        let Claimed { ctx, run, o, dir, lease, results } = self;
        let code = exit_code_of(&e);
        let preempted = matches!(e, Error::Preempted { .. });
        end.outcome = Some(if preempted { AttemptEnd::Preempted } else { AttemptEnd::Failed });
        end.exit_code = Some(code);
        end.error = Some(e.to_string());
        record::append_attempt(dir, &end)?;
        if !preempted {
            let failures = record::failures(&record::attempts(dir));
            // Whoever retries the run waits its own backoff; only the verdict counts here.
            let retries = o.retries.unwrap_or(ctx.sweep.retries) as usize;
            let settings = RetrySettings { retries, backoff_seconds: 0.0 };
            if verdict(failures, Failure::of(&e), settings) == Verdict::GiveUp {
                let f = Failed {
                    run_id: run.id.clone(),
                    index: run.index,
                    failures,
                    exit_code: Some(code),
                    error: e.to_string(),
                    stderr_tail: String::new(),
                    unix_ms: lease::now_ms(),
                };
                record::write_json(&dir.join(record::FAILED), &f)?;
            }
        }
        lease.release();
        if results {
            let _ = status::write_results(&ctx.layout, &ctx.plan);
        }
        Err(e)
    }
}

/// The process exit code an error maps to, as an integer ([`Error::code`]: one mapping for CLI and records).
pub(super) fn exit_code_of(e: &Error) -> i32 {
    i32::from(e.code())
}

fn describe_device(requested: &str) -> String {
    let gpu = requested != "cpu" && tch::Cuda::is_available();
    match (gpu, std::env::var("CUDA_VISIBLE_DEVICES")) {
        (true, Ok(v)) => format!("cuda (CUDA_VISIBLE_DEVICES={v})"),
        (true, Err(_)) => "cuda".into(),
        (false, _) => "cpu".into(),
    }
}

/// The sweep's `[pruning]` as a hook that reads the other runs' metrics from the volume after every epoch.
fn pruning_hook(ctx: &LoadedSweep, run: &PlannedRun) -> Option<EpochHook> {
    let p = ctx.sweep.pruning.clone()?;
    let metric = ctx.sweep.metric;
    let others: Vec<PathBuf> = ctx.runs.iter().filter(|r| r.id != run.id).map(|r| ctx.layout.run_dir(&r.id)).collect();
    Some(EpochHook(Arc::new(move |own| {
        let histories: Vec<_> = others.iter().map(|d| record::epoch_metrics(d)).collect();
        should_prune(own, &histories, metric, &p)
    })))
}

/// The run's swept values and the sweep's metric, for TensorBoard's HParams tab.
fn hparams(ctx: &LoadedSweep, run: &PlannedRun) -> trainer::Hparams {
    use crate::tensorboard::HValue;
    let value = |v: &toml::Value| match v {
        toml::Value::Integer(i) => HValue::Number(*i as f64),
        toml::Value::Float(f) => HValue::Number(*f),
        toml::Value::Boolean(b) => HValue::Bool(*b),
        toml::Value::String(s) => HValue::Text(s.clone()),
        other => HValue::Text(other.to_string()),
    };
    trainer::Hparams {
        values: run.overrides.iter().map(|(k, v)| (k.clone(), value(v))).collect(),
        metrics: vec![format!("epoch/{}", ctx.sweep.metric.as_str())],
    }
}
