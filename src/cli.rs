//! The command line: clap definitions and dispatch. Maps every outcome to an exit code; prints errors once.
// The doc comments of the clap types are `--help` text, read in a terminal: `<name>` and `[512,512]` there are
// literal, not HTML or intra-doc links.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::device;

use crate::engines::{self, k8s::K8sOptions, slurm::SlurmOptions};
use crate::error::Result;
use crate::sweep::{self, ClaimOptions, LaunchOptions, WorkerMode};
use crate::trainer::{self, TrainOptions};

#[derive(Debug, Parser)]
#[command(name = "spotrun", version, about = "Train on preemptible GPUs: exact resume, sweeps, scale-out.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train one run (the built-in default when CONFIG is omitted).
    Train(TrainArgs),
    /// Generate text from a trained GPT run (its final weights, else its newest checkpoint).
    Sample(SampleArgs),
    /// Tokenize a text source into the data cache and print the entry's directory; a sweep or a Slurm array then
    /// prepares once and trains many.
    Prepare {
        /// A TOML config with data.source = "text".
        config: PathBuf,
        /// Override a config key, as for train. Repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE", allow_hyphen_values = true)]
        sets: Vec<String>,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Summarise checkpoints (a checkpoint directory, a checkpoints directory, or a run directory).
    Inspect {
        /// A checkpoint directory (ckpt-*), a checkpoints directory, or a run directory.
        path: PathBuf,
        /// Also check every file's size and CRC-32 against the manifest (exit 2 if any is bad).
        #[arg(long)]
        verify: bool,
    },
    /// List CUDA devices (name, memory, compute capability) and CPU threads.
    Devices,
    /// Run every run of a sweep file on local GPUs or CPU slots; relaunch to finish a killed sweep.
    Sweep {
        /// A sweep file (TOML); see configs/sweeps/ for examples.
        sweep: PathBuf,
        /// The shared volume: the sweep lives in VOLUME/<name>/ (default $SPOTRUN_VOLUME or ./sweeps).
        #[arg(long)]
        volume: Option<PathBuf>,
        /// CPU slots (each gets cores/N threads); conflicts with --gpus.
        #[arg(long, conflicts_with = "gpus", value_parser = at_least_one)]
        workers: Option<usize>,
        /// GPUs to use, e.g. --gpus 0,1 (default: every visible GPU, else one CPU slot).
        #[arg(long, value_delimiter = ',')]
        gpus: Option<Vec<usize>>,
        /// Runs sharing each GPU (or CPU slot) at once.
        #[arg(long, default_value_t = 1, value_parser = at_least_one)]
        per_gpu: usize,
        /// Failed attempts retried per run (default: the sweep file's `retries`, else 2). Preemptions never count.
        #[arg(long)]
        retries: Option<u32>,
        /// Seconds before the first retry of a failed run; doubles per failure.
        #[arg(long, default_value_t = 5.0)]
        backoff: f64,
        /// Print the expanded runs and slots; run nothing.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: print the plan as JSON, with the sweep file made self-contained (base inlined).
        #[arg(long, requires = "dry_run")]
        json: bool,
        /// Only the final table.
        #[arg(long, short)]
        quiet: bool,
        /// One worker process per run, no fused groups (overrides the sweep file's `fuse`).
        #[arg(long)]
        no_fuse: bool,
    },
    /// Train one run of a sweep (--index I) or claim free runs until none is left (--next): what engines call.
    #[command(group = clap::ArgGroup::new("which").required(true).args(["index", "group", "next", "serve"]))]
    Worker {
        /// A sweep file (TOML); see configs/sweeps/ for examples.
        sweep: PathBuf,
        /// The run to train (0-based, in `spotrun sweep --dry-run` order).
        #[arg(long, group = "which")]
        index: Option<usize>,
        /// The fused group to train (0-based, as `spotrun sweep --dry-run` lists them): its free runs as one model.
        #[arg(long, group = "which")]
        group: Option<usize>,
        /// Claim the next free run (or fused group), train it, repeat until none is left.
        #[arg(long, group = "which")]
        next: bool,
        /// With --next: one run at a time, no fused groups (overrides the sweep file's `fuse`).
        #[arg(long)]
        no_fuse: bool,
        /// Jobs (`index I LOG` / `group G LOG` lines) from stdin, one after another: `spotrun sweep`'s long-lived
        /// workers.
        #[arg(long, group = "which", hide = true)]
        serve: bool,
        /// The shared volume (default $SPOTRUN_VOLUME or ./sweeps).
        #[arg(long)]
        volume: Option<PathBuf>,
        /// CPU threads per run (overrides train.threads; at most 4096).
        #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=4096))]
        threads: Option<usize>,
        /// Failed attempts retried per run (default: the sweep file's `retries`).
        #[arg(long)]
        retries: Option<u32>,
        /// No banner, progress or per-epoch lines.
        #[arg(long, short)]
        quiet: bool,
        /// How many runs share this worker's device (set by `spotrun sweep`; scales device_seconds).
        #[arg(long, default_value_t = 1, hide = true)]
        share: usize,
    },
    /// Retrains a PBT trial's whole lineage as one run (its ancestors' segments, then its own, with the recorded
    /// values) and says whether it ends byte-identical to the trial's weights.
    Replay {
        /// The sweep file the study ran (the same file: its definition must match the study's).
        sweep: PathBuf,
        /// The trial number (`pbt-NNNN`'s NNNN).
        trial: usize,
        /// The volume the sweep ran on (default $SPOTRUN_VOLUME or ./sweeps).
        #[arg(long)]
        volume: Option<PathBuf>,
        /// Where to train the replay (default VOLUME/<name>/replay-NNNN; it must not hold another run).
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// No progress bars: the lineage's segments and the verdict only.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Done / running / failed / pending runs of a sweep, with the best metric so far; rewrites results.csv.
    Status {
        /// A sweep directory (VOLUME/<name>) or a sweep file (with --volume).
        dir: PathBuf,
        /// The volume to look in when DIR is a sweep file (default $SPOTRUN_VOLUME or ./sweeps).
        #[arg(long)]
        volume: Option<PathBuf>,
        /// Print the counts, the best run and every run as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Device hours, cost and ETA of a sweep, from measured epoch times when runs have trained.
    Estimate {
        /// A sweep file (TOML); see configs/sweeps/ for examples.
        sweep: PathBuf,
        /// GPU type for the hourly rate, e.g. H100, A100-80GB, L4.
        #[arg(long)]
        gpu: String,
        /// Seconds per epoch for runs not measured yet.
        #[arg(long)]
        epoch_seconds: Option<f64>,
        /// Workers (GPUs) running in parallel, for the ETA.
        #[arg(long, default_value_t = 1, value_parser = at_least_one)]
        workers: usize,
        /// The volume with the runs measured so far (default $SPOTRUN_VOLUME or ./sweeps).
        #[arg(long)]
        volume: Option<PathBuf>,
        /// A TOML file of `NAME = dollars_per_hour` overriding the built-in rates.
        #[arg(long)]
        rates: Option<PathBuf>,
    },
    /// Write (and with --submit, sbatch) a Slurm job-array script: one task per run, requeued on preemption.
    Slurm(SlurmArgs),
    /// Render a Kubernetes Indexed Job (plus a ConfigMap with the sweep) that runs one pod per run.
    K8s(K8sArgs),
    /// SVG charts (curves per run, final metric per swept parameter) and an HTML index for a sweep.
    Report {
        /// A sweep directory (VOLUME/<name>) or a sweep file (with --volume).
        dir: PathBuf,
        /// The volume to look in when DIR is a sweep file (default $SPOTRUN_VOLUME or ./sweeps).
        #[arg(long)]
        volume: Option<PathBuf>,
        /// Output directory (default DIR/report).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `spotrun train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// A TOML config; see configs/ for examples.
    pub config: Option<PathBuf>,
    /// Override a config key, e.g. --set train.epochs=3 --set model.hidden=[512,512]. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", allow_hyphen_values = true)]
    pub sets: Vec<String>,
    /// Where the run's files go (default: runs/<name>-<runid8>).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// No banner, progress bar or per-epoch lines.
    #[arg(long, short)]
    pub quiet: bool,
    /// Resume even if the checkpoint was written with a different config or on different data.
    #[arg(long)]
    pub allow_config_change: bool,
    /// Train from scratch although RUN_DIR holds trained results and no usable checkpoint (the old files are
    /// moved to RUN_DIR/replaced-<time>/, never deleted).
    #[arg(long)]
    pub start_over: bool,
}

/// `spotrun sample`.
#[derive(Debug, clap::Args)]
pub struct SampleArgs {
    /// A run directory of a `model.kind = "gpt"` run.
    pub run_dir: PathBuf,
    /// Text to continue (encoded with meta.json's itos; token ids separated by spaces when there is none).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Tokens to generate.
    #[arg(long, default_value_t = 200)]
    pub tokens: usize,
    /// Divides the logits: below 1 is more conservative, above 1 more random (must be > 0).
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Sample only among the K most likely tokens (default: all).
    #[arg(long, value_parser = clap::builder::RangedI64ValueParser::<i64>::new().range(1..))]
    pub top_k: Option<i64>,
    /// Seed of the sampler: the same seed gives the same text.
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
    /// auto, cpu, cuda or cuda:N (default: the run's train.device; an unavailable device is an error).
    #[arg(long)]
    pub device: Option<String>,
}

/// `spotrun slurm`.
#[derive(Debug, clap::Args)]
pub struct SlurmArgs {
    /// A sweep file (TOML); see configs/sweeps/ for examples.
    pub sweep: PathBuf,
    /// The shared volume, as the compute nodes see it (default $SPOTRUN_VOLUME or ./sweeps, made absolute).
    #[arg(long)]
    pub volume: Option<PathBuf>,
    /// Also submit the script with sbatch and print the job id.
    #[arg(long)]
    pub submit: bool,
    /// #SBATCH --partition.
    #[arg(long)]
    pub partition: Option<String>,
    /// GPUs per array task (#SBATCH --gpus-per-task; 0 = none).
    #[arg(long, default_value_t = 0)]
    pub gpus_per_task: usize,
    /// CPU cores per array task (#SBATCH --cpus-per-task; at least 1).
    #[arg(long, default_value_t = 1)]
    pub cpus_per_task: usize,
    /// Time limit per task, e.g. 4:00:00.
    #[arg(long)]
    pub time: Option<String>,
    /// Tasks running at once (--array=0-N%MAX).
    #[arg(long)]
    pub max_parallel: Option<usize>,
    /// Seconds before the time limit at which tasks get USR1 (checkpoint + requeue).
    #[arg(long, default_value_t = 120)]
    pub grace: u32,
    /// An extra #SBATCH line, e.g. --sbatch=--account=myproj. Repeatable.
    #[arg(long = "sbatch", value_name = "OPTION", allow_hyphen_values = true)]
    pub extra: Vec<String>,
    /// One array task per run, no fused groups (overrides the sweep file's `fuse`).
    #[arg(long)]
    pub no_fuse: bool,
    /// Where to write the script (default VOLUME/<name>/slurm/<name>.sbatch).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// `spotrun k8s`.
#[derive(Debug, clap::Args)]
pub struct K8sArgs {
    /// A sweep file (TOML); see configs/sweeps/ for examples.
    pub sweep: PathBuf,
    /// Container image with spotrun and libtorch.
    #[arg(long, default_value = "ghcr.io/example/spotrun:latest", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub image: String,
    /// PersistentVolumeClaim holding the sweep volume.
    #[arg(long, default_value = "spotrun-volume", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub pvc: String,
    /// Mount path of the PVC in the pod; the sweep volume is MOUNT/sweeps.
    #[arg(long, default_value = "/data", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub mount: String,
    /// Pods running at once (at least 1; capped at the number of runs).
    #[arg(long, default_value_t = 4)]
    pub parallelism: usize,
    /// GPUs per pod (default: 1, or 0 when the sweep trains on train.device = "cpu").
    #[arg(long)]
    pub gpus_per_pod: Option<usize>,
    /// CPU cores per pod (requests and limits; at least 1).
    #[arg(long, default_value_t = 4)]
    pub cpus: usize,
    /// Memory per pod, as a Kubernetes quantity (e.g. 16Gi).
    #[arg(long, default_value = "16Gi")]
    pub memory: String,
    /// Failed pods per index before the index fails (default: the sweep's retries).
    #[arg(long)]
    pub backoff_per_index: Option<u32>,
    /// Seconds a pod gets to checkpoint after SIGTERM (terminationGracePeriodSeconds; at least 1).
    #[arg(long, default_value_t = 60)]
    pub grace: u32,
    /// The namespace for the Job and ConfigMap (default: kubectl's current one).
    #[arg(long)]
    pub namespace: Option<String>,
    /// One pod index per run, no fused groups (overrides the sweep file's `fuse`).
    #[arg(long)]
    pub no_fuse: bool,
    /// Write here instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// A count that must be at least 1 (`--workers 0` is an error, not silently 1).
fn at_least_one(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("expected a whole number, got {s:?}")),
    }
}

/// Parses the arguments, runs the command, and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::boundary::install_quiet_hook();
    crate::trainer::process::init();
    if std::env::var_os("SPOTRUN_DEFAULT_MALLOC").is_none() {
        crate::ffi::tune_allocator();
    }
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e @ crate::Error::Preempted { .. }) => {
            tell!("spotrun: {e}");
            e.exit_code()
        }
        Err(e) => {
            tell!("error: {e}");
            e.exit_code()
        }
    }
}

