//! Process-wide state, set once at start-up, and the guard that scopes per-run settings.
//!
//! Signal handlers and `CUBLAS_WORKSPACE_CONFIG` belong to the process, not to a run: [`init`] (called by the CLI
//! before any thread starts) sets them once, and a `worker --next` that trains many runs in one process installs
//! nothing twice. `train.deterministic` is per run: [`Deterministic`] turns it on for one run and restores the
//! previous setting when the run ends, however it ends, so it never leaks into the next run of the process.
use std::sync::OnceLock;

use super::signals::Signals;
use crate::error::{Error, Result};
use crate::ffi;

/// cuBLAS's deterministic workspace setting (read when its first handle is created, so set before any CUDA work).
pub(crate) const CUBLAS_WORKSPACE: &str = ":4096:8";

static SIGNALS: OnceLock<std::result::Result<Signals, String>> = OnceLock::new();

/// Sets the process state once: the preemption signal handlers, and `CUBLAS_WORKSPACE_CONFIG` unless the user set
/// it. Call before any thread is started (setting an environment variable races with threads reading it).
pub(crate) fn init() {
    if std::env::var_os("CUBLAS_WORKSPACE_CONFIG").is_none() {
        std::env::set_var("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE);
    }
    let _ = signals();
}

/// The process's signal flags, installed on first use (library users who never call [`init`] get them too).
pub(crate) fn signals() -> Result<&'static Signals> {
    SIGNALS
        .get_or_init(|| Signals::install().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::Runtime(format!("cannot install signal handlers: {e}")))
}

/// `train.deterministic` for the lifetime of the guard; the previous setting comes back on drop.
#[derive(Debug)]
pub(crate) struct Deterministic {
    previous: Option<bool>,
}

impl Deterministic {
    /// Turns deterministic algorithms on when `on` (and leaves them as they are otherwise).
    pub(crate) fn set(on: bool) -> Result<Deterministic> {
        if !on {
            return Ok(Deterministic { previous: None });
        }
        let previous = ffi::deterministic();
        ffi::set_deterministic(true).map_err(|e| Error::Device(e.to_string()))?;
        Ok(Deterministic { previous: Some(previous) })
    }
}

impl Drop for Deterministic {
    fn drop(&mut self) {
        if let Some(p) = self.previous {
            let _ = ffi::set_deterministic(p);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_deterministic_run_does_not_leak_into_the_next_run_of_the_process() {
        assert!(!ffi::deterministic(), "libtorch starts non-deterministic");
        {
            let _run = Deterministic::set(true).unwrap();
            assert!(ffi::deterministic());
            let _nested = Deterministic::set(false).unwrap();
            assert!(ffi::deterministic(), "a run that does not ask leaves it alone");
        }
        assert!(!ffi::deterministic(), "restored when the run ended");
        fn failing_run() -> std::result::Result<(), String> {
            let _run = Deterministic::set(true).map_err(|e| e.to_string())?;
            Err("the run failed".into())
        }
        assert!(failing_run().is_err() && !ffi::deterministic(), "restored on the error path too");
    }

    #[test]
    fn signal_handlers_are_installed_once() {
        let a = signals().unwrap() as *const Signals;
        let b = signals().unwrap() as *const Signals;
        assert_eq!(a, b);
    }
}
