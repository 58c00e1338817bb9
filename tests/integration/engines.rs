//! Engines: a real single-node Slurm cluster (started by scripts/slurm-local.sh), the Kubernetes manifests, and
//! the Modal app (imported with the `modal` package, no network).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::{attempts, committed, repo, run_bad, run_ok, text, wait_until};

const SWEEP: &str = "name = \"eng\"\nseeds = [1, 2]\nlease_seconds = 30\n[base]\n\
                     data.synthetic = { train = 30000, val = 1000, features = 256 }\nmodel.hidden = [512]\n\
                     train = { batch_size = 256, epochs = 4, threads = 1 }\ncheckpoint = { every_steps = 5 }\n\
                     [parameters]\n\"optim.lr\" = [0.001, 0.003]\n";

fn sweep_file(dir: &Path) -> PathBuf {
    let p = dir.join("eng.toml");
    std::fs::write(&p, SWEEP).unwrap();
    p
}

/// A Slurm cluster under a temp dir, stopped (by PID files) when dropped.
struct Cluster {
    base: PathBuf,
    conf: PathBuf,
}

impl Cluster {
    /// None (test skipped, loudly) when Slurm is not installed and the caller did not require it.
    fn start(base: &Path) -> Option<Cluster> {
        let have = Command::new("sh").args(["-c", "command -v slurmctld && command -v sbatch"]).output().unwrap();
        if !have.status.success() {
            assert!(
                std::env::var_os("SPOTRUN_REQUIRE_SLURM").is_none(),
                "Slurm is not installed: run scripts/slurm-local.sh install (scripts/test.sh does)"
            );
            eprintln!("SKIPPED: Slurm is not installed (scripts/slurm-local.sh install); scripts/test.sh requires it");
            return None;
        }
        let out = Command::new(repo().join("scripts/slurm-local.sh")).arg("start").arg(base).output().unwrap();
        assert!(out.status.success(), "cluster start failed: {}{}", text(&out.stdout), text(&out.stderr));
        Some(Cluster { base: base.to_path_buf(), conf: base.join("etc/slurm.conf") })
    }

    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    fn daemon_pids(&self) -> Vec<u32> {
        ["slurmd", "slurmctld", "munged"]
            .iter()
            .filter_map(|d| std::fs::read_to_string(self.base.join(format!("run/{d}.pid"))).ok()?.trim().parse().ok())
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/slurm-local.sh")).arg("stop").arg(&self.base).status();
    }
}

