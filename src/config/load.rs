//! Reading a config: TOML file (or the built-in default) → `--set` overrides → typed [`Config`] → validation.
//!
//! Errors always name the file and the dotted key path, e.g. `configs/mlp.toml: train.epochs: invalid type:
//! string "ten", expected usize`. Nothing here touches the disk except reading the one config file.
use std::path::{Path, PathBuf};

use super::keys::set_value;
use super::schema::Config;
use super::validate::validate;
use super::wording;

/// What went wrong with a configuration; always names where the config came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read config: {source}")]
    Read { file: PathBuf, source: std::io::Error },
    #[error("{file}: invalid TOML: {message}")]
    Syntax { file: PathBuf, message: String },
    #[error("{file}: {key}: {message}")]
    Key { file: PathBuf, key: String, message: String },
    #[error("--set {arg}: expected KEY=VALUE, e.g. --set train.epochs=3")]
    SetSyntax { arg: String },
    /// The resolved config could not be serialised to compute its run id (never replaced by a default).
    #[error("cannot compute the run id: the resolved config does not serialise: {message}")]
    Unhashable { message: String },
}

/// A config plus where it came from (for messages and the default run name).
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    /// The config file, or `<built-in default>`.
    pub origin: PathBuf,
}

/// The name shown for the built-in default config in messages.
pub(crate) const BUILTIN: &str = "<built-in default>";

/// Loads `path` (or the built-in default when `None`), applies `--set KEY=VALUE` overrides in order, and validates.
pub fn load(path: Option<&Path>, sets: &[String]) -> Result<LoadedConfig, ConfigError> {
    let origin = path.map_or_else(|| PathBuf::from(BUILTIN), Path::to_path_buf);
    let mut table = match path {
        None => toml::Table::new(),
        Some(p) => read_table(p)?,
    };
    for arg in sets {
        apply_set(&mut table, arg, &origin)?;
    }
    let mut config = from_table(table, &origin).map_err(|e| blame_set(e, sets))?;
    if config.train.name.is_none() {
        let stem = path.and_then(|p| p.file_stem()).map(|s| s.to_string_lossy().into_owned());
        config.train.name = Some(stem.unwrap_or_else(|| "default".into()));
    }
    Ok(LoadedConfig { config, origin })
}

/// Reads and parses a TOML file into a table (not yet a [`Config`]).
pub(crate) fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: path.into(), source })?;
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::Syntax { file: path.into(), message: e.to_string().trim().to_string() })
}

/// Parses a `config.toml` that spotrun wrote itself (a run directory's resolved config). Types are checked, the
/// value rules of `validate` are not: the config was validated when it was written, and judging it by a later
/// version's stricter rules would refuse that version's run directories.
pub fn parse_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    let table = text
        .parse::<toml::Table>()
        .map_err(|e| ConfigError::Syntax { file: origin.to_path_buf(), message: e.to_string().trim().to_string() })?;
    deserialize(table, origin)
}

