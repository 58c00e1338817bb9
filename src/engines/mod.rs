//! Running a sweep under real engines: an sbatch job-array script for Slurm ([`slurm`]) and an Indexed Job for
//! Kubernetes ([`k8s`]). Both only render text around `spotrun worker`, which owns claims, resume and records;
//! the Modal app is `scripts/modal_app.py`, fed by `spotrun sweep --dry-run --json`. [`commands`] is the
//! subcommands' glue.
//!
//! Sits above `sweep` (it reads a loaded sweep and writes its snapshot with the sweep's writer); nothing imports
//! it but `cli`.
pub(crate) mod commands;
pub(crate) mod k8s;
pub(crate) mod slurm;

pub(crate) use commands::{k8s_cmd, plan_json, slurm_cmd, Target};

/// Exit codes of `spotrun worker` that mean "run me again later": preempted by SIGHUP, SIGINT, SIGUSR1, SIGUSR2,
/// SIGTERM (128 + signal), or the run is held by another live worker (75).
pub(crate) const RETRY_EXIT_CODES: [i32; 6] = [75, 129, 130, 138, 140, 143];

/// What an engine's task asks `spotrun worker` for: its group (`--group "$VAR"`, the task's index in `var`), or,
/// for a scheduled sweep, the study's next work (`--next`: adaptive trials do not exist when the engine's tasks
/// are submitted, so every task is a generic worker that pulls from the study on the volume).
pub(crate) fn worker_selector(ctx: &crate::sweep::LoadedSweep, var: &str) -> String {
    if ctx.sweep.schedule.is_some() {
        return "--next".into();
    }
    let no_fuse = if ctx.sweep.fuse == crate::sweep::Fuse::Off { " --no-fuse" } else { "" };
    format!("--group \"${var}\"{no_fuse}")
}

/// Single-quotes a string for a POSIX shell.
pub(crate) fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-=:,+@".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    #[test]
    fn shell_quoting() {
        assert_eq!(super::shell_quote("/a/b-c.toml"), "/a/b-c.toml");
        assert_eq!(super::shell_quote("a b"), "'a b'");
        assert_eq!(super::shell_quote("it's"), "'it'\\''s'");
        assert_eq!(super::shell_quote(""), "''");
    }
}
