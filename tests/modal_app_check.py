"""Imports scripts/modal_app.py with the real `modal` package (no network, no token) and checks what it defines."""

import importlib.util
import sys

import modal

path = sys.argv[1]
spec = importlib.util.spec_from_file_location("modal_app", path)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)

app = mod.app
assert isinstance(app, modal.App), type(app)
assert app.name == "spotrun", app.name
functions = app.registered_functions
assert {"train_group", "run_study", "summarize"} <= set(functions), sorted(functions)
assert isinstance(mod.train_group, modal.Function), type(mod.train_group)
assert "main" in app.registered_entrypoints, sorted(app.registered_entrypoints)
assert isinstance(mod.volume, modal.Volume), type(mod.volume)
assert mod.VOLUME_PATH == "/vol"
assert mod.RETRY_EXIT_CODES == {75, 129, 130, 138, 140, 143}
# the commit watcher reacts to a new manifest.json only
import pathlib, tempfile, threading  # noqa: E401

commits = []
mod.volume = type("V", (), {"commit": lambda self: commits.append(1)})()
with tempfile.TemporaryDirectory() as d:
    run = pathlib.Path(d)
    (run / "checkpoints" / "ckpt-0000000001").mkdir(parents=True)
    (run / "checkpoints" / "ckpt-0000000001" / "model.safetensors").write_bytes(b"x")
    stop = threading.Event()
    t = threading.Thread(target=mod.commit_on_checkpoints, args=(run, stop, 0.05))
    t.start()
    import time

    time.sleep(0.2)
    assert commits == [], "no commit before a manifest exists"
    (run / "checkpoints" / "ckpt-0000000001" / "manifest.json").write_text("{}")
    time.sleep(0.3)
    stop.set()
    t.join()
    assert commits == [1], commits
# a study's watcher commits on a new journal record (and on checkpoint manifests and done.json of any run)
with tempfile.TemporaryDirectory() as d:
    sweep = pathlib.Path(d)
    (sweep / "study").mkdir()
    before = mod.study_commit_points(sweep)
    (sweep / "study" / "00000000.json").write_text("{}")
    (sweep / "runs" / "r" / "checkpoints" / "ckpt-1").mkdir(parents=True)
    (sweep / "runs" / "r" / "checkpoints" / "ckpt-1" / "manifest.json").write_text("{}")
    after = mod.study_commit_points(sweep)
    assert len(after - before) == 2, after - before
print(f"ok: app {app.name}, functions {sorted(functions)}, entrypoint main, volume {mod.VOLUME_NAME}")
