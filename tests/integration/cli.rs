//! Every argument checked, every message right: each value a new user might try that used to render silently
//! (or say something untrue) is an exit-2 error or an explicit warning, through the real binary.
use std::path::{Path, PathBuf};

use crate::common::{run_bad, run_ok, sets, spotrun, text, Run, SMALL};

/// A two-run CPU sweep file in `dir`.
fn sweep_file(dir: &Path) -> PathBuf {
    crate::common::tiny_sweep(dir, "cli", 1)
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Exit 2 with one `error:` line (clap's own errors add a usage hint after it) containing every needle.
#[track_caller]
fn refused(args: &[String], needles: &[&str]) {
    let out = spotrun().args(args).output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.starts_with("error: ") && !err.contains("panicked"), "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: expected {n:?} in {err}");
    }
}

#[test]
fn slurm_options_that_would_render_a_wrong_script_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = sweep_file(tmp.path()).display().to_string();
    let vol = tmp.path().join("vol").display().to_string();
    let base = |extra: &[&str]| {
        let mut a = strs(&["slurm", &sweep, "--volume", &vol]);
        a.extend(strs(extra));
        a
    };
    refused(&base(&["--max-parallel", "0"]), &["--max-parallel must be at least 1"]);
    refused(&base(&["--grace", "0"]), &["--grace must be at least 1"]);
    refused(&base(&["--cpus-per-task", "0"]), &["--cpus-per-task must be at least 1"]);
    refused(&base(&["--sbatch=account=x"]), &["--sbatch \"account=x\"", "--sbatch=--account=myproj"]);
    assert!(!Path::new(&vol).exists(), "nothing written for refused options");
    // The header names the script where it really is.
    let script = tmp.path().join("elsewhere.sbatch");
    run_ok(&base(&["-o", &script.display().to_string()]));
    let body = std::fs::read_to_string(&script).unwrap();
    assert!(body.contains(&format!("#   sbatch {}", script.display())), "{body}");
}

#[test]
fn k8s_options_that_kubernetes_would_reject_or_that_silently_change_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = sweep_file(tmp.path()).display().to_string();
    let base = |extra: &[&str]| {
        let mut a = strs(&["k8s", &sweep]);
        a.extend(strs(extra));
        a
    };
    refused(&base(&["--memory", "banana"]), &["--memory \"banana\" is not a Kubernetes quantity"]);
    refused(&base(&["--mount", "relative/path"]), &["--mount \"relative/path\" must be an absolute path"]);
    refused(&base(&["--mount", "/"]), &["--mount \"/\""]);
    refused(&base(&["--grace", "0"]), &["--grace must be at least 1"]);
    refused(&base(&["--namespace", "Bad_NS"]), &["--namespace \"Bad_NS\" is not a valid namespace"]);
    refused(&base(&["--parallelism", "0"]), &["--parallelism must be at least 1"]);
    refused(&base(&["--cpus", "0"]), &["--cpus must be at least 1"]);
    // A CPU sweep asks for no GPU unless told to; a relative data.path is warned about.
    let yaml = text(&run_ok(&base(&[])).stdout);
    assert!(!yaml.contains("nvidia.com/gpu"), "{yaml}");
    assert!(text(&run_ok(&base(&["--gpus-per-pod", "2"])).stdout).contains("nvidia.com/gpu: 2"));
    let data = tmp.path().join("rel.toml");
    std::fs::write(
        &data,
        "name = \"rel\"\n[base]\ndata = { source = \"safetensors\", path = \"data/d.safetensors\" }\n\
         [parameters]\n\"optim.lr\" = [0.001]\n",
    )
    .unwrap();
    let out = spotrun().args(["k8s", &data.display().to_string()]).output().unwrap();
    assert!(
        text(&out.stderr).contains("warning: data.path = \"data/d.safetensors\" is relative"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn zero_workers_and_zero_runs_per_gpu_are_errors_with_plain_words() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = sweep_file(tmp.path()).display().to_string();
    refused(&strs(&["sweep", &sweep, "--workers", "0"]), &["--workers", "must be at least 1"]);
    let out = spotrun().args(["sweep", &sweep, "--per-gpu", "0"]).output().unwrap();
    let err = text(&out.stderr);
    assert!(err.contains("must be at least 1") && !err.contains("18446744073709551615"), "{err}");
    let dry = text(&run_ok(&strs(&["sweep", &sweep, "--dry-run"])).stdout);
    assert!(dry.contains("slots (DEVICE/k: the k-th of the --per-gpu runs"), "{dry}");
}

#[test]
fn status_and_report_of_a_sweep_that_never_ran_on_the_volume_are_errors_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = sweep_file(tmp.path()).display().to_string();
    let vol = tmp.path().join("novolume");
    for cmd in ["status", "report"] {
        refused(
            &strs(&[cmd, &sweep, "--volume", &vol.display().to_string()]),
            &["has not run on this volume", "novolume"],
        );
    }
    assert!(!vol.exists(), "report created nothing");
}

