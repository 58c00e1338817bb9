//! Tasks: what a batch is, the loss, and the validation metrics, for classification, regression and language
//! modelling. The training loop drives any [`Task`] the same way; no code outside this module looks at which
//! task it is.
//!
//! Determinism contract: [`Task::epoch_order`] is a pure function of `(seed, epoch)` and [`Task::val_order`] is
//! fixed, so a resume at any step sees the same batches. Imports `data` and `config` only.
mod lm;
mod samples;

use tch::{Device, Tensor};

use crate::config::Config;
use crate::data::Data;

/// A batch on the training device: model inputs and targets.
pub struct Batch {
    pub x: Tensor,
    pub y: Tensor,
}

/// Which split a batch comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
}

/// One evaluation's results. Metrics a task does not have are `None`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Eval {
    pub val_loss: f64,
    pub val_accuracy: Option<f64>,
    pub val_ppl: Option<f64>,
    pub val_mae: Option<f64>,
}

/// What the loop needs of a task. Indices (samples or window starts) are int64 tensors on the data's device.
pub trait Task {
    /// Training items (samples or windows) in one full pass.
    fn train_len(&self) -> usize;
    /// The items of epoch `epoch` in training order.
    fn epoch_order(&self, seed: u64, epoch: u64) -> Tensor;
    /// The fixed validation items, at most `cap` of them.
    fn val_order(&self, cap: Option<usize>) -> Tensor;
    /// The batch of items `idx` from `split`, on `device`.
    fn gather(&self, idx: &Tensor, split: Split, device: Device) -> Batch;
    /// The mean training loss of a batch.
    fn loss(&self, out: &Tensor, y: &Tensor) -> Tensor;
    /// Each run's mean training loss, `[R]`, of a fused group's output `out` (`[R, B, ...]`) against `y`
    /// (`[R, B, ...]`): [`Task::loss`] of every run's slice. This default computes it run by run; sample tasks
    /// override it with one computation over all runs.
    fn losses_by_run(&self, out: &Tensor, y: &Tensor) -> Result<Tensor, tch::TchError> {
        let runs = out.size().first().copied().unwrap_or(0);
        Tensor::f_stack(&(0..runs).map(|r| self.loss(&out.get(r), &y.get(r))).collect::<Vec<_>>(), 0)
    }
    /// Per-batch sums (on the device, no host sync) that [`Task::finish_eval`] turns into metrics.
    fn eval_sums(&self, out: &Tensor, y: &Tensor) -> Vec<Tensor>;
    /// Metrics from the summed [`Task::eval_sums`] over `items` validation items.
    fn finish_eval(&self, sums: &[f64], items: usize) -> Eval;
    /// The output shape the model must give for `batch` (checked on one batch before a user's module trains).
    fn expected_output(&self, batch: &Batch) -> Vec<i64>;
    /// Tokens per training item, for `tokens_per_sec` (`None` for sample tasks).
    fn tokens_per_item(&self) -> Option<usize> {
        None
    }
}

/// The task for `cfg` over `data` (the config decided which kind of data was loaded).
pub fn build<'a>(cfg: &Config, data: &'a Data) -> Box<dyn Task + 'a> {
    match data {
        Data::Samples(d) => samples::build(cfg, d),
        Data::Tokens(t) => Box::new(lm::LanguageModel::new(t, cfg.model.block_size)),
    }
}
