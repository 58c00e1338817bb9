//! Sample tasks over `(x, y)` tensors: classification (cross-entropy, accuracy) and regression (mean squared
//! error, mean absolute error). They share batching ([`Samples`]: a permutation of the samples per epoch, the
//! first samples of the validation split for evaluation) and differ only in their [`Objective`].
use tch::{Device, Kind, Reduction, Tensor};

use super::{Batch, Eval, Split, Task};
use crate::config::{Config, TaskKind};
use crate::data::{epoch_permutation, Dataset};

pub(super) fn build<'a>(cfg: &Config, d: &'a Dataset) -> Box<dyn Task + 'a> {
    match cfg.data.task {
        TaskKind::Classification => Box::new(Samples { data: d, objective: Classification }),
        TaskKind::Regression => Box::new(Samples { data: d, objective: Regression }),
    }
}

/// What a sample task optimizes and reports: the part of [`Task`] that is not batching.
trait Objective {
    fn loss(&self, out: &Tensor, y: &Tensor) -> Tensor;
    /// The terms whose mean is each run's loss, `[R, N]`, of `out` `[R, B, ...]` against `y` `[R, B, ...]`, in one
    /// computation.
    fn item_losses(&self, out: &Tensor, y: &Tensor) -> Result<Tensor, tch::TchError>;
    fn eval_sums(&self, out: &Tensor, y: &Tensor) -> Vec<Tensor>;
    /// Metrics from the summed [`Objective::eval_sums`] over `items` samples of `outputs` values each.
    fn finish_eval(&self, sums: &[f64], items: usize, outputs: i64) -> Eval;
    fn expected_output(&self, batch: &Batch, outputs: i64) -> Vec<i64>;
}

/// Batching over a [`Dataset`], with the objective's loss and metrics.
struct Samples<'a, O> {
    data: &'a Dataset,
    objective: O,
}

impl<O: Objective> Task for Samples<'_, O> {
    fn train_len(&self) -> usize {
        self.data.train_len()
    }

    fn epoch_order(&self, seed: u64, epoch: u64) -> Tensor {
        let n = self.data.train_len();
        Tensor::from_slice(&epoch_permutation(seed, epoch, n)).to_device(self.data.x_train.device())
    }

    fn val_order(&self, cap: Option<usize>) -> Tensor {
        let n = cap.map_or(self.data.val_len(), |c| c.min(self.data.val_len()));
        Tensor::arange(n as i64, (Kind::Int64, self.data.x_val.device()))
    }

    fn gather(&self, idx: &Tensor, split: Split, device: Device) -> Batch {
        let d = self.data;
        let (x, y) = match split {
            Split::Train => Dataset::batch(&d.x_train, &d.y_train, idx, device, d.norm.as_ref()),
            Split::Val => Dataset::batch(&d.x_val, &d.y_val, idx, device, d.norm.as_ref()),
        };
        Batch { x, y }
    }

    fn loss(&self, out: &Tensor, y: &Tensor) -> Tensor {
        self.objective.loss(out, y)
    }

    fn losses_by_run(&self, out: &Tensor, y: &Tensor) -> Result<Tensor, tch::TchError> {
        self.objective.item_losses(out, y)?.f_mean_dim(Some([1i64].as_slice()), false, Kind::Float)
    }

    fn eval_sums(&self, out: &Tensor, y: &Tensor) -> Vec<Tensor> {
        self.objective.eval_sums(out, y)
    }

    fn expected_output(&self, batch: &Batch) -> Vec<i64> {
        self.objective.expected_output(batch, self.data.classes)
    }

    fn finish_eval(&self, sums: &[f64], items: usize) -> Eval {
        self.objective.finish_eval(sums, items, self.data.classes)
    }
}

/// Cross-entropy over class logits; accuracy.
struct Classification;

impl Objective for Classification {
    fn loss(&self, out: &Tensor, y: &Tensor) -> Tensor {
        out.cross_entropy_loss::<Tensor>(y, None, Reduction::Mean, -100, 0.0)
    }

    fn item_losses(&self, out: &Tensor, y: &Tensor) -> Result<Tensor, tch::TchError> {
        let (r, b) = (y.size()[0], y.size()[1]);
        let flat = out.f_flatten(0, 1)?.f_cross_entropy_loss::<Tensor>(
            &y.f_flatten(0, 1)?,
            None,
            Reduction::None,
            -100,
            0.0,
        )?;
        flat.f_view([r, b])
    }

    fn eval_sums(&self, out: &Tensor, y: &Tensor) -> Vec<Tensor> {
        let loss = out.cross_entropy_loss::<Tensor>(y, None, Reduction::Sum, -100, 0.0).to_kind(Kind::Float);
        let hits = out.argmax(-1, false).eq_tensor(y).sum(Kind::Float);
        vec![loss, hits]
    }

    fn finish_eval(&self, sums: &[f64], items: usize, _outputs: i64) -> Eval {
        let n = items.max(1) as f64;
        Eval { val_loss: sums[0] / n, val_accuracy: Some(sums[1] / n), ..Eval::default() }
    }

    fn expected_output(&self, batch: &Batch, classes: i64) -> Vec<i64> {
        vec![batch.y.size()[0], classes]
    }
}

/// Mean squared error over float targets `[N, D]`; mean absolute error.
struct Regression;

impl Objective for Regression {
    fn loss(&self, out: &Tensor, y: &Tensor) -> Tensor {
        out.to_kind(Kind::Float).mse_loss(y, Reduction::Mean)
    }

    fn item_losses(&self, out: &Tensor, y: &Tensor) -> Result<Tensor, tch::TchError> {
        out.f_to_kind(Kind::Float)?.f_mse_loss(y, Reduction::None)?.f_flatten(1, -1)
    }

    fn eval_sums(&self, out: &Tensor, y: &Tensor) -> Vec<Tensor> {
        let diff = out.to_kind(Kind::Float) - y;
        vec![diff.square().sum(Kind::Float), diff.abs().sum(Kind::Float)]
    }

    fn finish_eval(&self, sums: &[f64], items: usize, targets: i64) -> Eval {
        let n = (items.max(1) as i64 * targets.max(1)) as f64;
        Eval { val_loss: sums[0] / n, val_mae: Some(sums[1] / n), ..Eval::default() }
    }

    fn expected_output(&self, batch: &Batch, _targets: i64) -> Vec<i64> {
        batch.y.size()
    }
}
