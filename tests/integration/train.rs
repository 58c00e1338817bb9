//! `spotrun train` end to end: outputs, determinism, progress modes, precisions, models, data formats.
use std::path::Path;

use tch::Kind;

use crate::common::{metrics, repo, run_ok, sets, spotrun, text, write_dataset, SMALL};

const TIMING: [&str; 2] = ["samples_per_sec", "epoch_seconds"];

fn train(dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut kv: Vec<&str> = SMALL.to_vec();
    kv.extend(extra);
    let mut a = vec!["train".to_string()];
    a.extend(sets(&kv));
    a.extend(["--run-dir".to_string(), dir.display().to_string()]);
    run_ok(&a)
}

/// Metrics without the timing fields.
fn stable_metrics(dir: &Path) -> Vec<serde_json::Value> {
    metrics(dir)
        .into_iter()
        .map(|mut m| {
            for k in TIMING {
                m.as_object_mut().unwrap().remove(k);
            }
            m
        })
        .collect()
}

#[test]
fn mlp_example_for_three_epochs_leaves_config_metrics_and_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("D");
    let cfg = repo().join("configs/mlp.toml");
    let out = run_ok(&[
        "train".into(),
        cfg.display().to_string(),
        "--set".into(),
        "train.epochs=3".into(),
        "--run-dir".into(),
        d.display().to_string(),
    ]);
    let m = metrics(&d);
    assert_eq!(m.len(), 3);
    for (i, line) in m.iter().enumerate() {
        for key in ["epoch", "step", "train_loss", "val_loss", "val_accuracy", "lr", "samples_per_sec", "epoch_seconds"]
        {
            assert!(line.get(key).is_some_and(|v| v.is_number()), "{key} missing in {line}");
        }
        assert_eq!(line["epoch"], i + 1);
        assert_eq!(line["step"], (i + 1) * 8, "60000 samples / 8192 per batch = 8 steps per epoch");
    }
    assert!(m[2]["val_accuracy"].as_f64().unwrap() > m[0]["val_accuracy"].as_f64().unwrap());
    let resolved = spotrun::config::parse_str(&std::fs::read_to_string(d.join("config.toml")).unwrap(), &d).unwrap();
    assert_eq!(resolved.train.epochs, 3);
    let w = spotrun::checkpoint::load(&d.join("model.safetensors"), tch::Device::Cpu).unwrap();
    let mut names: Vec<_> = w.iter().map(|(k, v)| (k.clone(), v.size())).collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("head.bias".to_string(), vec![10]),
            ("head.weight".into(), vec![10, 1024]),
            ("layers.0.bias".into(), vec![1024]),
            ("layers.0.weight".into(), vec![1024, 784]),
            ("layers.1.bias".into(), vec![1024]),
            ("layers.1.weight".into(), vec![1024, 1024]),
        ]
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("finished: 3 epochs"), "{stdout}");
    // One save per epoch (the default), and what they cost the loop.
    let cost = stdout.lines().find(|l| l.starts_with("checkpoints: ")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(cost.starts_with("checkpoints: 3 saves paused training for "), "{cost}");
    let pct: f64 = cost.split('(').nth(1).and_then(|r| r.split('%').next()).unwrap().parse().unwrap();
    assert!(pct > 0.0 && pct < 100.0, "{cost}");
}

#[test]
fn same_config_gives_byte_identical_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    train(&a, &["model.dropout=0.2"]);
    train(&b, &["model.dropout=0.2"]);
    assert_eq!(
        std::fs::read(a.join("model.safetensors")).unwrap(),
        std::fs::read(b.join("model.safetensors")).unwrap()
    );
    assert_eq!(stable_metrics(&a), stable_metrics(&b));
    let c = tmp.path().join("c");
    train(&c, &["model.dropout=0.2", "train.seed=1"]);
    assert_ne!(
        std::fs::read(a.join("model.safetensors")).unwrap(),
        std::fs::read(c.join("model.safetensors")).unwrap()
    );
}

#[test]
fn default_run_dir_is_named_after_the_run_id() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = vec!["train".to_string()];
    a.extend(sets(&SMALL));
    a.push("--quiet".into());
    let out = spotrun().args(&a).current_dir(tmp.path()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "--quiet prints nothing on stderr");
    let runs: Vec<String> = std::fs::read_dir(tmp.path().join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(runs.len(), 1);
    let id8 = runs[0].strip_prefix("default-").expect("runs/default-<id8>");
    assert_eq!(id8.len(), 8);
    assert!(text(&out.stdout).contains(&format!("run {id8} finished")));
}

