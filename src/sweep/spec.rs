//! The sweep file: parsing and validating `SWEEP.toml` into a [`Sweep`].
//!
//! Every parameter value is checked against the base config here, before anything runs, so a typo in a key path
//! or a value of the wrong type fails the whole sweep at once with the file and key named, exit 2.
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::SweepError;
use super::schedule::{Around, PbtSettings, Schedule, SchedulerKeys, SchedulerKind};
use crate::config::{self, MetricName};

/// The most runs one sweep expands to (seeds included): enough for any real search, and a `count = 1e9` typo is
/// an error instead of minutes of expansion and gigabytes of plan.
pub(super) const MAX_RUNS: usize = 100_000;

/// How a sweep turns its parameters into runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Every combination of the value lists (last parameter varies fastest).
    Grid,
    /// `count` seeded samples: value lists are drawn from uniformly, ranges as declared.
    Random,
    /// Exactly the `[[runs]]` tables, in order.
    List,
    /// `count` trials proposed one after another by a tree-structured Parzen estimator (Optuna's defaults) from
    /// the metrics of the trials before, through the study on the volume.
    Tpe,
}

impl Method {
    /// As the sweep file spells it.
    pub fn name(self) -> &'static str {
        match self {
            Method::Grid => "grid",
            Method::Random => "random",
            Method::List => "list",
            Method::Tpe => "tpe",
        }
    }
}

/// Where a parameter's values come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Domain {
    Values(Vec<toml::Value>),
    Uniform(f64, f64),
    LogUniform(f64, f64),
    Int(i64, i64),
}

/// A validated sweep file.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub name: String,
    pub file: PathBuf,
    pub method: Method,
    /// The base config table (from `base = "path"`, an inline `[base]` table, or the built-in default).
    pub base: toml::Table,
    /// Parameters by dotted config key, in the file's (sorted) key order.
    pub params: Vec<(String, Domain)>,
    /// `method = "list"`: each run's overrides.
    pub runs: Vec<Vec<(String, toml::Value)>>,
    pub count: usize,
    /// Sampling seed for `method = "random"`.
    pub seed: u64,
    /// Replicates: every expanded point runs once per seed (`train.seed`).
    pub seeds: Vec<u64>,
    /// The metric runs are ranked by (default: `val_accuracy` for classification, `val_loss` otherwise).
    pub metric: MetricName,
    /// Failed attempts retried per run before it is recorded as failed.
    pub retries: u32,
    /// A lease whose heartbeat is older than this is taken over.
    pub lease_seconds: f64,
    /// Sweep-level pruning: stop a run whose metric is worse than the median of other runs at the same epoch.
    pub pruning: Option<Pruning>,
    /// `fuse`: train runs that differ only in per-run keys as one fused model (see [`super::groups`]).
    pub fuse: Fuse,
    /// `scheduler`: an adaptive scheduler (ASHA, Hyperband) decides how far each run trains, through the study
    /// on the volume.
    pub schedule: Option<Schedule>,
    /// `scheduler = "pbt"`: its quantile and resampling probability.
    pub pbt: Option<PbtSettings>,
}

/// `fuse = "auto" | "off"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fuse {
    /// Fuse whatever is fusable, in groups sized to memory.
    #[default]
    Auto,
    /// One process per run, as before fusion existed.
    Off,
}

/// `[pruning]`: median pruning (as in Optuna's MedianPruner).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pruning {
    pub method: PruneMethod,
    /// Never prune before this many epochs.
    #[serde(default = "one")]
    pub warmup_epochs: usize,
    /// Only prune when at least this many other runs reported the same epoch.
    #[serde(default = "three")]
    pub min_runs: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PruneMethod {
    Median,
}

fn one() -> usize {
    1
}
fn three() -> usize {
    3
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: String,
    #[serde(default = "grid")]
    method: Method,
    base: Option<toml::Value>,
    #[serde(default)]
    parameters: toml::Table,
    #[serde(default)]
    runs: Vec<toml::Table>,
    count: Option<usize>,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    seeds: Vec<u64>,
    metric: Option<MetricName>,
    #[serde(default = "two")]
    retries: u32,
    #[serde(default = "sixty")]
    lease_seconds: f64,
    pruning: Option<Pruning>,
    #[serde(default)]
    fuse: Fuse,
    scheduler: Option<SchedulerKind>,
    min_epochs: Option<usize>,
    eta: Option<usize>,
    interval: Option<usize>,
    quantile: Option<f64>,
    resample_probability: Option<f64>,
    keep_copies: Option<bool>,
}

