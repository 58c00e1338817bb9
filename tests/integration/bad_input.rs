//! Bad input exits 2 with one message naming the file and the key, and leaves no run directory behind.
use std::path::Path;

use tch::Kind;

use crate::common::{run_bad, run_ok, sets, write_dataset, SMALL};

fn config_file(dir: &Path, body: &str) -> String {
    let p = dir.join("bad.toml");
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

/// Runs with `args` plus `--run-dir D` and asserts exit 2, that the message contains every `needle`,
/// and that `D` was not created.
#[track_caller]
fn rejects(args: Vec<String>, needles: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let mut a = vec!["train".to_string()];
    a.extend(args);
    a.extend(["--run-dir".to_string(), run_dir.display().to_string()]);
    let err = run_bad(&a);
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in:\n{err}");
    }
    assert!(!run_dir.exists(), "bad input must not create the run dir");
}

#[test]
fn unknown_key_in_file() {
    let tmp = tempfile::tempdir().unwrap();
    let f = config_file(tmp.path(), "[train]\nepoch = 3\n");
    rejects(vec![f], &["bad.toml", "train", "unknown field `epoch`", "did you mean `train.epochs`?"]);
}

#[test]
fn unknown_section_in_file() {
    let tmp = tempfile::tempdir().unwrap();
    let f = config_file(tmp.path(), "[trian]\nepochs = 3\n");
    rejects(vec![f], &["bad.toml", "trian", "did you mean `train`?"]);
}

#[test]
fn wrong_type_in_file() {
    let tmp = tempfile::tempdir().unwrap();
    let f = config_file(tmp.path(), "[train]\nepochs = \"ten\"\n");
    rejects(vec![f.clone()], &["bad.toml", "train.epochs", "invalid type", "expected a whole number"]);
    // serde's "in `train.epochs`" tail repeats the key already named at the start; it is dropped.
    let err = run_bad(&["train".to_string(), f]);
    assert!(!err.contains("in `train.epochs`") && !err.contains("usize"), "{err}");
}

#[test]
fn toml_syntax_error() {
    let tmp = tempfile::tempdir().unwrap();
    let f = config_file(tmp.path(), "[train\nepochs = 3\n");
    rejects(vec![f], &["bad.toml", "invalid TOML"]);
}

#[test]
fn missing_config_file() {
    rejects(vec!["/nonexistent/spotrun.toml".into()], &["/nonexistent/spotrun.toml"]);
}

#[test]
fn bad_set_overrides() {
    rejects(
        sets(&["optim.lrr=0.1"]),
        &["<built-in default>", "optim", "lrr", "did you mean `optim.lr`?", "(from --set optim.lrr=0.1)"],
    );
    rejects(sets(&["train.lr=0.1"]), &["train.lr", "belongs elsewhere: did you mean `optim.lr`?"]);
    rejects(sets(&["train.max_epochs=3"]), &["spotrun calls this `train.epochs`"]);
    rejects(sets(&["model.hidden=512"]), &["model.hidden", "expected a list", "(from --set model.hidden=512)"]);
    rejects(sets(&["train.batch_size=big"]), &["train.batch_size"]);
    rejects(sets(&["train.precision=fp8"]), &["train.precision", "fp8"]);
    rejects(sets(&["train.epochs=0"]), &["train.epochs", "at least 1"]);
    rejects(sets(&["train.device=tpu"]), &["train.device", "tpu"]);
    rejects(vec!["--set".into(), "train.epochs".into()], &["KEY=VALUE"]);
}

#[test]
fn missing_data_file() {
    rejects(
        sets(&["data.source=safetensors", "data.path=/nonexistent/data.safetensors"]),
        &["/nonexistent/data.safetensors", "data.path"],
    );
}

#[test]
fn not_a_safetensors_file() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("junk.safetensors");
    std::fs::write(&f, b"definitely not safetensors").unwrap();
    rejects(
        sets(&["data.source=safetensors", &format!("data.path={}", f.display())]),
        &["junk.safetensors", "not a safetensors file"],
    );
}

