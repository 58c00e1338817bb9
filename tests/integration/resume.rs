//! Checkpoints and exact resume, with real signals sent to real child processes.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use crate::common::{committed, metrics, run_bad, saving, sets, spotrun, text, wait_delivered, wait_until, Run};

/// ~63 steps per epoch of a few ms each, with dropout so the RNG matters.
pub(crate) const RESUME: [&str; 8] = [
    "data.synthetic.train=8000",
    "data.synthetic.val=1000",
    "data.synthetic.features=64",
    "model.hidden=[128]",
    "model.dropout=0.1",
    "train.batch_size=128",
    "train.epochs=3",
    "train.log_every=0",
];

fn args(dir: &Path, extra: &[&str]) -> Vec<String> {
    args_on(&RESUME, dir, extra)
}

/// `spotrun train --run-dir DIR` with `base` then `extra` as `--set`s.
fn args_on(base: &[&str], dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut kv: Vec<&str> = base.to_vec();
    kv.extend(extra);
    let mut a = vec!["train".to_string(), "--run-dir".into(), dir.display().to_string()];
    a.extend(sets(&kv));
    a
}

fn run(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    env.iter().fold(Run::new(args(dir, extra)), |r, (k, v)| r.env(k, v)).output()
}

#[track_caller]
fn run_to_end(dir: &Path, extra: &[&str]) -> String {
    let out = run(dir, extra, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stderr)
}

fn spawn(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Child {
    env.iter().fold(Run::new(args(dir, extra)), |r, (k, v)| r.env(k, v)).spawn()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill -{sig} failed");
}

/// The uninterrupted reference run, trained once per test that needs it.
fn reference(tmp: &Path) -> PathBuf {
    let d = tmp.join("reference");
    run_to_end(&d, &[]);
    d
}

#[track_caller]
pub(crate) fn assert_same_run(a: &Path, b: &Path) {
    let wa = std::fs::read(a.join("model.safetensors")).unwrap();
    let wb = std::fs::read(b.join("model.safetensors")).unwrap();
    assert!(wa == wb, "model.safetensors of {} and {} differ", a.display(), b.display());
    let strip = |d: &Path| -> Vec<serde_json::Value> {
        metrics(d)
            .into_iter()
            .map(|mut m| {
                let o = m.as_object_mut().unwrap();
                o.remove("samples_per_sec");
                o.remove("tokens_per_sec");
                o.remove("epoch_seconds");
                m
            })
            .collect()
    };
    assert_eq!(strip(a), strip(b));
}

#[test]
fn sigkill_after_a_commit_and_sigterm_mid_epoch_resume_bit_identically() {
    kill_and_term_resume_exactly(&RESUME);
}

#[test]
fn a_gpt_killed_after_a_commit_and_termed_mid_epoch_resumes_bit_identically() {
    // Dropout in the attention and the residual paths: the per-step RNG must be restored as well.
    let gpt: Vec<&str> =
        crate::workloads::TINY_GPT.iter().copied().chain(["model.dropout=0.1", "train.log_every=0"]).collect();
    kill_and_term_resume_exactly(&gpt);
}

#[test]
fn a_regression_run_killed_after_a_commit_and_termed_mid_epoch_resumes_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("reg.safetensors");
    crate::workloads::write_regression(&file);
    let sets = crate::workloads::regression_sets(&file);
    let mut base: Vec<&str> = sets.iter().map(String::as_str).collect();
    base.extend(["train.log_every=0", "train.epochs=3"]);
    kill_and_term_resume_exactly(&base);
}

