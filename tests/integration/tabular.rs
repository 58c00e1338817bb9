//! NumPy (`data.source = "npy"`) and Parquet (`data.source = "parquet"`) data, made by the data venv's numpy and
//! pyarrow: the same data set as safetensors, `.npz` (stored and deflated), a directory of `.npy` files (one in
//! Fortran order) and Parquet (scalar columns, and one fixed-size-list column) trains to byte-identical weights;
//! string labels become classes in sorted order; the `data.val_fraction` split follows `data.split_seed`, not
//! `train.seed`; every bad input exits 2 naming the file and the key; a run killed after a commit resumes exactly.
use std::path::{Path, PathBuf};

use crate::common::{data_py, text, Run};

/// Writes the data set in every format into `argv[1]`: 1200 train / 300 val samples of 12 float32 features and 4
/// classes (a linear rule, so training learns), seeded.
const MAKE: &str = r#"
import json, os, struct, sys
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
d = sys.argv[1]
rng = np.random.default_rng(7)
x = rng.standard_normal((1500, 12)).astype(np.float32)
y = (x @ rng.standard_normal((12, 4)).astype(np.float32)).argmax(1).astype(np.int64)
xt, yt, xv, yv = x[:1200], y[:1200], x[1200:], y[1200:]
arrays = {"x_train": xt, "y_train": yt, "x_val": xv, "y_val": yv}
# safetensors by hand (the format is an 8-byte header length, a JSON header, then the bytes)
header, blobs, off = {}, [], 0
for k, a in arrays.items():
    b = np.ascontiguousarray(a).tobytes()
    header[k] = {"dtype": {"float32": "F32", "int64": "I64"}[str(a.dtype)], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
    blobs.append(b); off += len(b)
h = json.dumps(header).encode()
with open(os.path.join(d, "data.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h))); f.write(h); [f.write(b) for b in blobs]
np.savez(os.path.join(d, "data.npz"), **arrays)
np.savez_compressed(os.path.join(d, "packed.npz"), x_train=xt.astype(np.float64), y_train=yt.astype(np.uint8), x_val=xv, y_val=yv.astype(np.int32))
os.makedirs(os.path.join(d, "npydir"), exist_ok=True)
for k, a in arrays.items():
    np.save(os.path.join(d, "npydir", k + ".npy"), np.asfortranarray(a) if k == "x_train" else a)
def table(x, y):
    cols = {f"f{i}": pa.array(x[:, i]) for i in range(x.shape[1])}
    cols["label"] = pa.array(y)
    return pa.table(cols)
pq.write_table(table(xt, yt), os.path.join(d, "train.parquet"), row_group_size=500)
pq.write_table(table(xv, yv), os.path.join(d, "val.parquet"))
os.makedirs(os.path.join(d, "parts"), exist_ok=True)
pq.write_table(table(xt[:700], yt[:700]), os.path.join(d, "parts", "train-0.parquet"), compression="zstd")
pq.write_table(table(xt[700:], yt[700:]), os.path.join(d, "parts", "train-1.parquet"))
def lists(x, y):
    return pa.table({"pixels": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1]), "label": pa.array(y)})
pq.write_table(lists(xt, yt), os.path.join(d, "list_train.parquet"), row_group_size=333)
pq.write_table(lists(xv, yv), os.path.join(d, "list_val.parquet"))
"#;

/// The model and schedule every format trains with (dropout, so the RNG stream matters too).
const TRAIN: [&str; 6] = [
    "model.hidden=[32]",
    "model.dropout=0.1",
    "train.batch_size=100",
    "train.epochs=2",
    "train.log_every=0",
    "train.threads=1",
];

fn make(dir: &Path) {
    data_py(MAKE, &[dir.as_os_str()]);
}

/// `spotrun train` with [`TRAIN`] and the `data` sets, into `tmp/name`; returns the run directory.
fn train(tmp: &Path, name: &str, data: &[String]) -> PathBuf {
    let run = tmp.join(name);
    let sets: Vec<&str> = TRAIN.iter().copied().chain(data.iter().map(String::as_str)).collect();
    Run::new(["train", "--run-dir", run.to_str().unwrap()]).sets(&sets).ok();
    run
}

fn source(kind: &str, path: &Path, extra: &[&str]) -> Vec<String> {
    let mut v = vec![format!("data.source=\"{kind}\""), format!("data.path=\"{}\"", path.display())];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn weights(run: &Path) -> Vec<u8> {
    std::fs::read(run.join("model.safetensors")).unwrap()
}

#[test]
fn the_same_data_as_safetensors_npz_npy_and_parquet_trains_to_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    make(d);
    let reference = weights(&train(d, "st", &source("safetensors", &d.join("data.safetensors"), &[])));
    let val = format!("data.val_path=\"{}\"", d.join("val.parquet").display());
    let list_val = format!("data.val_path=\"{}\"", d.join("list_val.parquet").display());
    let glob = d.join("parts").join("train-*.parquet");
    let cases = [
        ("npz", source("npy", &d.join("data.npz"), &[])),
        ("npy-dir", source("npy", &d.join("npydir"), &[])),
        ("parquet", source("parquet", &d.join("train.parquet"), &[&val])),
        ("parquet-dir", source("parquet", &d.join("parts"), &[&val])),
        ("parquet-glob", source("parquet", &glob, &[&val])),
        ("parquet-list", source("parquet", &d.join("list_train.parquet"), &[&list_val, "data.features=[\"pixels\"]"])),
        ("parquet-list-default", source("parquet", &d.join("list_train.parquet"), &[&list_val])),
    ];
    for (name, sets) in cases {
        let got = weights(&train(d, name, &sets));
        assert!(got == reference, "{name}: model.safetensors differs from the safetensors run's");
    }
    // Named features in another order are another data set: the weights differ (the comparison can fail).
    let mut names: Vec<String> = (0..12).map(|i| format!("\"f{i}\"")).collect();
    names.swap(0, 1);
    let swapped = format!("data.features=[{}]", names.join(","));
    let other = weights(&train(d, "swapped", &source("parquet", &d.join("train.parquet"), &[&val, &swapped])));
    assert!(other != reference, "swapping two feature columns must change the weights");
}

#[test]
fn float64_unsigned_and_deflated_npz_arrays_load_with_a_note() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    make(d);
    let run = d.join("packed");
    let sets = source("npy", &d.join("packed.npz"), &[]);
    let sets: Vec<&str> = TRAIN.iter().copied().chain(sets.iter().map(String::as_str)).collect();
    let out = Run::new(["train", "--run-dir", run.to_str().unwrap()]).sets(&sets).ok();
    let err = text(&out.stderr) + &text(&out.stdout);
    assert!(err.contains("`x_train` is float64; spotrun holds it as float32"), "{err}");
    assert!(run.join("model.safetensors").exists());
}

