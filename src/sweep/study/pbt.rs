//! Population-based training's decisions, as pure functions of the study's state (asynchronous, no generations;
//! Jaderberg et al. 2017, as Ray Tune's `PopulationBasedTraining` runs it): every trial pauses at each interval.
//! A trial paused at epoch `e` whose metric there ranks in the bottom `quantile` of the trials that reached `e`
//! **exploits** a trial of the top `quantile` (drawn by a seeded stream): it continues from that trial's checkpoint
//! of epoch `e` with **explored** values; any other continues as it is. The first trials at an interval, with
//! nobody to rank against, continue.
use super::asha::Action;
use super::state::{Phase, StudyState};
use crate::data::rng::SplitMix64;
use crate::sweep::schedule::{PbtSettings, Schedule};
use crate::sweep::spec::Domain;

/// The next action of a PBT study of `configs` trials.
pub(crate) fn decide(st: &StudyState, s: &Schedule, p: &PbtSettings, configs: usize, hib: bool, seed: u64) -> Action {
    // The whole population first, so that its members train side by side.
    if st.trials.len() < configs {
        return Action::Create { bracket: 0 };
    }
    let rungs = s.rungs(0);
    for (i, t) in st.trials.iter().enumerate() {
        let Phase::Paused { at } = t.phase else { continue };
        let Some(k) = rungs.iter().position(|&r| r == at).filter(|k| k + 1 < rungs.len()) else { continue };
        let ranked = super::asha::ranking(st, 0, at, hib);
        let n = ((ranked.len() as f64 * p.quantile).floor() as usize).max(1);
        let (top, bottom) = (&ranked[..n.min(ranked.len())], &ranked[ranked.len().saturating_sub(n)..]);
        if ranked.len() >= 2 && bottom.contains(&i) && !top.contains(&i) {
            let mut rng = SplitMix64::keyed(&[seed, i as u64, at as u64, 0x9b7]);
            let donor = top[rng.below(top.len() as u64) as usize];
            return Action::Exploit { trial: i, donor, epoch: at };
        }
        return Action::Promote { trial: i, from: at, to: rungs[k + 1] };
    }
    if st.trials.iter().any(|t| matches!(t.phase, Phase::Training { .. })) {
        return Action::Wait;
    }
    Action::Complete
}

/// The intervals (epochs of `s`'s rungs) whose kept copies no trial of a population of `configs` can use any more:
/// the population is complete and every trial has reached a later rung or ended (finished, stopped or failed). An
/// exploit at epoch `e` is decided while its recipient is paused at `e` and carried out before it trains on, so a
/// trial past `e` has no exploit of `e` left to do, and no trial can pause at `e` again.
pub(crate) fn obsolete(st: &StudyState, s: &Schedule, configs: usize) -> Vec<usize> {
    if st.trials.len() < configs {
        return Vec::new();
    }
    let rungs = s.rungs(0);
    let intervals = &rungs[..rungs.len().saturating_sub(1)];
    let past = |e: usize| {
        st.trials.iter().all(|t| {
            matches!(t.phase, Phase::Finished | Phase::Stopped { .. } | Phase::Failed)
                || t.rungs.iter().any(|&(r, _)| r > e)
        })
    };
    intervals.iter().copied().filter(|&e| past(e)).collect()
}

/// The donor's values explored (Ray Tune's rules): with probability `resample_probability` a value is drawn
/// afresh from its domain; otherwise a number is multiplied by 0.8 or 1.2 (clipped to its range; integers
/// rounded) and a list value moves to a neighbour. `seed` keys the stream (study seed, trial, epoch).
pub(crate) fn explore(
    donor: &[(String, toml::Value)],
    params: &[(String, Domain)],
    p: &PbtSettings,
    seed: u64,
) -> Vec<(String, toml::Value)> {
    let mut rng = SplitMix64::keyed(&[seed, 0xe71]);
    params
        .iter()
        .map(|(k, d)| {
            let current = donor.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
            let resample = rng.next_f64() < p.resample_probability;
            let up = rng.next_f64() < 0.5;
            let fresh = rng.next_u64();
            let v = match (current, resample) {
                (Some(v), false) => perturb(&v, d, up),
                _ => draw(d, fresh),
            };
            (k.clone(), v)
        })
        .collect()
}

