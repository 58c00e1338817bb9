//! `spotrun train` as a lifecycle a newcomer reads at a glance:
//!
//! 1. [`prepare`](super::prepare): config, device, data, model, all checked; nothing written.
//! 2. [`open`](super::open): locks, the checkpoint to resume from, the rules that keep results; then the run files.
//! 3. [`run_epochs`]: the epoch loop, returning a typed [`Outcome`]; saves come from a pure
//!    [`SavePolicy`](super::policy::SavePolicy), progress and metrics go to one [`Observer`](super::observer).
//!
//! Bad input therefore leaves files untouched, and the same command starts a run, resumes it from the newest
//! checkpoint that verifies, or reports that it already finished.
use std::path::PathBuf;
use std::time::Instant;

use tch::nn::VarStore;
use tch::Device;

use super::fit::{Flow, Trainer};
use super::metrics::EpochMetrics;
use super::observer::Observer;
use super::open;
use super::policy::{Event, SavePolicy};
use super::prepare::{self, Prepared};
use super::process::{self, Deterministic};
use super::progress::Progress;
use super::saver::{Saver, SaverStart};
use super::signals::{self, Signals};
use crate::boundary::{self, Phase};
use crate::checkpoint::{self, Loaded, SaveReason};
use crate::config::{Config, LoadedConfig};
use crate::device;
use crate::error::{Error, Result};
use crate::model;

pub use super::prepare::default_run_dir;

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

/// Asked before every write to the run directory (checkpoints, metrics, weights). `Err(why)` means another process
/// owns the run now (the caller says why, e.g. a sweep's lease was taken over), and the run stops with
/// [`Error::NotOwner`] carrying that reason, without writing.
#[derive(Clone)]
pub struct OwnerCheck(pub std::sync::Arc<OwnerCheckFn>);

/// The function inside an [`OwnerCheck`].
pub type OwnerCheckFn = dyn Fn() -> std::result::Result<(), String> + Send + Sync;

impl std::fmt::Debug for OwnerCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("OwnerCheck")
    }
}

impl OwnerCheck {
    pub(crate) fn ensure(this: &Option<OwnerCheck>) -> Result<()> {
        match this {
            Some(c) => (c.0)().map_err(Error::NotOwner),
            None => Ok(()),
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
    /// A sweep run's hyperparameters and the sweep's metric, for TensorBoard's HParams tab.
    pub hparams: Option<Hparams>,
}

/// What TensorBoard's HParams tab compares runs by: the swept keys' values and the metric tags.
#[derive(Debug, Clone, Default)]
pub struct Hparams {
    pub values: Vec<(String, crate::tensorboard::HValue)>,
    pub metrics: Vec<String>,
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

/// How the epoch loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every configured epoch ran.
    Completed,
    /// `train.early_stopping` ended the run.
    EarlyStopped,
    /// [`TrainOptions::epoch_hook`] ended the run (sweep pruning).
    Pruned,
    /// A preemption signal arrived; `cursor` is (epoch in progress, batches done).
    Preempted { signal: i32, cursor: (usize, usize) },
}

/// Where the loop starts: from scratch, or from a checkpoint.
pub(super) struct Start {
    pub cursor: (usize, usize),
    pub metrics: Vec<EpochMetrics>,
    resumed_step: Option<u64>,
    last_save_seconds: Option<f64>,
}

/// Runs `spotrun train` end to end.
pub fn train(opts: &TrainOptions) -> Result<TrainSummary> {
    let signals = process::signals()?;
    let loaded = prepare::load_config(opts)?;
    let _deterministic = Deterministic::set(loaded.config.train.deterministic)?;
    let mut p = prepare::prepare(loaded, opts)?;
    let (mut o, store) = open::open(&mut p, opts)?;
    let mut a = match attach(&p, &mut o, store, opts, signals, false)? {
        Attach::Train(a) => *a,
        Attach::Finished(summary) => return Ok(summary),
    };
    let mut metrics = std::mem::take(&mut a.start.metrics);
    let loop_started = Instant::now();
    let cfg = p.cfg();
    let (device, run_dir) = (p.device, p.run_dir.clone());
    let mut l = Loop { cfg, trainer: &mut a.trainer, saver: &mut a.saver, obs: &a.obs, signals, opts, device, run_dir };
    let outcome = l.run_epochs(a.start.cursor, &mut metrics)?;
    conclude(&p, a, outcome, metrics, loop_started)
}

/// A run ready for its epoch loop: its trainer restored, its run files written, its saver and observer open.
pub(super) struct Attached<'a> {
    pub trainer: Trainer<'a>,
    pub saver: Saver<'a>,
    pub obs: Observer,
    pub start: Start,
}

/// What [`attach`] found: a run to train, or one whose checkpoint already covers every epoch.
pub(super) enum Attach<'a> {
    Train(Box<Attached<'a>>),
    Finished(TrainSummary),
}

/// Stage 3's set-up for one prepared and opened run: the trainer (from the checkpoint found, if any), the banner,
/// the run files, the checkpoint writer and the observer. A `member` of a fused group shows no progress of its
/// own (the group does) and writes its checkpoints in the background (as `checkpoint.background = true`), so the
/// members' saves at one step overlap instead of queueing.
pub(super) fn attach<'a>(
    p: &'a Prepared,
    o: &mut open::Opened,
    store: checkpoint::Store,
    opts: &TrainOptions,
    signals: &'static Signals,
    member: bool,
) -> Result<Attach<'a>> {
    let quiet = opts.quiet || member;
    let cfg = p.cfg();
    let optimizer = || format!("creating the {} state for the model", prepare::optim_name(cfg.optim.kind));
    let mut trainer =
        boundary::catch(Phase::Setup, &optimizer, || Ok(Trainer::new(cfg, &p.vs, p.net.as_ref(), &p.data, p.device)))?;
    let progress = Progress::new(quiet, trainer.total_steps(), cfg.train.epochs);
    progress.println(&banner(p, &trainer));
    p.lines.iter().for_each(|l| progress.println(l));
    let start = restore(&mut trainer, o.found.take(), cfg, &progress)?;
    if finished(cfg, start.cursor.0, &start.metrics) {
        progress.finish();
        return already_finished(p, start.metrics).map(Attach::Finished);
    }
    startup_signal(signals, start.resumed_step.is_some(), &progress)?;
    open::begin(p, o, &start.metrics, &|l| progress.println(l))?;
    let start_info = SaverStart {
        resumed_step: start.resumed_step,
        last_save_seconds: start.last_save_seconds,
        run_dir: p.run_dir.clone(),
    };
    let mut saver = Saver::new(store, cfg, &p.run_id, p.data.fingerprint(), opts.owner_check.clone(), start_info);
    if member {
        saver = saver.in_background();
    }
    let tb = open_tensorboard(p, start.resumed_step, opts, &progress);
    let obs = Observer::new(progress, &p.run_dir, opts.owner_check.clone()).with_tensorboard(tb);
    Ok(Attach::Train(Box::new(Attached { trainer, saver, obs, start })))
}

