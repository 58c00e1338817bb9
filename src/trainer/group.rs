//! Training a group of runs in one process as one fused model ([`super::fused`]), each run still a run: its own
//! directory, lock, checkpoints, `metrics.jsonl`, early stopping, pruning and outcome.
//!
//! Every member goes through stages 1 and 2 of `spotrun train` ([`super::prepare`], [`super::open`]) and the
//! set-up of stage 3 ([`super::run::attach`]) on its own, so a bad or finished member never stops the others. The
//! members then advance in lockstep: the group's chunk of fused steps runs from the members' common cursor to the
//! next point where any member must act alone (its epoch end, a save its policy asks for, a signal); there every
//! member's slice goes back into its own trainer, which evaluates, records and checkpoints exactly like an
//! unfused run. Members resumed from different steps are brought level first: only those furthest behind step
//! until they reach the next one.
use std::time::Instant;

use super::fit::Trainer;
use super::fused::Fused;
use super::metrics::EpochMetrics;
use super::open;
use super::policy::{Event, SavePolicy};
use super::prepare::{self, Prepared};
use super::process::{self, Deterministic};
use super::run::{attach, conclude, Attach, Attached, Loop, Outcome, TrainOptions, TrainSummary};
use crate::boundary::{self, Phase};
use crate::checkpoint::{SaveReason, Store};
use crate::error::{Error, Result};

/// One member's place in the group loop.
struct Member {
    /// Index into the group's members (and its options).
    slot: usize,
    cursor: (usize, usize),
    metrics: Vec<EpochMetrics>,
    /// `Some` once the member's run ended (finished, stopped, pruned, preempted or failed).
    end: Option<Result<Outcome>>,
    /// When this process started the member's epoch in progress, and the items it trained in it since.
    epoch_started: Instant,
    trained: usize,
}

/// How a chunk of fused steps ended.
struct Chunk {
    done: usize,
    signal: Option<i32>,
    saves: Vec<(usize, SaveReason)>,
    diverged: Vec<(usize, f64)>,
    last_lr: Vec<f64>,
    /// Every member's evaluation, by the fused model, when the chunk ended the epoch.
    evals: Option<Vec<crate::task::Eval>>,
}

/// Trains `members` (configs with one [`super::fused::fusion_key`]) as one fused model. One result per member, in
/// order; `say` prints the group's progress lines.
pub fn train_group(members: &[TrainOptions], say: &dyn Fn(&str)) -> Vec<Result<TrainSummary>> {
    let mut results: Vec<Option<Result<TrainSummary>>> = members.iter().map(|_| None).collect();
    let signals = match process::signals() {
        Ok(s) => s,
        Err(e) => return members.iter().map(|_| Err(copy_error(&e))).collect(),
    };
    let _deterministic = match deterministic(members) {
        Ok(d) => d,
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
        match attach(p, o, store, &members[*i], signals, true) {
            Ok(Attach::Train(a)) => attached.push((*i, p, *a)),
            Ok(Attach::Finished(s)) => results[*i] = Some(Ok(s)),
            Err(e) => results[*i] = Some(Err(e)),
        }
    }
    let started = Instant::now();
    let mut state: Vec<Member> = attached
        .iter_mut()
        .map(|(slot, _, a)| Member {
            slot: *slot,
            cursor: a.start.cursor,
            metrics: std::mem::take(&mut a.start.metrics),
            end: None,
            epoch_started: Instant::now(),
            trained: 0,
        })
        .collect();
    {
        let mut loops: Vec<Loop> = attached
            .iter_mut()
            .map(|(i, p, a)| Loop {
                cfg: p.cfg(),
                trainer: &mut a.trainer,
                saver: &mut a.saver,
                obs: &a.obs,
                signals,
                opts: &members[*i],
                device: p.device,
                run_dir: p.run_dir.clone(),
            })
            .collect();
        if !loops.is_empty() {
            say(&banner(&loops));
        }
        run_group(&mut loops, &mut state, say);
    }
    for ((_, p, a), m) in attached.into_iter().zip(state) {
        let out = m.end.unwrap_or(Ok(Outcome::Completed)).and_then(|o| conclude(p, a, o, m.metrics, started));
        results[m.slot] = Some(out);
    }
    results.into_iter().map(|r| r.unwrap_or_else(|| Err(Error::Runtime("the run was never started".into())))).collect()
}

/// `train.deterministic` for the whole process (the fusion key makes it the same for every member).
fn deterministic(members: &[TrainOptions]) -> Result<Deterministic> {
    let on = members.first().and_then(|o| prepare::load_config(o).ok()).is_some_and(|l| l.config.train.deterministic);
    Deterministic::set(on)
}