/// Deserializes and validates a config table, then records the hash of a TorchScript model file
/// (`model.file_hash`); errors name `origin` and the key path.
pub(crate) fn from_table(table: toml::Table, origin: &Path) -> Result<Config, ConfigError> {
    let mut config = deserialize(table, origin)?;
    validate(&config).map_err(|b| ConfigError::Key { file: origin.to_path_buf(), key: b.key, message: b.message })?;
    if let Some(path) = config.model.path.clone() {
        let hash = file_hash(&path).map_err(|e| ConfigError::Key {
            file: origin.to_path_buf(),
            key: "model.path".into(),
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        config.model.file_hash = Some(hash);
    }
    Ok(config)
}

/// `sha256:<hex>` of a file's bytes.
fn file_hash(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut file, &mut h)?;
    Ok(format!("sha256:{}", h.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

/// The typed config, or a key error with a did-you-mean hint where one helps.
fn deserialize(table: toml::Table, origin: &Path) -> Result<Config, ConfigError> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let (key, message) = wording::describe(e);
        let hint = wording::config_hint(&key, &message);
        let message = wording::with_hint(message, hint);
        ConfigError::Key { file: origin.to_path_buf(), key, message }
    })
}

/// Says which `--set` gave the bad value when a key error is about a key that one set (the last such wins).
fn blame_set(e: ConfigError, sets: &[String]) -> ConfigError {
    let ConfigError::Key { file, key, message } = e else { return e };
    let set_here = |arg: &&String| {
        let set_key = arg.split_once('=').map_or("", |(k, _)| k.trim());
        key == set_key || key.starts_with(&format!("{set_key}."))
    };
    match sets.iter().rev().find(set_here) {
        Some(arg) => ConfigError::Key { file, key, message: format!("{message} (from --set {arg})") },
        None => ConfigError::Key { file, key, message },
    }
}

/// Applies one `KEY=VALUE`. The value is parsed as a TOML value (`3`, `true`, `[512, 512]`, `"x"`), falling back
/// to a bare string (`bf16`), so types are checked by the same deserializer as the file.
fn apply_set(table: &mut toml::Table, arg: &str, origin: &Path) -> Result<(), ConfigError> {
    let (key, raw) = arg.split_once('=').ok_or_else(|| ConfigError::SetSyntax { arg: arg.into() })?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(ConfigError::SetSyntax { arg: arg.into() });
    }
    let value = format!("v = {}", raw.trim())
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.trim().to_string()));
    set_value(table, key, value, origin)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::schema::{OptimKind, Precision};

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn builtin_default_is_valid() {
        let c = load(None, &[]).unwrap();
        assert_eq!(c.config.train.batch_size, 8192);
        assert_eq!(c.config.train.name.as_deref(), Some("default"));
    }

    #[test]
    fn run_names_cannot_escape_and_limits_name_the_key() {
        let (_d, p) = write("[train]\nname = \"../escape\"\n");
        let e = load(Some(&p), &[]).unwrap_err().to_string();
        assert!(e.contains("train.name") && e.contains("cannot name a run directory"), "{e}");
        assert!(load(None, &["train.name=bs=64 lr=0.1".into()]).is_ok(), "spaces and '=' are fine in a name");
        let e = load(None, &["train.threads=100000".into()]).unwrap_err().to_string();
        assert!(e.contains("train.threads") && e.contains("at most 4096"), "{e}");
        // A run directory written before the rule existed still parses (its config was valid then).
        assert!(parse_str("[train]\nthreads = 100000\n", Path::new("config.toml")).is_ok());
        let e = load(None, &["data.synthetic.classes=1".into()]).unwrap_err().to_string();
        assert!(e.contains("data.synthetic.classes: must be at least 2, got 1 (from --set"), "{e}");
    }

    #[test]
    fn unknown_key_names_file_and_path() {
        let (_d, p) = write("[train]\nepoch = 3\n");
        let e = load(Some(&p), &[]).unwrap_err().to_string();
        assert!(e.contains("c.toml") && e.contains("train") && e.contains("epoch"), "{e}");
    }

    #[test]
    fn wrong_type_names_key_path() {
        let (_d, p) = write("[train]\nepochs = \"ten\"\n");
        let e = load(Some(&p), &[]).unwrap_err().to_string();
        assert!(e.contains("train.epochs"), "{e}");
    }

    #[test]
    fn set_overrides_are_typed() {
        let sets =
            ["train.epochs=3", "train.precision=fp16", "model.hidden=[64, 32]", "optim.kind=sgd"].map(String::from);
        let c = load(None, &sets).unwrap().config;
        assert_eq!(c.train.epochs, 3);
        assert_eq!(c.train.precision, Precision::Fp16);
        assert_eq!(c.model.hidden, vec![64, 32]);
        assert_eq!(c.optim.kind, OptimKind::Sgd);
        let e = load(None, &["train.epochs=three".to_string()]).unwrap_err().to_string();
        assert!(e.contains("train.epochs"), "{e}");
        let e = load(None, &["train.nope=1".to_string()]).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
        assert!(matches!(load(None, &["train.epochs".to_string()]), Err(ConfigError::SetSyntax { .. })));
    }

    #[test]
    fn an_inline_table_set_merges_into_the_section_instead_of_replacing_it() {
        let (_d, p) = write("[optim]\nkind = \"sgd\"\nmomentum = 0.5\ngrad_clip = 2.0\n");
        let c = load(Some(&p), &["optim={lr=0.1}".into()]).unwrap().config;
        assert_eq!(c.optim.kind, OptimKind::Sgd, "the section's other keys survive");
        assert_eq!((c.optim.lr, c.optim.momentum, c.optim.grad_clip), (0.1, 0.5, Some(2.0)));
        let c = load(None, &["train={epochs=2, early_stopping={metric=\"val_loss\", patience=3}}".into()]).unwrap();
        assert_eq!(c.config.train.epochs, 2);
        assert_eq!(c.config.train.batch_size, 8192, "untouched keys keep their defaults");
    }

    #[test]
    fn on_device_accepts_auto_and_bools() {
        use crate::config::schema::OnDevice;
        for (v, want) in [("\"auto\"", OnDevice::Auto), ("true", OnDevice::Always), ("false", OnDevice::Never)] {
            let c = load(None, &[format!("data.on_device={v}")]).unwrap().config;
            assert_eq!(c.data.on_device, want);
        }
        assert!(load(None, &["data.on_device=\"maybe\"".to_string()]).is_err());
    }

    #[test]
    fn resolved_config_round_trips_through_toml() {
        let c = load(None, &["optim.grad_clip=1.0".to_string()]).unwrap().config;
        let text = toml::to_string(&c).unwrap();
        assert_eq!(parse_str(&text, Path::new("config.toml")).unwrap(), c);
    }
}
