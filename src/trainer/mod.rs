//! Training: the loop ([`Trainer`]), its per-epoch metrics, progress display, preemption signals, resume rules,
//! and the `spotrun train` command.
//!
//! Sits above `model`, `optim`, `amp`, `data` and `checkpoint` and wires them together; none of those import it.
mod early;
mod ema;
mod fit;
mod fused;
mod group;
mod lock;
pub(crate) mod metrics;
mod observer;
mod open;
mod policy;
mod prepare;
pub(crate) mod process;
mod progress;
mod resume;
mod run;
mod rundir;
mod saver;
mod signals;
pub(crate) mod startup;
mod state;

pub(crate) use early::metric_value;
pub use fit::{FitOutcome, Flow, Trainer};
pub use fused::fusion_key;
pub use group::train_group;
pub use metrics::EpochMetrics;
pub use progress::Progress;
pub use run::{
    default_run_dir, named_variables, train, CheckpointCost, EpochHook, Hparams, Outcome, OwnerCheck, RunStatus,
    TrainOptions, TrainSummary,
};
pub(crate) use signals::name as signal_name;
