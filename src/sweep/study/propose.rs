//! Where a study's configs come from: the sweep's fixed list (grid, random, list: config `i` is run `i` of the
//! plan), or, for `method = "tpe"`, a proposal by the tree-structured Parzen estimator from the trials so far
//! (their metrics at the highest rung each reached; running trials as the constant liar), deduplicated against
//! the journal: a proposal that resolves to a run the study already has is drawn again, so no config is trained
//! twice. A pure function of the sweep and the study's state, so every worker proposes the same.
use super::journal::Journal;
use super::state::{Phase, StudyState, Trial};
use crate::data::rng::SplitMix64;
use crate::error::Result;
use crate::sweep::error::SweepError;
use crate::sweep::expand::{resolve, PlannedRun};
use crate::sweep::loaded::LoadedSweep;
use crate::sweep::spec::Method;
use crate::sweep::tpe::{self, Direction, PastTrial, TpeSettings, TrialState};

/// How many fresh draws a TPE proposal gets before the search space counts as used up.
const DRAWS: u64 = 64;

/// The next config to start.
pub(super) struct Proposal {
    pub index: usize,
    pub id: String,
    pub overrides: Vec<(String, toml::Value)>,
}

/// How many configs the study starts (`count` for TPE, the plan's runs otherwise).
pub(super) fn configs(ctx: &LoadedSweep) -> usize {
    match ctx.sweep.method {
        Method::Tpe => ctx.sweep.count,
        _ => ctx.runs.len(),
    }
}

/// The config of trial number `st.trials.len()`; None when TPE finds nothing new.
pub(super) fn next(ctx: &LoadedSweep, st: &StudyState) -> Result<Option<Proposal>> {
    let i = st.trials.len();
    if ctx.sweep.method != Method::Tpe {
        let Some(run) = ctx.runs.get(i) else { return Ok(None) };
        return Ok(Some(Proposal { index: i, id: trial_id(ctx, i, &run.id), overrides: run.overrides.clone() }));
    }
    let params = &ctx.sweep.params;
    let past: Vec<PastTrial> = st.trials.iter().map(|t| past_trial(ctx, t)).collect();
    let direction = if ctx.sweep.metric.higher_is_better() { Direction::Maximize } else { Direction::Minimize };
    for draw in 0..DRAWS {
        let seed = SplitMix64::keyed(&[ctx.sweep.seed, i as u64, draw]).next_u64();
        let values = tpe::propose(params, &past, direction, seed, &TpeSettings::default());
        let overrides: Vec<(String, toml::Value)> = params.iter().map(|(k, _)| k.clone()).zip(values).collect();
        let run = resolve(&ctx.sweep, i, overrides)?;
        if !st.trials.iter().any(|t| t.run == run.id) {
            return Ok(Some(Proposal { index: i, id: run.id, overrides: run.overrides }));
        }
    }
    Ok(None)
}

/// A trial as TPE sees it: its values in parameter order, and its metric at the highest rung it reached.
fn past_trial(ctx: &LoadedSweep, t: &Trial) -> PastTrial {
    let value = |k: &str| t.values.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let values = ctx.sweep.params.iter().map(|(k, _)| value(k).unwrap_or(toml::Value::Boolean(false))).collect();
    let latest = t.rungs.last().copied();
    let state = match (t.phase, latest) {
        (Phase::Finished, Some((_, m))) => TrialState::Complete(m),
        (Phase::Paused { .. } | Phase::Stopped { .. }, Some((epoch, value))) => {
            TrialState::Pruned { step: epoch as u64, value }
        }
        (Phase::Training { .. }, _) => TrialState::Running,
        _ => TrialState::Failed,
    };
    PastTrial { values, state }
}

/// A trial's run id: its config's hash, except under PBT, whose trials change hyperparameters on the way and are
/// named by number (`pbt-0003`).
fn trial_id(ctx: &LoadedSweep, i: usize, config_hash: &str) -> String {
    match ctx.sweep.pbt {
        Some(_) => format!("pbt-{i:04}"),
        None => config_hash.to_string(),
    }
}

/// The study's trials as runs of the sweep (TPE and PBT: run `i` is trial `i`, resolved from its recorded values:
/// under PBT, the values since its last exploit).
pub(super) fn trial_runs(ctx: &LoadedSweep, st: &StudyState, journal: &Journal) -> Result<Vec<PlannedRun>> {
    let mut runs = Vec::with_capacity(st.trials.len());
    for (i, t) in st.trials.iter().enumerate() {
        let mut run = resolve(&ctx.sweep, i, t.values.clone())?;
        run.id = trial_id(ctx, i, &run.id);
        if run.id != t.run {
            return Err(SweepError::Study {
                path: journal.path(0),
                message: format!(
                    "trial {i}'s recorded values resolve to run {} here, not the recorded {}: the base config \
                     changed since the study began",
                    crate::config::short_id(&run.id),
                    crate::config::short_id(&t.run)
                ),
            }
            .into());
        }
        runs.push(run);
    }
    Ok(runs)
}
