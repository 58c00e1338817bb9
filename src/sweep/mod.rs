//! Sweeps: a sweep file expanded into runs (pure), claims on a shared volume, the `worker` entry point engines
//! call, the local `sweep` launcher, and the readers built on the volume (`status`, results files, `estimate`,
//! `report`).
//!
//! Sits above `trainer` (a worker trains one run in-process through [`crate::trainer::train`]); nothing below
//! imports it. Reads only what runs write: `metrics.jsonl`, checkpoint manifests, and its own records.
mod commands;
mod display;
mod error;
pub mod estimate;
mod expand;
mod launcher;
mod layout;
pub mod lease;
mod prune;
mod record;
pub mod report;
mod spec;
mod status;
mod worker;

pub use commands::{estimate_cmd, report_cmd, status_cmd, worker_cmd, WorkerMode};
pub use error::{SweepError, EXIT_BUSY};
pub use expand::{expand, Expansion, PlannedRun};
pub use launcher::{launch, slots, LaunchOptions, Slot};
pub use layout::{default_volume, Layout, Plan, PlanRun};
pub use prune::should_prune;
pub use record::{Attempt, AttemptEvent, AttemptOutcome, Done, DoneOutcome, Failed};
pub use spec::{check_name, load, parse, self_contained, Domain, Method, Pruning, Sweep};
pub use status::{collect, RunView, State};
pub use worker::{run_index, run_next, Ctx, Outcome, WorkerOptions};
