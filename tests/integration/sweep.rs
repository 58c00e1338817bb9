//! Sweeps through the real binary: launchers and workers as child processes, killed with real signals.
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::{attempts, children_of, committed, kill, newest_step, run_bad, run_ok, spotrun, text, wait_until};

/// A small base config: 2000 samples, 32 features, one hidden layer, one thread per run.
const BASE: &str = "[base]\ndata.synthetic = { train = 2000, val = 500, features = 32 }\nmodel.hidden = [64]\n\
                    train = { batch_size = 256, epochs = 3, threads = 1 }\n";

/// A base slow enough to be killed in the middle (~1-2 s per run), checkpointing every 5 steps.
const SLOW: &str = "[base]\ndata.synthetic = { train = 12000, val = 1000, features = 256 }\nmodel.hidden = [512]\n\
                    train = { batch_size = 256, epochs = 4, threads = 1 }\ncheckpoint = { every_steps = 5 }\n";

fn write_sweep(dir: &Path, name: &str, head: &str, base: &str, params: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, format!("name = \"{name}\"\n{head}\n{base}\n[parameters]\n{params}")).unwrap();
    p
}

/// 3 learning rates x 2 seeds = 6 runs.
fn six_runs(dir: &Path, base: &str) -> PathBuf {
    write_sweep(dir, "six", "seeds = [1, 2]\nlease_seconds = 30", base, "\"optim.lr\" = [0.001, 0.003, 0.01]\n")
}

