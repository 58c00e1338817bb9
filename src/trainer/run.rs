//! `spotrun train`: config → device → data → run directory → [`Trainer`] → outputs.
//!
//! Order matters for "bad input leaves files untouched": the config, the device request and the data are all
//! checked before the run directory is created or any file in it is written.
use std::path::{Path, PathBuf};

use tch::nn::VarStore;
use tch::Device;

use super::fit::Trainer;
use super::metrics::EpochMetrics;
use super::progress::Progress;
use crate::checkpoint::{self, append_line, write_atomic};
use crate::config::{self, Config, ConfigError, LoadedConfig};
use crate::data::Dataset;
use crate::device;
use crate::error::{Error, Result};
use crate::{ffi, model};

/// What `spotrun train` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    pub config: Option<PathBuf>,
    pub sets: Vec<String>,
    pub run_dir: Option<PathBuf>,
    pub quiet: bool,
}

/// The result of a finished run.
#[derive(Debug)]
pub struct TrainSummary {
    pub run_id: String,
    pub run_dir: PathBuf,
    pub metrics: Vec<EpochMetrics>,
}

/// Runs `spotrun train` end to end.
pub fn train(opts: &TrainOptions) -> Result<TrainSummary> {
    let loaded = config::load(opts.config.as_deref(), &opts.sets)?;
    let cfg = &loaded.config;
    let run_id = config::config_hash(cfg);
    if cfg.train.deterministic {
        // cuBLAS reads this when its first handle is created, so it must be set before any CUDA work.
        std::env::set_var("CUBLAS_WORKSPACE_CONFIG", ":4096:8");
        ffi::set_deterministic(true).map_err(|e| Error::Device(e.to_string()))?;
    }
    let request = device::parse_device(&cfg.train.device).unwrap_or(device::DeviceRequest::Auto);
    let dev = device::select(request).map_err(Error::Device)?;
    let threads = if cfg.train.threads == 0 { device::cpu_threads() } else { cfg.train.threads };
    tch::set_num_threads(threads as i32);

    let mut data = Dataset::load(&cfg.data, &cfg.model)?;
    let free = match dev {
        Device::Cuda(i) => device::gpu_info(i).ok().map(|g| g.free_bytes as u64),
        _ => None,
    };
    let data_on_device = data.place(dev, cfg.data.on_device, free);
    tch::manual_seed(cfg.train.seed as i64);
    let vs = VarStore::new(dev);
    let net = model::build(&vs.root(), &cfg.model, &data.sample_shape, data.classes)
        .map_err(|(key, message)| ConfigError::Key { file: loaded.origin.clone(), key, message })?;
    // Everything the user handed us has been checked; only now touch the run directory.
    let run_dir = opts.run_dir.clone().unwrap_or_else(|| default_run_dir(cfg, &run_id));
    prepare_run_dir(&run_dir, &loaded, &run_id)?;
    let mut trainer = Trainer::new(cfg, &vs, net.as_ref(), &data, dev);
    let progress = Progress::new(opts.quiet, trainer.total_steps(), cfg.train.epochs);
    progress.println(&banner(cfg, &run_id, &run_dir, dev, threads, &trainer, &data, data_on_device, &vs));

    let metrics_path = run_dir.join("metrics.jsonl");
    let outcome = trainer.fit(&progress, &mut |m: &EpochMetrics| {
        append_line(&metrics_path, &m.to_json_line()).map_err(|e| Error::io(&metrics_path, e))
    })?;
    checkpoint::save(&run_dir.join("model.safetensors"), &named_variables(&vs))?;
    Ok(TrainSummary { run_id, run_dir, metrics: outcome.metrics })
}

/// `runs/<name>-<first 8 hex digits of the run id>`.
pub fn default_run_dir(cfg: &Config, run_id: &str) -> PathBuf {
    let name = cfg.train.name.as_deref().unwrap_or("run");
    PathBuf::from("runs").join(format!("{name}-{}", &run_id[..8]))
}

/// The model's variables sorted by name (PyTorch `state_dict` names).
pub fn named_variables(vs: &VarStore) -> Vec<(String, tch::Tensor)> {
    let mut v: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Creates the run directory and writes `config.toml`; refuses a directory that holds a different run.
fn prepare_run_dir(dir: &Path, loaded: &LoadedConfig, run_id: &str) -> Result<()> {
    let existing = dir.join("config.toml");
    if existing.exists() {
        let text = std::fs::read_to_string(&existing).map_err(|e| Error::io(&existing, e))?;
        let theirs = config::parse_str(&text, &existing)?;
        if config::config_hash(&theirs) != run_id {
            return Err(Error::RunDir(format!(
                "{} holds a run with a different config (run id {}); this config's run id is {}. Use another --run-dir",
                dir.display(),
                &config::config_hash(&theirs)[..8],
                &run_id[..8]
            )));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let text = format!(
        "# Resolved by spotrun from {}; run id {run_id}\n{}",
        loaded.origin.display(),
        toml::to_string(&loaded.config).map_err(|e| Error::RunDir(format!("cannot serialise config: {e}")))?
    );
    write_atomic(&existing, text.as_bytes()).map_err(|e| Error::io(&existing, e))?;
    let metrics = dir.join("metrics.jsonl");
    write_atomic(&metrics, b"").map_err(|e| Error::io(&metrics, e))
}

#[allow(clippy::too_many_arguments)]
fn banner(
    cfg: &Config,
    run_id: &str,
    dir: &Path,
    dev: Device,
    threads: usize,
    t: &Trainer,
    data: &Dataset,
    on_dev: bool,
    vs: &VarStore,
) -> String {
    let params: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
    let device = match dev {
        Device::Cuda(i) => match device::gpu_info(i) {
            Ok(g) => format!("cuda:{i} ({})", g.name),
            Err(_) => format!("cuda:{i}"),
        },
        _ => format!("cpu ({threads} threads)"),
    };
    format!(
        "spotrun train: run {} -> {}\n  device {device} | precision {} | model {} ({:.2}M params)\n  data {} ({} train / {} val, {:.1} MB, {}) | batch {} | {} epochs x {} steps",
        &run_id[..8],
        dir.display(),
        t.precision().name(),
        model::describe(&cfg.model, &data.sample_shape, data.classes),
        params as f64 / 1e6,
        data.origin,
        data.train_len(),
        data.val_len(),
        data.nbytes() as f64 / 1e6,
        match (dev, on_dev) {
            (Device::Cpu, _) => "in RAM",
            (_, true) => "in GPU memory",
            (_, false) => "in host RAM, batches copied per step",
        },
        cfg.train.batch_size,
        cfg.train.epochs,
        t.steps_per_epoch()
    )
}
