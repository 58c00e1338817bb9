//! Never lose a run, never panic: closed output streams, lost or unreadable checkpoints, shared checkpoint
//! directories, values that cannot be trained on, and memory that does not suffice, all through the real binary.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tch::{Kind, Tensor};

use crate::common::{committed, metrics, run_bad, run_ok, sets, spotrun, text, Run, SMALL};

fn train_args(dir: &Path, extra: &[&str]) -> Vec<String> {
    Run::train(dir).sets(extra).into_args()
}

/// Every file under `d` with its bytes (to show that a refused command changed nothing).
fn snapshot(d: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![d.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n != ".lock") {
                out.push((path.clone(), std::fs::read(&path).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

/// A pipe whose read end is already closed: every write to the other end fails with EPIPE.
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Stdio::from(writer)
}

#[test]
fn training_and_a_sweep_finish_when_stdout_and_stderr_are_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("run");
    let status = spotrun()
        .args(train_args(&d, &["train.epochs=3"]))
        .stdout(closed_pipe())
        .stderr(closed_pipe())
        .status()
        .unwrap();
    assert!(status.success(), "training must not die of a closed stderr: {status}");
    assert_eq!(metrics(&d).len(), 3);
    assert!(d.join("model.safetensors").exists() && !committed(&d).is_empty());

    let sweep = crate::common::tiny_sweep(tmp.path(), "s", 2);
    let volume = tmp.path().join("vol");
    let status = spotrun()
        .args(["sweep", &sweep.display().to_string(), "--volume", &volume.display().to_string()])
        .stdout(closed_pipe())
        .stderr(closed_pipe())
        .status()
        .unwrap();
    assert!(status.success(), "the sweep launcher must not die of a closed stderr: {status}");
    let done =
        std::fs::read_dir(volume.join("s/runs")).unwrap().flatten().filter(|e| e.path().join("done.json").exists());
    assert_eq!(done.count(), 2);
}

#[test]
fn a_finished_run_whose_checkpoints_are_unusable_is_refused_not_retrained_unless_start_over() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("run");
    Run::train(&d).ok();
    // Every manifest corrupt: before, the run silently started over and overwrote model.safetensors.
    for c in committed(&d) {
        std::fs::write(c.join("manifest.json"), b"{ not json").unwrap();
    }
    let before = snapshot(&d);
    let err = Run::train(&d).bad();
    assert!(err.contains("already holds a trained run") && err.contains("2 epoch(s) in metrics.jsonl"), "{err}");
    assert!(err.contains("model.safetensors") && err.contains("invalid manifest") && err.contains("--start-over"));
    assert_eq!(err.lines().count(), 1, "one error line: {err}");
    assert_eq!(snapshot(&d), before, "a refusal changes nothing");

    // The checkpoints gone altogether (and the weights too): the run dir records that it had checkpoints.
    std::fs::remove_dir_all(d.join("checkpoints")).unwrap();
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    let err = Run::train(&d).bad();
    assert!(err.contains("2 epoch(s) in metrics.jsonl") && err.contains("no usable checkpoint"), "{err}");

    // --start-over trains again, keeping the old results aside.
    let out = Run::train(&d).arg("--start-over").ok();
    assert!(text(&out.stderr).contains("previous results were moved to"), "{}", text(&out.stderr));
    let aside: Vec<PathBuf> = std::fs::read_dir(&d)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("replaced-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(metrics(&aside[0]).len(), 2, "the old metrics are kept");
    assert_eq!(metrics(&d).len(), 2);
}

#[test]
fn a_corrupt_or_unreadable_newest_checkpoint_is_warned_about_and_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("run");
    let keep = ["checkpoint.keep_last=5"];
    Run::train(&d).sets(&keep).ok();
    let [first, newest] = <[PathBuf; 2]>::try_from(committed(&d)).unwrap();
    // A manifest that cannot be read (an I/O error, here EISDIR) is not "never committed".
    std::fs::remove_file(newest.join("manifest.json")).unwrap();
    std::fs::create_dir(newest.join("manifest.json")).unwrap();
    let out = Run::train(&d).sets(&["checkpoint.keep_last=1", "train.epochs=3"]).ok();
    let err = text(&out.stderr);
    assert!(err.contains("warning: skipping checkpoint") && err.contains("cannot read the manifest"), "{err}");
    assert!(err.contains(&format!("resuming from {}", first.display())), "{err}");
    // Saving step 16 again moved the unreadable directory aside instead of deleting or overwriting it.
    assert!(err.contains("could not be used; kept as"), "{err}");
    let kept: Vec<PathBuf> = std::fs::read_dir(d.join("checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("unusable-ckpt-0000000016-"))
        .collect();
    assert_eq!(kept.len(), 1, "never deleted what it could not identify");
    assert!(kept[0].join("manifest.json").is_dir() && kept[0].join("model.safetensors").exists());

    // A tensor file that cannot be read (an I/O error at resume): fall back to the previous one, with a warning.
    let d2 = tmp.path().join("run2");
    Run::train(&d2).sets(&keep).ok();
    let newest = committed(&d2).pop().unwrap();
    std::fs::remove_file(newest.join("state.safetensors")).unwrap();
    std::fs::create_dir(newest.join("state.safetensors")).unwrap();
    let out = Run::train(&d2).sets(&["checkpoint.keep_last=5", "train.epochs=3"]).ok();
    let err = text(&out.stderr);
    assert!(err.contains("warning: skipping checkpoint") && err.contains("state.safetensors"), "{err}");
    assert!(err.contains("resuming from") && err.contains("ckpt-0000000008"), "{err}");
}

#[test]
fn a_checkpoint_directory_that_cannot_be_listed_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("run");
    Run::train(&d).ok();
    std::fs::rename(d.join("checkpoints"), tmp.path().join("moved")).unwrap();
    std::fs::write(d.join("checkpoints"), b"a file where the checkpoint directory should be").unwrap();
    let before = snapshot(&d);
    let out = Run::train(&d).sets(&["train.epochs=3"]).output();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: ") && err.contains(&d.join("checkpoints").display().to_string()), "{err}");
    assert!(!err.contains("panicked"));
    assert_eq!(snapshot(&d), before, "metrics.jsonl was not reset");
}

#[test]
fn a_checkpoint_directory_belongs_to_one_run_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = tmp.path().join("shared-ckpts");
    let set = format!("checkpoint.dir={}", shared.display());
    let a = tmp.path().join("a");
    Run::train(&a).sets(&[&set]).ok();
    let before = snapshot(&shared);
    for (other, extra) in [("b", "train.epochs=3"), ("c", "train.epochs=2")] {
        let err = Run::train(&tmp.path().join(other)).sets(&[&set, extra]).bad();
        assert!(err.contains("checkpoint.dir") && err.contains("belongs to the run in"), "{err}");
        assert!(err.contains(&std::path::absolute(&a).unwrap().display().to_string()), "names the owner: {err}");
        assert!(!tmp.path().join(other).exists(), "nothing written for the refused run");
    }
    assert_eq!(snapshot(&shared), before, "the owner's checkpoints are untouched");
    // The owner itself still resumes (and extends) there.
    let out = Run::train(&a).sets(&[&set, "train.epochs=3"]).ok();
    assert!(text(&out.stderr).contains("resuming from"), "{}", text(&out.stderr));
}

#[test]
fn an_inline_table_set_keeps_the_rest_of_the_section() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("sgd.toml");
    std::fs::write(&cfg, "[optim]\nkind = \"sgd\"\nmomentum = 0.9\ngrad_clip = 1.0\n").unwrap();
    let d = tmp.path().join("run");
    let mut a = vec!["train".to_string(), cfg.display().to_string(), "--run-dir".into(), d.display().to_string()];
    a.extend(sets(&[&SMALL[..], &["train.epochs=1", "optim={lr=0.1}"]].concat()));
    run_ok(&a);
    let resolved = std::fs::read_to_string(d.join("config.toml")).unwrap();
    for want in ["kind = \"sgd\"", "momentum = 0.9", "grad_clip = 1.0", "lr = 0.1"] {
        assert!(resolved.contains(want), "{want} missing from:\n{resolved}");
    }
}

