//! Sweeps: a sweep file expanded into runs (pure), claims on a shared volume, the `worker` entry point engines
//! call, the local `sweep` launcher, and the readers built on the volume (`status`, results files, `estimate`,
//! `report`).
//!
//! Sits above `trainer` (a worker trains one run in-process through [`crate::trainer::train`]); nothing below
//! imports it. Reads only what runs write: `metrics.jsonl`, checkpoint manifests, and its own records.
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
mod prune;
mod record;
pub(crate) mod report;
mod serving;
mod spec;
mod status;
mod worker;

pub use commands::{estimate_cmd, report_cmd, status_cmd, worker_cmd, WorkerMode};
pub use error::{SweepError, EXIT_BUSY};
pub use expand::{expand, Expansion, PlannedRun};
pub use launcher::{launch, LaunchOptions};
pub(crate) use layout::default_volume;
pub use layout::{Layout, Plan, PlanRun};
pub use record::{Attempt, AttemptEvent, AttemptOutcome, Done, DoneOutcome, Failed};
pub(crate) use spec::self_contained;
pub use spec::{load, parse, Domain, Fuse, Method, Pruning, Sweep};
pub use status::{collect, RunView, State};
pub use worker::{Ctx, Outcome, WorkerOptions};
