//! The one give-up/retry rule for a run whose attempt failed, as a pure function ([`verdict`]). Every place that
//! decides calls it: the claimer when it records a failure ([`super::claim`], `failed.json` or not), `worker
//! --next` when it counts the errors it saw itself, and the launcher for a child that failed
//! ([`super::exits::after_failure`]). No processes, files or clocks here.

/// The longest wait before a retry, however many failures came before.
const MAX_DELAY_SECONDS: f64 = 300.0;

/// What kind of failure an attempt ended in, as far as retrying is concerned. Preemptions are not failures
/// and never get here, unless they loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// Bad input (exit 2): the same run fails the same way again.
    BadInput,
    /// Out of memory on its device: the same run on the same device fails the same way again.
    OutOfMemory,
    /// Preempted so often that the "preemptions" are a failure loop (e.g. the OOM killer).
    PreemptionLoop,
    /// Anything else (a crash, an I/O error, a NaN): worth another try.
    Other,
}

impl Failure {
    /// The kind of a failure that ended with this error.
    pub(super) fn of(e: &crate::error::Error) -> Failure {
        match e {
            crate::error::Error::OutOfMemory { .. } => Failure::OutOfMemory,
            e if e.code() == 2 => Failure::BadInput,
            _ => Failure::Other,
        }
    }
}

/// The retry settings: `retries` failed attempts are retried (the sweep file's `retries`, or `--retries`), the
/// first after `backoff_seconds`, each next one after twice as long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct RetrySettings {
    pub retries: usize,
    pub backoff_seconds: f64,
}

/// What to do with a run after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Verdict {
    /// Try again after this many seconds (`backoff * 2^(failures - 1)`, at most 5 minutes).
    Retry { delay_seconds: f64 },
    /// Record it as failed for good.
    GiveUp,
}

/// The rule: give up on a failure that cannot go away by retrying, and once `failures` (the run's failed
/// attempts so far, this one included) exceed `retries`; otherwise retry with exponential backoff.
pub(super) fn verdict(failures: usize, failure: Failure, s: RetrySettings) -> Verdict {
    if failures > s.retries || failure != Failure::Other {
        return Verdict::GiveUp;
    }
    let delay = s.backoff_seconds * 2f64.powi(failures.saturating_sub(1).min(30) as i32);
    Verdict::Retry { delay_seconds: delay.clamp(0.0, MAX_DELAY_SECONDS) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: RetrySettings = RetrySettings { retries: 2, backoff_seconds: 5.0 };

    #[test]
    fn failures_back_off_then_give_up() {
        assert_eq!(verdict(1, Failure::Other, S), Verdict::Retry { delay_seconds: 5.0 });
        assert_eq!(verdict(2, Failure::Other, S), Verdict::Retry { delay_seconds: 10.0 });
        assert_eq!(verdict(3, Failure::Other, S), Verdict::GiveUp, "retries used up");
        let many = RetrySettings { retries: 99, backoff_seconds: 5.0 };
        assert_eq!(verdict(60, Failure::Other, many), Verdict::Retry { delay_seconds: 300.0 }, "capped");
        let none = RetrySettings { retries: 0, backoff_seconds: 5.0 };
        assert_eq!(verdict(1, Failure::Other, none), Verdict::GiveUp, "retries = 0: the first failure is final");
    }

    #[test]
    fn failures_that_would_repeat_are_never_retried() {
        for f in [Failure::BadInput, Failure::OutOfMemory, Failure::PreemptionLoop] {
            assert_eq!(verdict(1, f, S), Verdict::GiveUp, "{f:?}");
        }
    }

    #[test]
    fn errors_are_sorted_by_whether_retrying_can_help() {
        use crate::error::Error;
        assert_eq!(Failure::of(&Error::Input("bad".into())), Failure::BadInput);
        assert_eq!(Failure::of(&Error::RunFailed("x".into())), Failure::Other);
    }
}
