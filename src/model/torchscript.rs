//! `model.kind = "torchscript"`: the user's own PyTorch module, saved with `torch.jit.script(m).save(path)`.
//!
//! The module is loaded through the shim (`torch::jit::load`), which also lists its buffers (tch 0.24 exposes
//! none). Its parameters keep their `state_dict` names; a tensor listed under two names (tied weights) is trained
//! once, under its first name, and saved under both. Buffers (BatchNorm statistics, counters) are saved and
//! restored with every checkpoint. `forward` runs in train mode for training steps and eval mode for validation.
//! Pickles (`torch.save` of a module or a state dict) are refused before anything is loaded.
//!
//! A failed `forward` is told in one line (the exception, and for token inputs the hint that their length is
//! `model.block_size`); the TorchScript trace, tens of lines of serialized and original code, goes to a file in the
//! system's temporary directory that the line names.
use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};

use tch::{Device, Tensor};

use super::Model;
use crate::ffi::JitModule;

/// A loaded TorchScript module and its named tensors (live: they alias the module's own).
pub struct TorchScript {
    module: JitModule,
    /// The file it was loaded from (named in a failed forward's trace file).
    path: PathBuf,
    params: Vec<(String, Tensor)>,
    tied: Vec<(String, String)>,
    /// Buffers and frozen (`requires_grad = False`) parameters: saved and restored, never optimized.
    state: Vec<(String, Tensor)>,
    training: Cell<Option<bool>>,
}

/// How to export a module so spotrun can train it.
pub(crate) const HOW_TO_EXPORT: &str =
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
        Ok(TorchScript { module, path: path.to_path_buf(), params, tied, state, training: Cell::new(None) })
    }

    /// A failed forward in one line: the exception (the trace's last line); for token inputs `[B, T]`, that T is
    /// `model.block_size` (a module whose position table is shorter fails this way); and the file holding the
    /// whole trace, or why it could not be written.
    fn forward_error(&self, xs: &Tensor, trace: &str) -> String {
        let exception = trace.lines().rev().map(str::trim).find(|l| !l.is_empty()).unwrap_or("no message");
        let mut line = exception.to_string();
        if !xs.is_floating_point() && xs.dim() == 2 {
            line += &format!(
                "; the inputs are windows of {} tokens: the token window is model.block_size, which must not exceed \
                 the module's own block size",
                xs.size()[1]
            );
        }
        let header = format!("spotrun: forward of {} on inputs {:?} failed:\n\n", self.path.display(), xs.size());
        match save_trace(&(header + trace)) {
            Ok(file) => format!("{line} (full TorchScript trace: {})", file.display()),
            Err(e) => format!("{line} (the full TorchScript trace could not be written: {e})"),
        }
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
        self.module.forward(xs).map_err(|e| self.forward_error(xs, &e.to_string()))
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

/// Writes `text` to a new file `spotrun-forward-PID-N.txt` in the system's temporary directory and returns its
/// path. Not in the run directory: the module is checked before that exists, and a run that never started must
/// leave nothing behind to resume; not beside the module, whose directory may be read-only or shared. Created with
/// `create_new`, so an existing file (or a planted symlink) is never written through.
fn save_trace(text: &str) -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir();
    for n in 0..1000 {
        let path = dir.join(format!("spotrun-forward-{}-{n}.txt", std::process::id()));
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => return f.write_all(text.as_bytes()).and(f.sync_all()).map(|()| path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(format!("{}: 1000 trace files of this process exist already", dir.display())))
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
