//! The command line: clap definitions and dispatch. Maps every outcome to an exit code; prints errors once.
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::device;

/// `println!` that ignores a closed stdout (e.g. `spotrun devices | head -1`) instead of panicking.
macro_rules! say {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}
use crate::error::Result;
use crate::sweep::{self, LaunchOptions, WorkerMode, WorkerOptions};
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
    Train {
        /// A TOML config; see configs/ for examples.
        config: Option<PathBuf>,
        /// Override a config key, e.g. --set train.epochs=3 --set model.hidden=[512,512]. Repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Where the run's files go (default: runs/<name>-<runid8>).
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// No banner, progress bar or per-epoch lines.
        #[arg(long, short)]
        quiet: bool,
        /// Resume even if the checkpoint was written with a different config.
        #[arg(long)]
        allow_config_change: bool,
    },
    /// Summarise checkpoints (a checkpoint directory, a checkpoints directory, or a run directory).
    Inspect {
        path: PathBuf,
        /// Also check every file's size and CRC-32 against the manifest (exit 2 if any is bad).
        #[arg(long)]
        verify: bool,
    },
    /// List CUDA devices (name, memory, compute capability) and CPU threads.
    Devices,
    /// Run every run of a sweep file on local GPUs or CPU slots; relaunch to finish a killed sweep.
    Sweep {
        sweep: PathBuf,
        /// The shared volume: the sweep lives in VOLUME/<name>/ (default $SPOTRUN_VOLUME or ./sweeps).
        #[arg(long)]
        volume: Option<PathBuf>,
        /// CPU slots (each gets cores/N threads); conflicts with --gpus.
        #[arg(long, conflicts_with = "gpus")]
        workers: Option<usize>,
        /// GPUs to use, e.g. --gpus 0,1 (default: every visible GPU, else one CPU slot).
        #[arg(long, value_delimiter = ',')]
        gpus: Option<Vec<usize>>,
        /// Runs sharing each GPU (or CPU slot) at once.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        per_gpu: u64,
        /// Failed attempts retried per run (default: the sweep file's `retries`, else 2). Preemptions never count.
        #[arg(long)]
        retries: Option<u32>,
        /// Seconds before the first retry of a failed run; doubles per failure.
        #[arg(long, default_value_t = 5.0)]
        backoff: f64,
        /// Print the expanded runs and slots; run nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only the final table.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Train one run of a sweep (--index I) or claim free runs until none is left (--next): what engines call.
    Worker {
        sweep: PathBuf,
        /// The run to train (0-based, in `spotrun sweep --dry-run` order).
        #[arg(long, required_unless_present = "next", conflicts_with = "next")]
        index: Option<usize>,
        /// Claim the next free run, train it, repeat until none is left.
        #[arg(long)]
        next: bool,
        #[arg(long)]
        volume: Option<PathBuf>,
        /// CPU threads per run (overrides train.threads).
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long)]
        retries: Option<u32>,
        #[arg(long, short)]
        quiet: bool,
        /// How many runs share this worker's device (set by `spotrun sweep`; scales device_seconds).
        #[arg(long, default_value_t = 1, hide = true)]
        share: usize,
    },
    /// Done / running / failed / pending runs of a sweep, with the best metric so far; rewrites results.csv.
    Status {
        /// A sweep directory (VOLUME/<name>) or a sweep file (with --volume).
        dir: PathBuf,
        #[arg(long)]
        volume: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Device hours, cost and ETA of a sweep, from measured epoch times when runs have trained.
    Estimate {
        sweep: PathBuf,
        /// GPU type for the hourly rate, e.g. H100, A100-80GB, L4.
        #[arg(long)]
        gpu: String,
        /// Seconds per epoch for runs not measured yet.
        #[arg(long)]
        epoch_seconds: Option<f64>,
        /// Workers (GPUs) running in parallel, for the ETA.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        #[arg(long)]
        volume: Option<PathBuf>,
        /// A TOML file of `NAME = dollars_per_hour` overriding the built-in rates.
        #[arg(long)]
        rates: Option<PathBuf>,
    },
    /// SVG charts (curves per run, final metric per swept parameter) and an HTML index for a sweep.
    Report {
        /// A sweep directory (VOLUME/<name>) or a sweep file (with --volume).
        dir: PathBuf,
        #[arg(long)]
        volume: Option<PathBuf>,
        /// Output directory (default DIR/report).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Parses the arguments, runs the command, and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if std::env::var_os("SPOTRUN_DEFAULT_MALLOC").is_none() {
        crate::ffi::tune_allocator();
    }
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e @ crate::Error::Preempted { .. }) => {
            eprintln!("spotrun: {e}");
            e.exit_code()
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn dispatch(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Train { config, sets, run_dir, quiet, allow_config_change } => {
            let opts =
                TrainOptions { config, sets, run_dir, quiet, allow_config_change, loaded: None, epoch_hook: None };
            let s = trainer::train(&opts)?;
            if s.status == trainer::RunStatus::AlreadyFinished {
                say!("run {} already finished ({} epochs) -> {}", &s.run_id[..8], s.metrics.len(), s.run_dir.display());
            } else if let Some(last) = s.metrics.last() {
                let how = match s.status {
                    trainer::RunStatus::StoppedEarly => "stopped early",
                    trainer::RunStatus::Pruned => "was pruned",
                    _ => "finished",
                };
                say!(
                    "run {} {how}: {} epochs, val_accuracy {:.4}, val_loss {:.4} -> {}",
                    &s.run_id[..8],
                    last.epoch,
                    last.val_accuracy,
                    last.val_loss,
                    s.run_dir.join("model.safetensors").display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Devices => {
            devices();
            Ok(ExitCode::SUCCESS)
        }
        Command::Sweep { sweep, volume, workers, gpus, per_gpu, retries, backoff, dry_run, quiet } => {
            let o = LaunchOptions {
                volume,
                workers,
                gpus,
                per_gpu: per_gpu as usize,
                retries,
                backoff_seconds: backoff,
                dry_run,
                quiet,
            };
            sweep::launch(&sweep, &o)
        }
        Command::Worker { sweep, index, next, volume, threads, retries, quiet, share } => {
            let mode = match (index, next) {
                (Some(i), false) => WorkerMode::Index(i),
                _ => WorkerMode::Next,
            };
            sweep::worker_cmd(&sweep, mode, &WorkerOptions { volume, threads, retries, quiet, share })
        }
        Command::Status { dir, volume, json } => sweep::status_cmd(&dir, volume.as_deref(), json),
        Command::Estimate { sweep, gpu, epoch_seconds, workers, volume, rates } => {
            sweep::estimate_cmd(&sweep, volume.as_deref(), &gpu, epoch_seconds, workers, rates.as_deref())
        }
        Command::Report { dir, volume, out } => sweep::report_cmd(&dir, volume.as_deref(), out),
        Command::Inspect { path, verify } => {
            let dirs = crate::inspect::find(&path);
            if dirs.is_empty() {
                eprintln!("error: {}: no checkpoints found", path.display());
                return Ok(ExitCode::from(2));
            }
            let mut all_good = true;
            for d in dirs {
                let (text, good) = crate::inspect::report(&d, verify);
                let _ = write!(std::io::stdout().lock(), "{text}");
                all_good &= good;
            }
            Ok(if all_good { ExitCode::SUCCESS } else { ExitCode::from(2) })
        }
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
    say!("libtorch sees {} CUDA device(s)", tch::Cuda::device_count());
    say!("cpu: {} threads", device::cpu_threads());
}
