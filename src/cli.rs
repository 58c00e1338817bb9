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
            let s = trainer::train(&TrainOptions { config, sets, run_dir, quiet, allow_config_change })?;
            if s.status == trainer::RunStatus::AlreadyFinished {
                say!("run {} already finished ({} epochs) -> {}", &s.run_id[..8], s.metrics.len(), s.run_dir.display());
            } else if let Some(last) = s.metrics.last() {
                say!(
                    "run {} finished: {} epochs, val_accuracy {:.4}, val_loss {:.4} -> {}",
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
