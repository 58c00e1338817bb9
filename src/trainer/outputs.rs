//! How a run ends: the preemption save, or the final flush and the files a finished run leaves
//! (`model.safetensors`, `ema.safetensors`, `model.pt`), and the [`TrainSummary`]. Also the weights of a run
//! whose checkpoint already covered every epoch.
use std::time::Instant;

use tch::nn::VarStore;

use super::fit::Trainer;
use super::metrics::EpochMetrics;
use super::observer::Observer;
use super::prepare::Prepared;
use super::saver::Saver;
use super::types::{CheckpointCost, LoopEnd, RunStatus, StopAt, TrainSummary};
use crate::checkpoint;
use crate::error::{Error, Result};
use crate::model;

/// The parts of a run that outlive its epoch loop.
pub(super) struct Ending<'t, 'a> {
    pub trainer: &'t Trainer<'a>,
    pub saver: Saver<'a>,
    pub obs: Observer,
}

/// After the epoch loop ended the run with `end`: the preemption save (an [`Error::Preempted`]), or the final
/// flush, weights and summary.
pub(super) fn conclude(
    p: &Prepared,
    run: Ending,
    end: LoopEnd,
    metrics: Vec<EpochMetrics>,
    loop_started: Instant,
) -> Result<TrainSummary> {
    let Ending { trainer, mut saver, obs } = run;
    if let LoopEnd::Preempted { signal, cursor } = end {
        return Err(saver.preempt(trainer, signal, cursor, &metrics, &obs.progress));
    }
    obs.finish();
    saver.flush()?;
    saver.cost.loop_seconds = loop_started.elapsed().as_secs_f64();
    obs.ensure_owner()?;
    if end != LoopEnd::Paused {
        write_outputs(p, trainer)?;
    }
    let (run_id, run_dir, status) = (p.run_id.clone(), p.run_dir.clone(), end.status());
    Ok(TrainSummary { run_id, run_dir, status, metrics, checkpoints: saver.cost })
}

/// Nothing to train: the run directory stays as it is, except that lost final weights are restored.
pub(super) fn already_finished(p: &Prepared, metrics: Vec<EpochMetrics>) -> Result<TrainSummary> {
    let weights = p.run_dir.join("model.safetensors");
    if matches!(std::fs::symlink_metadata(&weights), Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
        std::fs::create_dir_all(&p.run_dir).map_err(|e| Error::io(&p.run_dir, e))?;
        checkpoint::save_with_metadata(&weights, &named_variables(&p.vs, p.net.as_ref()), &weights_metadata(p))?;
        save_module(p)?;
    }
    Ok(TrainSummary {
        run_id: p.run_id.clone(),
        run_dir: p.run_dir.clone(),
        status: RunStatus::AlreadyFinished,
        metrics,
        checkpoints: CheckpointCost::default(),
    })
}

/// A run resumed from a checkpoint at (or past) where the sweep's scheduler ends it: paused again without
/// training (a worker died before recording the pause), or stopped for good with that checkpoint's weights as
/// its final ones. A checkpoint past the stop (mid-epoch, or a later epoch) is an error: the sweep's records and
/// the run directory disagree.
pub(super) fn at_stop(
    p: &Prepared,
    trainer: &Trainer,
    s: StopAt,
    cursor: (usize, usize),
    metrics: Vec<EpochMetrics>,
) -> Result<TrainSummary> {
    if cursor != (s.epochs, 0) {
        return Err(Error::RunDir(format!(
            "{}: the newest checkpoint is at epoch {} batch {}, past where the sweep's scheduler ended this run \
             (after epoch {}); its records and the run directory disagree",
            p.run_dir.display(),
            cursor.0 + 1,
            cursor.1,
            s.epochs
        )));
    }
    let status = if s.finish {
        write_outputs(p, trainer)?;
        RunStatus::Stopped
    } else {
        RunStatus::Paused
    };
    Ok(TrainSummary {
        run_id: p.run_id.clone(),
        run_dir: p.run_dir.clone(),
        status,
        metrics,
        checkpoints: CheckpointCost::default(),
    })
}

/// The final weights (`model.safetensors`), the EMA's (`ema.safetensors`, with `train.ema`) and, for a
/// TorchScript run, the trained module (`model.pt`).
fn write_outputs(p: &Prepared, trainer: &Trainer) -> Result<()> {
    let meta = weights_metadata(p);
    checkpoint::save_with_metadata(
        &p.run_dir.join("model.safetensors"),
        &named_variables(&p.vs, p.net.as_ref()),
        &meta,
    )?;
    if let Some(ema) = trainer.ema_weights() {
        checkpoint::save_with_metadata(&p.run_dir.join("ema.safetensors"), &ema, &meta)?;
    }
    save_module(p)
}

/// The final weights' safetensors metadata: `spotrun.classes`, the class names as a JSON list (class `i` at index
/// `i`), when the data has them (an image folder, string labels); nothing otherwise.
fn weights_metadata(p: &Prepared) -> Vec<(String, String)> {
    p.data
        .class_names()
        .map_or_else(Vec::new, |names| vec![("spotrun.classes".into(), serde_json::json!(names).to_string())])
}

/// A TorchScript run also leaves the trained module, `RUN_DIR/model.pt` (written to a scratch name, fsynced,
/// renamed into place).
fn save_module(p: &Prepared) -> Result<()> {
    let path = p.run_dir.join("model.pt");
    let scratch = p.run_dir.join(format!(".model.pt.{}", checkpoint::unique_suffix()));
    let Some(saved) = p.net.save_module(&scratch) else { return Ok(()) };
    let fail = |e: std::io::Error| {
        let _ = std::fs::remove_file(&scratch);
        Error::io(&path, e)
    };
    saved.map_err(|why| fail(std::io::Error::other(why)))?;
    std::fs::File::open(&scratch).and_then(|f| f.sync_all()).map_err(fail)?;
    std::fs::rename(&scratch, &path).map_err(fail)?;
    std::fs::File::open(&p.run_dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(&p.run_dir, e))
}

/// The model's whole `state_dict` (PyTorch names, sorted): its variables in `vs` (or its own parameters), tied
/// aliases and buffers, so the file loads with `strict=True`.
pub(super) fn named_variables(vs: &VarStore, net: &dyn model::Model) -> Vec<(String, tch::Tensor)> {
    let params = net.parameters().unwrap_or_else(|| vs.variables().into_iter().collect());
    super::state::model_weights(params, net)
}