/// The group loop: chunks of fused steps from the common cursor of the members furthest behind. When the fused
/// model does not fit (out of memory), the group goes on in halves, down to one run at a time, instead of failing
/// every member: the chunk that failed wrote nothing, so it is simply trained again.
fn run_group(loops: &mut [Loop], members: &mut [Member], say: &dyn Fn(&str)) {
    let mut width = usize::MAX;
    loop {
        let active: Vec<usize> = (0..members.len()).filter(|&i| members[i].end.is_none()).collect();
        let Some(lead) = active.iter().map(|&i| members[i].cursor).min() else { return };
        let group: Vec<usize> = active.iter().copied().filter(|&i| members[i].cursor == lead).take(width).collect();
        let (epoch, start) = lead;
        let batches = loops[group[0]].trainer.steps_per_epoch() as usize;
        let stop_at = active
            .iter()
            .map(|&i| members[i].cursor)
            .filter(|c| c.0 == epoch && c.1 > start)
            .map(|c| c.1)
            .min()
            .unwrap_or(batches);
        for &i in &group {
            if start == 0 || members[i].trained == 0 {
                (members[i].epoch_started, members[i].trained) = (Instant::now(), 0);
            }
            if start == 0 {
                // A new epoch's accumulators, as `Trainer::run_epoch` resets them.
                let _ = loops[i].trainer.loss_sum.zero_();
            }
        }
        let what = || format!("training a fused group of {} runs, epoch {}", group.len(), epoch + 1);
        let chunk = boundary::catch(Phase::Training, &what, || chunk(loops, &group, epoch, start, stop_at));
        let chunk = match chunk {
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
                for &i in &group {
                    members[i].end = Some(Err(copy_error(&e)));
                }
                continue;
            }
        };
        settle(loops, members, &group, epoch, chunk, say);
    }
}

/// What the members of `group` do once a chunk stopped: record divergence, save, take a signal, end the epoch.
fn settle(loops: &mut [Loop], members: &mut [Member], group: &[usize], epoch: usize, c: Chunk, say: &dyn Fn(&str)) {
    let bs = loops[group[0]].cfg.train.batch_size;
    let n = loops[group[0]].trainer.epoch_len();
    let trained = (c.done * bs).min(n) - (members[group[0]].cursor.1 * bs).min(n);
    for &i in group {
        members[i].cursor = (epoch, c.done);
        members[i].trained += trained;
    }
    for &(i, value) in &c.diverged {
        members[i].end = Some(Err(Error::Diverged { value, epoch: epoch + 1, step: loops[i].trainer.step }));
    }
    for &(i, reason) in &c.saves {
        if members[i].end.is_none() {
            let m = &members[i];
            if let Err(e) = loops[i].save(m.cursor, &m.metrics, reason) {
                members[i].end = Some(Err(e));
            }
        }
    }
    if let Some(signal) = c.signal {
        for m in members.iter_mut().filter(|m| m.end.is_none()) {
            m.end = Some(Ok(Outcome::Preempted { signal, cursor: m.cursor }));
        }
        return;
    }
    if c.done < loops[group[0]].trainer.steps_per_epoch() as usize {
        return;
    }
    let mut ended = Vec::new();
    for (k, &i) in group.iter().enumerate() {
        if members[i].end.is_some() {
            continue;
        }
        let m = &mut members[i];
        let l = &mut loops[i];
        let eval = c.evals.as_ref().map(|e| e[k]);
        let out = l.trainer.end_epoch(epoch, c.last_lr[k], m.trained, m.epoch_started, eval).and_then(|metrics| {
            ended.push((i, metrics.clone()));
            l.after_epoch(epoch, metrics, &mut m.metrics)
        });
        m.cursor = (epoch + 1, 0);
        match out {
            Ok(None) => {}
            Ok(Some(o)) => m.end = Some(Ok(o)),
            Err(e) => m.end = Some(Err(e)),
        }
    }
    say(&epoch_line(loops, epoch, &ended));
}

