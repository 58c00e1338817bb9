//! `spotrun train`: config → device → data → model → run directory → resume → epochs with checkpoints.
//!
//! Order matters for "bad input leaves files untouched": the config, the device request, the data and the model
//! are all checked before the run directory is created or any file in it is written. The same command starts a
//! run, resumes it from the newest checkpoint that verifies, or reports that it already finished.
use std::path::{Path, PathBuf};
use std::time::Instant;

use tch::nn::VarStore;
use tch::Device;

use super::fit::{Flow, Trainer};
use super::lock::RunLocks;
use super::metrics::EpochMetrics;
use super::progress::Progress;
use super::resume::{compatible, same_data};
use super::rundir;
use super::signals::{self, Signals};
use crate::boundary::{self, Phase};
use crate::checkpoint::{self, append_line, write_atomic, Manifest, Skipped, Snapshot, Store, Writer, FORMAT_VERSION};
use crate::config::{self, Config, ConfigError, LoadedConfig};
use crate::data::Dataset;
use crate::device;
use crate::error::{Error, Result};
use crate::{ffi, model};

/// Called after every epoch with the history so far; returning true ends the run there (sweep pruning).
#[derive(Clone)]
pub struct EpochHook(pub std::sync::Arc<EpochHookFn>);

/// The function inside an [`EpochHook`].
pub type EpochHookFn = dyn Fn(&[EpochMetrics]) -> bool + Send + Sync;

impl std::fmt::Debug for EpochHook {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("EpochHook")
    }
}

/// Asked before every write to the run directory (checkpoints, metrics, weights); false means another process
/// owns the run now (a sweep lease was taken over), and the run stops with [`Error::LeaseLost`] without writing.
#[derive(Clone)]
pub struct OwnerCheck(pub std::sync::Arc<dyn Fn() -> bool + Send + Sync>);

impl std::fmt::Debug for OwnerCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("OwnerCheck")
    }
}

impl OwnerCheck {
    fn ensure(this: &Option<OwnerCheck>) -> Result<()> {
        match this {
            Some(c) if !(c.0)() => Err(Error::LeaseLost(
                "another worker took this run over (this one stalled past lease_seconds); stopped without writing"
                    .into(),
            )),
            _ => Ok(()),
        }
    }
}

/// What `spotrun train` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    pub config: Option<PathBuf>,
    pub sets: Vec<String>,
    pub run_dir: Option<PathBuf>,
    pub quiet: bool,
    /// Resume even if the checkpoint was written with a different config.
    pub allow_config_change: bool,
    /// Train from scratch even though the run directory holds trained results and no usable checkpoint (they are
    /// moved aside into `RUN_DIR/replaced-<time>/`, never deleted).
    pub start_over: bool,
    /// An already resolved config (from a sweep); when set, `config` and `sets` are ignored.
    pub loaded: Option<LoadedConfig>,
    /// Checked after each epoch that early stopping did not end; true stops the run ([`RunStatus::Pruned`]).
    pub epoch_hook: Option<EpochHook>,
    /// Checked before every write (sweep workers pass their lease).
    pub owner_check: Option<OwnerCheck>,
}

/// How a `train` command ended (preemption is an [`Error::Preempted`], with its own exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Completed,
    /// Stopped before `train.epochs` by `train.early_stopping`.
    StoppedEarly,
    /// Stopped by [`TrainOptions::epoch_hook`].
    Pruned,
    /// The newest checkpoint already covered every epoch; nothing was trained.
    AlreadyFinished,
}

/// The result of a `train` command.
#[derive(Debug)]
pub struct TrainSummary {
    pub run_id: String,
    pub run_dir: PathBuf,
    pub status: RunStatus,
    pub metrics: Vec<EpochMetrics>,
    /// What checkpointing cost this process (zero when nothing was trained).
    pub checkpoints: CheckpointCost,
}

/// How long checkpoint saves held up the training loop in this process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CheckpointCost {
    pub saves: usize,
    /// Time the loop spent in saves: the whole save when synchronous, the host copy (plus any wait for the
    /// previous save) with `checkpoint.async`, and the final wait for the writer.
    pub paused_seconds: f64,
    /// Wall time of the training loop (epochs, evaluation and saves) in this process.
    pub loop_seconds: f64,
}

