//! `spotrun sweep`: maps `spotrun worker --index I` child processes over device slots until every run is done
//! or failed for good.
//!
//! Slots are GPUs (`--gpus 0,1 --per-gpu K`: K children per GPU, each with `CUDA_VISIBLE_DEVICES` set) or CPU
//! slots (`--workers N`: each gets `cores / N` threads, split between its K children). The launcher owns no
//! claim itself: each child claims its run's lease on the volume, so any number of launchers (or Slurm, Modal,
//! Kubernetes workers) can share one volume. A preempted child (exit 128 + signal) is requeued without counting
//! as a failure; a failed one is retried with exponential backoff, up to `retries` times.
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::display::Display;
use super::error::{SweepError, EXIT_BUSY};
use super::lease;
use super::record::{self, Attempt, Failed};
use super::status::{self, State};
use super::worker::Ctx;
use crate::error::Result;

/// Signals that mean "the machine is going away" rather than "the run is broken".
const PREEMPTION_SIGNALS: [i32; 6] = [1, 2, 9, 10, 12, 15];
/// A run preempted this many times in one launch is treated as failing (e.g. an OOM killer loop).
const MAX_PREEMPTIONS: usize = 20;

#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    pub volume: Option<PathBuf>,
    pub workers: Option<usize>,
    pub gpus: Option<Vec<usize>>,
    pub per_gpu: usize,
    pub retries: Option<u32>,
    /// First retry delay after a failure, doubled per failure (capped at 5 minutes).
    pub backoff_seconds: f64,
    pub dry_run: bool,
    pub quiet: bool,
}

/// Where a child runs.
#[derive(Debug, Clone)]
pub struct Slot {
    pub name: String,
    pub cuda: Option<usize>,
    pub threads: Option<usize>,
}

/// The slots for these options: explicit GPUs, explicit CPU workers, else every visible GPU, else one CPU slot.
pub fn slots(o: &LaunchOptions, visible_gpus: usize, cores: usize) -> Vec<Slot> {
    let k = o.per_gpu.max(1);
    let gpus: Vec<usize> = match (&o.gpus, o.workers) {
        (Some(g), _) => g.clone(),
        (None, None) => (0..visible_gpus).collect(),
        (None, Some(_)) => Vec::new(),
    };
    if !gpus.is_empty() {
        return gpus
            .iter()
            .flat_map(|&g| (0..k).map(move |j| Slot { name: format!("cuda:{g}/{j}"), cuda: Some(g), threads: None }))
            .collect();
    }
    let n = o.workers.unwrap_or(1).max(1);
    let threads = (cores / n / k).max(1);
    (0..n)
        .flat_map(|i| (0..k).map(move |j| Slot { name: format!("cpu{i}/{j}"), cuda: None, threads: Some(threads) }))
        .collect()
}

enum RunState {
    Waiting { not_before: Instant },
    Active,
    Finished,
}

struct Active {
    child: Child,
    index: usize,
    started: Instant,
}

