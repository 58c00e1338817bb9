//! `spotrun sweep`: maps runs (and fused groups of runs) over device slots until every run is done or failed for
//! good. Each slot has one long-lived child, a `spotrun worker --serve` process ([`super::child`]), that trains
//! job after job without reloading the data or libtorch, and is restarted when it dies.
//!
//! Slots are GPUs (`--gpus 0,1 --per-gpu K`: K children per GPU, each with `CUDA_VISIBLE_DEVICES` set) or CPU
//! slots (`--workers N`: each gets `cores / N` threads, split between its K children). The launcher owns no
//! claim itself: each child claims its run's lease on the volume, so any number of launchers (or Slurm, Modal,
//! Kubernetes workers) can share one volume. A preempted child (exit 128 + signal) is requeued without counting
//! as a failure; a failed one is retried with exponential backoff, up to `retries` times.
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::child::{Job, JobEnd, SlotChild};
use super::display::Display;
use super::error::SweepError;
use super::exits::{after_failure, classify, AfterFailure, ChildEnd};
use super::incoming::Incoming;
use super::lease;
use super::loaded::LoadedSweep;
use super::record::{self, Attempt, AttemptEnd, AttemptEvent, Failed};
use super::retry::RetrySettings;
use super::slots::{slots, LaunchOptions, Slot};
use super::snapshot::Snapshot;
use super::status::{self, State};
use crate::error::Result;

enum RunState {
    Waiting { not_before: Instant },
    Active,
    Finished,
}

/// Runs the sweep to completion. Exit 0 when every run is done, 1 when some failed, 128 + signal when stopped.
pub fn launch(sweep_path: &Path, o: &LaunchOptions) -> Result<ExitCode> {
    if !(o.backoff_seconds.is_finite() && o.backoff_seconds >= 0.0) {
        let msg = format!("--backoff must be a number of seconds >= 0, got {}", o.backoff_seconds);
        return Err(SweepError::Usage(msg).into());
    }
    // Everything is checked before the volume is touched.
    let mut ctx = LoadedSweep::load(sweep_path, o.volume.as_deref(), true)?;
    if o.no_fuse {
        ctx = ctx.with_fuse(super::spec::Fuse::Off);
    }
    let gpus = crate::device::list_gpus().map(|g| g.len()).unwrap_or(0);
    if let Some(bad) = o.gpus.iter().flatten().find(|&&g| g >= gpus) {
        let msg = format!("--gpus: cuda:{bad} does not exist ({gpus} CUDA device(s) visible)");
        return Err(SweepError::Usage(msg).into());
    }
    let slots = slots(o, gpus, crate::device::cpu_threads());
    if o.dry_run {
        print_plan(&ctx, &slots);
        return Ok(ExitCode::SUCCESS);
    }
    super::study::check_definition(&ctx)?;
    ctx.write_plan()?;
    // Children read a snapshot of the sweep (base inlined), so editing the file mid-sweep cannot shift what an
    // index means under a running launcher.
    let snapshot = Snapshot::of(sweep_path)?;
    let snapshot_path = ctx.layout.root.join(snapshot.launched_name());
    snapshot.write(&snapshot_path)?;
    let signals = Incoming::install()?;
    if ctx.sweep.schedule.is_some() {
        return super::study::launch::launch(&ctx, o, &slots, &snapshot_path, &signals);
    }
    let mut l = Launcher::new(&ctx, o, &slots, &snapshot_path)?;
    l.display.line(&format!(
        "spotrun sweep {}: {} runs on {} slot(s) [{}] (slot = DEVICE/k: the k-th of the --per-gpu runs sharing \
         that GPU or CPU slot) -> {}",
        ctx.sweep.name,
        ctx.runs.len(),
        slots.len(),
        slots.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", "),
        ctx.layout.root.display()
    ));
    loop {
        l.forward(&signals);
        l.reap(signals.last())?;
        match signals.last() {
            Some(sig) if l.idle() => return Ok(l.stopped(sig)),
            Some(_) => {}
            None if l.fill()? => break,
            None => {}
        }
        l.refresh();
        l.wait(Duration::from_millis(100));
    }
    Ok(l.finish())
}

