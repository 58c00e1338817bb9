//! Training a group of runs in one process as one fused model ([`super::fused`]), each run still a run: its own
//! directory, lock, checkpoints, `metrics.jsonl`, early stopping, pruning and outcome.
//!
//! Every member goes through the stages of `spotrun train` on its own ([`super::prepare`], [`super::open`],
//! [`super::attach`], [`super::outputs`]), so a bad or finished member never stops the others, and all of them
//! run in the one epoch loop ([`super::epochs`]) with the fused strategy, [`FusedSteps`]: a chunk's members are
//! gathered into one fused model, stepped together, and scattered back into their own trainers, which evaluate,
//! record and checkpoint exactly like an unfused run. The sibling of [`super::single`]; neither imports the other.
use std::time::Instant;

use tch::Tensor;

use super::attach::{self, Attach, Attached};
use super::epochs::{self, copy_error, Member, Strategy};
use super::fit::{Stepped, Trainer};
use super::fused::Fused;
use super::metrics::EpochMetrics;
use super::open;
use super::outputs::{self, Ending};
use super::prepare::{self, Prepared};
use super::process::{self, Deterministic};
use super::types::{TrainOptions, TrainSummary};
use crate::checkpoint::Store;
use crate::error::{Error, Result};
use crate::task::Eval;

/// Trains `members` (configs with one `fusion_key`) as one fused model. One result per member, in
/// order; `say` prints the group's progress lines.
pub fn train_group(members: &[TrainOptions], say: &dyn Fn(&str)) -> Vec<Result<TrainSummary>> {
    let mut results: Vec<Option<Result<TrainSummary>>> = members.iter().map(|_| None).collect();
    let set_up = process::signals().and_then(|s| deterministic(members).map(|d| (s, d)));
    let (signals, _deterministic) = match set_up {
        Ok(s) => s,
        Err(e) => return members.iter().map(|_| Err(copy_error(&e))).collect(),
    };
    let mut opened: Vec<(usize, Prepared, open::Opened, Option<Store>)> = Vec::new();
    for (i, opts) in members.iter().enumerate() {
        let set_up = prepare::load_config(opts)
            .and_then(|l| prepare::prepare(l, opts))
            .and_then(|mut p| open::open(&mut p, opts).map(|(o, s)| (p, o, s)));
        match set_up {
            Ok((p, o, s)) => opened.push((i, p, o, Some(s))),
            Err(e) => results[i] = Some(Err(e)),
        }
    }
    let mut attached: Vec<(usize, &Prepared, Attached)> = Vec::new();
    for (i, p, o, store) in opened.iter_mut() {
        let Some(store) = store.take() else { continue };
        match attach::attach(p, o, store, &members[*i], signals, true) {
            Ok(Attach::Train(a)) => attached.push((*i, p, *a)),
            Ok(Attach::Finished(s)) => results[*i] = Some(Ok(s)),
            Err(e) => results[*i] = Some(Err(e)),
        }
    }
    let started = Instant::now();
    let ends = train_attached(&mut attached, members, signals, say);
    for ((slot, p, a), (end, history)) in attached.into_iter().zip(ends) {
        let Attached { trainer, saver, obs, .. } = a;
        let ending = Ending { trainer: &trainer, saver, obs };
        let out = end.and_then(|o| outputs::conclude(p, ending, o, history, started));
        results[slot] = Some(out);
    }
    results.into_iter().map(|r| r.unwrap_or_else(|| Err(Error::Runtime("the run was never started".into())))).collect()
}

/// How the loop ended each attached member, and its history.
type Ends = Vec<(Result<super::types::LoopEnd>, Vec<EpochMetrics>)>;

/// The epoch loop over the attached members, fused.
fn train_attached<'a>(
    attached: &mut [(usize, &'a Prepared, Attached<'a>)],
    members: &[TrainOptions],
    signals: &'static super::signals::Signals,
    say: &dyn Fn(&str),
) -> Ends {
    let run_dirs: Vec<String> = attached.iter().map(|(_, p, _)| p.run_dir.display().to_string()).collect();
    let mut loop_members: Vec<Member> = attached.iter_mut().map(|(i, p, a)| a.member(p, &members[*i])).collect();
    let mut width = usize::MAX;
    if !loop_members.is_empty() {
        let trainers: Vec<&Trainer> = loop_members.iter().map(|m| &*m.trainer).collect();
        say(&banner(&trainers));
        let (fit, line) = fused_width(&trainers);
        if let Some(line) = line {
            say(&line);
        }
        width = fit;
    }
    let mut strategy = FusedSteps { fused: None, orders: Vec::new(), step: 0, width, say, run_dirs };
    epochs::run(&mut loop_members, &mut strategy, &|| signals.received(), say);
    let done = |m: Member| (m.end.unwrap_or(Ok(super::types::LoopEnd::Completed)), m.history);
    loop_members.into_iter().map(done).collect()
}

