//! Train throughput, spotrun against PyTorch eager, back to back in one invocation.
//!
//! For each model it writes the built-in synthetic data to a safetensors file, then alternates rounds of
//! spotrun's real epoch loop (`Trainer::epoch`, evaluation excluded from samples/s) and `scripts/bench_eager.py`
//! (the same model, data, batch, threads and optimizer in PyTorch eager), each with one untimed warm-up epoch.
//! Prints medians and the ratio; reproduces the numbers in BENCHMARKS.md.
//!
//! Env: SPOTRUN_BENCH_MODELS (default "mlp"; add "cnn"), SPOTRUN_BENCH_ROUNDS (3), SPOTRUN_BENCH_EPOCHS (2),
//! SPOTRUN_BENCH_THREADS (2), SPOTRUN_BENCH_DEVICE (cpu), SPOTRUN_BENCH_PRECISION (fp32), SPOTRUN_PYTHON,
//! SPOTRUN_BENCH_SETS (extra `KEY=VALUE` overrides separated by `;`, e.g. to shrink the data for a dry run).
use std::path::{Path, PathBuf};
use std::process::Command;

use spotrun::config::{self, Config};
use spotrun::data::{Data, Dataset};
use spotrun::trainer::{Progress, Trainer};
use spotrun::{checkpoint, device, model};

mod common;
use common::{env, median, python};

fn model_sets(kind: &str, threads: &str, dev: &str, precision: &str) -> Vec<String> {
    let mut sets: Vec<String> = vec![
        format!("train.threads={threads}"),
        format!("train.device=\"{dev}\""),
        format!("train.precision=\"{precision}\""),
        "train.log_every=0".into(),
    ];
    if kind == "cnn" {
        sets.extend(
            ["model.kind=\"cnn\"", "model.hidden=[128]", "model.channels=[32, 64]", "data.shape=[1, 28, 28]"]
                .map(String::from),
        );
    }
    sets.extend(env("SPOTRUN_BENCH_SETS", "").split(';').filter(|s| !s.trim().is_empty()).map(String::from));
    sets
}

fn spotrun_rates(cfg: &Config, data: &Data, dev: tch::Device, epochs: usize) -> Vec<f64> {
    tch::manual_seed(0);
    let vs = tch::nn::VarStore::new(dev);
    let (shape, outputs) = data.model_io();
    let net = match model::build(&vs.root(), &cfg.model, &shape, outputs) {
        Ok(m) => m,
        Err(e) => panic!("bench model: {e}"),
    };
    let mut t = Trainer::new(cfg, &vs, net.as_ref(), data, dev);
    (0..=epochs).map(|e| t.epoch(e, &Progress::Quiet).map(|m| m.samples_per_sec).unwrap_or(f64::NAN)).skip(1).collect()
}

