//! Median pruning, as a pure function: stop a run whose metric at epoch `e` is worse than the median of the
//! other runs' values at the same epoch (Optuna's MedianPruner, per epoch).
use super::spec::Pruning;
use crate::config::MetricName;
use crate::trainer::{metric_value, EpochMetrics};

/// True when `own` should stop now. `others` are the histories of the sweep's other runs.
pub(super) fn should_prune(
    own: &[EpochMetrics],
    others: &[Vec<EpochMetrics>],
    metric: MetricName,
    p: &Pruning,
) -> bool {
    let Some(last) = own.last() else { return false };
    let e = last.epoch;
    if e < p.warmup_epochs.max(1) {
        return false;
    }
    let mut at_e: Vec<f64> = others
        .iter()
        .filter_map(|h| h.iter().find(|m| m.epoch == e))
        .map(|m| metric_value(m, metric))
        .filter(|v| v.is_finite())
        .collect();
    if at_e.len() < p.min_runs {
        return false;
    }
    at_e.sort_by(f64::total_cmp);
    let n = at_e.len();
    let median = if n % 2 == 1 { at_e[n / 2] } else { 0.5 * (at_e[n / 2 - 1] + at_e[n / 2]) };
    let v = metric_value(last, metric);
    if metric.higher_is_better() {
        v.is_nan() || v < median
    } else {
        v.is_nan() || v > median
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::sweep::spec::PruneMethod;

    /// A history with these val accuracies (losses = 1 - accuracy).
    fn h(accs: &[f64]) -> Vec<EpochMetrics> {
        let losses: Vec<f64> = accs.iter().map(|a| 1.0 - a).collect();
        crate::trainer::metrics::history(&losses)
    }

    #[test]
    fn prunes_below_the_median_after_warmup_with_enough_runs() {
        let p = Pruning { method: PruneMethod::Median, warmup_epochs: 2, min_runs: 3 };
        let others = vec![h(&[0.5, 0.6, 0.7]), h(&[0.5, 0.7]), h(&[0.4, 0.8, 0.9])];
        let acc = MetricName::ValAccuracy;
        assert!(!should_prune(&h(&[0.1]), &others, acc, &p), "still in warm-up");
        assert!(should_prune(&h(&[0.1, 0.65]), &others, acc, &p), "median at epoch 2 is 0.7");
        assert!(!should_prune(&h(&[0.1, 0.7]), &others, acc, &p), "equal to the median is kept");
        assert!(!should_prune(&h(&[0.1, 0.2, 0.1]), &others, acc, &p), "only 2 runs reached epoch 3");
        // losses: lower is better
        // losses (1 - accuracy here): lower is better; the median val_loss at epoch 2 is 0.3
        assert!(!should_prune(&h(&[0.1, 0.75]), &others, MetricName::ValLoss, &p), "0.25 < 0.3");
        assert!(should_prune(&h(&[0.9, 0.65]), &others, MetricName::ValLoss, &p), "0.35 > 0.3");
    }
}
