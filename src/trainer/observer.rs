//! The one observer of a run: what a person sees (progress, notes), what is recorded (`metrics.jsonl`), and the
//! owner check asked before every write. The epoch loop reports to it and never prints or appends itself.
use std::path::PathBuf;

use super::metrics::EpochMetrics;
use super::progress::Progress;
use super::run::OwnerCheck;
use crate::checkpoint::append_line;
use crate::error::{Error, Result};

pub(crate) struct Observer {
    pub progress: Progress,
    metrics_path: PathBuf,
    owner: Option<OwnerCheck>,
    /// `SPOTRUN_PRINT_STARTUP`: print the time from process start to the first step, once.
    print_startup: std::cell::Cell<bool>,
}

impl Observer {
    pub fn new(progress: Progress, run_dir: &std::path::Path, owner: Option<OwnerCheck>) -> Observer {
        let print_startup = std::env::var_os("SPOTRUN_PRINT_STARTUP").is_some();
        let print_startup = std::cell::Cell::new(print_startup);
        Observer { progress, metrics_path: run_dir.join("metrics.jsonl"), owner, print_startup }
    }

    pub fn line(&self, s: &str) {
        self.progress.println(s);
    }

    /// After every optimizer step.
    pub fn step(&self) {
        if self.print_startup.replace(false) {
            let s = super::startup::seconds_since_process_start().unwrap_or(f64::NAN);
            tell!("startup: first step done {s:.3}s after process start");
        }
    }

    /// After every epoch: shows it and appends it to `metrics.jsonl` (if this process still owns the run).
    pub fn epoch(&self, m: &EpochMetrics) -> Result<()> {
        self.progress.epoch(m);
        self.ensure_owner()?;
        append_line(&self.metrics_path, &m.to_json_line()).map_err(|e| Error::io(&self.metrics_path, e))
    }

    /// Fails with [`Error::NotOwner`] when another process owns the run now.
    pub fn ensure_owner(&self) -> Result<()> {
        OwnerCheck::ensure(&self.owner)
    }

    pub fn finish(&self) {
        self.progress.finish();
    }
}
