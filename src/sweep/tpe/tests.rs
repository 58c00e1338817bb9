//! The TPE estimator's tests: gamma, weights and Parzen densities against Optuna's, startup trials, proposals near an
//! optimum, the constant liar, seeds, domains, and which past trials count.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use toml::Value;

fn lr_param() -> Vec<(String, Domain)> {
    vec![("optim.lr".into(), Domain::LogUniform(1e-5, 1e-1))]
}

/// Distance of a proposed lr from the optimum 1e-3, in decades.
fn decades_off(v: &Value) -> f64 {
    (v.as_float().unwrap().log10() + 3.0).abs()
}

fn complete(values: Vec<Value>, metric: f64) -> PastTrial {
    PastTrial { values, state: TrialState::Complete(metric) }
}

/// `n` sequential trials of `objective`, each proposal seeded by (study seed, trial number).
fn study(
    params: &[(String, Domain)],
    objective: impl Fn(&[Value]) -> f64,
    n: u64,
    seed: u64,
    settings: &TpeSettings,
) -> Vec<PastTrial> {
    let mut past = Vec::new();
    for t in 0..n {
        let values = propose(params, &past, Direction::Minimize, seed << 20 | t, settings);
        let metric = objective(&values);
        past.push(complete(values, metric));
    }
    past
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-10 * b.abs().max(1.0)
}

#[test]
fn gamma_is_optunas() {
    // python: [min(math.ceil(0.1 * x), 25) for x in [0, 1, 9, 10, 11, 29, 30, 70, 100, 240, 250, 251, 1000]]
    let n = [0, 1, 9, 10, 11, 29, 30, 70, 100, 240, 250, 251, 1000];
    let optuna = [0, 1, 1, 1, 2, 3, 3, 7, 10, 24, 25, 25, 25];
    assert_eq!(n.map(gamma), optuna);
}

#[test]
fn weights_are_optunas() {
    assert_eq!(default_weights(0), Vec::<f64>::new());
    assert_eq!(default_weights(24), vec![1.0; 24]);
    assert_eq!(default_weights(25), vec![1.0; 25]);
    // numpy: np.linspace(1.0 / n, 1.0, num=n - 25) for n = 26, 27, 30, 40 (the ramp before the 25 ones)
    let ramps: [(usize, &[f64]); 4] = [
        (26, &[0.038461538461538464]),
        (27, &[0.037037037037037035, 1.0]),
        (30, &[0.03333333333333333, 0.275, 0.5166666666666667, 0.7583333333333333, 1.0]),
        (40, &[0.025, 0.09464285714285714, 0.16428571428571428, 0.23392857142857143, 0.3035714285714286]),
    ];
    for (n, ramp) in ramps {
        let w = default_weights(n);
        assert_eq!(w.len(), n);
        assert!(w[n - 25..].iter().all(|&x| x == 1.0), "n={n}");
        for (i, &r) in ramp.iter().enumerate() {
            assert!(close(w[i], r), "n={n} i={i}: {} vs numpy {r}", w[i]);
        }
    }
}

#[test]
fn gauss_mass_is_optunas_in_both_tails() {
    // optuna.samplers._tpe._truncnorm._log_gauss_mass(a, b)
    let cases = [
        (-40.0, -30.0, -454.32124395634315),
        (-25.0, -21.0, -224.46571583141449),
        (-3.0, -2.0, -3.8443534263342047),
        (-1.0, 2.0, -0.20016629432446262),
        (0.5, 1.5, -1.4199324821566266),
        (7.0, 9.0, -27.384307586994964),
        (30.0, 35.0, -454.32124395634315),
    ];
    for (a, b, optuna) in cases {
        let ours = log_gauss_mass(a, b);
        assert!(close(ours, optuna), "[{a}, {b}]: {ours} vs optuna {optuna}");
    }
}

/// log l(x) of one estimator against Optuna's `_ParzenEstimator(...).log_pdf` (prior_weight 1, magic clip, no
/// endpoints, default_weights) at the same points, given in the estimator's space.
#[track_caller]
fn assert_log_pdf(space: Space, observed: &[f64], points: &[f64], optuna: &[f64]) {
    let observed: Vec<Vec<f64>> = observed.iter().map(|&o| vec![o]).collect();
    let pe = Parzen::new(&[space], &observed, &TpeSettings::default());
    for (x, want) in points.iter().zip(optuna) {
        let got = pe.log_pdf(&[*x]);
        assert!(close(got, *want), "x={x}: {got} vs optuna {want}");
    }
}