/// `--dry-run`: the runs and slots, nothing started.
fn print_plan(ctx: &LoadedSweep, slots: &[Slot]) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "sweep {}: {} runs ({} duplicate entries dropped) -> {}\nslots (DEVICE/k: the k-th of the --per-gpu runs \
         sharing a GPU or CPU slot): {}",
        ctx.sweep.name,
        ctx.runs.len(),
        ctx.duplicates,
        ctx.layout.root.display(),
        slots.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
    );
    for r in &ctx.plan.runs {
        let id = crate::config::short_id(&r.id);
        let _ = writeln!(out, "{:>4}  {id}  {} epochs  {}", r.index, r.epochs, r.label());
    }
    if let Some(s) = ctx.sweep.schedule {
        let configs = if ctx.sweep.method == super::spec::Method::Tpe { ctx.sweep.count } else { ctx.runs.len() };
        let brackets: Vec<String> = (0..s.brackets())
            .map(|b| s.rungs(b).iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "))
            .collect();
        let _ = writeln!(
            out,
            "study: {} configs ({} proposes them), scheduler {}: rungs at epochs [{}]; every decision is a record in \
             {}/study/, shared by every worker on this volume. Adaptive sweeps train one run per process (unfused) \
             for now.",
            configs,
            ctx.sweep.method.name(),
            s.name(),
            brackets.join("] and ["),
            ctx.layout.root.display()
        );
        return;
    }
    let _ = write!(out, "{}", super::groups::describe(&ctx.groups, ctx.sweep.fuse));
    let jobs = super::groups::jobs(&ctx.groups, devices(slots));
    if jobs.len() != ctx.groups.len() {
        let parts: Vec<String> = jobs.iter().map(|(what, runs)| format!("{what} ({} runs)", runs.len())).collect();
        let _ = writeln!(
            out,
            "with {} devices, fused groups train in parts, one per device: {}",
            devices(slots),
            parts.join(", ")
        );
    }
}

/// The launcher's state between polls.
struct Launcher<'a> {
    ctx: &'a LoadedSweep,
    o: &'a LaunchOptions,
    slots: &'a [Slot],
    sweep_path: &'a Path,
    exe: PathBuf,
    retry: RetrySettings,
    display: Display,
    states: Vec<RunState>,
    /// slot -> its child (a long-lived `spotrun worker --serve` process)
    children: BTreeMap<usize, SlotChild>,
    /// What the children are handed: runs, fused groups, or parts of them (see [`super::groups::jobs`]).
    jobs: Vec<(String, Vec<usize>)>,
    /// Woken when a child reports a job's end, so the next job starts at once.
    wake: (mpsc::Sender<()>, mpsc::Receiver<()>),
    preemptions: Vec<usize>,
    /// Failures seen by this launcher, for children that die before recording one.
    seen_failures: Vec<usize>,
    forwarded: usize,
    last_refresh: Instant,
}

