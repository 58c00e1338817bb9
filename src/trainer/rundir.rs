//! What a run directory and its checkpoint directory already hold, as checks that run before anything is written.
//!
//! Two rules keep a user's training from being lost: (1) a checkpoint directory belongs to one run directory,
//! recorded in `CHECKPOINT_DIR/owner.json` (another run dir pointing there through `checkpoint.dir` is refused);
//! (2) a run directory with trained results (epochs in `metrics.jsonl`, a `model.safetensors`, or checkpoints
//! that look committed) but no usable checkpoint is refused, never retrained over, unless `--start-over`, which
//! moves the old files aside into `replaced-<unix seconds>/` rather than deleting them. Imports `checkpoint`
//! and `error` only.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{write_atomic, Skipped};
use crate::error::{Error, Result};

/// Refuses a run directory that does not exist yet and would have to be created on a read-only file system, before
/// any data is loaded (an existing one may be read-only: a finished run on a read-only mount still reports).
pub(super) fn check_creatable(dir: &Path) -> Result<()> {
    let mut at = std::path::absolute(dir).map_err(|e| Error::io(dir, e))?;
    while std::fs::symlink_metadata(&at).is_err() {
        match at.parent() {
            Some(p) => at = p.to_path_buf(),
            None => return Ok(()),
        }
    }
    if at == std::path::absolute(dir).unwrap_or_default() {
        return Ok(());
    }
    let ro = rustix::fs::statvfs(&at).is_ok_and(|s| s.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY));
    if ro {
        return Err(Error::RunDir(format!(
            "{}: cannot create the run directory: {} is on a read-only file system; pass a writable --run-dir",
            dir.display(),
            at.display()
        )));
    }
    Ok(())
}

/// The ownership record's file name inside a checkpoint directory.
pub(super) const OWNER_FILE: &str = "owner.json";

/// `owner.json`: which run directory a checkpoint directory belongs to. `run_dir` is `..` when the checkpoint
/// directory sits inside its run directory (the default `RUN_DIR/checkpoints`), so the record stays true when a
/// volume is mounted at another path; otherwise the absolute path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Owner {
    pub run_dir: PathBuf,
}

/// The record for `run_dir` as seen from `ckpt_dir`.
fn owner_for(run_dir: &Path, ckpt_dir: &Path) -> Result<Owner> {
    let run = std::path::absolute(run_dir).map_err(|e| Error::io(run_dir, e))?;
    let ckpt = std::path::absolute(ckpt_dir).map_err(|e| Error::io(ckpt_dir, e))?;
    Ok(Owner { run_dir: if ckpt.parent() == Some(run.as_path()) { PathBuf::from("..") } else { run } })
}

/// Where a record points, resolved against the checkpoint directory it sits in.
fn resolve(owner: &Owner, ckpt_dir: &Path) -> PathBuf {
    if owner.run_dir == Path::new("..") {
        let abs = std::path::absolute(ckpt_dir).unwrap_or_else(|_| ckpt_dir.to_path_buf());
        return abs.parent().map(Path::to_path_buf).unwrap_or(abs);
    }
    owner.run_dir.clone()
}

/// Reads `owner.json`: `Ok(None)` only when it does not exist (an I/O error is an error, not "no owner").
pub(super) fn read_owner(ckpt_dir: &Path) -> Result<Option<Owner>> {
    let path = ckpt_dir.join(OWNER_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::RunDir(format!("{}: not an ownership record: {e}", path.display()))),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound) || e.raw_os_error() == Some(20) => Ok(None),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Refuses a checkpoint directory that belongs to another run directory. `has_checkpoints`: whether it holds
/// any `ckpt-*` (a directory from before ownership records is adopted by the run dir that has a `config.toml`,
/// i.e. that trained there before).
pub(super) fn check_owner(run_dir: &Path, ckpt_dir: &Path, has_checkpoints: bool) -> Result<()> {
    let same = |a: &Path, b: &Path| match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => std::path::absolute(a).ok() == std::path::absolute(b).ok(),
    };
    match read_owner(ckpt_dir)? {
        Some(o) if !same(&resolve(&o, ckpt_dir), run_dir) => Err(Error::RunDir(format!(
            "checkpoint.dir = {} belongs to the run in {}, not to {}; two runs sharing a checkpoint directory would \
             delete and resume each other's checkpoints. Give this run its own checkpoint.dir",
            ckpt_dir.display(),
            resolve(&o, ckpt_dir).display(),
            run_dir.display()
        ))),
        Some(_) => Ok(()),
        None if has_checkpoints && !run_dir.join("config.toml").exists() => Err(Error::RunDir(format!(
            "checkpoint.dir = {} already holds checkpoints of another run (and no ownership record); this run \
             directory {} never trained there. Give this run its own checkpoint.dir",
            ckpt_dir.display(),
            run_dir.display()
        ))),
        None => Ok(()),
    }
}

