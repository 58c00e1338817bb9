"""spotrun on Modal: one GPU function call per worker task of a sweep (a fused group of runs, or one run),
`.starmap`ped over the groups `spotrun sweep --dry-run --json` lists, with a Modal Volume as the sweep volume.

    scripts/quickstart.sh                                   # builds target/release/spotrun (shipped in the image)
    modal run scripts/modal_app.py --sweep configs/sweeps/lr_width.toml
    SPOTRUN_MODAL_GPU=A100-80GB modal run scripts/modal_app.py --sweep my_sweep.toml
    modal volume get spotrun-sweeps lr-width/results.csv .

Each call runs `spotrun worker SWEEP --group g --volume /vol`, which resumes each run of the group from its newest
checkpoint and skips it when it is done. Modal sends SIGINT on preemption and restarts the call on the same input; the worker
checkpoints and exits 130, and the restarted call resumes. Failures are retried by `modal.Retries`.

The volume is committed whenever a new checkpoint becomes visible (its manifest.json, written last, is renamed
into place: the checkpoint's commit point), and once more when the call ends; never per file write.

Limits (see README "Scaling out"): Modal Volumes have no hard links and no cross-container atomic create, so the
one-worker-per-run guarantee comes from Modal itself (one container per input at a time), not from spotrun's
lease files; run one `modal run` per sweep at a time. With `fuse = "off"` in the sweep file every group is one
run.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import modal

APP_NAME = "spotrun"
VOLUME_NAME = os.environ.get("SPOTRUN_MODAL_VOLUME", "spotrun-sweeps")
VOLUME_PATH = "/vol"
TORCH_VERSION = "2.11.0"
GPU = os.environ.get("SPOTRUN_MODAL_GPU", "H100")
TIMEOUT_SECONDS = 24 * 3600
REPO = pathlib.Path(__file__).resolve().parent.parent
BINARY = REPO / "target" / "release" / "spotrun"
# spotrun worker exit codes that mean "run me again": preempted (128 + HUP/INT/USR1/USR2/TERM), or held elsewhere.
RETRY_EXIT_CODES = {75, 129, 130, 138, 140, 143}

image = (
    # debian_slim is bookworm, the same glibc the binary is built against here.
    modal.Image.debian_slim(python_version="3.12")
    .pip_install(f"torch=={TORCH_VERSION}")
    .env({"SPOTRUN_VOLUME": VOLUME_PATH})
)
if BINARY.exists():
    image = image.add_local_file(BINARY, "/usr/local/bin/spotrun", copy=True)

app = modal.App(APP_NAME, image=image)
volume = modal.Volume.from_name(VOLUME_NAME, create_if_missing=True)


def torch_lib_dir() -> str:
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("torch is not installed in the image")
    return str(pathlib.Path(list(spec.submodule_search_locations)[0]) / "lib")


def committed_checkpoints(run_dir: pathlib.Path) -> set[str]:
    return {str(p) for p in run_dir.glob("checkpoints/*/manifest.json")}


def commit_on_checkpoints(run_dir: pathlib.Path, stop: threading.Event, every: float = 2.0) -> None:
    """Commits the volume each time a new checkpoint manifest (the commit point) appears."""
    seen = committed_checkpoints(run_dir)
    while not stop.wait(every):
        now = committed_checkpoints(run_dir)
        if now - seen:
            volume.commit()
        seen = now


@app.function(
    gpu=GPU,
    volumes={VOLUME_PATH: volume},
    timeout=TIMEOUT_SECONDS,
    retries=modal.Retries(max_retries=3, backoff_coefficient=2.0, initial_delay=10.0),
)
def train_group(sweep_toml: str, group: int, run_rels: list) -> list:
    """Trains group `group` of the sweep (a fused group of runs, or one run), resuming or skipping each run."""
    volume.reload()
    sweep = pathlib.Path("/tmp/sweep.toml")
    sweep.write_text(sweep_toml)
    env = dict(os.environ, LD_LIBRARY_PATH=torch_lib_dir())
    cmd = ["spotrun", "worker", str(sweep), "--group", str(group), "--volume", VOLUME_PATH]
    stop = threading.Event()
    watchers = [
        threading.Thread(target=commit_on_checkpoints, args=(pathlib.Path(VOLUME_PATH) / rel, stop)) for rel in run_rels
    ]
    for w in watchers:
        w.start()
    interrupted = threading.Event()
    proc = None

    def forward(sig, _frame):
        interrupted.set()
        if proc is not None:
            proc.send_signal(sig)

    try:
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, forward)
    except ValueError:  # not the main thread: the KeyboardInterrupt handling below still forwards SIGINT
        pass
    try:
        for attempt in range(60):
            proc = subprocess.Popen(cmd, env=env)
            try:
                rc = proc.wait()
            except KeyboardInterrupt:
                interrupted.set()
                proc.send_signal(signal.SIGINT)
                rc = proc.wait()
            # Held by another worker (75), or signalled by someone else while this container lives on: wait and
            # go again here rather than spend one of Modal's retries.
            if rc in RETRY_EXIT_CODES and not interrupted.is_set():
                volume.commit()
                time.sleep(min(60, 5 * (attempt + 1)))
                volume.reload()
                continue
            break
    finally:
        stop.set()
        for w in watchers:
            w.join()
        volume.commit()
    if rc in RETRY_EXIT_CODES:
        raise RuntimeError(f"group {group}: preempted (worker exit {rc}); Modal restarts this input and it resumes")
    if rc != 0:
        raise RuntimeError(f"group {group}: worker failed with exit code {rc}; see the Modal logs")
    out = []
    for rel in run_rels:
        done = pathlib.Path(VOLUME_PATH) / rel / "done.json"
        out.append(json.loads(done.read_text()) if done.exists() else {"run": rel})
    return out


@app.function(volumes={VOLUME_PATH: volume}, timeout=600)
def summarize(name: str) -> str:
    """`spotrun status` on the volume (rewrites results.csv/jsonl there)."""
    volume.reload()
    env = dict(os.environ, LD_LIBRARY_PATH=torch_lib_dir())
    out = subprocess.run(["spotrun", "status", f"{VOLUME_PATH}/{name}"], env=env, capture_output=True, text=True)
    volume.commit()
    return out.stdout + out.stderr


@app.local_entrypoint()
def main(sweep: str) -> None:
    if not BINARY.exists():
        sys.exit(f"{BINARY} is missing: run scripts/quickstart.sh (or cargo build --release) first")
    plan = json.loads(
        subprocess.run([str(BINARY), "sweep", sweep, "--dry-run", "--json"], check=True, capture_output=True, text=True).stdout
    )
    runs, groups = plan["runs"], plan["groups"]
    print(f"spotrun sweep {plan['name']}: {len(runs)} runs in {len(groups)} worker tasks on Modal ({GPU}), volume {VOLUME_NAME}")
    rel = lambda i: f"{plan['name']}/runs/{runs[i]['id']}"
    args = [(plan["sweep_toml"], g, [rel(i) for i in group["runs"]]) for g, group in enumerate(groups)]
    t0 = time.time()
    failed = 0
    for group, results in zip(groups, train_group.starmap(args, return_exceptions=True)):
        for k, i in enumerate(group["runs"]):
            r = runs[i]
            if isinstance(results, BaseException):
                failed += 1
                print(f"#{r['index']} {r['id'][:8]} FAILED: {results}")
                continue
            result = results[k]
            last = result.get("final") or {}
            print(f"#{r['index']} {r['id'][:8]} {result.get('outcome', 'done')} val_accuracy {last.get('val_accuracy')}")
    print(f"{len(runs) - failed}/{len(runs)} runs done in {time.time() - t0:.0f}s")
    print(summarize.remote(plan["name"]))
