//! The engine subcommands' glue: load the sweep, render with [`super::slurm`] or [`super::k8s`], write or print
//! the result, pick the exit code. Also `spotrun sweep --dry-run --json`, the plan the Modal app
//! (`scripts/modal_app.py`) reads. The sweep-file snapshot the Slurm tasks read is written by the one writer every
//! launcher uses ([`crate::sweep::Snapshot`]).
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::k8s::{self, K8sOptions};
use super::slurm::{self, SlurmOptions};
use crate::error::{Error, Result};
use crate::sweep::{self, LoadedSweep, Snapshot, SweepError};

/// The sweep an engine command renders, as the command line names it.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The sweep file.
    pub sweep: PathBuf,
    /// `--no-fuse`: one task (or pod index) per run.
    pub no_fuse: bool,
    /// `--output`: where to write (each command has its own default).
    pub output: Option<PathBuf>,
}

impl Target {
    /// Loads the sweep at `path` (on `volume`, writing `sweep.json` unless `dry`), regrouped by `--no-fuse`.
    fn load(&self, path: &Path, volume: Option<&Path>, dry: bool) -> Result<LoadedSweep> {
        let ctx = LoadedSweep::load(path, volume, dry)?;
        Ok(if self.no_fuse { ctx.with_fuse(sweep::Fuse::Off) } else { ctx })
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| Error::io(p, e))
}

/// `spotrun sweep --dry-run --json`: the plan, groups and self-contained sweep file as JSON.
pub(crate) fn plan_json(sweep_path: &Path, volume: Option<PathBuf>) -> Result<ExitCode> {
    let ctx = LoadedSweep::load(sweep_path, volume.as_deref(), true)?;
    let text = Snapshot::of(sweep_path)?.text;
    let v = serde_json::json!({
        "name": ctx.sweep.name,
        "volume_dir": ctx.layout.root,
        "sweep_toml": text,
        "runs": ctx.plan.runs,
        "groups": ctx.groups.iter().map(|g| serde_json::json!({"runs": g.runs, "alone": g.alone})).collect::<Vec<_>>(),
        "scheduler": ctx.sweep.schedule.map(|s| s.name()),
    });
    say!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

/// `spotrun slurm`: writes the sweep's snapshot and the sbatch script under the volume, and with `submit`
/// submits it.
pub(crate) fn slurm_cmd(t: Target, volume: Option<PathBuf>, submit: bool, o: &SlurmOptions) -> Result<ExitCode> {
    slurm::check(o).map_err(SweepError::Usage)?;
    let volume = absolute(&volume.unwrap_or_else(sweep::default_volume))?;
    let sweep_abs = absolute(&t.sweep)?;
    let ctx = t.load(&sweep_abs, Some(&volume), false)?;
    let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
    // The tasks read a snapshot (base inlined): editing the sweep file later cannot change what task I trains.
    let snapshot = ctx.layout.root.join("slurm").join(format!("{}.toml", ctx.sweep.name));
    Snapshot::of(&sweep_abs)?.write(&snapshot)?;
    let script = absolute(&slurm::script_path(&ctx, t.output))?;
    let text = slurm::render(&ctx, o, &exe, &snapshot, &volume, &script);
    let path = slurm::write(&ctx, &text, script)?;
    let n = ctx.engine_tasks();
    if submit {
        let id = slurm::submit(&path)?;
        say!("submitted job array {id} ({n} tasks): {}", path.display());
        say!("watch: squeue -j {id}; spotrun status {}", ctx.layout.root.display());
    } else {
        say!("wrote {} ({n} array tasks). Submit with: sbatch {}", path.display(), path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `spotrun k8s`: renders the Indexed Job and its ConfigMap, to `--output` or stdout.
pub(crate) fn k8s_cmd(t: Target, o: &K8sOptions) -> Result<ExitCode> {
    k8s::check(o).map_err(SweepError::Usage)?;
    // Rendering needs the runs, not a volume: the pods mount theirs (dry: nothing is read or written).
    let ctx = t.load(&t.sweep, None, true)?;
    if let Some(r) = ctx.runs.iter().find(|r| r.config.data.path.as_ref().is_some_and(|p| p.is_relative())) {
        let p = r.config.data.path.as_deref().unwrap_or(Path::new("")).display().to_string();
        tell!(
            "warning: data.path = {p:?} is relative: the pods resolve it against their working directory, \
               not this one; use a path under --mount"
        );
    }
    // The pods read the sweep from the ConfigMap, the snapshot taken now.
    let yaml = k8s::render(&ctx, &Snapshot::of(&t.sweep)?.text, o);
    match t.output {
        Some(p) => {
            crate::checkpoint::write_atomic(&p, yaml.as_bytes()).map_err(|e| SweepError::io(&p, e))?;
            say!(
                "wrote {} (Indexed Job, {} completions). Apply with: kubectl apply -f {}",
                p.display(),
                ctx.runs.len(),
                p.display()
            );
        }
        None => {
            let _ = write!(std::io::stdout().lock(), "{yaml}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
