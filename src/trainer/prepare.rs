//! Stage 1 of `spotrun train`: everything that can be checked without writing a file. The config, the device, the
//! data (loaded once, checked, placed on the device), the model (counted against free memory, then built). Bad
//! input fails here, before any run file exists.
use std::path::PathBuf;

use tch::nn::VarStore;
use tch::Device;

use super::rundir;
use super::types::TrainOptions;
use crate::boundary::{self, Phase};
use crate::config::{self, Config, ConfigError, DataSource, LoadedConfig, ModelKind, OptimKind};
use crate::data::Data;
use crate::device;
use crate::error::{Error, Result};
use crate::model::{self, Model};

/// What the later stages work on.
pub(crate) struct Prepared {
    pub loaded: LoadedConfig,
    pub run_id: String,
    pub device: Device,
    pub threads: usize,
    pub data: Data,
    pub data_on_device: bool,
    pub vs: VarStore,
    pub net: Box<dyn Model>,
    pub run_dir: PathBuf,
    pub ckpt_dir: PathBuf,
    /// Warnings and notes gathered on the way, printed after the banner.
    pub lines: Vec<String>,
}

impl Prepared {
    pub(super) fn cfg(&self) -> &Config {
        &self.loaded.config
    }
}

/// The resolved config of a `train` command (a sweep hands one over; otherwise file + `--set`s).
pub(crate) fn load_config(opts: &TrainOptions) -> Result<LoadedConfig> {
    Ok(match &opts.loaded {
        Some(l) => l.clone(),
        None => config::load(opts.config.as_deref(), &opts.sets)?,
    })
}

/// Stage 1: device, threads, data and model; nothing written.
pub(crate) fn prepare(loaded: LoadedConfig, opts: &TrainOptions) -> Result<Prepared> {
    let cfg = &loaded.config;
    let run_id = config::config_hash(cfg)?;
    let request = device::parse_device(&cfg.train.device).unwrap_or(device::DeviceRequest::Auto);
    let dev = device::select(request).map_err(Error::Device)?;
    let threads = if cfg.train.threads == 0 { device::cpu_threads() } else { cfg.train.threads };
    let mut lines = Vec::new();
    if threads > device::cpu_threads() {
        lines.push(format!(
            "warning: train.threads = {threads} but this machine has {} CPU threads; oversubscribed threads slow \
             training down",
            device::cpu_threads()
        ));
    }
    tch::set_num_threads(threads as i32);
    let run_dir = opts.run_dir.clone().unwrap_or_else(|| default_run_dir(cfg, &run_id));
    rundir::check_creatable(&run_dir)?;
    let (data, data_on_device) = load_data(cfg, dev, !opts.quiet)?;
    lines.extend(data.warnings().iter().map(|w| format!("warning: {w}")));
    if let Some(names) = data.class_names() {
        let shown: Vec<String> = names.iter().take(20).enumerate().map(|(i, n)| format!("{i}={n}")).collect();
        let more = if names.len() > 20 { format!(" and {} more", names.len() - 20) } else { String::new() };
        let what = if cfg.data.source == DataSource::Images { "class folders" } else { "string labels" };
        lines.push(format!("note: {what} as classes in sorted order: {}{more}", shown.join(", ")));
    }
    check_model_fits(cfg, &data, dev)?;
    tch::manual_seed(cfg.train.seed as i64);
    let vs = VarStore::new(dev);
    let (shape, outputs) = data.model_io();
    let building = || format!("building the model ({})", model::describe(&cfg.model, &shape, outputs));
    let net = boundary::catch(Phase::Setup, &building, || {
        model::build(&vs.root(), &cfg.model, &shape, outputs)
            .map_err(|b| ConfigError::Key { file: loaded.origin.clone(), key: b.key, message: b.message }.into())
    })?;
    if cfg.model.kind == ModelKind::Torchscript {
        check_module(cfg, &data, net.as_ref(), dev, &mut lines)?;
    }
    let ckpt_dir = cfg.checkpoint.dir.clone().unwrap_or_else(|| run_dir.join("checkpoints"));
    Ok(Prepared { run_id, device: dev, threads, data, data_on_device, vs, net, run_dir, ckpt_dir, lines, loaded })
}

