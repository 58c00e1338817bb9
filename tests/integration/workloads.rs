//! The real workloads: a nanoGPT-compatible GPT on token data (synthetic, and made from English text by
//! `scripts/make_tokens.py`), regression, their errors, `spotrun sample`, PyTorch interop and a GPT sweep.
use std::path::{Path, PathBuf};

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::common::{metrics, python, repo, text, Run};

/// A GPT that trains in a second or two: ~60 steps per epoch on the synthetic token stream.
pub(crate) const TINY_GPT: [&str; 13] = [
    "data.source=tokens",
    "data.synthetic.train=30000",
    "data.synthetic.val=3000",
    "model.kind=gpt",
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=32",
    "model.block_size=32",
    "train.batch_size=16",
    "train.eval_batch_size=64",
    "train.eval_batches=4",
    "train.epochs=3",
    "optim.lr=0.003",
];

/// Writes nanoGPT-format token files: `train.bin` / `val.bin` (uint16) and, if given, `meta.json`.
fn write_tokens(dir: &Path, train: &[u16], val: &[u16], meta: Option<&str>) {
    std::fs::create_dir_all(dir).unwrap();
    let bytes = |ids: &[u16]| ids.iter().flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>();
    std::fs::write(dir.join("train.bin"), bytes(train)).unwrap();
    std::fs::write(dir.join("val.bin"), bytes(val)).unwrap();
    if let Some(m) = meta {
        std::fs::write(dir.join("meta.json"), m).unwrap();
    }
}

#[test]
fn the_gpt_learns_the_synthetic_token_task_far_below_its_unigram_entropy() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("gpt");
    let learn = ["model.n_layer=2", "model.n_embd=64", "train.epochs=8"];
    let out = Run::train(&d).sets(&TINY_GPT).sets(&learn).ok();
    let err = text(&out.stderr);
    let entropy: f64 = err.split("unigram entropy ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    let m = metrics(&d);
    let last = m.last().unwrap();
    let val = last["val_loss"].as_f64().unwrap();
    assert!(val < 0.6 * entropy, "val_loss {val} vs unigram entropy {entropy}: {last}");
    assert!((last["val_ppl"].as_f64().unwrap() - val.exp()).abs() < 1e-6 * val.exp());
    assert!(last["tokens_per_sec"].as_f64().unwrap() > 0.0);
    assert!(last.get("val_accuracy").is_none(), "a language model has no accuracy: {last}");
    // Each epoch covers the training tokens once: (30000 - 1) / 32 windows in batches of 16.
    assert_eq!(last["step"].as_u64().unwrap(), 8 * (29_999u64 / 32).div_ceil(16));
    // The same command again: already finished, nothing retrained.
    let again = Run::train(&d).sets(&TINY_GPT).sets(&learn).ok();
    assert!(text(&again.stderr).contains("already finished"), "{}", text(&again.stderr));
}

#[test]
fn steps_per_epoch_caps_an_epoch_and_eval_batches_caps_validation() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("capped");
    Run::train(&d).sets(&TINY_GPT).sets(&["train.steps_per_epoch=5", "train.epochs=2"]).ok();
    let m = metrics(&d);
    assert_eq!(m.iter().map(|e| e["step"].as_u64().unwrap()).collect::<Vec<_>>(), [5, 10]);
}