#[test]
fn string_labels_become_classes_in_sorted_order() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    data_py(
        r#"
import sys, os, numpy as np, pyarrow as pa, pyarrow.parquet as pq
d = sys.argv[1]
rng = np.random.default_rng(3)
names = np.array(["zebra", "ant", "moose"])
for split, n in [("train", 600), ("val", 150)]:
    y = rng.integers(0, 3, n)
    x = rng.standard_normal((n, 4)).astype(np.float32) + 3 * y[:, None]
    pq.write_table(pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "d": x[:, 3], "kind": names[y]}), os.path.join(d, split + ".parquet"))
"#,
        &[d.as_os_str()],
    );
    let run = d.join("run");
    let val = format!("data.val_path=\"{}\"", d.join("val.parquet").display());
    let sets = source("parquet", &d.join("train.parquet"), &[&val, "data.target=\"kind\""]);
    let sets: Vec<&str> = TRAIN.iter().copied().chain(sets.iter().map(String::as_str)).collect();
    let out = Run::new(["train", "--run-dir", run.to_str().unwrap()])
        .sets(&sets)
        .sets(&["train.epochs=10", "optim.lr=0.01"])
        .ok();
    let all = text(&out.stderr) + &text(&out.stdout);
    assert!(all.contains("0=ant, 1=moose, 2=zebra"), "{all}");
    // The model has three outputs, and learned the (easy) rule: accuracy well above a third.
    let m = crate::common::metrics(&run);
    let acc = m.last().unwrap()["val_accuracy"].as_f64().unwrap();
    assert!(acc > 0.6, "val accuracy {acc}");
}

