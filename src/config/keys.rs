//! Dotted key paths (`optim.lr`) set into a TOML config table: what `--set` and a sweep's parameters do, and
//! what the config wording asks when it suggests a key. Imports only the config error type.
use std::path::Path;

use super::ConfigError;

/// Sets the dotted `key` (e.g. `optim.lr`) in a config table, creating sections as needed. Fails when a
/// prefix of the key is a value rather than a section; unknown keys are caught later by [`from_table`].
pub(crate) fn set_value(
    table: &mut toml::Table,
    key: &str,
    value: toml::Value,
    origin: &Path,
) -> Result<(), ConfigError> {
    let parts: Vec<&str> = key.split('.').collect();
    let bad = |message: String| ConfigError::Key { file: origin.to_path_buf(), key: key.to_string(), message };
    if parts.iter().any(|p| p.is_empty()) {
        return Err(bad("not a key path (expected e.g. optim.lr)".into()));
    }
    let (last, parents) = parts.split_last().ok_or_else(|| bad("empty key".into()))?;
    let mut cur = table;
    for (i, part) in parents.iter().enumerate() {
        let entry = cur.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(bad(format!("`{}` is a value, not a section", parts[..=i].join(".")))),
        };
    }
    match (cur.get_mut(*last), value) {
        // `--set optim={lr=0.1}` sets optim.lr; it does not replace the section (which would silently reset the
        // optimizer kind, momentum and clipping to their defaults).
        (Some(toml::Value::Table(section)), toml::Value::Table(values)) => merge(section, values),
        (_, value) => {
            cur.insert(last.to_string(), value);
        }
    }
    Ok(())
}

/// Sets every key of `values` in `into`, recursing into sub-tables present in both.
fn merge(into: &mut toml::Table, values: toml::Table) {
    for (k, v) in values {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}