/// Runs `spotrun train` end to end.
pub fn train(opts: &TrainOptions) -> Result<TrainSummary> {
    let signals = Signals::install().map_err(|e| Error::Runtime(format!("cannot install signal handlers: {e}")))?;
    let loaded = match &opts.loaded {
        Some(l) => l.clone(),
        None => config::load(opts.config.as_deref(), &opts.sets)?,
    };
    let cfg = &loaded.config;
    let run_id = config::config_hash(cfg)?;
    if cfg.train.deterministic {
        // cuBLAS reads this when its first handle is created, so it must be set before any CUDA work.
        std::env::set_var("CUBLAS_WORKSPACE_CONFIG", ":4096:8");
        ffi::set_deterministic(true).map_err(|e| Error::Device(e.to_string()))?;
    }
    let request = device::parse_device(&cfg.train.device).unwrap_or(device::DeviceRequest::Auto);
    let dev = device::select(request).map_err(Error::Device)?;
    let threads = if cfg.train.threads == 0 { device::cpu_threads() } else { cfg.train.threads };
    // Lines printed after the banner: warnings and notes gathered during start-up.
    let mut lines = Vec::new();
    if threads > device::cpu_threads() {
        lines.push(format!(
            "warning: train.threads = {threads} but this machine has {} CPU threads; oversubscribed threads slow \
             training down",
            device::cpu_threads()
        ));
    }
    tch::set_num_threads(threads as i32);

    let run_dir = opts.run_dir.clone().unwrap_or_else(|| default_run_dir(cfg, &run_id));
    rundir::check_creatable(&run_dir)?;
    let loading = || {
        format!("loading the data ({})", cfg.data.path.as_ref().map_or("synthetic".into(), |p| p.display().to_string()))
    };
    let mut data = boundary::catch(Phase::Setup, &loading, || Ok(Dataset::load(&cfg.data, &cfg.model)?))?;
    lines.extend(data.warnings.iter().map(|w| format!("warning: {w}")));
    test_startup_delay();
    let free = match dev {
        Device::Cuda(i) => device::gpu_info(i).ok().map(|g| g.free_bytes as u64),
        _ => None,
    };
    let mb = data.nbytes() as f64 / 1e6;
    let placing = || format!("moving the data ({mb:.1} MB) to {dev:?}");
    let data_on_device = boundary::catch(Phase::Setup, &placing, || Ok(data.place(dev, cfg.data.on_device, free)))?;
    check_model_fits(cfg, &data, dev)?;
    tch::manual_seed(cfg.train.seed as i64);
    let vs = VarStore::new(dev);
    let building = || format!("building the model ({})", model::describe(&cfg.model, &data.sample_shape, data.classes));
    let net = boundary::catch(Phase::Setup, &building, || {
        model::build(&vs.root(), &cfg.model, &data.sample_shape, data.classes)
            .map_err(|(key, message)| ConfigError::Key { file: loaded.origin.clone(), key, message }.into())
    })?;
    let ckpt_dir = cfg.checkpoint.dir.clone().unwrap_or_else(|| run_dir.join("checkpoints"));
    check_run_dir(&run_dir, cfg, opts.allow_config_change)?;
    // A standalone run locks its directory and its checkpoint directory (sweep workers hold a lease instead): at
    // once where the directory exists, so a second process stops before reading checkpoints; otherwise when it
    // is created, below.
    let standalone = opts.owner_check.is_none();
    let mut locks = RunLocks::new(if standalone { vec![run_dir.clone(), ckpt_dir.clone()] } else { vec![] });
    locks.take(false)?;

    // Find the checkpoint to resume from (everything newer that does not verify is reported and skipped) and
    // check it fits this config and data, before anything is printed: a refusal is the only output. A checkpoint
    // directory that cannot be listed is an error, never "no checkpoints" (which would start the run over).
    let store = Store::new(ckpt_dir.clone(), cfg.checkpoint.keep_last);
    let unlistable = |e: std::io::Error| {
        let why = format!("cannot list checkpoints ({e}); refusing to treat it as empty and start over");
        Error::io(&ckpt_dir, std::io::Error::new(e.kind(), why))
    };
    let listed = store.list().map_err(unlistable)?;
    rundir::check_owner(&run_dir, &ckpt_dir, !listed.is_empty())?;
    let mut skipped = Vec::new();
    let found = store.latest_good(Device::Cpu, &mut |s| skipped.push(s)).map_err(unlistable)?;
    lines.extend(skipped.iter().map(|s| match s {
        Skipped::Uncommitted(_) => format!("note: {s}"),
        Skipped::Bad { .. } => format!("warning: {s}"),
    }));
    let mut replace = false;
    if found.is_none() {
        let t = rundir::trained(&run_dir, &skipped)?;
        if t.any() && !opts.start_over {
            return Err(rundir::refuse_retraining(&run_dir, &ckpt_dir, &t));
        }
        replace = t.any();
    }
    if let Some(l) = &found {
        let old: Config = serde_json::from_value(l.manifest.config.clone())
            .map_err(|e| Error::RunDir(format!("{}: manifest config does not parse: {e}", l.dir.display())))?;
        match compatible(&old, cfg, opts.allow_config_change) {
            Ok(note) => lines.extend(note.map(|n| format!("note: {n}"))),
            Err(changed) => return Err(incompatible(&l.dir, &changed)),
        }
        let recorded = l.manifest.data_fingerprint.as_deref();
        match same_data(recorded, &data.fingerprint, &data.origin, opts.allow_config_change) {
            Ok(note) => lines.extend(note.map(|n| format!("note: {n}"))),
            Err(why) => return Err(Error::RunDir(format!("{}: {why}", l.dir.display()))),
        }
    }

    let optimizer = || format!("creating the {} state for the model", optim_name(cfg.optim.kind));
    let mut trainer =
        boundary::catch(Phase::Setup, &optimizer, || Ok(Trainer::new(cfg, &vs, net.as_ref(), &data, dev)))?;
    let progress = Progress::new(opts.quiet, trainer.total_steps(), cfg.train.epochs);
    progress.println(&banner(cfg, &run_id, &run_dir, dev, threads, &trainer, &data, data_on_device, &vs));
    lines.iter().for_each(|l| progress.println(l));
    let (mut cursor, mut metrics) = ((0usize, 0usize), Vec::<EpochMetrics>::new());
    let mut last_save_seconds = None;
    let resumed = found.is_some();
    let resumed_step = found.as_ref().map(|l| l.manifest.step);
    if let Some(l) = found {
        trainer
            .restore(&l.model, &l.state, l.manifest.step)
            .map_err(|e| Error::RunDir(format!("{}: cannot resume from this checkpoint: {e}", l.dir.display())))?;
        metrics = l.manifest.metrics.iter().filter_map(|v| serde_json::from_value(v.clone()).ok()).collect();
        cursor = (l.manifest.epoch, l.manifest.batch);
        last_save_seconds = Some(l.manifest.save_seconds);
        let verb = if finished(cfg, cursor.0, &metrics) { "already finished at" } else { "resuming from" };
        progress.println(&format!(
            "{verb} {} (epoch {}, batch {}, step {})",
            l.dir.display(),
            cursor.0 + 1,
            cursor.1,
            l.manifest.step
        ));
    }
    let weights = run_dir.join("model.safetensors");
    if finished(cfg, cursor.0, &metrics) {
        // Nothing to train: leave the run directory as it is, except for restoring lost final weights.
        progress.finish();
        if !weights.exists() {
            std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
            checkpoint::save(&weights, &named_variables(&vs))?;
        }
        return Ok(TrainSummary {
            run_id,
            run_dir,
            status: RunStatus::AlreadyFinished,
            metrics,
            checkpoints: CheckpointCost::default(),
        });
    }
    // A signal during start-up (data loading, model build, finding the checkpoint) stops here, before the first
    // step: nothing new exists to save, and the same command starts from the same place.
    if let Some(sig) = signals.received() {
        progress.finish();
        let from = if resumed { "the checkpoint it resumed from stays the newest" } else { "no run files written" };
        return Err(Error::Preempted {
            signal: sig,
            message: format!(
                "preempted by {} during start-up, before the first step; nothing to save ({from}). Run the same \
                 command to resume.",
                signals::name(sig)
            ),
        });
    }
    locks.take(true)?;
    locks.warnings().for_each(|w| progress.println(&format!("warning: {w}")));
    if replace {
        if let Some(to) = rundir::move_aside(&run_dir, &ckpt_dir)? {
            progress.println(&format!("--start-over: the previous results were moved to {}", to.display()));
        }
    }
    rundir::claim(&run_dir, &ckpt_dir)?;
    write_run_files(&run_dir, &loaded, &run_id, &metrics)?;

    let mut saver = Saver {
        writer: Writer::new(store, cfg.checkpoint.background),
        cfg,
        run_id: &run_id,
        // A save of the step resumed from would first un-commit the very checkpoint it resumed from.
        last_step: resumed_step,
        last_time: Instant::now(),
        last_save_seconds,
        owner: opts.owner_check.clone(),
        cost: CheckpointCost::default(),
        data_fingerprint: data.fingerprint.clone(),
        marker: (!run_dir.join(rundir::CHECKPOINTED).exists()).then(|| run_dir.clone()),
    };
    let loop_started = Instant::now();
    let metrics_path = run_dir.join("metrics.jsonl");
    let steps_per_epoch = trainer.steps_per_epoch() as usize;
    let mut print_startup = std::env::var_os("SPOTRUN_PRINT_STARTUP").is_some();
    let mut stepped_here = false;
    for epoch in cursor.0..cfg.train.epochs {
        let start_batch = if epoch == cursor.0 { cursor.1 } else { 0 };
        let mut stopped: Option<(i32, usize)> = None;
        let at =
            || format!("training epoch {} (train.batch_size = {}, device {dev:?})", epoch + 1, cfg.train.batch_size);
        let outcome = boundary::catch(Phase::Training, &at, || {
            trainer.run_epoch(epoch, start_batch, &progress, &mut |t, done| {
                stepped_here = true;
                if print_startup {
                    print_startup = false;
                    let s = super::startup::seconds_since_process_start().unwrap_or(f64::NAN);
                    tell!("startup: first step done {s:.3}s after process start");
                }
                if let Some(sig) = signals.received() {
                    stopped = Some((sig, done));
                    return Ok(Flow::Stop);
                }
                if done < steps_per_epoch {
                    if let Some(reason) = saver.due_mid_epoch(t.step) {
                        saver.save(t, (epoch, done), &metrics, reason)?;
                    }
                }
                Ok(Flow::Continue)
            })
        })
        .map_err(|e| if stepped_here { e } else { oom_before_training(e) })?;
        let Some(m) = outcome else {
            let (sig, done) = stopped.unwrap_or((signal_hook::consts::SIGTERM, 0));
            return Err(saver.preempt(&trainer, sig, (epoch, done), &metrics, &progress));
        };
        progress.epoch(&m);
        OwnerCheck::ensure(&opts.owner_check)?;
        append_line(&metrics_path, &m.to_json_line()).map_err(|e| Error::io(&metrics_path, e))?;
        metrics.push(m);
        let stop_early = cfg.train.early_stopping.as_ref().is_some_and(|es| super::early::should_stop(&metrics, es));
        if stop_early {
            progress.println(&format!(
                "early stopping after epoch {}: {} stopped improving",
                epoch + 1,
                cfg.train.early_stopping.as_ref().map_or("", |es| es.metric.as_str())
            ));
        }
        let pruned =
            !stop_early && epoch + 1 < cfg.train.epochs && opts.epoch_hook.as_ref().is_some_and(|h| (h.0)(&metrics));
        if pruned {
            progress.println(&format!("pruned after epoch {}", epoch + 1));
        }
        let stop_early = stop_early || pruned;
        let last = epoch + 1 == cfg.train.epochs || stop_early;
        let every = cfg.checkpoint.every_epochs;
        if last || (every > 0 && (epoch + 1) % every == 0) {
            saver.save(&trainer, (epoch + 1, 0), &metrics, if last { "final" } else { "epoch" })?;
        }
        if stop_early {
            break;
        }
        if let Some(sig) = signals.received() {
            if !last {
                return Err(saver.preempt(&trainer, sig, (epoch + 1, 0), &metrics, &progress));
            }
        }
    }
    progress.finish();
    let flush_started = Instant::now();
    saver.flush()?;
    saver.cost.paused_seconds += flush_started.elapsed().as_secs_f64();
    saver.cost.loop_seconds = loop_started.elapsed().as_secs_f64();
    OwnerCheck::ensure(&opts.owner_check)?;
    checkpoint::save(&weights, &named_variables(&vs))?;
    let status = match metrics.last() {
        Some(m) if m.epoch >= cfg.train.epochs => RunStatus::Completed,
        _ if finished(cfg, 0, &metrics) => RunStatus::StoppedEarly,
        _ => RunStatus::Pruned,
    };
    let checkpoints = saver.cost;
    Ok(TrainSummary { run_id, run_dir, status, metrics, checkpoints })
}