fn grid() -> Method {
    Method::Grid
}
fn two() -> u32 {
    2
}
fn sixty() -> f64 {
    60.0
}

const RANGE_KINDS: [&str; 3] = ["uniform", "log_uniform", "int"];

/// Reads and validates a sweep file.
pub fn load(path: &Path) -> Result<Sweep, SweepError> {
    let text = std::fs::read_to_string(path).map_err(|source| SweepError::Read { file: path.into(), source })?;
    parse(&text, path)
}

/// Parses sweep text; `path` names the file in errors and anchors a relative `base` path.
pub fn parse(text: &str, path: &Path) -> Result<Sweep, SweepError> {
    let file = path.to_path_buf();
    let key_err = |key: &str, message: String| SweepError::Key { file: file.clone(), key: key.into(), message };
    let raw = read_raw(text, &file)?;
    check_name(&raw.name).map_err(|m| key_err("name", m))?;

    let (base, base_origin, inline) = base_table(&raw, path)?;
    let resolve = |t: toml::Table, key_prefix: &str| -> Result<config::Config, SweepError> {
        config::from_table(t, &base_origin).map_err(|e| match e {
            config::ConfigError::Key { key, message, .. } if inline || !key_prefix.is_empty() => {
                let prefix = if key_prefix.is_empty() { "base" } else { key_prefix };
                key_err(&format!("{prefix}: {key}"), message)
            }
            other => SweepError::Config(other),
        })
    };
    let base_cfg = resolve(base.clone(), "")?;
    let metric = resolve_metric(raw.metric, &base_cfg).map_err(|m| key_err("metric", m))?;
    if base_cfg.checkpoint.dir.is_some() {
        return Err(key_err(
            "base: checkpoint.dir",
            "a sweep keeps each run's checkpoints in VOLUME/<name>/runs/<run-id>/checkpoints; remove checkpoint.dir"
                .into(),
        ));
    }
    // Applies overrides to the base and checks the result, naming `key` on failure.
    let check = |overrides: &[(String, toml::Value)], key: &str| -> Result<(), SweepError> {
        let mut t = base.clone();
        for (k, v) in overrides {
            if k == "checkpoint.dir" {
                return Err(key_err(key, "checkpoint.dir cannot be swept (each run has its own directory)".into()));
            }
            config::set_value(&mut t, k, v.clone(), &file).map_err(|e| key_err(key, strip(&e)))?;
        }
        resolve(t, key).map(|_| ())
    };

    let mut params = Vec::new();
    flatten_params(&raw.parameters, "", &mut params, &file)?;
    for (k, d) in &params {
        let key = format!("parameters.\"{k}\"");
        for v in domain_probe_values(d) {
            check(&[(k.clone(), v)], &key)?;
        }
    }
    let mut runs = Vec::new();
    for (i, t) in raw.runs.iter().enumerate() {
        let mut o = Vec::new();
        flatten_values(t, "", &mut o);
        check(&o, &format!("runs[{i}]"))?;
        runs.push(o);
    }

    let count = check_shape(&raw, &params, &runs, &file)?;
    let (schedule, pbt) = scheduling(&raw, &params, &runs, base_cfg.train.epochs).map_err(|(k, m)| key_err(&k, m))?;
    Ok(Sweep {
        name: raw.name,
        file,
        method: raw.method,
        base,
        params,
        runs,
        count,
        seed: raw.seed,
        seeds: raw.seeds,
        metric,
        retries: raw.retries,
        lease_seconds: raw.lease_seconds,
        pruning: raw.pruning,
        fuse: raw.fuse,
        schedule,
        pbt,
    })
}

/// The sweep file's TOML as its raw keys (unknown keys and wrong types are errors naming the key).
fn read_raw(text: &str, file: &Path) -> Result<Raw, SweepError> {
    let table = text
        .parse::<toml::Table>()
        .map_err(|e| SweepError::Syntax { file: file.into(), message: e.to_string().trim().to_string() })?;
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let (key, message) = config::describe_serde_error(e);
        let hint = config::spelling_hint(&message);
        SweepError::Key { file: file.into(), key, message: config::with_hint(message, hint) }
    })
}