/// Writes `owner.json` (atomically) if the checkpoint directory has none yet.
pub(super) fn claim(run_dir: &Path, ckpt_dir: &Path) -> Result<()> {
    if read_owner(ckpt_dir)?.is_some() {
        return Ok(());
    }
    std::fs::create_dir_all(ckpt_dir).map_err(|e| Error::io(ckpt_dir, e))?;
    let path = ckpt_dir.join(OWNER_FILE);
    let text = serde_json::to_string_pretty(&owner_for(run_dir, ckpt_dir)?).unwrap_or_default();
    write_atomic(&path, text.as_bytes()).map_err(|e| Error::io(&path, e))
}

/// `RUN_DIR/checkpointed.json`: written once, after the run's first checkpoint committed. Epochs in
/// `metrics.jsonl` count as trained results only with it: before the first commit they were never saved anywhere,
/// and retraining them (deterministically, to the same values) is how such a run resumes.
pub(super) const CHECKPOINTED: &str = "checkpointed.json";

/// Writes [`CHECKPOINTED`] (atomically) naming the step of the first committed checkpoint.
pub(super) fn mark_checkpointed(run_dir: &Path, step: u64) -> Result<()> {
    let path = run_dir.join(CHECKPOINTED);
    let text = serde_json::json!({ "first_committed_step": step }).to_string();
    write_atomic(&path, text.as_bytes()).map_err(|e| Error::io(&path, e))
}

/// What a run directory already holds that training from scratch would overwrite.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Trained {
    /// Epoch lines in `metrics.jsonl` (a torn last line is not counted), when a checkpoint of them was committed.
    pub epochs: usize,
    /// Whether [`CHECKPOINTED`] says a checkpoint was committed here once.
    pub checkpointed: bool,
    pub weights: bool,
    /// Checkpoints that looked committed but could not be used, with why.
    pub bad_checkpoints: Vec<String>,
}

impl Trained {
    pub(super) fn any(&self) -> bool {
        self.checkpointed || self.weights || !self.bad_checkpoints.is_empty()
    }
}

/// Looks at `run_dir` for trained results. Read errors are errors (an unreadable `metrics.jsonl` is not empty).
pub(super) fn trained(run_dir: &Path, skipped: &[Skipped]) -> Result<Trained> {
    let metrics = run_dir.join("metrics.jsonl");
    let epochs = match std::fs::read_to_string(&metrics) {
        Ok(t) => t.lines().filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()).count(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(20) => 0,
        Err(e) => return Err(Error::io(&metrics, e)),
    };
    let weights = std::fs::symlink_metadata(run_dir.join("model.safetensors")).is_ok();
    let checkpointed = std::fs::symlink_metadata(run_dir.join(CHECKPOINTED)).is_ok();
    let bad_checkpoints = skipped
        .iter()
        .filter_map(|s| match s {
            Skipped::Bad { why, .. } => Some(why.clone()),
            Skipped::Uncommitted(_) => None,
        })
        .collect();
    Ok(Trained { epochs: if checkpointed { epochs } else { 0 }, checkpointed, weights, bad_checkpoints })
}

/// The refusal for a run directory that holds trained results but no checkpoint to resume from.
pub(super) fn refuse_retraining(run_dir: &Path, ckpt_dir: &Path, t: &Trained) -> Error {
    let mut have = Vec::new();
    if t.epochs > 0 {
        have.push(format!("{} epoch(s) in metrics.jsonl", t.epochs));
    } else if t.checkpointed {
        have.push(format!("{CHECKPOINTED}: it had committed checkpoints"));
    }
    if t.weights {
        have.push("model.safetensors".to_string());
    }
    if !t.bad_checkpoints.is_empty() {
        have.push(format!("{} checkpoint(s) that cannot be used ({})", t.bad_checkpoints.len(), t.bad_checkpoints[0]));
    }
    Error::RunDir(format!(
        "{} already holds a trained run ({}) but {} has no usable checkpoint to resume from, so training would start \
         over and overwrite it. Nothing was changed. To train it again from scratch, pass --start-over (the old \
         files are moved to {}/replaced-<time>/, not deleted), or use another --run-dir",
        run_dir.display(),
        have.join(", "),
        ckpt_dir.display(),
        run_dir.display()
    ))
}

