//! What a finished child of the launcher means, as pure functions the launcher acts on: how it exited
//! ([`classify`]) and, for a failure, whether to retry, give up or leave the run to whoever holds it
//! ([`after_failure`], the one retry rule of [`super::retry`] plus what only the launcher knows). No processes,
//! files or clocks here. Imports only the exit-code contract and the retry rule.
use super::retry::{verdict, Failure, RetrySettings, Verdict};
use crate::error::EXIT_BUSY;

/// Signals that mean "the machine is going away" rather than "the run is broken".
const PREEMPTION_SIGNALS: [i32; 6] = [1, 2, 9, 10, 12, 15];
/// A run preempted this many times in one launch is treated as failing (e.g. an OOM killer loop).
const MAX_PREEMPTIONS: usize = 20;

/// What a finished child (a `spotrun worker --serve` job) means for its run: a pure function of how it exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChildEnd {
    /// Exit 0 and the run's `done.json` is there.
    Done,
    /// Exit 75: another live worker holds the run.
    Busy,
    /// Stopped by a preemption signal (died of it: `killed`, so it could not record its attempt's end).
    Preempted { signal: i32, killed: bool },
    /// Anything else: `bad_input` for exit 2 (retrying cannot help), `crashed` when it died without recording
    /// its attempt's end (a signal, or an exit code spotrun never uses).
    Failed { bad_input: bool, crashed: bool },
}

/// Classifies a child's exit: `code` (None when killed), `killed_by` (the signal, if any), whether `done.json`
/// exists, and how often this launcher saw the run preempted already (past [`MAX_PREEMPTIONS`] a "preemption"
/// loop, e.g. the OOM killer, is a failure).
pub(super) fn classify(code: Option<i32>, killed_by: Option<i32>, done: bool, preemptions: usize) -> ChildEnd {
    let signal = killed_by.or_else(|| code.filter(|c| *c > 128).map(|c| c - 128));
    match (code, signal) {
        (Some(0), _) if done => ChildEnd::Done,
        (Some(c), _) if c == i32::from(EXIT_BUSY) => ChildEnd::Busy,
        (_, Some(s)) if PREEMPTION_SIGNALS.contains(&s) && preemptions < MAX_PREEMPTIONS => {
            ChildEnd::Preempted { signal: s, killed: killed_by.is_some() }
        }
        _ => ChildEnd::Failed {
            bad_input: code == Some(2),
            crashed: killed_by.is_some() || !matches!(code, Some(0..=2)),
        },
    }
}

/// What the launcher does with a run whose child failed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum AfterFailure {
    /// Try again after this many seconds (the rule's backoff, see [`super::retry::verdict`]).
    Retry { delay_seconds: f64 },
    /// Record it as failed for good.
    GiveUp,
    /// Someone else holds the run now: leave it to them, look again later.
    Leave,
}

/// The retry rule ([`super::retry::verdict`]) applied to a child that ended `end` after `preemptions`
/// preemptions: a run that is failed already (`failed_marker`) stays failed, and one the rule gives up on while
/// another worker holds it (`held_elsewhere`) is left to that worker.
pub(super) fn after_failure(
    failures: usize,
    settings: RetrySettings,
    end: ChildEnd,
    preemptions: usize,
    failed_marker: bool,
    held_elsewhere: bool,
) -> AfterFailure {
    let failure = match end {
        ChildEnd::Failed { bad_input: true, .. } => Failure::BadInput,
        _ if preemptions >= MAX_PREEMPTIONS => Failure::PreemptionLoop,
        _ => Failure::Other,
    };
    match (failed_marker, verdict(failures, failure, settings), held_elsewhere) {
        (true, _, _) => AfterFailure::GiveUp,
        (false, Verdict::Retry { delay_seconds }, _) => AfterFailure::Retry { delay_seconds },
        (false, Verdict::GiveUp, true) => AfterFailure::Leave,
        (false, Verdict::GiveUp, false) => AfterFailure::GiveUp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_worker_is_classified_by_how_it_exited() {
        assert_eq!(classify(Some(0), None, true, 0), ChildEnd::Done);
        assert_eq!(classify(Some(0), None, false, 0), ChildEnd::Failed { bad_input: false, crashed: false });
        assert_eq!(classify(Some(75), None, false, 0), ChildEnd::Busy);
        assert_eq!(classify(Some(143), None, false, 0), ChildEnd::Preempted { signal: 15, killed: false });
        assert_eq!(classify(None, Some(9), false, 0), ChildEnd::Preempted { signal: 9, killed: true });
        assert_eq!(
            classify(None, Some(9), false, MAX_PREEMPTIONS),
            ChildEnd::Failed { bad_input: false, crashed: true }
        );
        assert_eq!(classify(Some(2), None, false, 0), ChildEnd::Failed { bad_input: true, crashed: false });
        assert_eq!(classify(Some(101), None, false, 0), ChildEnd::Failed { bad_input: false, crashed: true });
        assert_eq!(classify(None, Some(11), false, 0), ChildEnd::Failed { bad_input: false, crashed: true }, "SIGSEGV");
    }

    #[test]
    fn failures_back_off_then_give_up_and_bad_input_is_never_retried() {
        let fail = ChildEnd::Failed { bad_input: false, crashed: false };
        let bad = ChildEnd::Failed { bad_input: true, crashed: false };
        let s = |retries| RetrySettings { retries, backoff_seconds: 5.0 };
        assert_eq!(after_failure(1, s(2), fail, 0, false, false), AfterFailure::Retry { delay_seconds: 5.0 });
        assert_eq!(after_failure(2, s(2), fail, 0, false, false), AfterFailure::Retry { delay_seconds: 10.0 });
        assert_eq!(after_failure(3, s(2), fail, 0, false, false), AfterFailure::GiveUp);
        assert_eq!(after_failure(1, s(2), bad, 0, false, false), AfterFailure::GiveUp);
        assert_eq!(after_failure(3, s(2), fail, 0, false, true), AfterFailure::Leave, "held by someone else");
        assert_eq!(after_failure(1, s(9), fail, 0, true, false), AfterFailure::GiveUp, "already failed");
        assert_eq!(after_failure(60, s(99), fail, 0, false, false), AfterFailure::Retry { delay_seconds: 300.0 });
        assert_eq!(after_failure(1, s(9), fail, MAX_PREEMPTIONS, false, false), AfterFailure::GiveUp);
    }
}
