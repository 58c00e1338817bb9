//! What a run records of where it ran, and what follows from it, as far as a CPU machine can show it: every
//! checkpoint manifest names the device type and the precision `train.precision` resolved to; a resume where
//! `auto` resolves differently warns, naming both; an explicit `train.precision` is kept without a word; `spotrun
//! inspect` shows both fields.
//!
//! `auto` resolves to bf16 on CUDA and fp32 on the CPU. A CPU machine has one device type, so the first process
//! runs with `SPOTRUN_TEST_AUTO_AS_ON_CUDA=1` (a test hook: `auto` resolves as it does on CUDA, really running CPU
//! bf16 autocast) and the resume without it: the same config and run id, only the resolution differs, as on a GPU
//! run resumed where no GPU is seen. (Changing `train.precision` itself changes the run id and needs
//! `--allow-config-change`: a different case, which the warning also covers.)
use std::path::Path;

use crate::common::{committed, text, Run};

/// The newest committed checkpoint's manifest.
fn newest_manifest(run_dir: &Path) -> serde_json::Value {
    let newest = committed(run_dir).pop().expect("a committed checkpoint");
    serde_json::from_str(&std::fs::read_to_string(newest.join("manifest.json")).unwrap()).unwrap()
}

/// `spotrun train` on the CPU (the test must not depend on a GPU being seen), `epochs` long.
fn train(dir: &Path, epochs: usize, precision: &str) -> Run {
    Run::train(dir)
        .set("train.device=cpu")
        .set(&format!("train.epochs={epochs}"))
        .set(&format!("train.precision=\"{precision}\""))
}

#[test]
fn a_resume_where_auto_resolves_differently_warns_naming_both_and_inspect_shows_them() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("run");
    let out = train(&d, 1, "auto").env("SPOTRUN_TEST_AUTO_AS_ON_CUDA", "1").ok();
    assert!(text(&out.stderr).contains("precision bf16 autocast"), "{}", text(&out.stderr));
    let m = newest_manifest(&d);
    assert_eq!((m["device"].as_str(), m["precision"].as_str()), (Some("cpu"), Some("bf16")), "{m}");

    // The same run, extended by one epoch (same run id): it resumes from the epoch-1 checkpoint, now in fp32.
    let out = train(&d, 2, "auto").ok();
    let err = text(&out.stderr);
    assert!(err.contains("resuming from"), "{err}");
    let warning = "warning: resuming on another device or precision: cpu with bf16 (the checkpoint) -> cpu with \
                   fp32 (now); train.precision = \"auto\" resolves per device";
    assert_eq!(err.matches(warning).count(), 1, "one warning line naming both:\n{err}");
    let m = newest_manifest(&d);
    assert_eq!((m["device"].as_str(), m["precision"].as_str()), (Some("cpu"), Some("fp32")), "{m}");

    let out = Run::new(["inspect".to_string(), d.display().to_string()]).ok();
    let report = text(&out.stdout);
    assert!(report.contains("trained on: device cpu, precision bf16"), "{report}");
    assert!(report.contains("trained on: device cpu, precision fp32"), "{report}");
}

#[test]
fn an_explicit_precision_is_kept_and_an_unchanged_resume_says_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // Explicit bf16: the hook changes only what `auto` resolves to, so both processes run bf16.
    let d = tmp.path().join("bf16");
    train(&d, 1, "bf16").env("SPOTRUN_TEST_AUTO_AS_ON_CUDA", "1").ok();
    let err = text(&train(&d, 2, "bf16").ok().stderr);
    assert!(err.contains("resuming from") && err.contains("precision bf16 autocast"), "{err}");
    assert!(!err.contains("another device or precision"), "{err}");
    assert_eq!(newest_manifest(&d)["precision"].as_str(), Some("bf16"));
    // `auto` resolving the same both times (fp32 on the CPU): no warning either.
    let d = tmp.path().join("auto");
    train(&d, 1, "auto").ok();
    let err = text(&train(&d, 2, "auto").ok().stderr);
    assert!(err.contains("resuming from") && !err.contains("another device or precision"), "{err}");
}

/// `spotrun sample RUN_DIR ARGS…` (20 tokens).
fn sample(run_dir: &Path, args: &[&str]) -> Run {
    let mut all = vec!["sample".to_string(), run_dir.display().to_string(), "--tokens".into(), "20".into()];
    all.extend(args.iter().map(|a| a.to_string()));
    Run::new(all)
}

#[test]
fn sample_runs_on_the_runs_device_and_refuses_one_that_is_not_there() {
    let gpus = tch::Cuda::device_count();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("gpt");
    Run::train(&d).sets(&crate::workloads::TINY_GPT).set("train.epochs=1").set("train.device=cpu").ok();
    // The run's train.device (cpu), said on stderr.
    let out = sample(&d, &[]).ok();
    assert!(text(&out.stderr).contains(" on cpu\n"), "{}", text(&out.stderr));
    // A device that is not there is an error naming it, never a silent CPU run.
    if gpus == 0 {
        let err = sample(&d, &["--device", "cuda"]).bad();
        assert!(err.contains("cannot sample on cuda (--device)") && err.contains("--device cpu"), "{err}");
    } else {
        let out = sample(&d, &["--device", "cuda"]).ok();
        assert!(text(&out.stderr).contains(" on cuda:0\n"), "{}", text(&out.stderr));
    }
    let err = sample(&d, &["--device", "gpu"]).bad();
    assert!(err.contains("\"gpu\" is not one of auto, cpu, cuda, cuda:N"), "{err}");

    // A run with train.device = "auto" whose checkpoint says it trained on CUDA: sampled on a GPU where there is
    // one; where there is none, only when --device cpu asks for it.
    let d = tmp.path().join("auto");
    Run::train(&d).sets(&crate::workloads::TINY_GPT).set("train.epochs=1").set("train.device=auto").ok();
    let newest = committed(&d).pop().unwrap().join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&newest).unwrap()).unwrap();
    assert_eq!(m["device"].as_str(), Some(if gpus == 0 { "cpu" } else { "cuda" }), "{m}");
    m["device"] = "cuda".into();
    std::fs::write(&newest, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    if gpus == 0 {
        let err = sample(&d, &[]).bad();
        assert!(err.contains("the run trained on cuda") && err.contains("--device cpu"), "{err}");
        let out = sample(&d, &["--device", "cpu"]).ok();
        assert!(text(&out.stderr).contains(" on cpu\n"), "{}", text(&out.stderr));
    } else {
        let out = sample(&d, &[]).ok();
        assert!(text(&out.stderr).contains(" on cuda:0\n"), "{}", text(&out.stderr));
    }
}

/// The memory check on the CPU is what it was: host memory, no GPU figures (the GPU budget, free memory plus this
/// process's cached blocks within its `--per-gpu` share, is unit-tested in `device`; no GPU runs these tests).
#[test]
fn a_model_too_big_for_the_host_is_refused_with_the_host_figure() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Run::train(&tmp.path().join("run")).set("train.device=cpu").set("model.hidden=[4000000000]").bad();
    let (_, tail) = err.split_once(" with gradients and adamw state, but this machine has ").expect(&err);
    assert!(tail.ends_with(" free; make it smaller (model.hidden)\n"), "{err}");
    assert!(!err.contains("cached") && !err.contains("share"), "{err}");
}
