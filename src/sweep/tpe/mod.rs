//! The tree-structured Parzen estimator (`method = "tpe"`): a pure function from the trials so far to the next
//! trial's parameter values.
//!
//! A port of Optuna's `TPESampler` with its defaults (optuna 5.0, `optuna/samplers/_tpe/`): the first
//! `n_startup_trials` (10) trials are sampled uniformly at random; after that the finished trials are split into the
//! best `gamma(n) = min(ceil(0.1 n), 25)` ("below", l(x)) and the rest ("above", g(x)), and the proposal is the best
//! of `n_ei_candidates` (24) draws from l(x) by `log l(x) − log g(x)`. Each density is a mixture with one component
//! per trial (weights: `default_weights`, flat up to 25 trials, then older trials ramp down) plus a prior component
//! (`prior_weight` 1); a component is a product of one kernel per parameter, so that parameters are drawn jointly
//! (Optuna ≥ 5 uses the multivariate TPE for one objective by default; `multivariate: false` samples each parameter
//! on its own, Optuna's `multivariate=False`). Numeric kernels are Gaussians truncated to the domain, with Optuna's
//! bandwidth rule (distance to the farther neighbour, first and last by their one neighbour, clipped to
//! `[range / min(100, 1 + kernels), range]`: `consider_magic_clip`, not `consider_endpoints`), in log space for
//! `log_uniform`; `int` is discretized with step 1 on bounds widened by ±0.5. Categories: each trial's kernel is
//! its category plus `prior_weight` spread over all. With the constant liar (default on) running trials join
//! "above", so parallel workers do not all propose the same point; failed trials (and values outside the domain)
//! are ignored.
//!
//! Same inputs and seed → same proposal; the caller derives the seed from the study seed and the trial number.
//! Owns no I/O and imports only the sweep's `Domain` and the crate's RNG; nothing here knows about journals,
//! schedulers or configs.
use crate::data::rng::SplitMix64;

/// The sweep file's parameter domain (re-exported so that `examples/tpe_objective.rs` can name it).
pub use super::spec::Domain;

/// Whether a lower or a higher metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Minimize,
    Maximize,
}

/// Where a past trial stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TrialState {
    /// Finished with this metric. A NaN metric counts as failed (Optuna fails such a trial).
    Complete(f64),
    /// Stopped or paused by a scheduler after reporting `value` at `step` (e.g. its highest rung's epoch). Ranked
    /// after every complete trial, deeper steps first, then by value (Optuna's `_split_pruned_trials`).
    Pruned { step: u64, value: f64 },
    /// Still training: "above" under the constant liar, ignored otherwise.
    Running,
    /// Out of the search.
    Failed,
}

/// One trial so far: its values in `params` order, and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct PastTrial {
    pub values: Vec<toml::Value>,
    pub state: TrialState,
}

/// The sampler's knobs; `Default` is Optuna's `TPESampler()` (with `constant_liar=True`).
#[derive(Debug, Clone, PartialEq)]
pub struct TpeSettings {
    /// Trials sampled at random before the estimator takes over (finished ones: complete or pruned).
    pub n_startup_trials: usize,
    /// Draws from l(x) per parameter, of which the best by l(x)/g(x) is proposed.
    pub n_ei_candidates: usize,
    /// Weight of the prior kernel (the whole domain) in both densities.
    pub prior_weight: f64,
    /// Lower bound on a numeric kernel's bandwidth: `range / min(100, 1 + kernels)` (else 1e-12).
    pub consider_magic_clip: bool,
    /// Bandwidth of the first and last kernel also by its distance to the domain's end.
    pub consider_endpoints: bool,
    /// Running trials count as "above" (worse than the best), so they are not proposed again.
    pub constant_liar: bool,
    /// One joint density over all parameters (Optuna's default for one objective since 5.0, `multivariate=None`
    /// → True); false: each parameter on its own (`multivariate=False`).
    pub multivariate: bool,
}

