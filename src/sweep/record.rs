//! The per-run records a sweep keeps next to the run: `attempts.jsonl` (one line when an attempt starts and
//! one when it ends), `done.json` (final metrics) and `failed.json` (why it gave up). `done.json` and
//! `failed.json` are the markers every worker checks before training; both are written atomically.
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::SweepError;
use crate::checkpoint::{append_line, write_atomic};
use crate::trainer::{EpochMetrics, RunStatus};

pub(super) const DONE: &str = "done.json";
pub(super) const FAILED: &str = "failed.json";
pub(super) const ATTEMPTS: &str = "attempts.jsonl";

/// `done.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Done {
    pub run_id: String,
    pub index: usize,
    pub outcome: RunEnd,
    pub epochs: usize,
    #[serde(rename = "final")]
    pub last: Option<EpochMetrics>,
    /// Wall time of all attempts together.
    pub wall_seconds: f64,
    /// Seconds a device (a GPU, or a CPU slot) was held by this run's attempts.
    pub device_seconds: f64,
    pub device: String,
    pub host: String,
    pub finished_unix_ms: u64,
}

/// `failed.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failed {
    pub run_id: String,
    pub index: usize,
    pub failures: usize,
    pub exit_code: Option<i32>,
    pub error: String,
    #[serde(default)]
    pub stderr_tail: String,
    pub unix_ms: u64,
}

/// How a run that is done ended: `outcome` in `done.json`, and what `spotrun worker` says of a run it trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEnd {
    Completed,
    StoppedEarly,
    Pruned,
    /// Stopped by an adaptive sweep's scheduler at a rung it could no longer be promoted from.
    Stopped,
    /// Written by a newer spotrun.
    #[serde(other)]
    Other,
}

impl RunEnd {
    /// How a training that returned `status` ended (a run whose checkpoint covered every epoch already is
    /// `Completed`).
    pub fn of(status: RunStatus) -> RunEnd {
        match status {
            RunStatus::StoppedEarly => RunEnd::StoppedEarly,
            RunStatus::Pruned => RunEnd::Pruned,
            RunStatus::Stopped => RunEnd::Stopped,
            RunStatus::Completed | RunStatus::AlreadyFinished => RunEnd::Completed,
            // Never a done run's end: a paused run gets no `done.json`.
            RunStatus::Paused => RunEnd::Other,
        }
    }

    /// `completed`, `stopped early`, `pruned` (for tables and the worker's lines).
    pub fn words(self) -> &'static str {
        match self {
            RunEnd::Completed => "completed",
            RunEnd::StoppedEarly => "stopped early",
            RunEnd::Pruned => "pruned",
            RunEnd::Stopped => "stopped at a rung",
            RunEnd::Other => "done",
        }
    }
}

/// Which end of an attempt a line of `attempts.jsonl` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttemptEvent {
    Start,
    End,
    #[serde(other)]
    Other,
}

/// How one attempt at a run ended (`outcome` in an `end` line of `attempts.jsonl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttemptEnd {
    Done,
    /// Paused by an adaptive sweep's scheduler at a rung (its checkpoint committed).
    Paused,
    Preempted,
    Failed,
    /// Recorded by the launcher for a worker that died without recording its end.
    Crashed,
    #[serde(other)]
    Other,
}

/// One line of `attempts.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub event: AttemptEvent,
    pub pid: u32,
    pub host: String,
    /// The lease generation this attempt held.
    pub lease: u64,
    pub unix_ms: u64,
    /// `start`: the optimizer step it resumed from; `end`: the step it reached.
    #[serde(default)]
    pub step: u64,
    /// `end`: how the attempt ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<AttemptEnd>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub seconds: f64,
}

/// Whether a record file is there: `Ok(false)` only when it positively does not exist; an I/O error (EIO, EACCES,
/// a stale NFS handle) is an error naming the path, never "not there" (which would retrain a done run).
pub(super) fn present(path: &Path) -> Result<bool, SweepError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(SweepError::io(path, e)),
    }
}

/// [`present`] for decisions that only skip work: anything but a positive "does not exist" counts as there.
pub(super) fn maybe_present(path: &Path) -> bool {
    present(path).unwrap_or(true)
}

pub(super) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

pub(super) fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), SweepError> {
    let text = serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    write_atomic(path, text.as_bytes()).map_err(|e| SweepError::io(path, e))
}

pub(super) fn append_attempt(run_dir: &Path, a: &Attempt) -> Result<(), SweepError> {
    let path = run_dir.join(ATTEMPTS);
    append_line(&path, &serde_json::to_string(a).unwrap_or_default()).map_err(|e| SweepError::io(&path, e))
}

