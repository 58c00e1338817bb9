//! ASHA's decisions, as a pure function of the study's state: promote a paused trial that ranks in the top 1/eta
//! of its rung (asynchronously: as soon as it does, highest rung first), else start the next config, else stop
//! the paused trials of rungs that are closed, else wait for trials in training, else the study is complete.
//!
//! A rung is **closed** when no trial can still reach it: every config has started, the rung below is closed,
//! no trial is training towards it and none is paused below it. Then its ranking is final: the top
//! `max(1, floor(n / eta))` are promoted (at least one, so every bracket trains a config to the end), the rest
//! stopped. Hyperband is the same per bracket. Ties rank by trial number; a metric that is not a number ranks last.
use super::state::{Phase, StudyState, Trial};
use crate::sweep::schedule::Schedule;

/// What the study needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Promote {
        trial: usize,
        from: usize,
        to: usize,
    },
    /// Start config number `trials.len()` (in bracket `bracket`).
    Create {
        bracket: usize,
    },
    /// PBT: the paused `trial` continues from `donor`'s checkpoint of `epoch`, with explored values.
    Exploit {
        trial: usize,
        donor: usize,
        epoch: usize,
    },
    Stop {
        trial: usize,
        epoch: usize,
    },
    /// Trials are training (or waiting for a free worker to resume them); nothing to decide until one pauses.
    Wait,
    Complete,
}

/// The next action for a study of `configs` configs; `higher_is_better` is the metric's direction.
pub(crate) fn decide(st: &StudyState, s: &Schedule, configs: usize, higher_is_better: bool) -> Action {
    let all_created = st.trials.len() >= configs;
    for b in 0..s.brackets() {
        if let Some(a) = promotion(st, s, b, all_created, higher_is_better) {
            return a;
        }
    }
    if !all_created {
        return Action::Create { bracket: s.bracket_of(st.trials.len()) };
    }
    for b in 0..s.brackets() {
        if let Some(a) = stop(st, s, b, higher_is_better) {
            return a;
        }
    }
    if st.trials.iter().any(|t| matches!(t.phase, Phase::Training { .. } | Phase::Paused { .. })) {
        return Action::Wait;
    }
    Action::Complete
}

/// Bracket `b`'s highest promotable paused trial, rungs from the top down.
fn promotion(st: &StudyState, s: &Schedule, b: usize, all_created: bool, hib: bool) -> Option<Action> {
    let rungs = s.rungs(b);
    let closed = closed_rungs(st, s, b, all_created);
    for k in (0..rungs.len().saturating_sub(1)).rev() {
        let ranked = ranking(st, b, rungs[k], hib);
        let quota = quota(ranked.len(), s.eta, k < closed);
        let up = ranked.iter().take(quota).find(|&&i| st.trials[i].phase == Phase::Paused { at: rungs[k] });
        if let Some(&trial) = up {
            return Some(Action::Promote { trial, from: rungs[k], to: rungs[k + 1] });
        }
    }
    None
}

/// A paused trial of a closed rung of bracket `b` that did not make its rung's quota.
fn stop(st: &StudyState, s: &Schedule, b: usize, hib: bool) -> Option<Action> {
    let rungs = s.rungs(b);
    let closed = closed_rungs(st, s, b, true);
    for &epoch in rungs.iter().take(closed.min(rungs.len().saturating_sub(1))) {
        let ranked = ranking(st, b, epoch, hib);
        let quota = quota(ranked.len(), s.eta, true);
        let out = ranked.iter().skip(quota).find(|&&i| st.trials[i].phase == Phase::Paused { at: epoch });
        if let Some(&trial) = out {
            return Some(Action::Stop { trial, epoch });
        }
    }
    None
}

/// How many of bracket `b`'s rungs, from the bottom, are closed.
fn closed_rungs(st: &StudyState, s: &Schedule, b: usize, all_created: bool) -> usize {
    if !all_created {
        return 0;
    }
    let members: Vec<&Trial> = st.trials.iter().filter(|t| t.bracket == b).collect();
    let rungs = s.rungs(b);
    let mut closed = 0;
    for &epoch in &rungs {
        let open = members.iter().any(|t| match t.phase {
            Phase::Training { to } => to <= epoch,
            Phase::Paused { at } => at < epoch,
            _ => false,
        });
        if open {
            break;
        }
        closed += 1;
    }
    closed
}