/// The scheduler and, for PBT, its settings ([`SchedulerKeys::check`]); `Err((key, message))`.
fn scheduling(
    raw: &Raw,
    params: &[(String, Domain)],
    runs: &[Vec<(String, toml::Value)>],
    epochs: usize,
) -> Result<(Option<Schedule>, Option<PbtSettings>), (String, String)> {
    let keys = SchedulerKeys {
        scheduler: raw.scheduler,
        min_epochs: raw.min_epochs,
        eta: raw.eta,
        interval: raw.interval,
        quantile: raw.quantile,
        resample_probability: raw.resample_probability,
        keep_copies: raw.keep_copies,
    };
    let swept: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
    let listed = runs.iter().flatten().map(|(k, _)| k.as_str());
    let sweep = Around {
        tpe: raw.method == Method::Tpe,
        seeds: !raw.seeds.is_empty(),
        pruning: raw.pruning.is_some(),
        swept: &swept,
        epochs_swept: swept.iter().copied().chain(listed).any(|k| k == "train.epochs"),
        epochs,
    };
    keys.check(&sweep)
}

/// `metric`, or the task's default (`val_accuracy` for classification, `val_loss` otherwise); `Err` when the task
/// has no such metric.
fn resolve_metric(metric: Option<MetricName>, base: &config::Config) -> Result<MetricName, String> {
    let task = base.task();
    let metric = metric.unwrap_or(task.default_metric());
    if task.metrics().contains(&metric) {
        return Ok(metric);
    }
    let offered: Vec<&str> = task.metrics().iter().map(|m| m.as_str()).collect();
    Err(format!("{} is not a {} metric; use one of {}", metric.as_str(), task.name(), offered.join(", ")))
}

/// The base config table, where it came from, and whether it is inline (`[base]`) rather than a file.
fn base_table(raw: &Raw, path: &Path) -> Result<(toml::Table, PathBuf, bool), SweepError> {
    Ok(match &raw.base {
        None => (toml::Table::new(), PathBuf::from(config::BUILTIN), false),
        Some(toml::Value::String(p)) => {
            let p = path.parent().unwrap_or(Path::new("")).join(p);
            (config::read_table(&p)?, p, false)
        }
        Some(toml::Value::Table(t)) => (t.clone(), path.to_path_buf(), true),
        Some(_) => {
            let message = "expected a config file path or a [base] table".to_string();
            return Err(SweepError::Key { file: path.to_path_buf(), key: "base".into(), message });
        }
    })
}

/// `seeds`: no repeats, and not together with a swept `train.seed`.
fn check_seeds(raw: &Raw, params: &[(String, Domain)], runs: &[Vec<(String, toml::Value)>]) -> Result<(), String> {
    let swept_seed =
        params.iter().any(|(k, _)| k == "train.seed") || runs.iter().flatten().any(|(k, _)| k == "train.seed");
    if !raw.seeds.is_empty() && swept_seed {
        return Err("seeds = [...] replicates every run over train.seed, which [parameters] or [[runs]] also sets; \
                    use one of the two"
            .into());
    }
    let mut seen = std::collections::BTreeSet::new();
    match raw.seeds.iter().find(|s| !seen.insert(**s)) {
        Some(s) => Err(format!("seed {s} is listed twice")),
        None => Ok(()),
    }
}