/// After the epoch loop: the preemption save, or the final flush, weights and summary.
pub(super) fn conclude(
    p: &Prepared,
    a: Attached,
    outcome: Outcome,
    metrics: Vec<EpochMetrics>,
    loop_started: Instant,
) -> Result<TrainSummary> {
    let Attached { trainer, mut saver, obs, .. } = a;
    if let Outcome::Preempted { signal, cursor } = outcome {
        return Err(saver.preempt(&trainer, signal, cursor, &metrics, &obs.progress));
    }
    obs.finish();
    saver.flush()?;
    saver.cost.loop_seconds = loop_started.elapsed().as_secs_f64();
    obs.ensure_owner()?;
    write_outputs(p, &trainer)?;
    let status = match outcome {
        Outcome::EarlyStopped => RunStatus::StoppedEarly,
        Outcome::Pruned => RunStatus::Pruned,
        _ => RunStatus::Completed,
    };
    Ok(TrainSummary { run_id: p.run_id.clone(), run_dir: p.run_dir.clone(), status, metrics, checkpoints: saver.cost })
}

/// Loads checkpoint `found` into the trainer (and says so), or starts from scratch.
fn restore(trainer: &mut Trainer, found: Option<Loaded>, cfg: &Config, progress: &Progress) -> Result<Start> {
    let Some(l) = found else {
        return Ok(Start { cursor: (0, 0), metrics: Vec::new(), resumed_step: None, last_save_seconds: None });
    };
    trainer
        .restore(&l.model, &l.state, l.manifest.step)
        .map_err(|e| Error::RunDir(format!("{}: cannot resume from this checkpoint: {e}", l.dir.display())))?;
    let metrics: Vec<EpochMetrics> =
        l.manifest.metrics.iter().filter_map(|v| serde_json::from_value(v.clone()).ok()).collect();
    let cursor = (l.manifest.epoch, l.manifest.batch);
    let verb = if finished(cfg, cursor.0, &metrics) { "already finished at" } else { "resuming from" };
    progress.println(&format!(
        "{verb} {} (epoch {}, batch {}, step {})",
        l.dir.display(),
        cursor.0 + 1,
        cursor.1,
        l.manifest.step
    ));
    Ok(Start { cursor, metrics, resumed_step: Some(l.manifest.step), last_save_seconds: Some(l.manifest.save_seconds) })
}