impl Default for TpeSettings {
    fn default() -> Self {
        TpeSettings {
            n_startup_trials: 10,
            n_ei_candidates: 24,
            prior_weight: 1.0,
            consider_magic_clip: true,
            consider_endpoints: false,
            constant_liar: true,
            multivariate: true,
        }
    }
}

/// The next trial's values, one per parameter in `params` order, each in its domain's TOML type (`int`: Integer;
/// `uniform`, `log_uniform`: Float rounded to 6 significant digits as `method = "random"` does; a list: one of its
/// values, exactly). Pure and deterministic: the same arguments give the same values.
pub fn propose(
    params: &[(String, Domain)],
    past: &[PastTrial],
    direction: Direction,
    seed: u64,
    settings: &TpeSettings,
) -> Vec<toml::Value> {
    let n = past.iter().filter(|t| finished_value(t.state).is_some()).count();
    let spaces: Vec<Space> = params.iter().map(|(_, d)| Space::of(d)).collect();
    let mut x: Vec<f64> = spaces
        .iter()
        .enumerate()
        .map(|(i, space)| space.sample_uniform(&mut SplitMix64::keyed(&[seed, i as u64])))
        .collect();
    if n >= settings.n_startup_trials {
        let (below, above) = split_trials(past, direction, gamma(n), settings);
        // single-point domains (int [a, a]) are not searched, as Optuna leaves `single()` distributions out
        let searched: Vec<usize> = (0..params.len()).filter(|&i| !spaces[i].single()).collect();
        let groups: Vec<Vec<usize>> =
            if settings.multivariate { vec![searched] } else { searched.into_iter().map(|i| vec![i]).collect() };
        for (g, dims) in groups.iter().enumerate() {
            let mut rng = SplitMix64::keyed(&[seed, u64::MAX - g as u64]);
            let proposal = sample_tpe(&spaces, dims, past, (&below, &above), settings, &mut rng);
            for (&i, v) in dims.iter().zip(proposal) {
                x[i] = v;
            }
        }
    }
    params.iter().zip(&spaces).zip(x).map(|(((_, domain), space), x)| space.external(domain, x)).collect()
}

/// The TPE draw for the parameters `dims` jointly: l(x) from the `below` trials, g(x) from `above`, each trial
/// that has a value in the domain of every one of `dims` (Optuna leaves a trial without one of them out).
fn sample_tpe(
    spaces: &[Space],
    dims: &[usize],
    past: &[PastTrial],
    (below, above): (&[usize], &[usize]),
    settings: &TpeSettings,
    rng: &mut SplitMix64,
) -> Vec<f64> {
    let observed = |trials: &[usize]| -> Vec<Vec<f64>> {
        let values = |t: usize| dims.iter().map(|&i| spaces[i].internal(past[t].values.get(i)?)).collect();
        trials.iter().filter_map(|&t| values(t)).collect()
    };
    let dim_spaces: Vec<Space> = dims.iter().map(|&i| spaces[i]).collect();
    let l = Parzen::new(&dim_spaces, &observed(below), settings);
    let g = Parzen::new(&dim_spaces, &observed(above), settings);
    best_candidate(&l, &g, settings.n_ei_candidates, rng)
}

/// Optuna's `default_gamma`: how many of `n` finished trials make the "below" (good) group.
pub(crate) fn gamma(n: usize) -> usize {
    ((0.1 * n as f64).ceil() as usize).min(25)
}

/// Optuna's `default_weights`: the kernels' weights for `n` trials in trial order, flat up to 25 and then a ramp
/// from `1/n` for the oldest to 1 followed by 25 ones (`np.linspace(1/n, 1, n - 25)`).
pub(crate) fn default_weights(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let m = n - 25;
    let (start, stop) = (1.0 / n as f64, 1.0);
    let step = (stop - start) / (m as f64 - 1.0);
    let mut w: Vec<f64> = (0..m).map(|i| if m == 1 { start } else { start + i as f64 * step }).collect();
    if m > 1 {
        w[m - 1] = stop; // numpy sets the endpoint exactly
    }
    w.extend(std::iter::repeat_n(1.0, 25));
    w
}

