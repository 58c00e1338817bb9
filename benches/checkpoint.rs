//! Checkpoint costs, reproducing the BENCHMARKS.md figures:
//! 1. write speed of a committed checkpoint (stream the tensors, fsync, rename, fsync dir, manifest, read-back
//!    verification; retention runs afterwards, untimed, as it runs on a background thread in training) against
//!    `dd conv=fsync` of the same number of bytes to the same directory, alternating;
//! 2. the cost of checkpointing every epoch, sync and async, on the wall time of a real `spotrun train` run;
//! 3. start-up: process start to the first step, fresh and resumed, against `python -c "import torch"`;
//! 4. the data fingerprint a checkpoint records (CRC-32 over the loaded dataset) on 1 GiB, against copying it.
//!
//! Env: SPOTRUN_BENCH_DIR (default: the system temp dir; put it on the disk you care about),
//! SPOTRUN_BENCH_CKPT_HIDDEN (default 4096: an MLP 784-H-H-10 with AdamW state), SPOTRUN_BENCH_ROUNDS (3),
//! SPOTRUN_PYTHON, SPOTRUN_BENCH_PARTS (default `write,overhead,startup,fingerprint`: which to run).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use spotrun::checkpoint::{Manifest, Snapshot, Store, FORMAT_VERSION};
use tch::{Device, Kind, Tensor};

mod common;
use common::{env, median};

fn manifest(step: u64) -> Manifest {
    Manifest {
        format_version: FORMAT_VERSION,
        run_id: "bench".into(),
        config: serde_json::Value::Null,
        epoch: 0,
        batch: 0,
        step,
        finished: false,
        metrics: vec![],
        rng: String::new(),
        data_fingerprint: None,
        device: None,
        precision: None,
        best_step: None,
        files: vec![],
        reason: spotrun::checkpoint::SaveReason::Other,
        save_seconds: 0.0,
        created_unix_ms: 0,
    }
}

fn write_speed(dir: &Path, hidden: i64, rounds: usize) {
    let sizes = [(hidden, 784), (hidden, 1), (hidden, hidden), (hidden, 1), (10, hidden), (10, 1)];
    let model: Vec<(String, Tensor)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &(a, b))| (format!("p{i}"), Tensor::randn([a, b], (Kind::Float, Device::Cpu))))
        .collect();
    let state: Vec<(String, Tensor)> = model
        .iter()
        .flat_map(|(n, t)| [(format!("{n}.exp_avg"), t.copy()), (format!("{n}.exp_avg_sq"), t.copy())])
        .collect();
    let bytes: u64 = model.iter().chain(&state).map(|(_, t)| t.numel() as u64 * 4).sum();
    let store = Store::new(dir.join("ckpts"), 1);
    let (mut ours, mut dd) = (vec![], vec![]);
    for r in 0..rounds {
        let snap = |step| Snapshot {
            model: model.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect(),
            state: state.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect(),
            manifest: manifest(step),
            started: Instant::now(),
        };
        let t0 = Instant::now();
        if let Err(e) = store.commit(snap(r as u64 + 1)) {
            panic!("commit: {e}");
        }
        ours.push(bytes as f64 / t0.elapsed().as_secs_f64() / 1e6);
        let out = dir.join("dd.bin");
        let t0 = Instant::now();
        let ok = Command::new("dd")
            .args([
                "if=/dev/zero",
                &format!("of={}", out.display()),
                "bs=1M",
                &format!("count={}", bytes.div_ceil(1 << 20)),
                "conv=fsync",
            ])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "dd failed");
        dd.push((bytes.div_ceil(1 << 20) << 20) as f64 / t0.elapsed().as_secs_f64() / 1e6);
        let _ = std::fs::remove_file(out);
        store.apply_retention(); // untimed, and after dd: in training it runs on a background thread
    }
    let (o, d) = (median(ours), median(dd));
    println!("| checkpoint write ({:.0} MB: MLP 784-{hidden}-{hidden}-10 + AdamW state) | {o:.0} MB/s | dd conv=fsync {d:.0} MB/s | {:.2}x |", bytes as f64 / 1e6, o / d);
}

fn spotrun_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/release/deps/checkpoint-xxxx -> target/release/spotrun
    exe.parent().and_then(Path::parent).map(|p| p.join("spotrun")).unwrap_or_default()
}

fn timed_run(args: &[&str], env: &[(&str, &str)]) -> (f64, String) {
    let t0 = Instant::now();
    let out = Command::new(spotrun_bin()).args(args).envs(env.iter().copied()).output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => panic!("spotrun {args:?}: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => panic!("spawn {}: {e} (run `cargo build --release` first)", spotrun_bin().display()),
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (t0.elapsed().as_secs_f64(), text)
}

/// The percentage in `spotrun train`'s "checkpoints: N saves paused training for Xs (P% of Ys)" line.
fn paused_percent(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("checkpoints: "))?;
    line.split('(').nth(1)?.split('%').next()?.parse().ok()
}