fn write_data(path: &Path, edit: impl Fn(&mut [Tensor; 4])) {
    let x = Tensor::randn([200, 8], (Kind::Float, tch::Device::Cpu));
    let y = Tensor::arange(200, (Kind::Int64, tch::Device::Cpu)).remainder(4);
    let mut t = [
        x.narrow(0, 0, 150).copy(),
        y.narrow(0, 0, 150).copy(),
        x.narrow(0, 150, 50).copy(),
        y.narrow(0, 150, 50).copy(),
    ];
    edit(&mut t);
    let names = ["x_train", "y_train", "x_val", "y_val"];
    let named: Vec<(String, Tensor)> = names.iter().zip(t).map(|(n, t)| (n.to_string(), t)).collect();
    spotrun::checkpoint::save(path, &named).unwrap();
}

/// A damaged dataset: name, how to damage it, what the error must say.
type DataCase = (&'static str, fn(&mut [Tensor; 4]), &'static [&'static str]);

fn data_run(tmp: &Path, file: &Path) -> Vec<String> {
    let mut a = vec!["train".to_string(), "--run-dir".into(), tmp.join("run").display().to_string()];
    a.extend(sets(&[
        "data.source=safetensors",
        &format!("data.path={}", file.display()),
        "model.hidden=[8]",
        "train.batch_size=50",
        "train.epochs=1",
    ]));
    a
}

#[test]
fn non_finite_inputs_and_stray_labels_are_refused_at_load_time() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("d.safetensors");
    let cases: [DataCase; 3] = [
        (
            "nan",
            |t| {
                let _ = t[0].get(7).get(3).fill_(f64::NAN);
            },
            &["`x_train` (data.x_train) holds NaN at index [7, 3]"],
        ),
        (
            "inf",
            |t| {
                let _ = t[2].get(0).get(0).fill_(f64::INFINITY);
            },
            &["`x_val` (data.x_val) holds inf at index [0, 0]"],
        ),
        (
            "stray",
            |t| {
                let _ = t[3].get(5).fill_(99);
            },
            &["label 99 appears in `y_val`", "never in `y_train`", "model.classes"],
        ),
    ];
    for (name, edit, needles) in cases {
        write_data(&f, edit);
        let err = run_bad(&data_run(tmp.path(), &f));
        for n in needles {
            assert!(err.contains(n), "{name}: expected {n:?} in {err}");
        }
        assert!(!tmp.path().join("run").exists(), "{name}: nothing written before the data is checked");
    }
    // A class with no training sample is a warning, not an error (declared with model.classes).
    write_data(&f, |t| {
        let _ = t[1].clamp_max_(2);
    });
    let mut a = data_run(tmp.path(), &f);
    a.extend(sets(&["model.classes=5"]));
    let out = run_ok(&a);
    assert!(text(&out.stderr).contains("warning: 2 of 5 classes have no training sample"), "{}", text(&out.stderr));
}

/// `sh -c 'ulimit -v KB; exec spotrun ARGS'`: the process's address space is capped, so allocations fail for
/// real (as they would on a full GPU) without using the machine's memory.
fn capped(kb: u64, args: &[String]) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {kb} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_spotrun"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_model_or_batch_that_does_not_fit_in_memory_is_one_error_line_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("run");
    // Counted before anything is allocated: far more than any machine has.
    let err = Run::train(&d).set("model.hidden=[4000000000]").bad();
    assert!(err.contains("out of memory") && err.contains("parameters") && err.contains("model.hidden"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!d.exists());
    // In a sweep: recorded as out of memory in failed.json after one attempt, never retried.
    let sweep = crate::common::tiny_sweep(tmp.path(), "oom", 1);
    let text_ = std::fs::read_to_string(&sweep).unwrap().replace("model.hidden = [16]", "model.hidden = [4000000000]");
    std::fs::write(&sweep, text_).unwrap();
    let vol = tmp.path().join("vol");
    let out = spotrun()
        .args(["sweep", &sweep.display().to_string(), "--volume", &vol.display().to_string(), "--backoff", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    for run in std::fs::read_dir(vol.join("oom/runs")).unwrap().flatten() {
        let failed = std::fs::read_to_string(run.path().join("failed.json")).unwrap();
        assert!(failed.contains("out of memory"), "{failed}");
        let starts = crate::common::attempts(&run.path()).iter().filter(|a| a["event"] == "start").count();
        assert_eq!(starts, 1, "an out-of-memory run is not retried");
    }
    // Fits the machine but not the process (address space capped at 5 GB; libtorch's own start-up maps ~2.9 GB): the allocation itself fails, inside
    // libtorch, building the model (8.6e8 parameters = 3.4 GB) and at the first step (an 8192 x 1e6 activation).
    for (what, extra) in
        [("building the model", "model.hidden=[20000000]"), ("training epoch 1", "model.hidden=[1000000]")]
    {
        let mut a = train_args(&d, &[extra, "data.synthetic.train=8192", "train.batch_size=8192"]);
        a.insert(1, "--quiet".into());
        let out = capped(5_000_000, &a);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(err.starts_with("error: out of memory: ") && err.contains(what), "{what}: {err}");
        assert_eq!(err.lines().count(), 1, "{what}: one line, no C++ trace: {err}");
    }
}

#[test]
fn inspect_and_status_never_panic_on_short_or_non_ascii_run_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("run");
    Run::train(&d).ok();
    let newest = committed(&d).pop().unwrap();
    let path = newest.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for id in ["é", "ab", "ααααααααααααααααααα"] {
        m["run_id"] = id.into();
        std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
        let out = spotrun().args(["inspect", &newest.display().to_string()]).output().unwrap();
        assert!(out.status.success(), "{id}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains(&format!("run id {}", id.chars().take(16).collect::<String>())));
    }
    let err = run_bad(&["inspect".into(), tmp.path().join("nope").display().to_string()]);
    assert!(err.contains("no such path"), "{err}");
}

/// A tmpfs mounted at `dir` (root only; the tests run as root here and in CI).
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount").args(["-t", "tmpfs", "none", &dir.display().to_string()]).status().unwrap();
        assert!(ok.success(), "mount -t tmpfs failed (this test needs root)");
        Mount(dir.to_path_buf())
    }

    fn read_only(&self) {
        let ok = Command::new("mount").args(["-o", "remount,ro", &self.0.display().to_string()]).status().unwrap();
        assert!(ok.success());
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_volume_gives_clear_errors_and_finished_runs_still_report() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Mount::tmpfs(&tmp.path().join("ro"));
    let done = m.0.join("done");
    Run::train(&done).ok();
    let sweep = crate::common::tiny_sweep(tmp.path(), "s", 1);
    let vol = m.0.join("vol").display().to_string();
    run_ok(&["sweep".into(), sweep.display().to_string(), "--volume".into(), vol.clone(), "--quiet".into()]);
    m.read_only();
    // A finished run on a read-only mount still says so, and its files are unchanged.
    let before = snapshot(&done);
    let out = Run::train(&done).ok();
    assert!(text(&out.stdout).contains("already finished"), "{}", text(&out.stdout));
    assert_eq!(snapshot(&done), before);
    // A new run there is refused before the data loads, naming the path.
    let err = Run::train(&m.0.join("new")).bad();
    assert!(err.contains("read-only file system") && err.contains("/ro"), "{err}");
    // Extending the finished run needs to write: one clear error line, no panic.
    let out = Run::train(&done).sets(&["train.epochs=3"]).output();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.lines().last().unwrap().contains("Read-only file system") && !err.contains("panicked"), "{err}");
    // The sweep's status is still shown (results.csv cannot be rewritten: a warning).
    let out = spotrun().args(["status", &format!("{vol}/s")]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("warning:") && text(&out.stdout).contains("done"), "{}", text(&out.stdout));
}

#[test]
fn retention_deletes_superseded_checkpoints_quietly_and_completely() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("run");
    let out = Run::train(&d).sets(&["train.epochs=5", "checkpoint.keep_last=1"]).ok();
    let err = text(&out.stderr);
    assert!(!err.contains("warning"), "a normal run prints no warning:\n{err}");
    let left: Vec<String> = std::fs::read_dir(d.join("checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "owner.json" && n != ".lock")
        .collect();
    assert_eq!(left, ["ckpt-0000000040"], "only the newest checkpoint, no .deleting-* left behind");
}
