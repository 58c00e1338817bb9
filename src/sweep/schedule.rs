//! `scheduler = "asha" | "hyperband" | "pbt"` in a sweep file: the settings, checked ([`SchedulerKeys::check`]),
//! and the rung ladders they give (pure).
//!
//! A rung is an epoch count at which a trial pauses to be ranked: `min_epochs · eta^k` below `train.epochs`, and
//! `train.epochs` itself as the last rung. Hyperband runs `floor(log_eta(train.epochs / min_epochs)) + 1` brackets,
//! bracket `b` an asynchronous ASHA whose first rung is `min_epochs · eta^b`; configs go to brackets round-robin.
//! Imports nothing of the sweep but its error type.
use serde::Deserialize;

/// Which adaptive scheduler decides how far each trial trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerKind {
    /// Asynchronous successive halving (Li et al., MLSys 2020), with paused trials promoted from checkpoints.
    Asha,
    /// Several ASHA brackets with different first rungs.
    Hyperband,
    /// No early stop: every trial trains to `train.epochs` (`method = "tpe"` without a scheduler).
    None,
    /// Population-based training: every trial pauses every `interval` epochs (kept here as `min_epochs`), where
    /// one in the bottom quantile copies a top trial's checkpoint and explores new hyperparameters.
    Pbt,
}

/// `scheduler = "pbt"`'s settings beyond its interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PbtSettings {
    /// The share of the trials at an interval that exploits (bottom) and is exploited (top); default 0.25.
    pub quantile: f64,
    /// The chance that an explored value is drawn afresh from its domain instead of perturbed; default 0.25.
    pub resample_probability: f64,
    /// Keep every interval copy and every set of checkpoints an exploit replaced (default: deleted once no trial
    /// can use them, see `study::pbt::obsolete`).
    pub keep_copies: bool,
}

/// The per-run keys PBT may explore: hyperparameters that change nothing about the weights' shapes or the data.
pub(crate) const EXPLORABLE: [&str; 6] =
    ["optim.lr", "optim.weight_decay", "optim.momentum", "optim.betas", "optim.grad_clip", "model.dropout"];

/// A checked `scheduler` with its `min_epochs` and `eta`, for a base config of `epochs` epochs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub kind: SchedulerKind,
    pub min_epochs: usize,
    pub eta: usize,
    /// `train.epochs` of every run (a scheduled sweep cannot sweep it).
    pub epochs: usize,
}

impl Schedule {
    /// Checks the settings; `Err((key, message))` names the sweep key at fault.
    pub fn new(
        kind: SchedulerKind,
        min_epochs: Option<usize>,
        eta: Option<usize>,
        epochs: usize,
    ) -> Result<Schedule, (&'static str, String)> {
        let (min_epochs, eta) = (min_epochs.unwrap_or(1), eta.unwrap_or(3));
        if eta < 2 {
            return Err(("eta", format!("eta = {eta}: the reduction factor must be at least 2 (3 is the usual)")));
        }
        if min_epochs == 0 || min_epochs > epochs {
            let m = format!("min_epochs = {min_epochs} must be between 1 and train.epochs ({epochs})");
            return Err(("min_epochs", m));
        }
        Ok(Schedule { kind, min_epochs, eta, epochs })
    }

    /// How many brackets: 1 for ASHA, `floor(log_eta(epochs / min_epochs)) + 1` for Hyperband.
    pub fn brackets(&self) -> usize {
        match self.kind {
            SchedulerKind::Asha | SchedulerKind::None | SchedulerKind::Pbt => 1,
            // The k with min_epochs · eta^k <= epochs.
            SchedulerKind::Hyperband => std::iter::successors(Some(self.min_epochs), |e| e.checked_mul(self.eta))
                .take_while(|&e| e <= self.epochs)
                .count(),
        }
    }

    /// The bracket of the `i`-th config (round-robin).
    pub fn bracket_of(&self, i: usize) -> usize {
        i % self.brackets()
    }

