//! The per-epoch record written to `RUN_DIR/metrics.jsonl`, one JSON object per line.
use serde::{Deserialize, Serialize};

/// One epoch's results. `step` counts optimizer steps since the start of the run (after this epoch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: usize,
    pub step: u64,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    /// Learning rate of the last step of the epoch.
    pub lr: f64,
    /// Training samples per second (training phase only, excluding evaluation).
    pub samples_per_sec: f64,
    /// Wall time of the whole epoch, evaluation included.
    pub epoch_seconds: f64,
    /// fp16 only: steps skipped because the scaled gradients overflowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_steps: Option<u64>,
}

impl EpochMetrics {
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Test histories: epoch `i + 1` has train and val loss `losses[i]` and val accuracy `1 - losses[i]`.
#[cfg(test)]
pub(crate) fn history(losses: &[f64]) -> Vec<EpochMetrics> {
    losses
        .iter()
        .enumerate()
        .map(|(i, &l)| EpochMetrics {
            epoch: i + 1,
            step: i as u64,
            train_loss: l,
            val_loss: l,
            val_accuracy: 1.0 - l,
            lr: 0.1,
            samples_per_sec: 1.0,
            epoch_seconds: 1.0,
            skipped_steps: None,
        })
        .collect()
}
