//! How config and sweep-file errors read: serde's messages in words a user knows (no Rust type names, no key
//! repeated at the end), plus a "did you mean" for unknown keys: a near spelling in the same section, the section
//! where that key really lives, or the spotrun name of a key from PyTorch Lightning or Hugging Face.
use super::schema::Config;

/// Turns a deserialization error into `(dotted key path, message)`. `(top level)` names the root.
pub(crate) fn describe(e: serde_path_to_error::Error<toml::de::Error>) -> (String, String) {
    let key = e.path().to_string();
    let key = if key == "." { "(top level)".to_string() } else { key };
    (key, plain_types(e.inner().message().trim()))
}

/// Replaces the Rust type names serde puts after "expected" with what they mean in TOML.
fn plain_types(message: &str) -> String {
    const NAMES: [(&str, &str); 10] = [
        ("expected usize", "expected a whole number (0 or more)"),
        ("expected u64", "expected a whole number (0 or more)"),
        ("expected u32", "expected a whole number (0 or more)"),
        ("expected u16", "expected a whole number (0 or more)"),
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("expected a sequence", "expected a list, e.g. [512, 512]"),
        ("expected a boolean", "expected true or false"),
    ];
    let mut out = message.to_string();
    // `expected struct TrainConfig` (a section given a plain value, e.g. `--set train=5`).
    if let Some((rest, name)) = out.rsplit_once("expected struct ") {
        if name.chars().all(|c| c.is_ascii_alphanumeric()) {
            out = format!("{rest}expected a section: a [table] or an inline {{ key = value }}");
        }
    }
    for (rust, plain) in NAMES {
        if let Some(rest) = out.strip_suffix(rust) {
            out = format!("{rest}{plain}");
        }
    }
    out
}

/// Keys other training tools use, and the spotrun key that means the same.
const FOREIGN_NAMES: [(&str, &str); 12] = [
    ("learning_rate", "optim.lr"),
    ("optimizer", "optim.kind"),
    ("max_epochs", "train.epochs"),
    ("num_epochs", "train.epochs"),
    ("num_train_epochs", "train.epochs"),
    ("batch", "train.batch_size"),
    ("per_device_train_batch_size", "train.batch_size"),
    ("per_device_eval_batch_size", "train.eval_batch_size"),
    ("lr_scheduler_type", "schedule.kind"),
    ("save_steps", "checkpoint.every_steps"),
    ("save_total_limit", "checkpoint.keep_last"),
    ("max_grad_norm", "optim.grad_clip"),
];

/// For an "unknown field" error at config key path `key`, a sentence suggesting the right key, if there is one.
/// Other errors get `None`.
pub(super) fn config_hint(key: &str, message: &str) -> Option<String> {
    let unknown = unknown_field(message)?;
    if let Some(near) = nearest(unknown, &expected_fields(message)) {
        let section = key.rsplit_once('.').map_or(String::new(), |(s, _)| format!("{s}."));
        return Some(format!("did you mean `{section}{near}`?"));
    }
    let elsewhere: Vec<String> = config_sections()
        .into_iter()
        .filter(|s| section_accepts(s, unknown))
        .map(|s| format!("{s}.{unknown}"))
        .collect();
    if !elsewhere.is_empty() {
        return Some(format!("`{unknown}` belongs elsewhere: did you mean `{}`?", elsewhere.join("` or `")));
    }
    FOREIGN_NAMES.iter().find(|(other, _)| *other == unknown).map(|(_, ours)| format!("spotrun calls this `{ours}`"))
}

/// For an "unknown field" error in a file without cross-section structure (a sweep file's top level), a near
/// spelling among the fields the message lists.
pub(crate) fn spelling_hint(message: &str) -> Option<String> {
    let unknown = unknown_field(message)?;
    nearest(unknown, &expected_fields(message)).map(|near| format!("did you mean `{near}`?"))
}

/// `message` with `hint` appended as a second sentence, when there is one.
pub(crate) fn with_hint(message: String, hint: Option<String>) -> String {
    match hint {
        Some(h) => format!("{message}; {h}"),
        None => message,
    }
}

/// The field name in serde's "unknown field `x`, expected …" message.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split_once('`').map(|(name, _)| name)
}

