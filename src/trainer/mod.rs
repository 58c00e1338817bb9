//! Training: one epoch loop (`epochs`) over components and a strategy, the stages around it, and the
//! `spotrun train` command.
//!
//! ```text
//! single::train      ─┐                                        ┌─ Unfused    (single.rs)
//!                     ├─ prepare → open → attach → epochs::run ─┤
//! group::train_group ─┘                                        └─ FusedSteps (group.rs)
//!                        each run's Events (events.rs) → outputs::conclude
//! ```
//!
//! Stages: `prepare` (config, device, data, model, all checked; nothing written), `open` (locks, the
//! checkpoint to resume from, then the run files), `attach` (the trainer restored, the saver and observer
//! open), the loop, `outputs`. A run reports to its `events` (observer, save policy, saver); shared words are
//! in `types`. Sits above `model`, `optim`, `amp`, `data` and `checkpoint` and wires them together; none of
//! those import it.
mod attach;
mod early;
mod ema;
mod epochs;
mod events;
mod fit;
mod fused;
mod fused_optim;
mod group;
mod lock;
pub(crate) mod metrics;
mod observer;
mod open;
mod outputs;
mod policy;
mod prepare;
pub(crate) mod process;
mod progress;
mod resume;
mod rundir;
mod saver;
mod signals;
mod single;
pub(crate) mod startup;
mod state;
mod types;

pub(crate) use early::metric_value;
pub use fit::{FitOutcome, Trainer};
pub(crate) use fused::fusion_key;
pub use group::train_group;
pub use metrics::EpochMetrics;
pub(crate) use prepare::check_tabular_fits;
pub use progress::Progress;
pub(crate) use signals::name as signal_name;
pub use single::train;
pub use types::{
    CheckpointCost, EpochHook, EpochHookFn, Hparams, OwnerCheck, OwnerCheckFn, RunStatus, StopAt, TrainOptions,
    TrainSummary,
};
