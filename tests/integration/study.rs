//! Adaptive sweeps (`scheduler = "asha" | "hyperband"`) through the real binary: a promoted trial ends
//! byte-identical to the same config trained straight through, a SIGKILLed launcher relaunched makes the same
//! decisions as one never killed, two launchers share one study, and bad settings are exit-2 errors.
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::{attempts, children_of, freeze, kill, text, wait_until, Run};

/// A 9-config random-search ASHA sweep (eta 3, rungs at 1, 3 and 9 epochs) of a tiny synthetic task, written as
/// `DIR/NAME.toml`; `extra` lines go at the top level.
fn asha_sweep(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    let text = format!(
        "name = \"{name}\"\nmethod = \"random\"\ncount = 9\nseed = 7\nscheduler = \"asha\"\neta = 3\n{extra}\n\
         [base]\ndata.synthetic = {{ train = 1000, val = 200, features = 16 }}\nmodel.hidden = [16]\n\
         train = {{ batch_size = 100, epochs = 9, threads = 1, device = \"cpu\" }}\n\
         [parameters]\n\"optim.lr\" = {{ log_uniform = [0.0001, 0.3] }}\n"
    );
    std::fs::write(&p, text).unwrap();
    p
}

fn sweep(file: &Path, volume: &Path) -> Run {
    Run::new(["sweep".as_ref(), file.as_os_str(), "--volume".as_ref(), volume.as_os_str(), "--quiet".as_ref()])
}

/// The study's decisions in order (each record's `decision`), read straight from the journal files.
fn decisions(sweep_root: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for seq in 0.. {
        let Ok(bytes) = std::fs::read(sweep_root.join("study").join(format!("{seq:08}.json"))) else { break };
        let r: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(r["seq"], seq, "record {seq} holds its own number");
        out.push(r["decision"].clone());
    }
    out
}

fn kind(d: &serde_json::Value) -> &str {
    d["kind"].as_str().unwrap()
}