impl<'a> Launcher<'a> {
    fn new(
        ctx: &'a LoadedSweep,
        o: &'a LaunchOptions,
        slots: &'a [Slot],
        sweep_path: &'a Path,
    ) -> Result<Launcher<'a>> {
        let now = Instant::now();
        Ok(Launcher {
            ctx,
            o,
            slots,
            sweep_path,
            exe: std::env::current_exe().map_err(|e| SweepError::io("/proc/self/exe", e))?,
            retry: RetrySettings {
                retries: o.retries.unwrap_or(ctx.sweep.retries) as usize,
                backoff_seconds: o.backoff_seconds,
            },
            display: Display::new(o.quiet, ctx),
            states: ctx.runs.iter().map(|_| RunState::Waiting { not_before: now }).collect(),
            children: BTreeMap::new(),
            jobs: super::groups::jobs(&ctx.groups, devices(slots)),
            wake: mpsc::channel(),
            preemptions: vec![0; ctx.runs.len()],
            seen_failures: vec![0; ctx.runs.len()],
            forwarded: 0,
            last_refresh: now - Duration::from_secs(1),
        })
    }

    /// Passes each new signal on to the children (SIGHUP as SIGTERM; the third signal as SIGKILL).
    fn forward(&mut self, signals: &Incoming) {
        let n = signals.count.load(Ordering::SeqCst);
        let Some(got) = signals.last().filter(|_| n > self.forwarded) else { return };
        let pass = match (n, got) {
            (3.., _) => 9,
            (_, 1) => 15,
            _ => got,
        };
        self.display.line(&format!(
            "spotrun sweep: got {}; passing {} to {} worker(s)",
            crate::trainer::signal_name(got),
            crate::trainer::signal_name(pass),
            self.children.values().filter(|w| w.job.is_some()).count()
        ));
        for w in self.children.values() {
            crate::ffi::send_signal(w.pid(), pass);
        }
        self.forwarded = n;
    }

    /// Handles every job that ended since the last poll (reported by its child, or with the child's death).
    fn reap(&mut self, stopping: Option<i32>) -> Result<()> {
        let slots: Vec<usize> = self.children.keys().copied().collect();
        for slot in slots {
            let Some(w) = self.children.get_mut(&slot) else { continue };
            let pid = w.pid();
            let (ended, gone) = w.poll();
            if gone {
                if let Some(w) = self.children.remove(&slot) {
                    w.close();
                }
            }
            let Some((job, end)) = ended else { continue };
            for &i in &job.runs {
                let dir = self.ctx.layout.run_dir(&self.ctx.runs[i].id);
                // A group's child reports non-zero when one member failed; the others are done all the same.
                let done =
                    (end.code == Some(0) || job.runs.len() > 1) && record::maybe_present(&dir.join(record::DONE));
                let code = if done { Some(0) } else { end.code };
                let class = classify(code, end.signal, done, self.preemptions[i]);
                self.on_end(&job, pid, i, class, end, stopping.is_some());
            }
            let _ = status::write_results(&self.ctx.layout, &self.ctx.plan);
        }
        Ok(())
    }

    /// Sleeps until a child reports a job's end, at most `d`.
    fn wait(&self, d: Duration) {
        if self.wake.1.recv_timeout(d).is_ok() {
            while self.wake.1.try_recv().is_ok() {}
        }
    }

    /// Whether no job is in flight.
    fn idle(&self) -> bool {
        self.children.values().all(|w| w.job.is_none())
    }

    fn on_end(&mut self, a: &Job, pid: u32, i: usize, end: ChildEnd, status: JobEnd, stopping: bool) {
        let secs = a.started.elapsed().as_secs_f64();
        let run = &self.ctx.runs[i];
        let dir = self.ctx.layout.run_dir(&run.id);
        let short = crate::config::short_id(&run.id);
        self.states[i] = RunState::Waiting { not_before: Instant::now() };
        if end != ChildEnd::Done {
            self.display.close(i);
        }
        match end {
            ChildEnd::Done => {
                self.states[i] = RunState::Finished;
                self.display.finished(run.index, &record::read_json(&dir.join(record::DONE)), secs);
            }
            ChildEnd::Busy => {
                self.states[i] = RunState::Waiting { not_before: Instant::now() + Duration::from_secs(2) };
                self.display.line(&format!("#{} {short} is held by another worker; will check again", run.index));
            }
            ChildEnd::Preempted { signal, killed } => {
                self.preemptions[i] += 1;
                if killed {
                    record_end(&dir, pid, AttemptEnd::Preempted, Some(128 + signal), secs);
                }
                let next = if stopping { "will resume on relaunch" } else { "requeued, resumes from its checkpoint" };
                let name = crate::trainer::signal_name(signal);
                self.display.line(&format!("#{} {short} preempted ({name}); {next}", run.index));
            }
            ChildEnd::Failed { crashed, .. } => {
                if crashed {
                    record_end(&dir, pid, AttemptEnd::Crashed, status.code.or(status.signal.map(|s| 128 + s)), secs);
                }
                self.on_failure(i, end, status, &a.log);
            }
        }
    }

    /// A failed attempt: retry with backoff, record the run as failed for good, or leave it to its new holder.
    fn on_failure(&mut self, i: usize, end: ChildEnd, status: JobEnd, log: &Path) {
        let run = &self.ctx.runs[i];
        let dir = self.ctx.layout.run_dir(&run.id);
        self.seen_failures[i] += 1;
        let tail = record::tail(log, 2000);
        let failures = record::failures(&record::attempts(&dir)).max(self.seen_failures[i]);
        let path = dir.join(record::FAILED);
        let marker: Option<Failed> = record::read_json(&path);
        let held = lease::holder(&dir, self.ctx.sweep.lease_seconds).is_some();
        let action = after_failure(failures, self.retry, end, self.preemptions[i], marker.is_some(), held);
        match action {
            AfterFailure::Leave => {
                self.states[i] = RunState::Waiting { not_before: Instant::now() + Duration::from_secs(2) };
            }
            AfterFailure::GiveUp => {
                let mut f = marker.unwrap_or_else(|| Failed {
                    run_id: run.id.clone(),
                    index: run.index,
                    failures,
                    exit_code: status.code,
                    error: last_error_line(&tail).unwrap_or_else(|| format!("worker exited with {status}")),
                    stderr_tail: String::new(),
                    unix_ms: lease::now_ms(),
                });
                if f.stderr_tail.is_empty() {
                    f.stderr_tail = tail;
                    let _ = record::write_json(&path, &f);
                }
                self.states[i] = RunState::Finished;
                self.display.failed(run.index, &f);
            }
            AfterFailure::Retry { delay_seconds } => {
                self.states[i] =
                    RunState::Waiting { not_before: Instant::now() + Duration::from_secs_f64(delay_seconds) };
                self.display.line(&format!(
                    "#{} {} failed ({status}), retry {failures}/{} in {delay_seconds:.0}s: {}",
                    run.index,
                    crate::config::short_id(&run.id),
                    self.retry.retries,
                    last_error_line(&tail).unwrap_or_default()
                ));
            }
        }
    }

    /// Fills idle slots with runs (or fused groups) that are neither finished on the volume nor held elsewhere,
    /// starting a slot's child when it has none. True when nothing is running and every run is finished.
    fn fill(&mut self) -> Result<bool> {
        for (si, slot) in self.slots.iter().enumerate() {
            if self.children.get(&si).is_some_and(|w| w.job.is_some()) {
                continue;
            }
            let Some(j) = next_job(self.ctx, &self.jobs, &mut self.states) else { break };
            let (what, runs) = self.jobs[j].clone();
            let log = match runs.as_slice() {
                [i] => self.ctx.layout.run_dir(&self.ctx.runs[*i].id).join("worker.log"),
                _ => self.ctx.layout.root.join("groups").join(format!("{}.log", what.replace(' ', "-"))),
            };
            begin_log(&log, &slot.name)?;
            if !self.children.contains_key(&si) {
                let w = spawn(&self.exe, self.sweep_path, self.ctx, slot, self.o, self.wake.0.clone())?;
                self.children.insert(si, w);
            }
            let job = Job { runs: runs.clone(), started: Instant::now(), log };
            let started = self.children.get_mut(&si).map(|w| w.start(&what, job));
            if !matches!(started, Some(Ok(()))) {
                // The child died idle: the next poll reaps it and the next fill starts another.
                continue;
            }
            for &i in &runs {
                self.display.started(i, &slot.name);
                self.states[i] = RunState::Active;
            }
        }
        Ok(self.idle() && self.states.iter().all(|s| matches!(s, RunState::Finished)))
    }

    fn refresh(&mut self) {
        if self.last_refresh.elapsed() >= Duration::from_millis(500) {
            let running: Vec<usize> =
                self.children.values().filter_map(|w| w.job.as_ref()).flat_map(|j| j.runs.iter().copied()).collect();
            let finished = self.states.iter().filter(|s| matches!(s, RunState::Finished)).count();
            self.display.refresh(&running, finished);
            self.last_refresh = Instant::now();
        }
    }

    /// Closes every child's stdin and waits for them (idle ones exit at once).
    fn close_children(&mut self) {
        for (_, w) in std::mem::take(&mut self.children) {
            w.close();
        }
    }

    /// Stopped by a signal once every job ended: what is done, and how to finish.
    fn stopped(&mut self, sig: i32) -> ExitCode {
        self.close_children();
        self.display.clear();
        let views = status::results_or_warn(&self.ctx.layout, &self.ctx.plan);
        tell!(
            "spotrun sweep: stopped by {}; {} of {} runs done. Run the same command to finish the sweep.",
            crate::trainer::signal_name(sig),
            views.iter().filter(|v| v.state == State::Done).count(),
            views.len()
        );
        ExitCode::from((128 + sig).clamp(0, 255) as u8)
    }

    /// Every run finished: the results table; exit 0 when all are done, 1 when some failed.
    fn finish(&mut self) -> ExitCode {
        self.close_children();
        self.display.clear();
        let views = status::results_or_warn(&self.ctx.layout, &self.ctx.plan);
        let _ = write!(std::io::stdout().lock(), "{}", status::table(&self.ctx.plan, &views));
        let _ = writeln!(std::io::stdout().lock(), "results: {}", self.ctx.layout.results_csv().display());
        if views.iter().all(|v| v.state == State::Done) {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    }
}

