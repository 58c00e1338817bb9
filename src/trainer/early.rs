//! Early stopping as a pure function of the epoch history, so a resumed run reaches the same decision as the
//! process that trained it (no hidden counter is saved anywhere).
use super::metrics::EpochMetrics;
use crate::config::{Config, EarlyStopping, MetricName};

/// A run is finished when every epoch ran or early stopping (a pure function of the history) says so.
pub(crate) fn finished(cfg: &Config, epochs_done: usize, metrics: &[EpochMetrics]) -> bool {
    epochs_done >= cfg.train.epochs || cfg.train.early_stopping.as_ref().is_some_and(|es| should_stop(metrics, es))
}

/// The value of `metric` in one epoch's record (NaN when the task does not have it; configs are checked for
/// that, so only a record from another task can give one).
pub(crate) fn metric_value(m: &EpochMetrics, metric: MetricName) -> f64 {
    match metric {
        MetricName::ValLoss => m.val_loss,
        MetricName::ValAccuracy => m.val_accuracy.unwrap_or(f64::NAN),
        MetricName::TrainLoss => m.train_loss,
        MetricName::ValPpl => m.val_ppl.unwrap_or(f64::NAN),
        MetricName::ValMae => m.val_mae.unwrap_or(f64::NAN),
    }
}

/// The best epoch of `history` by `metric` (lower losses, higher accuracy; the earliest on a tie; NaN never).
pub(super) fn best(history: &[EpochMetrics], metric: MetricName) -> Option<&EpochMetrics> {
    let sign = if metric.higher_is_better() { 1.0 } else { -1.0 };
    let mut best: Option<(&EpochMetrics, f64)> = None;
    for m in history {
        let v = sign * metric_value(m, metric);
        match best {
            _ if v.is_nan() => {}
            Some((_, b)) if v <= b => {}
            _ => best = Some((m, v)),
        }
    }
    best.map(|(m, _)| m)
}

/// True when the last `patience` epochs did not improve on the best earlier value by more than `min_delta`
/// (an improvement is lower for losses, higher for accuracy). NaN never counts as an improvement.
pub(super) fn should_stop(history: &[EpochMetrics], es: &EarlyStopping) -> bool {
    let sign = if es.metric.higher_is_better() { 1.0 } else { -1.0 };
    let mut best: Option<f64> = None;
    let mut since = 0usize;
    for m in history {
        let v = sign * metric_value(m, es.metric);
        match best {
            Some(b) if v.is_nan() || v <= b + es.min_delta => since += 1,
            _ if v.is_nan() => since += 1,
            _ => {
                best = Some(v);
                since = 0;
            }
        }
    }
    since >= es.patience
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn hist(losses: &[f64]) -> Vec<EpochMetrics> {
        crate::trainer::metrics::history(losses)
    }

    #[test]
    fn stops_after_patience_epochs_without_improvement() {
        let es = EarlyStopping { metric: MetricName::ValLoss, patience: 2, min_delta: 0.0 };
        assert!(!should_stop(&hist(&[1.0, 0.9, 0.8]), &es));
        assert!(!should_stop(&hist(&[1.0, 0.9, 0.95]), &es));
        assert!(should_stop(&hist(&[1.0, 0.9, 0.95, 0.91]), &es));
        // a later improvement resets the count
        assert!(!should_stop(&hist(&[1.0, 0.9, 0.95, 0.85]), &es));
        assert!(!should_stop(&[], &es));
    }

    #[test]
    fn min_delta_and_direction() {
        let es = EarlyStopping { metric: MetricName::ValLoss, patience: 1, min_delta: 0.05 };
        assert!(should_stop(&hist(&[1.0, 0.97]), &es), "0.03 is below min_delta");
        assert!(!should_stop(&hist(&[1.0, 0.9]), &es));
        // accuracy = 1 - loss here: higher is better, so the same sequences give the same answers
        let acc = EarlyStopping { metric: MetricName::ValAccuracy, patience: 1, min_delta: 0.05 };
        assert!(should_stop(&hist(&[1.0, 0.97]), &acc));
        assert!(!should_stop(&hist(&[1.0, 0.9]), &acc));
        let nan = EarlyStopping { metric: MetricName::TrainLoss, patience: 1, min_delta: 0.0 };
        assert!(should_stop(&hist(&[1.0, f64::NAN]), &nan));
    }
}
