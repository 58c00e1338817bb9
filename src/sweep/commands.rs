//! The sweep subcommands' glue: run a library function, print its result, pick the exit code. `spotrun worker`
//! in each of its modes is here: the claimer ([`super::claim`]) does the work, the server ([`super::server`])
//! feeds it the launcher's jobs.
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::claim::{self, ClaimEnd, ClaimOptions};
use super::error::SweepError;
use super::estimate::{self, Rates};
use super::layout::{Layout, Plan};
use super::loaded::LoadedSweep;
use super::record::RunEnd;
use super::status;
use crate::error::{Error, Result};

/// Which runs a `spotrun worker` claims: `--index I`, `--group G`, `--next`, or `--serve` (the launcher's jobs,
/// one after another).
#[derive(Debug, Clone, Copy)]
pub(crate) enum WorkerMode {
    Index(usize),
    Group(usize),
    /// Part `part` of `parts` of group `group` ([`super::groups::part`]), from the launcher.
    Part {
        group: usize,
        part: usize,
        parts: usize,
    },
    Next,
    Serve,
}

/// `spotrun worker SWEEP --index I | --group G | --next | --serve`.
pub(crate) fn worker_cmd(sweep: &Path, mode: WorkerMode, o: &ClaimOptions) -> Result<ExitCode> {
    // Started by `spotrun sweep`: stop (with a checkpoint) if that launcher dies, rather than train unsupervised.
    if let Some(parent) = std::env::var("SPOTRUN_PARENT_PID").ok().and_then(|p| p.parse::<u32>().ok()) {
        crate::ffi::die_with_parent(signal_hook::consts::SIGTERM);
        if std::os::unix::process::parent_id() != parent {
            return Err(Error::Preempted {
                signal: signal_hook::consts::SIGTERM,
                message: "the launcher that started this worker is gone; not starting".into(),
            });
        }
    }
    // `--share K`: K workers on this worker's GPU (`spotrun sweep --per-gpu K`); each plans with its share of it.
    crate::device::set_workers_per_gpu(o.share);
    let mut ctx = LoadedSweep::load(sweep, o.volume.as_deref(), true)?;
    if o.no_fuse {
        ctx = ctx.with_fuse(super::spec::Fuse::Off);
    }
    // Checked before anything is written.
    if let (Some(s), WorkerMode::Index(_) | WorkerMode::Group(_) | WorkerMode::Part { .. }) = (ctx.sweep.schedule, mode)
    {
        return Err(SweepError::Usage(format!(
            "{}: a sweep with scheduler = \"{}\" decides which trial trains next through its study on the volume; \
             start generic workers with `spotrun worker {} --next` (no --index or --group)",
            ctx.sweep.file.display(),
            s.name(),
            sweep.display()
        ))
        .into());
    }
    match mode {
        WorkerMode::Index(i) => ctx.run(i).map(|_| ())?,
        WorkerMode::Group(g) => ctx.group(g).map(|_| ())?,
        WorkerMode::Part { .. } | WorkerMode::Next | WorkerMode::Serve => {}
    }
    ctx.write_plan()?;
    match mode {
        WorkerMode::Serve => super::server::serve(parse_job, |mode| job(&ctx, mode, o)),
        _ => job(&ctx, mode, o).map(ExitCode::from),
    }
}

/// One `--index`, `--group` or `--next`, to its exit code.
fn job(ctx: &LoadedSweep, mode: WorkerMode, o: &ClaimOptions) -> Result<u8> {
    match mode {
        WorkerMode::Index(i) => {
            ctx.run(i)?;
            let id = crate::config::short_id(&ctx.runs[i].id).to_string();
            match claim::run_index(ctx, i, o)? {
                ClaimEnd::AlreadyDone => say!("run #{i} {id} is already done"),
                ClaimEnd::Trained { end, epochs, .. } => say!("run #{i} {id}: {}", after(end, epochs)),
                ClaimEnd::Paused { history, .. } => say!("run #{i} {id}: paused after {} epochs", history.len()),
            }
            Ok(0)
        }
        WorkerMode::Group(g) => group_code(ctx, &ctx.group(g)?.runs, o),
        WorkerMode::Part { group, part, parts } => {
            group_code(ctx, super::groups::part(&ctx.group(group)?.runs, part, parts), o)
        }
        WorkerMode::Next | WorkerMode::Serve => {
            let (trained, failed) = match ctx.sweep.schedule {
                // A scheduled sweep's runs are the study's trials: its loop decides what trains next.
                Some(_) => super::study::run(ctx, o).map(|t| (t.trained, t.failed))?,
                None => claim::run_next(ctx, o)?,
            };
            let views = status::write_results(&ctx.layout, &ctx.plan)?;
            let left =
                views.iter().filter(|v| v.state != status::State::Done && v.state != status::State::Failed).count();
            say!("worker: trained {trained} run(s), {failed} failed; {left} not finished (held by other workers or pending)");
            Ok(u8::from(failed > 0))
        }
    }
}