fn save_overhead(dir: &Path, rounds: usize) {
    let modes = [
        ("no checkpoints", vec!["checkpoint.every_epochs=0"]),
        ("sync, every epoch", vec!["checkpoint.every_epochs=1", "checkpoint.keep_last=100"]),
        ("async, every epoch", vec!["checkpoint.every_epochs=1", "checkpoint.async=true", "checkpoint.keep_last=100"]),
    ];
    // Modes alternate within each round, so a slow stretch of this shared VM hits all of them alike.
    let (mut times, mut paused, mut rates) = (vec![vec![]; 3], vec![vec![]; 3], vec![vec![]; 3]);
    for r in 0..rounds {
        for (k, (name, sets)) in modes.iter().enumerate() {
            let run_dir = dir.join(format!("ovh-{}-{r}", name.replace([' ', ','], "")));
            let mut a: Vec<String> =
                vec!["train".into(), "--quiet".into(), "--run-dir".into(), run_dir.display().to_string()];
            for s in sets.iter().chain(&["train.epochs=4"]) {
                a.extend(["--set".to_string(), s.to_string()]);
            }
            let refs: Vec<&str> = a.iter().map(String::as_str).collect();
            let (t, text) = timed_run(&refs, &[]);
            times[k].push(t);
            paused[k].extend(paused_percent(&text));
            // Training throughput of each epoch: what a writer thread competing for the cores would lower.
            rates[k].extend(
                std::fs::read_to_string(run_dir.join("metrics.jsonl"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .filter_map(|v| v["samples_per_sec"].as_f64()),
            );
        }
    }
    let (base, base_rate) = (median(times[0].clone()), median(rates[0].clone()));
    for (k, (name, _)) in modes.iter().enumerate() {
        let (t, p, rate) = (median(times[k].clone()), median(paused[k].clone()), median(rates[k].clone()));
        println!(
            "| default MLP, 4 epochs, {name} | {t:.2} s wall ({:+.1}%), training {rate:.0} samples/s ({:+.1}%) | \
             saves paused the loop {p:.2}% |",
            (t / base - 1.0) * 100.0,
            (rate / base_rate - 1.0) * 100.0
        );
    }
    // Direct measurement: the manifests record each save's duration; metrics.jsonl each epoch's.
    let d = dir.join("ovh-synceveryepoch-0");
    let saves: f64 = std::fs::read_dir(d.join("checkpoints"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Manifest::read(&e.path()).ok())
        .map(|m| m.save_seconds)
        .sum();
    let epochs: f64 = std::fs::read_to_string(d.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["epoch_seconds"].as_f64())
        .sum();
    println!(
        "| sync save time / epoch time, from the manifests of one run | {saves:.2} s / {epochs:.1} s | {:.1}% |",
        100.0 * saves / epochs
    );
}

fn startup(dir: &Path, rounds: usize) {
    let parse = |s: &str| -> f64 {
        s.lines()
            .find_map(|l| {
                l.strip_prefix("startup: first step done ")
                    .and_then(|r| r.split('s').next())
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(f64::NAN)
    };
    let (mut fresh, mut resumed, mut py) = (vec![], vec![], vec![]);
    for r in 0..rounds {
        let d = dir.join(format!("startup-{r}"));
        let d = d.display().to_string();
        let env = [("SPOTRUN_PRINT_STARTUP", "1")];
        fresh.push(parse(&timed_run(&["train", "--run-dir", &d, "--set", "train.epochs=1"], &env).1));
        resumed.push(parse(&timed_run(&["train", "--run-dir", &d, "--set", "train.epochs=2"], &env).1));
        let python = std::env::var("SPOTRUN_PYTHON").unwrap_or_default();
        let t0 = Instant::now();
        if Command::new(&python).args(["-c", "import torch"]).status().is_ok_and(|s| s.success()) {
            py.push(t0.elapsed().as_secs_f64());
        }
    }
    println!(
        "| process start -> first step, fresh (default config: includes generating the data) | {:.2} s |",
        median(fresh)
    );
    println!("| process start -> first step, resumed from the epoch-1 checkpoint | {:.2} s |", median(resumed));
    println!("| python -c \"import torch\" alone | {:.2} s |", median(py));
}

/// Fingerprinting 1 GiB of float32 data at start-up, against one copy of it in memory (`Tensor::copy`).
fn fingerprint(rounds: usize) {
    let x = Tensor::rand([256 * 1024 * 1024], (Kind::Float, Device::Cpu));
    let (mut fp, mut copy) = (vec![], vec![]);
    for _ in 0..rounds {
        let t0 = Instant::now();
        std::hint::black_box(spotrun::data::fingerprint(&[&x]));
        fp.push(t0.elapsed().as_secs_f64());
        let t0 = Instant::now();
        let _ = std::hint::black_box(x.copy());
        copy.push(t0.elapsed().as_secs_f64());
    }
    let (fp, copy) = (median(fp), median(copy));
    println!(
        "| data fingerprint (CRC-32) of 1 GiB float32 | {fp:.3} s | one in-memory copy {copy:.3} s | {:.2}x |",
        fp / copy
    );
}

fn main() {
    let rounds: usize = env("SPOTRUN_BENCH_ROUNDS", "3").parse().unwrap_or(3);
    let hidden: i64 = env("SPOTRUN_BENCH_CKPT_HIDDEN", "4096").parse().unwrap_or(4096);
    let base = std::env::var_os("SPOTRUN_BENCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let tmp = match tempfile::tempdir_in(&base) {
        Ok(t) => t,
        Err(e) => panic!("tempdir in {}: {e}", base.display()),
    };
    println!("checkpoint benchmarks in {}, median of {rounds}", base.display());
    println!("| what | spotrun | reference | ratio |");
    println!("|---|---|---|---|");
    let parts = env("SPOTRUN_BENCH_PARTS", "write,overhead,startup,fingerprint");
    if parts.contains("write") {
        write_speed(tmp.path(), hidden, rounds);
    }
    if parts.contains("overhead") {
        save_overhead(tmp.path(), rounds);
    }
    if parts.contains("startup") {
        startup(tmp.path(), rounds);
    }
    if parts.contains("fingerprint") {
        fingerprint(rounds);
    }
}
