//! Ready for the first GPU, as far as a CPU machine can show it: `scripts/setup.sh` picks the torch build for the
//! host's NVIDIA driver (a fake `nvidia-smi` and a fake venv python whose pip only records what it was asked, so
//! nothing is ever downloaded), and `train.device = "auto"` refuses to fall back to the CPU when the driver sees a
//! GPU that libtorch cannot use (the driver's answer faked through `SPOTRUN_TEST_CUDA_DRIVER`).
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{python, repo, text, Run};

/// A venv whose `bin/python` is a fake: `-c` prints the "installed" torch (`torch.state`, absent = not
/// installed), `-m pip install ... torch==2.11.0 ...` records a CUDA 12.8 build when given `--index-url` and
/// PyPI's CUDA 13.0 build otherwise, `-m pip uninstall` removes it. Every call is appended to `calls.log`.
const FAKE_PYTHON: &str = r#"#!/usr/bin/env bash
d="$(cd "$(dirname "$0")/.." && pwd)"
echo "$*" >> "$d/calls.log"
case "$1" in
  -c) [ -f "$d/torch.state" ] || exit 1; cat "$d/torch.state" ;;
  -m) shift 2
      case "$1" in
        install) case " $* " in
                   *" torch==2.11.0 "*" --index-url "*|*" --index-url "*" torch==2.11.0 "*)
                     echo "2.11.0+cu128 12.8 $d/torch" > "$d/torch.state" ;;
                   *" torch==2.11.0 "*) echo "2.11.0+cu130 13.0 $d/torch" > "$d/torch.state" ;;
                 esac ;;
        uninstall) rm -f "$d/torch.state" ;;
      esac ;;
  *) exit 1 ;;
esac
"#;

struct Host {
    _tmp: tempfile::TempDir,
    venv: PathBuf,
    bin: PathBuf,
}

fn write_exe(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A host whose `nvidia-smi` reports `driver` (`None`: no nvidia-smi) and whose venv holds `installed`
/// ("VERSION CUDA", or nothing).
fn host(driver: Option<&str>, installed: Option<&str>) -> Host {
    let tmp = tempfile::tempdir().unwrap();
    let venv = tmp.path().join("venv");
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(venv.join("bin")).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    write_exe(&venv.join("bin/python"), FAKE_PYTHON);
    if let Some(v) = installed {
        std::fs::write(venv.join("torch.state"), format!("{v} {}/torch\n", venv.display())).unwrap();
    }
    if let Some(d) = driver {
        // One line per GPU, and more lines than a pipe holds: a set-up that stopped reading after the first line
        // would SIGPIPE it (and, under pipefail, end without a word).
        let smi = format!(
            "#!/usr/bin/env bash\n[ \"$*\" = \"--query-gpu=driver_version --format=csv,noheader\" ] || exit 9\n\
             for i in $(seq 1 20000); do echo {d}; done\n"
        );
        write_exe(&bin.join("nvidia-smi"), &smi);
    }
    Host { _tmp: tmp, venv, bin }
}

impl Host {
    /// Runs scripts/setup.sh with the fakes first on PATH (`index`: SPOTRUN_TORCH_INDEX).
    fn setup(&self, index: Option<&str>) -> Output {
        let path = format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap_or_default());
        let mut cmd = std::process::Command::new("bash");
        cmd.arg(repo().join("scripts/setup.sh"))
            .env("PATH", path)
            .env("SPOTRUN_TORCH_VENV", &self.venv)
            .env_remove("SPOTRUN_TORCH_INDEX")
            .env_remove("SPOTRUN_NVIDIA_SMI");
        if !self.bin.join("nvidia-smi").exists() {
            // Whatever the machine running the tests has, this host has no nvidia-smi.
            cmd.env("SPOTRUN_NVIDIA_SMI", self.bin.join("no-nvidia-smi"));
        }
        if let Some(i) = index {
            cmd.env("SPOTRUN_TORCH_INDEX", i);
        }
        cmd.output().unwrap()
    }

    /// The pip commands the fake python was given (without the `--upgrade pip`).
    fn pip_calls(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.venv.join("calls.log")).unwrap_or_default();
        log.lines().filter(|l| l.starts_with("-m pip") && !l.contains("--upgrade pip")).map(String::from).collect()
    }

    /// The last line of a successful set-up, which must be `LIBTORCH=<the venv's torch>`.
    #[track_caller]
    fn libtorch_line(&self, out: &Output) {
        assert!(out.status.success(), "setup failed: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert_eq!(stdout.lines().last(), Some(format!("LIBTORCH={}/torch", self.venv.display()).as_str()));
    }
}

#[test]
fn an_old_driver_without_an_index_gets_one_line_saying_what_to_set() {
    let h = host(Some("575.57.08"), None);
    let out = h.setup(None);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one line expected:\n{err}");
    assert!(err.contains("NVIDIA driver 575 is older than PyPI's torch 2.11.0 (CUDA 13.0) needs"), "{err}");
    assert!(err.contains("SPOTRUN_TORCH_INDEX") && err.contains("https://download.pytorch.org/whl/cu128"), "{err}");
    assert!(h.pip_calls().is_empty(), "nothing may be installed: {:?}", h.pip_calls());
    assert!(text(&out.stdout).is_empty());
}