/// Nothing to train: the run directory stays as it is, except that lost final weights are restored.
fn already_finished(p: &Prepared, metrics: Vec<EpochMetrics>) -> Result<TrainSummary> {
    let weights = p.run_dir.join("model.safetensors");
    if matches!(std::fs::symlink_metadata(&weights), Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
        std::fs::create_dir_all(&p.run_dir).map_err(|e| Error::io(&p.run_dir, e))?;
        checkpoint::save(&weights, &named_variables(&p.vs, p.net.as_ref()))?;
        save_module(p)?;
    }
    Ok(TrainSummary {
        run_id: p.run_id.clone(),
        run_dir: p.run_dir.clone(),
        status: RunStatus::AlreadyFinished,
        metrics,
        checkpoints: CheckpointCost::default(),
    })
}

/// The final weights (`model.safetensors`), the EMA's (`ema.safetensors`, with `train.ema`) and, for a
/// TorchScript run, the trained module (`model.pt`).
fn write_outputs(p: &Prepared, trainer: &Trainer) -> Result<()> {
    checkpoint::save(&p.run_dir.join("model.safetensors"), &named_variables(&p.vs, p.net.as_ref()))?;
    if let Some(ema) = trainer.ema_weights() {
        checkpoint::save(&p.run_dir.join("ema.safetensors"), &ema)?;
    }
    save_module(p)
}

/// The TensorBoard event file of this process (`train.tensorboard`), in `RUN_DIR/tb/`. A resumed run starts it
/// with `SessionLog START` one step after the checkpoint, so TensorBoard drops what the previous process logged
/// after the checkpoint and keeps what it logged up to it. A failure to open it is a warning: logging never stops
/// a run.
fn open_tensorboard(
    p: &Prepared,
    resumed: Option<u64>,
    opts: &TrainOptions,
    progress: &Progress,
) -> Option<crate::tensorboard::EventWriter> {
    if !p.cfg().train.tensorboard {
        return None;
    }
    let dir = p.run_dir.join("tb");
    let opened = crate::tensorboard::EventWriter::create(&dir, resumed.map(|s| s + 1)).and_then(|mut w| {
        if let Some(h) = &opts.hparams {
            let metrics: Vec<&str> = h.metrics.iter().map(String::as_str).collect();
            w.hparams(&h.values, &metrics)?;
        }
        w.flush().map(|()| w)
    });
    match opened {
        Ok(w) => Some(w),
        Err(e) => {
            progress.println(&format!("warning: no TensorBoard logging: {}: {e}", dir.display()));
            None
        }
    }
}

/// A TorchScript run also leaves the trained module, `RUN_DIR/model.pt` (written to a scratch name, fsynced,
/// renamed into place).
fn save_module(p: &Prepared) -> Result<()> {
    let path = p.run_dir.join("model.pt");
    let scratch = p.run_dir.join(format!(".model.pt.{}", checkpoint::unique_suffix()));
    let Some(saved) = p.net.save_module(&scratch) else { return Ok(()) };
    let fail = |e: std::io::Error| {
        let _ = std::fs::remove_file(&scratch);
        Error::io(&path, e)
    };
    saved.map_err(|why| fail(std::io::Error::other(why)))?;
    std::fs::File::open(&scratch).and_then(|f| f.sync_all()).map_err(fail)?;
    std::fs::rename(&scratch, &path).map_err(fail)?;
    std::fs::File::open(&p.run_dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(&p.run_dir, e))
}

/// A signal during start-up (data loading, model build, finding the checkpoint) stops before the first step:
/// nothing new exists to save, and the same command starts from the same place.
fn startup_signal(signals: &Signals, resumed: bool, progress: &Progress) -> Result<()> {
    let Some(sig) = signals.received() else { return Ok(()) };
    progress.finish();
    let from = if resumed { "the checkpoint it resumed from stays the newest" } else { "no run files written" };
    Err(Error::Preempted {
        signal: sig,
        message: format!(
            "preempted by {} during start-up, before the first step; nothing to save ({from}). Run the same command \
             to resume.",
            signals::name(sig)
        ),
    })
}

/// The epoch loop and what it reports to.
pub(super) struct Loop<'a, 'b> {
    pub cfg: &'a Config,
    pub trainer: &'b mut Trainer<'a>,
    pub saver: &'b mut Saver<'a>,
    pub obs: &'b Observer,
    pub signals: &'static Signals,
    pub opts: &'b TrainOptions,
    pub device: Device,
    pub run_dir: PathBuf,
}