fn done_count(vol: &Path) -> usize {
    std::fs::read_dir(vol.join("eng/runs"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|d| d.path().join("done.json").exists())
        .count()
}

#[test]
fn slurm_array_sweep_with_a_preempted_task_requeues_it_resumes_and_matches_a_local_run() {
    // One task per run (`--no-fuse`): task 1 is run 1.
    slurm_preempt_task_1(SWEEP, &["--no-fuse"], 4, &[1]);
}

#[test]
fn slurm_array_of_fused_groups_requeues_a_preempted_group_and_matches_a_local_fused_run() {
    // Two widths x two learning rates x two seeds: two fused groups of four runs (one per width), one task each.
    let sweep = SWEEP.replace("[parameters]\n", "[parameters]\n\"model.hidden\" = [[512], [384]]\n");
    slurm_preempt_task_1(&sweep, &[], 2, &[4, 5, 6, 7]);
}

/// Submits the sweep `body` as an array of `tasks` tasks (`extra`: `spotrun slurm` options), preempts task 1
/// (training the runs `task1_runs`) with USR1 once one of them has a checkpoint, and checks that only task 1 was
/// requeued, that its runs resumed, and that every run matches the same sweep run locally, byte for byte.
fn slurm_preempt_task_1(body: &str, extra: &[&str], tasks: usize, task1_runs: &[usize]) {
    let tmp = tempfile::tempdir().unwrap();
    let Some(cluster) = Cluster::start(&tmp.path().join("slurm")) else { return };
    let sweep = tmp.path().join("eng.toml");
    std::fs::write(&sweep, body).unwrap();
    let vol = tmp.path().join("vol");
    let out = cluster
        .cmd(env!("CARGO_BIN_EXE_spotrun"))
        .args(["slurm", &sweep.display().to_string(), "--volume", &vol.display().to_string(), "--submit"])
        .args(["--cpus-per-task", "1", "--grace", "30"])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("({tasks} tasks)")), "{}", text(&out.stdout));
    let job = text(&out.stdout).split_whitespace().nth(3).unwrap().to_string();
    assert!(job.parse::<u64>().is_ok(), "job id from: {}", text(&out.stdout));
    let plan: Value = serde_json::from_slice(&std::fs::read(vol.join("eng/sweep.json")).unwrap()).unwrap();
    let runs = plan["runs"].as_array().unwrap().len();
    let dir = |i: usize| vol.join("eng/runs").join(plan["runs"][i]["id"].as_str().unwrap());

    // Preempt task 1 once it has a checkpoint: USR1 to the batch shell only, as --signal=B:USR1@grace would.
    wait_until("task 1 to checkpoint", Duration::from_secs(180), || {
        task1_runs.iter().any(|&i| !committed(&dir(i)).is_empty())
    });
    assert!(task1_runs.iter().all(|&i| !dir(i).join("done.json").exists()), "task 1 finished before the signal");
    let st = cluster.cmd("scancel").args(["--batch", "--signal=USR1", &format!("{job}_1")]).status().unwrap();
    assert!(st.success());
    wait_until("every run done", Duration::from_secs(300), || done_count(&vol) == runs);
    wait_until("the array to leave the queue", Duration::from_secs(60), || {
        let q = cluster.cmd("squeue").args(["-h", "-j", &job]).output().unwrap();
        text(&q.stdout).trim().is_empty()
    });

    // Task 1 was requeued (only it), and its runs' second attempts resumed from the checkpoints written on USR1.
    let show = text(&cluster.cmd("scontrol").args(["show", "job", &format!("{job}_1")]).output().unwrap().stdout);
    assert!(show.contains("Restarts=1"), "{show}");
    for i in (0..tasks).filter(|&t| t != 1) {
        let show = text(&cluster.cmd("scontrol").args(["show", "job", &format!("{job}_{i}")]).output().unwrap().stdout);
        assert!(show.contains("Restarts=0") && show.contains("JobState=COMPLETED"), "task {i}: {show}");
    }
    let mut resumed = 0;
    for &i in task1_runs {
        let at = attempts(&dir(i));
        let outcomes: Vec<&str> = at.iter().filter_map(|a| a["outcome"].as_str()).collect();
        assert_eq!(outcomes, ["preempted", "done"], "run {i}: {at:?}");
        assert_eq!(at[1]["exit_code"], 138, "128 + SIGUSR1");
        let second = at.iter().filter(|a| a["event"] == "start").nth(1).unwrap();
        resumed += usize::from(second["step"].as_u64().unwrap() > 0);
    }
    assert!(resumed > 0, "task 1 resumed from its checkpoints, not from scratch");
    let log = std::fs::read_to_string(vol.join(format!("eng/slurm/{job}_1.out"))).unwrap();
    assert!(log.contains("requeueing task") && log.contains("restart 1"), "{log}");

    // The same sweep run locally (fused as on Slurm, or not) gives byte-identical weights and the same metrics.
    let local = tmp.path().join("local");
    let mut args: Vec<String> = ["worker", &sweep.display().to_string(), "--next", "--quiet", "--threads", "1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(["--volume".to_string(), local.display().to_string()]);
    run_ok(&args);
    for r in plan["runs"].as_array().unwrap() {
        let id = r["id"].as_str().unwrap();
        let (a, b) = (vol.join("eng/runs").join(id), local.join("eng/runs").join(id));
        assert!(
            std::fs::read(a.join("model.safetensors")).unwrap() == std::fs::read(b.join("model.safetensors")).unwrap(),
            "run {id}"
        );
        let strip = |d: &Path| {
            crate::common::metrics(d)
                .into_iter()
                .map(|mut m| {
                    m.as_object_mut().unwrap().retain(|k, _| k != "samples_per_sec" && k != "epoch_seconds");
                    m
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(&a), strip(&b), "run {id}");
    }
    let pids = cluster.daemon_pids();
    assert_eq!(pids.len(), 3);
    drop(cluster);
    for pid in pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "daemon {pid} still running after stop");
    }
}