#[test]
fn parzen_estimators_are_optunas() {
    let ln = |v: &[f64]| v.iter().map(|x| x.ln()).collect::<Vec<_>>();
    let log = Space::of(&Domain::LogUniform(1e-5, 1e-1));
    let log_want =
        [-2.6657259292596063, -2.324502333502774, -1.8840536275327004, -2.2080830274716234, -2.6489656678637603];
    assert_log_pdf(log, &ln(&[1e-3, 2e-3, 5e-4, 3e-2, 1e-5]), &ln(&[1e-5, 1e-4, 1e-3, 1e-2, 0.1]), &log_want);
    let int = Domain::Int(1, 8);
    let int_want = [
        -2.4291197402853495,
        -1.9915434800390972,
        -1.7820818385379873,
        -1.8217105892702257,
        -2.001312687990291,
        -2.1673764084787304,
        -2.27523610993566,
        -2.3756201868041833,
    ];
    let ints: Vec<f64> = (1..=8).map(f64::from).collect();
    assert_log_pdf(Space::of(&int), &[3.0, 3.0, 5.0, 8.0], &ints, &int_want);
    let cat = Domain::Values(vec![Value::from("a"), Value::from("b"), Value::from("c")]);
    let cat_want = [-1.0986122886681098, -1.6582280766035324, -0.7419373447293772];
    assert_log_pdf(Space::of(&cat), &[0.0, 2.0, 2.0], &[0.0, 1.0, 2.0], &cat_want);
    // 30 observations: the ramp of default_weights is in play; python: [(i * 0.37) % 0.5 for i in range(30)]
    let ramp_obs: Vec<f64> = (0..30).map(|i| (f64::from(i) * 0.37) % 0.5).collect();
    let ramp_want = [0.25443401376987, 0.6613599872647207, 0.8437299614207512, 0.8939045238648449, 0.5050533290197586];
    assert_log_pdf(Space::of(&Domain::Uniform(0.0, 0.5)), &ramp_obs, &[0.0, 0.1, 0.25, 0.37, 0.5], &ramp_want);
    let prior_want = [-1.470316560628941, -1.376566560628941, -1.470316560628941];
    assert_log_pdf(Space::of(&Domain::Uniform(-1.0, 3.0)), &[], &[-1.0, 0.0, 3.0], &prior_want);
    let tail_want = [1.1662715600198181, -0.9338302577733848, -1.4702670138413565];
    assert_log_pdf(Space::of(&Domain::Uniform(0.0, 1.0)), &[0.0, 0.001, 0.002], &[0.0, 0.5, 1.0], &tail_want);
}

#[test]
fn startup_trials_are_random_and_ignore_metrics() {
    let params = lr_param();
    let settings = TpeSettings::default();
    // up to 9 finished trials: the same proposal whatever their metrics
    for n in 0..10u64 {
        let with = |metric: &dyn Fn(u64) -> f64| -> Vec<PastTrial> {
            (0..n).map(|t| complete(vec![Value::Float(10f64.powi(-(t as i32 % 5) - 1))], metric(t))).collect()
        };
        let a = propose(&params, &with(&|t| t as f64), Direction::Minimize, 7, &settings);
        let b = propose(&params, &with(&|t| -(t as f64) * 3.0), Direction::Minimize, 7, &settings);
        assert_eq!(a, b, "after {n} trials");
    }
    // and uniform in log space: each quarter of [1e-5, 1e-1] gets about a quarter of 800 draws
    let mut quarters = [0usize; 4];
    for seed in 0..800 {
        let lr = propose(&params, &[], Direction::Minimize, seed, &settings)[0].as_float().unwrap();
        quarters[((lr.log10() + 5.0).floor() as usize).min(3)] += 1;
    }
    assert!(quarters.iter().all(|&q| (150..=250).contains(&q)), "{quarters:?}");
}

/// minimize (log10(lr) + 3)²: after the 10 random trials, proposals close in on 1e-3.
#[test]
fn proposals_concentrate_near_the_optimum() {
    let params = lr_param();
    let objective = |v: &[Value]| decades_off(&v[0]).powi(2);
    let off = |settings: &TpeSettings| -> f64 {
        let late = (0..8u64).flat_map(|seed| study(&params, objective, 40, seed, settings).split_off(20));
        median(late.map(|t| decades_off(&t.values[0])).collect())
    };
    let tpe = off(&TpeSettings::default());
    let random = off(&TpeSettings { n_startup_trials: usize::MAX, ..TpeSettings::default() });
    // Optuna 5.0's TPESampler on the same study (8 seeds × trials 20..40): median 0.39 decades; uniform: ~1.1
    assert!(tpe < 0.5 * random, "median decades from the optimum: tpe {tpe}, random {random}");
}

