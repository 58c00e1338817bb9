//! GPT training throughput, spotrun against PyTorch eager, back to back in one invocation.
//!
//! The model is `configs/gpt_shakespeare_char.toml` (nanoGPT's shakespeare_char: 6 layers, 6 heads, 384 wide,
//! block 256, batch 64, dropout 0.2, AdamW with nanoGPT's decay groups, grad clip 1.0) on the built-in synthetic
//! token stream, which is also written as nanoGPT token files for `scripts/bench_gpt_eager.py` (the same model in
//! PyTorch eager: `SpotrunGPT`, nanoGPT's training step). Each round times `STEPS` steps of each side after
//! `WARMUP` untimed ones; prints the medians and the ratio, and (on the CPU) eager again with spotrun's glibc
//! malloc settings, to show what part of the difference is the allocator. A fourth column trains the same
//! `SpotrunGPT` exported with `torch.jit.script` through spotrun's loop (`model.kind = "torchscript"`): the user's
//! own module against the built-in one. Reproduces the GPT rows of BENCHMARKS.md.
//!
//! Env: SPOTRUN_BENCH_ROUNDS (2), SPOTRUN_BENCH_STEPS (4), SPOTRUN_BENCH_WARMUP (1), SPOTRUN_BENCH_THREADS (2),
//! SPOTRUN_BENCH_DEVICE (cpu), SPOTRUN_BENCH_PRECISION (fp32), SPOTRUN_PYTHON, SPOTRUN_BENCH_GPT_EAGER (the eager
//! script, when the bench binary runs outside its source tree), SPOTRUN_BENCH_SETS (`KEY=VALUE;...` overrides,
//! e.g. a smaller model for a dry run).
use std::path::{Path, PathBuf};
use std::process::Command;

use spotrun::config::{self, Config};
use spotrun::data::{Data, TokenData};
use spotrun::trainer::{Progress, Trainer};
use spotrun::{device, model};

mod common;
use common::{env, median, python};

/// Writes the synthetic stream as nanoGPT token files (uint16 `train.bin` / `val.bin`, `meta.json`).
fn write_tokens(t: &TokenData, dir: &Path) {
    let bytes = |x: &tch::Tensor| -> Vec<u8> {
        Vec::<i32>::try_from(x).unwrap_or_default().iter().flat_map(|&i| (i as u16).to_le_bytes()).collect()
    };
    let meta = format!("{{\"vocab_size\": {}}}", t.vocab_size);
    for (name, b) in [("train.bin", bytes(&t.train)), ("val.bin", bytes(&t.val)), ("meta.json", meta.into_bytes())] {
        if let Err(e) = std::fs::write(dir.join(name), b) {
            panic!("bench token file {name}: {e}");
        }
    }
}

/// Tokens/s of spotrun's epoch loop: a warm-up epoch, then the training steps of a second one (its
/// `warmup + steps` steps, timed by the trainer up to the epoch's loss read-back, which synchronises the device;
/// evaluation is not timed).
fn spotrun_rate(cfg: &Config, data: &Data, dev: tch::Device) -> f64 {
    tch::manual_seed(0);
    let vs = tch::nn::VarStore::new(dev);
    let (shape, outputs) = data.model_io();
    let net = match model::build(&vs.root(), &cfg.model, &shape, outputs) {
        Ok(m) => m,
        Err(e) => panic!("bench model: {e}"),
    };
    let mut t = Trainer::new(cfg, &vs, net.as_ref(), data, dev);
    let timed = t.epoch(0, &Progress::Quiet).and_then(|_| t.epoch(1, &Progress::Quiet));
    match timed {
        Ok(m) => m.tokens_per_sec.unwrap_or(f64::NAN),
        Err(e) => panic!("bench training: {e}"),
    }
}

