//! Stage 2 of `spotrun train`: the run directory. Locks (a standalone run), the checkpoint to resume from (every one
//! passed over reported), the rules that keep a user's results (ownership of the checkpoint directory, no silent
//! retraining, config and data compatibility), then, only once everything has been accepted, the run files.
use std::path::Path;

use tch::Device;

use super::lock::RunLocks;
use super::metrics::EpochMetrics;
use super::prepare::Prepared;
use super::resume::{compatible, same_data};
use super::rundir;
use super::types::TrainOptions;
use crate::checkpoint::{write_atomic, Loaded, Skipped, Store};
use crate::config::{self, Config, LoadedConfig};
use crate::error::{Error, Result};

/// The run directory as found: the checkpoint to resume from, what to do before writing, and the locks (held as
/// long as this lives).
pub(crate) struct Opened {
    pub found: Option<Loaded>,
    /// `--start-over` on a run directory with results: move them aside before writing.
    pub replace: bool,
    locks: RunLocks,
}

/// Stage 2a: reads the run directory and decides, writing nothing but lock files. Warnings go to `p.lines`.
/// Returns the checkpoint store beside it (the saver takes it over).
pub(crate) fn open(p: &mut Prepared, opts: &TrainOptions) -> Result<(Opened, Store)> {
    let (run_dir, ckpt_dir) = (p.run_dir.clone(), p.ckpt_dir.clone());
    check_run_dir(&run_dir, p.cfg(), opts.allow_config_change)?;
    if opts.run_dir.is_none() && std::fs::symlink_metadata(&run_dir).is_err() {
        p.lines.extend(same_run_other_length(&run_dir, p.cfg()));
    }
    // A standalone run locks its directory and its checkpoint directory (sweep workers hold a lease instead): at
    // once where the directory exists, so a second process stops before reading checkpoints; the rest in `begin`.
    let standalone = opts.owner_check.is_none();
    let mut locks = RunLocks::new(if standalone { vec![run_dir.clone(), ckpt_dir.clone()] } else { vec![] });
    locks.take(false)?;
    let store = Store::new(ckpt_dir.clone(), p.cfg().checkpoint.keep_last);
    let unlistable = |e: std::io::Error| {
        let why = format!("cannot list checkpoints ({e}); refusing to treat it as empty and start over");
        Error::io(&ckpt_dir, std::io::Error::new(e.kind(), why))
    };
    let listed = store.list().map_err(unlistable)?;
    rundir::check_owner(&run_dir, &ckpt_dir, !listed.is_empty())?;
    let mut skipped = Vec::new();
    let found = store.latest_good(Device::Cpu, &mut |s| skipped.push(s)).map_err(unlistable)?;
    p.lines.extend(skipped.iter().map(|s| match s {
        Skipped::Uncommitted(_) => format!("note: {s}"),
        Skipped::Bad { .. } => format!("warning: {s}"),
    }));
    let mut replace = false;
    match &found {
        None => {
            let t = rundir::trained(&run_dir, &skipped)?;
            if t.any() && !opts.start_over {
                return Err(rundir::refuse_retraining(&run_dir, &ckpt_dir, &t));
            }
            replace = t.any();
        }
        Some(l) => check_resumable(p, l, opts.allow_config_change)?,
    }
    Ok((Opened { found, replace, locks }, store))
}

/// Whether checkpoint `l` may be continued with this config and data (notes go to `p.lines`).
fn check_resumable(p: &mut Prepared, l: &Loaded, allow: bool) -> Result<()> {
    let old: Config = serde_json::from_value(l.manifest.config.clone())
        .map_err(|e| Error::RunDir(format!("{}: manifest config does not parse: {e}", l.dir.display())))?;
    match compatible(&old, p.cfg(), allow) {
        Ok(note) => p.lines.extend(note.map(|n| format!("note: {n}"))),
        Err(changed) => return Err(incompatible(&l.dir, &changed)),
    }
    let recorded = l.manifest.data_fingerprint.as_deref();
    match same_data(recorded, p.data.fingerprint(), p.data.origin(), allow) {
        Ok(note) => p.lines.extend(note.map(|n| format!("note: {n}"))),
        Err(why) => return Err(Error::RunDir(format!("{}: {why}", l.dir.display()))),
    }
    Ok(())
}

/// Stage 2b, once training will really start: the remaining locks, `--start-over`'s move, the checkpoint
/// directory's owner record, `config.toml`, and `metrics.jsonl` rewritten to the resumed epochs.
pub(crate) fn begin(p: &Prepared, o: &mut Opened, metrics: &[EpochMetrics], say: &dyn Fn(&str)) -> Result<()> {
    o.locks.take(true)?;
    o.locks.warnings().for_each(|w| say(&format!("warning: {w}")));
    if o.replace {
        if let Some(to) = rundir::move_aside(&p.run_dir, &p.ckpt_dir)? {
            say(&format!("--start-over: the previous results were moved to {}", to.display()));
        }
    }
    rundir::claim(&p.run_dir, &p.ckpt_dir)?;
    write_run_files(&p.run_dir, &p.loaded, &p.run_id, metrics)?;
    for (name, bytes) in p.data.run_files()? {
        let path = p.run_dir.join(name);
        write_atomic(&path, &bytes).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

/// A default run directory is named by the run id, which covers `train.epochs`: `--set train.epochs=12` on a
/// 10-epoch run starts a new run beside it. Says where the same run with another length is, and how to extend it.
fn same_run_other_length(run_dir: &Path, cfg: &Config) -> Option<String> {
    let want = config::hash_ignoring_epochs(cfg).ok()?;
    let parent = run_dir.parent()?;
    let mut found: Vec<(std::path::PathBuf, usize)> = std::fs::read_dir(parent)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|d| {
            let text = std::fs::read_to_string(d.join("config.toml")).ok()?;
            let theirs = config::parse_str(&text, &d.join("config.toml")).ok()?;
            (config::hash_ignoring_epochs(&theirs).ok()? == want).then_some((d, theirs.train.epochs))
        })
        .collect();
    found.sort();
    let (dir, epochs) = found.into_iter().next()?;
    Some(format!(
        "note: {} holds this run with train.epochs = {epochs}; this command starts a separate {}-epoch run from \
         scratch. To continue that one instead, add --run-dir {}",
        dir.display(),
        cfg.train.epochs,
        dir.display()
    ))
}

pub(crate) fn incompatible(dir: &Path, changed: &[String]) -> Error {
    if changed == ["train.epochs"] {
        return Error::RunDir(format!(
            "{} holds this run with more epochs configured than train.epochs asks for now; a run cannot be shortened \
             (its checkpoints and learning-rate schedule belong to the longer run). Its metrics.jsonl has every \
             epoch so far; to train fewer epochs from scratch, use another --run-dir",
            dir.display()
        ));
    }
    Error::RunDir(format!(
        "{} holds a run with a different config (changed: {}). Use another --run-dir, change only train.epochs to \
         extend the run, or pass --allow-config-change",
        dir.display(),
        changed.join(", ")
    ))
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
