//! The crate-level error: every module's error folds into [`Error`], which knows its exit code.
//!
//! Exit codes are part of the CLI contract: 0 success, 2 bad input (config, sweep file, data, checkpoint, or a run
//! that diverged), 75 a run held by another live process (a sweep worker, or a `spotrun train` of the same run dir), 128 + signal when preempted, 1 anything else (I/O
//! on the output side, libtorch failures, a sweep with failed runs).
use std::process::ExitCode;

use crate::checkpoint::TensorIoError;
use crate::config::ConfigError;
use crate::data::DataError;

/// Exit code of a command whose run is held by another live process (EX_TEMPFAIL): try again later.
pub const EXIT_BUSY: u8 = 75;

/// Everything that can stop a spotrun command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    TensorIo(#[from] TensorIoError),
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// Bad input that is not a config key: a sweep file, a command-line value, a directory that is not a sweep.
    #[error("{0}")]
    Input(String),
    /// A sweep run that failed for good (retries used up, or a permanent error).
    #[error("{0}")]
    RunFailed(String),
    /// Stopped by a preemption signal after saving (or deliberately not saving) a checkpoint.
    #[error("{message}")]
    Preempted { signal: i32, message: String },
    /// The training loss became NaN or infinite (fp32/bf16, where no grad scaler can recover).
    #[error("training diverged: the loss became {value} at epoch {epoch}, step {step}; lower optim.lr, enable optim.grad_clip, or use a different train.precision")]
    Diverged { value: f64, epoch: usize, step: u64 },
    /// A problem with a device request, e.g. `train.device = "cuda:3"` on a machine with one GPU.
    #[error("{0}")]
    Device(String),
    /// The run directory cannot be used for this run (e.g. it holds a run with another config).
    #[error("{0}")]
    RunDir(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A failure while training that retrying may fix (e.g. CUDA out of memory in an optimizer step).
    #[error("{0}")]
    Runtime(String),
    /// An allocation did not fit (host RAM or GPU memory). Before training it is bad input (exit 2: the config
    /// asks for more than the machine has); during training exit 1. Sweeps never retry it.
    #[error("out of memory: {message}")]
    OutOfMemory { message: String, before_training: bool },
    /// A panic that is not an allocation failure: a bug in spotrun, reported in one line.
    #[error("internal error (please report it): {0}")]
    Internal(String),
    /// Another process owns the run now (e.g. a sweep worker whose lease was taken over); it stopped without
    /// writing (exit 75).
    #[error("{0}")]
    NotOwner(String),
    /// Another process is training this run directory right now (exit 75: try again later).
    #[error("{0}")]
    Busy(String),
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
}

impl Error {
    /// The process exit code for this error: 2 for bad input, 75 busy, 128 + signal when preempted, 1 otherwise.
    /// The one mapping: the CLI and the sweep worker's attempt records both use it.
    pub fn code(&self) -> u8 {
        match self {
            Error::Config(_)
            | Error::Data(_)
            | Error::Diverged { .. }
            | Error::Device(_)
            | Error::RunDir(_)
            | Error::Input(_) => 2,
            Error::OutOfMemory { before_training: true, .. } => 2,
            Error::TensorIo(e) if e.is_bad_input() => 2,
            Error::NotOwner(_) | Error::Busy(_) => EXIT_BUSY,
            Error::Preempted { signal, .. } => (128 + signal).clamp(0, 255) as u8,
            Error::Internal(_) => 101,
            _ => 1,
        }
    }

    /// [`Error::code`] as a process exit code.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }

    pub(crate) fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
