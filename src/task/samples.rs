//! Sample tasks over `(x, y)` tensors: classification (cross-entropy, accuracy) and regression (mean squared
//! error, mean absolute error). They share batching: a permutation of the samples per epoch, the first samples
//! of the validation split for evaluation.
use tch::{Device, Kind, Reduction, Tensor};

use super::{Batch, Eval, Split, Task};
use crate::config::{Config, TaskKind};
use crate::data::{epoch_permutation, Dataset};

pub fn build<'a>(cfg: &Config, d: &'a Dataset) -> Box<dyn Task + 'a> {
    match cfg.data.task {
        TaskKind::Classification => Box::new(Classification(Samples(d))),
        TaskKind::Regression => Box::new(Regression(Samples(d))),
    }
}

/// Batching over a [`Dataset`].
struct Samples<'a>(&'a Dataset);

impl Samples<'_> {
    fn order(&self, seed: u64, epoch: u64) -> Tensor {
        let n = self.0.train_len();
        Tensor::from_slice(&epoch_permutation(seed, epoch, n)).to_device(self.0.x_train.device())
    }

    fn val(&self, cap: Option<usize>) -> Tensor {
        let n = cap.map_or(self.0.val_len(), |c| c.min(self.0.val_len()));
        Tensor::arange(n as i64, (Kind::Int64, self.0.x_val.device()))
    }

    fn gather(&self, idx: &Tensor, split: Split, device: Device) -> Batch {
        let d = self.0;
        let (x, y) = match split {
            Split::Train => Dataset::batch(&d.x_train, &d.y_train, idx, device),
            Split::Val => Dataset::batch(&d.x_val, &d.y_val, idx, device),
        };
        Batch { x, y }
    }
}

struct Classification<'a>(Samples<'a>);

impl Task for Classification<'_> {
    fn train_len(&self) -> usize {
        self.0 .0.train_len()
    }

    fn epoch_order(&self, seed: u64, epoch: u64) -> Tensor {
        self.0.order(seed, epoch)
    }

    fn val_order(&self, cap: Option<usize>) -> Tensor {
        self.0.val(cap)
    }

    fn gather(&self, idx: &Tensor, split: Split, device: Device) -> Batch {
        self.0.gather(idx, split, device)
    }

    fn loss(&self, out: &Tensor, y: &Tensor) -> Tensor {
        out.cross_entropy_loss::<Tensor>(y, None, Reduction::Mean, -100, 0.0)
    }

    fn eval_sums(&self, out: &Tensor, y: &Tensor) -> Vec<Tensor> {
        let loss = out.cross_entropy_loss::<Tensor>(y, None, Reduction::Sum, -100, 0.0).to_kind(Kind::Float);
        let hits = out.argmax(-1, false).eq_tensor(y).sum(Kind::Float);
        vec![loss, hits]
    }

    fn expected_output(&self, batch: &Batch) -> Vec<i64> {
        vec![batch.y.size()[0], self.0 .0.classes]
    }

    fn finish_eval(&self, sums: &[f64], items: usize) -> Eval {
        let n = items.max(1) as f64;
        Eval { val_loss: sums[0] / n, val_accuracy: Some(sums[1] / n), ..Eval::default() }
    }
}

struct Regression<'a>(Samples<'a>);

impl Task for Regression<'_> {
    fn train_len(&self) -> usize {
        self.0 .0.train_len()
    }

    fn epoch_order(&self, seed: u64, epoch: u64) -> Tensor {
        self.0.order(seed, epoch)
    }

    fn val_order(&self, cap: Option<usize>) -> Tensor {
        self.0.val(cap)
    }

    fn gather(&self, idx: &Tensor, split: Split, device: Device) -> Batch {
        self.0.gather(idx, split, device)
    }

    fn loss(&self, out: &Tensor, y: &Tensor) -> Tensor {
        out.to_kind(Kind::Float).mse_loss(y, Reduction::Mean)
    }

    fn eval_sums(&self, out: &Tensor, y: &Tensor) -> Vec<Tensor> {
        let diff = out.to_kind(Kind::Float) - y;
        vec![diff.square().sum(Kind::Float), diff.abs().sum(Kind::Float)]
    }

    fn expected_output(&self, batch: &Batch) -> Vec<i64> {
        batch.y.size()
    }

    fn finish_eval(&self, sums: &[f64], items: usize) -> Eval {
        let n = (items.max(1) as i64 * self.0 .0.classes.max(1)) as f64;
        Eval { val_loss: sums[0] / n, val_mae: Some(sums[1] / n), ..Eval::default() }
    }
}
