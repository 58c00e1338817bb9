//! The per-epoch record written to `RUN_DIR/metrics.jsonl`, one JSON object per line.
use serde::{Deserialize, Serialize};

/// One epoch's results. `step` counts optimizer steps since the start of the run (after this epoch). Losses are
/// the task's: mean cross-entropy (per sample, or per token in nats for language models) or mean squared error.
/// Metrics a task does not have are left out of the JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: usize,
    pub step: u64,
    pub train_loss: f64,
    pub val_loss: f64,
    /// Classification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
    /// Language modelling: `exp(val_loss)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_ppl: Option<f64>,
    /// Regression: mean absolute error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_mae: Option<f64>,
    /// Learning rate of the last step of the epoch.
    pub lr: f64,
    /// Training samples per second (training phase only, excluding evaluation).
    pub samples_per_sec: f64,
    /// Language modelling: training tokens per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_sec: Option<f64>,
    /// Wall time of the whole epoch, evaluation included.
    pub epoch_seconds: f64,
    /// `checkpoint.keep_best`: the best epoch so far by that metric (its weights are `RUN_DIR/best.safetensors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_epoch: Option<usize>,
    /// fp16 only: steps skipped because the scaled gradients overflowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_steps: Option<u64>,
}

impl EpochMetrics {
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The task's validation metrics, e.g. `val_loss 0.1234 val_accuracy 0.9700`.
    pub fn val_summary(&self) -> String {
        let mut s = format!("val_loss {:.4}", self.val_loss);
        for (name, v) in [("val_accuracy", self.val_accuracy), ("val_ppl", self.val_ppl), ("val_mae", self.val_mae)] {
            if let Some(v) = v {
                s += &format!(" {name} {v:.4}");
            }
        }
        s
    }

    /// Training throughput, e.g. `5123 samples/s` or `81234 tokens/s`.
    pub fn speed(&self) -> String {
        match self.tokens_per_sec {
            Some(t) => format!("{t:.0} tokens/s"),
            None => format!("{:.0} samples/s", self.samples_per_sec),
        }
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
            val_accuracy: Some(1.0 - l),
            val_ppl: None,
            val_mae: None,
            tokens_per_sec: None,
            best_epoch: None,
            lr: 0.1,
            samples_per_sec: 1.0,
            epoch_seconds: 1.0,
            skipped_steps: None,
        })
        .collect()
}