/// A width category and an lr: jointly (the default) and each on its own, the best width is proposed most
/// and the lr closes in on its optimum.
#[test]
fn the_best_category_is_proposed_most() {
    let widths = [16, 32, 64, 128];
    let mut params = vec![("model.width".to_string(), Domain::Values(widths.map(Value::Integer).to_vec()))];
    params.extend(lr_param());
    let loss = |v: &[Value]| {
        let width = match v[0].as_integer() {
            Some(64) => 0.0,
            Some(32) => 0.2,
            Some(128) => 0.6,
            _ => 1.0,
        };
        width + 0.2 * decades_off(&v[1]).powi(2)
    };
    for multivariate in [true, false] {
        let settings = TpeSettings { multivariate, ..TpeSettings::default() };
        let (mut counts, mut off) = ([0usize; 4], Vec::new());
        for seed in 0..6 {
            for t in study(&params, loss, 30, seed, &settings).split_off(10) {
                counts[widths.iter().position(|&w| Value::Integer(w) == t.values[0]).unwrap()] += 1;
                off.push(decades_off(&t.values[1]));
            }
        }
        let most = (0..4).max_by_key(|&i| counts[i]).unwrap();
        assert_eq!(widths[most], 64, "multivariate {multivariate}: proposals per width {widths:?}: {counts:?}");
        // uniform on [-5, -1] decades: median 1.0 from -3
        assert!(median(off.clone()) < 0.75, "multivariate {multivariate}: lr off by {}", median(off));
    }
}

#[test]
fn maximize_is_minimize_of_the_negated_metric() {
    let params = lr_param();
    let past = study(&params, |v| decades_off(&v[0]), 15, 3, &TpeSettings::default());
    let negated: Vec<PastTrial> = past
        .iter()
        .map(|t| match t.state {
            TrialState::Complete(m) => complete(t.values.clone(), -m),
            _ => t.clone(),
        })
        .collect();
    for seed in 0..20 {
        let min = propose(&params, &past, Direction::Minimize, seed, &TpeSettings::default());
        assert_eq!(min, propose(&params, &negated, Direction::Maximize, seed, &TpeSettings::default()));
    }
}

/// Four workers are training the point the sampler would propose next: with the liar, a fifth proposes
/// somewhere else far more often than without it.
#[test]
fn the_constant_liar_steers_away_from_running_trials() {
    let params = lr_param();
    let liar = TpeSettings::default();
    let no_liar = TpeSettings { constant_liar: false, ..TpeSettings::default() };
    let near_running = |settings: &TpeSettings| -> usize {
        let mut near = 0;
        for seed in 0..100u64 {
            let mut past = study(&params, |v| decades_off(&v[0]).powi(2), 12, seed, &liar);
            let running = propose(&params, &past, Direction::Minimize, seed << 20 | 12, &liar);
            for _ in 0..4 {
                past.push(PastTrial { values: running.clone(), state: TrialState::Running });
            }
            let next = propose(&params, &past, Direction::Minimize, seed << 20 | 16, settings);
            let decades = (next[0].as_float().unwrap() / running[0].as_float().unwrap()).log10().abs();
            near += usize::from(decades < 0.1);
        }
        near
    };
    let (with, without) = (near_running(&liar), near_running(&no_liar));
    assert!(2 * with < without, "proposals within 0.1 decade of the running point: liar {with}, no liar {without}");
}

#[test]
fn same_inputs_same_proposal_and_the_seed_matters() {
    let params = lr_param();
    let past = study(&params, |v| decades_off(&v[0]), 14, 1, &TpeSettings::default());
    let at = |seed| propose(&params, &past, Direction::Minimize, seed, &TpeSettings::default());
    assert_eq!(at(5), at(5));
    assert!((0..10).any(|seed| at(seed) != at(5)));
}

/// Every domain kind: each value in range and in the domain's TOML type; list values exactly as listed.
#[test]
fn values_stay_in_their_domains_and_types() {
    let listed = vec![Value::from("adamw"), Value::Integer(64), Value::Float(0.5), Value::Boolean(true)];
    let params = vec![
        ("model.depth".to_string(), Domain::Int(-2, 5)),
        ("model.dropout".to_string(), Domain::Uniform(0.0, 0.5)),
        ("optim.lr".to_string(), Domain::LogUniform(1e-5, 1e-1)),
        ("optim.name".to_string(), Domain::Values(listed.clone())),
        ("train.seed".to_string(), Domain::Int(3, 3)),
    ];
    let objective = |v: &[Value]| {
        let depth = v[0].as_integer().unwrap() as f64;
        (depth - 4.0).powi(2) + v[1].as_float().unwrap() + decades_off(&v[2])
    };
    let mut depths = std::collections::BTreeSet::new();
    for seed in 0..4 {
        for t in study(&params, objective, 30, seed, &TpeSettings::default()) {
            let v = &t.values;
            assert!(matches!(v[0], Value::Integer(d) if (-2..=5).contains(&d)), "{v:?}");
            assert!(matches!(v[1], Value::Float(x) if (0.0..=0.5).contains(&x)), "{v:?}");
            assert!(matches!(v[2], Value::Float(x) if (1e-5..=1e-1).contains(&x)), "{v:?}");
            assert!(listed.contains(&v[3]), "{v:?}");
            assert_eq!(v[4], Value::Integer(3));
            depths.insert(v[0].as_integer().unwrap());
        }
    }
    assert_eq!(depths.len(), 8, "every depth of -2..=5 proposed at least once: {depths:?}");
}

