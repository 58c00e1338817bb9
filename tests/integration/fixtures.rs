//! Files written by an older binary (commit af925fa, before the trainer's restructuring), committed under
//! `tests/fixtures/`: an unfinished run and a half-finished sweep volume. The current binary must inspect, report and
//! finish copies of them, ending with the same bytes as the same commands run straight through by the current binary.
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{attempts, metrics, repo, text, Run};

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

/// Copies the directory `from` to `to` (which must not exist), recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().unwrap().is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// The `--set` flags of the command recorded in a fixture's README.md: its one line holding `spotrun train`.
fn recorded_sets(readme: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(readme).unwrap();
    let line = text.lines().find(|l| l.contains("spotrun train --run-dir run")).expect("the command in README.md");
    let words: Vec<&str> = line.split_whitespace().collect();
    let sets: Vec<String> = words
        .windows(2)
        .filter(|w| w[0] == "--set")
        .flat_map(|w| ["--set".to_string(), w[1].trim_matches('\'').to_string()])
        .collect();
    assert!(sets.len() >= 2 * 9, "the README's command lost its flags: {line}");
    sets
}

/// Run directories by sweep index (from `sweep.json`).
fn runs(sweep_dir: &Path) -> Vec<PathBuf> {
    let plan: Value = serde_json::from_slice(&std::fs::read(sweep_dir.join("sweep.json")).unwrap()).unwrap();
    let ids = plan["runs"].as_array().unwrap();
    ids.iter().map(|r| sweep_dir.join("runs").join(r["id"].as_str().unwrap())).collect()
}

/// `spotrun train --run-dir DIR` with `sets` (`--set` pairs, as [`recorded_sets`] returns them).
fn train(dir: &Path, sets: &[String]) -> Run {
    sets.iter().fold(Run::new(["train".as_ref(), "--run-dir".as_ref(), dir.as_os_str()]), |r, a| r.arg(a))
}

fn starts(run: &Path) -> Vec<Value> {
    attempts(run).into_iter().filter(|a| a["event"] == "start").collect()
}

#[test]
fn an_unfinished_run_from_the_old_binary_inspects_and_resumes_to_the_bytes_of_a_straight_run() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    copy_dir(&fixture("unfinished-run/run"), &run);
    let sets = recorded_sets(&fixture("unfinished-run/README.md"));

    // inspect --verify reads both checkpoints and finds every file sound.
    let out = text(&Run::new(["inspect".as_ref(), run.as_os_str(), "--verify".as_ref()]).ok().stdout);
    assert!(out.contains("ckpt-0000000025") && out.contains("reason steps"), "{out}");
    assert!(out.contains("ckpt-0000000026") && out.contains("reason signal"), "{out}");
    assert!(out.contains("cursor: in epoch 2 of 3, 6 batches done, step 26"), "{out}");
    assert_eq!(out.matches("  ok\n").count(), 4, "two files per checkpoint verified: {out}");

    // The recorded command resumes from the signal's checkpoint (not a fallback) and finishes.
    let err = text(&train(&run, &sets).ok().stderr);
    assert!(err.contains("resuming from") && err.contains("ckpt-0000000026 (epoch 2, batch 6, step 26)"), "{err}");
    assert!(!err.contains("skipping"), "{err}");
    let epochs: Vec<u64> = metrics(&run).iter().map(|m| m["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, [1, 2, 3]);

    // The same command straight through: the same weights to the byte, the same metrics (timing aside), epoch 1's
    // line included, which the old binary wrote.
    let straight = tmp.path().join("straight");
    train(&straight, &sets).ok();
    crate::resume::assert_same_run(&straight, &run);
    let again = train(&run, &sets).ok();
    assert!(text(&again.stdout).contains("already finished"), "{}", text(&again.stdout));
}

#[test]
fn a_half_finished_sweep_volume_from_the_old_binary_reports_and_finishes_like_a_straight_sweep() {
    let tmp = tempfile::tempdir().unwrap();
    let (vol, sweep) = (tmp.path().join("vol"), tmp.path().join("fx.toml"));
    copy_dir(&fixture("sweep-volume/vol"), &vol);
    std::fs::copy(fixture("sweep-volume/fx.toml"), &sweep).unwrap();
    let dir = vol.join("fx");
    let fixture_runs = runs(&dir);
    assert_eq!(fixture_runs.len(), 3);

    let status = text(&Run::new(["status".as_ref(), dir.as_os_str()]).ok().stdout);
    assert!(status.contains("3 runs: 1 done, 0 running, 0 failed, 2 pending"), "{status}");
    let row = |i: usize| status.lines().find(|l| l.trim_start().starts_with(&format!("{i}  "))).unwrap_or_default();
    assert!(row(0).contains("done") && row(0).contains("3/3"), "{status}");
    assert!(row(1).contains("pending") && row(1).contains("1/3"), "{status}");
    assert!(row(2).contains("pending") && row(2).contains("0/3"), "{status}");
    let report = text(&Run::new(["report".as_ref(), dir.as_os_str()]).ok().stdout);
    assert!(report.contains("report:") && dir.join("report/index.html").exists(), "{report}");
    let out = text(&Run::new(["inspect".as_ref(), fixture_runs[1].as_os_str(), "--verify".as_ref()]).ok().stdout);
    assert!(out.contains("reason signal") && out.contains("step 26"), "{out}");

    // The recorded command finishes the sweep: run #0 untouched, run #1 resumed at step 26, run #2 trained.
    let finish = |vol: &Path| {
        let a = ["sweep", &sweep.display().to_string(), "--volume", &vol.display().to_string()];
        text(&Run::new(a).arg("--workers").arg("1").arg("--no-fuse").ok().stdout)
    };
    let final_weights = |r: &Path| std::fs::read(r.join("model.safetensors")).unwrap();
    let done_before = final_weights(&fixture_runs[0]);
    let out = finish(&vol);
    assert!(out.contains("3 runs: 3 done"), "{out}");
    assert_eq!(starts(&fixture_runs[0]).len(), 1, "the finished run was trained again");
    assert_eq!(final_weights(&fixture_runs[0]), done_before, "the finished run's weights changed");
    let s = starts(&fixture_runs[1]);
    assert_eq!(s.len(), 2, "{s:?}");
    assert_eq!(s[1]["step"], 26, "resumed from the signal's checkpoint: {s:?}");
    let outcomes: Vec<Value> =
        attempts(&fixture_runs[1]).into_iter().filter_map(|a| a.get("outcome").cloned()).collect();
    assert_eq!(outcomes, ["preempted", "done"], "{outcomes:?}");
    assert_eq!(starts(&fixture_runs[2]).len(), 1);

    // Every run, the old binary's finished one included, ends as the current binary's straight sweep does.
    let straight = tmp.path().join("straight");
    assert!(finish(&straight).contains("3 runs: 3 done"));
    for (a, b) in runs(&straight.join("fx")).iter().zip(&fixture_runs) {
        crate::resume::assert_same_run(a, b);
    }
}