/// `model.safetensors` of a GPT run holds nanoGPT's `state_dict` keys (the tied tensor under both names) and loads
/// into the PyTorch twin with `strict=True`, giving the logits spotrun's model gives.
#[test]
fn gpt_weights_load_into_the_pytorch_twin_strictly_with_equal_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("gpt");
    let cfg = ["model.bias=true", "model.dropout=0.1", "model.n_layer=2", "train.epochs=1"];
    Run::train(&d).sets(&TINY_GPT).sets(&cfg).ok();
    let weights = d.join("model.safetensors");
    let saved = spotrun::checkpoint::load(&weights, Device::Cpu).unwrap();
    assert!(saved.contains_key("lm_head.weight") && saved.contains_key("transformer.h.1.attn.c_attn.bias"));
    assert_eq!(saved["lm_head.weight"], saved["transformer.wte.weight"]);

    let run_cfg = spotrun::config::parse_str(&std::fs::read_to_string(d.join("config.toml")).unwrap(), &d).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let model = spotrun::model::build(&vs.root(), &run_cfg.model, &[], 27).unwrap();
    tch::no_grad(|| {
        for (name, var) in vs.variables() {
            var.shallow_clone().copy_(&saved[&name]);
        }
    });
    tch::manual_seed(3);
    let x = Tensor::randint(27, [4, 32], (Kind::Int64, Device::Cpu));
    let logits = tch::no_grad(|| model.forward_t(&x, false));
    let inputs = tmp.path().join("io.safetensors");
    spotrun::checkpoint::save(&inputs, &[("x".into(), x), ("logits".into(), logits)]).unwrap();
    let script = format!(
        r#"
import sys, tomllib, torch
sys.path.insert(0, {scripts:?})
from safetensors.torch import load_file
from spotrun_models import from_config
cfg = tomllib.load(open({cfg:?}, "rb"))["model"]
cfg["vocab_size"] = 27
model = from_config(cfg, [], 27)
model.load_state_dict(load_file({weights:?}), strict=True)
assert model.lm_head.weight is model.transformer.wte.weight
model.eval()
d = load_file({inputs:?})
with torch.no_grad():
    print((model(d["x"]) - d["logits"]).abs().max().item())
"#,
        scripts = repo().join("scripts").display().to_string(),
        cfg = d.join("config.toml").display().to_string(),
        weights = weights.display().to_string(),
        inputs = inputs.display().to_string(),
    );
    let out = std::process::Command::new(python()).arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "python: {}", text(&out.stderr));
    let diff: f64 = text(&out.stdout).trim().parse().unwrap();
    assert!(diff < 1e-4, "max |logits_rust - logits_torch| = {diff}");
}