/// An out-of-memory before this process finished a step is the config asking for too much (exit 2, like one
/// found before training); later it may be fragmentation or a neighbour on the GPU (exit 1).
fn oom_before_training(e: Error) -> Error {
    match e {
        Error::OutOfMemory { message, .. } => Error::OutOfMemory { message, before_training: true },
        other => other,
    }
}

/// Refuses a model whose parameters, gradients and optimizer state cannot fit in the memory `dev` has left
/// (counted without allocating anything), with what was asked and what to change.
fn check_model_fits(cfg: &Config, data: &Dataset, dev: Device) -> Result<()> {
    let params = model::param_count(&cfg.model, &data.sample_shape, data.classes);
    let copies: u128 = match (cfg.optim.kind, cfg.optim.momentum > 0.0) {
        (crate::config::OptimKind::Adamw, _) => 4, // weights, gradients, two moments
        (crate::config::OptimKind::Sgd, true) => 3,
        (crate::config::OptimKind::Sgd, false) => 2,
    };
    let needed = params * 4 * copies;
    let (available, place) = match dev {
        Device::Cuda(i) => (device::gpu_info(i).ok().map(|g| g.free_bytes as u64), format!("cuda:{i} has")),
        _ => (device::host_available_bytes(), "this machine has".to_string()),
    };
    let Some(available) = available else { return Ok(()) };
    if needed <= available as u128 {
        return Ok(());
    }
    let key =
        if cfg.model.kind == crate::config::ModelKind::Cnn { "model.channels / model.hidden" } else { "model.hidden" };
    Err(Error::OutOfMemory {
        message: format!(
            "the model ({}) has {params} parameters: {} as fp32, {} with gradients and {} state, but {place} {} \
             free; make it smaller ({key})",
            model::describe(&cfg.model, &data.sample_shape, data.classes),
            human_bytes(params * 4),
            human_bytes(needed),
            optim_name(cfg.optim.kind),
            human_bytes(available as u128)
        ),
        before_training: true,
    })
}