#[test]
fn slurm_script_is_a_plain_job_array_a_user_could_submit() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = sweep_file(tmp.path());
    let vol = tmp.path().join("vol");
    let script = tmp.path().join("eng.sbatch");
    let out = run_ok(&[
        "slurm".into(),
        sweep.display().to_string(),
        "--volume".into(),
        vol.display().to_string(),
        "-o".into(),
        script.display().to_string(),
        "--partition".into(),
        "gpu".into(),
        "--gpus-per-task".into(),
        "1".into(),
        "--time".into(),
        "4:00:00".into(),
        "--max-parallel".into(),
        "2".into(),
        "--sbatch=--account=ml".into(),
        "--no-fuse".into(),
    ]);
    assert!(text(&out.stdout).contains("Submit with: sbatch"), "{}", text(&out.stdout));
    let s = std::fs::read_to_string(&script).unwrap();
    for want in [
        "#!/bin/bash",
        "#SBATCH --array=0-3%2",
        "#SBATCH --requeue",
        "#SBATCH --signal=B:USR1@120",
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-task=1",
        "#SBATCH --time=4:00:00",
        "#SBATCH --account=ml",
        "--group \"$SLURM_ARRAY_TASK_ID\" --no-fuse",
        "scontrol requeue \"$task\"",
        "task=\"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\"",
    ] {
        assert!(s.contains(want), "missing {want:?} in:\n{s}");
    }
    let ok = Command::new("bash").arg("-n").arg(&script).status().unwrap();
    assert!(ok.success(), "bash -n rejects the script");
    // What sbatch would reject, or what defeats the requeue, is refused before anything is written.
    let other = tmp.path().join("vol2");
    let slurm = |extra: &[&str]| -> Vec<String> {
        let mut a =
            vec!["slurm".to_string(), sweep.display().to_string(), "--volume".into(), other.display().to_string()];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let err = run_bad(&slurm(&["--time", "4h"]));
    assert!(err.contains("--time: \"4h\" is not a Slurm time limit"), "{err}");
    let err = run_bad(&slurm(&["--time", "2", "--grace", "300"]));
    assert!(err.contains("--grace 300 must be shorter than --time 2 (120 s)"), "{err}");
    assert!(!other.exists(), "nothing written for bad options");
}

