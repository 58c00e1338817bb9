//! Training: the loop ([`Trainer`]), its per-epoch metrics, progress display, and the `spotrun train` command.
//!
//! Sits above `model`, `optim`, `amp`, `data` and `checkpoint` and wires them together; none of those import it.
mod fit;
mod metrics;
mod progress;
mod run;

pub use fit::{FitOutcome, Trainer};
pub use metrics::EpochMetrics;
pub use progress::Progress;
pub use run::{default_run_dir, named_variables, train, TrainOptions, TrainSummary};