fn args(sweep: &Path, volume: &Path, extra: &[&str]) -> Vec<String> {
    let mut v = vec!["sweep".to_string(), sweep.display().to_string(), "--volume".into(), volume.display().to_string()];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn launch(sweep: &Path, volume: &Path, extra: &[&str]) -> Child {
    spotrun().args(args(sweep, volume, extra)).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn run_dirs(volume: &Path, name: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(volume.join(name).join("runs")).into_iter().flatten().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

fn starts(run: &Path) -> Vec<Value> {
    attempts(run).into_iter().filter(|a| a["event"] == "start").collect()
}

fn epochs(run: &Path) -> Vec<u64> {
    crate::common::metrics(run).iter().map(|m| m["epoch"].as_u64().unwrap()).collect()
}

/// PIDs of the workers holding unreleased leases on a run directory.
fn lease_pids(run: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir(run).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("lease-") && n.ends_with(".json") {
            if let Ok(v) = serde_json::from_slice::<Value>(&std::fs::read(e.path()).unwrap_or_default()) {
                if v["released"] == false {
                    pids.push(v["pid"].as_u64().unwrap() as u32);
                }
            }
        }
    }
    pids
}

fn lease_held(run: &Path) -> bool {
    !lease_pids(run).is_empty()
}

/// PIDs of workers holding unreleased leases.
fn holders(volume: &Path, name: &str) -> Vec<u32> {
    run_dirs(volume, name).iter().flat_map(|d| lease_pids(d)).collect()
}

fn results_rows(volume: &Path, name: &str) -> Vec<String> {
    let t = std::fs::read_to_string(volume.join(name).join("results.csv")).unwrap();
    t.lines().skip(1).map(String::from).collect()
}

#[track_caller]
fn assert_each_run_done_once_with_every_epoch(volume: &Path, name: &str, n: usize, epochs_per_run: u64) {
    let runs = run_dirs(volume, name);
    assert_eq!(runs.len(), n);
    for r in &runs {
        assert!(r.join("done.json").exists(), "{} has no done.json", r.display());
        assert_eq!(epochs(r), (1..=epochs_per_run).collect::<Vec<_>>(), "{}: epochs trained", r.display());
    }
    let rows = results_rows(volume, name);
    assert_eq!(rows.len(), n, "{rows:?}");
    assert!(rows.iter().all(|r| r.split(',').nth(2) == Some("done")), "{rows:?}");
}

#[test]
fn a_six_run_sweep_with_two_workers_completes_with_results_status_and_report() {
    let tmp = tempfile::tempdir().unwrap();
    let (sweep, vol) = (six_runs(tmp.path(), BASE), tmp.path().join("vol"));
    let out = run_ok(&args(&sweep, &vol, &["--workers", "2"]));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("6 runs: 6 done") && stdout.contains("best: #"), "{stdout}");
    assert_each_run_done_once_with_every_epoch(&vol, "six", 6, 3);
    for r in run_dirs(&vol, "six") {
        assert_eq!(starts(&r).len(), 1, "{}", r.display());
    }
    // the CSV has a column per swept key, with the values the runs used
    let csv = std::fs::read_to_string(vol.join("six/results.csv")).unwrap();
    assert!(csv.starts_with("index,run_id,status,optim.lr,train.seed,epochs,"), "{csv}");
    assert_eq!(std::fs::read_to_string(vol.join("six/results.jsonl")).unwrap().lines().count(), 6);

    let out = run_ok(&["status".into(), vol.join("six").display().to_string(), "--json".into()]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["counts"]["done"], 6);
    let best = v["best"]["val_accuracy"].as_f64().unwrap();
    let max = v["runs"].as_array().unwrap().iter().map(|r| r["val_accuracy"].as_f64().unwrap()).fold(0.0, f64::max);
    assert_eq!(best, max);

    run_ok(&["report".into(), vol.join("six").display().to_string()]);
    let html = std::fs::read_to_string(vol.join("six/report/index.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("optim.lr"), "report index");
    assert!(vol.join("six/report/param-optim_lr.svg").exists());

    // relaunching a finished sweep trains nothing
    run_ok(&args(&sweep, &vol, &["--workers", "2"]));
    for r in run_dirs(&vol, "six") {
        assert_eq!(starts(&r).len(), 1, "{} trained again", r.display());
    }
}

#[test]
fn sigkill_of_launcher_and_workers_then_relaunch_finishes_each_run_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (sweep, vol) = (six_runs(tmp.path(), SLOW), tmp.path().join("vol"));
    let mut launcher = launch(&sweep, &vol, &["--workers", "2"]);
    // Wait until some run has a committed mid-run checkpoint and is not finished, then kill everything.
    wait_until("a run in progress with a checkpoint", Duration::from_secs(120), || {
        run_dirs(&vol, "six").iter().any(|r| !r.join("done.json").exists() && !committed(r).is_empty())
    });
    assert!(kill(launcher.id(), "STOP"), "stop the launcher so it cannot start replacements");
    let workers = children_of(launcher.id());
    assert!(!workers.is_empty(), "the launcher has no workers");
    for pid in &workers {
        kill(*pid, "KILL");
    }
    assert!(kill(launcher.id(), "KILL"));
    assert!(launcher.wait().unwrap().code().is_none(), "the launcher died by a signal");
    let unfinished = run_dirs(&vol, "six").iter().filter(|r| !r.join("done.json").exists()).count();
    assert!(unfinished > 0, "the sweep finished before the kill");
    // Where each run stood when everything died: its newest committed checkpoint.
    let at_kill: Vec<(PathBuf, usize, u64)> =
        run_dirs(&vol, "six").into_iter().map(|r| (r.clone(), starts(&r).len(), newest_step(&r))).collect();
    assert!(at_kill.iter().any(|(r, _, s)| *s > 0 && !r.join("done.json").exists()), "no partial run to resume");

    // Same host, dead PIDs: the relaunch takes the leases over at once and finishes the sweep.
    let out = run_ok(&args(&sweep, &vol, &["--workers", "2"]));
    assert!(text(&out.stdout).contains("6 runs: 6 done"), "{}", text(&out.stdout));
    assert_each_run_done_once_with_every_epoch(&vol, "six", 6, 4);
    let mut resumed = 0;
    for (r, starts_before, step_at_kill) in at_kill {
        let s = starts(&r);
        let done: Vec<Value> = attempts(&r).into_iter().filter(|a| a["outcome"] == "done").collect();
        assert_eq!(done.len(), 1, "{}: finished once", r.display());
        // the relaunch resumed each partial run from its newest checkpoint, not from step 0
        if let Some(a) = s.get(starts_before) {
            assert_eq!(a["step"].as_u64().unwrap(), step_at_kill, "{}: {a}", r.display());
            resumed += usize::from(step_at_kill > 0);
        }
        // lease generations strictly increase: no two attempts shared a claim
        let gens: Vec<u64> = s.iter().map(|a| a["lease"].as_u64().unwrap()).collect();
        assert!(gens.windows(2).all(|w| w[0] < w[1]), "{gens:?}");
    }
    assert!(resumed >= 1, "no run was resumed");
    // The killed launcher's snapshot of the sweep is the one the relaunch used: one file, nothing left over.
    let snapshots: Vec<String> = std::fs::read_dir(vol.join("six"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    assert!(snapshots.len() == 1 && snapshots[0].starts_with("launched-"), "{snapshots:?}");
}

#[test]
fn two_launchers_on_one_volume_train_every_run_exactly_once_never_concurrently() {
    let tmp = tempfile::tempdir().unwrap();
    let (sweep, vol) = (six_runs(tmp.path(), BASE), tmp.path().join("vol"));
    let a = launch(&sweep, &vol, &["--workers", "1"]);
    let b = launch(&sweep, &vol, &["--workers", "1"]);
    for (name, c) in [("first", a), ("second", b)] {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{name} launcher: {}\n{}", out.status, text(&out.stderr));
    }
    assert_each_run_done_once_with_every_epoch(&vol, "six", 6, 3);
    let mut pids = std::collections::BTreeSet::new();
    for r in run_dirs(&vol, "six") {
        let at = attempts(&r);
        assert_eq!(at.len(), 2, "{}: exactly one attempt (start + end): {at:?}", r.display());
        assert_eq!((at[0]["event"].as_str(), at[1]["outcome"].as_str()), (Some("start"), Some("done")));
        assert_eq!(at[0]["pid"], at[1]["pid"]);
        pids.insert(at[0]["pid"].as_u64().unwrap());
    }
    // The six runs differ only in per-run keys, so they fuse into one group. Each launcher's worker claims the
    // group's runs one lease at a time, so when both start at the same instant they may split it: at most one
    // process per launcher, each training its share in one attempt (checked above), never a run twice.
    assert!((1..=2).contains(&pids.len()), "one fused worker process per launcher at most: {pids:?}");
}

#[test]
fn worker_next_from_two_processes_drains_the_sweep_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (sweep, vol) = (six_runs(tmp.path(), BASE), tmp.path().join("vol"));
    let worker = || {
        spotrun()
            .args(["worker", &sweep.display().to_string(), "--next", "--quiet", "--volume", &vol.display().to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (worker(), worker());
    let mut trained = 0;
    for c in [a, b] {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let s = text(&out.stdout);
        trained += s.split("trained ").nth(1).and_then(|t| t.split(' ').next()).unwrap().parse::<usize>().unwrap();
    }
    assert_eq!(trained, 6);
    assert_each_run_done_once_with_every_epoch(&vol, "six", 6, 3);
    for r in run_dirs(&vol, "six") {
        assert_eq!(starts(&r).len(), 1);
    }
}

#[test]
fn worker_index_skips_done_runs_and_respects_live_leases_but_takes_over_stale_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let (sweep, vol) = (six_runs(tmp.path(), BASE), tmp.path().join("vol"));
    let worker = |i: &str| {
        spotrun()
            .args(["worker", &sweep.display().to_string(), "--index", i, "--volume", &vol.display().to_string()])
            .output()
            .unwrap()
    };
    // Find run 1's directory without training it.
    let dry = run_ok(&args(&sweep, &vol, &["--dry-run"]));
    let id8 = text(&dry.stdout)
        .lines()
        .find(|l| l.trim_start().starts_with("1 "))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    assert!(!vol.exists(), "--dry-run wrote to the volume");
    let out = worker("0");
    assert!(out.status.success(), "{}", text(&out.stderr));
    // creates the layout; now plant a live lease from another host on run 1
    let plan: Value = serde_json::from_slice(&std::fs::read(vol.join("six/sweep.json")).unwrap()).unwrap();
    let id = plan["runs"][1]["id"].as_str().unwrap().to_string();
    assert!(id.starts_with(&id8));
    let dir = vol.join("six/runs").join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let lease = |hb: u64| {
        serde_json::json!({"gen": 1, "host": "node-7", "host_key": "node-7|boot|pid:[1]", "pid": 4242,
            "proc_start": 1, "started_unix_ms": hb, "heartbeat_unix_ms": hb, "released": false})
    };
    std::fs::write(dir.join("lease-000001.json"), lease(now + 60_000).to_string()).unwrap();
    let out = worker("1");
    assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("held by node-7 pid 4242"), "{}", text(&out.stderr));
    assert!(!dir.join("attempts.jsonl").exists(), "a held run must not be started");
    // the same lease with a heartbeat older than lease_seconds (30) is taken over
    std::fs::write(dir.join("lease-000001.json"), lease(now - 120_000).to_string()).unwrap();
    let out = worker("1");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(starts(&dir)[0]["lease"], 2);
    assert!(dir.join("done.json").exists());
    // done runs are skipped
    let out = worker("0");
    assert!(text(&out.stdout).contains("already done"), "{}", text(&out.stdout));
    assert_eq!(
        starts(&run_dirs(&vol, "six").into_iter().find(|d| !d.ends_with(&id) && d.join("done.json").exists()).unwrap())
            .len(),
        1
    );
}

#[test]
fn a_preempted_worker_is_requeued_and_resumes_without_counting_as_a_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = write_sweep(tmp.path(), "pre", "retries = 0", SLOW, "\"optim.lr\" = [0.001]\n");
    let vol = tmp.path().join("vol");
    let launcher = launch(&sweep, &vol, &["--workers", "1"]);
    let run = || run_dirs(&vol, "pre").into_iter().next();
    wait_until("a checkpoint", Duration::from_secs(120), || run().is_some_and(|r| !committed(&r).is_empty()));
    let pids = holders(&vol, "pre");
    assert_eq!(pids.len(), 1);
    assert!(kill(pids[0], "TERM"));
    let out = launcher.wait_with_output().unwrap();
    assert!(out.status.success(), "retries = 0, yet a preemption must not fail the run: {}", text(&out.stderr));
    let r = run().unwrap();
    let at = attempts(&r);
    let outcomes: Vec<&str> = at.iter().filter_map(|a| a["outcome"].as_str()).collect();
    assert_eq!(outcomes, ["preempted", "done"], "{at:?}");
    assert_eq!(at.iter().find(|a| a["outcome"] == "preempted").unwrap()["exit_code"], 143);
    assert!(starts(&r)[1]["step"].as_u64().unwrap() > 0, "resumed from the checkpoint written on SIGTERM");
    assert_eq!(epochs(&r), [1, 2, 3, 4]);
    assert!(!r.join("failed.json").exists());
}

#[test]
fn a_failing_run_is_retried_with_backoff_then_recorded_with_its_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = write_sweep(tmp.path(), "fail", "retries = 1", BASE, "\"optim.lr\" = [0.001]\n");
    let vol = tmp.path().join("vol");
    // Every worker process fails its first checkpoint save like a full disk (exit 1).
    let out = spotrun()
        .args(args(&sweep, &vol, &["--backoff", "0.2"]))
        .env("SPOTRUN_TEST_ENOSPC_AT_SAVE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("retry 1/1"), "{}", text(&out.stderr));
    let r = &run_dirs(&vol, "fail")[0];
    let f: Value = serde_json::from_slice(&std::fs::read(r.join("failed.json")).unwrap()).unwrap();
    assert_eq!(f["failures"], 2, "1 try + 1 retry: {f}");
    assert!(f["stderr_tail"].as_str().unwrap().contains("No space left"), "{f}");
    assert!(results_rows(&vol, "fail")[0].contains(",failed,"));
    // a failed run is not retried by later launches (delete failed.json to retry)
    let out = spotrun().args(args(&sweep, &vol, &[])).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(starts(r).len(), 2);
}

#[test]
fn bad_sweep_files_exit_2_naming_file_and_key_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = tmp.path().join("vol");
    let cases = [
        ("unknown", "", "\"optim.lrr\" = [0.1]\n", "parameters.\"optim.lrr\""),
        ("empty", "", "\"optim.lr\" = []\n", "empty"),
        ("inverted", "method = \"random\"\ncount = 2", "\"optim.lr\" = { log_uniform = [0.1, 0.001] }\n", "inverted"),
        ("wrongtype", "", "\"train.epochs\" = [\"three\"]\n", "parameters.\"train.epochs\""),
        ("misspelt", "", "\"optim.lrr\" = [0.1]\n", "optim.lrr: unknown field `lrr`, expected one of"),
        ("misspelt", "", "\"optim.lrr\" = [0.1]\n", "did you mean `optim.lr`?"),
        ("typo", "methd = \"grid\"", "\"optim.lr\" = [0.1]\n", "methd: unknown field `methd`"),
        ("typo", "methd = \"grid\"", "\"optim.lr\" = [0.1]\n", "did you mean `method`?"),
    ];
    for (name, head, params, want) in cases {
        let sweep = write_sweep(tmp.path(), name, head, BASE, params);
        let err = run_bad(&args(&sweep, &vol, &[]));
        assert!(err.contains(&format!("{name}.toml")) && err.contains(want), "{name}: {err}");
    }
    for bad in ["../escape", "/abs/path"] {
        let p = tmp.path().join("esc.toml");
        std::fs::write(&p, format!("name = \"{bad}\"\nseeds = [1]\n")).unwrap();
        let err = run_bad(&args(&p, &vol, &[]));
        assert!(err.contains("name:") && err.contains("directory name"), "{err}");
    }
    let ok = six_runs(tmp.path(), BASE);
    let err = run_bad(&args(&ok, &vol, &["--gpus", "7"]));
    assert!(err.contains("--gpus: cuda:7 does not exist"), "{err}");
    let err = run_bad(&args(&ok, &vol, &["--backoff", "nan"]));
    assert!(err.contains("--backoff"), "{err}");
    assert!(!vol.exists(), "bad input must not create anything");
    let err = run_bad(&[
        "worker".into(),
        ok.display().to_string(),
        "--index".into(),
        "6".into(),
        "--volume".into(),
        vol.display().to_string(),
    ]);
    assert!(err.contains("out of range") && err.contains("6 runs"), "{err}");
    assert!(!vol.exists(), "an out-of-range index must not create anything");
    let err = run_bad(&["status".into(), tmp.path().display().to_string()]);
    assert!(err.contains("not a sweep directory"), "{err}");
}

#[test]
fn estimate_uses_given_then_measured_epoch_times() {
    let tmp = tempfile::tempdir().unwrap();
    let (sweep, vol) = (six_runs(tmp.path(), BASE), tmp.path().join("vol"));
    let est = |extra: &[&str]| {
        let mut a =
            vec!["estimate".to_string(), sweep.display().to_string(), "--volume".into(), vol.display().to_string()];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    // 6 runs x 3 epochs x 100 s = 1800 s = 0.5 h; H100 at $3.95/h = $1.98 (1.975); 3 workers: 2 runs each = 600 s
    let out = run_ok(&est(&["--gpu", "H100", "--epoch-seconds", "100", "--workers", "3"]));
    let s = text(&out.stdout);
    assert!(s.contains("0.50 h total") && s.contains("$1.98 total") && s.contains("0h10m00s"), "{s}");
    let err = run_bad(&est(&["--gpu", "V100", "--epoch-seconds", "1"]));
    assert!(err.contains("V100") && err.contains("H100"), "{err}");
    let err = run_bad(&est(&["--gpu", "L4"]));
    assert!(err.contains("--epoch-seconds"), "{err}");
    // after one run trained, its measured time is used for every run
    run_ok(&[
        "worker".into(),
        sweep.display().to_string(),
        "--index".into(),
        "0".into(),
        "--volume".into(),
        vol.display().to_string(),
    ]);
    let s = text(&run_ok(&est(&["--gpu", "L4"])).stdout);
    assert!(s.contains("1 runs measured") && s.contains("5 from the sweep mean"), "{s}");
    assert!(s.contains("(15 left)"), "{s}");
}

#[test]
fn early_stopping_ends_a_run_and_the_same_command_says_it_finished() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut a: Vec<String> = vec!["train".into(), "--run-dir".into(), dir.display().to_string()];
    a.extend(crate::common::sets(&crate::common::SMALL));
    // min_delta = 100: no epoch can improve enough, so patience 1 stops after epoch 2 of 5
    a.extend(crate::common::sets(&[
        "train.epochs=5",
        "train.early_stopping={ metric = \"train_loss\", patience = 1, min_delta = 100.0 }",
    ]));
    let out = run_ok(&a);
    assert!(text(&out.stdout).contains("stopped early: 2 epochs"), "{}", text(&out.stdout));
    assert_eq!(epochs(&dir), [1, 2]);
    let out = run_ok(&a);
    assert!(text(&out.stdout).contains("already finished (2 epochs)"), "{}", text(&out.stdout));
    let bad = run_bad(
        &[a.clone(), crate::common::sets(&["train.early_stopping={ metric = \"val_loss\", patience = 0 }"])].concat(),
    );
    assert!(bad.contains("train.early_stopping.patience"), "{bad}");
}

#[test]
fn sigterm_to_the_launcher_checkpoints_every_worker_and_the_same_command_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let (sweep, vol) = (six_runs(tmp.path(), SLOW), tmp.path().join("vol"));
    let launcher = launch(&sweep, &vol, &["--workers", "2"]);
    // Training, not just holding a lease: a worker writes config.toml after start-up, right before its first
    // step. (A signal during start-up exits without a checkpoint, as there is nothing to save yet.) The six runs
    // fuse into one group, which two slots train in two parts of three: wait until both parts hold and train
    // all six, so no run is claimed between this check and the signal.
    let training = || {
        let held = run_dirs(&vol, "six").into_iter().filter(|r| lease_held(r)).collect::<Vec<_>>();
        held.len() == 6 && held.iter().all(|r| r.join("config.toml").exists())
    };
    wait_until("runs training", Duration::from_secs(120), training);
    let held = run_dirs(&vol, "six").into_iter().filter(|r| lease_held(r)).count();
    assert!(kill(launcher.id(), "TERM"));
    let out = launcher.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("Run the same command to finish the sweep"), "{}", text(&out.stderr));
    assert!(holders(&vol, "six").is_empty(), "every worker released its lease");
    let preempted: Vec<PathBuf> = run_dirs(&vol, "six")
        .into_iter()
        .filter(|r| attempts(r).iter().any(|a| a["outcome"] == "preempted" && a["exit_code"] == 143))
        .collect();
    assert_eq!(preempted.len(), held, "every run in training got the signal and recorded it");
    let out = run_ok(&args(&sweep, &vol, &["--workers", "2"]));
    assert!(text(&out.stdout).contains("6 runs: 6 done"));
    assert_each_run_done_once_with_every_epoch(&vol, "six", 6, 4);
    for r in preempted {
        let s = starts(&r);
        assert_eq!(s.len(), 2);
        assert!(s[1]["step"].as_u64().unwrap() > 0, "resumed from the checkpoint written on SIGTERM");
    }
}

