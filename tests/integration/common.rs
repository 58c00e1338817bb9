//! Helpers shared by the integration modules.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A two-run CPU sweep (`optim.lr` in {0.001, 0.01}) of a tiny synthetic task, written as `DIR/NAME.toml`.
pub(crate) fn tiny_sweep(dir: &Path, name: &str, epochs: usize) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    let text = format!(
        "name = \"{name}\"\n[base]\ndata.synthetic = {{ train = 1000, val = 200, features = 16 }}\n\
         model.hidden = [16]\ntrain = {{ batch_size = 250, epochs = {epochs}, threads = 1, device = \"cpu\" }}\n\
         [parameters]\n\"optim.lr\" = [0.001, 0.01]\n"
    );
    std::fs::write(&p, text).expect("write the sweep file");
    p
}

/// The `spotrun` binary under test: cargo's, or a copy named by `SPOTRUN_TEST_BIN` (scripts/torture.sh uses one,
/// so a long run is not affected by a rebuild of target/ while it goes on).
pub(crate) fn spotrun() -> Command {
    Command::new(std::env::var_os("SPOTRUN_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_spotrun").into()))
}

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A tiny synthetic task that trains in well under a second.
pub(crate) const SMALL: [&str; 6] = [
    "data.synthetic.train=2000",
    "data.synthetic.val=500",
    "data.synthetic.features=32",
    "model.hidden=[64]",
    "train.batch_size=256",
    "train.epochs=2",
];

/// `["--set", a, "--set", b, ...]`
pub(crate) fn sets(kvs: &[&str]) -> Vec<String> {
    kvs.iter().flat_map(|kv| ["--set".to_string(), kv.to_string()]).collect()
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The one way the integration tests run spotrun: build the command, then say what must come of it.
///
/// `Run::new(["inspect", dir]).ok()`, `Run::train(&dir).set("train.epochs=3").bad()`,
/// `Run::train(&dir).env("SPOTRUN_TEST_WRITE_DELAY_MS", "20").spawn()`.
#[must_use = "a Run does nothing until .output(), .ok(), .bad() or .spawn()"]
pub(crate) struct Run {
    args: Vec<String>,
    cmd: Command,
}

impl Run {
    pub(crate) fn new<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> Run {
        let args: Vec<String> = args.into_iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect();
        let mut cmd = spotrun();
        cmd.args(&args);
        Run { args, cmd }
    }

    /// `spotrun train --run-dir DIR` on the [`SMALL`] task.
    pub(crate) fn train(dir: &Path) -> Run {
        Run::new(["train".to_string(), "--run-dir".into(), dir.display().to_string()]).sets(&SMALL)
    }

    pub(crate) fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Run {
        self.args.push(a.as_ref().to_string_lossy().into_owned());
        self.cmd.arg(a);
        self
    }

    /// `--set KV`.
    pub(crate) fn set(self, kv: &str) -> Run {
        self.arg("--set").arg(kv)
    }

    pub(crate) fn sets(self, kvs: &[&str]) -> Run {
        kvs.iter().fold(self, |r, kv| r.set(kv))
    }

    pub(crate) fn env(mut self, k: &str, v: &str) -> Run {
        self.cmd.env(k, v);
        self
    }

    pub(crate) fn current_dir(mut self, d: &Path) -> Run {
        self.cmd.current_dir(d);
        self
    }

    pub(crate) fn output(mut self) -> Output {
        self.cmd.output().expect("spawn spotrun")
    }

    /// Runs it and asserts success.
    #[track_caller]
    pub(crate) fn ok(self) -> Output {
        let args = self.args.clone();
        let out = self.output();
        assert!(out.status.success(), "spotrun {args:?} failed: {}\n{}", out.status, text(&out.stderr));
        out
    }

    /// Runs it, asserts exit 2 with one clear `error:` line and no panic, and returns stderr.
    #[track_caller]
    pub(crate) fn bad(self) -> String {
        let args = self.args.clone();
        let out = self.output();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "spotrun {args:?}: expected exit 2, got {}; stderr:\n{err}", out.status);
        assert!(err.starts_with("error: "), "one clear error line expected, got:\n{err}");
        assert!(!err.contains("panicked"), "{err}");
        err
    }

    /// The arguments, for a command run some other way (under `sh -c 'ulimit …'`, with closed pipes).
    pub(crate) fn into_args(self) -> Vec<String> {
        self.args
    }

    /// Starts it with stdout discarded and stderr piped.
    pub(crate) fn spawn(mut self) -> std::process::Child {
        self.cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().expect("spawn")
    }
}