pub(super) fn attempts(run_dir: &Path) -> Vec<Attempt> {
    std::fs::read_to_string(run_dir.join(ATTEMPTS))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Wall time of a run's attempts: each `end` record's seconds, plus, for an attempt that never wrote its `end`
/// (SIGKILL, out of memory, a lost node, or still running), its start up to the last heartbeat of the lease it
/// held, which is at most a quarter of `lease_seconds` short. `all` is the run's [`attempts`].
pub(super) fn wall_seconds(run_dir: &Path, all: &[Attempt]) -> f64 {
    let ended = |s: &Attempt| all.iter().any(|a| a.event == AttemptEvent::End && a.pid == s.pid && a.host == s.host);
    let mut total: f64 = all.iter().filter(|a| a.event == AttemptEvent::End).map(|a| a.seconds).sum();
    for s in all.iter().filter(|a| a.event == AttemptEvent::Start && !ended(a)) {
        let lease: Option<super::lease::LeaseInfo> = read_json(&super::lease::lease_path(run_dir, s.lease));
        if let Some(l) = lease.filter(|l| l.pid == s.pid && l.heartbeat_unix_ms > s.unix_ms) {
            total += (l.heartbeat_unix_ms - s.unix_ms) as f64 / 1000.0;
        }
    }
    total
}

/// Attempts that ended in a failure (preemptions do not count).
pub(super) fn failures(attempts: &[Attempt]) -> usize {
    attempts.iter().filter(|a| matches!(a.outcome, Some(AttemptEnd::Failed | AttemptEnd::Crashed))).count()
}

/// The epochs recorded so far in `metrics.jsonl`.
pub(super) fn epoch_metrics(run_dir: &Path) -> Vec<EpochMetrics> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The last `max_bytes` of a file, starting at a line boundary.
pub(super) fn tail(path: &Path, max_bytes: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(max_bytes);
    let s = String::from_utf8_lossy(&text[start..]).into_owned();
    match (start > 0, s.find('\n')) {
        (true, Some(i)) => s[i + 1..].to_string(),
        _ => s,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn attempt(event: &str, pid: u32, lease: u64, unix_ms: u64, seconds: f64) -> Attempt {
        Attempt {
            event: if event == "start" { AttemptEvent::Start } else { AttemptEvent::End },
            pid,
            host: "h".into(),
            lease,
            unix_ms,
            step: 0,
            outcome: None,
            exit_code: None,
            error: None,
            seconds,
        }
    }

    fn lease_file(dir: &Path, gen: u64, pid: u32, heartbeat: u64) {
        let info = super::super::lease::LeaseInfo {
            gen,
            host: "h".into(),
            host_key: String::new(),
            pid,
            proc_start: None,
            started_unix_ms: 0,
            heartbeat_unix_ms: heartbeat,
            released: false,
        };
        write_json(&super::super::lease::lease_path(dir, gen), &info).unwrap();
    }

    #[test]
    fn ends_keep_the_words_written_to_disk() {
        let runs = [RunEnd::Completed, RunEnd::StoppedEarly, RunEnd::Pruned];
        let words: Vec<String> = runs.iter().map(|r| serde_json::to_string(r).unwrap()).collect();
        assert_eq!(words, ["\"completed\"", "\"stopped_early\"", "\"pruned\""]);
        let attempts = [AttemptEnd::Done, AttemptEnd::Preempted, AttemptEnd::Failed, AttemptEnd::Crashed];
        let words: Vec<String> = attempts.iter().map(|a| serde_json::to_string(a).unwrap()).collect();
        assert_eq!(words, ["\"done\"", "\"preempted\"", "\"failed\"", "\"crashed\""]);
        assert_eq!(serde_json::from_str::<RunEnd>("\"from_the_future\"").unwrap(), RunEnd::Other);
    }

    #[test]
    fn wall_seconds_counts_attempts_killed_before_their_end_record() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        // Attempt 1 ended normally after 5 s; attempt 2 was SIGKILLed: start at 10 s, last heartbeat at 13.5 s;
        // attempt 3 has a lease written by someone else (another pid): nothing can be said, nothing is added.
        for a in [
            attempt("start", 1, 1, 1_000, 0.0),
            attempt("end", 1, 1, 6_000, 5.0),
            attempt("start", 2, 2, 10_000, 0.0),
            attempt("start", 3, 3, 20_000, 0.0),
        ] {
            append_attempt(d, &a).unwrap();
        }
        lease_file(d, 1, 1, 5_900);
        lease_file(d, 2, 2, 13_500);
        lease_file(d, 3, 99, 30_000);
        assert_eq!(wall_seconds(d, &attempts(d)), 8.5);
        // Once attempt 2's end is known (e.g. recorded by the launcher), its own seconds count instead.
        append_attempt(d, &attempt("end", 2, 2, 14_000, 4.0)).unwrap();
        assert_eq!(wall_seconds(d, &attempts(d)), 9.0);
    }
}