/// Loads and checks the data once per process: a worker that trains run after run on the same data (same
/// `[data]`, model shape keys, device and files on disk) reuses the tensors it loaded for the first, on the device
/// they were placed on. One entry: a sweep over two datasets holds one at a time.
fn load_data(cfg: &Config, dev: Device, progress: bool) -> Result<(Data, bool)> {
    thread_local! {
        static LOADED: std::cell::RefCell<Option<(String, Data, bool)>> = const { std::cell::RefCell::new(None) };
    }
    let key = data_key(cfg, dev);
    let hit = LOADED.with_borrow(|c| match (c, &key) {
        (Some((k, d, on)), Some(key)) if k == key => Some((d.shallow_clone(), *on)),
        _ => None,
    });
    if let Some(hit) = hit {
        return Ok(hit);
    }
    LOADED.with_borrow_mut(|c| *c = None);
    let (data, on_device) = load_data_uncached(cfg, dev, progress)?;
    if let Some(key) = key {
        LOADED.with_borrow_mut(|c| *c = Some((key, data.shallow_clone(), on_device)));
    }
    Ok((data, on_device))
}

/// What identifies loaded data: the config that shapes it, the device, and the size and modification time of
/// every file read (`None` when a file cannot be looked at: then nothing is reused).
fn data_key(cfg: &Config, dev: Device) -> Option<String> {
    let shape = (&cfg.model.kind, cfg.model.inputs, cfg.model.classes, cfg.model.block_size, cfg.model.vocab_size);
    let mut key = format!("{}|{shape:?}|{dev:?}", serde_json::to_string(&cfg.data).ok()?);
    if let Some(entry) = Data::entry_dir(&cfg.data) {
        // A prepared source: its cache entry's name covers every input file and the settings.
        return Some(format!("{key}|{}", entry.ok()?.display()));
    }
    if let Some(files) = crate::data::source_files(&cfg.data) {
        for f in files {
            let m = std::fs::metadata(&f).ok()?;
            key.push_str(&format!("|{}:{}:{:?}", f.display(), m.len(), m.modified().ok()?));
        }
    } else if let Some(path) = &cfg.data.path {
        let meta = std::fs::metadata(path).ok()?;
        let files = if meta.is_dir() {
            ["train.bin", "val.bin", "meta.json"].iter().map(|f| path.join(f)).collect()
        } else {
            vec![path.clone()]
        };
        for f in files {
            let m = std::fs::metadata(&f).ok()?;
            key.push_str(&format!("|{}:{}:{:?}", f.display(), m.len(), m.modified().ok()?));
        }
    }
    Some(key)
}

/// Loads and checks the data, then places it on the device when it fits (allocation failures are errors).
fn load_data_uncached(cfg: &Config, dev: Device, progress: bool) -> Result<(Data, bool)> {
    let source = cfg.data.path.as_ref().map_or("synthetic".into(), |p| p.display().to_string());
    check_tokens_fit(cfg)?;
    check_tabular_fits(cfg)?;
    // Text: tokenized into the data cache first (streaming, bounded memory), then the entry is checked against
    // the memory available and loaded. Image folders are decoded into their entry (or read from it) by the load.
    let preparing = || format!("preparing the data ({source})");
    let prepared = if cfg.data.source == DataSource::Text {
        boundary::catch(Phase::Setup, &preparing, || Ok(Data::prepare(&cfg.data, progress)?))?
    } else {
        None
    };
    if let Some(p) = &prepared {
        if progress {
            tell!("{}", p.describe());
        }
        check_prepared_tokens_fit(&p.dir)?;
    }
    let loading = || format!("loading the data ({source})");
    let load = || match &prepared {
        Some(p) => Ok(Data::load_prepared_text(&cfg.data, &cfg.model, p)?),
        None => Ok(Data::load_with(&cfg.data, &cfg.model, progress)?),
    };
    let mut data = boundary::catch(Phase::Setup, &loading, load)?;
    test_startup_delay();
    let free = match dev {
        Device::Cuda(i) => device::gpu_memory(i).ok().map(|m| m.budget()),
        _ => None,
    };
    let mb = data.nbytes() as f64 / 1e6;
    let placing = || format!("moving the data ({mb:.1} MB) to {dev:?}");
    let on_device = boundary::catch(Phase::Setup, &placing, || Ok(data.place(dev, cfg.data.on_device, free)))?;
    Ok((data, on_device))
}

/// Token files are read whole and held as int32: refuses, before reading, a corpus whose load (the raw bytes
/// plus two int32 copies at the peak) does not fit in the host memory available.
fn check_tokens_fit(cfg: &Config) -> Result<()> {
    match (cfg.data.source, &cfg.data.path) {
        (DataSource::Tokens, Some(dir)) => token_files_fit(dir, cfg.data.token_dtype.size() as u128),
        _ => Ok(()),
    }
}