/// `--start-over`: moves the run's results and every `ckpt-*` directory aside into `replaced-<unix seconds>/`
/// (inside the run directory, and inside the checkpoint directory for its checkpoints). Returns where they went.
pub(super) fn move_aside(run_dir: &Path, ckpt_dir: &Path) -> Result<Option<PathBuf>> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let dest = run_dir.join(format!("replaced-{stamp}"));
    let mut moved = false;
    let mut mv = |from: PathBuf, to_dir: &Path| -> Result<()> {
        if std::fs::symlink_metadata(&from).is_err() {
            return Ok(());
        }
        std::fs::create_dir_all(to_dir).map_err(|e| Error::io(to_dir, e))?;
        let to = to_dir.join(from.file_name().unwrap_or_default());
        std::fs::rename(&from, &to).map_err(|e| Error::io(&from, e))?;
        moved = true;
        Ok(())
    };
    for name in ["metrics.jsonl", "model.safetensors", CHECKPOINTED] {
        mv(run_dir.join(name), &dest)?;
    }
    let ckpt_dest = ckpt_dir.join(format!("replaced-{stamp}"));
    if let Ok(rd) = std::fs::read_dir(ckpt_dir) {
        let mut dirs: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("ckpt-"))
            .map(|e| e.path())
            .collect();
        dirs.sort();
        for d in dirs {
            mv(d, &ckpt_dest)?;
        }
    }
    Ok(moved.then_some(dest))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_default_checkpoint_dir_records_its_parent_and_a_foreign_run_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        let own = a.join("checkpoints");
        std::fs::create_dir_all(&own).unwrap();
        claim(&a, &own).unwrap();
        assert_eq!(read_owner(&own).unwrap().unwrap().run_dir, PathBuf::from(".."), "portable across mounts");
        assert!(check_owner(&a, &own, true).is_ok());
        let e = check_owner(&b, &own, true).unwrap_err().to_string();
        assert!(e.contains("checkpoint.dir") && e.contains("belongs to the run in") && e.contains("/a"), "{e}");
        let shared = tmp.path().join("shared");
        std::fs::create_dir_all(&shared).unwrap();
        claim(&b, &shared).unwrap();
        assert!(read_owner(&shared).unwrap().unwrap().run_dir.is_absolute());
        assert!(check_owner(&a, &shared, true).is_err());
        assert!(check_owner(&b, &shared, true).is_ok());
    }

    #[test]
    fn an_unowned_checkpoint_dir_with_checkpoints_is_adopted_only_by_a_run_dir_that_trained_there() {
        let tmp = tempfile::tempdir().unwrap();
        let (run, ckpt) = (tmp.path().join("run"), tmp.path().join("ckpt"));
        std::fs::create_dir_all(&run).unwrap();
        assert!(check_owner(&run, &ckpt, false).is_ok(), "nothing there yet");
        assert!(check_owner(&run, &ckpt, true).is_err(), "someone else's checkpoints");
        std::fs::write(run.join("config.toml"), "").unwrap();
        assert!(check_owner(&run, &ckpt, true).is_ok(), "a run dir from before ownership records");
    }

    #[test]
    fn trained_results_are_found_and_a_torn_metrics_line_is_not_an_epoch() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(!trained(tmp.path(), &[]).unwrap().any());
        std::fs::write(tmp.path().join("metrics.jsonl"), "{\"epoch\":1}\n{\"epoch\":2}\n{\"epo").unwrap();
        assert!(!trained(tmp.path(), &[]).unwrap().any(), "epochs never checkpointed are retrained, not results");
        mark_checkpointed(tmp.path(), 63).unwrap();
        let t = trained(tmp.path(), &[]).unwrap();
        assert_eq!((t.epochs, t.weights, t.checkpointed), (2, false, true));
        let e = refuse_retraining(tmp.path(), &tmp.path().join("checkpoints"), &t).to_string();
        assert!(e.contains("2 epoch(s) in metrics.jsonl") && e.contains("--start-over"), "{e}");
        std::fs::create_dir(tmp.path().join("metrics.jsonl.d")).unwrap();
        let moved = move_aside(tmp.path(), &tmp.path().join("checkpoints")).unwrap().unwrap();
        assert!(moved.join("metrics.jsonl").exists() && !tmp.path().join("metrics.jsonl").exists());
    }
}