#[test]
fn k8s_indexed_job_has_the_fields_an_engine_needs_and_a_self_contained_sweep() {
    let tmp = tempfile::tempdir().unwrap();
    // a sweep whose base is a separate file: the ConfigMap must inline it
    std::fs::write(tmp.path().join("base.toml"), "[train]\nepochs = 2\nbatch_size = 128\n").unwrap();
    let sweep = tmp.path().join("k.toml");
    std::fs::write(
        &sweep,
        "name = \"K8s_Test\"\nbase = \"base.toml\"\nretries = 3\n[parameters]\n\"optim.lr\" = [0.1, 0.2, 0.3]\n",
    )
    .unwrap();
    let render = |extra: &[&str]| -> Vec<serde_yaml::Value> {
        let mut args = vec!["k8s".to_string(), sweep.display().to_string(), "--image".into(), "reg/spotrun:1".into()];
        args.extend(["--pvc".to_string(), "vol".into()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let yaml = text(&run_ok(&args).stdout);
        serde_yaml::Deserializer::from_str(&yaml).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect()
    };
    let docs = render(&[]);
    assert_eq!(docs.len(), 2);
    let (cm, job) = (&docs[0], &docs[1]);
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(job["kind"], "Job");
    assert_eq!(job["apiVersion"], "batch/v1");
    // The sweep is named `K8s_Test`: upper case and `_` are not allowed in a Job name, so a hash is appended.
    let name = job["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("spotrun-k8s-test-") && name.len() == "spotrun-k8s-test-".len() + 6, "{name}");
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    assert_eq!(spec["completions"], 1, "the three runs fuse into one group: one pod index");
    assert_eq!(spec["backoffLimitPerIndex"], 3, "the sweep's retries");
    let rules = spec["podFailurePolicy"]["rules"].as_sequence().unwrap();
    let ignore_codes: Vec<i64> = rules
        .iter()
        .filter(|r| r["action"] == "Ignore" && r["onExitCodes"].is_mapping())
        .flat_map(|r| r["onExitCodes"]["values"].as_sequence().unwrap().iter().map(|v| v.as_i64().unwrap()))
        .collect();
    assert!(ignore_codes.contains(&143) && ignore_codes.contains(&75), "{ignore_codes:?}");
    assert!(rules.iter().any(|r| r["action"] == "Ignore" && r["onPodConditions"][0]["type"] == "DisruptionTarget"));
    assert!(rules.iter().any(|r| r["action"] == "FailIndex" && r["onExitCodes"]["values"][0] == 2));
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "reg/spotrun:1");
    let cmd = c["command"][2].as_str().unwrap();
    assert!(cmd.starts_with("exec spotrun worker /etc/spotrun/sweep.toml --group \"$JOB_COMPLETION_INDEX\""), "{cmd}");
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], 1);
    assert_eq!(pod["volumes"][0]["persistentVolumeClaim"]["claimName"], "vol");
    // --no-fuse: one pod index per run, and the workers are told so
    let no_fuse = render(&["--no-fuse"]);
    assert_eq!(no_fuse[1]["spec"]["completions"], 3);
    let cmd1 = no_fuse[1]["spec"]["template"]["spec"]["containers"][0]["command"][2].as_str().unwrap();
    assert!(cmd1.contains("--group \"$JOB_COMPLETION_INDEX\" --no-fuse"), "{cmd1}");
    // the embedded sweep expands to the same runs as the original
    let embedded = cm["data"]["sweep.toml"].as_str().unwrap();
    let ids = |s: spotrun::sweep::Sweep| {
        spotrun::sweep::expand(&s).unwrap().runs.into_iter().map(|r| r.id).collect::<Vec<_>>()
    };
    let a = ids(spotrun::sweep::parse(embedded, Path::new("/elsewhere/sweep.toml")).unwrap());
    let b = ids(spotrun::sweep::load(&sweep).unwrap());
    assert_eq!(a, b);
}

