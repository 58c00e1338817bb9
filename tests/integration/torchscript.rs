//! The user's own PyTorch module (`model.kind = "torchscript"`): exported with the project's torch venv by
//! `tests/torchscript_models.py`, trained through the real binary, compared with PyTorch eager, resumed after
//! SIGKILL and SIGTERM, loaded back into the Python class, and refused when it is not a TorchScript module.
use std::path::{Path, PathBuf};

use crate::common::{metrics, python, repo, text, write_dataset, Run};

/// Exports `kind` (`mlp`, `cnn`, `lm`, `frozen`) to `DIR/NAME.pt` with `tests/torchscript_models.py`.
fn export(dir: &Path, kind: &str, name: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(format!("{name}.pt"));
    let o = std::process::Command::new(python())
        .arg(repo().join("tests/torchscript_models.py"))
        .args(["export", kind])
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "export {kind}: {}", text(&o.stderr));
    out
}

fn path_set(p: &Path) -> String {
    format!("model.path=\"{}\"", p.display())
}

/// Sample tasks for the MLP (32 features) and the CNN (64 = 8×8); 4 classes; one thread for exact comparisons.
fn samples(features: usize) -> Vec<String> {
    [
        "model.kind=torchscript".to_string(),
        "data.synthetic.train=1000".into(),
        "data.synthetic.val=200".into(),
        format!("data.synthetic.features={features}"),
        "data.synthetic.classes=4".into(),
        "train.batch_size=100".into(),
        "train.epochs=3".into(),
        "train.threads=1".into(),
        "train.log_every=0".into(),
    ]
    .to_vec()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A small token task for the transformer LM (block 16, vocab 27).
const TOKENS: [&str; 9] = [
    "model.kind=torchscript",
    "data.source=tokens",
    "data.synthetic.train=8000",
    "data.synthetic.val=1000",
    "model.block_size=16",
    "train.batch_size=16",
    "train.eval_batch_size=64",
    "train.epochs=3",
    "train.log_every=0",
];

#[test]
fn a_scripted_module_trains_as_pytorch_eager_does_on_the_same_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let model = export(tmp.path(), "mlp", "mlp", &["--seed", "3"]);
    let data = tmp.path().join("data.safetensors");
    tch::manual_seed(5);
    write_dataset(&data, 512, 32, 4, tch::Kind::Float, tch::Kind::Int64);
    let d = tmp.path().join("run");
    let sets = [
        "model.kind=torchscript",
        &path_set(&model),
        "data.source=safetensors",
        &format!("data.path=\"{}\"", data.display()),
        "train.batch_size=64",
        "train.epochs=2",
        "train.threads=1",
        "train.seed=7",
    ];
    Run::train(&d).sets(&sets).ok();
    let eager = tmp.path().join("eager.safetensors");
    let o = std::process::Command::new(python())
        .arg(repo().join("tests/torchscript_models.py"))
        .arg("eager")
        .args([&model, &data, &eager])
        .args(["--steps", "16", "--batch", "64", "--lr", "0.001", "--seed", "7"])
        .output()
        .unwrap();
    assert!(o.status.success(), "eager: {}", text(&o.stderr));
    let ours = spotrun::checkpoint::load(&d.join("model.safetensors"), tch::Device::Cpu).unwrap();
    let theirs = spotrun::checkpoint::load(&eager, tch::Device::Cpu).unwrap();
    let mut names: Vec<&String> = ours.keys().collect();
    names.sort();
    assert_eq!(names, {
        let mut t: Vec<&String> = theirs.keys().collect();
        t.sort();
        t
    });
    for name in names {
        let diff = (&ours[name] - &theirs[name]).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{name}: max |spotrun - eager| = {diff} after 16 steps with dropout");
    }
    // Training moved the weights (a run that did nothing would also match an eager run that did nothing).
    let m = metrics(&d);
    assert!(m[1]["train_loss"].as_f64().unwrap() < m[0]["train_loss"].as_f64().unwrap(), "{m:?}");
}

