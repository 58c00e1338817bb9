//! What users expect of a trainer: TensorBoard that survives resume (read back with tensorboard's own reader),
//! the best checkpoint, EMA weights and gradient accumulation, through the real binary.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::{committed, metrics, repo, text, wait_until, Run, SMALL};

/// The tensorboard venv's python (scripts/test.sh installs it; SPOTRUN_TB_PYTHON overrides).
fn tb_python() -> PathBuf {
    let p = std::env::var_os("SPOTRUN_TB_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/spotrun/tensorboard-2.21.0/bin/python")
    });
    assert!(p.exists(), "no tensorboard venv at {} (scripts/test.sh installs it)", p.display());
    p
}

/// What TensorBoard shows for `RUN_DIR/tb`: scalars by tag as (step, value), hyperparameters, metric tags, read by
/// the legacy `EventAccumulator` (or, with `plugin`, by the plugin accumulator of `tensorboard --load_fast=false`).
fn tensorboard_with(run_dir: &Path, plugin: bool) -> serde_json::Value {
    let mut cmd = std::process::Command::new(tb_python());
    cmd.arg(repo().join("tests/tb_read.py")).arg(run_dir.join("tb"));
    if plugin {
        cmd.arg("--plugin");
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "tb_read.py: {}", text(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn tensorboard(run_dir: &Path) -> serde_json::Value {
    tensorboard_with(run_dir, false)
}

fn points(tb: &serde_json::Value, tag: &str) -> Vec<(u64, f64)> {
    tb["scalars"][tag]
        .as_array()
        .unwrap_or_else(|| panic!("no {tag} in {tb}"))
        .iter()
        .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()))
        .collect()
}

/// The resume tests' run (~63 steps per epoch, 3 epochs, dropout), with a loss read back every 5 steps, TensorBoard,
/// and a checkpoint at every epoch's end.
fn tb_sets() -> Vec<&'static str> {
    let resume = crate::resume::RESUME.iter().copied().filter(|kv| !kv.starts_with("train.log_every="));
    resume.chain(["train.log_every=5", "train.tensorboard=true", "checkpoint.keep_last=1"]).collect()
}

/// Complete lines in `RUN_DIR/metrics.jsonl` (0 when there is none yet; a line still being written is not counted).
fn epoch_lines(run_dir: &Path) -> usize {
    std::fs::read_to_string(run_dir.join("metrics.jsonl")).map_or(0, |t| t.matches('\n').count())
}

/// The largest step of `train/loss` that TensorBoard's legacy reader shows now.
fn last_loss_step(run_dir: &Path) -> u64 {
    let tb = tensorboard(run_dir);
    tb["scalars"]["train/loss"].as_array().map_or(0, |a| a.iter().filter_map(|p| p[0].as_u64()).max().unwrap_or(0))
}

/// Starts the run with every checkpoint file's write held for 3 s, waits until `lines` epochs are in
/// `metrics.jsonl` (the epoch's checkpoint is then being written), kills it with SIGKILL, and checks that what
/// the killed process left on disk is what `observed` says the next process must find.
fn kill_during_the_save(dir: &Path, lines: usize, observed: impl Fn() -> Result<(), String>) {
    let mut child = Run::train(dir).sets(&tb_sets()).env("SPOTRUN_TEST_WRITE_DELAY_MS", "3000").spawn();
    wait_until("an epoch line in metrics.jsonl", Duration::from_secs(120), || epoch_lines(dir) >= lines);
    child.kill().unwrap();
    let _ = child.wait();
    if let Err(why) = observed() {
        panic!("what the kill left is not what this test needs: {why}");
    }
}