#[test]
fn median_pruning_stops_a_run_worse_than_the_others_at_the_same_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = tmp.path().join("prune.toml");
    std::fs::write(
        &sweep,
        format!(
            "name = \"prune\"\nmethod = \"list\"\n{BASE}\n[pruning]\nmethod = \"median\"\nwarmup_epochs = 1\nmin_runs = 3\n\
             [[runs]]\noptim.lr = 0.003\ntrain.seed = 1\n[[runs]]\noptim.lr = 0.003\ntrain.seed = 2\n\
             [[runs]]\noptim.lr = 0.003\ntrain.seed = 3\n[[runs]]\noptim.lr = 1e-7\n"
        ),
    )
    .unwrap();
    let vol = tmp.path().join("vol");
    let worker = |i: usize| {
        run_ok(&[
            "worker".into(),
            sweep.display().to_string(),
            "--index".into(),
            i.to_string(),
            "--volume".into(),
            vol.display().to_string(),
        ])
    };
    // Three good runs finish first, so the decision for the last one does not depend on timing.
    for i in 0..3 {
        assert!(text(&worker(i).stdout).contains("completed after 3 epochs"));
    }
    let out = worker(3);
    assert!(text(&out.stdout).contains("pruned after 1 epoch\n"), "{}", text(&out.stdout));
    let plan: Value = serde_json::from_slice(&std::fs::read(vol.join("prune/sweep.json")).unwrap()).unwrap();
    let dir = vol.join("prune/runs").join(plan["runs"][3]["id"].as_str().unwrap());
    let done: Value = serde_json::from_slice(&std::fs::read(dir.join("done.json")).unwrap()).unwrap();
    assert_eq!((done["outcome"].as_str(), done["epochs"].as_u64()), (Some("pruned"), Some(1)));
    assert!(text(&worker(3).stdout).contains("already done"));
    let status = text(&run_ok(&["status".into(), vol.join("prune").display().to_string()]).stdout);
    assert!(status.contains("(pruned)") && status.contains("4 done"), "{status}");
}

