//! Language modelling on a token stream: windows of `block_size + 1` tokens, inputs the first `block_size`,
//! targets the last `block_size` (the next token at every position), mean cross-entropy per token.
//!
//! An epoch covers the training tokens once: `W = (N - 1) / block_size` windows laid end to end from an offset in
//! `0..=(N - 1 - W·block_size)`, both the offset and the window order drawn from `(seed, epoch)`. Validation uses
//! fixed windows, evenly spaced over the validation split.
use tch::{Device, Kind, Reduction, Tensor};

use super::{Batch, Eval, Split, Task};
use crate::data::{epoch_permutation, SplitMix64, TokenData};

pub(super) struct LanguageModel<'a> {
    data: &'a TokenData,
    block: i64,
}

impl<'a> LanguageModel<'a> {
    pub(super) fn new(data: &'a TokenData, block: i64) -> LanguageModel<'a> {
        LanguageModel { data, block }
    }

    /// Whole windows in a stream of `n` tokens.
    fn windows(&self, n: i64) -> i64 {
        (n - 1) / self.block
    }

    fn tokens(&self, split: Split) -> &Tensor {
        match split {
            Split::Train => &self.data.train,
            Split::Val => &self.data.val,
        }
    }
}

impl Task for LanguageModel<'_> {
    fn train_len(&self) -> usize {
        self.windows(self.data.train.size()[0]) as usize
    }

    fn epoch_order(&self, seed: u64, epoch: u64) -> Tensor {
        let n = self.data.train.size()[0];
        let w = self.windows(n);
        let spare = (n - 1 - w * self.block) as u64;
        let offset = SplitMix64::keyed(&[seed, epoch, 0x6f66_6673_6574]).below(spare + 1) as i64; // "offset"
        let order = Tensor::from_slice(&epoch_permutation(seed, epoch, w as usize));
        (order * self.block + offset).to_device(self.data.train.device())
    }

    fn val_order(&self, cap: Option<usize>) -> Tensor {
        let w = self.windows(self.data.val.size()[0]);
        let k = cap.map_or(w, |c| (c as i64).min(w)).max(1);
        // Window i of k evenly spaced ones: start of whole window floor(i·w/k).
        let starts: Vec<i64> = (0..k).map(|i| i * w / k * self.block).collect();
        Tensor::from_slice(&starts).to_device(self.data.val.device())
    }

    fn gather(&self, idx: &Tensor, split: Split, device: Device) -> Batch {
        let tokens = self.tokens(split);
        let span = Tensor::arange(self.block + 1, (Kind::Int64, tokens.device()));
        let at = idx.to_device(tokens.device()).unsqueeze(1) + span.unsqueeze(0);
        let w = crate::data::to_device_async(&tokens.take(&at), device).to_kind(Kind::Int64);
        Batch { x: w.narrow(1, 0, self.block), y: w.narrow(1, 1, self.block) }
    }

    fn loss(&self, out: &Tensor, y: &Tensor) -> Tensor {
        let v = out.size().last().copied().unwrap_or(1);
        out.reshape([-1, v]).cross_entropy_loss::<Tensor>(&y.reshape([-1]), None, Reduction::Mean, -100, 0.0)
    }

    fn eval_sums(&self, out: &Tensor, y: &Tensor) -> Vec<Tensor> {
        let v = out.size().last().copied().unwrap_or(1);
        let sum = out.reshape([-1, v]).cross_entropy_loss::<Tensor>(&y.reshape([-1]), None, Reduction::Sum, -100, 0.0);
        vec![sum.to_kind(Kind::Float)]
    }

    fn finish_eval(&self, sums: &[f64], items: usize) -> Eval {
        let val_loss = sums[0] / (items.max(1) as f64 * self.block as f64);
        Eval { val_loss, val_ppl: Some(val_loss.exp()), ..Eval::default() }
    }

    fn expected_output(&self, batch: &Batch) -> Vec<i64> {
        let mut shape = batch.y.size();
        shape.push(self.data.vocab_size);
        shape
    }

    fn tokens_per_item(&self) -> Option<usize> {
        Some(self.block as usize)
    }
}
