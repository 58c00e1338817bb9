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
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
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
        let ramp_want =
            [0.25443401376987, 0.6613599872647207, 0.8437299614207512, 0.8939045238648449, 0.5050533290197586];
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
}