/// Fused steps for the members `group` (all at `(epoch, start)`) up to batch `stop_at` or the first stop.
fn chunk(loops: &mut [Loop], group: &[usize], epoch: usize, start: usize, stop_at: usize) -> Result<Chunk> {
    let runtime = |e: String| Error::Runtime(format!("fused training: {e}"));
    test_oom(group.len())?;
    let trainers: Vec<&Trainer> = group.iter().map(|&i| &*loops[i].trainer).collect();
    let mut fused = Fused::gather(&trainers).map_err(runtime)?;
    let first = trainers[0];
    let (n, bs, steps_per_epoch) = (first.epoch_len(), first.cfg.train.batch_size, first.steps_per_epoch() as usize);
    let orders: Vec<tch::Tensor> =
        trainers.iter().map(|t| t.task.epoch_order(t.cfg.train.seed, epoch as u64).narrow(0, 0, n as i64)).collect();
    let mut step = first.step;
    let mut c =
        Chunk { done: start, signal: None, saves: Vec::new(), diverged: Vec::new(), last_lr: Vec::new(), evals: None };
    let policies: Vec<SavePolicy> = group.iter().map(|&i| SavePolicy::new(&loops[i].cfg.checkpoint)).collect();
    for b in start..stop_at {
        let (s, len) = (b * bs, bs.min(n - b * bs));
        let idx: Vec<tch::Tensor> = orders.iter().map(|o| o.narrow(0, s as i64, len as i64)).collect();
        c.last_lr = Fused::lrs(&trainers, step);
        let losses = fused.step(first.task.as_ref(), &idx, &c.last_lr).map_err(runtime)?;
        step += 1;
        c.done = b + 1;
        let logged = log_losses(&trainers, step, &losses)?;
        for (k, &i) in group.iter().enumerate() {
            let loss = logged.as_ref().map(|l| l[k]).filter(|_| every(trainers[k], step));
            loops[i].obs.step(step, loss, c.last_lr[k]);
            if let Some(v) = loss.filter(|v| !v.is_finite()) {
                c.diverged.push((i, v));
            }
            let since = loops[i].saver.seconds_since_save();
            let event = Event::Step { step, batches_done: c.done, steps_per_epoch, seconds_since_save: since };
            if let Some(reason) = policies[k].decide(event) {
                c.saves.push((i, reason));
            }
        }
        c.signal = loops[group[0]].signals.received();
        if c.signal.is_some() || !c.saves.is_empty() || !c.diverged.is_empty() {
            break;
        }
    }
    if c.done == steps_per_epoch && c.signal.is_none() && c.diverged.is_empty() {
        c.evals = Some(fused.evaluate(first).map_err(runtime)?);
    }
    let mut members: Vec<&mut Trainer> = Vec::with_capacity(group.len());
    for (i, l) in loops.iter_mut().enumerate() {
        if group.contains(&i) {
            members.push(&mut *l.trainer);
        }
    }
    fused.scatter(&mut members, step).map_err(runtime)?;
    Ok(c)
}

/// Whether `train.log_every` reads the loss back at `step` for this member.
fn every(t: &Trainer, step: u64) -> bool {
    let e = t.cfg.train.log_every;
    e > 0 && step.is_multiple_of(e)
}

/// The members' losses on the host, when any member logs at `step` (one sync for the group).
fn log_losses(trainers: &[&Trainer], step: u64, losses: &tch::Tensor) -> Result<Option<Vec<f64>>> {
    if !trainers.iter().any(|t| every(t, step)) {
        return Ok(None);
    }
    let host: Vec<f32> = Vec::<f32>::try_from(&losses.to_device(tch::Device::Cpu))?;
    Ok(Some(host.into_iter().map(f64::from).collect()))
}

/// The line printed when the group starts.
fn banner(loops: &[Loop]) -> String {
    let cfg = loops[0].cfg;
    let hidden: Vec<String> = cfg.model.hidden.iter().map(i64::to_string).collect();
    format!(
        "spotrun: training {} runs as one fused model (mlp hidden {}, batch {}, device {:?}, {} steps an epoch)",
        loops.len(),
        hidden.join("-"),
        cfg.train.batch_size,
        loops[0].device,
        loops[0].trainer.steps_per_epoch()
    )
}

/// One line per finished group epoch: how many runs, and the best of them by validation loss.
fn epoch_line(loops: &[Loop], epoch: usize, ended: &[(usize, EpochMetrics)]) -> String {
    let best = ended.iter().min_by(|a, b| a.1.val_loss.total_cmp(&b.1.val_loss));
    let best = best.map_or(String::new(), |(i, m)| {
        format!(" | best val_loss {:.4} ({})", m.val_loss, loops[*i].run_dir.display())
    });
    let secs = ended.first().map_or(0.0, |(_, m)| m.epoch_seconds);
    format!("epoch {}: {} runs in {secs:.2}s{best}", epoch + 1, ended.len())
}

/// Whether `e` is an allocation failure (typed, or a libtorch error saying so).
fn out_of_memory(e: &Error) -> bool {
    matches!(e, Error::OutOfMemory { .. }) || boundary::is_out_of_memory(&e.to_string())
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

/// The same error for every member of a group that one failure stopped (errors are not `Clone`).
fn copy_error(e: &Error) -> Error {
    match e {
        Error::OutOfMemory { message, before_training } => {
            Error::OutOfMemory { message: message.clone(), before_training: *before_training }
        }
        other => Error::Runtime(other.to_string()),
    }
}