#[test]
fn the_val_fraction_split_follows_split_seed_not_train_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    make(d);
    let run = |name: &str, extra: &[&str]| {
        let sets = source("parquet", &d.join("train.parquet"), &[&["data.val_fraction=0.2"], extra].concat());
        let sets: Vec<&str> = TRAIN.iter().copied().chain(sets.iter().map(String::as_str)).collect();
        let r = d.join(name);
        Run::new(["train", "--run-dir", r.to_str().unwrap()]).sets(&sets).set("train.epochs=1").ok();
        let m: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(crate::common::committed(&r).pop().unwrap().join("manifest.json")).unwrap(),
        )
        .unwrap();
        m["data_fingerprint"].as_str().unwrap().to_string()
    };
    let a = run("a", &["train.seed=1"]);
    let b = run("b", &["train.seed=2"]);
    let c = run("c", &["train.seed=1", "data.split_seed=5"]);
    assert_eq!(a, b, "another train.seed keeps the split (the data fingerprint covers both splits)");
    assert_ne!(a, c, "another data.split_seed is another split");
}

#[test]
fn npy_and_parquet_runs_killed_after_a_commit_resume_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    make(d);
    let val = format!("data.val_path=\"{}\"", d.join("val.parquet").display());
    for sets in [source("npy", &d.join("npydir"), &[]), source("parquet", &d.join("train.parquet"), &[&val])] {
        let mut base: Vec<&str> = sets.iter().map(String::as_str).collect();
        base.extend([
            "model.hidden=[32]",
            "model.dropout=0.1",
            "train.batch_size=20",
            "train.epochs=3",
            "train.log_every=0",
        ]);
        crate::resume::kill_and_term_resume_exactly(&base);
    }
}

/// Runs spotrun on `sets`, asserts exit 2 with one error line naming `file` and `key`, and that nothing was
/// written.
#[track_caller]
fn refused(tmp: &Path, sets: &[String], file: &str, key: &str, what: &str) {
    let run = tmp.join("refused");
    let sets: Vec<&str> = TRAIN.iter().copied().chain(sets.iter().map(String::as_str)).collect();
    let err = Run::new(["train", "--run-dir", run.to_str().unwrap()]).sets(&sets).bad();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    for want in [file, key, what] {
        assert!(err.contains(want), "`{want}` missing from: {err}");
    }
    assert!(!run.exists(), "nothing written for: {err}");
    eprintln!("refused as expected: {}", err.trim_end());
}

#[test]
fn bad_numpy_inputs_exit_2_naming_the_file_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    data_py(
        r#"
import sys, os, numpy as np
d = sys.argv[1]
rng = np.random.default_rng(0)
good = {"x_train": rng.standard_normal((50, 3)).astype(np.float32), "y_train": np.arange(50) % 2,
        "x_val": rng.standard_normal((20, 3)).astype(np.float32), "y_val": np.arange(20) % 2}
def npz(name, **change):
    np.savez(os.path.join(d, name), **{**good, **change})
npz("object.npz", y_train=np.array([0, 1] * 25, dtype=object))
npz("missing.npz")
nan = good["x_train"].copy(); nan[7, 2] = np.nan
npz("nan.npz", x_train=nan)
npz("shapes.npz", x_val=good["x_val"][:, :2])
npz("struct.npz", x_train=np.zeros(50, dtype=[("a", "<f4"), ("b", "<f4")]))
os.makedirs(os.path.join(d, "cut"))
for k, a in good.items():
    np.save(os.path.join(d, "cut", k + ".npy"), a)
b = open(os.path.join(d, "cut", "x_val.npy"), "rb").read()
open(os.path.join(d, "cut", "x_val.npy"), "wb").write(b[:-5])
os.makedirs(os.path.join(d, "garbled"))
for k, a in good.items():
    np.save(os.path.join(d, "garbled", k + ".npy"), a)
open(os.path.join(d, "garbled", "y_val.npy"), "wb").write(b"\x93NUMPY\x01\x00\x10\x00{'descr': 'what")
open(os.path.join(d, "notzip.npz"), "wb").write(b"PK\x03\x04 this is not an archive")
"#,
        &[d.as_os_str()],
    );
    // missing.npz is complete: the config asks for a name it does not have.
    let cases: [(&str, &[&str], &str, &str, &str); 8] = [
        ("object.npz", &[], "object.npz", "data.y_train", "pickle"),
        ("missing.npz", &["data.x_val=\"x_test\""], "missing.npz", "data.x_val", "x_test"),
        ("nan.npz", &[], "nan.npz", "data.x_train", "NaN"),
        ("shapes.npz", &[], "shapes.npz", "data.x_val", "per-sample shape"),
        ("struct.npz", &[], "struct.npz", "data.x_train", "structured"),
        ("cut", &[], "x_val.npy", "data.x_val", "truncated"),
        ("garbled", &[], "y_val.npy", "data.y_val", "header"),
        ("notzip.npz", &[], "notzip.npz", "data.path", ".npz"),
    ];
    for (path, extra, file, key, what) in cases {
        refused(d, &source("npy", &d.join(path), extra), file, key, what);
    }
}

