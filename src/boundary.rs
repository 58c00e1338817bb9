//! The one place where a panic inside libtorch (or tch's panicking calls) becomes an [`Error`]: an allocation
//! that does not fit becomes [`Error::OutOfMemory`] with one `error:` line instead of exit 101 and a 40-frame
//! C++ trace.
//!
//! [`install_quiet_hook`] (called once by the CLI) keeps the default panic printer silent while a [`catch`]
//! is on the stack, so the caught panic is reported once, by the caller, as a normal error. Bottom layer: imports
//! only `error`.
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};

use crate::error::{Error, Result};

thread_local! {
    static CATCHING: Cell<usize> = const { Cell::new(0) };
}

/// Where the work that panicked ran, for the message and the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Building the model, placing data, the checks before training (an OOM here is bad input: exit 2).
    Setup,
    /// Inside training steps (exit 1).
    Training,
}

/// Third-party decoders of untrusted bytes whose every call spotrun wraps in `catch_unwind` (`data::codec`): a
/// panic inside them becomes an `error:` line naming the file, on whatever thread it ran.
const CAUGHT_CRATES: [&str; 1] = ["/tokenizers-"];

/// Installs a panic hook that prints nothing for panics a [`catch`] will report (or that arise inside one of the
/// [`CAUGHT_CRATES`]), and the default report otherwise.
pub(crate) fn install_quiet_hook() {
    let default = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        let caught_crate = info.location().is_some_and(|l| CAUGHT_CRATES.iter().any(|c| l.file().contains(c)));
        if CATCHING.with(Cell::get) == 0 && !caught_crate {
            default(info);
        }
    }));
}

/// Runs `f`, turning a panic into an error: an out-of-memory into [`Error::OutOfMemory`] (its text is `what`
/// followed by the allocator's own one-line report), anything else into [`Error::Internal`].
pub(crate) fn catch<T>(phase: Phase, what: &dyn Fn() -> String, f: impl FnOnce() -> Result<T>) -> Result<T> {
    CATCHING.with(|c| c.set(c.get() + 1));
    let out = panic::catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(c.get() - 1));
    out.unwrap_or_else(|payload| Err(classify(phase, &what(), &payload_text(payload.as_ref()))))
}

/// The panic's message, if it carried a string.
pub(crate) fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Whether a libtorch message reports a failed allocation (CPU or CUDA).
pub(crate) fn is_out_of_memory(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    ["out of memory", "can't allocate memory", "cannot allocate memory", "failed to allocate"]
        .iter()
        .any(|p| t.contains(p))
}

/// The first meaningful line of a libtorch error (tch wraps it in `Torch("...")` with a C++ backtrace after).
pub(crate) fn first_line(text: &str) -> String {
    let t = text.split("Exception raised from").next().unwrap_or(text);
    let t = t.rsplit("Torch(\"").next().unwrap_or(t);
    let line = t.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    line.trim_end_matches(['"', ')', ' ']).trim_end_matches("\\n").to_string()
}

fn classify(phase: Phase, what: &str, text: &str) -> Error {
    let detail = first_line(text);
    if is_out_of_memory(text) {
        return Error::OutOfMemory { message: format!("{what}: {detail}"), before_training: phase == Phase::Setup };
    }
    Error::Internal(format!("{what}: {detail}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn an_allocation_panic_becomes_one_line_out_of_memory_with_the_phase() {
        install_quiet_hook();
        let tch_like = "called `Result::unwrap()` on an `Err` value: Torch(\"[enforce fail at alloc_cpu.cpp:117] \
                        data. DefaultCPUAllocator: not enough memory: you tried to allocate 12544000000000 bytes.\\n\
                        Exception raised from alloc_cpu at /pytorch/c10/core/impl/alloc_cpu.cpp:117\")";
        let e = catch(Phase::Setup, &|| "building the model".into(), || -> Result<()> {
            panic!("{tch_like} can't allocate memory")
        })
        .unwrap_err();
        match &e {
            Error::OutOfMemory { message, before_training: true } => {
                assert!(message.starts_with("building the model: "), "{message}");
                assert!(message.contains("12544000000000 bytes") && !message.contains("Exception raised"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.code(), 2);
        let e = catch(Phase::Training, &|| "step 3".into(), || -> Result<()> { panic!("CUDA out of memory.") });
        assert!(matches!(e, Err(Error::OutOfMemory { before_training: false, .. })));
        let e = catch(Phase::Training, &|| "step 3".into(), || -> Result<()> { panic!("index out of range") });
        assert!(matches!(e, Err(Error::Internal(_))), "other panics are internal errors, not OOM");
        assert_eq!(catch(Phase::Setup, &String::new, || Ok(5)).unwrap(), 5);
    }
}