/// A run killed before its first checkpoint committed, started again, killed while its second epoch's checkpoint
/// was being written (after its first committed), and resumed: both TensorBoard readers show one clean curve, the
/// same as the uninterrupted run's. Before each kill, points logged past the last committed checkpoint are on disk
/// (read back by tensorboard's reader), so each restart has something to purge.
#[test]
fn tensorboard_shows_one_clean_curve_after_a_sigkill_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let tb = tb_sets();
    let straight = tmp.path().join("straight");
    Run::train(&straight).sets(&tb).ok();
    let killed = tmp.path().join("killed");
    kill_during_the_save(&killed, 1, || match (crate::common::newest_step(&killed), last_loss_step(&killed)) {
        (0, logged) if logged > 0 => Ok(()),
        (committed, logged) => {
            Err(format!("want no commit and points on disk: commit {committed}, last point {logged}"))
        }
    });
    kill_during_the_save(&killed, 2, || {
        let (committed, logged) = (crate::common::newest_step(&killed), last_loss_step(&killed));
        let ok = committed > 0 && logged > committed;
        ok.then_some(()).ok_or(format!("want points past a commit: commit {committed}, last point {logged}"))
    });
    Run::train(&killed).sets(&tb).ok();
    assert!(std::fs::read_dir(killed.join("tb")).unwrap().count() >= 3, "one event file per process");
    let total = metrics(&killed).last().unwrap()["step"].as_u64().unwrap();
    for plugin in [false, true] {
        let (a, b) = (tensorboard_with(&straight, plugin), tensorboard_with(&killed, plugin));
        let loss = points(&b, "train/loss");
        let steps: Vec<u64> = loss.iter().map(|p| p.0).collect();
        let reader = if plugin { "plugin accumulator" } else { "EventAccumulator" };
        assert_eq!(steps, (5..=total).step_by(5).collect::<Vec<u64>>(), "{reader}: every 5th step once, none twice");
        // Exact resume: the same curve as the uninterrupted run, point for point.
        assert_eq!(loss, points(&a, "train/loss"), "{reader}");
        // Compared as float32, what TensorBoard stores (serde_json's default float parsing may differ in the last bit).
        let val: Vec<(u64, f32)> = points(&b, "epoch/val_loss").into_iter().map(|(s, v)| (s, v as f32)).collect();
        let logged: Vec<(u64, f32)> = metrics(&killed)
            .iter()
            .map(|m| (m["step"].as_u64().unwrap(), m["val_loss"].as_f64().unwrap() as f32))
            .collect();
        assert_eq!(val, logged, "{reader}: one point per epoch, the metrics.jsonl values (as float32)");
        for tag in
            ["train/lr", "epoch/train_loss", "epoch/val_accuracy", "epoch/samples_per_sec", "checkpoint/pause_seconds"]
        {
            assert!(!points(&b, tag).is_empty(), "{reader}: {tag}");
        }
    }
}

#[test]
fn a_sweep_logs_to_tensorboard_by_default_with_its_hyperparameters() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = crate::common::tiny_sweep(tmp.path(), "hp", 2);
    let vol = tmp.path().join("vol");
    Run::new(["sweep".as_ref(), sweep.as_os_str(), "--volume".as_ref(), vol.as_os_str(), "--quiet".as_ref()]).ok();
    let runs: Vec<PathBuf> = std::fs::read_dir(vol.join("hp/runs")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(runs.len(), 2);
    let mut lrs = Vec::new();
    for r in runs {
        let tb = tensorboard(&r);
        lrs.push(tb["hparams"]["optim.lr"].as_f64().unwrap());
        assert_eq!(tb["metrics"], serde_json::json!(["epoch/val_accuracy"]), "{tb}");
        assert_eq!(points(&tb, "epoch/val_accuracy").len(), 2);
    }
    lrs.sort_by(f64::total_cmp);
    assert_eq!(lrs, [0.001, 0.01]);
}

/// Overfits a small training set so that validation loss turns up: the best epoch is not the last.
const OVERFIT: [&str; 9] = [
    "data.synthetic.train=300",
    "data.synthetic.val=1000",
    "data.synthetic.features=32",
    "model.hidden=[256, 256]",
    "optim.lr=0.003",
    "train.batch_size=50",
    "train.epochs=12",
    "checkpoint.keep_best=val_loss",
    "checkpoint.keep_last=1",
];