#[test]
fn modal_app_defines_the_app_the_gpu_function_and_the_entrypoint() {
    let py = std::env::var_os("SPOTRUN_MODAL_PYTHON").map(PathBuf::from);
    let Some(py) = py.filter(|p| p.exists()) else {
        assert!(
            std::env::var_os("SPOTRUN_REQUIRE_MODAL").is_none(),
            "no python with `modal` (SPOTRUN_MODAL_PYTHON); scripts/test.sh sets one up"
        );
        eprintln!("SKIPPED: set SPOTRUN_MODAL_PYTHON to a python with `modal` installed (scripts/test.sh does)");
        return;
    };
    let out = Command::new(py)
        .arg(repo().join("tests/modal_app_check.py"))
        .arg(repo().join("scripts/modal_app.py"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("ok: app spotrun"), "{s}");
}

#[test]
fn slurm_array_of_generic_workers_runs_an_asha_study_to_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(cluster) = Cluster::start(&tmp.path().join("slurm")) else { return };
    let sweep = tmp.path().join("eng.toml");
    std::fs::write(
        &sweep,
        "name = \"eng\"\nmethod = \"random\"\ncount = 6\nseed = 3\nscheduler = \"asha\"\neta = 3\n[base]\n\
         data.synthetic = { train = 1000, val = 200, features = 16 }\nmodel.hidden = [16]\n\
         train = { batch_size = 100, epochs = 9, threads = 1, device = \"cpu\" }\n\
         [parameters]\n\"optim.lr\" = { log_uniform = [0.0001, 0.3] }\n",
    )
    .unwrap();
    let vol = tmp.path().join("vol");
    let out = cluster
        .cmd(env!("CARGO_BIN_EXE_spotrun"))
        .args(["slurm", &sweep.display().to_string(), "--volume", &vol.display().to_string(), "--submit"])
        .args(["--cpus-per-task", "1", "--max-parallel", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    let first = said.lines().next().unwrap();
    let script = std::fs::read_to_string(first.rsplit_once(": ").unwrap().1.trim()).unwrap();
    assert!(script.contains("--next") && !script.contains("--group"), "generic workers: {script}");
    let job = text(&out.stdout).split_whitespace().nth(3).unwrap().to_string();
    wait_until("the array to leave the queue", Duration::from_secs(300), || {
        let q = cluster.cmd("squeue").args(["-h", "-j", &job]).output().unwrap();
        text(&q.stdout).trim().is_empty()
    });
    let runs: Vec<PathBuf> = std::fs::read_dir(vol.join("eng/runs")).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(runs.len(), 6);
    for r in &runs {
        let done: Value = serde_json::from_slice(&std::fs::read(r.join("done.json")).unwrap()).unwrap();
        assert!(done["outcome"] == "completed" || done["outcome"] == "stopped", "{done}");
    }
    // The journal replays from outside: one more worker reads every record strictly and finds nothing to do.
    let again = run_ok(&[
        "worker".into(),
        sweep.display().to_string(),
        "--next".into(),
        "--volume".into(),
        vol.display().to_string(),
    ]);
    assert!(text(&again.stdout).contains("trained 0 run(s), 0 failed"), "{}", text(&again.stdout));
    let finished = (0..)
        .map_while(|i| std::fs::read(vol.join(format!("eng/study/{i:08}.json"))).ok())
        .filter(|b| String::from_utf8_lossy(b).contains("\"kind\":\"finished\""))
        .count();
    assert!(finished >= 1, "a trial trained to the last rung");
}

#[test]
fn a_scheduled_sweep_renders_generic_study_workers_for_kubernetes() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = tmp.path().join("s.toml");
    std::fs::write(
        &sweep,
        "name = \"study\"\nmethod = \"tpe\"\ncount = 8\nscheduler = \"asha\"\n[base]\ntrain = { epochs = 9 }\n\
         [parameters]\n\"optim.lr\" = { log_uniform = [0.0001, 0.1] }\n",
    )
    .unwrap();
    let args: Vec<String> = ["k8s", sweep.to_str().unwrap(), "--image", "reg/spotrun:1", "--pvc", "vol"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let yaml = text(&run_ok(&args).stdout);
    assert!(yaml.contains("--next") && !yaml.contains("--group"), "every pod pulls from the study: {yaml}");
    assert!(yaml.contains("completions: 8"), "one generic worker per TPE trial (none exists yet): {yaml}");
    let vol = tmp.path().join("vol");
    let out = run_ok(&["slurm".into(), sweep.display().to_string(), "--volume".into(), vol.display().to_string()]);
    let script = std::fs::read_to_string(vol.join("study/slurm/study.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=0-7") && script.contains("--next"), "{}\n{script}", text(&out.stdout));
    let check =
        std::process::Command::new("bash").arg("-n").arg(vol.join("study/slurm/study.sbatch")).status().unwrap();
    assert!(check.success(), "the script parses");
}
