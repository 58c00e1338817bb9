//! Integration tests: the real `spotrun` binary, driven as a user would, in temporary directories.
//! One module per feature; helpers in `common`.
// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(not(feature = "test-hooks"))]
compile_error!("the integration tests drive the SPOTRUN_TEST_* hooks: run them with `--features test-hooks` (scripts/test.sh does)");

mod common;

mod bad_input;
mod cli;
mod configs;
mod engines;
mod extras;
mod fixtures;
mod fused;
mod fuzz;
mod gpu_ready;
mod gpu_state;
mod images;
mod interop;
mod no_loss;
mod resume;
mod sources;
mod study;
mod sweep;
mod tabular;
mod text;
mod torchscript;
mod train;
mod workloads;
