//! Configuration: the TOML schema, loading with `--set` overrides, validation, and the run id hash.
//!
//! Owns everything about turning user text into a typed [`Config`]. Must not import any other spotrun module
//! except `device` (for parsing `train.device`).
mod hash;
mod keys;
mod load;
mod schema;
mod validate;
pub(crate) use validate::BadValue;
mod wording;

pub use hash::config_hash;
pub(crate) use hash::short_id;
pub(crate) use hash::{hash_ignoring_epochs, short_id_n};
pub(crate) use keys::set_value;
pub(crate) use load::BUILTIN;
pub(crate) use load::{from_table, read_table};
pub use load::{load, parse_str, ConfigError, LoadedConfig};
pub(crate) use schema::{
    Activation, CheckpointConfig, Decay, EarlyStopping, EmaConfig, FusedStep, MetricName, OnDevice, OptimConfig,
    OptimKind, Precision, ScheduleConfig, ScheduleKind, SyntheticConfig, TaskKind, TokenDtype,
};
pub use schema::{Config, DataConfig, DataSource, ModelConfig, ModelKind, Task};
pub(crate) use wording::{describe as describe_serde_error, spelling_hint, with_hint};
