//! What one fused step builds and launches, counted (issue 24: no host syncs in the fused step), for R = 1, 4
//! and 16 runs, AdamW and SGD (momentum, weight decay and gradient clipping on, so every per-run number is used),
//! in both forms of the step (`train.fused_step = "per_run"`, the CPU's `auto`, and `"batched"`, CUDA's).
//!
//! Runs `spotrun worker SWEEP --group 0` with `SPOTRUN_TEST_FUSED_COUNTS=1` and reads the binary's own
//! `fused counts:` lines (counters in `trainer/fused.rs`, compiled in only with the `test-hooks` feature): per
//! step, the tensors built from host values and sent to the device (each one a blocking host-to-device copy on a
//! GPU), the calls of torch's fused AdamW kernel, and the loss computations. R = 1 is a 2-run group whose other run
//! was trained first (a group of one is not fused by the launcher). Counts, not times: they do not depend on the
//! machine. Reproduces the "Fused step, counted" table of BENCHMARKS.md:
//!
//! ```sh
//! cargo bench --features test-hooks --bench fused_counts
//! ```
//!
//! Env: SPOTRUN_BENCH_BIN (the spotrun binary; default cargo's).
use std::path::Path;
use std::process::Command;

fn spotrun() -> Command {
    Command::new(std::env::var_os("SPOTRUN_BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_spotrun").into()))
}

/// Runs `spotrun ARGS`; returns its stderr, panics (the bench is void) if it fails.
fn run(args: &[&str]) -> String {
    let out = spotrun().args(args).env("SPOTRUN_TEST_FUSED_COUNTS", "1").output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stderr).into_owned(),
        Ok(o) => panic!("spotrun {args:?} failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => panic!("spotrun {args:?}: {e}"),
    }
}

/// A sweep of `runs` learning rates (at least 2) with `optim` as the base's optimizer table, stepped in `form`.
fn sweep(dir: &Path, name: &str, optim: &str, runs: usize, form: &str) -> String {
    let lrs: Vec<String> = (0..runs.max(2)).map(|i| format!("{}", 0.001 * (i + 1) as f64)).collect();
    let text = format!(
        "name = \"{name}\"\n[base]\ndata.synthetic = {{ train = 512, val = 128, features = 16 }}\n\
         model.hidden = [32, 32]\noptim = {optim}\ntrain = {{ epochs = 1, batch_size = 64, threads = 1, fused_step = \"{form}\" }}\n\
         [parameters]\n\"optim.lr\" = [{}]\n",
        lrs.join(", ")
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    p.to_string_lossy().into_owned()
}

fn main() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let optims = [
        ("adamw", "{ kind = \"adamw\", weight_decay = 0.01, grad_clip = 1.0 }"),
        ("sgd", "{ kind = \"sgd\", momentum = 0.9, weight_decay = 0.01, grad_clip = 1.0 }"),
    ];
    for (form, (kind, optim)) in ["per_run", "batched"].into_iter().flat_map(|f| optims.map(|o| (f, o))) {
        for runs in [1usize, 4, 16] {
            let name = format!("{kind}{runs}{form}");
            let s = sweep(tmp.path(), &name, optim, runs, form);
            let vol = tmp.path().join(&name).to_string_lossy().into_owned();
            if runs == 1 {
                run(&["worker", &s, "--index", "1", "--volume", &vol, "-q"]);
            }
            let err = run(&["worker", &s, "--group", "0", "--volume", &vol, "-q"]);
            let line = err
                .lines()
                .find(|l| l.starts_with("fused counts:"))
                .unwrap_or_else(|| panic!("no `fused counts:` line (build with --features test-hooks): {err}"));
            println!("{form:7} {kind:5} R = {runs:2}: {line}");
        }
    }
}