/// The field names serde lists after "expected" (`one of `a`, `b``, or `a` or `b``).
fn expected_fields(message: &str) -> Vec<&str> {
    let Some((_, list)) = message.split_once(", expected ") else { return Vec::new() };
    list.split('`').skip(1).step_by(2).collect()
}

/// The candidate closest to `word` by edit distance, if close enough to be a typo (at most one edit per three
/// letters, at least one), or one that differs only in case, `-` for `_`, or a plural `s`.
fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_").trim_end_matches('s').to_string();
    if let Some(c) = candidates.iter().find(|c| norm(c) == norm(word)) {
        return Some(c);
    }
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance counting insertions, deletions, substitutions and swaps of neighbours (`trian` → `train` is
/// one edit), by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // d[i][j]: distance between the first i chars of a and the first j chars of b.
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let sub = d[i - 1][j - 1] + usize::from(a[i - 1] != b[j - 1]);
            let mut best = sub.min(d[i - 1][j] + 1).min(d[i][j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// Every section (table) of the config, as dotted paths: `data`, `data.synthetic`, `model`, …
fn config_sections() -> Vec<String> {
    fn walk(t: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (k, v) in t {
            if let toml::Value::Table(sub) = v {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                out.push(path.clone());
                walk(sub, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(toml::Value::Table(t)) = toml::Value::try_from(Config::default()) {
        walk(&t, "", &mut out);
    }
    out
}

/// Whether `section` has a key named `name`: a config with only `section.name` set fails for any reason but
/// "unknown field" (a wrong type, a missing sibling) or parses.
fn section_accepts(section: &str, name: &str) -> bool {
    let mut t = toml::Table::new();
    let path = format!("{section}.{name}");
    if super::keys::set_value(&mut t, &path, toml::Value::String("?".into()), std::path::Path::new("")).is_err() {
        return false;
    }
    match serde_path_to_error::deserialize::<_, Config>(toml::Value::Table(t)) {
        Ok(_) => true,
        Err(e) => !(e.path().to_string() == path && e.inner().message().starts_with("unknown field")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("epoch", "epochs"), 1);
        assert_eq!(edit_distance("batchsize", "batch_size"), 1);
        assert_eq!(edit_distance("lr", "lr"), 0);
        assert_eq!(edit_distance("trian", "train"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kind", "keep_last"), 8);
    }

    #[test]
    fn type_names_become_words() {
        assert_eq!(
            plain_types("invalid type: string \"x\", expected usize"),
            "invalid type: string \"x\", expected a whole number (0 or more)"
        );
        assert_eq!(
            plain_types("invalid type: integer `512`, expected a sequence"),
            "invalid type: integer `512`, expected a list, e.g. [512, 512]"
        );
        assert_eq!(plain_types("must be at least 1"), "must be at least 1");
    }

    #[test]
    fn sections_come_from_the_schema() {
        let s = config_sections();
        for want in ["data", "data.synthetic", "model", "optim", "schedule", "train", "checkpoint"] {
            assert!(s.iter().any(|x| x == want), "{want} missing from {s:?}");
        }
        assert!(section_accepts("optim", "lr"));
        assert!(section_accepts("train", "early_stopping"));
        assert!(!section_accepts("train", "lr"));
    }

    #[test]
    fn hints_for_typos_misplaced_keys_and_foreign_names() {
        let msg = "unknown field `epoch`, expected one of `name`, `epochs`, `batch_size`";
        assert_eq!(config_hint("train.epoch", msg).as_deref(), Some("did you mean `train.epochs`?"));
        let msg = "unknown field `lr`, expected one of `name`, `epochs`, `batch_size`";
        assert_eq!(config_hint("train.lr", msg).as_deref(), Some("`lr` belongs elsewhere: did you mean `optim.lr`?"));
        let msg = "unknown field `learning_rate`, expected one of `kind`, `lr`, `weight_decay`";
        assert_eq!(config_hint("optim.learning_rate", msg).as_deref(), Some("spotrun calls this `optim.lr`"));
        let msg = "unknown field `zzz`, expected one of `kind`, `lr`";
        assert_eq!(config_hint("optim.zzz", msg), None);
        assert_eq!(config_hint("optim.lr", "must be a positive number, got -1"), None);
        let msg = "unknown field `methd`, expected one of `name`, `method`, `base`";
        assert_eq!(spelling_hint(msg).as_deref(), Some("did you mean `method`?"));
    }
}