fn dispatch(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Train(a) => train_cmd(a),
        Command::Devices => {
            devices();
            Ok(ExitCode::SUCCESS)
        }
        Command::Sweep { sweep, dry_run: true, json: true, volume, .. } => engines::plan_json(&sweep, volume),
        Command::Sweep { sweep, volume, workers, gpus, per_gpu, retries, backoff, dry_run, quiet, no_fuse, .. } => {
            let backoff_seconds = backoff;
            let o = LaunchOptions { volume, workers, gpus, per_gpu, retries, backoff_seconds, dry_run, quiet, no_fuse };
            sweep::launch(&sweep, &o)
        }
        Command::Worker { sweep, index, group, volume, threads, retries, quiet, share, no_fuse, serve, .. } => {
            let mode = match (index, group, serve) {
                (Some(i), _, _) => WorkerMode::Index(i),
                (None, Some(g), _) => WorkerMode::Group(g),
                (None, None, true) => WorkerMode::Serve,
                _ => WorkerMode::Next,
            };
            sweep::worker_cmd(&sweep, mode, &ClaimOptions { volume, threads, retries, quiet, share, no_fuse })
        }
        Command::Status { dir, volume, json } => sweep::status_cmd(&dir, volume.as_deref(), json),
        Command::Replay { sweep, trial, volume, run_dir, quiet } => {
            sweep::replay_cmd(&sweep, trial, volume.as_deref(), run_dir, quiet)
        }
        Command::Estimate { sweep, gpu, epoch_seconds, workers, volume, rates } => {
            sweep::estimate_cmd(&sweep, volume.as_deref(), &gpu, epoch_seconds, workers, rates.as_deref())
        }
        Command::Report { dir, volume, out } => sweep::report_cmd(&dir, volume.as_deref(), out),
        Command::Slurm(a) => slurm_cmd(a),
        Command::K8s(a) => k8s_cmd(a),
        Command::Inspect { path, verify } => Ok(inspect_cmd(&path, verify)),
        Command::Sample(a) => sample_cmd(a),
        Command::Prepare { config, sets, quiet } => prepare_cmd(&config, &sets, quiet),
    }
}