    /// Bracket `b`'s rungs, in epochs, ascending; the last is always `epochs`.
    pub fn rungs(&self, bracket: usize) -> Vec<usize> {
        if self.kind == SchedulerKind::None {
            return vec![self.epochs];
        }
        if self.kind == SchedulerKind::Pbt {
            let every = self.min_epochs.max(1);
            let mut r: Vec<usize> = (1..).map(|k| k * every).take_while(|&e| e < self.epochs).collect();
            r.push(self.epochs);
            return r;
        }
        let first = (0..bracket).fold(self.min_epochs, |e, _| e.saturating_mul(self.eta));
        let mut r = self.ladder_from(first);
        r.push(self.epochs);
        r
    }

    /// The epochs each of `configs` configs trains under this schedule, as synchronous successive halving spends
    /// them (what ASHA approaches once its rungs close): in each bracket (configs dealt round-robin), all reach the
    /// first rung, and `max(1, floor(n / eta^k))` of them rung `k`. Sorted, most first. What `estimate` prices.
    pub fn budget(&self, configs: usize) -> Vec<usize> {
        if self.kind == SchedulerKind::Pbt {
            return vec![self.epochs; configs];
        }
        let mut out = Vec::with_capacity(configs);
        for b in 0..self.brackets() {
            let n = (0..configs).filter(|&i| self.bracket_of(i) == b).count();
            let rungs = self.rungs(b);
            for rank in 0..n {
                let mut reached = rungs[0];
                let mut survivors = n;
                for &r in &rungs[1..] {
                    survivors = (survivors / self.eta).max(1);
                    if rank >= survivors {
                        break;
                    }
                    reached = r;
                }
                out.push(reached);
            }
        }
        out.sort_unstable_by(|a, b| b.cmp(a));
        out
    }

    /// `first · eta^k` below `epochs`.
    fn ladder_from(&self, first: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut e = first;
        while e < self.epochs {
            out.push(e);
            e = e.saturating_mul(self.eta);
        }
        out
    }

    /// The schedule a study's `begin` record names (`scheduler` as [`Schedule::name`] spells it).
    pub fn from_record(scheduler: &str, min_epochs: usize, eta: usize, epochs: usize) -> Option<Schedule> {
        let kind = match scheduler {
            "asha" => SchedulerKind::Asha,
            "hyperband" => SchedulerKind::Hyperband,
            "none" => SchedulerKind::None,
            "pbt" => SchedulerKind::Pbt,
            _ => return None,
        };
        let s = Schedule::new(kind, Some(min_epochs), Some(eta), epochs).ok()?;
        Some(s)
    }

    /// `asha`, `hyperband` or `none`.
    pub fn name(&self) -> &'static str {
        match self.kind {
            SchedulerKind::Asha => "asha",
            SchedulerKind::Hyperband => "hyperband",
            SchedulerKind::None => "none",
            SchedulerKind::Pbt => "pbt",
        }
    }
}

/// A sweep file's scheduler keys, as written (checked by [`SchedulerKeys::check`]).
#[derive(Debug, Clone, Default)]
pub(super) struct SchedulerKeys {
    pub scheduler: Option<SchedulerKind>,
    pub min_epochs: Option<usize>,
    pub eta: Option<usize>,
    pub interval: Option<usize>,
    pub quantile: Option<f64>,
    pub resample_probability: Option<f64>,
    pub keep_copies: Option<bool>,
}

/// What the scheduler checks read of the rest of the sweep file.
pub(super) struct Around<'a> {
    /// `method = "tpe"`.
    pub tpe: bool,
    /// Replicate `seeds` given.
    pub seeds: bool,
    /// A `[pruning]` table.
    pub pruning: bool,
    /// The keys under `[parameters]`.
    pub swept: &'a [&'a str],
    /// Whether `train.epochs` is swept (in `[parameters]` or a `[[runs]]` entry).
    pub epochs_swept: bool,
    /// The base config's `train.epochs`.
    pub epochs: usize,
}