fn optim_name(k: crate::config::OptimKind) -> &'static str {
    match k {
        crate::config::OptimKind::Adamw => "adamw",
        crate::config::OptimKind::Sgd => "sgd",
    }
}

/// `12.5 GB`-style sizes (decimal units).
fn human_bytes(b: u128) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    format!("{v:.1} {}", units[i])
}

/// A run is finished when every epoch ran or early stopping (a pure function of the history) says so.
fn finished(cfg: &Config, epochs_done: usize, metrics: &[EpochMetrics]) -> bool {
    epochs_done >= cfg.train.epochs
        || cfg.train.early_stopping.as_ref().is_some_and(|es| super::early::should_stop(metrics, es))
}

/// Decides when to checkpoint and builds the snapshots.
struct Saver<'a> {
    writer: Writer,
    cfg: &'a Config,
    run_id: &'a str,
    last_step: Option<u64>,
    last_time: Instant,
    /// How long the newest save took (from this process or the checkpoint resumed from).
    last_save_seconds: Option<f64>,
    owner: Option<OwnerCheck>,
    cost: CheckpointCost,
    /// [`Dataset::fingerprint`] of the data this process trains on.
    data_fingerprint: String,
    /// The run directory, until its [`rundir::CHECKPOINTED`] record is written after the first commit.
    marker: Option<PathBuf>,
}

