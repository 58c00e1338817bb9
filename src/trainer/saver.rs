//! Making the saves the policy asks for: snapshots of the trainer handed to the checkpoint writer, what they cost,
//! the save on a preemption signal (unless it would not fit the grace period), and the run directory's record of
//! its first commit.
use std::path::PathBuf;
use std::time::Instant;

use super::early::finished;
use super::fit::Trainer;
use super::metrics::EpochMetrics;
use super::progress::Progress;
use super::types::{CheckpointCost, OwnerCheck};
use super::{rundir, signals};
use crate::amp::Resolved;
use crate::checkpoint::{Committed, Manifest, SaveReason, Snapshot, Store, Writer, FORMAT_VERSION};
use crate::config::Config;
use crate::error::{Error, Result};

/// Builds snapshots and hands them to the writer; remembers what the saves cost.
pub(crate) struct Saver<'a> {
    writer: Writer,
    cfg: &'a Config,
    run_id: &'a str,
    /// The step of the newest save (or of the checkpoint resumed from: saving it again would first un-commit the
    /// very checkpoint the run resumed from).
    last_step: Option<u64>,
    last_time: Instant,
    /// How long the newest save took (from this process or the checkpoint resumed from).
    last_save_seconds: Option<f64>,
    owner: Option<OwnerCheck>,
    pub cost: CheckpointCost,
    /// The data's fingerprint, recorded in every manifest.
    data_fingerprint: String,
    /// The run directory, until its [`rundir::CHECKPOINTED`] record is written after the first commit.
    marker: Option<PathBuf>,
}

/// Where a resumed run stands, for the saver.
pub(crate) struct SaverStart {
    pub resumed_step: Option<u64>,
    pub last_save_seconds: Option<f64>,
    pub run_dir: PathBuf,
}

impl<'a> Saver<'a> {
    pub(super) fn new(
        store: Store,
        cfg: &'a Config,
        run_id: &'a str,
        fingerprint: &str,
        owner: Option<OwnerCheck>,
        s: SaverStart,
    ) -> Saver<'a> {
        let marker = (!s.run_dir.join(rundir::CHECKPOINTED).exists()).then_some(s.run_dir);
        Saver {
            writer: Writer::new(store, cfg.checkpoint.background),
            cfg,
            run_id,
            last_step: s.resumed_step,
            last_time: Instant::now(),
            last_save_seconds: s.last_save_seconds,
            owner,
            cost: CheckpointCost::default(),
            data_fingerprint: fingerprint.to_string(),
            marker,
        }
    }

    /// Writes on a background thread whatever `checkpoint.background` says (a fused group's members).
    pub(super) fn in_background(mut self) -> Saver<'a> {
        self.writer = self.writer.in_background();
        self
    }

    /// Seconds since the last save (or since the loop started).
    pub(super) fn seconds_since_save(&self) -> f64 {
        self.last_time.elapsed().as_secs_f64()
    }

    /// Snapshots the trainer at `cursor` (epoch in progress, batches done) and hands it to the writer.
    pub(super) fn save(
        &mut self,
        t: &Trainer,
        cursor: (usize, usize),
        metrics: &[EpochMetrics],
        reason: SaveReason,
    ) -> Result<()> {
        if self.last_step == Some(t.step) {
            return Ok(());
        }
        OwnerCheck::ensure(&self.owner)?;
        if let Some(done) = self.writer.last() {
            self.last_save_seconds = Some(done.save_seconds);
        }
        let started = Instant::now();
        let (model, state) = t.snapshot();
        let manifest = self.manifest(t, cursor, metrics, reason)?;
        self.writer.save(Snapshot { model, state, manifest, started })?;
        self.mark_checkpointed()?;
        self.cost.saves += 1;
        self.cost.paused_seconds += started.elapsed().as_secs_f64();
        self.last_step = Some(t.step);
        self.last_time = Instant::now();
        Ok(())
    }

    fn manifest(
        &self,
        t: &Trainer,
        cursor: (usize, usize),
        metrics: &[EpochMetrics],
        reason: SaveReason,
    ) -> Result<Manifest> {
        let config = serde_json::to_value(self.cfg)
            .map_err(|e| Error::Runtime(format!("cannot record the config in the manifest: {e}")))?;
        let (device, precision) = device_and_precision(t);
        Ok(Manifest {
            format_version: FORMAT_VERSION,
            run_id: self.run_id.to_string(),
            config,
            epoch: cursor.0,
            batch: cursor.1,
            step: t.step,
            finished: finished(self.cfg, cursor.0, metrics),
            metrics: metrics.iter().filter_map(|m| serde_json::to_value(m).ok()).collect(),
            rng: "reseeded from (train.seed, epoch, batch) before every step".into(),
            data_fingerprint: Some(self.data_fingerprint.clone()),
            device: Some(device.to_string()),
            precision: Some(precision.to_string()),
            best_step: self.cfg.checkpoint.keep_best.and_then(|m| super::early::best(metrics, m)).map(|b| b.step),
            files: Vec::new(),
            reason,
            save_seconds: 0.0,
            created_unix_ms: 0,
        })
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

    /// Waits for the save in flight (counting the wait as paused time) and records the first commit.
    pub(super) fn flush(&mut self) -> Result<Option<Committed>> {
        let started = Instant::now();
        let last = self.writer.flush()?;
        self.cost.paused_seconds += started.elapsed().as_secs_f64();
        self.mark_checkpointed()?;
        Ok(last)
    }

    /// On a preemption signal: save unless the last save says it would not fit the grace period, flush, and
    /// return the error that makes the process exit with 128 + signal.
    pub(super) fn preempt(
        &mut self,
        t: &Trainer,
        sig: i32,
        cursor: (usize, usize),
        metrics: &[EpochMetrics],
        progress: &Progress,
    ) -> Error {
        progress.finish();
        let grace = self.cfg.checkpoint.grace_seconds;
        let predicted = self.writer.last().map(|c| c.save_seconds).or(self.last_save_seconds);
        let note = if self.last_step == Some(t.step) {
            "the checkpoint of this step was already written".to_string()
        } else if let Some(s) = predicted.filter(|&s| s > grace) {
            format!("skipped the save: the last one took {s:.1}s > checkpoint.grace_seconds = {grace}")
        } else {
            match self.save(t, cursor, metrics, SaveReason::Signal) {
                Ok(()) => String::new(),
                Err(e) => format!("the save failed: {e}"),
            }
        };
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

/// What a manifest records of where a trainer runs: its device type (`cpu`, `cuda`) and the precision
/// `train.precision` resolved to there (`fp32`, `bf16`, `fp16`).
pub(super) fn device_and_precision(t: &Trainer) -> (&'static str, &'static str) {
    let device = if t.device.is_cuda() { "cuda" } else { "cpu" };
    let precision = match t.precision() {
        Resolved::Fp32 => "fp32",
        Resolved::Bf16 => "bf16",
        Resolved::Fp16 => "fp16",
    };
    (device, precision)
}