/// `Run::new(args).ok()`.
#[track_caller]
pub(crate) fn run_ok(args: &[String]) -> Output {
    Run::new(args).ok()
}

/// `Run::new(args).bad()`.
#[track_caller]
pub(crate) fn run_bad(args: &[String]) -> String {
    Run::new(args).bad()
}

/// The project's torch venv python (set by scripts/test.sh; falls back to the default location).
pub(crate) fn python() -> PathBuf {
    let p = std::env::var_os("SPOTRUN_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/spotrun/torch-2.11.0/bin/python")
    });
    assert!(p.exists(), "no torch venv python at {} (run scripts/setup.sh, or use scripts/test.sh)", p.display());
    p
}

/// Each case (`--set`s, the file and the key its error must name) through `spotrun prepare` and `spotrun train` of
/// `config` with `data.cache_dir` = `cache`: exit 2, one `error:` line naming both, no run directory (under `tmp`)
/// and nothing left in the cache. Shared by the prepared sources (text, image folders).
#[track_caller]
pub(crate) fn refused_by_prepare_and_train(
    config: &Path,
    cache: &Path,
    tmp: &Path,
    cases: &[(Vec<String>, String, &str)],
) {
    for (sets, file, key) in cases {
        for cmd in ["prepare", "train"] {
            let run = tmp.join("run");
            let mut r =
                Run::new([cmd, config.to_str().unwrap()]).set(&format!("data.cache_dir=\"{}\"", cache.display()));
            if cmd == "train" {
                r = r.arg("--run-dir").arg(&run);
            }
            let err = sets.iter().fold(r, |r, s| r.set(s)).bad();
            assert!(err.contains(file.as_str()) && err.contains(key), "{cmd} {sets:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(!run.exists(), "{cmd} {sets:?}: the run directory was written");
            let entries = std::fs::read_dir(cache).map(|d| d.count()).unwrap_or(0);
            assert_eq!(entries, 0, "{cmd} {sets:?}: something was left in the cache");
        }
    }
}

/// Reads `metrics.jsonl` as JSON values.
/// The data venv's python: numpy, pyarrow, Pillow and tokenizers, which the data-source tests make their inputs with
/// (scripts/test.sh installs it; SPOTRUN_DATA_PYTHON overrides).
pub(crate) fn data_python() -> PathBuf {
    let p = std::env::var_os("SPOTRUN_DATA_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/spotrun/testdata-1/bin/python")
    });
    assert!(p.exists(), "no data venv at {} (scripts/test.sh installs it)", p.display());
    p
}

/// Runs `SCRIPT` (Python source) with the data venv's python and `args`; panics with its stderr when it fails.
pub(crate) fn data_py(script: &str, args: &[&std::ffi::OsStr]) -> String {
    let o = Command::new(data_python()).arg("-c").arg(script).args(args).output().unwrap();
    assert!(o.status.success(), "data venv python failed: {}", text(&o.stderr));
    text(&o.stdout)
}

pub(crate) fn metrics(run_dir: &Path) -> Vec<serde_json::Value> {
    let t = std::fs::read_to_string(run_dir.join("metrics.jsonl")).expect("metrics.jsonl");
    t.lines().map(|l| serde_json::from_str(l).expect("metrics line is JSON")).collect()
}

