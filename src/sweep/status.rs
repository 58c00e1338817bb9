//! The state of every run of a sweep, read from the volume only (`sweep.json` plus each run directory), and the
//! results files and status table built from it. Pure readers: nothing here trains or claims.
use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::error::SweepError;
use super::layout::{Layout, Plan, PlanRun};
use super::lease::{self, LeaseInfo};
use super::record::{self, Attempt, AttemptEvent, Done, Failed, RunEnd};
use crate::checkpoint::write_atomic;
use crate::trainer::{metric_value, EpochMetrics};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Done,
    Running,
    Failed,
    Pending,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Done => "done",
            State::Running => "running",
            State::Failed => "failed",
            State::Pending => "pending",
        }
    }
}

/// One run as seen on the volume.
#[derive(Debug, Clone)]
pub struct RunView {
    pub plan: PlanRun,
    pub state: State,
    pub done: Option<Done>,
    pub failed: Option<Failed>,
    pub holder: Option<LeaseInfo>,
    pub metrics: Vec<EpochMetrics>,
    pub attempts: Vec<Attempt>,
    /// Wall time of the attempts so far (`record::wall_seconds`), for runs without `done.json`.
    pub wall_seconds: f64,
}

impl RunView {
    /// The newest value of the sweep's metric (final for finished runs).
    pub fn metric(&self, plan: &Plan) -> Option<f64> {
        let last = self.done.as_ref().and_then(|d| d.last.clone()).or_else(|| self.metrics.last().cloned())?;
        Some(metric_value(&last, plan.metric)).filter(|v| v.is_finite())
    }
}

pub fn collect(layout: &Layout, plan: &Plan) -> Vec<RunView> {
    plan.runs
        .iter()
        .map(|r| {
            let dir = layout.run_dir(&r.id);
            let done: Option<Done> = record::read_json(&dir.join(record::DONE));
            let failed: Option<Failed> = record::read_json(&dir.join(record::FAILED));
            let holder = lease::holder(&dir, plan.lease_seconds);
            let attempts = record::attempts(&dir);
            let state = match (&done, &failed, &holder) {
                (Some(_), _, _) => State::Done,
                (_, Some(_), _) => State::Failed,
                (_, _, Some(_)) => State::Running,
                _ => State::Pending,
            };
            RunView {
                plan: r.clone(),
                state,
                done,
                failed,
                holder,
                metrics: record::epoch_metrics(&dir),
                wall_seconds: record::wall_seconds(&dir, &attempts),
                attempts,
            }
        })
        .collect()
}

/// How many runs are in each state.
pub(super) fn counts(views: &[RunView]) -> BTreeMap<State, usize> {
    let mut m = BTreeMap::new();
    for v in views {
        *m.entry(v.state).or_insert(0) += 1;
    }
    m
}

/// The best run by the sweep's metric among finished runs (or all runs with `include_running`).
pub(super) fn best<'a>(plan: &Plan, views: &'a [RunView], include_running: bool) -> Option<(&'a RunView, f64)> {
    let sign = if plan.metric.higher_is_better() { 1.0 } else { -1.0 };
    views
        .iter()
        .filter(|v| v.state == State::Done || (include_running && v.state != State::Failed))
        .filter_map(|v| v.metric(plan).map(|m| (v, m)))
        .max_by(|a, b| (sign * a.1).total_cmp(&(sign * b.1)))
}

/// The swept keys in first-seen order (the results' parameter columns).
pub(super) fn swept_keys(plan: &Plan) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for r in &plan.runs {
        for (k, _) in &r.overrides {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    }
    keys
}

/// A TOML value's text as JSON (numbers stay numbers, `[256]` stays a list).
pub(super) fn toml_text_to_json(text: &str) -> Value {
    format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .and_then(|v| serde_json::to_value(v).ok())
        .unwrap_or_else(|| Value::String(text.to_string()))
}

fn wall_and_device(v: &RunView) -> (f64, f64) {
    match &v.done {
        Some(d) => (d.wall_seconds, d.device_seconds),
        None => (v.wall_seconds, v.wall_seconds),
    }
}

