//! The trainer's shared vocabulary: what a `train` command is asked ([`TrainOptions`] and the hooks it carries),
//! how it ended ([`RunStatus`], [`TrainSummary`], [`CheckpointCost`]) and how the epoch loop ended a run
//! ([`LoopEnd`]). Every stage imports these from here and nothing else of each other's; this module imports only
//! `config`, `error`, `tensorboard` and the metrics type.
use std::path::PathBuf;

use super::metrics::EpochMetrics;
use crate::config::LoadedConfig;
use crate::error::{Error, Result};

/// Called after every epoch with the history so far; returning true ends the run there (sweep pruning).
#[derive(Clone)]
pub struct EpochHook(pub std::sync::Arc<EpochHookFn>);

/// The function inside an [`EpochHook`].
pub type EpochHookFn = dyn Fn(&[EpochMetrics]) -> bool + Send + Sync;

impl std::fmt::Debug for EpochHook {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("EpochHook")
    }
}

/// Asked before every write to the run directory (checkpoints, metrics, weights). `Err(why)` means another process
/// owns the run now (the caller says why, e.g. a sweep's lease was taken over), and the run stops with
/// [`Error::NotOwner`] carrying that reason, without writing.
#[derive(Clone)]
pub struct OwnerCheck(pub std::sync::Arc<OwnerCheckFn>);

/// The function inside an [`OwnerCheck`].
pub type OwnerCheckFn = dyn Fn() -> std::result::Result<(), String> + Send + Sync;

impl std::fmt::Debug for OwnerCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("OwnerCheck")
    }
}

impl OwnerCheck {
    pub(crate) fn ensure(this: &Option<OwnerCheck>) -> Result<()> {
        match this {
            Some(c) => (c.0)().map_err(Error::NotOwner),
            None => Ok(()),
        }
    }
}

/// What `spotrun train` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    pub config: Option<PathBuf>,
    pub sets: Vec<String>,
    pub run_dir: Option<PathBuf>,
    pub quiet: bool,
    /// Resume even if the checkpoint was written with a different config.
    pub allow_config_change: bool,
    /// Train from scratch even though the run directory holds trained results and no usable checkpoint (they are
    /// moved aside into `RUN_DIR/replaced-<time>/`, never deleted).
    pub start_over: bool,
    /// An already resolved config (from a sweep); when set, `config` and `sets` are ignored.
    pub loaded: Option<LoadedConfig>,
    /// Checked after each epoch that early stopping did not end; true stops the run ([`RunStatus::Pruned`]).
    pub epoch_hook: Option<EpochHook>,
    /// Checked before every write (sweep workers pass their lease).
    pub owner_check: Option<OwnerCheck>,
    /// A sweep run's hyperparameters and the sweep's metric, for TensorBoard's HParams tab.
    pub hparams: Option<Hparams>,
    /// Where a sweep's scheduler ends this process's training (an ASHA rung).
    pub stop_at: Option<StopAt>,
}

/// Where an adaptive sweep's scheduler ends this process's training of a run: once `epochs` epochs are done,
/// either **paused** (the epoch's checkpoint committed, no final weights; a later promotion resumes it exactly
/// where it stopped) or, with `finish`, **stopped** for good (the final weights written from that checkpoint).
/// `train.epochs` and so the LR schedule are the run's own either way: a pause changes nothing about the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopAt {
    pub epochs: usize,
    pub finish: bool,
}

/// What TensorBoard's HParams tab compares runs by: the swept keys' values and the metric tags.
#[derive(Debug, Clone, Default)]
pub struct Hparams {
    pub values: Vec<(String, crate::tensorboard::HValue)>,
    pub metrics: Vec<String>,
}

/// How a `train` command ended (preemption is an [`Error::Preempted`], with its own exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Completed,
    /// Stopped before `train.epochs` by `train.early_stopping`.
    StoppedEarly,
    /// Stopped by [`TrainOptions::epoch_hook`].
    Pruned,
    /// The newest checkpoint already covered every epoch; nothing was trained.
    AlreadyFinished,
    /// Paused at [`TrainOptions::stop_at`]: a checkpoint, no final weights.
    Paused,
    /// Stopped for good at [`TrainOptions::stop_at`] (`finish`): the final weights are that epoch's.
    Stopped,
}

/// The result of a `train` command.
#[derive(Debug)]
pub struct TrainSummary {
    pub run_id: String,
    pub run_dir: PathBuf,
    pub status: RunStatus,
    pub metrics: Vec<EpochMetrics>,
    /// What checkpointing cost this process (zero when nothing was trained).
    pub checkpoints: CheckpointCost,
}

/// How long checkpoint saves held up the training loop in this process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CheckpointCost {
    pub saves: usize,
    /// Time the loop spent in saves: the whole save when synchronous, the host copy (plus any wait for the
    /// previous save) with `checkpoint.async`, and the final wait for the writer.
    pub paused_seconds: f64,
    /// Wall time of the training loop (epochs, evaluation and saves) in this process.
    pub loop_seconds: f64,
}

/// How the epoch loop ended one run (a failure is an `Err` beside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoopEnd {
    /// Every configured epoch ran.
    Completed,
    /// `train.early_stopping` ended the run.
    EarlyStopped,
    /// [`TrainOptions::epoch_hook`] ended the run (sweep pruning).
    Pruned,
    /// A preemption signal arrived; `cursor` is (epoch in progress, batches done).
    Preempted { signal: i32, cursor: (usize, usize) },
    /// [`TrainOptions::stop_at`] paused the run.
    Paused,
    /// [`TrainOptions::stop_at`] stopped the run for good.
    Stopped,
}

impl LoopEnd {
    /// The command's status for a run that ended without a signal.
    pub(crate) fn status(self) -> RunStatus {
        match self {
            LoopEnd::EarlyStopped => RunStatus::StoppedEarly,
            LoopEnd::Pruned => RunStatus::Pruned,
            LoopEnd::Paused => RunStatus::Paused,
            LoopEnd::Stopped => RunStatus::Stopped,
            _ => RunStatus::Completed,
        }
    }
}
