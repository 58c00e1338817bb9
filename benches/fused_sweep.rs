//! Fused sweeps against one process per run, through the real binary, back to back in one invocation.
//!
//! 1. The 16-run grid of issue 16 on built-in data (a 64-256-256-10 MLP, 1437 training samples, batch 128,
//!    30 epochs, 4 learning rates x 4 weight decays, a checkpoint every epoch, TensorBoard on): `spotrun sweep
//!    --workers 2` (the fused group in two parts of 8, one per slot and thread), `--workers 1` (one group of 16
//!    on both threads), against `--no-fuse --workers 2` (two long-lived workers, one
//!    thread each, run after run) and against one `spotrun worker --index I` process per run, two at a time (what
//!    `spotrun sweep` did before this change, and what a job array does); and `scripts/bench_fused_eager.py`,
//!    the same 16 models fused by hand in PyTorch eager (no checkpoints or files), as the floor.
//! 2. Load once, train many: 32 tiny runs (`fuse = "off"`), one `worker --next` process and one `spotrun sweep
//!    --workers 1` (its long-lived worker) against one `worker --index I` process per run. Per-run overhead =
//!    (wall − Σ epoch_seconds) / runs: everything but the epochs themselves (process start, data, model, run
//!    files, checkpoints, records).
//!
//! Env: SPOTRUN_BENCH_ROUNDS (2), SPOTRUN_BENCH_BIN (the spotrun binary; default cargo's), SPOTRUN_PYTHON, SPOTRUN_BENCH_FUSED_EAGER (the eager script, when the bench runs
//! outside its source tree), SPOTRUN_BENCH_EPOCHS (30). Reproduces the "Fused sweeps" rows of BENCHMARKS.md.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

mod common;
use common::{env, median, python};

fn spotrun() -> Command {
    Command::new(std::env::var_os("SPOTRUN_BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_spotrun").into()))
}

/// Runs `spotrun ARGS` and returns its wall time; panics (the bench is void) if it fails.
fn timed(args: &[&str]) -> f64 {
    let t0 = Instant::now();
    let out = spotrun().args(args).output();
    let secs = t0.elapsed().as_secs_f64();
    match out {
        Ok(o) if o.status.success() => secs,
        Ok(o) => panic!("spotrun {args:?} failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => panic!("spotrun {args:?}: {e}"),
    }
}

/// `spotrun worker SWEEP --index I --threads T` for every run, `parallel` processes at a time: one process per run.
/// Returns the wall time.
fn per_process(sweep: &str, vol: &str, runs: usize, parallel: usize, threads: &str) -> f64 {
    let t0 = Instant::now();
    let mut next = 0;
    let mut live: Vec<std::process::Child> = Vec::new();
    while next < runs || !live.is_empty() {
        while live.len() < parallel && next < runs {
            let i = next.to_string();
            let args = ["worker", sweep, "--index", &i, "--volume", vol, "--threads", threads, "-q"];
            let child = spotrun().args(args).stdout(std::process::Stdio::null()).spawn();
            live.push(child.unwrap_or_else(|e| panic!("spotrun worker: {e}")));
            next += 1;
        }
        let mut still = Vec::new();
        for mut c in live {
            match c.try_wait() {
                Ok(Some(s)) if s.success() => {}
                Ok(Some(s)) => panic!("spotrun worker --index failed: {s}"),
                Ok(None) => still.push(c),
                Err(e) => panic!("spotrun worker: {e}"),
            }
        }
        live = still;
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    t0.elapsed().as_secs_f64()
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
    let (mut fused, mut fused1, mut unfused2, mut procs2, mut py) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut next, mut launched, mut procs) = (vec![], vec![], vec![]);
    for round in 0..rounds {
        let vol = |name: &str| tmp.path().join(format!("{name}-{round}")).to_string_lossy().into_owned();
        let v = vol("fused");
        fused.push(timed(&["sweep", &s, "--volume", &v, "--workers", "2", "-q"]));
        let v = vol("fused1");
        fused1.push(timed(&["sweep", &s, "--volume", &v, "--workers", "1", "-q"]));
        let v = vol("unfused2");
        unfused2.push(timed(&["sweep", &s, "--volume", &v, "--workers", "2", "--no-fuse", "-q"]));
        let v = vol("procs2");
        procs2.push(per_process(&s, &v, 16, 2, "1"));
        py.push(eager(&epochs));
        let overhead = |wall: f64, v: &str| (wall - epoch_seconds(Path::new(v))) / 32.0;
        let v = vol("next");
        next.push(overhead(timed(&["worker", &t, "--next", "--volume", &v, "--threads", "2", "-q"]), &v));
        let v = vol("launched");
        launched.push(overhead(timed(&["sweep", &t, "--volume", &v, "--workers", "1", "-q"]), &v));
        let v = vol("procs");
        procs.push(overhead(per_process(&t, &v, 32, 1, "2"), &v));
        println!(
            "round {round}: grid16 fused x2 {:.2}s | fused x1 {:.2}s | no-fuse, 2 long-lived workers {:.2}s | a process \
             per run, 2 at a time {:.2}s | PyTorch fused {:.2}s || 32 tiny runs, overhead per run: worker --next {:.3}s, \
             sweep {:.3}s, a process per run {:.3}s",
            fused[round],
            fused1[round],
            unfused2[round],
            procs2[round],
            py[round],
            next[round],
            launched[round],
            procs[round]
        );
    }
    let (f, f1, u2, p2, p) = (median(fused), median(fused1), median(unfused2), median(procs2), median(py));
    println!(
        "median of {rounds}: grid16 ({epochs} epochs) fused --workers 2 {f:.2}s (--workers 1: {f1:.2}s); --no-fuse \
         --workers 2 {u2:.2}s ({:.2}x); a process per run, 2 at a time {p2:.2}s ({:.2}x); PyTorch fused by hand {p:.2}s \
         (spotrun/PyTorch {:.2}x)",
        u2 / f,
        p2 / f,
        f / p
    );
    println!(
        "median of {rounds}: per-run overhead, 32 tiny runs: worker --next {:.3}s, spotrun sweep {:.3}s, a process per \
         run {:.3}s",
        median(next),
        median(launched),
        median(procs)
    );
}