/// Writes a dataset with the library's safetensors writer: `features` inputs, labels `0..classes`.
pub(crate) fn write_dataset(path: &Path, n: i64, features: i64, classes: i64, x_kind: tch::Kind, y_kind: tch::Kind) {
    let x = tch::Tensor::randn([n, features], (tch::Kind::Float, tch::Device::Cpu)).to_kind(x_kind);
    let y = tch::Tensor::randint(classes, [n], (tch::Kind::Int64, tch::Device::Cpu)).to_kind(y_kind);
    let xv = x.narrow(0, 0, n / 4).copy();
    let yv = y.narrow(0, 0, n / 4).copy();
    let named = [("x_train", x), ("y_train", y), ("x_val", xv), ("y_val", yv)].map(|(k, t)| (k.to_string(), t));
    spotrun::checkpoint::save(path, &named).expect("write dataset");
}

/// Polls `f` every 5 ms until it is true; fails the test after `timeout`.
#[track_caller]
pub(crate) fn wait_until(what: &str, timeout: std::time::Duration, mut f: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// `kill -SIG pid` (a real signal through the real kill(1)).
#[track_caller]
pub(crate) fn kill(pid: u32, sig: &str) -> bool {
    Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status().expect("kill(1)").success()
}

/// The checkpoints of a run directory that look committed (a `ckpt-*` directory with a manifest: what resume and
/// `inspect` read), oldest first.
pub(crate) fn committed(run_dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(run_dir.join("checkpoints"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("ckpt-")))
        .filter(|p| p.join("manifest.json").exists())
        .collect();
    v.sort();
    v
}

/// The step of a run's newest committed checkpoint (0 if none).
pub(crate) fn newest_step(run_dir: &Path) -> u64 {
    committed(run_dir).last().and_then(|p| p.file_name()?.to_str()?.strip_prefix("ckpt-")?.parse().ok()).unwrap_or(0)
}

/// A sweep run's `attempts.jsonl` as JSON values.
pub(crate) fn attempts(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("attempts.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("attempts line is JSON"))
        .collect()
}

/// PIDs of the live child processes of `parent` (from /proc).
pub(crate) fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            ppid == Some(parent)
        })
        .collect()
}

/// Whether the run's checkpoint of `step` is being written: its directory exists, its manifest (the commit) does not.
/// With `SPOTRUN_TEST_WRITE_DELAY_MS` holding each file of a save, a process seen here stays inside that save for
/// at least twice the delay (the files, then the manifest).
pub(crate) fn saving(run_dir: &Path, step: u64) -> bool {
    let c = run_dir.join("checkpoints").join(format!("ckpt-{step:010}"));
    c.is_dir() && !c.join("manifest.json").exists()
}

/// Waits until process `pid` has no signal pending (`ShdPnd` in /proc/PID/status, the process-wide set that kill(1)
/// adds to and delivery to a handler clears), so that a signal just sent has reached the process; a process that has
/// exited counts as reached.
#[track_caller]
pub(crate) fn wait_delivered(pid: u32) {
    wait_until("the signal to be delivered", std::time::Duration::from_secs(10), || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let pending = status.lines().find_map(|l| l.strip_prefix("ShdPnd:")).map(str::trim);
        pending.is_none_or(|hex| u64::from_str_radix(hex, 16).is_ok_and(|v| v == 0))
    });
}

/// Stops process `pid` with SIGSTOP and waits until it is stopped (`State: T` in /proc/PID/status), so what it has
/// written can be read without racing it; false when it is gone.
#[track_caller]
pub(crate) fn freeze(pid: u32) -> bool {
    if !kill(pid, "STOP") {
        return false;
    }
    let state = || std::fs::read_to_string(format!("/proc/{pid}/status")).ok();
    wait_until("the process to stop", std::time::Duration::from_secs(10), || {
        state().is_none_or(|s| s.lines().any(|l| l.starts_with("State:") && l.contains('T')))
    });
    state().is_some()
}