#[test]
fn seeds_with_a_swept_train_seed_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("s.toml");
    std::fs::write(&p, "name = \"s\"\nseeds = [1, 2]\n[parameters]\n\"train.seed\" = [3, 4]\n").unwrap();
    refused(&strs(&["sweep", &p.display().to_string(), "--dry-run"]), &["seeds", "train.seed", "use one of the two"]);
}

#[test]
fn changing_only_train_epochs_says_where_the_run_is_and_how_to_extend_it() {
    let tmp = tempfile::tempdir().unwrap();
    let train = |extra: &[&str]| {
        let mut kv = SMALL.to_vec();
        kv.extend(extra);
        let mut a = vec!["train".to_string()];
        a.extend(sets(&kv));
        a
    };
    Run::new(train(&[])).current_dir(tmp.path()).ok();
    let out = Run::new(train(&["train.epochs=3"])).current_dir(tmp.path()).output();
    let err = text(&out.stderr);
    assert!(
        err.contains("holds this run with train.epochs = 2") && err.contains("add --run-dir runs/default-"),
        "{err}"
    );
    // With --run-dir the run is extended; a cosine schedule stretched by it is warned about.
    let d = tmp.path().join("cos");
    let mut a = train(&["schedule.kind=cosine"]);
    a.extend(["--run-dir".to_string(), d.display().to_string()]);
    run_ok(&a);
    let mut longer = train(&["schedule.kind=cosine", "train.epochs=3"]);
    longer.extend(["--run-dir".to_string(), d.display().to_string()]);
    let err = text(&run_ok(&longer).stderr);
    assert!(err.contains("extending the run from 2 to 3 epochs") && err.contains("cosine schedule spans"), "{err}");
    // Lowering epochs says what is true: a run cannot be shortened.
    let mut shorter = train(&["schedule.kind=cosine", "train.epochs=1"]);
    shorter.extend(["--run-dir".to_string(), d.display().to_string()]);
    let err = run_bad(&shorter);
    assert!(err.contains("cannot be shortened") && !err.contains("change only train.epochs"), "{err}");
}

#[test]
fn errors_use_plain_words_not_rust_type_names() {
    let err = run_bad(&strs(&["train", "--set", "train=5", "--run-dir", "/nonexistent/x"]));
    assert!(err.contains("expected a section") && !err.contains("struct"), "{err}");
    assert!(err.contains("--set train=5"), "names the --set: {err}");
}

#[test]
fn every_subcommand_and_flag_has_a_description() {
    let help = text(&run_ok(&strs(&["--help"])).stdout);
    let subs: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next()?.to_string();
            assert!(words.next().is_some(), "subcommand {name} has no description");
            Some(name)
        })
        .filter(|n| n != "help")
        .collect();
    assert!(subs.len() >= 10, "{subs:?}");
    for sub in subs {
        let h = text(&run_ok(&strs(&[&sub, "--help"])).stdout);
        let lines: Vec<&str> = h.lines().collect();
        for (i, e) in lines.iter().enumerate() {
            if !(e.starts_with("  -") || e.starts_with("  <") || e.starts_with("  [")) {
                continue;
            }
            // On the same line after two spaces, or (clap's long layout) on the next, further indented line.
            let same_line = e.trim().split_once("  ").is_some_and(|(_, d)| !d.trim().is_empty());
            let next_line = lines.get(i + 1).is_some_and(|n| n.starts_with("          ") && !n.trim().is_empty());
            assert!(same_line || next_line, "spotrun {sub}: `{}` has no description", e.trim());
        }
    }
}

#[test]
fn sweep_lines_show_the_sweeps_metric_and_estimate_says_cpu_epochs_are_priced_as_gpu_time() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = crate::common::tiny_sweep(tmp.path(), "m", 1);
    let text_ =
        std::fs::read_to_string(&sweep).unwrap().replace("name = \"m\"\n", "name = \"m\"\nmetric = \"train_loss\"\n");
    std::fs::write(&sweep, text_).unwrap();
    let vol = tmp.path().join("vol").display().to_string();
    let out = Run::new(["sweep", &sweep.display().to_string(), "--volume", &vol]).ok();
    let err = text(&out.stderr);
    assert!(err.lines().any(|l| l.contains("after 1 epochs train_loss ")), "{err}");
    let out = Run::new(["estimate", &sweep.display().to_string(), "--volume", &vol, "--gpu", "H100"]).ok();
    let err = text(&out.stderr);
    assert!(err.contains("trained on the CPU; their epoch times are priced here as H100 time"), "{err}");
}
