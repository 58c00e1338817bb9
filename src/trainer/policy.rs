//! When to save a checkpoint, as a pure policy (the shape of burn's `CheckpointingStrategy`): the loop reports
//! what just happened, the policy answers with the save to make, if any. No files, clocks or signals here; the
//! caller passes in the seconds since the last save.
use crate::checkpoint::SaveReason;
use crate::config::CheckpointConfig;

/// What the training loop just did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Event {
    /// An optimizer step finished: `step` steps in total, `batches_done` of `steps_per_epoch` in this epoch.
    Step { step: u64, batches_done: usize, steps_per_epoch: usize, seconds_since_save: f64 },
    /// Epoch `epochs_done` (1-based count) finished; `last` when the run ends with it (all epochs, early stop,
    /// pruning).
    EpochEnd { epochs_done: usize, last: bool },
}

/// `[checkpoint]`'s schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct SavePolicy {
    pub every_steps: u64,
    pub every_seconds: f64,
    pub every_epochs: usize,
}

impl SavePolicy {
    pub(super) fn new(c: &CheckpointConfig) -> SavePolicy {
        SavePolicy { every_steps: c.every_steps, every_seconds: c.every_seconds, every_epochs: c.every_epochs }
    }

    /// The save `event` calls for. A step that ends an epoch never saves mid-epoch: the epoch's own save (with its
    /// metrics) follows.
    pub(super) fn decide(&self, event: Event) -> Option<SaveReason> {
        match event {
            Event::Step { batches_done, steps_per_epoch, .. } if batches_done >= steps_per_epoch => None,
            Event::Step { step, .. } if self.every_steps > 0 && step.is_multiple_of(self.every_steps) => {
                Some(SaveReason::Steps)
            }
            Event::Step { seconds_since_save, .. }
                if self.every_seconds > 0.0 && seconds_since_save >= self.every_seconds =>
            {
                Some(SaveReason::Seconds)
            }
            Event::Step { .. } => None,
            Event::EpochEnd { last: true, .. } => Some(SaveReason::Final),
            Event::EpochEnd { epochs_done, .. }
                if self.every_epochs > 0 && epochs_done.is_multiple_of(self.every_epochs) =>
            {
                Some(SaveReason::Epoch)
            }
            Event::EpochEnd { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(step: u64, done: usize, secs: f64) -> Event {
        Event::Step { step, batches_done: done, steps_per_epoch: 10, seconds_since_save: secs }
    }

    #[test]
    fn steps_and_seconds_save_mid_epoch_but_never_on_the_epochs_last_batch() {
        let p = SavePolicy { every_steps: 5, every_seconds: 0.0, every_epochs: 1 };
        assert_eq!(p.decide(step(5, 5, 0.0)), Some(SaveReason::Steps));
        assert_eq!(p.decide(step(6, 6, 1e9)), None, "seconds off");
        assert_eq!(p.decide(step(10, 10, 0.0)), None, "the epoch's own save follows");
        let t = SavePolicy { every_steps: 0, every_seconds: 30.0, every_epochs: 0 };
        assert_eq!(t.decide(step(3, 3, 29.9)), None);
        assert_eq!(t.decide(step(3, 3, 30.0)), Some(SaveReason::Seconds));
    }

    #[test]
    fn epochs_save_every_n_and_the_last_one_always() {
        let p = SavePolicy { every_steps: 0, every_seconds: 0.0, every_epochs: 3 };
        let at = |n, last| p.decide(Event::EpochEnd { epochs_done: n, last });
        assert_eq!(
            (at(1, false), at(3, false), at(6, false)),
            (None, Some(SaveReason::Epoch), Some(SaveReason::Epoch))
        );
        assert_eq!(at(4, true), Some(SaveReason::Final), "early stopping or the end of the run");
        let never = SavePolicy { every_epochs: 0, ..p };
        assert_eq!(never.decide(Event::EpochEnd { epochs_done: 3, last: false }), None);
        assert_eq!(never.decide(Event::EpochEnd { epochs_done: 3, last: true }), Some(SaveReason::Final));
    }
}