/// Failed trials, and running ones without the liar, change nothing; values that are not in the domain
/// (another type, out of range, too few) leave that trial out for that parameter, without a panic.
#[test]
fn failed_running_and_foreign_values_are_left_out() {
    let params =
        vec![("optim.lr".to_string(), Domain::LogUniform(1e-5, 1e-1)), ("model.depth".into(), Domain::Int(1, 4))];
    let objective = |v: &[Value]| decades_off(&v[0]) + v[1].as_integer().unwrap() as f64;
    let past = study(&params, objective, 14, 2, &TpeSettings::default());
    let mut noisy = Vec::new();
    for (i, t) in past.iter().enumerate() {
        noisy.push(t.clone());
        let state = if i % 2 == 0 { TrialState::Failed } else { TrialState::Complete(f64::NAN) };
        noisy.push(PastTrial { values: vec![Value::Float(1e-3), Value::Integer(2)], state });
    }
    noisy.push(PastTrial { values: vec![Value::Float(1e-2), Value::Integer(3)], state: TrialState::Running });
    let no_liar = TpeSettings { constant_liar: false, ..TpeSettings::default() };
    for seed in 0..10 {
        assert_eq!(
            propose(&params, &past, Direction::Minimize, seed, &no_liar),
            propose(&params, &noisy, Direction::Minimize, seed, &no_liar)
        );
    }
    let mut foreign = past.clone();
    foreign.push(complete(vec![Value::from("fast"), Value::Integer(99)], -1.0));
    foreign.push(complete(vec![Value::Float(5.0)], -2.0));
    foreign.push(complete(vec![], -3.0));
    let v = propose(&params, &foreign, Direction::Minimize, 1, &TpeSettings::default());
    assert!(
        matches!(v[..], [Value::Float(lr), Value::Integer(d)] if (1e-5..=1e-1).contains(&lr) && (1..=4).contains(&d))
    );
}

/// The joint (multivariate) density: a mixture of products, against Optuna's `_ParzenEstimator` over
/// {lr: log 1e-5..1e-1, w: [64, 128, 256], n: int 1..8} with the same four trials.
#[test]
fn joint_parzen_estimator_is_optunas() {
    let domains = [
        Domain::LogUniform(1e-5, 1e-1),
        Domain::Values([64, 128, 256].map(Value::Integer).to_vec()),
        Domain::Int(1, 8),
    ];
    let spaces: Vec<Space> = domains.iter().map(Space::of).collect();
    let trial = |lr: f64, w: f64, n: f64| vec![lr.ln(), w, n];
    let observed = [trial(1e-3, 0.0, 3.0), trial(2e-3, 2.0, 3.0), trial(5e-4, 2.0, 5.0), trial(3e-2, 1.0, 8.0)];
    let pe = Parzen::new(&spaces, &observed, &TpeSettings::default());
    let points = [trial(1e-3, 0.0, 3.0), trial(1e-3, 2.0, 3.0), trial(3e-2, 1.0, 8.0), trial(1e-5, 0.0, 1.0)];
    let optuna = [-4.230304749393275, -4.345032898834794, -4.747627242175933, -6.978131390733321];
    for (x, want) in points.iter().zip(optuna) {
        let got = pe.log_pdf(x);
        assert!(close(got, want), "x={x:?}: {got} vs optuna {want}");
    }
}

/// Pruned trials rank after every complete one, the deepest first, then by value (Optuna's `_split_trials`).
#[test]
fn pruned_trials_rank_after_complete_ones_deepest_first() {
    let t = |state| PastTrial { values: Vec::new(), state };
    let past = [
        t(TrialState::Pruned { step: 3, value: 0.1 }),
        t(TrialState::Complete(5.0)),
        t(TrialState::Running),
        t(TrialState::Pruned { step: 9, value: 2.0 }),
        t(TrialState::Complete(1.0)),
        t(TrialState::Pruned { step: 9, value: 1.0 }),
        t(TrialState::Failed),
    ];
    let settings = TpeSettings::default();
    assert_eq!(split_trials(&past, Direction::Minimize, 3, &settings), (vec![1, 4, 5], vec![0, 2, 3]));
    assert_eq!(split_trials(&past, Direction::Maximize, 3, &settings), (vec![1, 3, 4], vec![0, 2, 5]));
    let no_liar = TpeSettings { constant_liar: false, ..settings };
    assert_eq!(split_trials(&past, Direction::Minimize, 1, &no_liar), (vec![4], vec![0, 1, 3, 5]));
}
