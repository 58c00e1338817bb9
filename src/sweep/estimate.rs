//! `spotrun estimate`: device hours, cost and ETA of a sweep, as pure functions of per-run epoch counts and
//! epoch times. Epoch times come from the run's own `metrics.jsonl` when it has trained, else `--epoch-seconds`,
//! else the mean over the sweep's measured epochs.
use std::collections::BTreeMap;
use std::path::Path;

use super::error::SweepError;
use super::status::{RunView, State};

/// Hourly rates in $/h by GPU name (case-insensitive).
#[derive(Debug, Clone)]
pub(crate) struct Rates(BTreeMap<String, f64>);

/// On-demand list prices used when no `--rates` file is given (2026 cloud list prices, $/GPU-hour).
pub(crate) const DEFAULT_RATES: [(&str, f64); 9] = [
    ("T4", 0.59),
    ("L4", 0.80),
    ("A10G", 1.10),
    ("L40S", 1.95),
    ("A100-40GB", 2.10),
    ("A100-80GB", 2.50),
    ("H100", 3.95),
    ("H200", 4.54),
    ("B200", 6.25),
];

impl Default for Rates {
    fn default() -> Self {
        Rates(DEFAULT_RATES.iter().map(|(k, v)| (k.to_string(), *v)).collect())
    }
}

impl Rates {
    /// The defaults, overridden/extended by a TOML file of `NAME = dollars_per_hour` (top level or `[rates]`).
    pub(crate) fn load(path: &Path) -> Result<Rates, SweepError> {
        let text = std::fs::read_to_string(path).map_err(|source| SweepError::Read { file: path.into(), source })?;
        let mut t = text
            .parse::<toml::Table>()
            .map_err(|e| SweepError::Syntax { file: path.into(), message: e.to_string().trim().to_string() })?;
        if let Some(toml::Value::Table(inner)) = t.remove("rates") {
            t.extend(inner);
        }
        let mut r = Rates::default();
        for (k, v) in t {
            let rate = v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
            match rate {
                Some(x) if x.is_finite() && x >= 0.0 => {
                    r.0.retain(|name, _| !name.eq_ignore_ascii_case(&k));
                    r.0.insert(k, x);
                }
                _ => {
                    return Err(SweepError::Key {
                        file: path.into(),
                        key: k,
                        message: format!("expected dollars per hour (a number >= 0), got {v}"),
                    })
                }
            }
        }
        Ok(r)
    }

