//! What `spotrun status` says of a study, read from the volume alone: the journal replayed under the schedule its
//! `begin` record names, counted per rung (reached, promoted, stopped), with the best trial so far.
use std::path::Path;

use serde::Serialize;

use super::journal::{Decision, Journal};
use super::state::{Phase, StudyState};
use crate::error::Result;
use crate::sweep::error::SweepError;
use crate::sweep::schedule::Schedule;

/// A study at a glance.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    pub scheduler: String,
    pub eta: usize,
    pub min_epochs: usize,
    pub configs: usize,
    pub started: usize,
    pub training: usize,
    pub paused: usize,
    pub stopped: usize,
    pub finished: usize,
    pub failed: usize,
    /// Per rung epoch (all brackets together): (epoch, trials that reached it, trials promoted from it).
    pub rungs: Vec<(usize, usize, usize)>,
    /// The best trial at the highest epoch any trial reached: (trial, run id, epoch, metric).
    pub best: Option<(usize, String, usize, f64)>,
    /// Each trial's (epoch, metric) at the rungs it reached, by trial number.
    pub trials: Vec<Vec<(usize, f64)>>,
    /// PBT: each trial's exploits, (donor, epoch), in order (its lineage).
    pub exploits: Vec<Vec<(usize, usize)>>,
    pub decisions: u64,
}

/// The study of the sweep at `root`, if it has one; `higher_is_better` is the sweep metric's direction.
pub(crate) fn read(root: &Path, higher_is_better: bool) -> Result<Option<Summary>> {
    let journal = Journal::new(root);
    if !journal.exists()? {
        return Ok(None);
    }
    let mut records = Vec::new();
    journal.read_from(0, &mut records)?;
    let bad = |seq: u64, message: String| SweepError::Study { path: journal.path(seq), message };
    let Some(Decision::Begin { scheduler, min_epochs, eta, epochs, configs, .. }) =
        records.first().map(|r| &r.decision)
    else {
        return Err(bad(0, "the first record must be `begin`".into()).into());
    };
    let s = Schedule::from_record(scheduler, *min_epochs, *eta, *epochs)
        .ok_or_else(|| bad(0, format!("unknown scheduler {scheduler:?} or bad rung settings")))?;
    let mut st = StudyState::default();
    let mut promoted = std::collections::BTreeMap::<usize, usize>::new();
    for r in &records {
        st.apply(&r.decision, &s).map_err(|m| bad(r.seq, m))?;
        if let Decision::Promoted { from, .. } = r.decision {
            *promoted.entry(from).or_default() += 1;
        }
    }
    let mut rungs: Vec<usize> = (0..s.brackets()).flat_map(|b| s.rungs(b)).collect();
    rungs.sort_unstable();
    rungs.dedup();
    let reached = |e: usize| st.trials.iter().filter(|t| t.at(e).is_some()).count();
    let phase = |f: fn(&Phase) -> bool| st.trials.iter().filter(|t| f(&t.phase)).count();
    Ok(Some(Summary {
        scheduler: s.name().into(),
        eta: s.eta,
        min_epochs: s.min_epochs,
        configs: *configs,
        started: st.trials.len(),
        training: phase(|p| matches!(p, Phase::Training { .. })),
        paused: phase(|p| matches!(p, Phase::Paused { .. })),
        stopped: phase(|p| matches!(p, Phase::Stopped { .. })),
        finished: phase(|p| matches!(p, Phase::Finished)),
        failed: phase(|p| matches!(p, Phase::Failed)),
        rungs: rungs.iter().map(|&e| (e, reached(e), promoted.get(&e).copied().unwrap_or(0))).collect(),
        best: best(&st, higher_is_better),
        trials: st.trials.iter().map(|t| t.rungs.clone()).collect(),
        exploits: st.trials.iter().map(|t| t.exploits.clone()).collect(),
        decisions: st.applied,
    }))
}

/// The best metric among the trials at the highest epoch any trial reached.
fn best(st: &StudyState, higher_is_better: bool) -> Option<(usize, String, usize, f64)> {
    let top = st.trials.iter().filter_map(|t| t.rungs.last().map(|r| r.0)).max()?;
    let better = |a: f64, b: f64| if higher_is_better { a > b } else { a < b };
    let mut out: Option<(usize, String, usize, f64)> = None;
    for (i, t) in st.trials.iter().enumerate() {
        let Some(m) = t.at(top).filter(|m| m.is_finite()) else { continue };
        if out.as_ref().is_none_or(|o| better(m, o.3)) {
            out = Some((i, t.run.clone(), top, m));
        }
    }
    out
}

impl Summary {
    /// The lines `spotrun status` prints under the runs table.
    pub(crate) fn lines(&self, metric: &str) -> String {
        let settings = match self.scheduler.as_str() {
            "none" => String::new(),
            "pbt" => format!(" (interval {})", self.min_epochs),
            _ => format!(" (eta {}, min_epochs {})", self.eta, self.min_epochs),
        };
        let mut out = format!(
            "study: {}{settings}: {} of {} configs started, {} decisions; {} training, {} paused, {} stopped, {} \
             finished, {} failed\n",
            self.scheduler,
            self.started,
            self.configs,
            self.decisions,
            self.training,
            self.paused,
            self.stopped,
            self.finished,
            self.failed
        );
        let rungs: Vec<String> =
            self.rungs.iter().map(|(e, n, p)| format!("epoch {e}: {n} reached, {p} promoted")).collect();
        out.push_str(&format!("  rungs: {}\n", rungs.join(" | ")));
        if let Some((t, run, e, m)) = &self.best {
            let short = crate::config::short_id(run);
            out.push_str(&format!("  best so far: trial {t} ({short}) {metric} {m:.4} at epoch {e}\n"));
        }
        let n: usize = self.exploits.iter().map(Vec::len).sum();
        if n > 0 {
            let best = self.best.as_ref().map_or(0, |b| b.0);
            let chain: Vec<String> = self
                .exploits
                .get(best)
                .into_iter()
                .flatten()
                .map(|(d, e)| format!("from trial {d} at epoch {e}"))
                .collect();
            let lineage = if chain.is_empty() { "its own".into() } else { chain.join(", then ") };
            out.push_str(&format!(
                "  exploits: {n}; the best trial's lineage: {lineage} (`spotrun replay` retrains it)\n"
            ));
        }
        out
    }
}