impl SchedulerKeys {
    /// The schedule (`None` for a sweep without one) and, for PBT, its settings; `Err((key, message))`.
    pub(super) fn check(&self, sweep: &Around) -> Result<(Option<Schedule>, Option<PbtSettings>), (String, String)> {
        let schedule = self.schedule(sweep).map_err(|(k, m)| (k.to_string(), m))?;
        Ok((schedule, self.pbt(sweep, schedule)?))
    }

    /// `scheduler`, `min_epochs`, `eta`, `interval`: checked against the base's `train.epochs` (which the sweep
    /// cannot vary, since every rung is counted in it), and against `[pruning]` (a scheduler replaces it).
    fn schedule(&self, sweep: &Around) -> Result<Option<Schedule>, (&'static str, String)> {
        let epochs = sweep.epochs;
        let Some(kind) = self.scheduler else {
            if self.min_epochs.is_some() || self.eta.is_some() {
                let key = if self.eta.is_some() { "eta" } else { "min_epochs" };
                return Err((key, format!("{key} needs a scheduler (scheduler = \"asha\" or \"hyperband\")")));
            }
            // TPE runs through the study too: every trial trained to train.epochs.
            if sweep.tpe {
                return Schedule::new(SchedulerKind::None, Some(epochs), None, epochs).map(Some);
            }
            return Ok(None);
        };
        if sweep.pruning {
            return Err(("pruning", "a sweep with a scheduler is pruned by its rungs; remove [pruning]".into()));
        }
        if sweep.epochs_swept {
            let m = "a scheduled sweep cannot vary train.epochs (its rungs count epochs of one schedule)";
            return Err(("scheduler", m.into()));
        }
        if kind == SchedulerKind::Pbt {
            if self.min_epochs.is_some() || self.eta.is_some() {
                let key = if self.eta.is_some() { "eta" } else { "min_epochs" };
                return Err((key, "PBT pauses every `interval` epochs; eta and min_epochs are ASHA's".into()));
            }
            let every = self.interval.unwrap_or(1);
            if every == 0 || every >= epochs {
                return Err((
                    "interval",
                    format!("interval = {every} must be at least 1 and below train.epochs ({epochs})"),
                ));
            }
            return Ok(Some(Schedule { kind, min_epochs: every, eta: 2, epochs }));
        }
        if self.interval.is_some() {
            return Err(("interval", "interval is PBT's (scheduler = \"pbt\")".into()));
        }
        Schedule::new(kind, self.min_epochs, self.eta, epochs).map(Some)
    }