#[test]
fn bad_token_data_is_one_error_line_naming_the_file_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let meta = r#"{"vocab_size": 10, "itos": ["a","b","c","d","e","f","g","h","i","j"]}"#;
    let good: Vec<u16> = (0..200).map(|i| (i % 10) as u16).collect();
    let case = |name: &str, f: &dyn Fn(&Path)| -> PathBuf {
        let dir = tmp.path().join(name);
        write_tokens(&dir, &good, &good, Some(meta));
        f(&dir);
        dir
    };
    let train = |dir: &Path, extra: &[&str]| -> String {
        let path = format!("data.path=\"{}\"", dir.display());
        let run = tmp.path().join("runs").join(dir.file_name().unwrap());
        let err = Run::train(&run).sets(&TINY_GPT).set(&path).sets(extra).bad();
        assert!(!run.exists(), "bad data must write nothing: {}", run.display());
        err
    };
    let pkl = case("pickle", &|d| {
        std::fs::remove_file(d.join("meta.json")).unwrap();
        std::fs::write(d.join("meta.pkl"), b"\x80\x04junk").unwrap();
    });
    let err = train(&pkl, &[]);
    assert!(err.contains("meta.pkl") && err.contains("pickle") && err.contains("meta.json"), "{err}");
    let high = case("high", &|d| write_tokens(d, &[1, 2, 3, 10, 4], &good, None));
    let err = train(&high, &["model.block_size=2"]);
    assert!(err.contains("train.bin") && err.contains("token 3 is id 10") && err.contains("vocab_size"), "{err}");
    let odd = case("odd", &|d| std::fs::write(d.join("val.bin"), [1u8, 0, 2]).unwrap());
    let err = train(&odd, &[]);
    assert!(err.contains("val.bin") && err.contains("data.token_dtype"), "{err}");
    let empty = case("empty", &|d| std::fs::write(d.join("train.bin"), []).unwrap());
    assert!(train(&empty, &[]).contains("train.bin: is empty"));
    let short = case("short", &|_| {});
    let err = train(&short, &["model.block_size=300"]);
    assert!(err.contains("train.bin") && err.contains("model.block_size") && err.contains("200 tokens"), "{err}");
    let err = train(&short, &["model.vocab_size=12"]);
    assert!(err.contains("meta.json") && err.contains("model.vocab_size") && err.contains("10"), "{err}");
    let no_meta = case("no-meta", &|d| std::fs::remove_file(d.join("meta.json")).unwrap());
    assert!(train(&no_meta, &[]).contains("meta.json"));
    // A corpus that cannot fit in RAM is refused before a byte is read (a sparse 1 TB train.bin).
    let huge = case("huge", &|d| std::fs::File::create(d.join("train.bin")).unwrap().set_len(1 << 40).unwrap());
    let err = train(&huge, &[]);
    assert!(err.starts_with("error: out of memory:") && err.contains("huge") && err.contains("data.path"), "{err}");
    // Without meta.json, model.vocab_size is enough (BPE corpora such as OpenWebText ship none).
    let run = tmp.path().join("vocab-from-config");
    let path = format!("data.path=\"{}\"", no_meta.display());
    Run::train(&run).sets(&TINY_GPT).sets(&[&path, "model.vocab_size=10", "train.epochs=1"]).ok();
    // uint32 ids (data.token_dtype) train like uint16 ones.
    let wide = tmp.path().join("uint32");
    std::fs::create_dir_all(&wide).unwrap();
    let ids: Vec<u8> = (0..400u32).flat_map(|i| (i % 10).to_le_bytes()).collect();
    for f in ["train.bin", "val.bin"] {
        std::fs::write(wide.join(f), &ids).unwrap();
    }
    std::fs::write(wide.join("meta.json"), meta).unwrap();
    let path = format!("data.path=\"{}\"", wide.display());
    let run = tmp.path().join("run-uint32");
    Run::train(&run).sets(&TINY_GPT).sets(&[&path, "data.token_dtype=uint32", "train.epochs=1"]).ok();
    assert_eq!(metrics(&run)[0]["step"].as_u64(), Some(399u64 / 32).map(|w| w.div_ceil(16)));
    // Config-level mistakes name the key.
    let err = Run::train(&tmp.path().join("x")).sets(&TINY_GPT).set("model.n_embd=30").set("model.n_head=4").bad();
    assert!(err.contains("model.n_embd") && err.contains("multiple of model.n_head"), "{err}");
    let err = Run::train(&tmp.path().join("x")).set("model.kind=gpt").bad();
    assert!(err.contains("data.source = \"tokens\""), "{err}");
    let err = Run::train(&tmp.path().join("x"))
        .sets(&TINY_GPT)
        .set("train.early_stopping={metric=\"val_accuracy\", patience=2}")
        .bad();
    assert!(err.contains("train.early_stopping.metric") && err.contains("val_ppl"), "{err}");
}

