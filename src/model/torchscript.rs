//! `model.kind = "torchscript"`: the user's own PyTorch module, saved with `torch.jit.script(m).save(path)`.
//!
//! The module is loaded through the shim (`torch::jit::load`), which also lists its buffers (tch 0.24 exposes
//! none). Its parameters keep their `state_dict` names; a tensor listed under two names (tied weights) is trained
//! once, under its first name, and saved under both. Buffers (BatchNorm statistics, counters) are saved and
//! restored with every checkpoint. `forward` runs in train mode for training steps and eval mode for validation.
//! Pickles (`torch.save` of a module or a state dict) are refused before anything is loaded.
use std::cell::Cell;
use std::path::Path;

use tch::{Device, Tensor};

use super::Model;
use crate::ffi::JitModule;

/// A loaded TorchScript module and its named tensors (live: they alias the module's own).
pub struct TorchScript {
    module: JitModule,
    params: Vec<(String, Tensor)>,
    tied: Vec<(String, String)>,
    /// Buffers and frozen (`requires_grad = False`) parameters: saved and restored, never optimized.
    state: Vec<(String, Tensor)>,
    training: Cell<Option<bool>>,
}

/// How to export a module so spotrun can train it.
pub const HOW_TO_EXPORT: &str =
    "export it with `torch.jit.script(model).save(\"model.pt\")` (see README: \"Your own PyTorch model\")";

impl TorchScript {
    /// Loads `path` onto `device` after checking it is a TorchScript archive. `Err` says what the file is instead.
    pub fn load(path: &Path, device: Device) -> Result<TorchScript, String> {
        check_archive(path)?;
        let module = JitModule::load(path, device).map_err(|e| format!("not a loadable TorchScript module: {e}"))?;
        let named = module.named(false).map_err(|e| e.to_string())?;
        let (mut params, mut tied, mut state) = (Vec::new(), Vec::new(), Vec::new());
        for (name, t, alias) in named {
            match alias {
                Some(first) => tied.push((name, first)),
                None if t.requires_grad() => params.push((name, t)),
                None => state.push((name, t)),
            }
        }
        if params.is_empty() {
            return Err("the module has no trainable parameters (none with requires_grad = True)".into());
        }
        for (name, t, alias) in module.named(true).map_err(|e| e.to_string())? {
            match alias {
                Some(first) => tied.push((name, first)),
                None => state.push((name, t)),
            }
        }
        Ok(TorchScript { module, params, tied, state, training: Cell::new(None) })
    }

    fn mode(&self, train: bool) -> Result<(), String> {
        if self.training.get() != Some(train) {
            self.module.set_train(train).map_err(|e| e.to_string())?;
            self.training.set(Some(train));
        }
        Ok(())
    }
}

impl Model for TorchScript {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        // A libtorch error inside a training step (the module's own code failed): a panic that the trainer's
        // boundary turns into one error line. The output shape was checked on a batch before training.
        match self.try_forward(xs, train) {
            Ok(t) => t,
            Err(e) => panic!("the TorchScript module's forward failed: {e}"),
        }
    }

    fn try_forward(&self, xs: &Tensor, train: bool) -> Result<Tensor, String> {
        self.mode(train)?;
        self.module.forward(xs).map_err(|e| e.to_string())
    }

    fn tied(&self) -> Vec<(String, String)> {
        self.tied.clone()
    }

    fn parameters(&self) -> Option<Vec<(String, Tensor)>> {
        Some(self.params.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect())
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        self.state.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect()
    }

    fn save_module(&self, path: &Path) -> Option<Result<(), String>> {
        Some(self.module.save(path).map_err(|e| e.to_string()))
    }
}

/// A TorchScript archive is a zip with `constants.pkl` and `code/`; `torch.save` writes a zip with only a
/// `data.pkl` (or, before torch 1.6, a bare pickle). Neither pickle is ever loaded.
fn check_archive(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    let pickle = "is a pickle (torch.save of a model or a state_dict), which spotrun never loads; ";
    match bytes.get(..2) {
        Some([0x80, _]) => Err(format!("{pickle}{HOW_TO_EXPORT}")),
        Some(b"PK") if has(b"constants.pkl") => Ok(()),
        Some(b"PK") if has(b"data.pkl") => Err(format!("{pickle}{HOW_TO_EXPORT}")),
        _ => Err(format!("not a TorchScript archive; {HOW_TO_EXPORT}")),
    }
}