fn run_dirs(sweep_root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(sweep_root.join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

fn done(run_dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(run_dir.join("done.json")).unwrap()).unwrap()
}

/// No run was trained by two workers at once or trained again past an end: every run's attempts hold increasing
/// lease generations, an `end` closes the attempt just started (same lease), and each attempt starts at the step
/// the last `end` reached (a SIGKILLed attempt has no `end`; the next one starts where its checkpoint is, at or
/// past the killed one's start).
fn assert_trained_once(sweep_root: &Path) {
    for dir in run_dirs(sweep_root) {
        let a = attempts(&dir);
        let (mut last_end, mut open, mut lease) = (0, None::<(u64, u64)>, 0);
        for r in &a {
            let (step, gen) = (r["step"].as_u64().unwrap(), r["lease"].as_u64().unwrap());
            let ctx = || format!("{}: {a:?}", dir.display());
            if r["event"] == "start" {
                assert!(gen > lease, "lease generations increase: {}", ctx());
                let floor = open.map_or(last_end, |(s, _)| s.max(last_end));
                assert!(step >= floor, "an attempt started behind an earlier one: {}", ctx());
                assert!(open.is_none_or(|(s, _)| step == s || step >= last_end), "{}", ctx());
                (open, lease) = (Some((step, gen)), gen);
            } else {
                let (s, g) = open.take().unwrap_or_else(|| panic!("an end without its start: {}", ctx()));
                assert!(g == gen && step >= s, "{}", ctx());
                last_end = step;
            }
        }
    }
}

#[test]
fn a_promoted_asha_trial_ends_byte_identical_to_its_config_trained_straight_through() {
    let tmp = tempfile::tempdir().unwrap();
    let file = asha_sweep(tmp.path(), "asha", "");
    let vol = tmp.path().join("vol");
    let dry = text(&sweep(&file, &vol).arg("--dry-run").ok().stdout);
    assert!(dry.contains("scheduler asha: rungs at epochs [1, 3, 9]") && dry.contains("unfused"), "{dry}");
    let out = sweep(&file, &vol).arg("--workers").arg("1").ok();
    let root = vol.join("asha");
    let st = text(&Run::new(["status".as_ref(), root.as_os_str()]).ok().stdout);
    assert!(st.contains("study: asha (eta 3, min_epochs 1): 9 of 9 configs started"), "{st}");
    assert!(st.contains("epoch 1: 9 reached, 3 promoted"), "ASHA promotes a third of rung 1: {st}");
    Run::new(["report".as_ref(), root.as_os_str()]).ok();
    let rungs = std::fs::read_to_string(root.join("report/rungs.svg")).unwrap();
    assert!(rungs.contains("val_accuracy at each rung (asha, eta 3)") && rungs.contains("trial 8"), "{rungs}");
    let ds = decisions(&root);
    assert_eq!(ds.iter().filter(|d| kind(d) == "created").count(), 9, "{}", text(&out.stdout));
    let finished: Vec<usize> = ds
        .iter()
        .filter(|d| kind(d) == "finished" && d["epoch"] == 9)
        .map(|d| d["trial"].as_u64().unwrap() as usize)
        .collect();
    assert!(!finished.is_empty(), "a trial trained to the last rung: {ds:?}");
    let run_of = |t: usize| ds.iter().find(|d| kind(d) == "created" && d["trial"] == t).unwrap()["run"].clone();
    let dir = root.join("runs").join(run_of(finished[0]).as_str().unwrap());
    let paused = attempts(&dir).iter().filter(|a| a["outcome"] == "paused").count();
    assert_eq!(paused, 2, "paused at rungs 1 and 3 before it was promoted to 9: {:?}", attempts(&dir));
    let straight = tmp.path().join("straight");
    Run::new(["train".as_ref(), dir.join("config.toml").as_os_str(), "--run-dir".as_ref(), straight.as_os_str()])
        .arg("--quiet")
        .ok();
    let a = std::fs::read(dir.join("model.safetensors")).unwrap();
    let b = std::fs::read(straight.join("model.safetensors")).unwrap();
    assert!(a == b, "the promoted trial's weights differ from the straight run's");

    // Every other trial was stopped at a rung, with its weights of that epoch and done.json saying so.
    let stopped = ds.iter().filter(|d| kind(d) == "stopped").count();
    assert_eq!(stopped + finished.len(), 9, "{ds:?}");
    let spent: u64 = run_dirs(&root).iter().map(|d| done(d)["epochs"].as_u64().unwrap()).sum();
    assert!(spent <= 9 * 9 / 2, "ASHA trained {spent} epochs; a full search trains 81");
    for d in run_dirs(&root) {
        assert!(d.join("model.safetensors").exists(), "{}", d.display());
        let outcome = done(&d)["outcome"].clone();
        assert!(outcome == "stopped" || outcome == "completed", "{outcome}");
    }
    assert_trained_once(&root);
}

#[test]
fn a_sigkilled_launcher_relaunched_makes_the_same_decisions_as_one_never_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let file = asha_sweep(tmp.path(), "asha", "");
    let (whole, killed) = (tmp.path().join("whole"), tmp.path().join("killed"));
    sweep(&file, &whole).arg("--workers").arg("1").ok();

    let mut launcher = sweep(&file, &killed).arg("--workers").arg("1").spawn();
    let root = killed.join("asha");
    // Precondition, observed: the study is under way (a promotion recorded), and not complete.
    wait_until("a promotion in the journal", Duration::from_secs(120), || {
        decisions(&root).iter().any(|d| kind(d) == "promoted")
    });
    let pid = launcher.id();
    let workers = children_of(pid);
    assert!(freeze(pid), "the launcher is still running");
    for &w in &workers {
        freeze(w);
    }
    let at_kill = decisions(&root).len();
    assert!(kill(pid, "KILL"));
    for &w in &workers {
        kill(w, "KILL");
    }
    let _ = launcher.wait();
    let full = decisions(&whole.join("asha"));
    assert!(at_kill < full.len(), "killed after the study completed ({at_kill} records)");

    sweep(&file, &killed).arg("--workers").arg("1").ok();
    let relaunched = decisions(&root);
    assert_eq!(relaunched, full, "the same decisions, none lost or repeated");
    for d in run_dirs(&whole.join("asha")) {
        let other = root.join("runs").join(d.file_name().unwrap());
        let same = std::fs::read(d.join("model.safetensors")).unwrap()
            == std::fs::read(other.join("model.safetensors")).unwrap();
        assert!(same, "{}: weights differ after the kill and relaunch", d.display());
    }
    assert_trained_once(&root);
}

