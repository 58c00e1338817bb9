//! Python interop: datasets written by Python's safetensors train in spotrun, and spotrun's weights load into
//! the documented `torch.nn` twins (`scripts/spotrun_models.py`) and give the same logits.
use std::path::Path;

use tch::nn::VarStore;

use crate::common::{metrics, python, repo, run_ok, sets, text};

/// Trains on a file written by `scripts/make_example_data.py` (float16 inputs, int32 labels).
#[test]
fn trains_on_a_python_written_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("py.safetensors");
    let out = std::process::Command::new(python())
        .arg(repo().join("scripts/make_example_data.py"))
        .arg(&f)
        .args(["--dtype", "float16", "--label-dtype", "int32", "--n", "2000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let d = tmp.path().join("r");
    let mut a: Vec<String> =
        ["train", "--quiet", "--run-dir", &d.display().to_string()].into_iter().map(String::from).collect();
    a.extend(sets(&[
        "data.source=safetensors",
        &format!("data.path={}", f.display()),
        "model.hidden=[32]",
        "train.epochs=5",
        "train.batch_size=256",
        "optim.lr=0.01",
    ]));
    run_ok(&a);
    let m = metrics(&d);
    assert!(m[4]["val_accuracy"].as_f64().unwrap() > 0.9, "well-separated clusters: {}", m[4]);
}

/// Computes logits with the Rust model loaded from `run_dir/model.safetensors` and saves `{x, logits}`.
/// Returns the loaded model's validation loss, to hold against the one training logged with the weights it had
/// in memory (so a file written in the wrong layout cannot pass just because both readers agree on it).
fn rust_logits(run_dir: &Path, sample_shape: &[i64], classes: i64, out: &Path) -> f64 {
    let cfg =
        spotrun::config::parse_str(&std::fs::read_to_string(run_dir.join("config.toml")).unwrap(), run_dir).unwrap();
    let mut vs = VarStore::new(tch::Device::Cpu);
    let model =
        spotrun::model::build(&vs.root(), &cfg.model, sample_shape, classes).unwrap_or_else(|e| panic!("{e:?}"));
    vs.load(run_dir.join("model.safetensors")).unwrap();
    let features: i64 = sample_shape.iter().product();
    tch::manual_seed(7);
    let x = tch::Tensor::randn([64, features], (tch::Kind::Float, tch::Device::Cpu));
    let logits = tch::no_grad(|| model.forward_t(&x, false));
    spotrun::checkpoint::save(out, &[("x".into(), x), ("logits".into(), logits)]).unwrap();
    let data = spotrun::data::Dataset::load(&cfg.data, &cfg.model).unwrap();
    let val = tch::no_grad(|| model.forward_t(&data.x_val, false));
    val.cross_entropy_for_logits(&data.y_val).double_value(&[])
}

fn compare_in_python(run_dir: &Path, inputs: &Path, shape: &str, classes: i64) -> (f64, f64) {
    let script = format!(
        r#"
import sys, tomllib, torch
sys.path.insert(0, {scripts:?})
from safetensors.torch import load_file
from spotrun_models import from_config
cfg = tomllib.load(open({cfg:?}, "rb"))
model = from_config(cfg["model"], [{shape}], {classes})
model.load_state_dict(load_file({weights:?}))
model.eval()
d = load_file({inputs:?})
with torch.no_grad():
    print((model(d["x"]) - d["logits"]).abs().max().item(), d["logits"].abs().max().item())
"#,
        scripts = repo().join("scripts").display().to_string(),
        cfg = run_dir.join("config.toml").display().to_string(),
        weights = run_dir.join("model.safetensors").display().to_string(),
        inputs = inputs.display().to_string(),
    );
    let out = std::process::Command::new(python()).arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "python: {}", text(&out.stderr));
    let t = text(&out.stdout);
    let v: Vec<f64> = t.split_whitespace().map(|x| x.parse().unwrap()).collect();
    (v[0], v[1])
}

#[test]
fn weights_load_into_the_pytorch_twins_with_equal_logits() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, extra, shape, shape_py) in [
        ("mlp", vec!["model.hidden=[48, 24]", "model.activation=gelu", "model.dropout=0.1"], vec![32], "32"),
        (
            "cnn",
            vec![
                "model.kind=cnn",
                "data.synthetic.features=64",
                "data.shape=[1, 8, 8]",
                "model.channels=[3, 5]",
                "model.hidden=[16]",
                "model.activation=tanh",
            ],
            vec![1, 8, 8],
            "1, 8, 8",
        ),
    ] {
        let d = tmp.path().join(name);
        let mut kv = vec![
            "data.synthetic.train=600",
            "data.synthetic.val=100",
            "data.synthetic.features=32",
            "train.epochs=1",
            "train.batch_size=128",
        ];
        kv.extend(extra);
        let mut a: Vec<String> =
            ["train", "--quiet", "--run-dir", &d.display().to_string()].into_iter().map(String::from).collect();
        a.extend(sets(&kv));
        run_ok(&a);
        let inputs = tmp.path().join(format!("{name}-logits.safetensors"));
        let val_loss = rust_logits(&d, &shape, 10, &inputs);
        let logged = metrics(&d).last().unwrap()["val_loss"].as_f64().unwrap();
        assert!(
            (val_loss - logged).abs() < 1e-4 * logged.max(1.0),
            "{name}: file gives {val_loss}, run logged {logged}"
        );
        // Same libtorch on both sides, but kernel choice (oneDNN, thread count) may differ per CPU:
        // fp32 agreement within 4e-4 of the largest logit (a wrong weight layout is off by O(1)).
        let (diff, scale) = compare_in_python(&d, &inputs, shape_py, 10);
        assert!(
            diff < 4e-4 * scale.max(1.0),
            "{name}: max |logits_rust - logits_torch| = {diff} (largest |logit| {scale})"
        );
        // The final checkpoint's weights are the same file, so they load into PyTorch the same way.
        let ckpt = crate::common::committed(&d).pop().unwrap();
        assert_eq!(
            std::fs::read(ckpt.join("model.safetensors")).unwrap(),
            std::fs::read(d.join("model.safetensors")).unwrap()
        );
    }
}