#[test]
fn bad_parquet_inputs_exit_2_naming_the_file_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    data_py(
        r#"
import sys, os, numpy as np, pyarrow as pa, pyarrow.parquet as pq
d = sys.argv[1]
rng = np.random.default_rng(0)
def t(n, **extra):
    cols = {"a": rng.standard_normal(n).astype(np.float32), "b": rng.standard_normal(n), "label": np.arange(n) % 2}
    cols.update(extra)
    return pa.table(cols)
w = lambda tab, name: pq.write_table(tab, os.path.join(d, name))
w(t(40), "good.parquet"); w(t(20), "val.parquet")
w(t(40, a=pa.array([1.0] * 17 + [None] + [1.0] * 22, pa.float32())), "nulls.parquet")
w(t(40, b=np.where(np.arange(40) == 9, np.inf, 1.0)), "inf.parquet")
w(t(40, a=pa.array(["x"] * 40)), "strings.parquet")
w(pa.table({"v": pa.array([[1.0, 2.0]] * 10 + [[1.0]] + [[1.0, 2.0]] * 9), "label": np.arange(20) % 2}), "ragged.parquet")
w(pa.table({"a": np.ones(20, np.float32), "label": np.arange(20) % 2}), "narrow_val.parquet")
b = open(os.path.join(d, "good.parquet"), "rb").read()
open(os.path.join(d, "cut.parquet"), "wb").write(b[: len(b) // 2])
"#,
        &[d.as_os_str()],
    );
    let val = format!("data.val_path=\"{}\"", d.join("val.parquet").display());
    let v = val.as_str();
    let cases: [(&str, Vec<&str>, &str, &str, &str); 9] = [
        (
            "good.parquet",
            vec![v, "data.features=[\"a\", \"nope\"]"],
            "good.parquet",
            "data.features",
            "no column `nope`",
        ),
        ("good.parquet", vec![v, "data.target=\"kind\""], "good.parquet", "data.target", "no column `kind`"),
        ("nulls.parquet", vec![v], "nulls.parquet", "data.features", "null at row 17"),
        ("inf.parquet", vec![v], "inf.parquet", "data.x_train", "inf"),
        ("strings.parquet", vec![v, "data.features=[\"a\", \"b\"]"], "strings.parquet", "data.features", "not numeric"),
        ("ragged.parquet", vec!["data.val_fraction=0.2"], "ragged.parquet", "data.features", "ragged"),
        ("cut.parquet", vec![v], "cut.parquet", "data.path", "Parquet"),
        (
            "good.parquet",
            vec!["data.val_path=\"narrow_val.parquet\""],
            "narrow_val.parquet",
            "data.features",
            "no column `b`",
        ),
        ("good.parquet", vec![], "", "data.val_path", "validation set"),
    ];
    for (path, extra, file, key, what) in cases {
        let extra: Vec<String> = extra
            .iter()
            .map(|s| s.replace("narrow_val.parquet", &d.join("narrow_val.parquet").display().to_string()))
            .collect();
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        refused(d, &source("parquet", &d.join(path), &extra), file, key, what);
    }
}