/// `train.deterministic` for the whole process (the fusion key makes it the same for every member).
fn deterministic(members: &[TrainOptions]) -> Result<Deterministic> {
    let on = members.first().and_then(|o| prepare::load_config(o).ok()).is_some_and(|l| l.config.train.deterministic);
    Deterministic::set(on)
}

/// The runs of a chunk step as one fused model: gathered at the chunk's start, scattered back at its end.
struct FusedSteps<'s> {
    fused: Option<Fused>,
    /// Every run's item order for the epoch in progress (each with its own seed).
    orders: Vec<Tensor>,
    /// The runs' optimizer step count (the same for every run of a chunk).
    step: u64,
    /// At most this many runs in one fused model ([`fused_width`]).
    width: usize,
    say: &'s dyn Fn(&str),
    /// The members' run directories, for the group's epoch lines.
    run_dirs: Vec<String>,
}

impl Strategy for FusedSteps<'_> {
    fn width(&self) -> usize {
        self.width
    }

    fn doing(&self, _: &Trainer, runs: usize, epoch: usize) -> String {
        format!("training a fused group of {runs} runs, epoch {}", epoch + 1)
    }

    fn begin(&mut self, runs: &[&Trainer], epoch: usize) -> Result<()> {
        let runtime = |e: String| Error::Runtime(format!("fused training: {e}"));
        test_oom(runs.len())?;
        self.fused = Some(Fused::gather(runs).map_err(runtime)?);
        self.orders = runs.iter().map(|t| t.epoch_order(epoch)).collect();
        self.step = runs.first().map_or(0, |t| t.step);
        Ok(())
    }

    fn step(&mut self, runs: &mut [&mut Trainer], b: usize) -> Result<Vec<Stepped>> {
        let runtime = |e: String| Error::Runtime(format!("fused training: {e}"));
        let fused = self.fused.as_mut().ok_or_else(|| runtime("no fused model".into()))?;
        let first = &runs[0];
        let (n, bs) = (first.epoch_len(), first.cfg.train.batch_size);
        let (s, len) = (b * bs, bs.min(n - b * bs));
        let idx: Vec<Tensor> = self.orders.iter().map(|o| o.narrow(0, s as i64, len as i64)).collect();
        let views: Vec<&Trainer> = runs.iter().map(|t| &**t).collect();
        let lrs = Fused::lrs(&views, self.step);
        let losses = fused.step(first.task.as_ref(), &idx, &lrs).map_err(runtime)?;
        self.step += 1;
        let logged = log_losses(&views, self.step, &losses)?;
        let loss = |k: usize| logged.as_ref().map(|l| l[k]).filter(|_| views[k].logs_at(self.step));
        Ok((0..runs.len()).map(|k| Stepped { step: self.step, lr: lrs[k], loss: loss(k), items: len }).collect())
    }

    fn end(&mut self, runs: &mut [&mut Trainer], evaluate: bool) -> Result<Option<Vec<Eval>>> {
        let runtime = |e: String| Error::Runtime(format!("fused training: {e}"));
        let Some(fused) = self.fused.take() else { return Ok(None) };
        let evals = match (evaluate, runs.first()) {
            (true, Some(first)) => Some(fused.evaluate(first).map_err(runtime)?),
            _ => None,
        };
        fused.scatter(runs, self.step).map_err(runtime)?;
        super::fused_optim::counts::report(runs.len());
        Ok(evals)
    }

    /// One line per finished group epoch: how many runs, and the best of them by validation loss.
    fn epoch_ended(&self, epoch: usize, ended: &[(usize, EpochMetrics)]) {
        let best = ended.iter().min_by(|a, b| a.1.val_loss.total_cmp(&b.1.val_loss));
        let best =
            best.map_or(String::new(), |(i, m)| format!(" | best val_loss {:.4} ({})", m.val_loss, self.run_dirs[*i]));
        let secs = ended.first().map_or(0.0, |(_, m)| m.epoch_seconds);
        (self.say)(&format!("epoch {}: {} runs in {secs:.2}s{best}", epoch + 1, ended.len()));
    }
}

/// The members' losses on the host, when any member logs at `step` (one sync for the group).
fn log_losses(trainers: &[&Trainer], step: u64, losses: &Tensor) -> Result<Option<Vec<f64>>> {
    if !trainers.iter().any(|t| t.logs_at(step)) {
        return Ok(None);
    }
    let host: Vec<f32> = Vec::<f32>::try_from(&losses.to_device(tch::Device::Cpu))?;
    Ok(Some(host.into_iter().map(f64::from).collect()))
}

