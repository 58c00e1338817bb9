//! Signals sent to `spotrun sweep`, counted on a thread of their own so the launcher's poll loop can pass each on
//! to its workers (see [`super::launcher`]). Owns the signal handlers only.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::error::SweepError;
use crate::error::Result;

/// Signals sent to the launcher: every one counts (the first is passed on, a repeat passed on again, a third
/// kills the workers).
pub(super) struct Incoming {
    sig: Arc<AtomicUsize>,
    pub count: Arc<AtomicUsize>,
}

impl Incoming {
    pub(super) fn install() -> Result<Incoming> {
        let (sig, count) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut it = signal_hook::iterator::Signals::new([1, 2, 10, 12, 15])
            .map_err(|e| SweepError::Usage(format!("cannot install signal handlers: {e}")))?;
        let (s, c) = (Arc::clone(&sig), Arc::clone(&count));
        std::thread::spawn(move || {
            for got in it.forever() {
                s.store(got as usize, Ordering::SeqCst);
                c.fetch_add(1, Ordering::SeqCst);
            }
        });
        Ok(Incoming { sig, count })
    }

    /// The latest signal received, if any.
    pub(super) fn last(&self) -> Option<i32> {
        match self.sig.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s as i32),
        }
    }
}