/// The metric a finished trial is ranked by; None for running, failed and NaN.
fn finished_value(state: TrialState) -> Option<f64> {
    match state {
        TrialState::Complete(v) | TrialState::Pruned { value: v, .. } if !v.is_nan() => Some(v),
        TrialState::Pruned { .. } => Some(f64::INFINITY),
        _ => None,
    }
}

/// Optuna's `_split_trials` (single objective): the best `n_below` complete trials, topped up with the best pruned
/// ones, are "below"; the rest, plus running trials under the constant liar, "above". Both in trial order.
fn split_trials(
    past: &[PastTrial],
    direction: Direction,
    n_below: usize,
    settings: &TpeSettings,
) -> (Vec<usize>, Vec<usize>) {
    let sign = if direction == Direction::Minimize { 1.0 } else { -1.0 };
    let mut complete: Vec<(usize, f64)> = Vec::new();
    let mut pruned: Vec<(usize, u64, f64)> = Vec::new();
    let mut above: Vec<usize> = Vec::new();
    for (i, t) in past.iter().enumerate() {
        match t.state {
            TrialState::Complete(v) if !v.is_nan() => complete.push((i, sign * v)),
            TrialState::Pruned { step, value } => {
                pruned.push((i, step, if value.is_nan() { f64::INFINITY } else { sign * value }))
            }
            TrialState::Running if settings.constant_liar => above.push(i),
            _ => {}
        }
    }
    // stable sorts: ties keep trial order, as Python's sorted does
    complete.sort_by(|a, b| a.1.total_cmp(&b.1));
    pruned.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.total_cmp(&b.2)));
    let ranked: Vec<usize> = complete.iter().map(|c| c.0).chain(pruned.iter().map(|p| p.0)).collect();
    let k = n_below.min(ranked.len());
    let mut below = ranked[..k].to_vec();
    above.extend_from_slice(&ranked[k..]);
    below.sort_unstable();
    above.sort_unstable();
    (below, above)
}

/// A domain as the estimator sees it: category count, or a numeric interval in the transformed space (log for
/// `log_uniform`; for `int`, widened by ±0.5 and discrete).
#[derive(Debug, Clone, Copy)]
enum Space<'a> {
    Categorical(&'a [toml::Value]),
    Numeric { lo: f64, hi: f64, log: bool, int: bool },
}