// One call site, each argument a column of the table it fills.
#[allow(clippy::too_many_arguments)]
fn eager_rates(
    data: &Path,
    kind: &str,
    cfg: &Config,
    threads: &str,
    dev: &str,
    precision: &str,
    epochs: usize,
    tuned: bool,
) -> Vec<f64> {
    // On a machine the bench binary was copied to, the source tree may live elsewhere: SPOTRUN_BENCH_EAGER.
    let script = std::env::var_os("SPOTRUN_BENCH_EAGER")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_eager.py"));
    let hidden: Vec<String> = cfg.model.hidden.iter().map(i64::to_string).collect();
    let channels: Vec<String> = cfg.model.channels.iter().map(i64::to_string).collect();
    let mut cmd = Command::new(python());
    cmd.arg(script).arg(data).args([
        "--model",
        kind,
        "--batch",
        &cfg.train.batch_size.to_string(),
        "--threads",
        threads,
    ]);
    cmd.args(["--epochs", &epochs.to_string(), "--hidden", &hidden.join(","), "--channels", &channels.join(",")]);
    cmd.args([
        "--device",
        if dev == "cpu" { "cpu" } else { "cuda" },
        "--precision",
        if precision == "auto" { "bf16" } else { precision },
    ]);
    if tuned {
        // The strongest eager we know: spotrun's allocator settings (CPU) and, for the CNN, channels-last weights.
        if dev == "cpu" {
            cmd.arg("--malloc-tuned");
        }
        if kind == "cnn" {
            cmd.arg("--channels-last");
        }
    }
    let out = match cmd.output() {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            eprintln!("eager script failed: {}", String::from_utf8_lossy(&o.stderr));
            return vec![];
        }
        Err(e) => {
            eprintln!("cannot run {}: {e}", python().display());
            return vec![];
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_default();
    v["samples_per_sec"].as_array().map(|a| a.iter().filter_map(|x| x.as_f64()).collect()).unwrap_or_default()
}

fn main() {
    spotrun::tune_allocator();
    let models = env("SPOTRUN_BENCH_MODELS", "mlp");
    let rounds: usize = env("SPOTRUN_BENCH_ROUNDS", "3").parse().unwrap_or(3);
    let epochs: usize = env("SPOTRUN_BENCH_EPOCHS", "2").parse().unwrap_or(2);
    let threads = env("SPOTRUN_BENCH_THREADS", "2");
    let dev_s = env("SPOTRUN_BENCH_DEVICE", "cpu");
    let precision = env("SPOTRUN_BENCH_PRECISION", "fp32");
    let tmp = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => panic!("tempdir: {e}"),
    };
    let mut rows = Vec::new();
    for kind in models.split(',').filter(|s| !s.is_empty()) {
        let sets = model_sets(kind, &threads, &dev_s, &precision);
        let cfg = match config::load(None, &sets) {
            Ok(c) => c.config,
            Err(e) => panic!("bench config: {e}"),
        };
        tch::set_num_threads(threads.parse().unwrap_or(2));
        let dev = match device::select(device::parse_device(&dev_s).unwrap_or(device::DeviceRequest::Cpu)) {
            Ok(d) => d,
            Err(e) => panic!("bench device {dev_s}: {e}"),
        };
        let samples = match Dataset::load(&cfg.data, &cfg.model) {
            Ok(d) => d,
            Err(e) => panic!("bench data: {e}"),
        };
        let file = tmp.path().join(format!("{kind}.safetensors"));
        let named = [
            ("x_train", &samples.x_train),
            ("y_train", &samples.y_train),
            ("x_val", &samples.x_val),
            ("y_val", &samples.y_val),
        ]
        .map(|(n, t)| (n.to_string(), t.shallow_clone()));
        if let Err(e) = checkpoint::save(&file, &named) {
            panic!("bench data file: {e}");
        }
        // As `spotrun train` does: on a GPU the data goes to the device when it fits (PyTorch's side does the same).
        let free = match dev {
            tch::Device::Cuda(i) => device::gpu_info(i).ok().map(|g| g.free_bytes as u64),
            _ => None,
        };
        let mut data = Data::Samples(samples);
        data.place(dev, cfg.data.on_device, free);
        let (mut ours, mut eager, mut tuned) = (vec![], vec![], vec![]);
        for r in 0..rounds {
            ours.extend(spotrun_rates(&cfg, &data, dev, epochs));
            eager.extend(eager_rates(&file, kind, &cfg, &threads, &dev_s, &precision, epochs, false));
            // On a GPU the allocator settings mean nothing: the tuned side is only run where it differs.
            if dev_s == "cpu" || kind == "cnn" {
                tuned.extend(eager_rates(&file, kind, &cfg, &threads, &dev_s, &precision, epochs, true));
            }
            eprintln!(
                "{kind} round {}/{rounds}: spotrun {:.0}, eager {:.0}, tuned eager {:.0} samples/s",
                r + 1,
                median(ours.clone()),
                median(eager.clone()),
                median(tuned.clone())
            );
        }
        rows.push((
            kind.to_string(),
            model::describe(&cfg.model, &data.model_io().0, data.model_io().1),
            median(ours),
            median(eager),
            median(tuned),
        ));
    }
    println!("\ntrain throughput, {precision}, {threads} threads, device {dev_s}, median of {rounds}x{epochs} epochs");
    println!(
        "| model | spotrun samples/s | PyTorch eager | ratio | eager + spotrun's malloc settings (CPU) and channels-last (CNN) | ratio |"
    );
    println!("|---|---|---|---|---|---|");
    let mut complete = true;
    for (_, desc, ours, eager, tuned) in &rows {
        let tuned = if tuned.is_finite() { format!("{tuned:.0} | {:.2}x", ours / tuned) } else { "n/a | n/a".into() };
        println!("| {desc} | {ours:.0} | {eager:.0} | {:.2}x | {tuned} |", ours / eager);
        complete &= ours.is_finite() && eager.is_finite();
    }
    if !complete {
        eprintln!("train_throughput: a side produced no measurement (see the messages above)");
        std::process::exit(1);
    }
}