impl Saver<'_> {
    fn due_mid_epoch(&self, step: u64) -> Option<&'static str> {
        let c = &self.cfg.checkpoint;
        if c.every_steps > 0 && step.is_multiple_of(c.every_steps) {
            return Some("steps");
        }
        if c.every_seconds > 0.0 && self.last_time.elapsed().as_secs_f64() >= c.every_seconds {
            return Some("seconds");
        }
        None
    }

    /// Snapshots the trainer at `cursor` (epoch in progress, batches done) and hands it to the writer.
    fn save(&mut self, t: &Trainer, cursor: (usize, usize), metrics: &[EpochMetrics], reason: &str) -> Result<()> {
        if self.last_step == Some(t.step) {
            return Ok(());
        }
        OwnerCheck::ensure(&self.owner)?;
        if let Some(done) = self.writer.last() {
            self.last_save_seconds = Some(done.save_seconds);
        }
        let started = Instant::now();
        let (model, state) = t.snapshot();
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            run_id: self.run_id.to_string(),
            config: serde_json::to_value(self.cfg).unwrap_or_default(),
            epoch: cursor.0,
            batch: cursor.1,
            step: t.step,
            finished: finished(self.cfg, cursor.0, metrics),
            metrics: metrics.iter().filter_map(|m| serde_json::to_value(m).ok()).collect(),
            rng: "reseeded from (train.seed, epoch, batch) before every step".into(),
            data_fingerprint: Some(self.data_fingerprint.clone()),
            files: Vec::new(),
            reason: reason.into(),
            save_seconds: 0.0,
            created_unix_ms: 0,
        };
        self.writer.save(Snapshot { model, state, manifest, started })?;
        self.mark_checkpointed()?;
        self.cost.saves += 1;
        self.cost.paused_seconds += started.elapsed().as_secs_f64();
        self.last_step = Some(t.step);
        self.last_time = Instant::now();
        Ok(())
    }

    /// Records in the run directory, once, that it has had a committed checkpoint: from then on, losing every
    /// checkpoint is refused rather than silently retrained (see [`rundir::trained`]).
    fn mark_checkpointed(&mut self) -> Result<()> {
        if let (Some(dir), Some(c)) = (&self.marker, self.writer.last()) {
            rundir::mark_checkpointed(dir, c.step)?;
            self.marker = None;
        }
        Ok(())
    }

    /// Waits for the save in flight and records the first commit.
    fn flush(&mut self) -> Result<Option<checkpoint::Committed>> {
        let last = self.writer.flush()?;
        self.mark_checkpointed()?;
        Ok(last)
    }

    /// On a preemption signal: save unless the last save says it would not fit the grace period, flush, and
    /// return the error that makes the process exit with 128 + signal.
    fn preempt(
        &mut self,
        t: &Trainer,
        sig: i32,
        cursor: (usize, usize),
        metrics: &[EpochMetrics],
        progress: &Progress,
    ) -> Error {
        progress.finish();
        let grace = self.cfg.checkpoint.grace_seconds;
        let mut note = String::new();
        let predicted = self.writer.last().map(|c| c.save_seconds).or(self.last_save_seconds);
        if self.last_step == Some(t.step) {
            note = "the checkpoint of this step was already written".into();
        } else if predicted.is_some_and(|s| s > grace) {
            note = format!(
                "skipped the save: the last one took {:.1}s > checkpoint.grace_seconds = {grace}",
                predicted.unwrap_or_default()
            );
        } else if let Err(e) = self.save(t, cursor, metrics, "signal") {
            note = format!("the save failed: {e}");
        }
        let saved = match self.flush() {
            Ok(Some(c)) => format!("checkpoint {}", c.dir.display()),
            Ok(None) => "no checkpoint from this process".into(),
            Err(e) => format!("the save failed: {e}"),
        };
        Error::Preempted {
            signal: sig,
            message: format!(
                "preempted by {} at epoch {}, step {}; {saved}{}{note}. Run the same command to resume.",
                signals::name(sig),
                cursor.0 + 1,
                t.step,
                if note.is_empty() { "" } else { "; " }
            ),
        }
    }
}