/// Tokenized text's cache entry (its `meta.json` names the id width) against the host memory available.
fn check_prepared_tokens_fit(entry: &std::path::Path) -> Result<()> {
    let meta: serde_json::Value =
        std::fs::read(entry.join("meta.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let per_token = if meta["token_dtype"] == "uint32" { 4 } else { 2 };
    token_files_fit(entry, per_token)
}

/// Token files in `dir` (`train.bin`, `val.bin`, `per_token` bytes an id) against the host memory available.
fn token_files_fit(dir: &std::path::Path, per_token: u128) -> Result<()> {
    let size = |f: &str| std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0) as u128;
    let raw = size("train.bin") + size("val.bin");
    let needed = raw + 2 * 4 * (raw / per_token);
    let Some(available) = device::host_available_bytes() else { return Ok(()) };
    if needed <= available as u128 {
        return Ok(());
    }
    Err(Error::OutOfMemory {
        message: format!(
            "{}: loading {} of token ids takes {} at its peak, but this machine has {} free (data.path); use a \
             machine with more memory or a smaller corpus",
            dir.display(),
            human_bytes(raw),
            human_bytes(needed),
            human_bytes(available as u128)
        ),
        before_training: true,
    })
}

/// NumPy, Parquet and image data: refuses, before reading or decoding, tensors (sized from the headers, footers or
/// the image count and `data.shape`) that do not fit in the host memory available.
pub(crate) fn check_tabular_fits(cfg: &Config) -> Result<()> {
    let Some(needed) = crate::data::planned_bytes(&cfg.data) else { return Ok(()) };
    let Some(available) = device::host_available_bytes() else { return Ok(()) };
    if needed <= available {
        return Ok(());
    }
    let path = cfg.data.path.clone().unwrap_or_default();
    Err(Error::OutOfMemory {
        message: format!(
            "{}: the data takes {} in memory, but this machine has {} free (data.path); use a machine with more \
             memory or less data",
            path.display(),
            human_bytes(needed as u128),
            human_bytes(available as u128)
        ),
        before_training: true,
    })
}

/// A user's TorchScript module, on two validation items before anything is written: its output must have the
/// task's shape; eval mode must not update buffers (a module traced in train mode keeps updating BatchNorm
/// statistics: refused) and should be deterministic (dropout frozen on by tracing: a warning). Also turns the
/// graph executor's optimisation off on this (the training) thread, so results do not depend on its warm-up
/// history and a resume stays exact under autocast.
fn check_module(cfg: &Config, data: &Data, net: &dyn Model, dev: Device, lines: &mut Vec<String>) -> Result<()> {
    tch::jit::set_graph_executor_optimize(false);
    let path = cfg.model.path.clone().unwrap_or_default();
    let bad = |message: String| Error::from(ConfigError::Key { file: path.clone(), key: "model.path".into(), message });
    let task = crate::task::build(cfg, data);
    let idx = task.val_order(Some(2));
    let batch = task.gather(&idx, crate::task::Split::Val, dev);
    let state: Vec<tch::Tensor> = net.state().iter().map(|(_, t)| t.copy()).collect();
    let (a, b) = tch::no_grad(|| -> std::result::Result<_, String> {
        tch::manual_seed(1);
        let a = net.try_forward(&batch.x, false)?;
        tch::manual_seed(2);
        Ok((a, net.try_forward(&batch.x, false)?))
    })
    .map_err(|e| {
        let message = format!("forward failed on a batch of inputs shaped {:?}: {e}", batch.x.size());
        // Token windows ([B, T] integers): what the module could not take is most likely `model.block_size`.
        let windows = batch.x.dim() == 2 && !batch.x.is_floating_point();
        let key = if windows { "model.block_size" } else { "model.path" };
        Error::from(ConfigError::Key { file: path.clone(), key: key.into(), message })
    })?;
    let want = task.expected_output(&batch);
    if a.size() != want {
        return Err(bad(format!(
            "forward returns {:?} for inputs {:?}; {} needs {want:?} (set model.classes if the labels do not show \
             every class)",
            a.size(),
            batch.x.size(),
            cfg.task().name()
        )));
    }
    let moved =
        net.state().iter().zip(&state).find(|((_, now), before)| !now.equal(before)).map(|((n, _), _)| n.clone());
    for ((_, now), before) in net.state().iter().zip(&state) {
        tch::no_grad(|| now.shallow_clone().copy_(before));
    }
    if let Some(name) = moved {
        return Err(bad(format!(
            "buffer `{name}` changes in eval mode: the module was traced in train mode (torch.jit.trace freezes the \
             mode), so BatchNorm statistics would keep updating during validation; {}",
            crate::model::HOW_TO_EXPORT
        )));
    }
    if !a.equal(&b) {
        lines.push(format!(
            "warning: {}: two eval passes give different outputs: dropout stays on in eval mode (a module traced in \
             train mode?); torch.jit.script keeps train/eval switchable",
            path.display()
        ));
    }
    Ok(())
}

/// Test-only: `SPOTRUN_TEST_STARTUP_DELAY_MS=N` says so on stderr and sleeps N ms after loading the data, so a test
/// can deliver a signal during start-up without racing the process.
fn test_startup_delay() {
    #[cfg(feature = "test-hooks")]
    if let Some(ms) = std::env::var("SPOTRUN_TEST_STARTUP_DELAY_MS").ok().and_then(|v| v.parse::<u64>().ok()) {
        tell!("test: start-up delay {ms} ms");
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// `runs/<name>-<first 8 hex digits of the run id>`.
pub(super) fn default_run_dir(cfg: &Config, run_id: &str) -> PathBuf {
    let name = cfg.train.name.as_deref().unwrap_or("run");
    PathBuf::from("runs").join(format!("{name}-{}", config::short_id(run_id)))
}

/// Refuses a model whose parameters, gradients and optimizer state cannot fit in the memory `dev` has left
/// (counted without allocating anything), with what was asked and what to change. On a GPU "left" is this run's
/// budget ([`device::GpuMemory::budget`]: free plus this process's cached blocks, within its `--per-gpu` share),
/// and the refusal names what it was measured from.
fn check_model_fits(cfg: &Config, data: &Data, dev: Device) -> Result<()> {
    let (shape, outputs) = data.model_io();
    let params = model::param_count(&cfg.model, &shape, outputs);
    let copies: u128 = match (cfg.optim.kind, cfg.optim.momentum > 0.0) {
        (OptimKind::Adamw, _) => 4, // weights, gradients, two moments
        (OptimKind::Sgd, true) => 3,
        (OptimKind::Sgd, false) => 2,
    };
    let needed = params * 4 * copies;
    let (available, place) = match dev {
        Device::Cuda(i) => match device::gpu_memory(i) {
            Ok(m) => (
                Some(m.budget()),
                format!("cuda:{i} has {} for this run ({})", human_bytes(m.budget().into()), measured(&m)),
            ),
            Err(_) => (None, String::new()),
        },
        _ => device::host_available_bytes()
            .map_or((None, String::new()), |a| (Some(a), format!("this machine has {} free", human_bytes(a.into())))),
    };
    let Some(available) = available else { return Ok(()) };
    if needed <= available as u128 {
        return Ok(());
    }
    let key = match cfg.model.kind {
        ModelKind::Cnn => "model.channels / model.hidden",
        ModelKind::Gpt => "model.n_layer / model.n_embd",
        ModelKind::Torchscript => "model.path",
        ModelKind::Mlp => "model.hidden",
    };
    Err(Error::OutOfMemory {
        message: format!(
            "the model ({}) has {params} parameters: {} as fp32, {} with gradients and {} state, but {place}; \
             make it smaller ({key})",
            model::describe(&cfg.model, &shape, outputs),
            human_bytes(params * 4),
            human_bytes(needed),
            optim_name(cfg.optim.kind),
        ),
        before_training: true,
    })
}

/// What a GPU budget was worked out from, for a refusal: `80.0 GB total, 19.0 GB free, 20.0 GB cached by this
/// process (10.0 GB in its tensors), a 1/2 share: 40.0 GB`.
fn measured(m: &device::GpuMemory) -> String {
    let share = m.total / m.workers.max(1);
    format!(
        "{} total, {} free, {} cached by this process ({} in its tensors), a 1/{} share: {}",
        human_bytes(m.total.into()),
        human_bytes(m.free.into()),
        human_bytes(m.cached.into()),
        human_bytes(m.held.into()),
        m.workers.max(1),
        human_bytes(share.into())
    )
}

pub(crate) fn optim_name(k: OptimKind) -> &'static str {
    match k {
        OptimKind::Adamw => "adamw",
        OptimKind::Sgd => "sgd",
    }
}

/// `12.5 GB`-style sizes (decimal units).
pub(super) fn human_bytes(b: u128) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    format!("{v:.1} {}", units[i])
}