/// Bracket `b`'s trials that reached rung `epoch`, best first (ties by trial number, NaN last).
pub(super) fn ranking(st: &StudyState, b: usize, epoch: usize, higher_is_better: bool) -> Vec<usize> {
    let mut r: Vec<(usize, f64)> = st
        .trials
        .iter()
        .enumerate()
        // A trial that failed for good is out of the rankings (its rungs before the failure too).
        .filter(|(_, t)| t.bracket == b && t.phase != Phase::Failed)
        .filter_map(|(i, t)| t.at(epoch).map(|m| (i, m)))
        .collect();
    let key = |m: f64| if higher_is_better { -m } else { m };
    r.sort_by(|a, b| match (a.1.is_nan(), b.1.is_nan()) {
        (false, false) => key(a.1).total_cmp(&key(b.1)).then(a.0.cmp(&b.0)),
        (x, y) => x.cmp(&y).then(a.0.cmp(&b.0)),
    });
    r.into_iter().map(|(i, _)| i).collect()
}

/// How many of `n` ranked trials a rung promotes: `floor(n / eta)`, at least one once the rung is closed.
fn quota(n: usize, eta: usize, closed: bool) -> usize {
    let q = n / eta;
    if closed {
        q.max(1).min(n)
    } else {
        q
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::sweep::schedule::SchedulerKind;
    use crate::sweep::study::journal::Decision;

    /// Runs a study to completion with one worker that trains whatever is training, lowest trial first: config
    /// `i` has the metric `quality(i) + epoch / 100` at every epoch (higher is better). Returns the decisions.
    fn simulate(s: &Schedule, configs: usize, quality: impl Fn(usize) -> f64) -> (StudyState, Vec<Decision>) {
        let mut st = StudyState::default();
        let mut log = vec![Decision::Begin {
            definition: "d".into(),
            scheduler: s.name().into(),
            min_epochs: 1,
            eta: 3,
            epochs: 9,
            configs,
        }];
        st.apply(&log[0], s).unwrap();
        for _ in 0..10_000 {
            let d = match decide(&st, s, configs, true) {
                Action::Complete => return (st, log),
                Action::Create { bracket } => {
                    let i = st.trials.len();
                    let run = format!("run{i}");
                    Decision::Created { trial: i, index: i, run, origin: "grid".into(), bracket, values: vec![] }
                }
                Action::Promote { trial, from, to } => Decision::Promoted { trial, from, to },
                Action::Stop { trial, epoch } => Decision::Stopped { trial, epoch },
                Action::Exploit { .. } => unreachable!("ASHA never exploits"),
                Action::Wait => {
                    let (i, to) = st
                        .trials
                        .iter()
                        .enumerate()
                        .find_map(|(i, t)| match t.phase {
                            Phase::Training { to } => Some((i, to)),
                            _ => None,
                        })
                        .expect("waiting with nothing in training");
                    let metric = Some(quality(st.trials[i].index) + to as f64 / 100.0);
                    if to == s.epochs {
                        Decision::Finished { trial: i, epoch: to, metric }
                    } else {
                        Decision::Reached { trial: i, epoch: to, metric }
                    }
                }
            };
            st.apply(&d, s).unwrap();
            log.push(d);
        }
        panic!("the study never completed");
    }

    fn epochs_spent(st: &StudyState) -> usize {
        st.trials.iter().map(|t| t.rungs.last().map_or(0, |r| r.0)).sum()
    }

    #[test]
    fn asha_starts_every_config_once_and_trains_the_best_to_the_end_on_a_fraction_of_the_epochs() {
        let s = Schedule::new(SchedulerKind::Asha, Some(1), Some(3), 9).unwrap();
        // Config 5 is the best, 2 the second best.
        let quality = |i: usize| [0.1, 0.3, 0.8, 0.2, 0.4, 0.9, 0.0, 0.5, 0.6][i];
        let (st, log) = simulate(&s, 9, quality);
        let created: Vec<usize> = st.trials.iter().map(|t| t.index).collect();
        assert_eq!(created, (0..9).collect::<Vec<_>>(), "each config once, in order");
        assert_eq!(st.trials[5].phase, Phase::Finished, "the best config reaches the last rung");
        assert!(st.trials.iter().all(|t| matches!(t.phase, Phase::Finished | Phase::Stopped { .. })));
        let spent = epochs_spent(&st);
        assert!(spent < 9 * 9 / 2, "ASHA spent {spent} of the {} epochs a full search spends", 9 * 9);
        let promoted = log.iter().filter(|d| matches!(d, Decision::Promoted { .. })).count();
        let stopped = log.iter().filter(|d| matches!(d, Decision::Stopped { .. })).count();
        assert!(promoted >= 4, "at least 9/3 to rung 3, and 1 to the end; got {promoted}");
        assert_eq!(stopped, st.trials.iter().filter(|t| matches!(t.phase, Phase::Stopped { .. })).count());
    }

    #[test]
    fn the_same_records_give_the_same_decisions() {
        let s = Schedule::new(SchedulerKind::Hyperband, Some(1), Some(3), 9).unwrap();
        let q = |i: usize| ((i * 7919) % 13) as f64 / 13.0;
        let (a, log_a) = simulate(&s, 12, q);
        let (b, log_b) = simulate(&s, 12, q);
        assert_eq!(log_a, log_b);
        assert_eq!(a, b);
        assert_eq!(a.trials.iter().map(|t| t.bracket).collect::<Vec<_>>(), (0..12).map(|i| i % 3).collect::<Vec<_>>());
        for b in 0..3 {
            let best = a.trials.iter().filter(|t| t.bracket == b).map(|t| t.phase).filter(|p| *p == Phase::Finished);
            assert!(best.count() >= 1, "bracket {b} trains at least one config to the end");
        }
    }

    /// An ASHA study (rungs 1, 3, 9) begun for 9 configs, with trials `0..metrics.len()` created and each
    /// reached rung 1 with its metric.
    fn at_rung_one(metrics: &[f64]) -> (Schedule, StudyState) {
        let s = Schedule::new(SchedulerKind::Asha, Some(1), Some(3), 9).unwrap();
        let mut st = StudyState::default();
        let begin = Decision::Begin {
            definition: "d".into(),
            scheduler: "asha".into(),
            min_epochs: 1,
            eta: 3,
            epochs: 9,
            configs: 9,
        };
        st.apply(&begin, &s).unwrap();
        for (i, m) in metrics.iter().enumerate() {
            st.apply(&created(i), &s).unwrap();
            st.apply(&Decision::Reached { trial: i, epoch: 1, metric: Some(*m) }, &s).unwrap();
        }
        (s, st)
    }

    fn created(i: usize) -> Decision {
        Decision::Created {
            trial: i,
            index: i,
            run: format!("r{i}"),
            origin: "grid".into(),
            bracket: 0,
            values: vec![],
        }
    }

    #[test]
    fn a_rung_promotes_as_soon_as_a_trial_ranks_in_its_top_third() {
        let (s, mut st) = at_rung_one(&[]);
        for (i, m) in [0.5, 0.9, 0.1].iter().enumerate() {
            st.apply(&created(i), &s).unwrap();
            if i < 2 {
                assert_eq!(decide(&st, &s, 9, true), Action::Create { bracket: 0 }, "fewer than 3 at rung 1");
            }
            st.apply(&Decision::Reached { trial: i, epoch: 1, metric: Some(*m) }, &s).unwrap();
        }
        assert_eq!(decide(&st, &s, 9, true), Action::Promote { trial: 1, from: 1, to: 3 }, "0.9 is the top third");
        assert_eq!(decide(&st, &s, 9, false), Action::Promote { trial: 2, from: 1, to: 3 }, "lower is better");
    }

    #[test]
    fn a_trial_that_failed_for_good_leaves_the_rankings() {
        let (s, mut st) = at_rung_one(&[0.9, 0.5, 0.1]);
        assert_eq!(ranking(&st, 0, 1, true), vec![0, 1, 2]);
        st.apply(&Decision::Promoted { trial: 0, from: 1, to: 3 }, &s).unwrap();
        st.apply(&Decision::Failed { trial: 0 }, &s).unwrap();
        assert_eq!(ranking(&st, 0, 1, true), vec![1, 2], "the failed trial no longer counts");
    }

    #[test]
    fn records_that_do_not_follow_are_refused() {
        let s = Schedule::new(SchedulerKind::Asha, Some(1), Some(3), 9).unwrap();
        let mut st = StudyState::default();
        let reached = Decision::Reached { trial: 0, epoch: 1, metric: Some(0.5) };
        assert!(st.apply(&reached, &s).is_err(), "begin first");
        st.apply(
            &Decision::Begin {
                definition: "d".into(),
                scheduler: "asha".into(),
                min_epochs: 1,
                eta: 3,
                epochs: 9,
                configs: 2,
            },
            &s,
        )
        .unwrap();
        assert!(st.apply(&reached, &s).unwrap_err().contains("never created"));
        let c0 = Decision::Created {
            trial: 0,
            index: 0,
            run: "r".into(),
            origin: "grid".into(),
            bracket: 0,
            values: vec![],
        };
        st.apply(&c0, &s).unwrap();
        let again = Decision::Created {
            trial: 1,
            index: 0,
            run: "r".into(),
            origin: "grid".into(),
            bracket: 0,
            values: vec![],
        };
        assert!(st.apply(&again, &s).unwrap_err().contains("again"), "the same run twice");
        assert!(st.apply(&Decision::Reached { trial: 0, epoch: 3, metric: None }, &s).is_err(), "not its rung");
        st.apply(&reached, &s).unwrap();
        assert!(st.apply(&reached, &s).unwrap_err().contains("does not follow"), "reached twice");
        let up = Decision::Promoted { trial: 0, from: 1, to: 3 };
        st.apply(&up, &s).unwrap();
        assert!(st.apply(&up, &s).is_err(), "promoted twice");
        assert!(st.apply(&Decision::Promoted { trial: 0, from: 3, to: 9 }, &s).is_err(), "not paused");
    }
}