/// Runs the sweep to completion. Exit 0 when every run is done, 1 when some failed, 128 + signal when stopped.
pub fn launch(sweep_path: &Path, o: &LaunchOptions) -> Result<ExitCode> {
    if !(o.backoff_seconds.is_finite() && o.backoff_seconds >= 0.0) {
        return Err(SweepError::Usage(format!(
            "--backoff must be a number of seconds >= 0, got {}",
            o.backoff_seconds
        ))
        .into());
    }
    // Everything is checked before the volume is touched.
    let ctx = Ctx::load(sweep_path, o.volume.as_deref(), true)?;
    let gpus = crate::device::list_gpus().map(|g| g.len()).unwrap_or(0);
    if let Some(bad) = o.gpus.iter().flatten().find(|&&g| g >= gpus) {
        return Err(
            SweepError::Usage(format!("--gpus: cuda:{bad} does not exist ({gpus} CUDA device(s) visible)")).into()
        );
    }
    if !o.dry_run {
        ctx.plan.write(&ctx.layout)?;
    }
    let slots = slots(o, gpus, crate::device::cpu_threads());
    let retries = o.retries.unwrap_or(ctx.sweep.retries) as usize;
    let mut out = std::io::stdout().lock();
    if o.dry_run {
        let _ = writeln!(
            out,
            "sweep {}: {} runs ({} duplicate entries dropped) -> {}\nslots: {}",
            ctx.sweep.name,
            ctx.runs.len(),
            ctx.duplicates,
            ctx.layout.root.display(),
            slots.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
        );
        for r in &ctx.runs {
            let _ = writeln!(
                out,
                "{:>4}  {}  {} epochs  {}",
                r.index,
                crate::config::short_id(&r.id),
                r.config.train.epochs,
                r.label()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    drop(out);

    // Children read a snapshot of the sweep (base inlined), so editing the file mid-sweep cannot shift what an
    // index means under a running launcher.
    let snapshot = snapshot(&ctx, sweep_path)?;
    let sweep_path = snapshot.as_path();
    // Every signal counts: the first is passed on, a repeat passed on again (a second SIGINT makes workers exit
    // at once), a third kills them.
    let (sig, count) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    {
        let mut it = signal_hook::iterator::Signals::new([1, 2, 10, 12, 15])
            .map_err(|e| SweepError::Usage(format!("cannot install signal handlers: {e}")))?;
        let (sig, count) = (Arc::clone(&sig), Arc::clone(&count));
        std::thread::spawn(move || {
            for s in it.forever() {
                sig.store(s as usize, Ordering::SeqCst);
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    let mut display = Display::new(o.quiet, &ctx);
    display.line(&format!(
        "spotrun sweep {}: {} runs on {} slot(s) [{}] -> {}",
        ctx.sweep.name,
        ctx.runs.len(),
        slots.len(),
        slots.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", "),
        ctx.layout.root.display()
    ));
    let now = Instant::now();
    let mut states: Vec<RunState> = ctx.runs.iter().map(|_| RunState::Waiting { not_before: now }).collect();
    let mut active: BTreeMap<usize, Active> = BTreeMap::new(); // slot -> child
    let mut preemptions = vec![0usize; ctx.runs.len()];
    // Failures seen by this launcher, for workers that die before recording one.
    let mut seen_failures = vec![0usize; ctx.runs.len()];
    let mut forwarded = 0usize;
    let exe = std::env::current_exe().map_err(|e| SweepError::io("/proc/self/exe", e))?;
    let mut last_refresh = Instant::now() - Duration::from_secs(1);
    loop {
        let got = sig.load(Ordering::SeqCst);
        let n_signals = count.load(Ordering::SeqCst);
        if n_signals > forwarded {
            // SIGHUP (terminal gone) means the same as SIGTERM to a worker.
            let pass = match (n_signals, got) {
                (3.., _) => 9,
                (_, 1) => 15,
                _ => got as i32,
            };
            display.line(&format!(
                "spotrun sweep: got {}; passing {} to {} worker(s)",
                crate::trainer::signal_name(got as i32),
                crate::trainer::signal_name(pass),
                active.len()
            ));
            for a in active.values() {
                crate::ffi::send_signal(a.child.id(), pass);
            }
            forwarded = n_signals;
        }
        // Reap children.
        let slots_done: Vec<usize> =
            active.iter_mut().filter_map(|(s, a)| a.child.try_wait().ok().flatten().map(|_| *s)).collect();
        for s in slots_done {
            let Some(mut a) = active.remove(&s) else { continue };
            let status = a.child.wait().map_err(|e| SweepError::io("worker", e))?;
            let run = &ctx.runs[a.index];
            let dir = ctx.layout.run_dir(&run.id);
            let secs = a.started.elapsed().as_secs_f64();
            let code = status.code();
            let signal = status.signal().or_else(|| code.filter(|c| *c > 128).map(|c| c - 128));
            states[a.index] = RunState::Waiting { not_before: Instant::now() };
            if code == Some(0) && record::maybe_present(&dir.join(record::DONE)) {
                states[a.index] = RunState::Finished;
                display.finished(run.index, &record::read_json(&dir.join(record::DONE)), secs);
            } else if code == Some(EXIT_BUSY as i32) {
                states[a.index] = RunState::Waiting { not_before: Instant::now() + Duration::from_secs(2) };
                display.close(a.index);
                display.line(&format!(
                    "#{} {} is held by another worker; will check again",
                    run.index,
                    crate::config::short_id(&run.id)
                ));
            } else if signal.is_some_and(|s| PREEMPTION_SIGNALS.contains(&s)) && preemptions[a.index] < MAX_PREEMPTIONS
            {
                preemptions[a.index] += 1;
                display.close(a.index);
                if status.signal().is_some() {
                    // Killed outright: the worker could not record the end of its attempt.
                    record_end(&dir, a.child.id(), "preempted", status.signal().map(|s| 128 + s), secs);
                }
                display.line(&format!(
                    "#{} {} preempted ({}); {}",
                    run.index,
                    crate::config::short_id(&run.id),
                    crate::trainer::signal_name(signal.unwrap_or(15)),
                    if got != 0 { "will resume on relaunch" } else { "requeued, resumes from its checkpoint" }
                ));
            } else {
                display.close(a.index);
                if status.signal().is_some() || !matches!(code, Some(0..=2)) {
                    record_end(&dir, a.child.id(), "crashed", code.or(status.signal().map(|s| 128 + s)), secs);
                }
                seen_failures[a.index] += 1;
                let tail = record::tail(&dir.join("worker.log"), 2000);
                let failures = record::failures(&record::attempts(&dir)).max(seen_failures[a.index]);
                let path = dir.join(record::FAILED);
                let mut failed: Option<Failed> = record::read_json(&path);
                // Exit 2 is bad input (retrying cannot help); write the marker only while nobody holds the run.
                let give_up = failures > retries || code == Some(2) || preemptions[a.index] >= MAX_PREEMPTIONS;
                if failed.is_none() && give_up && lease::holder(&dir, ctx.sweep.lease_seconds).is_none() {
                    failed = Some(Failed {
                        run_id: run.id.clone(),
                        index: run.index,
                        failures,
                        exit_code: code,
                        error: last_error_line(&tail).unwrap_or_else(|| format!("worker exited with {status}")),
                        stderr_tail: String::new(),
                        unix_ms: lease::now_ms(),
                    });
                }
                if failed.is_none() && give_up {
                    // Someone else holds the run now: leave it to them.
                    states[a.index] = RunState::Waiting { not_before: Instant::now() + Duration::from_secs(2) };
                } else if let Some(mut f) = failed {
                    if f.stderr_tail.is_empty() {
                        f.stderr_tail = tail;
                        let _ = record::write_json(&path, &f);
                    }
                    states[a.index] = RunState::Finished;
                    display.failed(run.index, &f);
                } else {
                    let delay = o.backoff_seconds * 2f64.powi(failures.saturating_sub(1) as i32);
                    let delay = Duration::from_secs_f64(delay.clamp(0.0, 300.0));
                    states[a.index] = RunState::Waiting { not_before: Instant::now() + delay };
                    display.line(&format!(
                        "#{} {} failed ({status}), retry {failures}/{retries} in {:.0}s: {}",
                        run.index,
                        crate::config::short_id(&run.id),
                        delay.as_secs_f64(),
                        last_error_line(&tail).unwrap_or_default()
                    ));
                }
            }
            let _ = status::write_results(&ctx.layout, &ctx.plan);
        }
        if got != 0 {
            if active.is_empty() {
                display.clear();
                let views = status::results_or_warn(&ctx.layout, &ctx.plan);
                tell!(
                    "spotrun sweep: stopped by {}; {} of {} runs done. Run the same command to finish the sweep.",
                    crate::trainer::signal_name(got as i32),
                    views.iter().filter(|v| v.state == State::Done).count(),
                    views.len()
                );
                drop(snapshot);
                return Ok(ExitCode::from((128 + got).min(255) as u8));
            }
        } else {
            // Fill free slots with runs that are neither finished on the volume nor held elsewhere.
            for (si, slot) in slots.iter().enumerate() {
                if active.contains_key(&si) {
                    continue;
                }
                let Some(i) = next_run(&ctx, &mut states) else { break };
                let run = &ctx.runs[i];
                let dir = ctx.layout.run_dir(&run.id);
                let child = spawn(&exe, sweep_path, &ctx, i, slot, o, &dir)?;
                display.started(i, &slot.name);
                states[i] = RunState::Active;
                active.insert(si, Active { child, index: i, started: Instant::now() });
            }
            if active.is_empty() && states.iter().all(|s| matches!(s, RunState::Finished)) {
                break;
            }
        }
        if last_refresh.elapsed() >= Duration::from_millis(500) {
            let running: Vec<usize> = active.values().map(|a| a.index).collect();
            let finished = states.iter().filter(|s| matches!(s, RunState::Finished)).count();
            display.refresh(&running, finished);
            last_refresh = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    display.clear();
    let views = status::results_or_warn(&ctx.layout, &ctx.plan);
    let _ = write!(std::io::stdout().lock(), "{}", status::table(&ctx.plan, &views));
    let _ = writeln!(std::io::stdout().lock(), "results: {}", ctx.layout.results_csv().display());
    let all_done = views.iter().all(|v| v.state == State::Done);
    Ok(if all_done { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The sweep as children read it: `VOLUME/<name>/launched-<sha256 of the text, 12 hex>.toml`, base inlined. Named
/// by its content, so relaunching the same sweep reuses the file, launchers sharing a volume never remove one
/// another's, a killed launcher leaves nothing behind that the next one does not reuse, and the volume records
/// every version of the sweep that ran.
fn snapshot(ctx: &Ctx, sweep: &Path) -> Result<PathBuf> {
    use sha2::{Digest, Sha256};
    let text = super::spec::self_contained(sweep)?;
    let tag: String = Sha256::digest(text.as_bytes()).iter().take(6).map(|b| format!("{b:02x}")).collect();
    let path = ctx.layout.root.join(format!("launched-{tag}.toml"));
    if std::fs::read(&path).ok().as_deref() != Some(text.as_bytes()) {
        crate::checkpoint::write_atomic(&path, text.as_bytes()).map_err(|e| SweepError::io(&path, e))?;
    }
    Ok(path)
}

/// The next run to start, in index order; marks runs found finished on the volume.
fn next_run(ctx: &Ctx, states: &mut [RunState]) -> Option<usize> {
    let now = Instant::now();
    for (i, st) in states.iter_mut().enumerate() {
        let RunState::Waiting { not_before } = *st else { continue };
        let dir = ctx.layout.run_dir(&ctx.runs[i].id);
        if record::maybe_present(&dir.join(record::DONE)) || record::maybe_present(&dir.join(record::FAILED)) {
            *st = RunState::Finished;
            continue;
        }
        if not_before > now {
            continue;
        }
        if lease::holder(&dir, ctx.sweep.lease_seconds).is_some() {
            *st = RunState::Waiting { not_before: now + Duration::from_secs(2) };
            continue;
        }
        return Some(i);
    }
    None
}

fn spawn(exe: &Path, sweep: &Path, ctx: &Ctx, i: usize, slot: &Slot, o: &LaunchOptions, dir: &Path) -> Result<Child> {
    std::fs::create_dir_all(dir).map_err(|e| SweepError::io(dir, e))?;
    let log_path = dir.join("worker.log");
    let mut log =
        OpenOptions::new().create(true).append(true).open(&log_path).map_err(|e| SweepError::io(&log_path, e))?;
    let _ =
        writeln!(log, "--- spotrun sweep: attempt started at unix_ms {} on slot {} ---", lease::now_ms(), slot.name);
    let err = log.try_clone().map_err(|e| SweepError::io(&log_path, e))?;
    let mut cmd = Command::new(exe);
    cmd.arg("worker")
        .arg(sweep)
        .args(["--index", &i.to_string(), "--share", &o.per_gpu.max(1).to_string()])
        .arg("--volume")
        .arg(ctx.layout.root.parent().unwrap_or(Path::new(".")))
        .env("SPOTRUN_PARENT_PID", std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        // Its own process group: a Ctrl-C at the terminal reaches the launcher only, which passes it on once.
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

fn record_end(dir: &Path, pid: u32, outcome: &str, code: Option<i32>, seconds: f64) {
    let _ = record::append_attempt(
        dir,
        &Attempt {
            event: "end".into(),
            pid,
            host: lease::hostname(),
            lease: lease::newest(dir).map_or(0, |(g, _, _)| g),
            unix_ms: lease::now_ms(),
            step: 0,
            outcome: Some(outcome.into()),
            exit_code: code,
            error: Some("recorded by the launcher: the worker died without recording its end".into()),
            seconds,
        },
    );
}

fn last_error_line(tail: &str) -> Option<String> {
    tail.lines().rev().find(|l| l.starts_with("error:") || l.contains("panicked")).map(str::to_string)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn slots_split_gpus_and_cpu_threads() {
        let o = LaunchOptions { gpus: Some(vec![0, 1]), per_gpu: 2, ..Default::default() };
        let s = slots(&o, 2, 16);
        assert_eq!(s.len(), 4);
        assert_eq!(s.iter().filter(|s| s.cuda == Some(1)).count(), 2);
        let o = LaunchOptions { workers: Some(2), per_gpu: 1, ..Default::default() };
        let s = slots(&o, 8, 16);
        assert!(s.iter().all(|s| s.cuda.is_none() && s.threads == Some(8)), "--workers means CPU slots");
        let o = LaunchOptions { workers: Some(1), per_gpu: 2, ..Default::default() };
        assert!(slots(&o, 0, 2).iter().all(|s| s.threads == Some(1)));
        let o = LaunchOptions { per_gpu: 1, ..Default::default() };
        assert_eq!(slots(&o, 3, 2).len(), 3, "default: every visible GPU");
        assert_eq!(slots(&o, 0, 2).len(), 1, "default without GPUs: one CPU slot");
    }
}