/// How one epoch ended.
enum EpochEnd {
    Done(EpochMetrics),
    Signal { signal: i32, batches_done: usize },
}

impl Loop<'_, '_> {
    /// Epochs from `cursor` to the end, an early stop, pruning, or a signal.
    fn run_epochs(&mut self, cursor: (usize, usize), metrics: &mut Vec<EpochMetrics>) -> Result<Outcome> {
        let mut stepped = false;
        for epoch in cursor.0..self.cfg.train.epochs {
            let start_batch = if epoch == cursor.0 { cursor.1 } else { 0 };
            let m = match self.epoch(epoch, start_batch, metrics, &mut stepped)? {
                EpochEnd::Done(m) => m,
                EpochEnd::Signal { signal, batches_done } => {
                    return Ok(Outcome::Preempted { signal, cursor: (epoch, batches_done) })
                }
            };
            if let Some(outcome) = self.after_epoch(epoch, m, metrics)? {
                return Ok(outcome);
            }
        }
        Ok(Outcome::Completed)
    }

    /// After epoch `epoch` produced `m`: the best epoch, the record, early stopping or pruning, the epoch's save,
    /// and a signal that arrived. `Some` ends the run.
    pub(super) fn after_epoch(
        &mut self,
        epoch: usize,
        m: EpochMetrics,
        metrics: &mut Vec<EpochMetrics>,
    ) -> Result<Option<Outcome>> {
        let m = self.mark_best(m, metrics)?;
        self.obs.epoch(&m)?;
        metrics.push(m);
        let stop = self.stop_after(epoch, metrics);
        let last = epoch + 1 == self.cfg.train.epochs || stop.is_some();
        let policy = SavePolicy::new(&self.cfg.checkpoint);
        if let Some(reason) = policy.decide(Event::EpochEnd { epochs_done: epoch + 1, last }) {
            self.save((epoch + 1, 0), metrics, reason)?;
        }
        if stop.is_some() {
            return Ok(stop);
        }
        if last {
            return Ok(Some(Outcome::Completed));
        }
        Ok(self.signals.received().map(|signal| Outcome::Preempted { signal, cursor: (epoch + 1, 0) }))
    }