impl<'a> Space<'a> {
    fn of(domain: &'a Domain) -> Space<'a> {
        match domain {
            Domain::Values(v) => Space::Categorical(v),
            Domain::Uniform(a, b) => Space::Numeric { lo: *a, hi: *b, log: false, int: false },
            Domain::LogUniform(a, b) => Space::Numeric { lo: a.ln(), hi: b.ln(), log: true, int: false },
            Domain::Int(a, b) => Space::Numeric { lo: *a as f64 - 0.5, hi: *b as f64 + 0.5, log: false, int: true },
        }
    }

    /// A past value in the estimator's space (category index, log of a `log_uniform` value); None when it is not
    /// in the domain (another type, out of range, not listed), so that trial is left out for this parameter.
    fn internal(&self, v: &toml::Value) -> Option<f64> {
        let num = v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
        match *self {
            Space::Categorical(list) => list.iter().position(|c| c == v).map(|i| i as f64),
            Space::Numeric { int: true, lo, hi, .. } => {
                v.as_integer().map(|i| i as f64).filter(|x| (lo..=hi).contains(x))
            }
            Space::Numeric { lo, hi, log, .. } => {
                let x = if log { num?.ln() } else { num? };
                (x.is_finite() && (lo..=hi).contains(&x)).then_some(x)
            }
        }
    }

    /// A domain of one value: nothing to search.
    fn single(&self) -> bool {
        match *self {
            Space::Categorical(list) => list.len() <= 1,
            Space::Numeric { lo, hi, int, .. } => int && hi - lo <= 1.0,
        }
    }

    /// A uniform draw (Optuna's `RandomSampler`: uniform on the transformed bounds, ints rounded).
    fn sample_uniform(&self, rng: &mut SplitMix64) -> f64 {
        match *self {
            Space::Categorical(list) => rng.below(list.len() as u64) as f64,
            Space::Numeric { lo, hi, int, .. } => {
                let x = lo + rng.next_f64() * (hi - lo);
                if int {
                    (x.round_ties_even()).clamp(lo + 0.5, hi - 0.5)
                } else {
                    x
                }
            }
        }
    }

    /// The value in the domain's TOML type.
    fn external(&self, domain: &Domain, x: f64) -> toml::Value {
        match domain {
            Domain::Values(v) => v.get(x as usize).or(v.last()).cloned().unwrap_or(toml::Value::Array(Vec::new())),
            Domain::Uniform(a, b) => toml::Value::Float(round6(x).clamp(*a, *b)),
            Domain::LogUniform(a, b) => toml::Value::Float(round6(x.exp()).clamp(*a, *b)),
            Domain::Int(a, b) => toml::Value::Integer((x.round() as i64).clamp(*a, *b)),
        }
    }
}

/// Rounded to 6 significant digits, as `method = "random"` rounds (sweep/expand.rs).
fn round6(x: f64) -> f64 {
    format!("{x:.5e}").parse().unwrap_or(x)
}

/// One density, l(x) or g(x): a mixture over the observed trials (in trial order) and the prior, last, of products
/// of one kernel per parameter (Optuna's `_MixtureOfProductDistribution`; one parameter when univariate).
#[derive(Debug, Clone)]
struct Parzen {
    weights: Vec<f64>,
    dims: Vec<Kernels>,
}

/// One parameter's kernels, one per observed trial plus the prior.
#[derive(Debug, Clone)]
enum Kernels {
    /// Each kernel's probability of each category.
    Categorical(Vec<Vec<f64>>),
    /// Truncated Gaussians on `[lo, hi]` (transformed space); `int`: the mass of `[x − 0.5, x + 0.5]`.
    Numeric { mus: Vec<f64>, sigmas: Vec<f64>, lo: f64, hi: f64, int: bool },
}

impl Parzen {
    /// Optuna's `_ParzenEstimator` over `spaces`, from the observed trials' values (`observed[trial][dim]`, in
    /// the estimator's space).
    fn new(spaces: &[Space], observed: &[Vec<f64>], settings: &TpeSettings) -> Parzen {
        let mut weights = default_weights(observed.len());
        weights.push(if observed.is_empty() { 1.0 } else { settings.prior_weight });
        let total: f64 = weights.iter().sum();
        weights.iter_mut().for_each(|w| *w /= total);
        let dims = spaces
            .iter()
            .enumerate()
            .map(|(d, space)| {
                let column: Vec<f64> = observed.iter().map(|o| o[d]).collect();
                match *space {
                    Space::Categorical(list) => Kernels::Categorical(categorical_rows(list.len(), &column, settings)),
                    Space::Numeric { lo, hi, int, .. } => {
                        let (mus, sigmas) = numeric_kernels(&column, lo, hi, settings);
                        Kernels::Numeric { mus, sigmas, lo, hi, int }
                    }
                }
            })
            .collect();
        Parzen { weights, dims }
    }

    /// One draw: a kernel chosen by weight, then each parameter from that kernel.
    fn sample(&self, rng: &mut SplitMix64) -> Vec<f64> {
        let k = choose(&self.weights, rng);
        self.dims.iter().map(|d| d.sample(k, rng)).collect()
    }

