//! Preemption signals: SIGTERM, SIGINT, SIGHUP (a closed terminal or ssh session), SIGUSR1 and SIGUSR2 set a flag the loop checks after every step; a
//! second SIGINT exits at once (130), for a person at a terminal who means it.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};

pub(crate) struct Signals {
    got: Arc<AtomicUsize>,
}

impl Signals {
    /// Installs the handlers (process-wide).
    pub(crate) fn install() -> std::io::Result<Signals> {
        let got = Arc::new(AtomicUsize::new(0));
        let interrupted = Arc::new(AtomicBool::new(false));
        // Order matters: the conditional exit runs first and only fires when a SIGINT was already seen.
        signal_hook::flag::register_conditional_shutdown(SIGINT, 130, Arc::clone(&interrupted))?;
        signal_hook::flag::register(SIGINT, interrupted)?;
        for sig in [SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2] {
            signal_hook::flag::register_usize(sig, Arc::clone(&got), sig as usize)?;
        }
        Ok(Signals { got })
    }

    /// The signal received so far, if any.
    pub(crate) fn received(&self) -> Option<i32> {
        match self.got.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s as i32),
        }
    }
}

/// `SIGTERM` etc. for messages.
pub(crate) fn name(sig: i32) -> &'static str {
    match sig {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        SIGUSR1 => "SIGUSR1",
        SIGUSR2 => "SIGUSR2",
        SIGHUP => "SIGHUP",
        9 => "SIGKILL",
        _ => "signal",
    }
}