fn perturb(v: &toml::Value, d: &Domain, up: bool) -> toml::Value {
    let f = if up { 1.2 } else { 0.8 };
    match (d, v) {
        (Domain::Values(vs), _) => {
            let i = vs.iter().position(|x| x == v).unwrap_or(0);
            let j = if up { (i + 1).min(vs.len() - 1) } else { i.saturating_sub(1) };
            vs[j].clone()
        }
        (Domain::Uniform(a, b) | Domain::LogUniform(a, b), toml::Value::Float(x)) => {
            toml::Value::Float(crate::sweep::expand::round6((x * f).clamp(*a, *b)))
        }
        (Domain::Int(a, b), toml::Value::Integer(x)) => {
            let y = ((*x as f64) * f).round() as i64;
            toml::Value::Integer(if y == *x { x + if up { 1 } else { -1 } } else { y }.clamp(*a, *b))
        }
        _ => v.clone(),
    }
}

/// A fresh value from `d` (as `method = "random"` draws one).
fn draw(d: &Domain, seed: u64) -> toml::Value {
    crate::sweep::expand::draw(d, &mut SplitMix64::keyed(&[seed]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::sweep::study::journal::Decision;

    /// A begun PBT study of 4 configs, rungs 2, 4, 6, and no trial yet.
    fn begun() -> (Schedule, StudyState) {
        let s = Schedule { kind: crate::sweep::schedule::SchedulerKind::Pbt, min_epochs: 2, eta: 2, epochs: 6 };
        let mut st = StudyState::default();
        let begin = Decision::Begin {
            definition: "d".into(),
            scheduler: "pbt".into(),
            min_epochs: 2,
            eta: 2,
            epochs: 6,
            configs: 4,
        };
        st.apply(&begin, &s).unwrap();
        (s, st)
    }

    fn create(i: usize) -> Decision {
        Decision::Created {
            trial: i,
            index: i,
            run: format!("pbt-{i}"),
            origin: "random".into(),
            bracket: 0,
            values: vec![],
        }
    }

    fn settings() -> PbtSettings {
        PbtSettings { quantile: 0.25, resample_probability: 0.0, keep_copies: false }
    }

    #[test]
    fn the_bottom_quarter_exploits_the_top_and_the_rest_continue() {
        let (s, mut st) = begun();
        assert_eq!(s.rungs(0), vec![2, 4, 6]);
        for i in 0..4 {
            st.apply(&create(i), &s).unwrap();
        }
        assert_eq!(decide(&st, &s, &settings(), 4, true, 1), Action::Wait);
        st.apply(&Decision::Reached { trial: 3, epoch: 2, metric: Some(0.1) }, &s).unwrap();
        assert_eq!(
            decide(&st, &s, &settings(), 4, true, 1),
            Action::Promote { trial: 3, from: 2, to: 4 },
            "alone at 2"
        );
        for (i, m) in [(0, 0.9), (1, 0.5), (2, 0.7)] {
            st.apply(&Decision::Reached { trial: i, epoch: 2, metric: Some(m) }, &s).unwrap();
        }
        // 4 at epoch 2: quarter = 1; trial 3 (0.1) is the bottom, trial 0 (0.9) the top.
        assert_eq!(decide(&st, &s, &settings(), 4, true, 1), Action::Promote { trial: 0, from: 2, to: 4 });
        st.apply(&Decision::Promoted { trial: 0, from: 2, to: 4 }, &s).unwrap();
        st.apply(&Decision::Promoted { trial: 1, from: 2, to: 4 }, &s).unwrap();
        st.apply(&Decision::Promoted { trial: 2, from: 2, to: 4 }, &s).unwrap();
        assert_eq!(decide(&st, &s, &settings(), 4, true, 1), Action::Exploit { trial: 3, donor: 0, epoch: 2 });
        let values = vec![("optim.lr".to_string(), toml::Value::Float(0.01))];
        st.apply(&Decision::Exploited { trial: 3, donor: 0, epoch: 2, values }, &s).unwrap();
        assert_eq!(st.trials[3].phase, Phase::Training { to: 4 });
        assert_eq!(st.trials[3].exploits, vec![(0, 2)]);
        let again = Decision::Exploited { trial: 3, donor: 0, epoch: 2, values: vec![] };
        assert!(st.apply(&again, &s).is_err(), "an exploit is applied once");
    }

    /// Four trials, rungs 2, 4, 6: a copy of epoch 2 is obsolete only once all four are past 2 (or ended), and
    /// not while the population is incomplete.
    #[test]
    fn an_interval_is_obsolete_once_every_trial_is_past_it() {
        let (s, mut st) = begun();
        for i in 0..3 {
            st.apply(&create(i), &s).unwrap();
            st.apply(&Decision::Reached { trial: i, epoch: 2, metric: Some(0.5) }, &s).unwrap();
            st.apply(&Decision::Promoted { trial: i, from: 2, to: 4 }, &s).unwrap();
            st.apply(&Decision::Reached { trial: i, epoch: 4, metric: Some(0.5) }, &s).unwrap();
        }
        assert_eq!(obsolete(&st, &s, 4), Vec::<usize>::new(), "a fourth trial is still to come");
        st.apply(&create(3), &s).unwrap();
        assert_eq!(obsolete(&st, &s, 4), Vec::<usize>::new(), "trial 3 has not paused at 2");
        st.apply(&Decision::Reached { trial: 3, epoch: 2, metric: Some(0.1) }, &s).unwrap();
        st.apply(&Decision::Exploited { trial: 3, donor: 0, epoch: 2, values: vec![] }, &s).unwrap();
        assert_eq!(obsolete(&st, &s, 4), Vec::<usize>::new(), "trial 3's exploit of epoch 2 is still to be copied");
        st.apply(&Decision::Reached { trial: 3, epoch: 4, metric: Some(0.4) }, &s).unwrap();
        assert_eq!(obsolete(&st, &s, 4), vec![2]);
        for i in 0..4 {
            st.apply(&Decision::Promoted { trial: i, from: 4, to: 6 }, &s).unwrap();
        }
        st.apply(&Decision::Finished { trial: 0, epoch: 6, metric: Some(0.6) }, &s).unwrap();
        // Promoted past 4 but not yet at 6: counted as not past 4 (conservative: an exploit of 4 would look alike).
        assert_eq!(obsolete(&st, &s, 4), vec![2]);
        for i in 1..4 {
            st.apply(&Decision::Finished { trial: i, epoch: 6, metric: Some(0.6) }, &s).unwrap();
        }
        assert_eq!(obsolete(&st, &s, 4), vec![2, 4], "every trial ended");
    }

    #[test]
    fn explore_perturbs_by_a_fifth_within_the_domain_and_moves_list_values_to_a_neighbour() {
        let params = vec![
            ("optim.lr".to_string(), Domain::LogUniform(1e-4, 1e-1)),
            ("model.dropout".to_string(), Domain::Values(vec![0.0.into(), 0.1.into(), 0.2.into()])),
        ];
        let donor = vec![("optim.lr".to_string(), 0.01.into()), ("model.dropout".to_string(), 0.1.into())];
        for seed in 0..50 {
            let v = explore(&donor, &params, &settings(), seed);
            let lr = v[0].1.as_float().unwrap();
            assert!((lr - 0.008).abs() < 1e-12 || (lr - 0.012).abs() < 1e-12, "{lr}");
            let dropout = v[1].1.as_float().unwrap();
            assert!(dropout == 0.0 || dropout == 0.2, "{dropout}");
        }
        let edge = vec![("optim.lr".to_string(), 0.1.into()), ("model.dropout".to_string(), 0.2.into())];
        let v = explore(&edge, &params, &settings(), 3);
        assert!(v[0].1.as_float().unwrap() <= 0.1, "clipped to the range");
        let all = PbtSettings { quantile: 0.25, resample_probability: 1.0, keep_copies: false };
        assert_eq!(explore(&donor, &params, &all, 7), explore(&donor, &params, &all, 7), "seeded");
    }
}
