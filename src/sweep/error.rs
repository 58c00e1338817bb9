//! What can stop a sweep command, and the exit code each maps to.
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::ConfigError;

use crate::error::Error;
pub(super) use crate::error::EXIT_BUSY;

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("{file}: cannot read sweep file: {source}")]
    Read { file: PathBuf, source: std::io::Error },
    #[error("{file}: invalid TOML: {message}")]
    Syntax { file: PathBuf, message: String },
    /// A bad key or value in the sweep file, named by its path (e.g. `parameters."optim.lr"`).
    #[error("{file}: {key}: {message}")]
    Key { file: PathBuf, key: String, message: String },
    /// The base config named by the sweep file is bad.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// Another live worker holds the run's lease.
    #[error("{0}")]
    Busy(String),
    /// Bad command-line use, e.g. `--index` out of range or a directory that is not a sweep.
    #[error("{0}")]
    Usage(String),
    /// The run failed for good (retries used up, or a permanent error).
    #[error("{0}")]
    RunFailed(String),
    /// A record of an adaptive sweep's study that cannot be read or does not follow from the ones before it.
    #[error("{path}: {message}")]
    Study { path: PathBuf, message: String },
}

impl SweepError {
    pub fn code(&self) -> u8 {
        match self {
            SweepError::Read { .. } | SweepError::Syntax { .. } | SweepError::Key { .. } | SweepError::Config(_) => 2,
            SweepError::Usage(_) | SweepError::Study { .. } => 2,
            SweepError::Busy(_) => EXIT_BUSY,
            SweepError::Io { .. } | SweepError::RunFailed(_) => 1,
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SweepError::Io { path: path.into(), source }
    }
}

/// Sweep errors become the crate's [`Error`] at the sweep layer's edge (the bottom layer knows nothing of sweeps).
impl From<SweepError> for Error {
    fn from(e: SweepError) -> Error {
        match e {
            SweepError::Config(c) => Error::Config(c),
            SweepError::Io { path, source } => Error::Io { path, source },
            SweepError::Busy(m) => Error::Busy(m),
            SweepError::RunFailed(m) => Error::RunFailed(m),
            e @ (SweepError::Read { .. }
            | SweepError::Syntax { .. }
            | SweepError::Key { .. }
            | SweepError::Usage(_)
            | SweepError::Study { .. }) => Error::Input(e.to_string()),
        }
    }
}