/// Runs `base` uninterrupted; then SIGKILLs it once a checkpoint has committed and SIGTERMs another during a
/// mid-epoch save (so it stops at the next step), each resumed with the same command; all three must end with the
/// same weights and metrics, to the bit.
pub(crate) fn kill_and_term_resume_exactly(base: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let go = |d: &Path, extra: &[&str]| {
        let out = Run::new(args_on(base, d, extra)).output();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    let start = |d: &Path, extra: &[&str]| Run::new(args_on(base, d, extra)).spawn();
    let reference = tmp.path().join("reference");
    go(&reference, &[]);

    // SIGKILL once a checkpoint has committed (observed; where the kill lands after that does not matter), then the
    // same command.
    let killed = tmp.path().join("killed");
    let mut child = start(&killed, &["checkpoint.every_steps=10"]);
    wait_until("a committed checkpoint", Duration::from_secs(60), || !committed(&killed).is_empty());
    child.kill().unwrap();
    assert_eq!(child.wait().unwrap().code(), None, "killed by a signal");
    let err = go(&killed, &["checkpoint.every_steps=10"]);
    assert!(err.contains("resuming from"), "{err}");
    assert_same_run(&reference, &killed);

    // SIGTERM in the middle of an epoch: finish the step, save, exit 143; then the same command. Observed, not
    // timed: every 3 steps a save, each file held 300 ms by the write-delay hook; the signal is sent once the
    // step-3 save is seen in progress, and has reached the process while that save still is. The loop checks for
    // a signal after each step, before its save policy, so the process finishes that save, takes step 4 and saves
    // there: mid-epoch (every workload here has more than 4 steps an epoch).
    let termed = tmp.path().join("termed");
    let every = ["checkpoint.every_steps=3"];
    let child = Run::new(args_on(base, &termed, &every)).env("SPOTRUN_TEST_WRITE_DELAY_MS", "300").spawn();
    wait_until("the step-3 save in progress", Duration::from_secs(60), || saving(&termed, 3));
    signal(&child, "TERM");
    wait_delivered(child.id());
    assert!(saving(&termed, 3), "the signal reached the process after its step-3 save");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("preempted by SIGTERM"), "{}", text(&out.stderr));
    let newest = committed(&termed).pop().unwrap();
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(newest.join("manifest.json")).unwrap()).unwrap();
    assert_eq!((m["step"].as_u64(), m["epoch"].as_u64(), m["batch"].as_u64()), (Some(4), Some(0), Some(4)), "{m}");
    assert_eq!(m["reason"], "signal", "{m}");
    let err = go(&termed, &every);
    assert!(err.contains("resuming from") && err.contains("ckpt-0000000004"), "{err}");
    assert_same_run(&reference, &termed);
}

#[test]
fn a_cnn_killed_mid_epoch_resumes_bit_identically() {
    // The CNN's conv weights (and their AdamW state) live channels-last in memory and are written in the
    // standard layout; a resume must put them back so that the rest of the run is the same to the bit.
    let tmp = tempfile::tempdir().unwrap();
    let cnn = ["model.kind=cnn", "data.shape=[1, 8, 8]", "model.channels=[4, 8]", "model.hidden=[32]"];
    let reference = tmp.path().join("reference");
    run_to_end(&reference, &cnn);
    // Killed inside the step-20 save (observed in progress: each file is held 300 ms), with the step-10 checkpoint
    // committed: the resume starts mid-epoch, from step 10.
    let killed = tmp.path().join("killed");
    let with_steps: Vec<&str> = cnn.iter().copied().chain(["checkpoint.every_steps=10"]).collect();
    let mut child = spawn(&killed, &with_steps, &[("SPOTRUN_TEST_WRITE_DELAY_MS", "300")]);
    wait_until("the step-20 save in progress", Duration::from_secs(60), || saving(&killed, 20));
    child.kill().unwrap();
    assert_eq!(child.wait().unwrap().code(), None, "killed by a signal");
    assert_eq!(crate::common::newest_step(&killed), 10, "the step-10 checkpoint is the newest committed");
    let err = run_to_end(&killed, &with_steps);
    assert!(err.contains("resuming from") && err.contains("ckpt-0000000010 (epoch 1, batch 10, step 10)"), "{err}");
    assert_same_run(&reference, &killed);
}

#[test]
fn torture_twenty_sigkills_at_random_moments() {
    torture(20, 0x2545_f491_4f6c_dd1d);
}