/// How many devices the slots have: GPUs (the `--per-gpu K` slots of one GPU share it), or CPU slots (each has
/// its own threads).
fn devices(slots: &[Slot]) -> usize {
    let gpus: std::collections::BTreeSet<usize> = slots.iter().filter_map(|s| s.cuda).collect();
    if gpus.is_empty() {
        slots.len()
    } else {
        gpus.len()
    }
}

/// The next job with a run to start, in order; marks runs found finished on the volume. A job starts when none
/// of its runs is being trained and one of them is ready.
fn next_job(ctx: &LoadedSweep, jobs: &[(String, Vec<usize>)], states: &mut [RunState]) -> Option<usize> {
    let now = Instant::now();
    let mut ready = vec![false; states.len()];
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
        ready[i] = true;
    }
    jobs.iter().position(|(_, runs)| {
        runs.iter().any(|&i| ready[i]) && !runs.iter().any(|&i| matches!(states[i], RunState::Active))
    })
}

/// Appends the line that starts an attempt to a job's log (creating its directory).
fn begin_log(log_path: &Path, slot: &str) -> Result<()> {
    let dir = log_path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| SweepError::io(dir, e))?;
    let mut log =
        OpenOptions::new().create(true).append(true).open(log_path).map_err(|e| SweepError::io(log_path, e))?;
    let _ = writeln!(log, "--- spotrun sweep: attempt started at unix_ms {} on slot {slot} ---", lease::now_ms());
    Ok(())
}