#[test]
fn keep_best_keeps_the_best_epoch_and_writes_best_safetensors_across_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("run");
    Run::train(&d).sets(&OVERFIT).ok();
    let m = metrics(&d);
    let losses: Vec<f64> = m.iter().map(|e| e["val_loss"].as_f64().unwrap()).collect();
    let best = (0..losses.len()).min_by(|&a, &b| losses[a].total_cmp(&losses[b])).unwrap();
    assert!(best + 1 < losses.len(), "the setup must overfit (val_loss {losses:?})");
    assert_eq!(m.last().unwrap()["best_epoch"].as_u64(), Some(best as u64 + 1));
    let best_step = m[best]["step"].as_u64().unwrap();
    let kept: Vec<u64> =
        committed(&d).iter().map(|c| c.file_name().unwrap().to_string_lossy()[5..].parse().unwrap()).collect();
    assert_eq!(kept, [best_step, m.last().unwrap()["step"].as_u64().unwrap()], "keep_last = 1 plus the best");
    let best_ckpt = d.join(format!("checkpoints/ckpt-{best_step:010}/model.safetensors"));
    let load = |p: &Path| spotrun::checkpoint::load(p, tch::Device::Cpu).unwrap();
    let (w, c) = (load(&d.join("best.safetensors")), load(&best_ckpt));
    assert!(w.iter().all(|(k, t)| t.equal(&c[k])) && w.len() == c.len(), "best.safetensors = the best epoch's weights");
    let inspect = Run::new(["inspect".as_ref(), d.as_os_str()]).ok();
    assert!(
        text(&inspect.stdout).contains(&format!("best: epoch {} by val_loss", best + 1)),
        "{}",
        text(&inspect.stdout)
    );
    // Extending the run keeps the best checkpoint through further rotations.
    Run::train(&d).sets(&OVERFIT).set("train.epochs=14").ok();
    assert!(best_ckpt.exists(), "the best checkpoint survives extension");
    assert_eq!(metrics(&d).last().unwrap()["best_epoch"].as_u64(), Some(best as u64 + 1));
}

const EMA: [&str; 3] = ["train.ema={decay=0.9}", "train.ema_eval=true", "train.log_every=0"];

#[test]
fn ema_weights_are_written_used_for_evaluation_and_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("ema");
    Run::train(&d).sets(&SMALL).sets(&EMA).ok();
    let plain = tmp.path().join("plain");
    Run::train(&plain).sets(&SMALL).ok();
    let read = |p: PathBuf| std::fs::read(p).unwrap();
    assert_ne!(read(d.join("ema.safetensors")), read(d.join("model.safetensors")));
    assert_eq!(
        read(d.join("model.safetensors")),
        read(plain.join("model.safetensors")),
        "EMA does not change training"
    );
    let (e, p) = (metrics(&d), metrics(&plain));
    assert_ne!(e[1]["val_loss"], p[1]["val_loss"], "ema_eval evaluates the averages");
    assert_eq!(e[1]["train_loss"], p[1]["train_loss"]);
    let inspect = Run::new(["inspect".as_ref(), d.as_os_str()]).ok();
    assert!(text(&inspect.stdout).contains("ema: {\"decay\":0.9"), "{}", text(&inspect.stdout));
    // Killed and termed with EMA on: the averages come back from the checkpoint (the metrics depend on them).
    let base: Vec<&str> = crate::resume::RESUME.iter().copied().chain(EMA).collect();
    crate::resume::kill_and_term_resume_exactly(&base);
}

/// `batch_size = B, accumulate = 4` is `batch_size = B` without accumulation, to floating-point noise.
#[test]
fn gradient_accumulation_matches_one_big_batch_for_samples_and_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let gpt: Vec<&str> = crate::workloads::TINY_GPT.iter().copied().chain(["train.epochs=1"]).collect();
    for (name, base) in [("samples", SMALL.to_vec()), ("tokens", gpt)] {
        let one = tmp.path().join(format!("{name}-1"));
        let four = tmp.path().join(format!("{name}-4"));
        Run::train(&one).sets(&base).ok();
        Run::train(&four).sets(&base).set("train.accumulate=4").ok();
        let load = |d: &Path| spotrun::checkpoint::load(&d.join("model.safetensors"), tch::Device::Cpu).unwrap();
        let (a, b) = (load(&one), load(&four));
        let worst: BTreeMap<&String, f64> =
            a.iter().map(|(k, t)| (k, (t - &b[k]).abs().max().double_value(&[]))).collect();
        assert!(worst.values().all(|&d| d < 1e-4), "{name}: max |Δ| per tensor {worst:?}");
        let (ma, mb) = (metrics(&one), metrics(&four));
        let (la, lb) = (ma[0]["train_loss"].as_f64().unwrap(), mb[0]["train_loss"].as_f64().unwrap());
        assert!((la - lb).abs() < 1e-4 * la, "{name}: train_loss {la} vs {lb} (normalised by the whole batch)");
    }
    let err = Run::train(&tmp.path().join("x")).sets(&SMALL).set("train.accumulate=3").bad();
    assert!(err.contains("train.accumulate") && err.contains("divide"), "{err}");
    let acc: Vec<&str> = crate::resume::RESUME.iter().copied().chain(["train.accumulate=4"]).collect();
    crate::resume::kill_and_term_resume_exactly(&acc);
}
