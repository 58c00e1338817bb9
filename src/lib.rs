//! spotrun: a libtorch training worker for preemptible GPUs.
//!
//! Data flows one way: `cli → sweep → trainer → {task, model, optim, amp, data, checkpoint} → config/error`. The library is
//! usable without the CLI: load a [`config::Config`], a [`data::Dataset`], build any tch model that implements
//! [`model::Model`] on a `VarStore`, and drive it with [`trainer::Trainer`].
#[macro_use]
mod out;

// The public surface (what a Rust user, the tests, benches and examples drive): configs, data, models, the
// trainer and `train`, checkpoints, sweeps, `inspect`, devices and the CLI. Everything else is `pub(crate)`, and
// inside the public modules only what their `pub use` lists name is reachable.
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod device;
pub mod error;
pub mod inspect;
pub mod model;
pub mod sample;
pub mod sweep;
pub mod task;
pub mod tensorboard;
pub mod trainer;

pub(crate) mod amp;
pub(crate) mod boundary;
pub(crate) mod engines;
pub(crate) mod ffi;
pub(crate) mod optim;

pub use error::{Error, Result};
pub use ffi::tune_allocator;
