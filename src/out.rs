//! Console output that can never stop a run: `say!` (stdout) and `tell!` (stderr) drop what they cannot write.
//!
//! `println!`/`tell!` panic when the stream is closed (`spotrun train 2>&1 | head -1`, a dying `tee` or ssh
//! session): the run would die mid-epoch without a checkpoint. Training must go on and checkpoint whether or not
//! anyone is reading, so every line spotrun prints goes through these two macros. Imports nothing.

/// `println!` that drops the line when stdout is closed or broken, instead of panicking.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

/// `tell!` that drops the line when stderr is closed or broken, instead of panicking.
macro_rules! tell {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($t)*);
    }};
}
