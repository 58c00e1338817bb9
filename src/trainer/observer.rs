//! The one observer of a run: what a person sees (progress, notes), what is recorded (`metrics.jsonl`, and
//! TensorBoard event files with `train.tensorboard`), and the owner check asked before every write. The epoch loop
//! reports to it and never prints or appends itself.
use std::cell::RefCell;
use std::path::PathBuf;

use super::metrics::EpochMetrics;
use super::progress::Progress;
use super::types::OwnerCheck;
use crate::checkpoint::append_line;
use crate::error::{Error, Result};
use crate::tensorboard::EventWriter;

pub(crate) struct Observer {
    pub progress: Progress,
    metrics_path: PathBuf,
    owner: Option<OwnerCheck>,
    /// `SPOTRUN_PRINT_STARTUP`: print the time from process start to the first step, once.
    print_startup: std::cell::Cell<bool>,
    /// `train.tensorboard`; dropped (with one warning) at the first write error: logging never stops a run.
    tb: RefCell<Option<EventWriter>>,
}

impl Observer {
    pub(super) fn new(progress: Progress, run_dir: &std::path::Path, owner: Option<OwnerCheck>) -> Observer {
        let print_startup = std::env::var_os("SPOTRUN_PRINT_STARTUP").is_some();
        let print_startup = std::cell::Cell::new(print_startup);
        Observer { progress, metrics_path: run_dir.join("metrics.jsonl"), owner, print_startup, tb: RefCell::new(None) }
    }

    /// Logs to TensorBoard from now on (see [`super::attach`] for where the writer is opened).
    pub(super) fn with_tensorboard(self, tb: Option<EventWriter>) -> Observer {
        *self.tb.borrow_mut() = tb;
        self
    }

    /// Writes to the event file, if there is one; on an error warns once and stops logging there.
    fn tb(&self, f: impl FnOnce(&mut EventWriter) -> std::io::Result<()>) {
        let mut slot = self.tb.borrow_mut();
        let Some(w) = slot.as_mut() else { return };
        if let Err(e) = f(w) {
            self.progress.println(&format!("warning: TensorBoard logging stopped: {}: {e}", w.path().display()));
            *slot = None;
        }
    }

    /// Before a checkpoint save: everything logged up to it reaches the file first, so a process killed after the
    /// commit has logged every point up to the step it will resume from.
    pub(super) fn before_save(&self) {
        self.tb(EventWriter::flush);
    }

    /// A checkpoint save that held training up for `seconds` (written out with the next flush).
    pub(super) fn saved(&self, step: u64, seconds: f64) {
        self.tb(|w| w.scalars(step, &[("checkpoint/pause_seconds", seconds)]));
    }

    pub(super) fn line(&self, s: &str) {
        self.progress.println(s);
    }

    /// After every optimizer step; `loss` when it was read back (every `train.log_every` steps).
    pub(super) fn step(&self, step: u64, loss: Option<f64>, lr: f64) {
        if let Some(l) = loss {
            self.tb(|w| w.scalars(step, &[("train/loss", l), ("train/lr", lr)]));
        }
        if self.print_startup.replace(false) {
            let s = super::startup::seconds_since_process_start().unwrap_or(f64::NAN);
            tell!("startup: first step done {s:.3}s after process start");
        }
    }

    /// After every epoch: shows it and appends it to `metrics.jsonl` (if this process still owns the run).
    pub(super) fn epoch(&self, m: &EpochMetrics) -> Result<()> {
        self.progress.epoch(m);
        self.ensure_owner()?;
        let opt = |v: Option<f64>| v.unwrap_or(f64::NAN);
        let values = [
            ("epoch/train_loss", m.train_loss),
            ("epoch/val_loss", m.val_loss),
            ("epoch/val_accuracy", opt(m.val_accuracy)),
            ("epoch/val_ppl", opt(m.val_ppl)),
            ("epoch/val_mae", opt(m.val_mae)),
            ("epoch/lr", m.lr),
            ("epoch/samples_per_sec", m.samples_per_sec),
            ("epoch/tokens_per_sec", opt(m.tokens_per_sec)),
            ("epoch/seconds", m.epoch_seconds),
        ];
        self.tb(|w| w.scalars(m.step, &values).and_then(|()| w.flush()));
        append_line(&self.metrics_path, &m.to_json_line()).map_err(|e| Error::io(&self.metrics_path, e))
    }

    /// Fails with [`Error::NotOwner`] when another process owns the run now.
    pub(super) fn ensure_owner(&self) -> Result<()> {
        OwnerCheck::ensure(&self.owner)
    }

    pub(super) fn finish(&self) {
        self.progress.finish();
        self.tb(EventWriter::flush);
    }
}