/// The long version (`scripts/torture.sh` runs it): 120 kills, each followed by a check that every checkpoint
/// directory that looks committed verifies.
#[test]
#[ignore = "takes minutes; run by scripts/torture.sh"]
fn torture_many_sigkills_at_random_moments() {
    let kills = std::env::var("SPOTRUN_TORTURE_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(120);
    let seed = std::env::var("SPOTRUN_TORTURE_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x9e37_79b9_7f4a_7c15);
    torture(kills, seed);
}

/// Every `ckpt-*` directory with a manifest must verify, whenever the process died (a kill during a save or
/// during retention's deletes included).
#[track_caller]
fn assert_committed_verify(d: &Path, after: usize) {
    for c in committed(d) {
        if let Err(e) = spotrun::checkpoint::verify(&c) {
            panic!("after kill {after}: {} looks committed but does not verify: {e}", c.display());
        }
    }
}

/// SIGKILLs a run `kills` times at random moments (seeded), resuming it each time; checks after every kill that
/// each committed-looking checkpoint verifies, and at the end that the weights and metrics are bit-identical to
/// an uninterrupted run. A torn last line is appended to metrics.jsonl once (as a kill mid-append leaves it).
fn torture(kills_wanted: usize, seed: u64) {
    let tmp = tempfile::tempdir().unwrap();
    // 6 epochs x 63 steps; a checkpoint every 3 steps with slowed writes, so many kills land inside a write.
    let epochs = format!("train.epochs={}", (kills_wanted / 7).max(6));
    let extra = [epochs.as_str(), "checkpoint.every_steps=3", "checkpoint.keep_last=2"];
    let reference = tmp.path().join("reference");
    run_to_end(&reference, &extra[..1]);
    let d = tmp.path().join("tortured");
    let env = [("SPOTRUN_TEST_WRITE_DELAY_MS", "20")];
    let mut rng = seed | 1;
    let mut kills = 0;
    let mut starts = 0;
    loop {
        starts += 1;
        assert!(starts < 10 * kills_wanted + 100, "the run never completed");
        let mut child = spawn(&d, &extra, &env);
        if kills >= kills_wanted {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", text(&out.stderr));
            break;
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Where the kill lands is random, but how far a run gets before it is counted in committed steps, not
        // seconds, so the kills land before the run can finish on a machine of any speed: a quarter of the kills
        // come within 0.7 s of the start (start-up, resume, first steps), the rest 0-60 ms after one to three
        // further checkpoints committed (inside a step, a checkpoint write or retention's deletes).
        if rng.is_multiple_of(4) {
            std::thread::sleep(Duration::from_millis(rng % 700));
        } else {
            let target = crate::common::newest_step(&d) + 3 * (1 + (rng >> 8) % 3);
            let t0 = Instant::now();
            while crate::common::newest_step(&d) < target && child.try_wait().unwrap().is_none() {
                assert!(t0.elapsed() < Duration::from_secs(60), "no progress towards step {target}");
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis((rng >> 16) % 60));
        }
        if child.try_wait().unwrap().is_some() {
            break; // finished before the kill landed
        }
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        let err = text(&out.stderr);
        assert!(!err.contains("skipping checkpoint"), "a committed checkpoint failed to verify:\n{err}");
        assert!(!err.contains("error:"), "a resume was refused:\n{err}");
        kills += 1;
        assert_committed_verify(&d, kills);
        if kills == 5 && d.join("metrics.jsonl").exists() {
            let mut f = std::fs::OpenOptions::new().append(true).open(d.join("metrics.jsonl")).unwrap();
            std::io::Write::write_all(&mut f, b"{\"epoch\": 9, \"train_lo").unwrap();
        }
    }
    assert!(kills >= kills_wanted, "only {kills} kills landed");
    assert_same_run(&reference, &d);
    eprintln!("torture: {kills} SIGKILLs in {starts} starts; every committed-looking checkpoint verified after each");
    // Retention kept at most keep_last committed checkpoints, and the newest verifies.
    assert!(committed(&d).len() <= 2);
    let out = spotrun().args(["inspect", &d.display().to_string(), "--verify"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stdout));
}

#[test]
fn truncated_or_bit_flipped_newest_checkpoint_falls_back_to_the_previous_one() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = reference(tmp.path());
    for (name, damage) in [("truncated", 0), ("flipped", 1)] {
        let d = tmp.path().join(name);
        let extra = ["checkpoint.keep_last=3", "train.epochs=2"];
        run_to_end(&d, &extra);
        let newest = committed(&d).pop().unwrap();
        let (file, problem) =
            if damage == 0 { ("model.safetensors", "truncated") } else { ("state.safetensors", "checksum mismatch") };
        let path = newest.join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        if damage == 0 {
            bytes.truncate(bytes.len() / 2);
        } else {
            let i = bytes.len() - 7;
            bytes[i] ^= 0x10;
        }
        std::fs::write(&path, bytes).unwrap();
        let out = spotrun().args(["inspect", &newest.display().to_string(), "--verify"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "inspect --verify flags the damage");
        assert!(text(&out.stdout).contains("BAD"), "{}", text(&out.stdout));
        // Extending to 3 epochs resumes from the epoch-1 checkpoint, reporting the damaged one.
        let err = run_to_end(&d, &["checkpoint.keep_last=3"]);
        assert!(err.contains("skipping checkpoint") && err.contains(problem), "{err}");
        assert!(err.contains("ckpt-0000000063"), "falls back to the end of epoch 1: {err}");
        assert_same_run(&reference, &d);
    }
}

#[test]
fn disk_full_during_a_save_is_a_clear_error_and_keeps_the_previous_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = reference(tmp.path());
    let d = tmp.path().join("full");
    let out = run(&d, &[], &[("SPOTRUN_TEST_ENOSPC_AT_SAVE", "2")]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device") && err.contains("previous checkpoint is intact"), "{err}");
    let ok = committed(&d);
    assert_eq!(ok.len(), 1, "only the epoch-1 checkpoint committed");
    for entry in walk(&d) {
        assert!(!entry.to_string_lossy().contains(".tmp-"), "scratch file left behind: {}", entry.display());
    }
    let out = spotrun().args(["inspect", &d.display().to_string(), "--verify"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stdout));
    run_to_end(&d, &[]);
    assert_same_run(&reference, &d);
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn async_saves_give_the_same_run() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = reference(tmp.path());
    let d = tmp.path().join("async");
    run_to_end(&d, &["checkpoint.async=true", "checkpoint.every_steps=7"]);
    assert_same_run(&reference, &d);
    let out = spotrun().args(["inspect", &d.display().to_string(), "--verify"]).output().unwrap();
    assert!(out.status.success() && text(&out.stdout).contains("ok"), "{}", text(&out.stdout));
    // The final checkpoint holds exactly the final weights.
    let newest = committed(&d).pop().unwrap();
    assert_eq!(
        std::fs::read(newest.join("model.safetensors")).unwrap(),
        std::fs::read(d.join("model.safetensors")).unwrap()
    );
}

#[test]
fn config_changes_are_refused_epochs_may_grow_and_finished_runs_say_so() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("r");
    run_to_end(&d, &["train.epochs=2"]);
    let before = std::fs::read(d.join("config.toml")).unwrap();
    let a = args(&d, &["train.epochs=2", "optim.lr=0.01"]);
    let err = run_bad(&a);
    assert!(err.contains("different config") && err.contains("optim.lr"), "{err}");
    assert_eq!(std::fs::read(d.join("config.toml")).unwrap(), before, "refusal leaves files untouched");
    let out = run(&d, &["train.epochs=2"], &[]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("already finished"), "{}", text(&out.stdout));
    let err = run_to_end(&d, &[]);
    assert!(err.contains("extending the run from 2 to 3 epochs"), "{err}");
    assert_eq!(metrics(&d).len(), 3);
    let epochs: Vec<u64> = metrics(&d).iter().map(|m| m["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, [1, 2, 3]);
    // With --allow-config-change the changed config continues the run (here: extends it by one epoch).
    let mut a = args(&d, &["train.epochs=4", "optim.lr=0.01"]);
    a.push("--allow-config-change".into());
    let out = spotrun().args(&a).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--allow-config-change"), "{}", text(&out.stderr));
    assert_eq!(metrics(&d).len(), 4);
}

#[test]
fn a_second_sigint_exits_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("r");
    // Each file of a save is held 1 s, so a save takes more than 2 s. Both SIGINTs reach the process while its
    // epoch-1 save is seen in progress: the first asks for a save-and-exit, the second must not wait for it.
    let child = spawn(&d, &[], &[("SPOTRUN_TEST_WRITE_DELAY_MS", "1000")]);
    wait_until("the epoch-1 save in progress", Duration::from_secs(60), || saving(&d, 63));
    signal(&child, "INT");
    wait_delivered(child.id());
    assert!(saving(&d, 63), "the first SIGINT reached the process after its save");
    let t0 = Instant::now();
    signal(&child, "INT");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(t0.elapsed() < Duration::from_millis(1500), "exited {:?} after the second SIGINT", t0.elapsed());
    assert!(committed(&d).is_empty(), "the interrupted save never committed");
}

#[test]
fn a_signal_skips_the_save_when_the_last_one_would_not_fit_the_grace_period() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("r");
    // grace 0 s: any measured save time is too long, so a signal keeps the last good checkpoint. A save every 5
    // steps, each file held 300 ms: the signal reaches the process while its step-5 save is seen in progress, so it
    // stops at step 6 with that save measured, and the step-5 checkpoint stays the newest.
    let extra = ["checkpoint.grace_seconds=0", "checkpoint.every_steps=5"];
    let child = spawn(&d, &extra, &[("SPOTRUN_TEST_WRITE_DELAY_MS", "300")]);
    wait_until("the step-5 save in progress", Duration::from_secs(60), || saving(&d, 5));
    signal(&child, "USR1");
    wait_delivered(child.id());
    assert!(saving(&d, 5), "the signal reached the process after its step-5 save");
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(128 + 10), "{err}");
    assert!(err.contains("preempted by SIGUSR1"), "{err}");
    let newest = committed(&d).pop().unwrap();
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(newest.join("manifest.json")).unwrap()).unwrap();
    assert_ne!(m["reason"], "signal", "no signal save may be written: {m}");
    assert_eq!(m["step"], 5, "the newest checkpoint is the step-5 one: {m}");
    assert!(err.contains("skipped the save") && err.contains("at epoch 1, step 6"), "{err}");
    run_to_end(&d, &extra);
}