/// `model.safetensors` is the full `state_dict` (buffers, both names of a tied tensor): the Python class loads it
/// with `strict=True`; `model.pt` is the trained module and gives the same outputs.
#[test]
fn outputs_load_into_the_python_class_strictly_and_model_pt_is_the_trained_module() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, class, sets, input) in [
        ("cnn", "Cnn", samples(64), "torch.randn(3, 64)"),
        ("lm", "TinyLm", TOKENS.iter().map(|s| s.to_string()).collect(), "torch.randint(0, 27, (3, 16))"),
    ] {
        let model = export(tmp.path(), kind, kind, &[]);
        let d = tmp.path().join(kind);
        Run::train(&d).sets(&strs(&sets)).set(&path_set(&model)).set("train.epochs=1").ok();
        let script = format!(
            r#"
import sys, torch
sys.path.insert(0, {tests:?})
from safetensors.torch import load_file
import torchscript_models as tm
sd = load_file({weights:?})
m = tm.{class}()
m.load_state_dict(sd, strict=True)
m.eval()
trained = torch.jit.load({pt:?})
trained.eval()
x = {input}
with torch.no_grad():
    print((m(x) - trained(x)).abs().max().item())
"#,
            tests = repo().join("tests").display().to_string(),
            weights = d.join("model.safetensors").display().to_string(),
            pt = d.join("model.pt").display().to_string(),
        );
        let o = std::process::Command::new(python()).arg("-c").arg(script).output().unwrap();
        assert!(o.status.success(), "{kind}: {}", text(&o.stderr));
        let diff: f64 = text(&o.stdout).trim().parse().unwrap();
        assert!(diff < 1e-6, "{kind}: class with model.safetensors vs model.pt: {diff}");
    }
    let w = spotrun::checkpoint::load(&tmp.path().join("cnn/model.safetensors"), tch::Device::Cpu).unwrap();
    assert!(w.contains_key("bn.running_mean") && w.contains_key("bn.num_batches_tracked"));
    assert_eq!(w["bn.num_batches_tracked"].int64_value(&[]), 10, "10 training steps, eval does not count");
    let lm = spotrun::checkpoint::load(&tmp.path().join("lm/model.safetensors"), tch::Device::Cpu).unwrap();
    assert_eq!(lm["lm_head.weight"], lm["wte.weight"], "the tied tensor, under both names");
}

#[test]
fn a_module_with_batchnorm_killed_and_termed_resumes_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let model = export(tmp.path(), "cnn", "cnn", &[]);
    let mut sets = samples(64);
    sets.push(path_set(&model));
    crate::resume::kill_and_term_resume_exactly(&strs(&sets));
}

#[test]
fn a_tied_transformer_lm_killed_and_termed_resumes_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let model = export(tmp.path(), "lm", "lm", &[]);
    let mut sets: Vec<String> = TOKENS.iter().map(|s| s.to_string()).collect();
    sets.push(path_set(&model));
    crate::resume::kill_and_term_resume_exactly(&strs(&sets));
}

#[test]
fn files_that_are_not_trainable_torchscript_modules_are_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let py = |code: &str| {
        let o = std::process::Command::new(python()).current_dir(tmp.path()).arg("-c").arg(code).output().unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
    };
    py("import torch; m = torch.nn.Linear(32, 4); torch.save(m, 'whole.pt'); torch.save(m.state_dict(), 'sd.pt')");
    std::fs::write(tmp.path().join("junk.pt"), b"not a model at all").unwrap();
    std::fs::create_dir(tmp.path().join("traces")).unwrap();
    let traced = export(tmp.path(), "cnn", "traced", &["--trace"]);
    let frozen = export(tmp.path(), "frozen", "frozen", &[]);
    let mlp = export(tmp.path(), "mlp", "mlp", &[]);
    let bad = |model: &Path, features: usize, extra: &[&str]| -> String {
        let run = tmp.path().join(format!("run-{}", model.file_stem().unwrap().to_string_lossy()));
        let traces = tmp.path().join("traces");
        let run_cmd = Run::train(&run).sets(&strs(&samples(features))).set(&path_set(model)).sets(extra);
        let err = run_cmd.env("TMPDIR", &traces.display().to_string()).bad();
        assert!(!run.exists(), "bad input must write nothing");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(&model.display().to_string()) && err.contains("model.path"), "{err}");
        err
    };
    for f in ["whole.pt", "sd.pt"] {
        let err = bad(&tmp.path().join(f), 32, &[]);
        assert!(err.contains("pickle") && err.contains("torch.jit.script"), "{err}");
    }
    assert!(bad(&tmp.path().join("junk.pt"), 32, &[]).contains("not a TorchScript archive"));
    let err = bad(&traced, 64, &[]);
    assert!(err.contains("bn.running_mean") && err.contains("traced in train mode"), "{err}");
    assert!(bad(&frozen, 32, &[]).contains("no trainable parameters"));
    let err = bad(&mlp, 32, &["data.synthetic.classes=3"]);
    assert!(err.contains("forward returns [2, 4]") && err.contains("[2, 3]"), "{err}");
    let err = bad(&mlp, 16, &[]);
    assert!(err.contains("forward failed") && err.contains("(2x16 and 32x64)"), "{err}");
    let traces: Vec<_> = std::fs::read_dir(tmp.path().join("traces")).unwrap().flatten().collect();
    assert_eq!(traces.len(), 1, "one failed forward, one trace file");
    let missing = tmp.path().join("nowhere.pt");
    let err = Run::train(&tmp.path().join("m")).sets(&strs(&samples(32))).set(&path_set(&missing)).bad();
    assert!(err.contains("model.path") && err.contains("nowhere.pt"), "{err}");
}