/// `scripts/make_tokens.py` on English text (this repository's docs), a 2-layer GPT for a few hundred steps, and
/// `spotrun sample`: ~500 steps (35 an epoch on ~80 kB of text) end well below the character unigram entropy and the sample reads like the corpus.
#[test]
fn make_tokens_train_on_english_text_and_sample_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut corpus = String::new();
    for f in ["README.md", "BENCHMARKS.md", "docs"] {
        let p = repo().join(f);
        let files: Vec<PathBuf> = if p.is_dir() {
            std::fs::read_dir(&p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "md"))
                .collect()
        } else {
            vec![p]
        };
        for f in files {
            corpus += &std::fs::read_to_string(f).unwrap_or_default();
        }
    }
    let input = tmp.path().join("input.txt");
    std::fs::write(&input, &corpus).unwrap();
    let data = tmp.path().join("chars");
    let out = std::process::Command::new(python())
        .arg(repo().join("scripts/make_tokens.py"))
        .arg(&input)
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "make_tokens.py: {}", text(&out.stderr));
    let d = tmp.path().join("run");
    let path = format!("data.path=\"{}\"", data.display());
    let cfg = [
        "data.source=tokens",
        &path,
        "model.kind=gpt",
        "model.n_layer=2",
        "model.n_head=4",
        "model.n_embd=64",
        "model.block_size=64",
        "train.batch_size=32",
        "train.eval_batch_size=64",
        "train.eval_batches=8",
        "train.epochs=15",
        "optim.lr=0.003",
    ];
    let out = Run::train(&d).sets(&cfg).ok();
    let err = text(&out.stderr);
    let entropy: f64 = err.split("unigram entropy ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    let val = metrics(&d).last().unwrap()["val_loss"].as_f64().unwrap();
    // The corpus is this repository's docs, so it changes with them: a margin of 20% of the entropy, not a value.
    assert!(val < 0.8 * entropy, "val_loss {val} should be clearly below the unigram entropy {entropy}");

    let out = Run::new([
        "sample".as_ref(),
        d.as_os_str(),
        "--prompt".as_ref(),
        "The ".as_ref(),
        "--tokens".as_ref(),
        "300".as_ref(),
    ])
    .ok();
    let sample = text(&out.stdout);
    assert!(sample.starts_with("The "), "{sample}");
    // Reads like the corpus: nearly every character pair of the sample occurs in the corpus (uniformly random
    // characters over this vocabulary would share far fewer).
    let pairs = |s: &str| -> Vec<(char, char)> { s.chars().zip(s.chars().skip(1)).collect() };
    let known: std::collections::HashSet<(char, char)> = pairs(&corpus).into_iter().collect();
    let got = pairs(sample.trim_end());
    let share = got.iter().filter(|p| known.contains(p)).count() as f64 / got.len() as f64;
    assert!(share > 0.9, "{share:.2} of the sample's character pairs occur in the corpus:\n{sample}");
    // The same seed gives the same text; another seed another one.
    let again = Run::new([
        "sample".as_ref(),
        d.as_os_str(),
        "--prompt".as_ref(),
        "The ".as_ref(),
        "--tokens".as_ref(),
        "300".as_ref(),
    ])
    .ok();
    assert_eq!(text(&again.stdout), sample);
    let other = Run::new([
        "sample".as_ref(),
        d.as_os_str(),
        "--prompt".as_ref(),
        "The ".as_ref(),
        "--tokens".as_ref(),
        "300".as_ref(),
        "--seed".as_ref(),
        "2".as_ref(),
    ])
    .ok();
    assert_ne!(text(&other.stdout), sample);
}

#[test]
fn sample_refuses_what_it_cannot_sample_from() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Run::new(["sample".as_ref(), tmp.path().as_os_str()]).bad();
    assert!(err.contains("not a run directory"), "{err}");
    let mlp = tmp.path().join("mlp");
    Run::train(&mlp).sets(&crate::common::SMALL).ok();
    let err = Run::new(["sample".as_ref(), mlp.as_os_str()]).bad();
    assert!(err.contains("\"gpt\""), "{err}");
    let gpt = tmp.path().join("gpt");
    Run::train(&gpt).sets(&TINY_GPT).set("train.epochs=1").ok();
    let err = Run::new(["sample".as_ref(), gpt.as_os_str(), "--prompt".as_ref(), "Z!".as_ref()]).bad();
    assert!(err.contains("'Z'") && err.contains("vocabulary"), "{err}");
    let err = Run::new(["sample".as_ref(), gpt.as_os_str(), "--temperature".as_ref(), "0".as_ref()]).bad();
    assert!(err.contains("--temperature"), "{err}");
    // Without final weights it samples from the newest checkpoint.
    std::fs::remove_file(gpt.join("model.safetensors")).unwrap();
    let out = Run::new([
        "sample".as_ref(),
        gpt.as_os_str(),
        "--prompt".as_ref(),
        "ab".as_ref(),
        "--tokens".as_ref(),
        "20".as_ref(),
    ])
    .ok();
    assert!(text(&out.stdout).starts_with("ab") && text(&out.stdout).trim_end().chars().count() == 22);
    assert!(text(&out.stderr).contains("checkpoints"), "{}", text(&out.stderr));
}

/// Writes a regression dataset: `y = x · W + 0.1·noise`, `[N, 2]` targets.
pub(crate) fn write_regression(path: &Path) {
    tch::manual_seed(11);
    let w = Tensor::randn([16, 2], (Kind::Float, Device::Cpu));
    let split = |n: i64| {
        let x = Tensor::randn([n, 16], (Kind::Float, Device::Cpu));
        let y = x.matmul(&w) + Tensor::randn([n, 2], (Kind::Float, Device::Cpu)) * 0.1;
        (x, y)
    };
    let ((xt, yt), (xv, yv)) = (split(4000), split(500));
    let named = [("x_train", xt), ("y_train", yt), ("x_val", xv), ("y_val", yv)].map(|(k, t)| (k.to_string(), t));
    spotrun::checkpoint::save(path, &named).unwrap();
}

