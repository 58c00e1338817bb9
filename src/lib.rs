//! spotrun: a libtorch training worker for preemptible GPUs.
//!
//! Data flows one way: `cli → sweep → trainer → {model, optim, amp, data, checkpoint} → config/error`. The library is
//! usable without the CLI: load a [`config::Config`], a [`data::Dataset`], build any tch model that implements
//! [`model::Model`] on a `VarStore`, and drive it with [`trainer::Trainer`].
#[macro_use]
mod out;

pub mod amp;
pub mod boundary;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod device;
pub mod engines;
pub mod error;
pub mod ffi;
pub mod inspect;
pub mod model;
pub mod optim;
pub mod sweep;
pub mod trainer;

pub use error::{Error, Result};