#[test]
fn a_worker_whose_run_was_taken_over_stops_without_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = write_sweep(tmp.path(), "lost", "lease_seconds = 4", SLOW, "\"optim.lr\" = [0.001]\n");
    let vol = tmp.path().join("vol");
    let mut worker = spotrun()
        .args(["worker", &sweep.display().to_string(), "--index", "0", "--volume", &vol.display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run = || run_dirs(&vol, "lost").into_iter().next();
    wait_until("a checkpoint", Duration::from_secs(120), || run().is_some_and(|r| newest_step(&r) > 0));
    let r = run().unwrap();
    // Another host claims generation 2, as if this worker had stalled past lease_seconds.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let theirs = serde_json::json!({"gen": 2, "host": "node-9", "host_key": "node-9|b|p", "pid": 7, "proc_start": 1,
        "started_unix_ms": now, "heartbeat_unix_ms": now + 600_000, "released": false});
    std::fs::write(r.join("lease-000002.json"), theirs.to_string()).unwrap();
    let status = worker.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(worker.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(75), "{err}");
    assert!(err.contains("took this run over") || err.contains("lost the lease"), "{err}");
    assert!(!r.join("done.json").exists() && !r.join("model.safetensors").exists());
    assert_eq!(attempts(&r).len(), 1, "no end record from a worker that lost its run");
    assert_eq!(serde_json::from_slice::<Value>(&std::fs::read(r.join("lease-000002.json")).unwrap()).unwrap(), theirs);
}