/// `spotrun prepare`: the data cache entry's directory on stdout (whether made now or found).
fn prepare_cmd(config: &std::path::Path, sets: &[String], quiet: bool) -> Result<ExitCode> {
    let loaded = crate::config::load(Some(config), sets)?;
    crate::trainer::check_tabular_fits(&loaded.config)?;
    match crate::data::Data::prepare(&loaded.config.data, !quiet)? {
        Some(p) => {
            if !quiet {
                tell!("{}", p.describe());
            }
            say!("{}", p.dir.display());
        }
        None => tell!("{}: this data source is read as it is; nothing to prepare", config.display()),
    }
    Ok(ExitCode::SUCCESS)
}

/// `spotrun slurm`: the arguments as [`engines::slurm_cmd`] takes them.
fn slurm_cmd(a: SlurmArgs) -> Result<ExitCode> {
    let o = SlurmOptions {
        partition: a.partition,
        gpus_per_task: a.gpus_per_task,
        cpus_per_task: a.cpus_per_task,
        time: a.time,
        max_parallel: a.max_parallel,
        grace_seconds: a.grace,
        extra: a.extra,
    };
    let target = engines::Target { sweep: a.sweep, no_fuse: a.no_fuse, output: a.output };
    engines::slurm_cmd(target, a.volume, a.submit, &o)
}

