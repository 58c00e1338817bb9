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

A scheduled sweep (`scheduler = "asha"`, `method = "tpe"`, ...) runs as one `run_study` call: one container running
`spotrun worker SWEEP --next`, the only writer of the study's journal (Modal Volumes have no atomic create), training
the trials one after another.

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


def study_commit_points(sweep_dir: pathlib.Path) -> set[str]:
    """A study's commit points: every run's checkpoint manifests, its done.json files, and the journal's records."""
    return (
        {str(p) for p in sweep_dir.glob("runs/*/checkpoints/*/manifest.json")}
        | {str(p) for p in sweep_dir.glob("runs/*/done.json")}
        | {str(p) for p in sweep_dir.glob("study/*.json")}
    )


def commit_on_checkpoints(run_dir: pathlib.Path, stop: threading.Event, every: float = 2.0, points=None) -> None:
    """Commits the volume each time a new checkpoint manifest (the commit point) appears (or what `points` lists)."""
    points = points or committed_checkpoints
    seen = points(run_dir)
    while not stop.wait(every):
        now = points(run_dir)
        if now - seen:
            volume.commit()
        seen = now


def run_worker(sweep_toml: str, select: list, watch: list) -> int:
    """Runs `spotrun worker SWEEP SELECT --volume /vol` in this container, committing the volume at each new commit
    point under the `watch` (directory, points function) pairs and when it ends; forwards SIGINT/SIGTERM; waits
    and goes again on "held elsewhere" rather than spend one of Modal's retries. Returns the worker's exit code."""
    volume.reload()
    sweep = pathlib.Path("/tmp/sweep.toml")
    sweep.write_text(sweep_toml)
    env = dict(os.environ, LD_LIBRARY_PATH=torch_lib_dir())
    cmd = ["spotrun", "worker", str(sweep), *select, "--volume", VOLUME_PATH]
    stop = threading.Event()
    watchers = [threading.Thread(target=commit_on_checkpoints, args=(d, stop, 2.0, points)) for d, points in watch]
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
    return rc


@app.function(
    gpu=GPU,
    volumes={VOLUME_PATH: volume},
    timeout=TIMEOUT_SECONDS,
    retries=modal.Retries(max_retries=3, backoff_coefficient=2.0, initial_delay=10.0),
)
def train_group(sweep_toml: str, group: int, run_rels: list) -> list:
    """Trains group `group` of the sweep (a fused group of runs, or one run), resuming or skipping each run."""
    rc = run_worker(sweep_toml, ["--group", str(group)], [(pathlib.Path(VOLUME_PATH) / rel, None) for rel in run_rels])
    if rc in RETRY_EXIT_CODES:
        raise RuntimeError(f"group {group}: preempted (worker exit {rc}); Modal restarts this input and it resumes")
    if rc != 0:
        raise RuntimeError(f"group {group}: worker failed with exit code {rc}; see the Modal logs")
    out = []
    for rel in run_rels:
        done = pathlib.Path(VOLUME_PATH) / rel / "done.json"
        out.append(json.loads(done.read_text()) if done.exists() else {"run": rel})
    return out


@app.function(
    gpu=GPU,
    volumes={VOLUME_PATH: volume},
    timeout=TIMEOUT_SECONDS,
    retries=modal.Retries(max_retries=3, backoff_coefficient=2.0, initial_delay=10.0),
)
def run_study(sweep_toml: str, name: str) -> int:
    """A scheduled sweep (ASHA, Hyperband, TPE): one generic worker, `spotrun worker SWEEP --next`, in one container.
    Modal Volumes have no atomic create, so this one container is the study's coordinator, the only writer of its
    journal; it trains the trials one after another, each resumed from its checkpoint after a preemption."""
    sweep_dir = pathlib.Path(VOLUME_PATH) / name
    rc = run_worker(sweep_toml, ["--next"], [(sweep_dir, study_commit_points)])
    if rc in RETRY_EXIT_CODES:
        raise RuntimeError(f"study {name}: preempted (worker exit {rc}); Modal restarts it and the study continues")
    if rc != 0:
        raise RuntimeError(f"study {name}: worker failed with exit code {rc}; see the Modal logs")
    return rc


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
    if plan.get("scheduler"):
        print(f"spotrun sweep {plan['name']}: a {plan['scheduler']} study on Modal ({GPU}), one coordinating container")
        run_study.remote(plan["sweep_toml"], plan["name"])
        print(summarize.remote(plan["name"]))
        return
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
