//! Integration tests: the real `spotrun` binary, driven as a user would, in temporary directories.
//! One module per feature; helpers in `common`.
// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod bad_input;
mod cli;
mod configs;
mod engines;
mod fuzz;
mod interop;
mod no_loss;
mod resume;
mod sweep;
mod train;