#[test]
fn data_problems_name_the_culprit() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.safetensors");
    write_dataset(&good, 400, 16, 4, Kind::Float, Kind::Int64);
    let src = |p: &Path| vec!["data.source=safetensors".to_string(), format!("data.path={}", p.display())];
    let with = |p: &Path, extra: &[&str]| {
        let mut kv = src(p);
        kv.extend(extra.iter().map(|s| s.to_string()));
        sets(&kv.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // Shape mismatches against the config.
    rejects(with(&good, &["model.inputs=100"]), &["good.safetensors", "model.inputs", "16 features"]);
    rejects(with(&good, &["data.shape=[1, 5, 5]"]), &["good.safetensors", "data.shape", "16"]);
    rejects(with(&good, &["model.kind=cnn"]), &["data.shape"]);
    // A tensor name that is not in the file.
    rejects(with(&good, &["data.x_train=inputs"]), &["good.safetensors", "inputs", "data.x_train", "x_train, x_val"]);
    // Labels out of range for model.classes.
    rejects(with(&good, &["model.classes=3"]), &["good.safetensors", "model.classes", "label 3", "y_train"]);

    let float_labels = tmp.path().join("float_labels.safetensors");
    write_dataset(&float_labels, 400, 16, 4, Kind::Float, Kind::Float);
    rejects(with(&float_labels, &[]), &["float_labels.safetensors", "y_train", "dtype", "F32"]);

    let double_x = tmp.path().join("double_x.safetensors");
    write_dataset(&double_x, 400, 16, 4, Kind::Double, Kind::Int64);
    rejects(with(&double_x, &[]), &["double_x.safetensors", "x_train", "F64"]);

    let negative = tmp.path().join("negative.safetensors");
    let x = tch::Tensor::randn([8, 4], (Kind::Float, tch::Device::Cpu));
    let y = tch::Tensor::from_slice(&[0i64, 1, -1, 0, 1, 0, 1, 0]);
    let named = [("x_train", x.copy()), ("y_train", y.copy()), ("x_val", x), ("y_val", y.abs())]
        .map(|(k, t)| (k.to_string(), t));
    spotrun::checkpoint::save(&negative, &named).unwrap();
    rejects(with(&negative, &[]), &["negative.safetensors", "label -1", "data.y_train"]);

    let short_labels = tmp.path().join("short.safetensors");
    let x = tch::Tensor::randn([8, 4], (Kind::Float, tch::Device::Cpu));
    let y = tch::Tensor::from_slice(&[0i64, 1, 0]);
    let named =
        [("x_train", x.copy()), ("y_train", y.copy()), ("x_val", x), ("y_val", y)].map(|(k, t)| (k.to_string(), t));
    spotrun::checkpoint::save(&short_labels, &named).unwrap();
    rejects(with(&short_labels, &[]), &["short.safetensors", "data.y_train", "8 samples", "3 labels"]);
}

#[test]
fn diverging_loss_stops_with_a_clear_error() {
    let mut kv: Vec<&str> = SMALL.to_vec();
    kv.extend(["optim.kind=sgd", "optim.lr=1e12"]);
    let tmp = tempfile::tempdir().unwrap();
    let mut a = vec!["train".to_string()];
    a.extend(sets(&kv));
    a.extend(["--run-dir".to_string(), tmp.path().join("r").display().to_string(), "--quiet".into()]);
    let err = run_bad(&a);
    assert!(err.contains("diverged") && err.contains("optim.lr"), "{err}");
}

#[test]
fn a_run_dir_holding_another_run_is_left_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("r");
    let mut a = vec!["train".to_string()];
    a.extend(sets(&SMALL));
    a.extend(["--run-dir".to_string(), dir.display().to_string(), "--quiet".into()]);
    run_ok(&a);
    fn snapshot(d: &Path) -> Vec<(String, Vec<u8>)> {
        let mut v = Vec::new();
        for p in std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()) {
            if p.is_dir() {
                v.extend(snapshot(&p));
            } else {
                v.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
        v.sort();
        v
    }
    let before = snapshot(&dir);
    a.extend(sets(&["optim.lr=0.5"]));
    let err = run_bad(&a);
    assert!(err.contains("different config"), "{err}");
    assert_eq!(snapshot(&dir), before);
}

#[test]
fn a_truncated_or_inconsistent_data_file_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("cut.safetensors");
    write_dataset(&f, 400, 16, 4, Kind::Float, Kind::Int64);
    let bytes = std::fs::read(&f).unwrap();
    let src = ["data.source=safetensors".to_string(), format!("data.path={}", f.display())];
    let args = sets(&src.iter().map(String::as_str).collect::<Vec<_>>());
    std::fs::write(&f, &bytes[..bytes.len() - 100]).unwrap();
    rejects(args.clone(), &["cut.safetensors", "not a safetensors file", "truncated or corrupted?"]);
    // A header length pointing past the end of the file.
    let mut bad = bytes.clone();
    bad[..8].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
    std::fs::write(&f, &bad).unwrap();
    rejects(args.clone(), &["cut.safetensors", "header length"]);
    std::fs::write(&f, &bytes[..5]).unwrap();
    rejects(args, &["cut.safetensors", "too short"]);
}
