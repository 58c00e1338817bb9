//! The loaded sweep: a sweep file parsed, expanded into runs and grouped, with its place on the volume. Every
//! sweep command starts from one ([`LoadedSweep::load`]); the claimer, the launcher, the display, the readers and
//! the engines take it by reference. Named after [`crate::config::LoadedConfig`], its single-run counterpart.
use std::path::Path;

use super::error::SweepError;
use super::expand::{expand, PlannedRun};
use super::groups::{self, Group};
use super::layout::{default_volume, Layout, Plan};
use super::spec::{self, Fuse, Sweep};

/// A loaded, expanded sweep with its place on the volume.
#[derive(Clone)]
pub(crate) struct LoadedSweep {
    pub sweep: Sweep,
    pub runs: Vec<PlannedRun>,
    pub duplicates: usize,
    pub layout: Layout,
    pub plan: Plan,
    /// The runs as worker processes train them: fused groups, or one run each (see [`super::groups`]).
    pub groups: Vec<Group>,
}

impl LoadedSweep {
    /// Loads and expands `path`; writes `sweep.json` under the volume unless `dry`.
    pub(crate) fn load(path: &Path, volume: Option<&Path>, dry: bool) -> Result<LoadedSweep, SweepError> {
        let mut sweep = spec::load(path)?;
        if sweep.schedule.is_some() {
            // Adaptive schedulers train one run per process for now (fusing a rung's trials is a later step).
            sweep.fuse = Fuse::Off;
        }
        let e = expand(&sweep)?;
        let volume = volume.map_or_else(default_volume, Path::to_path_buf);
        let layout = Layout::new(&volume, &sweep.name);
        let plan = Plan::new(&sweep, &e.runs);
        let groups = groups::plan(&e.runs, sweep.fuse);
        let loaded = LoadedSweep { sweep, runs: e.runs, duplicates: e.duplicates, layout, plan, groups };
        if !dry {
            loaded.write_plan()?;
        }
        Ok(loaded)
    }

    /// Writes `sweep.json`, except for a TPE or PBT sweep, whose plan its study's workers write as trials are
    /// created or exploit (the plan at load time is empty, or names runs by config, and must not replace theirs).
    pub(crate) fn write_plan(&self) -> Result<(), SweepError> {
        if (self.sweep.method == spec::Method::Tpe && self.runs.is_empty()) || self.sweep.pbt.is_some() {
            return Ok(());
        }
        self.plan.write(&self.layout)
    }

    /// The same sweep with these runs (a TPE study's trials so far, proposed one at a time), regrouped.
    pub(crate) fn with_runs(mut self, runs: Vec<PlannedRun>) -> LoadedSweep {
        self.plan = Plan::new(&self.sweep, &runs);
        self.groups = groups::plan(&runs, self.sweep.fuse);
        self.runs = runs;
        self
    }

    /// How many tasks an engine (a Slurm array, a k8s Indexed Job) runs: one per group, or, for a scheduled sweep,
    /// one generic study worker per config (TPE: `count`; its trials do not exist yet).
    pub(crate) fn engine_tasks(&self) -> usize {
        match (self.sweep.schedule, self.sweep.method) {
            (Some(_), spec::Method::Tpe) => self.sweep.count,
            (Some(_), _) => self.runs.len(),
            (None, _) => self.groups.len(),
        }
    }

    /// Overrides the sweep file's `fuse` (`--no-fuse`), regrouping the runs.
    pub(crate) fn with_fuse(mut self, fuse: Fuse) -> LoadedSweep {
        self.sweep.fuse = fuse;
        self.groups = groups::plan(&self.runs, fuse);
        self
    }

    /// Group `g`, or the error `--group` gets when it is out of range.
    pub(crate) fn group(&self, g: usize) -> Result<&Group, SweepError> {
        self.groups.get(g).ok_or_else(|| {
            SweepError::Usage(format!(
                "{}: --group {g} is out of range: the sweep has {} groups (0..={}; `spotrun sweep --dry-run` lists \
                 them)",
                self.sweep.file.display(),
                self.groups.len(),
                self.groups.len().saturating_sub(1)
            ))
        })
    }

    /// Run `index`, or the error `--index` gets when it is out of range.
    pub(crate) fn run(&self, index: usize) -> Result<&PlannedRun, SweepError> {
        self.runs.get(index).ok_or_else(|| {
            SweepError::Usage(format!(
                "{}: --index {index} is out of range: the sweep has {} runs (0..={})",
                self.sweep.file.display(),
                self.runs.len(),
                self.runs.len().saturating_sub(1)
            ))
        })
    }
}
