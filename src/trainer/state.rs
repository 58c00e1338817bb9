//! A trainer's state as named tensors: the model's whole `state_dict` (parameters, tied aliases, buffers), the
//! EMA's, and the snapshot a checkpoint stores and restores (optimizer, grad scaler, epoch accumulators, EMA).
use std::collections::HashMap;

use tch::{Device, Tensor};

use super::fit::{NamedTensors, Trainer};
use crate::model::Model;

impl Trainer<'_> {
    /// The EMA weights as a whole `state_dict` (tied aliases and the live buffers included), when `train.ema` is on.
    pub fn ema_weights(&self) -> Option<NamedTensors> {
        let ema = self.ema.as_ref()?;
        let params = self.names.iter().zip(ema.tensors()).map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
        Some(model_weights(params, self.model))
    }

    /// The model's whole `state_dict`, live: parameters, tied aliases and buffers, sorted by name.
    pub fn weights(&self) -> NamedTensors {
        let params: NamedTensors =
            self.names.iter().zip(&self.params).map(|(n, p)| (n.clone(), p.shallow_clone())).collect();
        model_weights(params, self.model)
    }

    /// Host copies of everything a checkpoint needs: `(model weights, state)`. State holds the optimizer
    /// (`optim.*`), the grad scaler (`scaler.*`) and the epoch accumulators (`epoch.loss_sum`, `epoch.skipped`).
    /// Copies, not aliases: training may go on while they are written.
    pub fn snapshot(&self) -> (NamedTensors, NamedTensors) {
        // Contiguous host copies: the CNN's channels-last weights (and their optimizer state) are stored in the
        // standard layout, so the files read as a PyTorch `state_dict` and the writer streams them directly.
        let host = |t: &Tensor| {
            let t = t.detach();
            match (t.device(), t.is_contiguous()) {
                (Device::Cpu, true) => t.copy(),
                (Device::Cpu, false) => t.contiguous(),
                _ => t.contiguous().to_device(Device::Cpu),
            }
        };
        let model = self.weights().iter().map(|(n, t)| (n.clone(), host(t))).collect();
        let mut state: Vec<(String, Tensor)> =
            self.optimizer.state().into_iter().map(|(k, v)| (format!("optim.{k}"), host(&v))).collect();
        if let Some(s) = &self.scaler {
            state.extend(s.state().into_iter().map(|(k, v)| (format!("scaler.{k}"), host(&v))));
        }
        state.push(("epoch.loss_sum".into(), host(&self.loss_sum)));
        state.push(("epoch.skipped".into(), host(&self.skipped)));
        if let Some(ema) = &self.ema {
            state.extend(self.names.iter().zip(ema.tensors()).map(|(n, t)| (format!("ema.{n}"), host(t))));
        }
        (model, state)
    }

    /// Restores a [`Trainer::snapshot`] taken after `step` steps. Every expected tensor must be present with the
    /// same shape; `Err` names the first one that is not (the checkpoint does not belong to this model/config).
    pub fn restore(
        &mut self,
        model: &HashMap<String, Tensor>,
        state: &HashMap<String, Tensor>,
        step: u64,
    ) -> Result<(), String> {
        tch::no_grad(|| -> Result<(), String> {
            for (name, p) in self.names.iter().zip(&self.params) {
                let src = model.get(name).ok_or_else(|| format!("model tensor `{name}` missing"))?;
                if src.size() != p.size() {
                    return Err(format!(
                        "model tensor `{name}` has shape {:?}, this model has {:?}",
                        src.size(),
                        p.size()
                    ));
                }
                p.shallow_clone().f_copy_(src).map_err(|e| e.to_string())?;
            }
            for (alias, _) in self.model.tied() {
                if !model.contains_key(&alias) {
                    return Err(format!("model tensor `{alias}` (tied) missing"));
                }
            }
            for (name, dst) in self.model.state() {
                let src = model.get(&name).ok_or_else(|| format!("model buffer `{name}` missing"))?;
                dst.shallow_clone().f_copy_(src).map_err(|e| format!("model buffer `{name}`: {e}"))?;
            }
            let expected = self.names.len() + self.model.tied().len() + self.model.state().len();
            if model.len() != expected {
                return Err(format!("checkpoint has {} model tensors, this model has {expected}", model.len()));
            }
            let sub = |prefix: &str| -> HashMap<String, Tensor> {
                state
                    .iter()
                    .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.shallow_clone())))
                    .collect()
            };
            self.optimizer.load_state(&sub("optim.")).map_err(|e| e.to_string())?;
            if let Some(s) = &mut self.scaler {
                s.load_state(&sub("scaler."))?;
            }
            for (name, dst) in [("epoch.loss_sum", &mut self.loss_sum), ("epoch.skipped", &mut self.skipped)] {
                let src = state.get(name).ok_or_else(|| format!("state tensor `{name}` missing"))?;
                dst.f_copy_(src).map_err(|e| format!("state tensor `{name}`: {e}"))?;
            }
            if let Some(ema) = &mut self.ema {
                ema.load(state, &self.names)?;
            }
            Ok(())
        })?;
        self.step = step;
        Ok(())
    }
}

/// A model's whole `state_dict` from its trainable `params`: plus the tied aliases (the same tensor under the other
/// names PyTorch lists) and the buffers, sorted by name, so the file loads with `strict=True`.
pub(super) fn model_weights(params: NamedTensors, model: &dyn Model) -> NamedTensors {
    let mut all = params;
    for (alias, name) in model.tied() {
        let same = all.iter().find(|(n, _)| *n == name).map(|(_, t)| t.shallow_clone());
        if let Some(t) = same {
            all.push((alias, t));
        }
    }
    all.extend(model.state());
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}