/// Starts a run that pauses after loading its data, sends `sig` once it says so, and returns the exit code and
/// everything it wrote to stderr.
fn signal_during_start_up(dir: &Path, extra: &[&str], sig: &str) -> (Option<i32>, String) {
    use std::io::{BufRead, BufReader, Read};
    let mut child = spawn(dir, extra, &[("SPOTRUN_TEST_STARTUP_DELAY_MS", "2000")]);
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(err.read_line(&mut line).unwrap() > 0, "exited before start-up finished:\n{seen}");
        seen.push_str(&line);
        if line.starts_with("test: start-up delay") {
            break;
        }
    }
    signal(&child, sig);
    err.read_to_string(&mut seen).unwrap();
    (child.wait().unwrap().code(), seen)
}

#[test]
fn a_signal_during_start_up_exits_before_the_first_step_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("r");
    // A fresh run: no step was taken, so there is nothing to save and no run directory is created.
    let (code, err) = signal_during_start_up(&d, &[], "TERM");
    assert_eq!(code, Some(143), "{err}");
    assert!(err.contains("preempted by SIGTERM during start-up, before the first step"), "{err}");
    assert!(!d.exists(), "a run preempted before its first step leaves no files");
    // A resumed run: the checkpoint it found stays the newest, the metrics are untouched.
    run_to_end(&d, &["train.epochs=1"]);
    let before = (committed(&d), std::fs::read(d.join("metrics.jsonl")).unwrap());
    let (code, err) = signal_during_start_up(&d, &["train.epochs=2"], "USR1");
    assert_eq!(code, Some(138), "{err}");
    assert!(err.contains("the checkpoint it resumed from stays the newest"), "{err}");
    assert_eq!((committed(&d), std::fs::read(d.join("metrics.jsonl")).unwrap()), before);
    run_to_end(&d, &["train.epochs=2"]);
    assert_eq!(metrics(&d).len(), 2);
}

