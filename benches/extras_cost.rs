//! What TensorBoard logging and the EMA cost per optimizer step on the default MLP (784-1024-1024-10), measured
//! directly: one `EventWriter::scalars` call (what `train.log_every = 1` adds to a step) and one EMA update
//! (`lerp_` of every parameter towards its average, what `train.ema` adds), against the step time of the same
//! model measured by `Trainer::epoch` in the same invocation. Reproduces the row in BENCHMARKS.md.
//!
//! Env: SPOTRUN_BENCH_THREADS (2), SPOTRUN_BENCH_REPS (200).
use std::time::Instant;

use spotrun::config;
use spotrun::data::{Data, Dataset};
use spotrun::tensorboard::EventWriter;
use spotrun::trainer::{Progress, Trainer};

fn main() {
    spotrun::tune_allocator();
    let threads: i32 = std::env::var("SPOTRUN_BENCH_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let reps: usize = std::env::var("SPOTRUN_BENCH_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    tch::set_num_threads(threads);
    let cfg = match config::load(None, &["train.log_every=0".to_string()]) {
        Ok(c) => c.config,
        Err(e) => panic!("bench config: {e}"),
    };
    let samples = match Dataset::load(&cfg.data, &cfg.model) {
        Ok(d) => d,
        Err(e) => panic!("bench data: {e}"),
    };
    let (shape, classes) = (samples.sample_shape.clone(), samples.classes);
    let data = Data::Samples(samples);
    tch::manual_seed(0);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = match spotrun::model::build(&vs.root(), &cfg.model, &shape, classes) {
        Ok(m) => m,
        Err(e) => panic!("bench model: {e}"),
    };
    let mut t = Trainer::new(&cfg, &vs, net.as_ref(), &data, tch::Device::Cpu);
    let steps = t.steps_per_epoch() as f64;
    let epoch_seconds: Vec<f64> = (0..3)
        .map(|e| {
            t.epoch(e, &Progress::Quiet).map_or(f64::NAN, |m| cfg.train.batch_size as f64 * steps / m.samples_per_sec)
        })
        .skip(1)
        .collect();
    let step = epoch_seconds.iter().sum::<f64>() / epoch_seconds.len() as f64 / steps;

    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let mut w = match EventWriter::create(dir.path(), 1) {
        Ok(w) => w,
        Err(e) => panic!("event file: {e}"),
    };
    let started = Instant::now();
    for i in 0..reps as u64 {
        if let Err(e) = w.scalars(i, &[("train/loss", 0.5), ("train/lr", 1e-3)]) {
            panic!("event file: {e}");
        }
    }
    let _ = w.flush();
    let tb = started.elapsed().as_secs_f64() / reps as f64;

    let params: Vec<tch::Tensor> = vs.variables().into_values().collect();
    let shadow: Vec<tch::Tensor> = params.iter().map(|p| p.detach().copy()).collect();
    let started = Instant::now();
    tch::no_grad(|| {
        for _ in 0..reps {
            for (e, p) in shadow.iter().zip(&params) {
                let _ = e.shallow_clone().lerp_(p, 0.001);
            }
        }
    });
    let ema = started.elapsed().as_secs_f64() / reps as f64;
    println!("| per optimizer step (MLP 784-1024-1024-10, batch 8192, fp32, {threads} threads) | seconds | share of a step |");
    println!("|---|---|---|");
    println!("| training step (mean over 2 epochs) | {step:.4} | 100% |");
    println!("| TensorBoard: 2 scalars (train/loss, train/lr) | {tb:.2e} | {:.3}% |", 100.0 * tb / step);
    println!("| EMA update of 1.86M parameters | {ema:.2e} | {:.2}% |", 100.0 * ema / step);
}