    fn log_pdf(&self, x: &[f64]) -> f64 {
        let terms: Vec<f64> = (0..self.weights.len())
            .map(|k| self.weights[k].ln() + self.dims.iter().zip(x).map(|(d, &xd)| d.log_pdf(k, xd)).sum::<f64>())
            .collect();
        let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if max == f64::NEG_INFINITY {
            return max;
        }
        max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
    }
}

impl Kernels {
    fn sample(&self, k: usize, rng: &mut SplitMix64) -> f64 {
        match self {
            Kernels::Categorical(rows) => choose(&rows[k], rng) as f64,
            Kernels::Numeric { mus, sigmas, lo, hi, int } => {
                let x = truncated_normal(mus[k], sigmas[k], *lo, *hi, rng);
                if *int {
                    // Optuna: low + round((x - low) / step) * step, clipped to [low, high]
                    let (a, b) = (lo + 0.5, hi - 0.5);
                    (a + (x - a).round_ties_even()).clamp(a, b)
                } else {
                    x
                }
            }
        }
    }

    fn log_pdf(&self, k: usize, x: f64) -> f64 {
        match self {
            Kernels::Categorical(rows) => rows[k].get(x as usize).map_or(f64::NEG_INFINITY, |p| p.ln()),
            Kernels::Numeric { mus, sigmas, lo, hi, int } => {
                let (mu, sigma) = (mus[k], sigmas[k]);
                let z = |v: f64| (v - mu) / sigma;
                let mass = log_gauss_mass(z(*lo), z(*hi));
                if x < *lo || x > *hi {
                    f64::NEG_INFINITY
                } else if *int {
                    log_gauss_mass(z(x - 0.5), z(x + 0.5)) - mass
                } else {
                    -0.5 * z(x) * z(x) - LN_SQRT_2PI - mass - sigma.ln()
                }
            }
        }
    }
}

/// Optuna's categorical kernels: each observed trial's row is `prior_weight / kernels` on every category plus 1 on
/// its own; the prior's row is uniform; rows normalized.
fn categorical_rows(n_choices: usize, observed: &[f64], settings: &TpeSettings) -> Vec<Vec<f64>> {
    if observed.is_empty() {
        return vec![vec![1.0 / n_choices as f64; n_choices]];
    }
    let n_kernels = observed.len() + 1;
    let mut rows = vec![vec![settings.prior_weight / n_kernels as f64; n_choices]; n_kernels];
    for (row, &c) in rows.iter_mut().zip(observed) {
        row[c as usize] += 1.0;
    }
    for row in &mut rows {
        let sum: f64 = row.iter().sum();
        let sum = if sum == 0.0 { 1.0 } else { sum };
        row.iter_mut().for_each(|p| *p /= sum);
    }
    rows
}

/// Optuna's numeric kernels: one per observation, its bandwidth the distance to its farther neighbour (the domain's
/// ends count as neighbours, except for the first and last kernel without `consider_endpoints`), clipped to
/// `[range / min(100, 1 + kernels), range]` under the magic clip; then the prior (the middle, the whole range).
fn numeric_kernels(observed: &[f64], lo: f64, hi: f64, settings: &TpeSettings) -> (Vec<f64>, Vec<f64>) {
    let n = observed.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| observed[a].total_cmp(&observed[b]));
    let mut ends = Vec::with_capacity(n + 2);
    ends.push(lo);
    ends.extend(order.iter().map(|&i| observed[i]));
    ends.push(hi);
    let mut sorted_sigmas: Vec<f64> = (0..n).map(|i| (ends[i + 1] - ends[i]).max(ends[i + 2] - ends[i + 1])).collect();
    if !settings.consider_endpoints && n >= 2 {
        sorted_sigmas[0] = ends[2] - ends[1];
        sorted_sigmas[n - 1] = ends[n] - ends[n - 1];
    }
    let max_sigma = hi - lo;
    let min_sigma = if settings.consider_magic_clip { (hi - lo) / 100f64.min(1.0 + (n + 1) as f64) } else { 1e-12 };
    let mut sigmas = vec![0.0; n];
    for (rank, &i) in order.iter().enumerate() {
        sigmas[i] = sorted_sigmas[rank].max(min_sigma).min(max_sigma);
    }
    let mut mus = observed.to_vec();
    mus.push(0.5 * (lo + hi));
    sigmas.push(hi - lo);
    (mus, sigmas)
}