/// A job line of `--serve`: `index I LOG`, `group G LOG` or `part G K N LOG`.
fn parse_job(line: &str) -> Option<(WorkerMode, PathBuf)> {
    let (kind, rest) = line.split_once(' ')?;
    let numbers = if kind == "part" { 3 } else { 1 };
    let mut fields = rest.splitn(numbers + 1, ' ');
    let mut n = Vec::with_capacity(numbers);
    for _ in 0..numbers {
        n.push(fields.next()?.parse::<usize>().ok()?);
    }
    let mode = match (kind, n.as_slice()) {
        ("index", [i]) => WorkerMode::Index(*i),
        ("group", [g]) => WorkerMode::Group(*g),
        ("part", [g, k, parts]) => WorkerMode::Part { group: *g, part: *k, parts: *parts },
        _ => return None,
    };
    Some((mode, PathBuf::from(fields.next()?)))
}

/// `spotrun worker --group G` (or a part of it): one line per run; its code is the group's (a preemption first, then a failure's
/// code, then 75 when every run left was held elsewhere).
fn group_code(ctx: &LoadedSweep, runs: &[usize], o: &ClaimOptions) -> Result<u8> {
    let mut preempted = None;
    let mut codes = Vec::new();
    for (i, result) in claim::run_runs(ctx, runs, o)? {
        let id = crate::config::short_id(&ctx.runs[i].id).to_string();
        match result {
            Ok(ClaimEnd::AlreadyDone) => say!("run #{i} {id} is already done"),
            Ok(ClaimEnd::Trained { end, epochs, .. }) => say!("run #{i} {id}: {}", after(end, epochs)),
            Ok(ClaimEnd::Paused { history, .. }) => say!("run #{i} {id}: paused after {} epochs", history.len()),
            Err(e @ Error::Preempted { .. }) => {
                tell!("run #{i} {id}: {e}");
                preempted = preempted.or(Some(e));
            }
            Err(e) => {
                tell!("error: run #{i} {id}: {e}");
                codes.push(e.code());
            }
        }
    }
    if let Some(e) = preempted {
        return Err(e);
    }
    let failed = codes.iter().copied().filter(|&c| c != crate::error::EXIT_BUSY).collect::<Vec<_>>();
    Ok(match (failed.first(), codes.first()) {
        (Some(&c), _) if failed.iter().all(|&x| x == c) => c,
        (Some(_), _) => 1,
        (None, Some(&busy)) => busy,
        (None, None) => 0,
    })
}

/// `completed after 3 epochs`, `pruned after 1 epoch`.
fn after(end: RunEnd, epochs: usize) -> String {
    format!("{} after {epochs} epoch{}", end.words(), if epochs == 1 { "" } else { "s" })
}

/// Resolves a status/report argument: a sweep directory (with `sweep.json`) or a sweep file plus volume.
fn sweep_dir(arg: &Path, volume: Option<&Path>) -> Result<(Layout, Plan)> {
    if arg.is_file() {
        let ctx = LoadedSweep::load(arg, volume, true)?;
        // A sweep that never launched on this volume (or the wrong --volume) is an error, not "all pending".
        match std::fs::symlink_metadata(ctx.layout.root.join("runs")) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SweepError::Usage(format!(
                    "sweep {:?} has not run on this volume: {} does not exist (launch it with `spotrun sweep`, or \
                     pass the --volume it ran on)",
                    ctx.sweep.name,
                    ctx.layout.root.display()
                ))
                .into())
            }
            Err(e) => return Err(SweepError::io(ctx.layout.root.join("runs"), e).into()),
        }
        let plan = Plan::read(&ctx.layout.root).unwrap_or(ctx.plan);
        return Ok((ctx.layout, plan));
    }
    let plan = Plan::read(arg)?;
    Ok((Layout { root: arg.to_path_buf() }, plan))
}