#[test]
fn two_launchers_on_one_volume_share_one_study() {
    let tmp = tempfile::tempdir().unwrap();
    let file = asha_sweep(tmp.path(), "asha", "");
    let vol = tmp.path().join("vol");
    let a = sweep(&file, &vol).arg("--workers").arg("1").spawn();
    let b = sweep(&file, &vol).arg("--workers").arg("1").spawn();
    for c in [a, b] {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    let root = vol.join("asha");
    let ds = decisions(&root);
    let created: Vec<u64> = ds.iter().filter(|d| kind(d) == "created").map(|d| d["trial"].as_u64().unwrap()).collect();
    assert_eq!(created, (0..9).collect::<Vec<_>>(), "each config started once");
    assert_eq!(run_dirs(&root).len(), 9);
    for d in run_dirs(&root) {
        assert!(d.join("done.json").exists() && d.join("model.safetensors").exists(), "{}", d.display());
        // Nobody claimed a trial just paused to pause it again (the pause is recorded before its lease goes).
        let a = attempts(&d);
        let empty = a.windows(2).filter(|w| w[0]["event"] == "start" && w[1]["outcome"] == "paused");
        assert!(empty.clone().all(|w| w[0]["step"] != w[1]["step"]), "{}: {a:?}", d.display());
    }
    assert_trained_once(&root);
}

#[test]
fn bad_scheduler_settings_and_a_changed_sweep_are_exit_2_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = tmp.path().join("vol");
    for (extra, key) in [
        ("min_epochs = 10", "min_epochs"),
        ("min_epochs = 0", "min_epochs"),
        ("keep_copies = true", "keep_copies"),
        ("[pruning]\nmethod = \"median\"", "pruning"),
    ] {
        let f = asha_sweep(tmp.path(), "bad", extra);
        let err = sweep(&f, &vol).bad();
        assert!(err.contains(key), "{extra}: {err}");
    }
    let f = tmp.path().join("eta.toml");
    std::fs::write(
        &f,
        std::fs::read_to_string(asha_sweep(tmp.path(), "eta", "")).unwrap().replace("eta = 3", "eta = 1"),
    )
    .unwrap();
    assert!(sweep(&f, &vol).bad().contains("eta = 1"));

    let file = asha_sweep(tmp.path(), "asha", "");
    let err = Run::new([
        "worker".as_ref(),
        file.as_os_str(),
        "--index".as_ref(),
        "0".as_ref(),
        "--volume".as_ref(),
        vol.as_os_str(),
    ])
    .bad();
    assert!(err.contains("--next"), "{err}");
    let est = Run::new(["estimate".as_ref(), file.as_os_str(), "--volume".as_ref(), vol.as_os_str()])
        .arg("--gpu")
        .arg("H100")
        .arg("--epoch-seconds")
        .arg("60")
        .ok();
    let est = text(&est.stdout);
    assert!(est.contains("9 runs, 21 epochs in all") && est.contains("a full search spends 81"), "{est}");
    sweep(&file, &vol).arg("--workers").arg("1").ok();
    let before = decisions(&vol.join("asha"));
    std::fs::write(&file, std::fs::read_to_string(&file).unwrap().replace("count = 9", "count = 10")).unwrap();
    let err = sweep(&file, &vol).bad();
    assert!(err.contains("00000000.json") && err.contains("another definition"), "{err}");
    assert_eq!(decisions(&vol.join("asha")), before, "nothing written");
}

