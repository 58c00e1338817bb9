//! The run id: a canonical hash of the resolved config.
//!
//! Canonical = the config as JSON with sorted keys, minus the keys that say *where* a run executes rather than
//! *what* it computes (`train.name`, `train.device`, `train.threads`, `train.log_every`, `train.tensorboard`,
//! `train.fused_step`, `data.on_device`, `data.cache_dir`, and the whole `[checkpoint]` section). Moving a run to another GPU, thread count or volume therefore keeps its id,
//! so it can resume there. Keys added in later versions ([`LATER_KEYS`]) count only when they differ from their
//! default, so an existing run keeps its id (and its default run directory) after an upgrade.
use sha2::{Digest, Sha256};

use super::load::ConfigError;
use super::schema::Config;

/// Keys left out of the hash, as `(section, key)`.
pub(super) const PLACEMENT_KEYS: [(&str, &str); 8] = [
    ("train", "name"),
    ("train", "device"),
    ("train", "threads"),
    ("train", "log_every"),
    ("train", "tensorboard"),
    ("train", "fused_step"),
    ("data", "on_device"),
    ("data", "cache_dir"),
];

/// Keys added after the first release, as paths: hashed only when set to something other than their default.
pub(super) const LATER_KEYS: [&[&str]; 12] = [
    &["data", "task"],
    &["data", "token_dtype"],
    &["data", "synthetic", "vocab"],
    &["model", "n_layer"],
    &["model", "n_head"],
    &["model", "n_embd"],
    &["model", "block_size"],
    &["model", "bias"],
    &["train", "steps_per_epoch"],
    &["train", "eval_batches"],
    &["train", "accumulate"],
    &["train", "ema_eval"],
];

/// The config with `train.epochs` set to 0: equal for two configs that differ only in their length.
pub(crate) fn hash_ignoring_epochs(c: &Config) -> Result<String, ConfigError> {
    let mut c = c.clone();
    c.train.epochs = 0;
    config_hash(&c)
}

/// The first `n` characters of a run id, for display: never panics, whatever the id holds (a plan or manifest
/// read from disk may carry a short or non-ASCII id).
pub(crate) fn short_id_n(id: &str, n: usize) -> &str {
    id.char_indices().nth(n).map_or(id, |(i, _)| &id[..i])
}

/// The first 8 characters of a run id (run directory names, tables, messages).
pub(crate) fn short_id(id: &str) -> &str {
    short_id_n(id, 8)
}

/// The full hex SHA-256 of the canonical config. A config that does not serialise is an error, never a default
/// value (every such config would share one run id and resume each other's checkpoints).
pub fn config_hash(c: &Config) -> Result<String, ConfigError> {
    let unhashable = |e: serde_json::Error| ConfigError::Unhashable { message: e.to_string() };
    let mut v = serde_json::to_value(c).map_err(unhashable)?;
    let defaults = serde_json::to_value(Config::default()).map_err(unhashable)?;
    for path in LATER_KEYS {
        let (last, parents) = path.split_last().unwrap_or((&"", &[]));
        let default = parents.iter().try_fold(&defaults, |d, k| d.get(k)).and_then(|d| d.get(last));
        let parent = parents.iter().try_fold(&mut v, |d, k| d.get_mut(k)).and_then(|d| d.as_object_mut());
        if let Some(obj) = parent {
            if obj.get(*last) == default {
                obj.remove(*last);
            }
        }
    }
    if let Some(obj) = v.as_object_mut() {
        obj.remove("checkpoint");
    }
    for (section, key) in PLACEMENT_KEYS {
        if let Some(obj) = v.get_mut(section).and_then(|s| s.as_object_mut()) {
            obj.remove(key);
        }
    }
    // serde_json's map is a BTreeMap (no `preserve_order` feature), so this string has sorted keys.
    let canonical = v.to_string();
    let digest = Sha256::digest(canonical.as_bytes());
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn placement_keys_do_not_change_the_id_but_hyperparameters_do() {
        let a = Config::default();
        let mut b = a.clone();
        b.train.device = "cuda:1".into();
        b.train.threads = 7;
        b.train.name = Some("other".into());
        b.checkpoint.every_steps = 5;
        b.checkpoint.dir = Some("/mnt/volume".into());
        assert_eq!(config_hash(&a).unwrap(), config_hash(&b).unwrap());
        let mut c = a.clone();
        c.optim.lr *= 2.0;
        assert_ne!(config_hash(&a).unwrap(), config_hash(&c).unwrap());
        assert_eq!(config_hash(&a).unwrap().len(), 64);
    }

    #[test]
    fn later_keys_at_their_default_keep_the_id_of_the_first_release() {
        // The default config's run id as the release before LATER_KEYS printed it (`spotrun train` banner).
        let id = config_hash(&Config::default()).unwrap();
        assert_eq!(short_id(&id), "83a77e0c");
        let mut gpt = Config::default();
        gpt.model.n_layer = 2;
        assert_ne!(config_hash(&gpt).unwrap(), id, "a later key that is set counts");
    }
}