/// `spotrun status DIR [--json]`. Also rewrites the results files.
pub fn status_cmd(dir: &Path, volume: Option<&Path>, json: bool) -> Result<ExitCode> {
    let (layout, plan) = sweep_dir(dir, volume)?;
    let views = if layout.root.join("runs").is_dir() {
        status::results_or_warn(&layout, &plan)
    } else {
        status::collect(&layout, &plan)
    };
    let study = super::study::summary::read(&layout.root, plan.metric.higher_is_better())?;
    if json {
        let counts: serde_json::Map<String, serde_json::Value> =
            status::counts(&views).into_iter().map(|(k, v)| (k.as_str().to_string(), v.into())).collect();
        let best = status::best(&plan, &views, true).map(|(v, m)| {
            serde_json::json!({"index": v.plan.index, "run_id": v.plan.id, "status": v.state.as_str(), plan.metric.as_str(): m})
        });
        let out = serde_json::json!({
            "name": plan.name,
            "dir": layout.root,
            "metric": plan.metric.as_str(),
            "counts": counts,
            "best": best,
            "study": study,
            "runs": status::rows(&plan, &views),
        });
        say!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        let _ = write!(std::io::stdout().lock(), "{}", status::table(&plan, &views));
        if let Some(s) = &study {
            let _ = write!(std::io::stdout().lock(), "{}", s.lines(plan.metric.as_str()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `spotrun replay SWEEP TRIAL`: exit 0 when the replay ends byte-identical to the trial, 1 when it does not.
pub(crate) fn replay_cmd(
    sweep: &Path,
    trial: usize,
    volume: Option<&Path>,
    run_dir: Option<PathBuf>,
    quiet: bool,
) -> Result<ExitCode> {
    let ctx = LoadedSweep::load(sweep, volume, true)?;
    if ctx.sweep.pbt.is_none() {
        let m = format!(
            "{}: replay retrains a PBT trial's lineage; this sweep has no scheduler = \"pbt\"",
            sweep.display()
        );
        return Err(SweepError::Usage(m).into());
    }
    super::study::check_definition(&ctx)?;
    let dir = run_dir.unwrap_or_else(|| ctx.layout.root.join(format!("replay-{trial:04}")));
    let same = super::study::replay::replay(&ctx, trial, Some(dir.clone()), quiet)?;
    let verdict = if same { "byte-identical to" } else { "DIFFERENT from" };
    say!("replay of trial {trial}: {} is {verdict} the trial's weights", dir.join("model.safetensors").display());
    Ok(if same { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `spotrun estimate SWEEP --gpu NAME [--epoch-seconds S] [--workers N] [--rates FILE]`.
pub(crate) fn estimate_cmd(
    sweep: &Path,
    volume: Option<&Path>,
    gpu: &str,
    epoch_seconds: Option<f64>,
    workers: usize,
    rates: Option<&Path>,
) -> Result<ExitCode> {
    let ctx = LoadedSweep::load(sweep, volume, true)?;
    let rates = match rates {
        Some(p) => Rates::load(p)?,
        None => Rates::default(),
    };
    let rate = rates.get(gpu).ok_or_else(|| {
        SweepError::Usage(format!(
            "--gpu {gpu}: no hourly rate for it; known: {} (add it with --rates FILE)",
            rates.names()
        ))
    })?;
    let plan = Plan::read(&ctx.layout.root).unwrap_or_else(|_| ctx.plan.clone());
    let views = status::collect(&ctx.layout, &plan);
    let inputs = match ctx.sweep.schedule {
        Some(s) => {
            let configs = if ctx.sweep.method == super::spec::Method::Tpe { ctx.sweep.count } else { ctx.runs.len() };
            let budget = s.budget(configs);
            say!(
                "scheduler {}: {} configs spend about {} epochs, successive halving's budget (asynchronous promotions \
                 can add a few; a full search spends {})",
                s.name(),
                configs,
                budget.iter().sum::<usize>(),
                configs * s.epochs
            );
            estimate::budget_inputs(&budget, &views, epoch_seconds)
        }
        None => estimate::inputs(&views, epoch_seconds),
    }
    .map_err(SweepError::Usage)?;
    let e = estimate::estimate(&inputs, workers.max(1), rate);
    let on_cpu = views.iter().filter(|v| v.done.as_ref().is_some_and(|d| d.device == "cpu")).count();
    if on_cpu > 0 {
        tell!(
            "note: {on_cpu} measured run(s) trained on the CPU; their epoch times are priced here as {gpu} time, so \
             the estimate says what CPU-speed epochs would cost on that GPU (pass --epoch-seconds with a GPU-measured \
             epoch time for a real estimate)"
        );
    }
    let _ = write!(
        std::io::stdout().lock(),
        "{}",
        estimate::render(&ctx.sweep.name, gpu, rate, workers.max(1), &inputs, &e)
    );
    Ok(ExitCode::SUCCESS)
}

/// `spotrun report DIR [--out DIR]`.
pub fn report_cmd(dir: &Path, volume: Option<&Path>, out: Option<PathBuf>) -> Result<ExitCode> {
    let (layout, plan) = sweep_dir(dir, volume)?;
    let views = status::collect(&layout, &plan);
    let out = out.unwrap_or_else(|| layout.root.join("report"));
    let study = super::study::summary::read(&layout.root, plan.metric.higher_is_better())?;
    let files = super::report::write(&plan, &views, study.as_ref(), &out)?;
    say!("report: {} ({} charts)", out.join("index.html").display(), files.saturating_sub(1));
    Ok(ExitCode::SUCCESS)
}