/// A TPE sweep over `params` (TOML lines under `[parameters]`), `count` trials, `extra` at the top level.
fn tpe_sweep(dir: &Path, name: &str, count: usize, params: &str, extra: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    let text = format!(
        "name = \"{name}\"\nmethod = \"tpe\"\ncount = {count}\nseed = 5\n{extra}\n[base]\n\
         data.synthetic = {{ train = 1000, val = 200, features = 16 }}\nmodel.hidden = [16]\n\
         train = {{ batch_size = 100, epochs = 3, threads = 1, device = \"cpu\" }}\n[parameters]\n{params}\n"
    );
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn tpe_with_parallel_workers_never_starts_the_same_config_twice() {
    let tmp = tempfile::tempdir().unwrap();
    // Six configs in all, twelve trials asked for: repeats are certain unless proposals are deduplicated.
    let params = "\"model.hidden\" = [[8], [16]]\n\"optim.lr\" = [0.001, 0.01, 0.1]";
    let file = tpe_sweep(tmp.path(), "tpe", 12, params, "");
    let vol = tmp.path().join("vol");
    let out = sweep(&file, &vol).arg("--workers").arg("3").ok();
    let root = vol.join("tpe");
    let ds = decisions(&root);
    let mut runs: Vec<&str> = ds.iter().filter(|d| kind(d) == "created").map(|d| d["run"].as_str().unwrap()).collect();
    assert_eq!(runs.len(), 6, "every config once, then the space is used up: {}", text(&out.stdout));
    runs.sort_unstable();
    runs.dedup();
    assert_eq!(runs.len(), 6, "no config created twice");
    assert!(ds.iter().all(|d| kind(d) != "created" || d["origin"] == "tpe"));
    assert_eq!(run_dirs(&root).len(), 6);
    for d in run_dirs(&root) {
        assert_eq!(done(&d)["epochs"], 3, "{}", d.display());
    }
    assert_trained_once(&root);
    let plan: serde_json::Value = serde_json::from_slice(&std::fs::read(root.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(plan["runs"].as_array().unwrap().len(), 6, "sweep.json lists the trials");
}

#[test]
fn tpe_under_asha_with_one_worker_decides_the_same_every_time() {
    let tmp = tempfile::tempdir().unwrap();
    let params = "\"optim.lr\" = { log_uniform = [0.0001, 0.3] }\n\"model.hidden\" = [[8], [16], [32]]";
    let file = tpe_sweep(tmp.path(), "tpe", 12, params, "scheduler = \"asha\"");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    sweep(&file, &a).arg("--workers").arg("1").ok();
    sweep(&file, &b).arg("--workers").arg("1").ok();
    let (da, db) = (decisions(&a.join("tpe")), decisions(&b.join("tpe")));
    assert_eq!(da, db, "one worker, one seed: the same decisions");
    let created = da.iter().filter(|d| kind(d) == "created").count();
    assert_eq!(created, 12);
    assert!(da.iter().any(|d| kind(d) == "promoted") && da.iter().any(|d| kind(d) == "stopped"), "{da:?}");
    let tpe_seeds_err = sweep(&tpe_sweep(tmp.path(), "seeds", 4, params, "seeds = [1, 2]"), &a).bad();
    assert!(tpe_seeds_err.contains("seeds"), "{tpe_seeds_err}");
}

/// A PBT sweep: a population of `count` random lr configs, exploring `optim.lr`, pausing every 2 of 8 epochs;
/// every checkpoint kept (`checkpoint.keep_last`), so an exploit's copy can be compared after the run.
fn pbt_sweep(dir: &Path, name: &str, extra: &str, params: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    let text = format!(
        "name = \"{name}\"\nmethod = \"random\"\ncount = 6\nseed = 2\nscheduler = \"pbt\"\ninterval = 2\n{extra}\n\
         [base]\ndata.synthetic = {{ train = 1000, val = 200, features = 16 }}\nmodel.hidden = [16]\n\
         train = {{ batch_size = 100, epochs = 8, threads = 1, device = \"cpu\" }}\ncheckpoint.keep_last = 100\n\
         [parameters]\n{params}\n"
    );
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_pbt_exploit_starts_from_the_donors_checkpoint_byte_for_byte_with_explored_values() {
    let tmp = tempfile::tempdir().unwrap();
    // Every copy kept, to be compared after the study (by default they are deleted once no trial can use them).
    let file = pbt_sweep(tmp.path(), "pbt", "keep_copies = true", "\"optim.lr\" = { log_uniform = [0.0001, 0.3] }");
    let vol = tmp.path().join("vol");
    sweep(&file, &vol).arg("--workers").arg("2").ok();
    let root = vol.join("pbt");
    let ds = decisions(&root);
    let created = ds.iter().filter(|d| kind(d) == "created").count();
    assert_eq!(created, 6);
    let exploits: Vec<(usize, &serde_json::Value)> =
        ds.iter().enumerate().filter(|(_, d)| kind(d) == "exploited").collect();
    assert!(!exploits.is_empty(), "the bottom quarter exploited at some interval: {ds:?}");
    let dir = |t: u64| root.join("runs").join(format!("pbt-{t:04}"));
    for (seq, d) in &exploits {
        let (r, donor, e) = (d["trial"].as_u64().unwrap(), d["donor"].as_u64().unwrap(), d["epoch"].as_u64().unwrap());
        let kept = dir(donor).join(format!("pbt/epoch-{e:04}"));
        let ckpt = std::fs::read_dir(&kept).unwrap().flatten().next().unwrap().path();
        // Where the copy is now: moved aside by the recipient's next exploit, if it had one, else its checkpoints.
        let next = exploits.iter().find(|(s, x)| s > seq && x["trial"] == d["trial"]).map(|(s, _)| *s);
        let holder = next.map_or(dir(r).join("checkpoints"), |s| dir(r).join(format!("pbt/replaced-{s:08}")));
        let copy = holder.join(ckpt.file_name().unwrap());
        for f in std::fs::read_dir(&ckpt).unwrap().flatten() {
            let mine = std::fs::read(copy.join(f.file_name())).unwrap();
            assert!(
                mine == std::fs::read(f.path()).unwrap(),
                "exploit {seq}: {:?} differs from the donor's",
                f.file_name()
            );
        }
        assert!(dir(r).join(format!("pbt/exploit-{seq:08}.done")).exists());
        // Explored: the donor's lr times 0.8 or 1.2 (or drawn afresh), within the domain.
        let lr = d["values"][0][1].as_f64().unwrap();
        assert!((0.0001..=0.3).contains(&lr), "{lr}");
        // The recipient's history up to the exploit is the donor's as it was then (in the kept copy: the donor may
        // have been exploited itself since), unless a later exploit of the recipient replaced it again.
        let losses = |ms: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
            ms.into_iter().take(e as usize).map(|m| m["val_loss"].clone()).collect()
        };
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(ckpt.join("manifest.json")).unwrap()).unwrap();
        let then = losses(manifest["metrics"].as_array().unwrap().clone());
        assert_eq!(then.len(), e as usize, "exploit {seq}: the kept copy's history");
        if next.is_none() {
            assert_eq!(losses(crate::common::metrics(&dir(r))), then, "exploit {seq}");
        }
    }
    for t in 0..6 {
        assert_eq!(done(&dir(t))["epochs"], 8, "every member trains to the end");
    }
    Run::new(["report".as_ref(), root.as_os_str()]).ok();
    let lineage = std::fs::read_to_string(root.join("report/lineage.svg")).unwrap();
    let edge = lineage.contains(" -&gt; ") || lineage.contains(" -> ");
    assert!(lineage.contains("PBT lineage") && edge, "an exploit edge in the lineage chart: {lineage}");
    let st = text(&Run::new(["status".as_ref(), root.as_os_str()]).ok().stdout);
    assert!(st.contains("study: pbt (interval 2): 6 of 6 configs started") && st.contains("exploits: "), "{st}");

    // Replay: the lineage of the trial exploited most (its ancestors' segments, then its own) retrained as one
    // run ends byte-identical to the trial.
    let most = (0..6u64).max_by_key(|t| exploits.iter().filter(|(_, d)| d["trial"] == *t).count()).unwrap();
    let out = Run::new([
        "replay".as_ref(),
        file.as_os_str(),
        most.to_string().as_ref(),
        "--volume".as_ref(),
        vol.as_os_str(),
    ])
    .arg("--quiet")
    .ok();
    assert!(text(&out.stdout).contains("byte-identical"), "{}", text(&out.stdout));
    let replayed = std::fs::read(root.join(format!("replay-{most:04}/model.safetensors"))).unwrap();
    assert!(replayed == std::fs::read(dir(most).join("model.safetensors")).unwrap(), "replay of trial {most}");
}

/// By default a PBT study deletes each interval copy once every trial is past that interval, and the checkpoints
/// an exploit replaced once it is done: nothing of them is left at the end, and the study decides and trains
/// exactly as one that keeps everything (one worker each, so both take their decisions in the same order).
#[test]
fn pbt_deletes_copies_no_trial_can_use_and_trains_exactly_as_when_it_keeps_them() {
    let tmp = tempfile::tempdir().unwrap();
    let params = "\"optim.lr\" = { log_uniform = [0.0001, 0.3] }";
    let (kept, pruned) = (tmp.path().join("kept"), tmp.path().join("pruned"));
    sweep(&pbt_sweep(tmp.path(), "pbt", "keep_copies = true", params), &kept).arg("--workers").arg("1").ok();
    sweep(&pbt_sweep(tmp.path(), "pbt", "", params), &pruned).arg("--workers").arg("1").ok();
    let (dk, dp) = (decisions(&kept.join("pbt")), decisions(&pruned.join("pbt")));
    assert!(dk.iter().any(|d| kind(d) == "exploited"), "an exploit to test: {dk:?}");
    assert_eq!(dk, dp, "the same decisions");
    // One worker trains the population side by side: no trial reaches an interval before every trial has reached
    // the one before (before this was fixed, trial 0 raced to the end alone, ranked against nobody).
    let reached: Vec<(u64, u64)> = dp
        .iter()
        .filter(|d| kind(d) == "reached")
        .map(|d| (d["trial"].as_u64().unwrap(), d["epoch"].as_u64().unwrap()))
        .collect();
    assert!(reached.windows(2).all(|w| w[0].1 <= w[1].1), "reached out of step: {reached:?}");
    let left = |root: &Path| -> Vec<String> {
        run_dirs(root)
            .iter()
            .flat_map(|r| std::fs::read_dir(r.join("pbt")).into_iter().flatten().flatten())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".done"))
            .collect()
    };
    let (lk, lp) = (left(&kept.join("pbt")), left(&pruned.join("pbt")));
    assert!(lk.iter().any(|n| n.starts_with("epoch-")) && lk.iter().any(|n| n.starts_with("replaced-")), "{lk:?}");
    assert!(lp.is_empty(), "copies left after the study: {lp:?}");
    // A deletion a kill cut short (left as `.deleting-…`) goes when the study is launched again, which decides
    // nothing new.
    let half = run_dirs(&pruned.join("pbt"))[0].join("pbt/.deleting-killed");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("model.safetensors"), b"half").unwrap();
    sweep(&pbt_sweep(tmp.path(), "pbt", "", params), &pruned).arg("--workers").arg("1").ok();
    assert!(!half.exists(), "a half-deleted copy survived a relaunch");
    assert_eq!(decisions(&pruned.join("pbt")), dp, "the relaunch decided nothing");
    for (a, b) in run_dirs(&kept.join("pbt")).iter().zip(run_dirs(&pruned.join("pbt"))) {
        let w = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
        assert!(w(a) == w(&b), "{}: weights differ", b.display());
    }
}