/// `spotrun k8s`: the arguments as [`engines::k8s_cmd`] takes them.
fn k8s_cmd(a: K8sArgs) -> Result<ExitCode> {
    let o = K8sOptions {
        image: a.image,
        pvc: a.pvc,
        mount: a.mount,
        parallelism: a.parallelism,
        gpus_per_pod: a.gpus_per_pod,
        cpus: a.cpus,
        memory: a.memory,
        backoff_per_index: a.backoff_per_index,
        grace_seconds: a.grace,
        namespace: a.namespace,
    };
    engines::k8s_cmd(engines::Target { sweep: a.sweep, no_fuse: a.no_fuse, output: a.output }, &o)
}

/// `spotrun sample`: prints the prompt and its continuation.
fn sample_cmd(a: SampleArgs) -> Result<ExitCode> {
    let opts = crate::sample::SampleOptions {
        run_dir: a.run_dir,
        prompt: a.prompt,
        tokens: a.tokens,
        temperature: a.temperature,
        top_k: a.top_k,
        seed: a.seed,
        device: a.device,
    };
    say!("{}", crate::sample::sample(&opts)?);
    Ok(ExitCode::SUCCESS)
}

/// `spotrun train`: trains (or resumes) and prints the result line.
fn train_cmd(a: TrainArgs) -> Result<ExitCode> {
    let opts = TrainOptions {
        config: a.config,
        sets: a.sets,
        run_dir: a.run_dir,
        quiet: a.quiet,
        allow_config_change: a.allow_config_change,
        start_over: a.start_over,
        ..TrainOptions::default()
    };
    let s = trainer::train(&opts)?;
    let id = crate::config::short_id(&s.run_id);
    if s.status == trainer::RunStatus::AlreadyFinished {
        say!("run {id} already finished ({} epochs) -> {}", s.metrics.len(), s.run_dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let Some(last) = s.metrics.last() else { return Ok(ExitCode::SUCCESS) };
    let how = match s.status {
        trainer::RunStatus::StoppedEarly => "stopped early",
        trainer::RunStatus::Pruned => "was pruned",
        _ => "finished",
    };
    let (e, weights) = (last.epoch, s.run_dir.join("model.safetensors"));
    say!("run {id} {how}: {e} epochs, {} -> {}", last.val_summary(), weights.display());
    let c = s.checkpoints;
    if c.saves > 0 {
        say!(
            "checkpoints: {} save{} paused training for {:.2}s ({:.1}% of {:.2}s)",
            c.saves,
            if c.saves == 1 { "" } else { "s" },
            c.paused_seconds,
            100.0 * c.paused_seconds / c.loop_seconds.max(1e-9),
            c.loop_seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `spotrun inspect PATH [--verify]`: exit 2 when a checkpoint is bad or the path has none.
fn inspect_cmd(path: &std::path::Path, verify: bool) -> ExitCode {
    let dirs = match crate::inspect::find(path) {
        Ok(d) if d.is_empty() => Err(format!("{}: no checkpoints found", path.display())),
        other => other,
    };
    let dirs = match dirs {
        Ok(d) => d,
        Err(e) => {
            tell!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut all_good = true;
    for d in dirs {
        let (text, good) = crate::inspect::report(&d, verify);
        let _ = write!(std::io::stdout().lock(), "{text}");
        all_good &= good;
    }
    if all_good {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

fn devices() {
    match device::list_gpus() {
        Ok(gpus) if gpus.is_empty() => say!("no CUDA devices"),
        Ok(gpus) => {
            for g in gpus {
                say!(
                    "cuda:{}  {}  {:.1} GiB total, {:.1} GiB free  compute capability {}.{}",
                    g.ordinal,
                    g.name,
                    g.total_bytes as f64 / (1u64 << 30) as f64,
                    g.free_bytes as f64 / (1u64 << 30) as f64,
                    g.compute_capability.0,
                    g.compute_capability.1
                );
            }
        }
        Err(e) => say!("no usable CUDA devices ({e})"),
    }
    let (driver_gpus, driver_cuda) = device::driver_facts();
    let torch_gpus = tch::Cuda::device_count().max(0) as usize;
    let torch_cuda = crate::ffi::torch_cuda_version();
    match driver_cuda {
        Some(_) => say!("driver: CUDA {} ({driver_gpus} GPU(s))", device::cuda_version_text(driver_cuda)),
        None => say!("driver: none"),
    }
    say!("libtorch sees {torch_gpus} CUDA device(s); built for CUDA {}", device::cuda_version_text(torch_cuda));
    let facts = device::CudaFacts { driver_gpus, driver_cuda, torch_gpus, torch_cuda };
    if let Err(e) = device::decide(device::DeviceRequest::Auto, &facts) {
        say!("warning: {e}");
    }
    say!("cpu: {} threads", device::cpu_threads());
}
