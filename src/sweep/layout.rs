//! Where a sweep's files live on the volume, and the plan file that lets `status` and `report` work from the
//! directory alone.
//!
//! ```text
//! VOLUME/<sweep name>/
//!   sweep.json                 the expanded plan (index, run id, overrides)
//!   launched-<hash>.toml       the sweep file as `spotrun sweep` launched it (base inlined), one per version
//!   results.csv results.jsonl  one row per run, rewritten whenever a run ends
//!   report/                    `spotrun report` output
//!   runs/<run id>/             config.toml metrics.jsonl checkpoints/ model.safetensors
//!                              lease-<gen>.json attempts.jsonl worker.log done.json | failed.json
//! ```
//! Every component below VOLUME comes from a checked sweep name or a hex run id, so nothing escapes the volume.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::SweepError;
use super::expand::PlannedRun;
use super::spec::Sweep;
use crate::checkpoint::write_atomic;
use crate::config::MetricName;

/// Paths of one sweep on a volume.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(volume: &Path, name: &str) -> Layout {
        Layout { root: volume.join(name) }
    }
    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.root.join("runs").join(id)
    }
    pub fn plan(&self) -> PathBuf {
        self.root.join("sweep.json")
    }
    pub fn results_csv(&self) -> PathBuf {
        self.root.join("results.csv")
    }
    pub fn results_jsonl(&self) -> PathBuf {
        self.root.join("results.jsonl")
    }
}

/// The default volume: `$SPOTRUN_VOLUME`, else `./sweeps`.
pub fn default_volume() -> PathBuf {
    std::env::var_os("SPOTRUN_VOLUME").map_or_else(|| PathBuf::from("sweeps"), PathBuf::from)
}

/// `sweep.json`: the expanded sweep as the workers saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    pub sweep_file: String,
    pub metric: MetricName,
    pub lease_seconds: f64,
    pub runs: Vec<PlanRun>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRun {
    pub index: usize,
    pub id: String,
    /// (dotted key, value as TOML text)
    pub overrides: Vec<(String, String)>,
    pub epochs: usize,
}

impl PlanRun {
    pub fn label(&self) -> String {
        label(self.overrides.iter().map(|(k, v)| (k.as_str(), v as &dyn std::fmt::Display)))
    }
}

/// `optim.lr=0.001 model.hidden=[256]`, or `(base config)` when a run overrides nothing.
pub fn label<'a>(overrides: impl Iterator<Item = (&'a str, &'a dyn std::fmt::Display)>) -> String {
    let parts: Vec<String> = overrides.map(|(k, v)| format!("{k}={v}")).collect();
    if parts.is_empty() {
        "(base config)".into()
    } else {
        parts.join(" ")
    }
}

impl Plan {
    pub fn new(s: &Sweep, runs: &[PlannedRun]) -> Plan {
        Plan {
            name: s.name.clone(),
            sweep_file: s.file.display().to_string(),
            metric: s.metric,
            lease_seconds: s.lease_seconds,
            runs: runs
                .iter()
                .map(|r| PlanRun {
                    index: r.index,
                    id: r.id.clone(),
                    overrides: r.overrides.iter().map(|(k, v)| (k.clone(), v.to_string())).collect(),
                    epochs: r.config.train.epochs,
                })
                .collect(),
        }
    }

    /// Writes `sweep.json` (atomically, and only when the runs changed) and creates `runs/`.
    pub fn write(&self, layout: &Layout) -> Result<(), SweepError> {
        let runs = layout.root.join("runs");
        std::fs::create_dir_all(&runs).map_err(|e| SweepError::io(&runs, e))?;
        let path = layout.plan();
        let text = serde_json::to_string_pretty(self).unwrap_or_default() + "\n";
        let same = Plan::read(&layout.root).is_ok_and(|p| p.runs == self.runs && p.metric == self.metric);
        if !same {
            write_atomic(&path, text.as_bytes()).map_err(|e| SweepError::io(&path, e))?;
        }
        Ok(())
    }

    /// Reads `DIR/sweep.json`.
    pub fn read(dir: &Path) -> Result<Plan, SweepError> {
        let path = dir.join("sweep.json");
        let bytes = std::fs::read(&path).map_err(|e| {
            SweepError::Usage(format!("{}: not a sweep directory ({}: {e})", dir.display(), path.display()))
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| SweepError::Usage(format!("{}: not a spotrun sweep plan: {e}", path.display())))
    }
}