#[test]
fn an_old_driver_with_an_index_installs_torch_from_it() {
    let h = host(Some("575.57.08"), None);
    let out = h.setup(Some("https://download.pytorch.org/whl/cu128"));
    h.libtorch_line(&out);
    let calls = h.pip_calls();
    assert_eq!(
        calls,
        [
            "-m pip install --quiet --disable-pip-version-check --index-url https://download.pytorch.org/whl/cu128 \
             torch==2.11.0",
            "-m pip install --quiet --disable-pip-version-check safetensors numpy",
        ]
    );
    // Idempotent: the CUDA 12.8 torch runs on driver 575, so a second set-up installs nothing.
    h.libtorch_line(&h.setup(Some("https://download.pytorch.org/whl/cu128")));
    h.libtorch_line(&h.setup(None));
    assert_eq!(h.pip_calls(), calls);
}

#[test]
fn a_new_driver_or_no_driver_gets_pypis_build() {
    for driver in [Some("580.65.06"), None] {
        let h = host(driver, None);
        h.libtorch_line(&h.setup(None));
        let calls = h.pip_calls();
        assert_eq!(calls, ["-m pip install --quiet --disable-pip-version-check torch==2.11.0 safetensors numpy"]);
        h.libtorch_line(&h.setup(None));
        assert_eq!(h.pip_calls(), calls, "{driver:?}: the second set-up must install nothing");
    }
}

#[test]
fn a_cuda13_venv_on_an_old_driver_says_so_and_is_replaced_only_from_an_index() {
    let h = host(Some("570.86.10"), Some("2.11.0+cu130 13.0"));
    let out = h.setup(None);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("has torch 2.11.0+cu130 (CUDA 13.0), which NVIDIA driver 570 cannot run"), "{err}");
    assert!(h.pip_calls().is_empty());
    // SPOTRUN_TORCH_INDEX=pypi keeps it as it is.
    h.libtorch_line(&h.setup(Some("pypi")));
    assert!(h.pip_calls().is_empty());
    // An index replaces it: uninstalled first (pip counts 2.11.0+cu130 as torch==2.11.0), then installed.
    h.libtorch_line(&h.setup(Some("https://download.pytorch.org/whl/cu128")));
    let calls = h.pip_calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls[0].ends_with("uninstall --quiet --disable-pip-version-check -y torch"), "{calls:?}");
    assert!(calls[1].contains("--index-url https://download.pytorch.org/whl/cu128 torch==2.11.0"), "{calls:?}");
    // The same CUDA 13 venv on a new driver is right as it is.
    let h = host(Some("580.65.06"), Some("2.11.0+cu130 13.0"));
    h.libtorch_line(&h.setup(None));
    assert!(h.pip_calls().is_empty());
}

/// What the libtorch this test binary links was built for, as the venv's own torch says (`torch.version.cuda`).
fn torch_cuda() -> String {
    let out = std::process::Command::new(python())
        .args(["-c", "import torch; print(torch.version.cuda or 'none')"])
        .output()
        .unwrap();
    text(&out.stdout).trim().to_string()
}

#[test]
fn devices_prints_the_driver_and_torch_cuda_versions() {
    let cuda = torch_cuda();
    let out = Run::new(["devices"]).env("SPOTRUN_TEST_CUDA_DRIVER", "1,12090").ok();
    let s = text(&out.stdout) + &text(&out.stderr);
    assert!(s.contains("driver: CUDA 12.9 (1 GPU(s))"), "{s}");
    assert!(s.contains(&format!("libtorch sees 0 CUDA device(s); built for CUDA {cuda}")), "{s}");
    assert!(s.contains("warning: train.device = \"auto\" but libtorch sees no GPU"), "{s}");
}

#[test]
fn auto_refuses_a_gpu_that_libtorch_cannot_use_and_cpu_is_still_the_cpu() {
    if tch::Cuda::device_count() > 0 {
        return; // libtorch sees a GPU here: the mismatch cannot be shown
    }
    let tmp = tempfile::tempdir().unwrap();
    let cuda = torch_cuda();
    let err = Run::train(&tmp.path().join("auto")).env("SPOTRUN_TEST_CUDA_DRIVER", "1,12090").bad();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("train.device = \"auto\" but libtorch sees no GPU while the NVIDIA driver sees 1"), "{err}");
    assert!(err.contains(&format!("supports CUDA up to 12.9; this libtorch is built for CUDA {cuda}")), "{err}");
    assert!(err.contains("set train.device = \"cpu\"") && err.contains("scripts/setup.sh"), "{err}");
    assert!(!tmp.path().join("auto").exists(), "nothing may be written before the device is settled");
    Run::train(&tmp.path().join("cpu")).env("SPOTRUN_TEST_CUDA_DRIVER", "1,12090").set("train.device=cpu").ok();
    // No driver GPU: auto is the CPU, as before.
    Run::train(&tmp.path().join("none")).env("SPOTRUN_TEST_CUDA_DRIVER", "0,12090").ok();
}