    /// `scheduler = "pbt"`: random/grid/list configs without replicate seeds, only explorable keys swept, and its
    /// quantile and resampling probability in range; PBT's own keys refused without it.
    fn pbt(&self, sweep: &Around, s: Option<Schedule>) -> Result<Option<PbtSettings>, (String, String)> {
        if s.is_none_or(|s| s.kind != SchedulerKind::Pbt) {
            let key = match (self.quantile, self.resample_probability, self.keep_copies) {
                (Some(_), _, _) => "quantile",
                (None, Some(_), _) => "resample_probability",
                (None, None, Some(_)) => "keep_copies",
                (None, None, None) => return Ok(None),
            };
            return Err((key.into(), format!("{key} is PBT's (scheduler = \"pbt\")")));
        }
        if sweep.tpe || sweep.seeds {
            let key = if sweep.tpe { "method" } else { "seeds" };
            return Err((
                key.into(),
                "PBT's population is the sweep's configs (method random, grid or list, no seeds)".into(),
            ));
        }
        if sweep.swept.is_empty() {
            return Err(("parameters".into(), format!("PBT needs a key to explore: one of {}", EXPLORABLE.join(", "))));
        }
        if let Some(k) = sweep.swept.iter().find(|k| !EXPLORABLE.contains(k)) {
            return Err((
                format!("parameters.\"{k}\""),
                format!(
                    "PBT changes a trial's hyperparameters mid-run; only per-run ones can change ({}), not the \
                     architecture, the batch size or the data",
                    EXPLORABLE.join(", ")
                ),
            ));
        }
        let unit = |key: &str, v: Option<f64>, d: f64, hi: f64| match v.unwrap_or(d) {
            x if x > 0.0 && x <= hi => Ok(x),
            x => Err((key.to_string(), format!("{key} = {x} must be in (0, {hi}]"))),
        };
        let quantile = unit("quantile", self.quantile, 0.25, 0.5)?;
        let resample = match self.resample_probability {
            Some(0.0) => 0.0,
            v => unit("resample_probability", v, 0.25, 1.0)?,
        };
        Ok(Some(PbtSettings {
            quantile,
            resample_probability: resample,
            keep_copies: self.keep_copies.unwrap_or(false),
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn s(kind: SchedulerKind, min: usize, eta: usize, epochs: usize) -> Schedule {
        Schedule::new(kind, Some(min), Some(eta), epochs).unwrap()
    }

    #[test]
    fn asha_rungs_are_min_times_powers_of_eta_then_the_last_epoch() {
        assert_eq!(s(SchedulerKind::Asha, 1, 3, 27).rungs(0), vec![1, 3, 9, 27]);
        assert_eq!(s(SchedulerKind::Asha, 1, 3, 10).rungs(0), vec![1, 3, 9, 10], "10 is not on the ladder");
        assert_eq!(s(SchedulerKind::Asha, 2, 2, 9).rungs(0), vec![2, 4, 8, 9]);
        assert_eq!(s(SchedulerKind::Asha, 5, 3, 5).rungs(0), vec![5], "min_epochs = epochs: one rung");
        assert_eq!(s(SchedulerKind::Asha, 1, 3, 10).brackets(), 1);
    }

    #[test]
    fn hyperband_has_floor_log_eta_plus_one_brackets_each_starting_higher() {
        let h = s(SchedulerKind::Hyperband, 1, 3, 27);
        assert_eq!(h.brackets(), 4, "floor(log3(27)) + 1");
        assert_eq!(h.rungs(0), vec![1, 3, 9, 27]);
        assert_eq!(h.rungs(1), vec![3, 9, 27]);
        assert_eq!(h.rungs(3), vec![27]);
        assert_eq!(s(SchedulerKind::Hyperband, 1, 3, 10).brackets(), 3, "floor(log3(10)) + 1");
        assert_eq!((0..7).map(|i| h.bracket_of(i)).collect::<Vec<_>>(), vec![0, 1, 2, 3, 0, 1, 2]);
    }

    #[test]
    fn the_budget_is_successive_halvings() {
        let a = s(SchedulerKind::Asha, 1, 3, 9);
        assert_eq!(a.budget(9), vec![9, 3, 3, 1, 1, 1, 1, 1, 1], "9 at rung 1, 3 at rung 3, 1 at 9");
        assert_eq!(a.budget(9).iter().sum::<usize>(), 21, "of the 81 a full search spends");
        assert_eq!(a.budget(2), vec![9, 1], "at least one config trains to the end");
        let none = Schedule::new(SchedulerKind::None, Some(5), None, 5).unwrap();
        assert_eq!(none.budget(3), vec![5, 5, 5]);
        let h = s(SchedulerKind::Hyperband, 1, 3, 9);
        assert_eq!(h.budget(6), vec![9, 9, 9, 9, 3, 1], "brackets [1,3,9], [3,9], [9], 2 configs each: 9+1, 9+3, 9+9");
    }

    #[test]
    fn bad_settings_name_their_key() {
        assert_eq!(Schedule::new(SchedulerKind::Asha, None, Some(1), 9).unwrap_err().0, "eta");
        assert_eq!(Schedule::new(SchedulerKind::Asha, Some(10), None, 9).unwrap_err().0, "min_epochs");
        assert_eq!(Schedule::new(SchedulerKind::Asha, Some(0), None, 9).unwrap_err().0, "min_epochs");
        let d = Schedule::new(SchedulerKind::Asha, None, None, 9).unwrap();
        assert_eq!((d.min_epochs, d.eta), (1, 3), "the defaults");
    }
}
