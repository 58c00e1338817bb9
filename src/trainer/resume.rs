//! Whether a checkpoint (or a run directory) may be continued with the config and data at hand, as pure checks.
//!
//! Same run id: yes. Only `train.epochs` grew: yes (extending a finished run). Anything else: only with
//! `--allow-config-change`. The refusal lists the keys that differ so the user sees what they changed. The data
//! must match the fingerprint the checkpoint recorded, under the same flag.
use crate::config::{config_hash, hash_ignoring_epochs, Config};

/// `Ok(note)` when `new` may continue `old` (the note describes an extension or an allowed change);
/// `Err(changed keys)` otherwise.
pub(super) fn compatible(old: &Config, new: &Config, allow_change: bool) -> Result<Option<String>, Vec<String>> {
    let same = |f: fn(&Config) -> Result<String, crate::config::ConfigError>| match (f(old), f(new)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false, // a config that cannot be hashed is never "the same run"
    };
    if same(config_hash) {
        return Ok(None);
    }
    if same(hash_ignoring_epochs) && new.train.epochs >= old.train.epochs {
        let mut note = format!("extending the run from {} to {} epochs", old.train.epochs, new.train.epochs);
        if new.schedule.kind == crate::config::ScheduleKind::Cosine {
            note += "; warning: the cosine schedule spans train.epochs, so every remaining step gets a different \
                     learning rate than it would have had (the result differs from a run trained for the new length \
                     from the start)";
        }
        return Ok(Some(note));
    }
    let changed = changed_keys(old, new);
    if allow_change {
        return Ok(Some(format!("continuing despite config changes (--allow-config-change): {}", changed.join(", "))));
    }
    Err(changed)
}

/// Whether the data (fingerprint `now`, loaded from `origin`) is the data a checkpoint recorded: `Ok(note)` to go
/// on (with a note when a difference is allowed), `Err(why)` to refuse. Checkpoints without a fingerprint pass.
pub(super) fn same_data(
    recorded: Option<&str>,
    now: &str,
    origin: &str,
    allow_change: bool,
) -> Result<Option<String>, String> {
    match recorded {
        Some(old) if old != now && allow_change => Ok(Some(format!(
            "continuing on different data (--allow-config-change): {origin} is {now} now, {old} in the checkpoint"
        ))),
        Some(old) if old != now => Err(format!(
            "the data differs from what this run trained on ({origin} is {now} now, {old} in the checkpoint), so the \
             run cannot resume exactly. Restore the original data, use another --run-dir, or pass \
             --allow-config-change to continue on the new data"
        )),
        _ => Ok(None),
    }
}

/// A resume on another device type or another resolved precision than the checkpoint recorded (`was`: its
/// manifest's `device` and `precision`, absent in older checkpoints; `now`: this process's): the warning naming
/// both, or `None` when nothing recorded differs. `explicit`: `train.precision` is set (not `auto`), which
/// resolves the same on every device and is kept; `auto` is bf16 on CUDA and fp32 on the CPU.
pub(super) fn moved(was: (Option<&str>, Option<&str>), now: (&str, &str), explicit: Option<&str>) -> Option<String> {
    let differs = |recorded: Option<&str>, current: &str| recorded.is_some_and(|r| r != current);
    let (device, precision) = (differs(was.0, now.0), differs(was.1, now.1));
    if !device && !precision {
        return None;
    }
    let side = |d: Option<&str>, p: Option<&str>| format!("{} with {}", d.unwrap_or("?"), p.unwrap_or("?"));
    let why = match (precision, explicit) {
        (true, None) => "train.precision = \"auto\" resolves per device (bf16 on CUDA, fp32 on the CPU), so the rest \
                         of the run computes differently from its start; resume on the checkpoint's device type to keep \
                         it"
            .to_string(),
        (true, Some(p)) => format!("train.precision is \"{p}\" now"),
        (false, Some(p)) => format!("train.precision = \"{p}\" is set explicitly and kept"),
        (false, None) => "train.precision = \"auto\" resolves the same there".to_string(),
    };
    Some(format!(
        "resuming on another device or precision: {} (the checkpoint) -> {} (now); {why}",
        side(was.0, was.1),
        side(Some(now.0), Some(now.1))
    ))
}