/// One call site per column; the arguments are the table's columns.
#[allow(clippy::too_many_arguments)]
fn eager_rate(
    dir: &Path,
    cfg: &Config,
    threads: &str,
    dev: &str,
    precision: &str,
    warmup: usize,
    steps: usize,
    tuned: bool,
) -> f64 {
    let script = std::env::var_os("SPOTRUN_BENCH_GPT_EAGER")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_gpt_eager.py"));
    let m = &cfg.model;
    let num = |v: i64| v.to_string();
    let mut cmd = Command::new(python());
    cmd.arg(script).arg(dir);
    cmd.args(["--n-layer", &num(m.n_layer), "--n-head", &num(m.n_head), "--n-embd", &num(m.n_embd)]);
    cmd.args(["--block", &num(m.block_size), "--batch", &cfg.train.batch_size.to_string()]);
    cmd.args(["--steps", &steps.to_string(), "--warmup", &warmup.to_string(), "--threads", threads]);
    cmd.args(["--dropout", &m.dropout.to_string(), "--lr", &cfg.optim.lr.to_string()]);
    cmd.args(["--weight-decay", &cfg.optim.weight_decay.to_string()]);
    cmd.args(["--device", if dev == "cpu" { "cpu" } else { "cuda" }]);
    cmd.args(["--precision", if precision == "auto" { "bf16" } else { precision }]);
    if tuned {
        cmd.arg("--malloc-tuned");
    }
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("bench_gpt_eager.py: {e}"),
    };
    if !out.status.success() {
        panic!("bench_gpt_eager.py failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["tokens_per_sec"].as_f64().unwrap_or(f64::NAN)
}

/// Exports `SpotrunGPT` at the config's shape with `torch.jit.script` to `path` (the user's side of
/// `model.kind = "torchscript"`).
fn export_torchscript(cfg: &Config, vocab: i64, path: &Path) {
    let scripts = std::env::var_os("SPOTRUN_BENCH_GPT_EAGER")
        .and_then(|p| PathBuf::from(p).parent().map(Path::to_path_buf))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts"));
    let m = &cfg.model;
    let code = format!(
        "import sys, torch\nsys.path.insert(0, {:?})\nfrom spotrun_models import SpotrunGPT\ntorch.manual_seed(0)\n\
         torch.jit.script(SpotrunGPT({vocab}, {}, {}, {}, {}, dropout={}, bias={})).save({:?})\n",
        scripts.display().to_string(),
        m.block_size,
        m.n_layer,
        m.n_head,
        m.n_embd,
        m.dropout,
        if m.bias { "True" } else { "False" },
        path.display().to_string()
    );
    let out = match Command::new(python()).arg("-c").arg(code).output() {
        Ok(o) => o,
        Err(e) => panic!("exporting the TorchScript GPT: {e}"),
    };
    if !out.status.success() {
        panic!("exporting the TorchScript GPT failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

fn main() {
    spotrun::tune_allocator();
    let rounds: usize = env("SPOTRUN_BENCH_ROUNDS", "2").parse().unwrap_or(2);
    let steps: usize = env("SPOTRUN_BENCH_STEPS", "4").parse().unwrap_or(4);
    let warmup: usize = env("SPOTRUN_BENCH_WARMUP", "1").parse().unwrap_or(1);
    let threads = env("SPOTRUN_BENCH_THREADS", "2");
    let dev_s = env("SPOTRUN_BENCH_DEVICE", "cpu");
    let precision = env("SPOTRUN_BENCH_PRECISION", "fp32");
    let mut sets: Vec<String> = vec![
        format!("train.threads={threads}"),
        format!("train.device=\"{dev_s}\""),
        format!("train.precision=\"{precision}\""),
        "train.log_every=0".into(),
        "data.synthetic.train=400000".into(),
        "data.synthetic.val=20000".into(),
        format!("train.steps_per_epoch={}", warmup + steps),
    ];
    sets.extend(env("SPOTRUN_BENCH_SETS", "").split(';').filter(|s| !s.trim().is_empty()).map(String::from));
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/gpt_shakespeare_char.toml");
    // The config without data.path: the built-in synthetic stream instead of data/shakespeare_char.
    let source = std::fs::read_to_string(&file).unwrap_or_default();
    let mut table: toml::Table = match toml::from_str(&source) {
        Ok(t) => t,
        Err(e) => panic!("bench config {}: {e}", file.display()),
    };
    if let Some(d) = table.get_mut("data").and_then(|d| d.as_table_mut()) {
        d.remove("path");
    }
    let text = toml::to_string(&table).unwrap_or_default();
    let tmp = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => panic!("tempdir: {e}"),
    };
    let base = tmp.path().join("gpt.toml");
    if let Err(e) = std::fs::write(&base, text) {
        panic!("bench config: {e}");
    }
    let cfg = match config::load(Some(&base), &sets) {
        Ok(c) => c.config,
        Err(e) => panic!("bench config: {e}"),
    };
    tch::set_num_threads(threads.parse().unwrap_or(2));
    let dev = match device::select(device::parse_device(&dev_s).unwrap_or(device::DeviceRequest::Cpu)) {
        Ok(d) => d,
        Err(e) => panic!("bench device {dev_s}: {e}"),
    };
    let tokens = match TokenData::load(&cfg.data, &cfg.model) {
        Ok(t) => t,
        Err(e) => panic!("bench data: {e}"),
    };
    write_tokens(&tokens, tmp.path());
    let mut data = Data::Tokens(tokens);
    let free = match dev {
        tch::Device::Cuda(i) => device::gpu_info(i).ok().map(|g| g.free_bytes as u64),
        _ => None,
    };
    data.place(dev, cfg.data.on_device, free);
    let mut ts_cfg = cfg.clone();
    ts_cfg.model.kind = config::ModelKind::Torchscript;
    ts_cfg.model.path = Some(tmp.path().join("gpt.pt"));
    export_torchscript(&cfg, data.model_io().1, &tmp.path().join("gpt.pt"));
    // As `spotrun train` does for a TorchScript model (on this, the training thread).
    tch::jit::set_graph_executor_optimize(false);
    let (mut ours, mut eager, mut tuned, mut script) = (vec![], vec![], vec![], vec![]);
    for r in 0..rounds {
        ours.push(spotrun_rate(&cfg, &data, dev));
        script.push(spotrun_rate(&ts_cfg, &data, dev));
        eager.push(eager_rate(tmp.path(), &cfg, &threads, &dev_s, &precision, warmup, steps, false));
        if dev_s == "cpu" {
            tuned.push(eager_rate(tmp.path(), &cfg, &threads, &dev_s, &precision, warmup, steps, true));
        }
        let t = tuned.last().map_or("n/a".to_string(), |t| format!("{t:.0}"));
        eprintln!(
            "gpt round {}/{rounds}: spotrun {:.0}, torchscript in spotrun {:.0}, eager {:.0}, tuned eager {t} tokens/s",
            r + 1,
            ours[r],
            script[r],
            eager[r]
        );
    }
    let (o, e, sc) = (median(ours), median(eager), median(script));
    let (t, tr) = match tuned.is_empty() {
        true => ("n/a".to_string(), "n/a".to_string()),
        false => {
            let t = median(tuned);
            (format!("{t:.0}"), format!("{:.2}x", o / t))
        }
    };
    let m = &cfg.model;
    println!(
        "| model | spotrun tokens/s | eager tokens/s | spotrun / eager | eager + malloc settings | ratio | \
         torchscript in spotrun | torchscript / native |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| gpt {}x{} {} heads block {} batch {} {precision} {dev_s} {threads}t | {o:.0} | {e:.0} | {:.2}x | {t} | {tr} \
         | {sc:.0} | {:.2}x |",
        m.n_layer,
        m.n_embd,
        m.n_head,
        m.block_size,
        cfg.train.batch_size,
        o / e,
        sc / o
    );
}