/// A module with two outputs on regression targets: the TorchScript path serves every task.
#[test]
fn a_scripted_module_fits_regression_targets() {
    let tmp = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(python())
        .arg("-c")
        .arg(format!(
            "import torch\nm = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))\n\
             torch.jit.script(m).save({:?})\n",
            tmp.path().join("reg.pt").display().to_string()
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let file = tmp.path().join("reg.safetensors");
    crate::workloads::write_regression(&file);
    let d = tmp.path().join("run");
    let sets = crate::workloads::regression_sets(&file);
    let model = path_set(&tmp.path().join("reg.pt"));
    Run::train(&d).sets(&strs(&sets)).sets(&["model.kind=torchscript", &model]).ok();
    let last = metrics(&d).pop().unwrap();
    assert!(last["val_loss"].as_f64().unwrap() < 1.0 && last["val_mae"].is_number(), "{last}");
    let w = spotrun::checkpoint::load(&d.join("model.safetensors"), tch::Device::Cpu).unwrap();
    assert_eq!(w["2.weight"].size(), [2, 64], "Sequential's state_dict names");
}

/// The run id covers the module file's content: a changed file is another run, and a resume on it is refused.
#[test]
fn the_run_id_covers_the_file_content_and_a_changed_file_is_not_resumed() {
    let tmp = tempfile::tempdir().unwrap();
    let a = export(tmp.path(), "mlp", "model", &["--seed", "1"]);
    let d = tmp.path().join("run");
    let sets = samples(32);
    let first = Run::train(&d).sets(&strs(&sets)).set(&path_set(&a)).set("train.epochs=1").ok();
    export(tmp.path(), "mlp", "model", &["--seed", "2"]);
    let err = Run::train(&d).sets(&strs(&sets)).set(&path_set(&a)).set("train.epochs=2").bad();
    assert!(err.contains("model.file_hash"), "{err}");
    let second = Run::train(&tmp.path().join("other")).sets(&strs(&sets)).set(&path_set(&a)).set("train.epochs=1").ok();
    let id = |o: &std::process::Output| {
        text(&o.stderr).split(": run ").nth(1).unwrap().split(' ').next().unwrap().to_string()
    };
    assert_ne!(id(&first), id(&second));
}

/// A sweep over `optim.lr` and over two exported files (an architecture sweep) of a TorchScript model.
#[test]
fn a_sweep_over_lr_and_model_files_trains_every_run() {
    let tmp = tempfile::tempdir().unwrap();
    let a = export(tmp.path(), "mlp", "a", &["--seed", "1"]);
    let b = export(tmp.path(), "mlp", "b", &["--seed", "2"]);
    let sweep = tmp.path().join("ts.toml");
    std::fs::write(
        &sweep,
        format!(
            "name = \"ts\"\n[base]\nmodel = {{ kind = \"torchscript\", path = \"{}\" }}\n\
             data.synthetic = {{ train = 1000, val = 200, features = 32, classes = 4 }}\n\
             train = {{ batch_size = 100, epochs = 2, threads = 1, device = \"cpu\" }}\n\
             [parameters]\n\"optim.lr\" = [0.001, 0.01]\n\"model.path\" = [\"{}\", \"{}\"]\n",
            a.display(),
            a.display(),
            b.display()
        ),
    )
    .unwrap();
    let vol = tmp.path().join("vol");
    Run::new(["sweep".as_ref(), sweep.as_os_str(), "--volume".as_ref(), vol.as_os_str(), "--quiet".as_ref()]).ok();
    let csv = std::fs::read_to_string(vol.join("ts/results.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{csv}");
    assert!(rows.iter().all(|r| r.split(',').nth(2) == Some("done")), "{csv}");
}

/// bf16 autocast reaches inside the module (its results differ from fp32), and a run killed and termed under
/// autocast still resumes to the same bits (the graph executor's optimisation is off, so results do not depend on
/// its warm-up history).
#[test]
fn autocast_applies_inside_the_module_and_resume_stays_exact_under_it() {
    let tmp = tempfile::tempdir().unwrap();
    let model = export(tmp.path(), "lm", "lm", &[]);
    let mut sets: Vec<String> = TOKENS.iter().map(|s| s.to_string()).collect();
    sets.push(path_set(&model));
    sets.push("train.epochs=2".into());
    let fp32 = tmp.path().join("fp32");
    Run::train(&fp32).sets(&strs(&sets)).ok();
    let bf16 = tmp.path().join("bf16");
    Run::train(&bf16).sets(&strs(&sets)).set("train.precision=bf16").ok();
    let w = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert_ne!(w(&fp32), w(&bf16), "bf16 autocast changed nothing: it did not reach the module's matmuls");
    let (a, b) = (metrics(&fp32), metrics(&bf16));
    let (la, lb) = (a[1]["val_loss"].as_f64().unwrap(), b[1]["val_loss"].as_f64().unwrap());
    assert!((la - lb).abs() < 0.1 * la, "bf16 should train about as well: {la} vs {lb}");
    sets.push("train.precision=bf16".into());
    crate::resume::kill_and_term_resume_exactly(&strs(&sets));
}

/// Runs a Python snippet with the test venv's torch (`tests/` on its path) and returns its stdout.
#[track_caller]
fn py_out(code: &str) -> String {
    let path = format!("import sys\nsys.path.insert(0, {:?})\n", repo().join("tests").display().to_string());
    let o = std::process::Command::new(python()).arg("-c").arg(path + code).output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    text(&o.stdout)
}

/// The banner counts the module's own parameters (its `VarStore` is empty), the tied embedding once, as
/// `sum(p.numel() for p in module.parameters())` does.
#[test]
fn the_banner_counts_the_modules_own_parameters() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("lm128.pt");
    let count: i64 = py_out(&format!(
        "import torch, torchscript_models as tm\ntorch.manual_seed(0)\nm = tm.TinyLm(width=128)\n\
         torch.jit.script(m).save({:?})\nprint(sum(p.numel() for p in m.parameters()))\n",
        model.display().to_string()
    ))
    .trim()
    .parse()
    .unwrap();
    // wte 27·128, wpe 16·128, two LayerNorms 2·256, qkv 128·384 + 384, proj 128·128 + 128; lm_head is wte.
    assert_eq!(count, 72_064);
    let out = Run::train(&tmp.path().join("run")).sets(&TOKENS).set(&path_set(&model)).set("train.epochs=1").ok();
    let banner = text(&out.stderr);
    assert!(banner.contains("(0.07M params)"), "{banner}");
}

/// A language model whose position table (16) is shorter than the token window, `model.block_size` (default 256):
/// one error line naming the file and the key `model.block_size`; the TorchScript trace is in the file that line names
/// (under `TMPDIR`), and the run directory was never made.
#[test]
fn a_token_window_past_the_modules_block_is_one_error_line_with_the_trace_in_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let model = export(tmp.path(), "lm", "lm", &[]);
    let (run, traces) = (tmp.path().join("run"), tmp.path().join("traces"));
    std::fs::create_dir(&traces).unwrap();
    let sets: Vec<&str> = TOKENS.iter().copied().filter(|s| !s.starts_with("model.block_size")).collect();
    let err = Run::train(&run).sets(&sets).set(&path_set(&model)).env("TMPDIR", &traces.display().to_string()).bad();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    let named = err.contains(&format!("{}: model.block_size: ", model.display()));
    assert!(named && err.contains("windows of 256 tokens") && err.contains("index out of range"), "{err}");
    assert!(!run.exists(), "a run that never started leaves no run directory");
    let file = err.split("full TorchScript trace: ").nth(1).unwrap().trim_end().trim_end_matches(')');
    assert!(Path::new(file).starts_with(&traces), "{file}");
    let trace = std::fs::read_to_string(file).unwrap();
    assert!(trace.contains("Traceback of TorchScript") && trace.contains("self.wpe(torch.arange(t"), "{trace}");
    assert!(trace.lines().count() > 20 && trace.contains(&model.display().to_string()), "{trace}");
}
