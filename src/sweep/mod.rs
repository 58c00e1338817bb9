//! Sweeps: a sweep file expanded into runs (pure), claims on a shared volume, the `worker` entry point engines
//! call, the local `sweep` launcher, and the readers built on the volume (`status`, results files, `estimate`,
//! `report`).
//!
//! Every command starts from the loaded sweep (`LoadedSweep`: the file parsed, expanded, grouped, placed on a
//! volume). "Worker" is the `spotrun worker` command, the one users and engines start; three parts do its work,
//! each under one name:
//! - the **claimer** (`claim.rs`): claim a run's lease, train it in this process, record how the attempt ended;
//!   every mode of `spotrun worker` trains through it;
//! - the **server** (`server.rs`): `spotrun worker --serve`, a long-lived worker that takes the launcher's jobs
//!   from stdin one after another, each through the claimer;
//! - a **child** (`child.rs`): a server as the `spotrun sweep` launcher sees it, one per device slot, handed jobs
//!   and reaped; what its end means is `exits.rs`'s, whether to retry is the one rule of `retry.rs`.
//!
//! Sits above `trainer` (the claimer trains one run in-process through [`crate::trainer::train`]); nothing below
//! imports it. Reads only what runs write: `metrics.jsonl`, checkpoint manifests, and its own records.
mod child;
mod claim;
mod commands;
mod display;
mod error;
pub(crate) mod estimate;
mod exits;
mod expand;
pub mod groups;
mod incoming;
mod launcher;
mod layout;
pub(crate) mod lease;
mod loaded;
mod prune;
mod record;
pub(crate) mod report;
mod retry;
pub(crate) mod schedule;
mod server;
mod slots;
mod snapshot;
mod spec;
mod status;
pub(crate) mod study;
/// Public (hidden) only so that `examples/tpe_objective.rs`, the Optuna comparison, can call the sampler.
#[doc(hidden)]
pub mod tpe;

pub(crate) use claim::ClaimOptions;
pub(crate) use commands::{estimate_cmd, replay_cmd, worker_cmd, WorkerMode};
pub use commands::{report_cmd, status_cmd};
pub(crate) use error::SweepError;
pub use expand::{expand, Expansion};

pub use launcher::launch;
pub(crate) use layout::default_volume;
pub use layout::{Layout, Plan};
pub(crate) use slots::LaunchOptions;

pub(crate) use loaded::LoadedSweep;
pub use record::Done;

pub(crate) use snapshot::Snapshot;
pub(crate) use spec::Fuse;
pub use spec::{load, parse, Sweep};
pub use status::collect;