/// Starts a slot's child (`spotrun worker --serve`), its stderr in `VOLUME/<name>/workers/` until its first job.
fn spawn(
    exe: &Path,
    sweep: &Path,
    ctx: &LoadedSweep,
    slot: &Slot,
    o: &LaunchOptions,
    wake: mpsc::Sender<()>,
) -> Result<SlotChild> {
    let dir = ctx.layout.root.join("workers");
    std::fs::create_dir_all(&dir).map_err(|e| SweepError::io(&dir, e))?;
    let path = dir.join(format!("{}.log", slot.name.replace('/', "-").replace(':', "")));
    let err = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| SweepError::io(&path, e))?;
    let mut cmd = Command::new(exe);
    cmd.arg("worker")
        .arg(sweep)
        .arg("--serve")
        .args(["--share", &o.per_gpu.max(1).to_string()])
        .arg("--volume")
        .arg(ctx.layout.root.parent().unwrap_or(Path::new(".")))
        .env("SPOTRUN_PARENT_PID", std::process::id().to_string())
        .stderr(err)
        // Its own process group: a Ctrl-C at the terminal reaches the launcher only, which passes it on once.
        .process_group(0);
    if let Some(r) = o.retries {
        cmd.args(["--retries", &r.to_string()]);
    }
    if let Some(t) = slot.threads {
        cmd.args(["--threads", &t.to_string()]);
    }
    if o.no_fuse {
        cmd.arg("--no-fuse");
    }
    match slot.cuda {
        Some(g) => cmd.env("CUDA_VISIBLE_DEVICES", g.to_string()),
        None => cmd.env("CUDA_VISIBLE_DEVICES", ""),
    };
    SlotChild::spawn(cmd, wake).map_err(|e| SweepError::io(exe, e).into())
}

fn record_end(dir: &Path, pid: u32, outcome: AttemptEnd, code: Option<i32>, seconds: f64) {
    let _ = record::append_attempt(
        dir,
        &Attempt {
            event: AttemptEvent::End,
            pid,
            host: lease::hostname(),
            lease: lease::newest(dir).map_or(0, |(g, _, _)| g),
            unix_ms: lease::now_ms(),
            step: 0,
            outcome: Some(outcome),
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
    fn per_gpu_slots_count_as_one_device_and_cpu_slots_as_one_each() {
        let o = LaunchOptions { gpus: Some(vec![0, 1]), per_gpu: 3, ..Default::default() };
        assert_eq!(devices(&slots(&o, 2, 16)), 2);
        let o = LaunchOptions { workers: Some(3), per_gpu: 1, ..Default::default() };
        assert_eq!(devices(&slots(&o, 0, 6)), 3);
    }

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