    /// Saves the trainer at `cursor`, logging the pause.
    pub(super) fn save(&mut self, cursor: (usize, usize), metrics: &[EpochMetrics], reason: SaveReason) -> Result<()> {
        self.obs.before_save();
        let started = Instant::now();
        self.saver.save(self.trainer, cursor, metrics, reason)?;
        self.obs.saved(self.trainer.step, started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Trains one epoch from `start_batch`, saving mid-epoch when the policy says so.
    fn epoch(&mut self, epoch: usize, start: usize, metrics: &[EpochMetrics], stepped: &mut bool) -> Result<EpochEnd> {
        let (cfg, dev, signals) = (self.cfg, self.device, self.signals);
        let policy = SavePolicy::new(&cfg.checkpoint);
        let steps_per_epoch = self.trainer.steps_per_epoch() as usize;
        let (trainer, saver, obs) = (&mut *self.trainer, &mut *self.saver, self.obs);
        let mut signal = None;
        let at =
            || format!("training epoch {} (train.batch_size = {}, device {dev:?})", epoch + 1, cfg.train.batch_size);
        let out = boundary::catch(Phase::Training, &at, || {
            trainer.run_epoch(epoch, start, &obs.progress, &mut |t, done| {
                *stepped = true;
                obs.step(t.step, t.last_loss, t.last_lr);
                if let Some(sig) = signals.received() {
                    signal = Some((sig, done));
                    return Ok(Flow::Stop);
                }
                let seconds_since_save = saver.seconds_since_save();
                let event = Event::Step { step: t.step, batches_done: done, steps_per_epoch, seconds_since_save };
                if let Some(reason) = policy.decide(event) {
                    obs.before_save();
                    let started = Instant::now();
                    saver.save(t, (epoch, done), metrics, reason)?;
                    obs.saved(t.step, started.elapsed().as_secs_f64());
                }
                Ok(Flow::Continue)
            })
        });
        let out = out.map_err(|e| if *stepped { e } else { oom_before_training(e) })?;
        Ok(match (out, signal) {
            (Some(m), _) => EpochEnd::Done(m),
            (None, Some((signal, batches_done))) => EpochEnd::Signal { signal, batches_done },
            (None, None) => EpochEnd::Signal { signal: signal_hook::consts::SIGTERM, batches_done: 0 },
        })
    }

    /// `checkpoint.keep_best`: records the best epoch so far in `m`, and when `m` is it, writes the weights it was
    /// evaluated with (the EMA's with `train.ema_eval`) to `RUN_DIR/best.safetensors`, before the epoch's
    /// checkpoint (a resume re-runs the epoch and writes it again).
    fn mark_best(&self, mut m: EpochMetrics, history: &[EpochMetrics]) -> Result<EpochMetrics> {
        let Some(metric) = self.cfg.checkpoint.keep_best else { return Ok(m) };
        let all: Vec<EpochMetrics> = history.iter().cloned().chain([m.clone()]).collect();
        let best = super::early::best(&all, metric).map(|b| b.epoch);
        m.best_epoch = best;
        if best == Some(m.epoch) {
            self.obs.ensure_owner()?;
            let evaluated = match (self.cfg.train.ema_eval, self.trainer.ema_weights()) {
                (true, Some(ema)) => ema,
                _ => self.trainer.weights(),
            };
            let host: Vec<(String, tch::Tensor)> =
                evaluated.into_iter().map(|(n, t)| (n, t.detach().to_device(Device::Cpu).contiguous())).collect();
            checkpoint::save(&self.run_dir.join("best.safetensors"), &host)?;
        }
        Ok(m)
    }

    /// Whether the run ends after `epoch`: early stopping, else the pruning hook (never after the last epoch).
    fn stop_after(&self, epoch: usize, metrics: &[EpochMetrics]) -> Option<Outcome> {
        let cfg = self.cfg;
        if let Some(es) = cfg.train.early_stopping.as_ref().filter(|es| super::early::should_stop(metrics, es)) {
            self.obs.line(&format!(
                "early stopping after epoch {}: {} stopped improving",
                epoch + 1,
                es.metric.as_str()
            ));
            return Some(Outcome::EarlyStopped);
        }
        let hook = self.opts.epoch_hook.as_ref();
        if epoch + 1 < cfg.train.epochs && hook.is_some_and(|h| (h.0)(metrics)) {
            self.obs.line(&format!("pruned after epoch {}", epoch + 1));
            return Some(Outcome::Pruned);
        }
        None
    }
}

/// An out-of-memory before this process finished a step is the config asking for too much (exit 2, like one
/// found before training); later it may be fragmentation or a neighbour on the GPU (exit 1).
fn oom_before_training(e: Error) -> Error {
    match e {
        Error::OutOfMemory { message, .. } => Error::OutOfMemory { message, before_training: true },
        other => other,
    }
}

/// A run is finished when every epoch ran or early stopping (a pure function of the history) says so.
pub(crate) fn finished(cfg: &Config, epochs_done: usize, metrics: &[EpochMetrics]) -> bool {
    epochs_done >= cfg.train.epochs
        || cfg.train.early_stopping.as_ref().is_some_and(|es| super::early::should_stop(metrics, es))
}

/// The model's whole `state_dict` (PyTorch names, sorted): its variables in `vs` (or its own parameters), tied
/// aliases and buffers, so the file loads with `strict=True`.
pub fn named_variables(vs: &VarStore, net: &dyn model::Model) -> Vec<(String, tch::Tensor)> {
    let params = net.parameters().unwrap_or_else(|| vs.variables().into_iter().collect());
    super::state::model_weights(params, net)
}

/// The three lines printed when training starts.
fn banner(p: &Prepared, t: &Trainer) -> String {
    let (cfg, data) = (p.cfg(), &p.data);
    let params = model::parameter_count(&p.vs, p.net.as_ref());
    let device = match p.device {
        Device::Cuda(i) => match device::gpu_info(i) {
            Ok(g) => format!("cuda:{i} ({})", g.name),
            Err(_) => format!("cuda:{i}"),
        },
        _ => format!("cpu ({} threads)", p.threads),
    };
    let placement = match (p.device, p.data_on_device) {
        (Device::Cpu, _) => "in RAM",
        (_, true) => "in GPU memory",
        (_, false) => "in host RAM, batches copied per step",
    };
    let (shape, outputs) = data.model_io();
    format!(
        "spotrun train: run {} -> {}\n  device {device} | precision {} | model {} ({:.2}M params)\n  data {} ({}, {:.1} \
         MB, {placement}) | batch {} | {} epochs x {} steps",
        crate::config::short_id(&p.run_id),
        p.run_dir.display(),
        t.precision().name(),
        model::describe(&cfg.model, &shape, outputs),
        params as f64 / 1e6,
        data.origin(),
        data.sizes(),
        data.nbytes() as f64 / 1e6,
        cfg.train.batch_size,
        cfg.train.epochs,
        t.steps_per_epoch()
    )
}
