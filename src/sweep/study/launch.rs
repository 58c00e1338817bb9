//! `spotrun sweep` for a scheduled sweep: one generic worker per slot (`spotrun worker SNAPSHOT --next`), each
//! running the study's loop ([`super::run`]) until the study is complete. The launcher decides nothing: the
//! study on the volume does, so a second launcher, a Slurm array or a relaunch after a SIGKILL join the same
//! search. Signals are passed on (SIGHUP as SIGTERM, the third as SIGKILL); a worker that dies otherwise is
//! restarted, up to `retries` times per slot.
use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitCode};
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::error::Result;
use crate::sweep::error::SweepError;
use crate::sweep::incoming::Incoming;
use crate::sweep::loaded::LoadedSweep;
use crate::sweep::slots::{LaunchOptions, Slot};
use crate::sweep::status::{self, State};

/// One slot's worker process and how often it died unasked.
struct SlotWorker {
    slot: Slot,
    log: std::path::PathBuf,
    child: Option<Child>,
    deaths: u32,
    /// Exited 0: the study is complete as far as this worker can tell.
    finished: bool,
}

/// Runs the study on `slots` until it is complete (exit 0, or 1 when some trial failed) or a signal stops it
/// (128 + signal, every worker having saved its trial's checkpoint).
pub(in crate::sweep) fn launch(
    ctx: &LoadedSweep,
    o: &LaunchOptions,
    slots: &[Slot],
    snapshot: &Path,
    signals: &Incoming,
) -> Result<ExitCode> {
    let exe = std::env::current_exe().map_err(|e| SweepError::io("/proc/self/exe", e))?;
    let mut workers: Vec<SlotWorker> = slots
        .iter()
        .map(|s| SlotWorker { slot: s.clone(), log: log_path(ctx, s), child: None, deaths: 0, finished: false })
        .collect();
    let retries = o.retries.unwrap_or(ctx.sweep.retries);
    let mut forwarded = 0;
    loop {
        let stopping = signals.last();
        forward(&mut workers, signals, &mut forwarded);
        for w in workers.iter_mut().filter(|w| !w.finished) {
            if w.child.is_none() && stopping.is_none() && w.deaths <= retries {
                w.child = Some(spawn(&exe, snapshot, ctx, w, o)?);
            }
            reap(w, stopping.is_some(), o.quiet);
        }
        let running = workers.iter().any(|w| w.child.is_some());
        if !running {
            if let Some(sig) = stopping {
                tell!(
                    "spotrun sweep: stopped by {}; run the same command to continue the study",
                    crate::trainer::signal_name(sig)
                );
                return Ok(ExitCode::from((128 + sig).clamp(0, 255) as u8));
            }
            if workers.iter().all(|w| w.finished || w.deaths > retries) {
                return Ok(finish(ctx, workers.iter().all(|w| w.finished)));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Passes each new signal on to the workers.
fn forward(workers: &mut [SlotWorker], signals: &Incoming, forwarded: &mut usize) {
    let n = signals.count.load(Ordering::SeqCst);
    let Some(got) = signals.last().filter(|_| n > *forwarded) else { return };
    let pass = match (n, got) {
        (3.., _) => 9,
        (_, 1) => 15,
        _ => got,
    };
    for c in workers.iter().filter_map(|w| w.child.as_ref()) {
        crate::ffi::send_signal(c.id(), pass);
    }
    *forwarded = n;
}

/// Notes a worker's exit: finished (0), stopped by the launcher's signal, or died (restarted later).
fn reap(w: &mut SlotWorker, stopping: bool, quiet: bool) {
    let Some(c) = w.child.as_mut() else { return };
    let Ok(Some(status)) = c.try_wait() else { return };
    w.child = None;
    if status.success() {
        w.finished = true;
    } else if status.code() == Some(2) {
        // Bad input (the sweep, a config, the journal): the same again on a restart; its log says what.
        w.deaths = u32::MAX;
        tell!("error: the worker on {} stopped on bad input; its log says why: {}", w.slot.name, w.log.display());
    } else if !stopping {
        w.deaths += 1;
        if !quiet {
            let how = status
                .code()
                .map_or_else(|| format!("signal {}", status.signal().unwrap_or(0)), |c| format!("exit {c}"));
            tell!("spotrun sweep: the worker on {} ended with {how}; starting another", w.slot.name);
        }
    }
}

/// `VOLUME/<name>/workers/<slot>.log`.
fn log_path(ctx: &LoadedSweep, slot: &Slot) -> std::path::PathBuf {
    ctx.layout.root.join("workers").join(format!("{}.log", slot.name.replace('/', "-").replace(':', "")))
}

/// Starts a slot's worker, its output appended to its log.
fn spawn(exe: &Path, snapshot: &Path, ctx: &LoadedSweep, w: &SlotWorker, o: &LaunchOptions) -> Result<Child> {
    let (slot, path) = (&w.slot, &w.log);
    let dir = ctx.layout.root.join("workers");
    std::fs::create_dir_all(&dir).map_err(|e| SweepError::io(&dir, e))?;
    let open = || OpenOptions::new().create(true).append(true).open(path).map_err(|e| SweepError::io(path, e));
    let mut log = open()?;
    let _ = writeln!(log, "--- spotrun sweep: study worker started at unix_ms {} ---", crate::sweep::lease::now_ms());
    let mut cmd = Command::new(exe);
    cmd.arg("worker")
        .arg(snapshot)
        .arg("--next")
        .arg("--volume")
        .arg(ctx.layout.root.parent().unwrap_or(Path::new(".")))
        .env("SPOTRUN_PARENT_PID", std::process::id().to_string())
        .stdout(open()?)
        .stderr(log)
        .process_group(0);
    if let Some(r) = o.retries {
        cmd.args(["--retries", &r.to_string()]);
    }
    if let Some(t) = slot.threads {
        cmd.args(["--threads", &t.to_string()]);
    }
    match slot.cuda {
        Some(g) => cmd.env("CUDA_VISIBLE_DEVICES", g.to_string()),
        None => cmd.env("CUDA_VISIBLE_DEVICES", ""),
    };
    cmd.spawn().map_err(|e| SweepError::io(exe, e).into())
}

/// The study is complete (or its workers gave up): the results table (from `sweep.json` as the workers left it:
/// a TPE study's runs are its trials); 0 when every run is done.
fn finish(ctx: &LoadedSweep, all_finished: bool) -> ExitCode {
    let plan = crate::sweep::Plan::read(&ctx.layout.root).unwrap_or_else(|_| ctx.plan.clone());
    let views = status::results_or_warn(&ctx.layout, &plan);
    let _ = write!(std::io::stdout().lock(), "{}", status::table(&plan, &views));
    let _ = writeln!(std::io::stdout().lock(), "results: {}", ctx.layout.results_csv().display());
    if all_finished && views.iter().all(|v| v.state == State::Done) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
