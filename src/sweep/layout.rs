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
pub(crate) fn default_volume() -> PathBuf {
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
    /// The run's label in every table and chart: `optim.lr=0.001 model.hidden=[256]`, or `(base config)` when
    /// the run overrides nothing.
    pub fn label(&self) -> String {
        let parts: Vec<String> = self.overrides.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if parts.is_empty() {
            "(base config)".into()
        } else {
            parts.join(" ")
        }
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_labelled_by_its_overrides_in_key_order() {
        let text = "name = \"g\"\nseeds = [1]\n[parameters]\n\"optim.lr\" = [0.001]\n\"model.hidden\" = [[8]]\n";
        let s = super::super::spec::parse(text, Path::new("s.toml")).unwrap();
        let plan = Plan::new(&s, &super::super::expand::expand(&s).unwrap().runs);
        assert_eq!(plan.runs[0].label(), "model.hidden=[8] optim.lr=0.001 train.seed=1");
        let base = PlanRun { index: 0, id: "x".into(), overrides: Vec::new(), epochs: 1 };
        assert_eq!(base.label(), "(base config)");
    }
}
