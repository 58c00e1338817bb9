//! The server: `spotrun worker --serve`, the long-lived worker the launcher starts for each slot (its children,
//! [`super::child`], are these processes seen from the launcher). It reads jobs from stdin, one per line, runs
//! each with its stdout and stderr appended to the job's LOG, as a worker process of its own would, and after
//! each writes `end CODE` (that process's exit code) to the original stdout. The data and libtorch stay loaded
//! between jobs. Owns the pipes and the output redirection; what a job line means and how a job runs are the
//! caller's.
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::error::SweepError;
use crate::error::{Error, Result};

/// Serves jobs until the end of stdin, or until a job that a signal stopped (then exits with its code):
/// `parse` reads a job line into the job and its LOG, `run` runs a job to its exit code.
pub(super) fn serve<J>(
    parse: impl Fn(&str) -> Option<(J, PathBuf)>,
    mut run: impl FnMut(J) -> Result<u8>,
) -> Result<ExitCode> {
    let results = rustix::io::dup(std::io::stdout()).map_err(|e| Error::io("stdout", e.into()))?;
    let mut results = std::fs::File::from(results);
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| Error::io("stdin", e))?;
        let Some((job, log)) = parse(&line) else {
            return Err(SweepError::Usage(format!("worker --serve: not a job: {line:?}")).into());
        };
        redirect(&log)?;
        let code = match run(job) {
            Ok(c) => c,
            Err(e @ Error::Preempted { .. }) => {
                tell!("spotrun: {e}");
                e.code()
            }
            Err(e) => {
                tell!("error: {e}");
                e.code()
            }
        };
        let _ = std::io::stdout().flush();
        writeln!(results, "end {code}").map_err(|e| Error::io("stdout", e))?;
        if crate::trainer::process::signals()?.received().is_some() {
            return Ok(ExitCode::from(code));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Points this process's stdout and stderr at the end of `log`.
fn redirect(log: &Path) -> Result<()> {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let f = std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(|e| Error::io(log, e))?;
    rustix::stdio::dup2_stdout(&f).map_err(|e| Error::io(log, e.into()))?;
    rustix::stdio::dup2_stderr(&f).map_err(|e| Error::io(log, e.into()))
}