/// The method against the parameters and runs it was given; `Err((key, message))`.
fn check_method(
    raw: &Raw,
    params: &[(String, Domain)],
    runs: &[Vec<(String, toml::Value)>],
) -> Result<(), (String, String)> {
    match raw.method {
        Method::Grid | Method::Random if !runs.is_empty() => {
            return Err(("runs".into(), "[[runs]] tables need method = \"list\"".into()))
        }
        Method::List if runs.is_empty() => {
            return Err(("runs".into(), "method = \"list\" needs at least one [[runs]] table".into()))
        }
        Method::List if !params.is_empty() => {
            return Err(("parameters".into(), "method = \"list\" takes [[runs]] tables, not [parameters]".into()))
        }
        Method::Grid if params.is_empty() && raw.seeds.is_empty() => {
            return Err((
                "parameters".into(),
                "the grid is empty: add e.g. \"optim.lr\" = [1e-3, 3e-3] under [parameters], or seeds = [0, 1]".into(),
            ))
        }
        Method::Grid => {
            if let Some((k, _)) = params.iter().find(|(_, d)| !matches!(d, Domain::Values(_))) {
                return Err((
                    format!("parameters.\"{k}\""),
                    "a grid needs a list of values; ranges are for method = \"random\"".into(),
                ));
            }
        }
        Method::Random | Method::Tpe if params.is_empty() => {
            return Err((
                "parameters".into(),
                format!("method = \"{}\" needs at least one parameter", raw.method.name()),
            ))
        }
        Method::Tpe if !runs.is_empty() => {
            return Err(("runs".into(), "[[runs]] tables need method = \"list\"".into()))
        }
        Method::Tpe if !raw.seeds.is_empty() => {
            return Err((
                "seeds".into(),
                "method = \"tpe\" learns from each trial's metric; replicate seeds would be separate trials it \
                 ranks against each other: sweep train.seed as a parameter, or use method = \"random\""
                    .into(),
            ))
        }
        _ => {}
    }
    Ok(())
}

/// The checks on the sweep's shape and scalars: method against parameters and runs, `count`, the run limit,
/// seeds, `lease_seconds`, pruning. Returns `count`.
fn check_shape(
    raw: &Raw,
    params: &[(String, Domain)],
    runs: &[Vec<(String, toml::Value)>],
    file: &Path,
) -> Result<usize, SweepError> {
    let key_err = |key: &str, message: String| SweepError::Key { file: file.to_path_buf(), key: key.into(), message };
    check_method(raw, params, runs).map_err(|(k, m)| key_err(&k, m))?;
    let count = match (raw.method, raw.count) {
        (Method::Random | Method::Tpe, None | Some(0)) => {
            return Err(key_err("count", format!("method = \"{}\" needs count = N (N >= 1)", raw.method.name())))
        }
        (Method::Random | Method::Tpe, Some(n)) => n,
        (_, Some(_)) => return Err(key_err("count", "count is only used with method = \"random\" or \"tpe\"".into())),
        (_, None) => 0,
    };
    let points = match raw.method {
        Method::Grid => params.iter().fold(1usize, |n, (_, d)| match d {
            Domain::Values(v) => n.saturating_mul(v.len()),
            _ => n,
        }),
        Method::Random | Method::Tpe => count,
        Method::List => runs.len(),
    };
    let total = points.saturating_mul(raw.seeds.len().max(1));
    if total > MAX_RUNS {
        let key = if matches!(raw.method, Method::Random | Method::Tpe) { "count" } else { "parameters" };
        return Err(key_err(key, format!("{total} runs is more than one sweep takes ({MAX_RUNS}); split it")));
    }
    check_seeds(raw, params, runs).map_err(|m| key_err("seeds", m))?;
    if !(raw.lease_seconds.is_finite() && raw.lease_seconds >= 1.0) {
        return Err(key_err("lease_seconds", format!("must be at least 1, got {}", raw.lease_seconds)));
    }
    if let Some(p) = &raw.pruning {
        if p.min_runs == 0 {
            return Err(key_err("pruning.min_runs", "must be at least 1".into()));
        }
    }
    Ok(count)
}

/// The sweep file with a `base = "path"` replaced by the base config's table, so the text alone expands to the
/// same runs anywhere (a Kubernetes ConfigMap, a Modal function argument). Comments are not kept.
pub(super) fn self_contained(path: &Path) -> Result<String, SweepError> {
    let text = std::fs::read_to_string(path).map_err(|source| SweepError::Read { file: path.into(), source })?;
    let mut t = text
        .parse::<toml::Table>()
        .map_err(|e| SweepError::Syntax { file: path.into(), message: e.to_string().trim().to_string() })?;
    if let Some(toml::Value::String(p)) = t.get("base") {
        let base = config::read_table(&path.parent().unwrap_or(Path::new("")).join(p))?;
        t.insert("base".into(), toml::Value::Table(base));
    }
    toml::to_string(&t).map_err(|e| SweepError::Syntax { file: path.into(), message: e.to_string() })
}

