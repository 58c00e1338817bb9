"""Compares the runs of one sweep trained on two volumes (e.g. fused and --no-fuse): for every run, the largest
relative weight difference of model.safetensors (|a - b| / max(|b|, 1e-3)) and the differences of the final
val_loss and val_accuracy. Prints one line per run and a summary line with the maxima.

Usage: compare_runs.py VOLUME_A VOLUME_B SWEEP_NAME
"""
import json, pathlib, sys

import torch
from safetensors.torch import load_file

a, b, name = (pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3])
plan = json.loads((a / name / "sweep.json").read_text())
worst = {"weights": 0.0, "val_loss": 0.0, "val_accuracy": 0.0}
for r in plan["runs"]:
    da, db = a / name / "runs" / r["id"], b / name / "runs" / r["id"]
    wa, wb = load_file(str(da / "model.safetensors")), load_file(str(db / "model.safetensors"))
    assert wa.keys() == wb.keys(), r["id"]
    rel = max(((wa[k] - wb[k]).abs() / wb[k].abs().clamp_min(1e-3)).max().item() for k in wa)
    la = json.loads((da / "metrics.jsonl").read_text().splitlines()[-1])
    lb = json.loads((db / "metrics.jsonl").read_text().splitlines()[-1])
    dl = abs(la["val_loss"] - lb["val_loss"])
    dacc = abs((la.get("val_accuracy") or 0) - (lb.get("val_accuracy") or 0))
    worst = {"weights": max(worst["weights"], rel), "val_loss": max(worst["val_loss"], dl), "val_accuracy": max(worst["val_accuracy"], dacc)}
    print(f"#{r['index']:>3} {r['id'][:8]} epoch {la['epoch']}: max rel weight diff {rel:.2e}, |d val_loss| {dl:.2e}, |d val_accuracy| {dacc:.4f}")
print(f"max over {len(plan['runs'])} runs: weights {worst['weights']:.2e}, val_loss {worst['val_loss']:.2e}, val_accuracy {worst['val_accuracy']:.4f}")