#[test]
fn sighup_checkpoints_and_exits_129() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut a: Vec<String> = vec!["train".into(), "--run-dir".into(), dir.display().to_string(), "--quiet".into()];
    a.extend(crate::common::sets(&[
        "data.synthetic.train=30000",
        "data.synthetic.features=256",
        "model.hidden=[512]",
        "train.batch_size=256",
        "train.epochs=3",
        "train.threads=1",
    ]));
    let child = spotrun().args(&a).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    // config.toml is written after the start-up check for a signal: from then on a signal is taken after a step,
    // which is saved.
    wait_until("training to start", Duration::from_secs(60), || dir.join("config.toml").exists());
    assert!(kill(child.id(), "HUP"));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(129), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("SIGHUP"), "{}", text(&out.stderr));
    assert!(newest_step(&dir) > 0, "a checkpoint was written on SIGHUP");
}

#[test]
fn one_long_lived_worker_per_slot_trains_run_after_run_each_with_its_own_log() {
    let tmp = tempfile::tempdir().unwrap();
    let (sweep, vol) = (six_runs(tmp.path(), BASE), tmp.path().join("vol"));
    let out = run_ok(&args(&sweep, &vol, &["--workers", "1", "--no-fuse"]));
    assert!(text(&out.stdout).contains("6 runs: 6 done"), "{}", text(&out.stdout));
    let mut pids = std::collections::BTreeSet::new();
    for r in run_dirs(&vol, "six") {
        pids.extend(attempts(&r).iter().map(|a| a["pid"].as_u64().unwrap()));
        // Each run's worker.log holds its own attempt only: the worker points its output at each job's log.
        let log = std::fs::read_to_string(r.join("worker.log")).unwrap();
        let id = r.file_name().unwrap().to_string_lossy()[..8].to_string();
        assert_eq!(log.matches("spotrun train: run ").count(), 1, "{log}");
        assert!(log.contains(&format!("spotrun train: run {id}")), "{log}");
    }
    assert_eq!(pids.len(), 1, "one worker process trained the six runs, one after another");
}