/// Dotted paths of the leaves that differ between two configs (placement keys included; they are harmless).
pub(super) fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    let (a, b) = (serde_json::to_value(a).unwrap_or_default(), serde_json::to_value(b).unwrap_or_default());
    let mut out = Vec::new();
    diff("", &a, &b, &mut out);
    out
}

fn diff(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    match (a.as_object(), b.as_object()) {
        (Some(x), Some(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            let null = serde_json::Value::Null;
            for k in keys {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                diff(&p, x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null), out);
            }
        }
        _ if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    #[test]
    fn changed_data_is_refused_unless_allowed_and_old_checkpoints_pass() {
        use super::same_data;
        assert_eq!(same_data(Some("crc32:1"), "crc32:1", "d.st", false), Ok(None));
        assert_eq!(same_data(None, "crc32:1", "d.st", false), Ok(None));
        let why = same_data(Some("crc32:1"), "crc32:2", "d.st", false).unwrap_err();
        assert!(
            why.contains("d.st is crc32:2 now, crc32:1 in the checkpoint") && why.contains("--allow-config-change")
        );
        let note = same_data(Some("crc32:1"), "crc32:2", "d.st", true).unwrap().unwrap();
        assert!(note.contains("continuing on different data"), "{note}");
    }

    use super::*;

    #[test]
    fn a_resume_on_another_device_or_precision_names_both_and_old_checkpoints_pass() {
        assert_eq!(moved((Some("cuda"), Some("bf16")), ("cuda", "bf16"), None), None);
        assert_eq!(moved((None, None), ("cpu", "fp32"), None), None, "a checkpoint without the fields says nothing");
        let w = moved((Some("cuda"), Some("bf16")), ("cpu", "fp32"), None).unwrap();
        assert!(
            w.starts_with(
                "resuming on another device or precision: cuda with bf16 (the checkpoint) -> cpu with fp32 (now)"
            ),
            "{w}"
        );
        assert!(w.contains("\"auto\" resolves per device"), "{w}");
        let w = moved((Some("cuda"), Some("bf16")), ("cpu", "bf16"), Some("bf16")).unwrap();
        assert!(w.contains("cuda with bf16 (the checkpoint) -> cpu with bf16 (now)"), "{w}");
        assert!(w.contains("set explicitly and kept"), "{w}");
        let w = moved((Some("cpu"), Some("bf16")), ("cpu", "fp32"), Some("fp32")).unwrap();
        assert!(w.contains("train.precision is \"fp32\" now"), "{w}");
        let w = moved((None, Some("bf16")), ("cpu", "fp32"), None).unwrap();
        assert!(w.contains("? with bf16 (the checkpoint) -> cpu with fp32"), "{w}");
    }

    #[test]
    fn same_config_and_longer_runs_continue_others_are_refused_with_the_changed_keys() {
        let a = Config::default();
        assert_eq!(compatible(&a, &a.clone(), false), Ok(None));
        let mut longer = a.clone();
        longer.train.epochs += 5;
        assert!(compatible(&a, &longer, false).unwrap().unwrap().contains("extending"));
        assert!(compatible(&longer, &a, false).is_err(), "shrinking is not an extension");
        let mut lr = a.clone();
        lr.optim.lr = 0.5;
        lr.model.dropout = 0.1;
        assert_eq!(compatible(&a, &lr, false), Err(vec!["model.dropout".to_string(), "optim.lr".to_string()]));
        assert!(compatible(&a, &lr, true).is_ok());
        let mut moved = a.clone();
        moved.train.device = "cuda:3".into();
        moved.checkpoint.every_steps = 7;
        assert_eq!(compatible(&a, &moved, false), Ok(None), "placement and checkpoint keys do not matter");
    }
}
