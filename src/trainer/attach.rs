//! Stage 3's set-up, for one prepared and opened run: the trainer (from the checkpoint found, if any), the banner,
//! the run files, the checkpoint writer, the observer and TensorBoard; then the run as a member of the epoch loop.
//! `spotrun train` ([`super::single`]) and fused groups ([`super::group`]) both come through here.
use tch::Device;

use super::epochs::Member;
use super::events::RunEvents;
use super::fit::Trainer;
use super::metrics::EpochMetrics;
use super::observer::Observer;
use super::policy::SavePolicy;
use super::prepare::{self, Prepared};
use super::progress::Progress;
use super::saver::{Saver, SaverStart};
use super::signals::{self, Signals};
use super::types::{TrainOptions, TrainSummary};
use super::{early, open, outputs, resume, saver};
use crate::boundary::{self, Phase};
use crate::checkpoint::{self, Loaded};
use crate::config::{Config, Precision};
use crate::device;
use crate::error::{Error, Result};
use crate::model;

/// Where the loop starts: from scratch, or from a checkpoint.
pub(super) struct Start {
    pub cursor: (usize, usize),
    pub metrics: Vec<EpochMetrics>,
    resumed_step: Option<u64>,
    last_save_seconds: Option<f64>,
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

/// Sets up a prepared and opened run. A `member` of a fused group shows no progress of its own (the group does)
/// and writes its checkpoints in the background (as `checkpoint.background = true`), so the members' saves at one
/// step overlap instead of queueing.
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
    if early::finished(cfg, start.cursor.0, &start.metrics) {
        progress.finish();
        return outputs::already_finished(p, start.metrics).map(Attach::Finished);
    }
    if let Some(s) = opts.stop_at.filter(|s| start.cursor.0 >= s.epochs) {
        progress.finish();
        return outputs::at_stop(p, &trainer, s, start.cursor, start.metrics).map(Attach::Finished);
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

impl<'a> Attached<'a> {
    /// The run as a member of the epoch loop, from where it starts, reporting to its own saver and observer.
    pub(super) fn member<'r>(&'r mut self, p: &'a Prepared, opts: &TrainOptions) -> Member<'r, 'a> {
        let events = RunEvents {
            cfg: p.cfg(),
            saver: &mut self.saver,
            obs: &self.obs,
            policy: SavePolicy::new(&p.cfg().checkpoint),
            epoch_hook: opts.epoch_hook.clone(),
            stop_at: opts.stop_at,
            run_dir: p.run_dir.clone(),
        };
        let history = std::mem::take(&mut self.start.metrics);
        Member::new(&mut self.trainer, Box::new(events), self.start.cursor, history)
    }
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
    let verb = if early::finished(cfg, cursor.0, &metrics) { "already finished at" } else { "resuming from" };
    progress.println(&format!(
        "{verb} {} (epoch {}, batch {}, step {})",
        l.dir.display(),
        cursor.0 + 1,
        cursor.1,
        l.manifest.step
    ));
    let explicit = (cfg.train.precision != Precision::Auto)
        .then(|| serde_json::to_value(cfg.train.precision).ok()?.as_str().map(str::to_string))
        .flatten();
    let was = (l.manifest.device.as_deref(), l.manifest.precision.as_deref());
    if let Some(w) = resume::moved(was, saver::device_and_precision(trainer), explicit.as_deref()) {
        progress.println(&format!("warning: {w}"));
    }
    Ok(Start { cursor, metrics, resumed_step: Some(l.manifest.step), last_save_seconds: Some(l.manifest.save_seconds) })
}

/// The TensorBoard event file of this process (`train.tensorboard`), in `RUN_DIR/tb/`. It starts with a
/// `SessionLog START` at the first step this process logs (one after the checkpoint it resumed from, or 1), so
/// TensorBoard drops what an earlier process logged from there on (also one killed before its first commit) and
/// keeps what it logged up to it. A failure to open it is a warning: logging never stops a run.
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
    let opened = crate::tensorboard::EventWriter::create(&dir, resumed.map_or(1, |s| s + 1)).and_then(|mut w| {
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
        (_, false) => "in host RAM, batches copied per step through pinned memory, non-blocking",
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