/// One JSON object per run (the rows of `results.jsonl`, and `status --json`).
pub(super) fn rows(plan: &Plan, views: &[RunView]) -> Vec<Value> {
    views
        .iter()
        .map(|v| {
            let overrides: serde_json::Map<String, Value> =
                v.plan.overrides.iter().map(|(k, t)| (k.clone(), toml_text_to_json(t))).collect();
            let last = v.done.as_ref().and_then(|d| d.last.clone()).or_else(|| v.metrics.last().cloned());
            let (wall, device) = wall_and_device(v);
            json!({
                "index": v.plan.index,
                "run_id": v.plan.id,
                "status": v.state.as_str(),
                "outcome": v.done.as_ref().map(|d| d.outcome),
                "overrides": overrides,
                "epochs": last.as_ref().map_or(0, |m| m.epoch),
                "planned_epochs": v.plan.epochs,
                "final": last,
                plan.metric.as_str(): v.metric(plan),
                "wall_seconds": wall,
                "device_seconds": device,
                "attempts": v.attempts.iter().filter(|a| a.event == AttemptEvent::Start).count(),
                "error": v.failed.as_ref().map(|f| f.error.clone()),
                "holder": v.holder.as_ref().map(|h| format!("{} pid {}", h.host, h.pid)),
            })
        })
        .collect()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `results.csv`: one row per run; each swept key has its own column.
pub(super) fn csv(plan: &Plan, views: &[RunView]) -> String {
    let keys = swept_keys(plan);
    let mut header: Vec<String> = ["index", "run_id", "status"].map(String::from).to_vec();
    header.extend(keys.iter().cloned());
    header.extend(
        [
            "epochs",
            "train_loss",
            "val_loss",
            "val_accuracy",
            "val_ppl",
            "val_mae",
            "best_epoch",
            "wall_seconds",
            "device_seconds",
            "attempts",
            "error",
        ]
        .map(String::from),
    );
    let mut out = header.iter().map(|h| csv_field(h)).collect::<Vec<_>>().join(",") + "\n";
    for (v, row) in views.iter().zip(rows(plan, views)) {
        let mut f = vec![v.plan.index.to_string(), v.plan.id.clone(), v.state.as_str().to_string()];
        for k in &keys {
            let text = v.plan.overrides.iter().find(|(kk, _)| kk == k).map(|(_, t)| t.clone()).unwrap_or_default();
            // Strings unquoted (relu, not "relu"); lists and numbers as TOML writes them.
            f.push(match toml_text_to_json(&text) {
                Value::String(s) => s,
                _ => text,
            });
        }
        let last = row.get("final").filter(|x| !x.is_null());
        let num =
            |k: &str| last.and_then(|m| m.get(k)).and_then(Value::as_f64).map_or(String::new(), |x| format!("{x}"));
        f.push(row["epochs"].to_string());
        f.extend(["train_loss", "val_loss", "val_accuracy", "val_ppl", "val_mae", "best_epoch"].map(num));
        f.push(format!("{:.3}", row["wall_seconds"].as_f64().unwrap_or(0.0)));
        f.push(format!("{:.3}", row["device_seconds"].as_f64().unwrap_or(0.0)));
        f.push(row["attempts"].to_string());
        f.push(row["error"].as_str().unwrap_or("").lines().next().unwrap_or("").to_string());
        out += &(f.iter().map(|x| csv_field(x)).collect::<Vec<_>>().join(",") + "\n");
    }
    out
}

/// Rewrites `results.csv` and `results.jsonl` from the volume. Safe to call from any worker at any time: the
/// content is derived from the run directories only, and each file is replaced atomically.
pub(super) fn write_results(layout: &Layout, plan: &Plan) -> Result<Vec<RunView>, SweepError> {
    let views = collect(layout, plan);
    let jsonl: String = rows(plan, &views).iter().map(|r| r.to_string() + "\n").collect();
    for (path, text) in [(layout.results_csv(), csv(plan, &views)), (layout.results_jsonl(), jsonl)] {
        write_atomic(&path, text.as_bytes()).map_err(|e| SweepError::io(&path, e))?;
    }
    Ok(views)
}

/// [`write_results`] for commands that only report (status, the launcher's final table): a volume that cannot
/// be written (mounted read-only, full) gets a warning, and the report is still shown.
pub(super) fn results_or_warn(layout: &Layout, plan: &Plan) -> Vec<RunView> {
    write_results(layout, plan).unwrap_or_else(|e| {
        tell!("warning: {e}; results.csv and results.jsonl were not updated");
        collect(layout, plan)
    })
}

/// The `spotrun status` table.
pub(super) fn table(plan: &Plan, views: &[RunView]) -> String {
    let c = counts(views);
    let n = |s| c.get(&s).copied().unwrap_or(0);
    let mut out = format!(
        "sweep {}: {} runs: {} done, {} running, {} failed, {} pending\n",
        plan.name,
        views.len(),
        n(State::Done),
        n(State::Running),
        n(State::Failed),
        n(State::Pending)
    );
    let metric = plan.metric.as_str();
    out += &format!("{:>4}  {:<8}  {:<8}  {:>7}  {:>12}  {}\n", "#", "run", "status", "epoch", metric, "overrides");
    for v in views {
        let epoch = format!("{}/{}", v.metrics.last().map_or(0, |m| m.epoch), v.plan.epochs);
        let m = v.metric(plan).map_or("-".into(), |x| format!("{x:.4}"));
        let extra = match (&v.holder, &v.failed, &v.done) {
            (_, _, Some(d)) if d.outcome != RunEnd::Completed => format!("  ({})", d.outcome.words()),
            (Some(h), _, _) if v.state == State::Running => format!("  ({} pid {})", h.host, h.pid),
            (_, Some(f), _) => format!("  ({})", f.error.lines().next().unwrap_or("")),
            _ => String::new(),
        };
        out += &format!(
            "{:>4}  {:<8}  {:<8}  {:>7}  {:>12}  {}{extra}\n",
            v.plan.index,
            crate::config::short_id(&v.plan.id),
            v.state.as_str(),
            epoch,
            m,
            v.plan.label()
        );
    }
    if let Some((b, m)) = best(plan, views, true) {
        out += &format!(
            "{}: #{} {} {metric} {m:.4} ({}){}\n",
            if views.iter().any(|v| matches!(v.state, State::Running | State::Pending)) {
                "best so far"
            } else {
                "best"
            },
            b.plan.index,
            crate::config::short_id(&b.plan.id),
            b.plan.label(),
            if b.state == State::Done { "" } else { ", still running" }
        );
    }
    out
}