/// The best of `n` draws from `l` by `log l(x) − log g(x)` (the first on ties, as `np.argmax`).
fn best_candidate(l: &Parzen, g: &Parzen, n: usize, rng: &mut SplitMix64) -> Vec<f64> {
    let mut best = (f64::NEG_INFINITY, None);
    for _ in 0..n.max(1) {
        let x = l.sample(rng);
        let score = l.log_pdf(&x) - g.log_pdf(&x);
        if best.1.is_none() || score > best.0 {
            best = (score, Some(x));
        }
    }
    best.1.unwrap_or_default()
}

/// An index drawn with probabilities `p` (summing to 1): the number of cumulative sums at or below a uniform draw.
fn choose(p: &[f64], rng: &mut SplitMix64) -> usize {
    let u = rng.next_f64();
    let mut cum = 0.0;
    for (i, pi) in p.iter().enumerate() {
        cum += pi;
        if u < cum {
            return i;
        }
    }
    p.len().saturating_sub(1)
}

/// A draw from N(mu, sigma²) truncated to `[lo, hi]`, by rejection: `mu` lies in the interval and `sigma` is at most
/// its width, so a draw is accepted with probability ≥ 0.34 (Optuna inverts the CDF instead; same distribution).
fn truncated_normal(mu: f64, sigma: f64, lo: f64, hi: f64, rng: &mut SplitMix64) -> f64 {
    for _ in 0..200 {
        let x = mu + sigma * rng.normal();
        if (lo..=hi).contains(&x) {
            return x;
        }
    }
    mu.clamp(lo, hi)
}

const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// The standard normal CDF (Optuna's `_ndtr_single`, on erf/erfc of the same FreeBSD msun lineage as Optuna's).
fn ndtr(a: f64) -> f64 {
    let x = a / std::f64::consts::SQRT_2;
    if x < -std::f64::consts::FRAC_1_SQRT_2 {
        0.5 * libm::erfc(-x)
    } else if x < std::f64::consts::FRAC_1_SQRT_2 {
        0.5 + 0.5 * libm::erf(x)
    } else {
        1.0 - 0.5 * libm::erfc(x)
    }
}

/// log Φ(a) (Optuna's `_log_ndtr_single`: an asymptotic series below −20).
fn log_ndtr(a: f64) -> f64 {
    if a > 6.0 {
        return -ndtr(-a);
    }
    if a > -20.0 {
        return ndtr(a).ln();
    }
    let log_lhs = -0.5 * a * a - (-a).ln() - LN_SQRT_2PI;
    let (mut last, mut rhs, mut numerator, mut denom, mut sign) = (0.0_f64, 1.0_f64, 1.0, 1.0, 1.0);
    let mut i = 0.0;
    while (last - rhs).abs() > f64::EPSILON && i < 100.0 {
        i += 1.0;
        last = rhs;
        sign = -sign;
        denom /= a * a;
        numerator *= 2.0 * i - 1.0;
        rhs += sign * numerator * denom;
    }
    log_lhs + f64::ln(rhs)
}

/// log of the standard normal's mass on `[a, b]` (Optuna's `_log_gauss_mass`: computed in the left tail).
fn log_gauss_mass(a: f64, b: f64) -> f64 {
    let left = |a: f64, b: f64| {
        let (p, q) = (log_ndtr(b), log_ndtr(a));
        p + (-(q - p).exp()).ln_1p()
    };
    if b <= 0.0 {
        left(a, b)
    } else if a > 0.0 {
        left(-b, -a)
    } else {
        let central = |v: f64| 0.5 + 0.5 * libm::erf(v / std::f64::consts::SQRT_2);
        (-central(a) - central(-b)).ln_1p()
    }
}

#[cfg(test)]
mod tests;