fn incompatible(dir: &Path, changed: &[String]) -> Error {
    Error::RunDir(format!(
        "{} holds a run with a different config (changed: {}). Use another --run-dir, change only train.epochs to \
         extend the run, or pass --allow-config-change",
        dir.display(),
        changed.join(", ")
    ))
}

/// Test-only: `SPOTRUN_TEST_STARTUP_DELAY_MS=N` says so on stderr and sleeps N ms after loading the data, so a test
/// can deliver a signal during start-up without racing the process.
fn test_startup_delay() {
    if let Some(ms) = std::env::var("SPOTRUN_TEST_STARTUP_DELAY_MS").ok().and_then(|v| v.parse::<u64>().ok()) {
        tell!("test: start-up delay {ms} ms");
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// `runs/<name>-<first 8 hex digits of the run id>`.
pub fn default_run_dir(cfg: &Config, run_id: &str) -> PathBuf {
    let name = cfg.train.name.as_deref().unwrap_or("run");
    PathBuf::from("runs").join(format!("{name}-{}", crate::config::short_id(run_id)))
}

/// The model's variables sorted by name (PyTorch `state_dict` names).
pub fn named_variables(vs: &VarStore) -> Vec<(String, tch::Tensor)> {
    let mut v: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Refuses a run directory whose `config.toml` belongs to an incompatible run (before anything is written).
fn check_run_dir(dir: &Path, cfg: &Config, allow: bool) -> Result<()> {
    let existing = dir.join("config.toml");
    match std::fs::symlink_metadata(&existing) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(20) => return Ok(()),
        Err(e) => return Err(Error::io(&existing, e)),
        Ok(_) => {}
    }
    let text = std::fs::read_to_string(&existing).map_err(|e| Error::io(&existing, e))?;
    let theirs = config::parse_str(&text, &existing)?;
    compatible(&theirs, cfg, allow).map(|_| ()).map_err(|changed| incompatible(dir, &changed))
}

/// Creates the run directory, writes `config.toml`, and rewrites `metrics.jsonl` to the resumed epochs.
fn write_run_files(dir: &Path, loaded: &LoadedConfig, run_id: &str, metrics: &[EpochMetrics]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join("config.toml");
    let text = format!(
        "# Resolved by spotrun from {}; run id {run_id}\n{}",
        loaded.origin.display(),
        toml::to_string(&loaded.config).map_err(|e| Error::RunDir(format!("cannot serialise config: {e}")))?
    );
    write_atomic(&path, text.as_bytes()).map_err(|e| Error::io(&path, e))?;
    let lines: String = metrics.iter().map(|m| m.to_json_line() + "\n").collect();
    let path = dir.join("metrics.jsonl");
    write_atomic(&path, lines.as_bytes()).map_err(|e| Error::io(&path, e))
}

#[allow(clippy::too_many_arguments)]
fn banner(
    cfg: &Config,
    run_id: &str,
    dir: &Path,
    dev: Device,
    threads: usize,
    t: &Trainer,
    data: &Dataset,
    on_dev: bool,
    vs: &VarStore,
) -> String {
    let params: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
    let device = match dev {
        Device::Cuda(i) => match device::gpu_info(i) {
            Ok(g) => format!("cuda:{i} ({})", g.name),
            Err(_) => format!("cuda:{i}"),
        },
        _ => format!("cpu ({threads} threads)"),
    };
    format!(
        "spotrun train: run {} -> {}\n  device {device} | precision {} | model {} ({:.2}M params)\n  data {} ({} train / {} val, {:.1} MB, {}) | batch {} | {} epochs x {} steps",
        crate::config::short_id(run_id),
        dir.display(),
        t.precision().name(),
        model::describe(&cfg.model, &data.sample_shape, data.classes),
        params as f64 / 1e6,
        data.origin,
        data.train_len(),
        data.val_len(),
        data.nbytes() as f64 / 1e6,
        match (dev, on_dev) {
            (Device::Cpu, _) => "in RAM",
            (_, true) => "in GPU memory",
            (_, false) => "in host RAM, batches copied per step",
        },
        cfg.train.batch_size,
        cfg.train.epochs,
        t.steps_per_epoch()
    )
}
