//! Configuration: the TOML schema, loading with `--set` overrides, validation, and the run id hash.
//!
//! Owns everything about turning user text into a typed [`Config`]. Must not import any other spotrun module
//! except `device` (for parsing `train.device`).
mod hash;
mod load;
mod schema;
mod validate;
pub use validate::BadValue;
mod wording;

pub use hash::{config_hash, hash_ignoring_epochs, short_id, short_id_n, PLACEMENT_KEYS};
pub use load::{from_table, load, parse_str, read_table, set_value, ConfigError, LoadedConfig, BUILTIN};
pub use schema::{
    Activation, CheckpointConfig, Config, DataConfig, DataSource, EarlyStopping, MetricName, ModelConfig, ModelKind,
    OnDevice, OptimConfig, OptimKind, Precision, ScheduleConfig, ScheduleKind, SyntheticConfig, TrainConfig,
};
pub use wording::{describe as describe_serde_error, spelling_hint, with_hint};