/// A sweep name becomes one directory under the volume: letters, digits, `.`, `_`, `-`, not starting with `.`,
/// at most 100 characters.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 100 || name.starts_with('.') || !name.chars().all(ok_char) {
        return Err(format!(
            "\"{name}\" cannot be used as a directory name under the volume (it must not contain '/' or '..', start \
             with '.', or be empty); use letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

fn strip(e: &config::ConfigError) -> String {
    match e {
        config::ConfigError::Key { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// `[parameters]` accepts both `"optim.lr" = [...]` and nested `[parameters.optim] lr = [...]`.
fn flatten_params(
    t: &toml::Table,
    prefix: &str,
    out: &mut Vec<(String, Domain)>,
    file: &Path,
) -> Result<(), SweepError> {
    for (k, v) in t {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        let err =
            |message: String| SweepError::Key { file: file.into(), key: format!("parameters.\"{key}\""), message };
        match v {
            toml::Value::Array(a) if a.is_empty() => return Err(err("the value list is empty".into())),
            toml::Value::Array(a) => out.push((key, Domain::Values(a.clone()))),
            toml::Value::Table(r) if r.keys().any(|k| RANGE_KINDS.contains(&k.as_str()) || k == "values") => {
                out.push((key.clone(), parse_domain(r).map_err(err)?));
            }
            toml::Value::Table(r) => flatten_params(r, &key, out, file)?,
            other => {
                return Err(err(format!(
                    "expected a list of values or a range like {{ log_uniform = [1e-4, 1e-1] }}, got {other}"
                )))
            }
        }
    }
    Ok(())
}

fn parse_domain(r: &toml::Table) -> Result<Domain, String> {
    if r.len() != 1 {
        return Err("a range has exactly one of values, uniform, log_uniform, int".into());
    }
    let (kind, v) = r.iter().next().ok_or("empty range")?;
    if kind == "values" {
        return match v {
            toml::Value::Array(a) if !a.is_empty() => Ok(Domain::Values(a.clone())),
            _ => Err("values must be a non-empty list".into()),
        };
    }
    let pair = match v.as_array() {
        Some(a) if a.len() == 2 => (a[0].clone(), a[1].clone()),
        _ => return Err(format!("{kind} needs [min, max]")),
    };
    let inverted = |a: String, b: String| format!("{kind} range [{a}, {b}] is inverted: min must be below max");
    match kind.as_str() {
        "int" => {
            let (Some(a), Some(b)) = (pair.0.as_integer(), pair.1.as_integer()) else {
                return Err("int needs two integers [min, max]".into());
            };
            if a > b {
                return Err(inverted(a.to_string(), b.to_string()));
            }
            Ok(Domain::Int(a, b))
        }
        _ => {
            let num = |v: &toml::Value| v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
            let (Some(a), Some(b)) = (num(&pair.0), num(&pair.1)) else {
                return Err(format!("{kind} needs two numbers [min, max]"));
            };
            if !(a.is_finite() && b.is_finite()) || a >= b {
                return Err(inverted(a.to_string(), b.to_string()));
            }
            if kind == "log_uniform" {
                if a <= 0.0 {
                    return Err(format!("log_uniform needs min > 0, got {a}"));
                }
                return Ok(Domain::LogUniform(a, b));
            }
            Ok(Domain::Uniform(a, b))
        }
    }
}

/// Values that stand for a domain when checking it against the config: every listed value, or both ends.
fn domain_probe_values(d: &Domain) -> Vec<toml::Value> {
    match d {
        Domain::Values(v) => v.clone(),
        Domain::Uniform(a, b) | Domain::LogUniform(a, b) => vec![toml::Value::Float(*a), toml::Value::Float(*b)],
        Domain::Int(a, b) => vec![toml::Value::Integer(*a), toml::Value::Integer(*b)],
    }
}

/// A `[[runs]]` table's leaves as dotted keys.
fn flatten_values(t: &toml::Table, prefix: &str, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in t {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(inner) => flatten_values(inner, &key, out),
            other => out.push((key, other.clone())),
        }
    }
}