#[test]
fn a_resume_on_changed_data_is_refused_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let (f, d) = (tmp.path().join("data.safetensors"), tmp.path().join("r"));
    let train = |epochs: &str, extra: &[&str]| {
        let mut a: Vec<String> = ["train", "--run-dir", &d.display().to_string()]
            .into_iter()
            .chain(extra.iter().copied())
            .map(String::from)
            .collect();
        a.extend(sets(&[
            "data.source=safetensors",
            &format!("data.path={}", f.display()),
            "model.hidden=[8]",
            &format!("train.epochs={epochs}"),
            "train.batch_size=128",
        ]));
        a
    };
    tch::manual_seed(1);
    crate::common::write_dataset(&f, 512, 12, 3, tch::Kind::Float, tch::Kind::Int64);
    crate::common::run_ok(&train("1", &[]));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(committed(&d)[0].join("manifest.json")).unwrap()).unwrap();
    assert!(m["data_fingerprint"].as_str().is_some_and(|s| s.starts_with("crc32:")), "{m}");

    // Someone regenerates the data file (with another seed) between preemption and resume.
    tch::manual_seed(2);
    crate::common::write_dataset(&f, 512, 12, 3, tch::Kind::Float, tch::Kind::Int64);
    let before = (committed(&d), std::fs::read(d.join("metrics.jsonl")).unwrap());
    let err = run_bad(&train("2", &[]));
    assert!(err.contains("the data differs from what this run trained on"), "{err}");
    assert!(err.contains(&f.display().to_string()) && err.contains("--allow-config-change"), "{err}");
    assert_eq!((committed(&d), std::fs::read(d.join("metrics.jsonl")).unwrap()), before, "refusal touches nothing");

    let out = spotrun().args(train("2", &["--allow-config-change"])).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("continuing on different data"), "{}", text(&out.stderr));
    assert_eq!(metrics(&d).len(), 2);
}

#[test]
fn a_second_process_on_the_same_run_dir_stops_at_once_and_the_first_is_unharmed() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("r");
    let first = spawn(&d, &["train.epochs=20"], &[]);
    wait_until("the first process to train", Duration::from_secs(60), || d.join("config.toml").exists());
    // Same command, same directory: refused with exit 75 (try again later), naming the holder.
    let out = run(&d, &["train.epochs=20"], &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(err.contains(&format!("another spotrun process (pid {}) is training a run here", first.id())), "{err}");
    // Another run directory sharing the first one's checkpoint directory is refused the same way.
    let shared = format!("checkpoint.dir={}", d.join("checkpoints").display());
    let out = run(&tmp.path().join("other"), &["train.epochs=20", &shared], &[]);
    assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&format!("{}: another spotrun process", d.join("checkpoints").display())));
    let out = first.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let epochs: Vec<u64> = metrics(&d).iter().map(|m| m["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, (1..=20).collect::<Vec<u64>>(), "no epoch written twice");
    // Once the first has exited, the same command runs (and finds the run finished).
    let out = run(&d, &["train.epochs=20"], &[]);
    assert!(out.status.success() && text(&out.stdout).contains("already finished"), "{}", text(&out.stderr));
}
