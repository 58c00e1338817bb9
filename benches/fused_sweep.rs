//! Fused sweeps against one process per run, through the real binary, back to back in one invocation.
//!
//! 1. The 16-run grid of issue 16 on built-in data (a 64-256-256-10 MLP, 1437 training samples, batch 128,
//!    30 epochs, 4 learning rates x 4 weight decays, a checkpoint every epoch, TensorBoard on): `spotrun sweep
//!    --workers 1` (one fused group, both cores) against `--no-fuse --workers 2` (one process per run, two at a
//!    time) and `--no-fuse --workers 1`; and `scripts/bench_fused_eager.py`, the same 16 models fused by hand in
//!    PyTorch eager (no checkpoints or files), as the floor.
//! 2. Load once, train many: 32 tiny runs (`--no-fuse`), one `worker --next` process against one process per run
//!    (`spotrun sweep --workers 1`). Per-run overhead = (wall − Σ epoch_seconds) / runs: everything but the
//!    epochs themselves (process start, data, model, run files, checkpoints, records).
//!
//! Env: SPOTRUN_BENCH_ROUNDS (2), SPOTRUN_BENCH_BIN (the spotrun binary; default cargo's), SPOTRUN_PYTHON, SPOTRUN_BENCH_FUSED_EAGER (the eager script, when the bench runs
//! outside its source tree), SPOTRUN_BENCH_EPOCHS (30). Reproduces the "Fused sweeps" rows of BENCHMARKS.md.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

mod common;
use common::{env, median, python};

/// Runs `spotrun ARGS` and returns its wall time; panics (the bench is void) if it fails.
fn timed(args: &[&str]) -> f64 {
    let t0 = Instant::now();
    let bin = std::env::var_os("SPOTRUN_BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_spotrun").into());
    let out = Command::new(bin).args(args).output();
    let secs = t0.elapsed().as_secs_f64();
    match out {
        Ok(o) if o.status.success() => secs,
        Ok(o) => panic!("spotrun {args:?} failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => panic!("spotrun {args:?}: {e}"),
    }
}

/// Σ epoch_seconds over every run of a sweep on `vol`.
fn epoch_seconds(vol: &Path) -> f64 {
    let mut total = 0.0;
    for sweep in std::fs::read_dir(vol).into_iter().flatten().flatten() {
        for run in std::fs::read_dir(sweep.path().join("runs")).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(run.path().join("metrics.jsonl")).unwrap_or_default();
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
                total += v["epoch_seconds"].as_f64().unwrap_or(0.0);
            }
        }
    }
    total
}

fn grid(dir: &Path, epochs: &str) -> PathBuf {
    let p = dir.join("grid16.toml");
    let text = format!(
        "name = \"grid16\"\n[base]\ndata.synthetic = {{ train = 1437, val = 360, features = 64, classes = 10 }}\n\
         model.hidden = [256, 256]\ntrain = {{ epochs = {epochs}, batch_size = 128 }}\n[parameters]\n\
         \"optim.lr\" = [0.0003, 0.001, 0.003, 0.01]\n\"optim.weight_decay\" = [0.0, 0.001, 0.01, 0.1]\n"
    );
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    p
}

fn tiny32(dir: &Path) -> PathBuf {
    let p = dir.join("tiny32.toml");
    let text =
        "name = \"tiny32\"\nfuse = \"off\"\n[base]\ndata.synthetic = { train = 512, val = 128, features = 16 }\n\
                model.hidden = [16]\ntrain = { epochs = 2, batch_size = 128 }\n[parameters]\n\
                \"train.seed\" = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, \
                24, 25, 26, 27, 28, 29, 30, 31, 32]\n";
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    p
}

fn eager(epochs: &str) -> f64 {
    let script = std::env::var_os("SPOTRUN_BENCH_FUSED_EAGER")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_fused_eager.py"));
    let t0 = Instant::now();
    let out = Command::new(python()).arg(script).args(["--epochs", epochs]).output();
    let secs = t0.elapsed().as_secs_f64();
    match out {
        Ok(o) if o.status.success() => secs,
        Ok(o) => panic!("bench_fused_eager.py failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => panic!("bench_fused_eager.py: {e}"),
    }
}

fn main() {
    let rounds: usize = env("SPOTRUN_BENCH_ROUNDS", "2").parse().unwrap_or(2);
    let epochs = env("SPOTRUN_BENCH_EPOCHS", "30");
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (sweep, tiny) = (grid(tmp.path(), &epochs), tiny32(tmp.path()));
    let s = sweep.to_string_lossy().into_owned();
    let t = tiny.to_string_lossy().into_owned();
    let (mut fused, mut unfused2, mut unfused1, mut py) = (vec![], vec![], vec![], vec![]);
    let (mut next, mut per_process) = (vec![], vec![]);
    for round in 0..rounds {
        let vol = |name: &str| tmp.path().join(format!("{name}-{round}")).to_string_lossy().into_owned();
        let v = vol("fused");
        fused.push(timed(&["sweep", &s, "--volume", &v, "--workers", "1", "-q"]));
        let v = vol("unfused2");
        unfused2.push(timed(&["sweep", &s, "--volume", &v, "--workers", "2", "--no-fuse", "-q"]));
        let v = vol("unfused1");
        unfused1.push(timed(&["sweep", &s, "--volume", &v, "--workers", "1", "--no-fuse", "-q"]));
        py.push(eager(&epochs));
        let v = vol("next");
        let wall = timed(&["worker", &t, "--next", "--volume", &v, "--threads", "2", "-q"]);
        next.push((wall - epoch_seconds(Path::new(&v))) / 32.0);
        let v = vol("procs");
        let wall = timed(&["sweep", &t, "--volume", &v, "--workers", "1", "-q"]);
        per_process.push((wall - epoch_seconds(Path::new(&v))) / 32.0);
        println!(
            "round {round}: grid16 fused {:.2}s | no-fuse x2 {:.2}s | no-fuse x1 {:.2}s | PyTorch fused {:.2}s || 32 tiny \
             runs, overhead per run: worker --next {:.3}s, process per run {:.3}s",
            fused[round], unfused2[round], unfused1[round], py[round], next[round], per_process[round]
        );
    }
    let (f, u2, u1, p) = (median(fused), median(unfused2), median(unfused1), median(py));
    println!(
        "median of {rounds}: grid16 ({epochs} epochs) fused {f:.2}s, --no-fuse --workers 2 {u2:.2}s ({:.2}x), \
         --no-fuse --workers 1 {u1:.2}s ({:.2}x); PyTorch fused by hand {p:.2}s (spotrun/PyTorch {:.2}x)",
        u2 / f,
        u1 / f,
        f / p
    );
    println!(
        "median of {rounds}: per-run overhead, 32 tiny runs: worker --next (load once) {:.3}s, one process per run {:.3}s",
        median(next),
        median(per_process)
    );
}