    pub(crate) fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }

    pub(crate) fn names(&self) -> String {
        self.0.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// One run's share of the estimate.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunInput {
    pub index: usize,
    pub epochs: usize,
    pub epochs_left: usize,
    pub epoch_seconds: f64,
    /// Where `epoch_seconds` came from: `measured`, `given`, or `sweep mean`.
    pub source: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Estimate {
    pub total_hours: f64,
    pub remaining_hours: f64,
    pub total_cost: f64,
    pub remaining_cost: f64,
    /// Wall time to finish the remaining runs on `workers` devices (longest-first greedy schedule).
    pub eta_seconds: f64,
}

/// Builds the per-run inputs from what is on the volume.
pub(crate) fn inputs(views: &[RunView], given: Option<f64>) -> Result<Vec<RunInput>, String> {
    if let Some(g) = given {
        if !(g.is_finite() && g > 0.0) {
            return Err(format!("--epoch-seconds must be a positive number, got {g}"));
        }
    }
    let all: Vec<f64> = views.iter().flat_map(|v| v.metrics.iter().map(|m| m.epoch_seconds)).collect();
    let mean_all = (!all.is_empty()).then(|| all.iter().sum::<f64>() / all.len() as f64);
    views
        .iter()
        .map(|v| {
            let own: Vec<f64> = v.metrics.iter().map(|m| m.epoch_seconds).collect();
            let (epoch_seconds, source) = if !own.is_empty() {
                (own.iter().sum::<f64>() / own.len() as f64, "measured")
            } else if let Some(g) = given {
                (g, "given")
            } else if let Some(m) = mean_all {
                (m, "sweep mean")
            } else {
                return Err("no epochs measured on this volume yet: pass --epoch-seconds S (e.g. from one \
                            `spotrun train` epoch on the target GPU)"
                    .to_string());
            };
            let finished = matches!(v.state, State::Done | State::Failed);
            let done_epochs = v.metrics.last().map_or(0, |m| m.epoch);
            Ok(RunInput {
                index: v.plan.index,
                epochs: v.plan.epochs,
                epochs_left: if finished { 0 } else { v.plan.epochs.saturating_sub(done_epochs) },
                epoch_seconds,
                source,
            })
        })
        .collect()
}

/// The inputs of a scheduled sweep: one per config, each priced at the epochs its schedule gives it (`budget`,
/// from [`super::schedule::Schedule::budget`]), less what the volume shows trained; epoch times as [`inputs`]
/// finds them (the sweep's measured mean, else `given`).
pub(crate) fn budget_inputs(budget: &[usize], views: &[RunView], given: Option<f64>) -> Result<Vec<RunInput>, String> {
    let measured = inputs(views, given).unwrap_or_default();
    let mean =
        (!measured.is_empty()).then(|| measured.iter().map(|r| r.epoch_seconds).sum::<f64>() / measured.len() as f64);
    let (epoch_seconds, source) = match (given, mean) {
        (Some(g), _) if g.is_finite() && g > 0.0 => (g, "given"),
        (Some(g), _) => return Err(format!("--epoch-seconds must be a positive number, got {g}")),
        (None, Some(m)) => (m, "sweep mean"),
        (None, None) => {
            return Err("no epochs measured on this volume yet: pass --epoch-seconds S (e.g. from one `spotrun train` \
                        epoch on the target GPU)"
                .to_string())
        }
    };
    let mut trained: usize = views.iter().map(|v| v.metrics.last().map_or(0, |m| m.epoch)).sum();
    Ok(budget
        .iter()
        .enumerate()
        .map(|(index, &epochs)| {
            let done = trained.min(epochs);
            trained -= done;
            RunInput { index, epochs, epochs_left: epochs - done, epoch_seconds, source }
        })
        .collect())
}

/// Device hours, cost at `rate` $/h, and the ETA on `workers` devices.
pub(crate) fn estimate(runs: &[RunInput], workers: usize, rate: f64) -> Estimate {
    let total: f64 = runs.iter().map(|r| r.epochs as f64 * r.epoch_seconds).sum::<f64>() + 0.0;
    let left: Vec<f64> = runs.iter().map(|r| r.epochs_left as f64 * r.epoch_seconds).filter(|s| *s > 0.0).collect();
    let remaining: f64 = left.iter().sum::<f64>() + 0.0; // + 0.0: an empty sum is -0.0
    Estimate {
        total_hours: total / 3600.0,
        remaining_hours: remaining / 3600.0,
        total_cost: total / 3600.0 * rate,
        remaining_cost: remaining / 3600.0 * rate,
        eta_seconds: makespan(&left, workers),
    }
}

/// Longest job first onto the least loaded worker: the finish time of the busiest worker.
pub(crate) fn makespan(jobs: &[f64], workers: usize) -> f64 {
    let mut jobs = jobs.to_vec();
    jobs.sort_by(|a, b| b.total_cmp(a));
    let mut load = vec![0.0f64; workers.max(1)];
    for j in jobs {
        if let Some(min) = load.iter_mut().min_by(|a, b| a.total_cmp(b)) {
            *min += j;
        }
    }
    load.into_iter().fold(0.0, f64::max)
}

fn hms(s: f64) -> String {
    let s = s.round() as u64;
    format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
}

pub(crate) fn render(name: &str, gpu: &str, rate: f64, workers: usize, runs: &[RunInput], e: &Estimate) -> String {
    let count = |src| runs.iter().filter(|r| r.source == src).count();
    format!(
        "sweep {name}: {} runs, {} epochs in all ({} left)\n\
         epoch times: {} runs measured, {} from --epoch-seconds, {} from the sweep mean\n\
         device time: {:.2} h total, {:.2} h left (= {:.0} device-minutes left)\n\
         cost at {gpu} ${rate:.2}/h: ${:.2} total, ${:.2} left\n\
         ETA with {workers} worker(s): {}\n",
        runs.len(),
        runs.iter().map(|r| r.epochs).sum::<usize>(),
        runs.iter().map(|r| r.epochs_left).sum::<usize>(),
        count("measured"),
        count("given"),
        count("sweep mean"),
        e.total_hours,
        e.remaining_hours,
        e.remaining_hours * 60.0,
        e.total_cost,
        e.remaining_cost,
        hms(e.eta_seconds)
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn run(i: usize, epochs: usize, left: usize, s: f64) -> RunInput {
        RunInput { index: i, epochs, epochs_left: left, epoch_seconds: s, source: "given" }
    }

    #[test]
    fn cost_and_eta() {
        // 4 runs x 10 epochs x 30 s = 1200 s = 1/3 h; at $3.95/h: $1.3167
        let runs: Vec<RunInput> = (0..4).map(|i| run(i, 10, 10, 30.0)).collect();
        let e = estimate(&runs, 2, 3.95);
        assert!((e.total_hours - 1.0 / 3.0).abs() < 1e-12);
        assert!((e.total_cost - 3.95 / 3.0).abs() < 1e-12);
        assert_eq!(e.eta_seconds, 600.0);
        // finished runs cost nothing more
        let mut runs = runs;
        runs[0].epochs_left = 0;
        runs[1].epochs_left = 5;
        let e = estimate(&runs, 2, 3.95);
        assert!((e.remaining_hours - 750.0 / 3600.0).abs() < 1e-12);
        assert_eq!(e.eta_seconds, 450.0, "300+150 on one worker, 300 on the other");
    }

    #[test]
    fn makespan_is_longest_first() {
        // LPT: 3|3, 5|3, 5|5, 7|5 -> 7 (the optimum is 6; LPT is within 4/3 of it, fine for an ETA)
        assert_eq!(makespan(&[3.0, 3.0, 2.0, 2.0, 2.0], 2), 7.0);
        assert_eq!(makespan(&[4.0, 3.0, 2.0, 1.0], 2), 5.0);
        assert_eq!(makespan(&[5.0], 8), 5.0);
        assert_eq!(makespan(&[], 2), 0.0);
    }

    #[test]
    fn rates_are_case_insensitive_and_overridable() {
        let r = Rates::default();
        assert_eq!(r.get("h100"), Some(3.95));
        assert_eq!(r.get("A100-80GB"), Some(2.50));
        assert_eq!(r.get("V100"), None);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("rates.toml");
        std::fs::write(&p, "[rates]\nh100 = 2.0\nV100 = 0.9\n").unwrap();
        let r = Rates::load(&p).unwrap();
        assert_eq!(r.get("H100"), Some(2.0));
        assert_eq!(r.get("v100"), Some(0.9));
        std::fs::write(&p, "H100 = \"cheap\"\n").unwrap();
        assert!(Rates::load(&p).unwrap_err().to_string().contains("H100"));
    }
}