/// Regression on float targets: `[N, D]` targets give D outputs; MSE falls far below the targets' variance.
pub(crate) fn regression_sets(file: &Path) -> Vec<String> {
    [
        "data.source=safetensors".to_string(),
        format!("data.path=\"{}\"", file.display()),
        "data.task=regression".into(),
        "model.hidden=[64]".into(),
        "model.dropout=0.1".into(),
        "train.batch_size=64".into(),
        "train.epochs=3".into(),
        "optim.lr=0.003".into(),
    ]
    .to_vec()
}

#[test]
fn regression_learns_float_targets_with_mse_and_mae() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("reg.safetensors");
    write_regression(&file);
    let d = tmp.path().join("reg");
    let sets = regression_sets(&file);
    Run::train(&d).sets(&sets.iter().map(String::as_str).collect::<Vec<_>>()).ok();
    let last = metrics(&d).pop().unwrap();
    // Targets have variance ~16 (sum of 16 unit-variance terms); the noise floor is 0.01.
    assert!(last["val_loss"].as_f64().unwrap() < 0.5, "{last}");
    assert!(last["val_mae"].as_f64().unwrap() < 0.6, "{last}");
    assert!(last.get("val_accuracy").is_none(), "{last}");
    let w = spotrun::checkpoint::load(&d.join("model.safetensors"), Device::Cpu).unwrap();
    assert_eq!(w["head.weight"].size(), [2, 64], "two targets, two outputs");
    // Integer targets for regression, or float labels for classification, are refused with the way out.
    let err = Run::train(&tmp.path().join("x"))
        .sets(&sets.iter().map(String::as_str).collect::<Vec<_>>())
        .set("data.task=classification")
        .bad();
    assert!(err.contains("y_train") && err.contains("data.task = \"regression\""), "{err}");
}

/// A sweep over `optim.lr × model.n_embd` of the GPT, through `spotrun sweep`, `status` and `report`.
#[test]
fn a_gpt_sweep_over_lr_and_width_runs_reports_and_ranks_by_val_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = tmp.path().join("gpt.toml");
    std::fs::write(
        &sweep,
        "name = \"gpt\"\n[base]\ndata = { source = \"tokens\", synthetic = { train = 20000, val = 2000 } }\n\
         model = { kind = \"gpt\", n_layer = 1, n_head = 2, block_size = 32 }\n\
         train = { batch_size = 32, eval_batch_size = 64, eval_batches = 2, epochs = 2, threads = 1, device = \"cpu\" }\n\
         [parameters]\n\"optim.lr\" = [0.001, 0.003]\n\"model.n_embd\" = [16, 32]\n",
    )
    .unwrap();
    let vol = tmp.path().join("vol");
    let out = Run::new([
        "sweep".as_ref(),
        sweep.as_os_str(),
        "--volume".as_ref(),
        vol.as_os_str(),
        "--workers".as_ref(),
        "2".as_ref(),
        "--quiet".as_ref(),
    ])
    .ok();
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(all.contains("val_loss"), "ranked by val_loss: {all}");
    let csv = std::fs::read_to_string(vol.join("gpt/results.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let ppl = header.iter().position(|h| *h == "val_ppl").unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 4, "{csv}");
    assert!(rows.iter().all(|r| r[2] == "done" && r[ppl].parse::<f64>().unwrap() > 1.0), "{csv}");
    let out = Run::new(["report".as_ref(), vol.join("gpt").as_os_str()]).ok();
    assert!(text(&out.stdout).contains("report:"), "{}", text(&out.stdout));
    assert!(vol.join("gpt/report/curves-val_ppl.svg").exists());
    assert!(!vol.join("gpt/report/curves-val_accuracy.svg").exists(), "no accuracy for a language model");
}