#[test]
fn a_long_lived_worker_killed_mid_run_is_replaced_and_the_run_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let (sweep, vol) = (six_runs(tmp.path(), SLOW), tmp.path().join("vol"));
    let launcher = launch(&sweep, &vol, &["--workers", "1", "--no-fuse"]);
    wait_until("a run with a checkpoint", Duration::from_secs(120), || {
        run_dirs(&vol, "six").iter().any(|r| !r.join("done.json").exists() && !committed(r).is_empty())
    });
    let worker = children_of(launcher.id());
    assert_eq!(worker.len(), 1);
    // Frozen, the worker cannot finish the run seen in progress (and claim the next) before the kill.
    assert!(kill(worker[0], "STOP"));
    let victim = run_dirs(&vol, "six").into_iter().find(|r| lease_held(r)).unwrap();
    assert!(!victim.join("done.json").exists() && !committed(&victim).is_empty(), "{}", victim.display());
    assert!(kill(worker[0], "KILL"));
    let out = launcher.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_each_run_done_once_with_every_epoch(&vol, "six", 6, 4);
    let at = attempts(&victim);
    let outcomes: Vec<&str> = at.iter().filter_map(|a| a["outcome"].as_str()).collect();
    assert_eq!(outcomes, ["preempted", "done"], "{at:?}");
    let second = at.iter().filter(|a| a["event"] == "start").nth(1).unwrap();
    assert!(second["step"].as_u64().unwrap() > 0, "resumed from its checkpoint: {second}");
    assert_ne!(at[0]["pid"], second["pid"], "a new worker process");
}