/// How many of `members` (not empty) one fused model may hold: the memory its stacked copy takes (every run's
/// weights, gradients and optimizer state, and the batched step's scratch) against what the device has left now
/// that the members' own copies are loaded (a GPU's budget, [`crate::device::GpuMemory::budget`], or the host's
/// available memory). Activations are not counted, as in the single-run check; an out-of-memory error during
/// training still halves the chunk. `usize::MAX` when nothing could be measured; the line says why fewer.
fn fused_width(members: &[&Trainer]) -> (usize, Option<String>) {
    let first = members[0];
    let weights: u64 = first.params.iter().map(|p| (p.numel() * p.kind().elt_size_in_bytes()) as u64).sum();
    let copies = match (first.cfg.optim.kind, super::fused::form_of(members)) {
        (crate::config::OptimKind::Adamw, super::fused_optim::Form::Batched) => 5,
        (crate::config::OptimKind::Adamw, _) => 4,
        (crate::config::OptimKind::Sgd, _) if first.cfg.optim.momentum > 0.0 => 3,
        (crate::config::OptimKind::Sgd, _) => 2,
    };
    let (budget, place) = match first.device {
        tch::Device::Cuda(i) => (crate::device::gpu_memory(i).ok().map(|m| m.budget()), format!("cuda:{i}")),
        _ => (crate::device::host_available_bytes(), "this machine".to_string()),
    };
    let Some(budget) = test_budget().or(budget) else { return (usize::MAX, None) };
    let per_run = weights.saturating_mul(copies).max(1);
    let fit = width_for(per_run, budget);
    let line = (fit < members.len()).then(|| {
        let human = |b: u64| super::prepare::human_bytes(b.into());
        format!(
            "warning: {} runs fused need {} (weights, gradients and optimizer state, {} a run) but {place} has {} \
             left; going on with at most {fit} at a time",
            members.len(),
            human(per_run.saturating_mul(members.len() as u64)),
            human(per_run),
            human(budget)
        )
    });
    (fit, line)
}

/// Runs of `per_run` bytes that fit in `budget` bytes: at least one (a single run was checked alone before).
fn width_for(per_run: u64, budget: u64) -> usize {
    usize::try_from(budget / per_run.max(1)).unwrap_or(usize::MAX).max(1)
}

/// Test-only: `SPOTRUN_TEST_MEMORY_BUDGET=BYTES` stands for what the device has left (compiled in only with the
/// `test-hooks` feature).
fn test_budget() -> Option<u64> {
    #[cfg(feature = "test-hooks")]
    if let Some(b) = std::env::var("SPOTRUN_TEST_MEMORY_BUDGET").ok().and_then(|v| v.parse::<u64>().ok()) {
        return Some(b);
    }
    None
}

/// The line printed when the group starts (`members` not empty).
fn banner(members: &[&Trainer]) -> String {
    let first = members[0];
    let cfg = first.cfg;
    let hidden: Vec<String> = cfg.model.hidden.iter().map(i64::to_string).collect();
    let form = match super::fused::form_of(members) {
        super::fused_optim::Form::PerRun => "per run",
        super::fused_optim::Form::Batched => "batched",
    };
    format!(
        "spotrun: training {} runs as one fused model (mlp hidden {}, batch {}, device {:?}, {} steps an epoch, \
         {form} step)",
        members.len(),
        hidden.join("-"),
        cfg.train.batch_size,
        first.device,
        first.steps_per_epoch()
    )
}

/// Test-only: `SPOTRUN_TEST_FUSED_OOM_ABOVE=N` makes every fused chunk of more than N runs fail as out of memory
/// (compiled in only with the `test-hooks` feature).
fn test_oom(runs: usize) -> Result<()> {
    #[cfg(feature = "test-hooks")]
    if let Some(n) = std::env::var("SPOTRUN_TEST_FUSED_OOM_ABOVE").ok().and_then(|v| v.parse::<usize>().ok()) {
        if runs > n {
            let message = format!("test hook: {runs} fused runs do not fit (SPOTRUN_TEST_FUSED_OOM_ABOVE={n})");
            return Err(Error::OutOfMemory { message, before_training: false });
        }
    }
    let _ = runs;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn as_many_runs_as_the_budget_holds_and_never_none() {
        assert_eq!(super::width_for(100, 350), 3);
        assert_eq!(super::width_for(100, 300), 3);
        assert_eq!(super::width_for(100, 50), 1, "one run was checked alone before");
        assert_eq!(super::width_for(0, 10), 10, "a model without bytes counts as one byte");
    }
}