#[test]
fn plain_progress_without_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let out = train(&tmp.path().join("r"), &[]);
    let err = text(&out.stderr);
    assert!(err.contains("device cpu"), "banner shows the device: {err}");
    assert!(err.contains("epoch 1/2") && err.contains("epoch 2/2"), "{err}");
}

#[test]
fn loss_goes_down_with_sgd_cosine_clipping_and_dropout() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("r");
    train(
        &d,
        &[
            "optim.kind=sgd",
            "optim.lr=0.05",
            "optim.momentum=0.9",
            "optim.nesterov=true",
            "optim.grad_clip=1.0",
            "schedule.kind=cosine",
            "schedule.warmup_steps=3",
            "model.dropout=0.1",
            "train.epochs=4",
        ],
    );
    let m = metrics(&d);
    assert!(m[3]["train_loss"].as_f64().unwrap() < m[0]["train_loss"].as_f64().unwrap());
    assert!(m[3]["lr"].as_f64().unwrap() < 0.05 * 0.1, "cosine ends near min_lr = 0");
}

#[test]
fn reduced_precision_runs_on_cpu_autocast() {
    let tmp = tempfile::tempdir().unwrap();
    for p in ["bf16", "fp16"] {
        let d = tmp.path().join(p);
        train(&d, &[&format!("train.precision={p}")]);
        let m = metrics(&d);
        assert_eq!(m.len(), 2);
        assert!(m[1]["val_loss"].as_f64().unwrap().is_finite());
        assert_eq!(m[1].get("skipped_steps").is_some(), p == "fp16", "only fp16 has a grad scaler: {}", m[1]);
    }
}

#[test]
fn deterministic_mode_runs_and_matches_the_default_on_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    train(&a, &[]);
    train(&b, &["train.deterministic=true"]);
    // On the CPU the default kernels are already deterministic, so the weights agree bit for bit.
    assert_eq!(
        std::fs::read(a.join("model.safetensors")).unwrap(),
        std::fs::read(b.join("model.safetensors")).unwrap()
    );
}

#[test]
fn cnn_trains_on_image_shaped_data() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("cnn");
    train(
        &d,
        &[
            "data.synthetic.features=64",
            "data.shape=[1, 8, 8]",
            "model.kind=cnn",
            "model.channels=[4, 8]",
            "model.hidden=[16]",
        ],
    );
    let w = spotrun::checkpoint::load(&d.join("model.safetensors"), tch::Device::Cpu).unwrap();
    assert_eq!(w["convs.0.weight"].size(), [4, 1, 3, 3]);
    assert_eq!(w["mlp.layers.0.weight"].size(), [16, 8 * 2 * 2]);
}

#[test]
fn trains_on_uint8_safetensors_data_and_infers_sizes() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("u8.safetensors");
    write_dataset(&f, 512, 12, 3, Kind::Uint8, Kind::Int);
    let d = tmp.path().join("r");
    let a: Vec<String> = ["train", "--run-dir", &d.display().to_string(), "--quiet"]
        .into_iter()
        .map(String::from)
        .chain(sets(&[
            "data.source=safetensors",
            &format!("data.path={}", f.display()),
            "model.hidden=[8]",
            "train.epochs=1",
            "train.batch_size=128",
        ]))
        .collect();
    run_ok(&a);
    let w = spotrun::checkpoint::load(&d.join("model.safetensors"), tch::Device::Cpu).unwrap();
    assert_eq!(w["layers.0.weight"].size(), [8, 12]);
    assert_eq!(w["head.weight"].size(), [3, 8]);
}

#[test]
fn devices_lists_cuda_devices_or_says_there_are_none() {
    let out = spotrun().arg("devices").output().unwrap();
    assert!(out.status.success());
    let s = text(&out.stdout);
    let cuda = tch::Cuda::device_count();
    if cuda == 0 {
        assert!(s.contains("no CUDA devices"), "{s}");
    } else {
        assert!(s.contains("cuda:0") && s.contains("compute capability"), "{s}");
    }
    assert!(s.contains("cpu:") && s.contains("threads"), "{s}");
}