#[test]
fn pbt_refuses_keys_it_cannot_change_mid_run() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = tmp.path().join("vol");
    for (extra, params, key) in [
        ("", "\"model.hidden\" = [[8], [16]]", "parameters.\"model.hidden\""),
        ("", "\"train.batch_size\" = [50, 100]", "parameters.\"train.batch_size\""),
        ("interval = 2", "\"optim.lr\" = [0.01, 0.1]", "interval"),
        ("quantile = 0.9", "\"optim.lr\" = [0.01, 0.1]", "quantile"),
        ("eta = 3", "\"optim.lr\" = [0.01, 0.1]", "eta"),
        ("keep_copies = 1", "\"optim.lr\" = [0.01, 0.1]", "keep_copies"),
    ] {
        let text = std::fs::read_to_string(pbt_sweep(tmp.path(), "bad", extra, params)).unwrap();
        let f = tmp.path().join("bad2.toml");
        // `interval = 2` twice is a TOML error; the interval case uses 8 (not below train.epochs) instead.
        std::fs::write(
            &f,
            if extra == "interval = 2" { text.replacen("interval = 2\ninterval = 2", "interval = 8", 1) } else { text },
        )
        .unwrap();
        let err = sweep(&f, &vol).bad();
        assert!(err.contains(key), "{extra} {params}: {err}");
    }
}

#[test]
fn hyperband_runs_its_brackets_round_robin_each_training_a_config_to_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let text_ = std::fs::read_to_string(asha_sweep(tmp.path(), "hb", "")).unwrap();
    let file = tmp.path().join("hb.toml");
    std::fs::write(
        &file,
        text_.replace("scheduler = \"asha\"", "scheduler = \"hyperband\"").replace("count = 9", "count = 6"),
    )
    .unwrap();
    let vol = tmp.path().join("vol");
    sweep(&file, &vol).arg("--workers").arg("2").ok();
    let root = vol.join("hb");
    let ds = decisions(&root);
    let brackets: Vec<u64> =
        ds.iter().filter(|d| kind(d) == "created").map(|d| d["bracket"].as_u64().unwrap()).collect();
    assert_eq!(brackets, vec![0, 1, 2, 0, 1, 2], "floor(log3(9)) + 1 = 3 brackets, configs dealt round-robin");
    for b in 0..3u64 {
        let trials: Vec<&serde_json::Value> =
            ds.iter().filter(|d| kind(d) == "created" && d["bracket"] == b).map(|d| &d["trial"]).collect();
        let finished = ds.iter().filter(|d| kind(d) == "finished" && d["epoch"] == 9 && trials.contains(&&d["trial"]));
        assert!(finished.count() >= 1, "bracket {b} trains a config to the end: {ds:?}");
    }
    // Bracket 2's first rung is the last epoch: its configs never pause.
    let first_rung_2 = ds.iter().filter(|d| kind(d) == "reached" && d["epoch"] == 1).count();
    assert_eq!(first_rung_2, 2, "only bracket 0's two configs pause at epoch 1");
    let st = text(&Run::new(["status".as_ref(), root.as_os_str()]).ok().stdout);
    assert!(st.contains("study: hyperband (eta 3, min_epochs 1): 6 of 6 configs started"), "{st}");
    assert_trained_once(&root);
}
