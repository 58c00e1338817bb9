"""Issue 22's search methods measured through the real binary, for BENCHMARKS.md ("Adaptive search (issue 22)").

Run by scripts/bench_search.sh (which makes the venv and finds the binary). Two parts:

`search`: on sklearn's digits (exported here as safetensors) and on the built-in synthetic task, over one space
(optim.lr and optim.weight_decay log-uniform, model.hidden a list; constant LR; train.epochs = 27), per seed s:
random (count 27, seed s), ASHA (random configs, the same seed, eta 3, min_epochs 1: rungs 1, 3, 9, 27), spotrun's
TPE (count 27, seed s) and Optuna's TPESampler (defaults, constant_liar=True, seed s; 27 trials, n_jobs=2, each
trial one `spotrun train` of the same config); grid (3 x 3 x 3 = 27) once. spotrun sweeps run with --workers 2,
every run with train.threads = 1, unfused (so a config trains bit for bit as it does alone). Prints Markdown tables:
epochs spent (sum of done.json epochs) and best final val_accuracy.

`overhead`: what the study adds per decision with 8 concurrent workers on the local disk: the same sweep of 64
trivially short trials (tiny synthetic data) run by `spotrun sweep --workers 8` as plain random (no study), as
random under ASHA and as TPE (both through the study); per variant the wall time, and the study's records counted;
the study's cost per decision is (wall(study variant) - wall(random)) / records.
"""
import argparse
import concurrent.futures
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

EPOCHS = 27
COUNT = 27
LR = (1e-4, 1e-1)
WD = (1e-6, 1e-1)
WIDTHS = [64, 128, 256]


def log_centers(lo, hi, n=3):
    """The centres (in log space) of n equal log-width cells of [lo, hi]: the grid's values."""
    a, b = math.log10(lo), math.log10(hi)
    return [float(f"{10 ** (a + (b - a) * (i + 0.5) / n):.3g}") for i in range(n)]


DATASETS = {
    # name: (base config lines besides the shared ones, batch size)
    "digits": lambda out: [
        "[data]",
        'source = "safetensors"',
        f'path = "{out / "digits.safetensors"}"',
        "[train]",
        "batch_size = 64",
    ],
    "synthetic": lambda out: [
        "[data]",
        "synthetic = { train = 4000, val = 1000, features = 64 }",
        "[train]",
        "batch_size = 128",
    ],
}


def export_digits(out):
    import numpy as np
    from safetensors.numpy import save_file
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)  # pixel values are 0..16
    y = d.target.astype(np.int64)
    xt, xv, yt, yv = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
    save_file({"x_train": xt, "y_train": yt, "x_val": xv, "y_val": yv}, str(out / "digits.safetensors"))
    return len(xt), len(xv)


def write_base(out, ds):
    lines = DATASETS[ds](out) + [
        f"epochs = {EPOCHS}",
        "threads = 1",
        "tensorboard = false",
        "[model]",
        "hidden = [128]",
        "[schedule]",
        'kind = "constant"',
        "[checkpoint]",
        "every_epochs = 0",  # the last epoch (and under ASHA every rung) is still committed
    ]
    path = out / f"base-{ds}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_sweep(out, ds, name, method, seed=None, scheduler=None):
    lines = [
        f'name = "{name}"',
        f'method = "{method}"',
        f'base = "{out / f"base-{ds}.toml"}"',
        'metric = "val_accuracy"',
        'fuse = "off"',
        "retries = 0",
    ]
    if method != "grid":
        lines += [f"count = {COUNT}", f"seed = {seed}"]
    if scheduler:
        lines += [f'scheduler = "{scheduler}"', "eta = 3", "min_epochs = 1"]
    lines.append("[parameters]")
    if method == "grid":
        lines.append(f'"optim.lr" = {log_centers(*LR)}')
        lines.append(f'"optim.weight_decay" = {log_centers(*WD)}')
    else:
        lines.append(f'"optim.lr" = {{ log_uniform = [{LR[0]}, {LR[1]}] }}')
        lines.append(f'"optim.weight_decay" = {{ log_uniform = [{WD[0]}, {WD[1]}] }}')
    lines.append('"model.hidden" = [' + ", ".join(f"[{w}]" for w in WIDTHS) + "]")
    path = out / "sweeps" / f"{name}.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def run_sweep(binary, sweep, volume, workers=2, extra=()):
    t0 = time.monotonic()
    p = subprocess.run(
        [binary, "sweep", str(sweep), "--volume", str(volume), "--workers", str(workers), "--quiet", *extra],
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - t0
    if p.returncode != 0:
        sys.stderr.write(f"spotrun sweep {sweep} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}\n")
    return wall, p.returncode


def collect(volume, name):
    """Per run: id, epochs trained, outcome, final val_accuracy, and (when the study has one) its trial number."""
    root = volume / name
    trial_of = {}
    study = root / "study"
    n_records = 0
    if study.is_dir():
        seq = 0
        while (study / f"{seq:08}.json").exists():
            r = json.loads((study / f"{seq:08}.json").read_text())
            d = r["decision"]
            if d["kind"] == "created":
                trial_of[d["run"]] = d["trial"]
            seq += 1
        n_records = seq
    runs = []
    for done in sorted((root / "runs").glob("*/done.json")):
        d = json.loads(done.read_text())
        runs.append(
            {
                "run": d["run_id"],
                "index": d.get("index"),
                "trial": trial_of.get(d["run_id"]),
                "epochs": d["epochs"],
                "outcome": d.get("outcome"),
                "acc": (d.get("final") or {}).get("val_accuracy"),
            }
        )
    failed = len(list((root / "runs").glob("*/failed.json")))
    return runs, n_records, failed


def best_final(runs, upto=None):
    """Best val_accuracy of the runs that trained to train.epochs (of trials < upto, when given)."""
    accs = [
        r["acc"]
        for r in runs
        if r["epochs"] == EPOCHS and r["acc"] is not None and (upto is None or (r["trial"] if r["trial"] is not None else r["index"]) < upto)
    ]
    return max(accs) if accs else float("nan")


def optuna_search(binary, base, out_dir, seed, trials):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out_dir.mkdir(parents=True, exist_ok=True)

    def objective(trial):
        lr = trial.suggest_float("lr", *LR, log=True)
        wd = trial.suggest_float("wd", *WD, log=True)
        width = trial.suggest_categorical("width", WIDTHS)
        run_dir = out_dir / f"trial-{trial.number:03}"
        cmd = [
            binary, "train", str(base), "--quiet", "--run-dir", str(run_dir),
            "--set", f"optim.lr={lr!r}", "--set", f"optim.weight_decay={wd!r}", "--set", f"model.hidden=[{width}]",
        ]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
        last = json.loads((run_dir / "metrics.jsonl").read_text().strip().splitlines()[-1])
        assert last["epoch"] == EPOCHS, last
        return last["val_accuracy"]

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed, constant_liar=True))
    t0 = time.monotonic()
    study.optimize(objective, n_trials=trials, n_jobs=2)
    wall = time.monotonic() - t0
    runs = [
        {"trial": t.number, "index": t.number, "epochs": EPOCHS, "acc": t.value, "outcome": "done"}
        for t in study.trials
        if t.value is not None
    ]
    return runs, wall


def med(xs):
    xs = [x for x in xs if not (isinstance(x, float) and math.isnan(x))]
    return statistics.median(xs) if xs else float("nan")


def search(args):
    binary, out = args.bin, Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_train, n_val = export_digits(out)
    print(f"digits: {n_train} train / {n_val} val (stratified 75/25, random_state 0), x/16 as float32")
    print(f"grid values: optim.lr {log_centers(*LR)}, optim.weight_decay {log_centers(*WD)}, model.hidden {WIDTHS}")
    seeds = list(range(args.seeds))
    results = {}  # (ds, method, seed) -> dict
    for ds in args.datasets:
        base = write_base(out, ds)
        vol = out / "vol"
        sw = write_sweep(out, ds, f"{ds}-grid", "grid")
        wall, rc = run_sweep(binary, sw, vol)
        runs, recs, failed = collect(vol, f"{ds}-grid")
        results[(ds, "grid", None)] = dict(runs=runs, wall=wall, rc=rc, failed=failed)
        print(f"[{ds}] grid: {len(runs)} runs, {wall:.1f} s", flush=True)
        for s in seeds:
            for method, sched in (("random", None), ("random", "asha"), ("tpe", None)):
                label = "asha" if sched else method
                name = f"{ds}-{label}-s{s}"
                sw = write_sweep(out, ds, name, method, seed=s, scheduler=sched)
                wall, rc = run_sweep(binary, sw, vol)
                runs, recs, failed = collect(vol, name)
                results[(ds, label, s)] = dict(runs=runs, wall=wall, rc=rc, failed=failed, records=recs)
                print(f"[{ds}] {label} seed {s}: {len(runs)} runs, {recs} study records, {wall:.1f} s", flush=True)
            runs, wall = optuna_search(binary, base, out / "optuna" / ds / f"s{s}", s, COUNT)
            results[(ds, "optuna", s)] = dict(runs=runs, wall=wall, rc=0, failed=0)
            print(f"[{ds}] optuna seed {s}: {len(runs)} trials, {wall:.1f} s", flush=True)
    (out / "results.json").write_text(json.dumps({"|".join(map(str, k)): v for k, v in results.items()}, indent=1))
    report(results, args.datasets, seeds)


def report(results, datasets, seeds):
    print()
    print(f"### Epochs spent and best final val_accuracy (train.epochs = {EPOCHS}, {COUNT} configs per search)")
    print()
    print("| data | method | seed | epochs spent | best final val_accuracy | trials trained to the end | wall s |")
    print("|---|---|---|---|---|---|---|")
    for ds in datasets:
        r = results[(ds, "grid", None)]
        print(
            f"| {ds} | grid 3x3x3 | - | {sum(x['epochs'] for x in r['runs'])} | {best_final(r['runs']):.4f} | "
            f"{sum(x['epochs'] == EPOCHS for x in r['runs'])} | {r['wall']:.1f} |"
        )
        for label in ("random", "asha", "tpe", "optuna"):
            for s in seeds:
                r = results[(ds, label, s)]
                name = {"asha": "ASHA (random configs)", "tpe": "spotrun TPE", "optuna": "Optuna TPE (n_jobs 2)"}.get(label, label)
                print(
                    f"| {ds} | {name} | {s} | {sum(x['epochs'] for x in r['runs'])} | {best_final(r['runs']):.4f} | "
                    f"{sum(x['epochs'] == EPOCHS for x in r['runs'])} | {r['wall']:.1f} |"
                )
    print()
    print("### ASHA against random search, same configs (goal: best within 0.01 of random's, <= 35% of its epochs)")
    print()
    print("| data | seed | same configs | random: epochs, best | ASHA: epochs, best | epochs ratio | best gap | goal |")
    print("|---|---|---|---|---|---|---|---|")
    for ds in datasets:
        ratios, gaps, met = [], [], 0
        for s in seeds:
            ra, asha = results[(ds, "random", s)]["runs"], results[(ds, "asha", s)]["runs"]
            same = sorted(x["run"] for x in ra) == sorted(x["run"] for x in asha)
            e_r, e_a = sum(x["epochs"] for x in ra), sum(x["epochs"] for x in asha)
            b_r, b_a = best_final(ra), best_final(asha)
            ratio, gap = e_a / e_r, b_r - b_a
            ok = ratio <= 0.35 and gap <= 0.01
            met += ok
            ratios.append(ratio)
            gaps.append(gap)
            print(f"| {ds} | {s} | {'yes' if same else 'NO'} | {e_r}, {b_r:.4f} | {e_a}, {b_a:.4f} | {ratio:.1%} | {gap:+.4f} | {'met' if ok else 'missed'} |")
        print(f"| {ds} | median | | | | {med(ratios):.1%} | {med(gaps):+.4f} | met on {met}/{len(seeds)} seeds |")
    print()
    print("### spotrun TPE against Optuna TPE at equal trial counts (median over seeds of the best val_accuracy)")
    print()
    at = [n for n in (10, 20, COUNT) if n <= COUNT]
    print("| data | sampler | " + " | ".join(f"after {n} trials" for n in at) + " | per seed, all trials |")
    print("|---|---|" + "---|" * len(at) + "---|")
    for ds in datasets:
        for label, name in (("tpe", "spotrun TPE"), ("optuna", "Optuna TPE"), ("random", "random (spotrun)")):
            cells = [f"{med([best_final(results[(ds, label, s)]['runs'], upto=n) for s in seeds]):.4f}" for n in at]
            per = ", ".join(f"{best_final(results[(ds, label, s)]['runs']):.4f}" for s in seeds)
            print(f"| {ds} | {name} | " + " | ".join(cells) + f" | {per} |")


def overhead(args):
    binary, out = args.bin, Path(args.out) / "overhead"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    base = out / "base.toml"
    base.write_text(
        "[data]\nsynthetic = { train = 64, val = 32, features = 4 }\n[model]\nhidden = [4]\n"
        f"[train]\nepochs = {args.overhead_epochs}\nbatch_size = 64\nthreads = 1\ntensorboard = false\n"
        "[checkpoint]\nevery_epochs = 0\n"
    )
    variants = {
        "random (no study)": ("random", None),
        "random + ASHA (study)": ("random", "asha"),
        "TPE (study)": ("tpe", None),
    }
    rows = {k: [] for k in variants}
    for rep in range(args.reps):
        for label, (method, sched) in variants.items():
            name = f"ov-{method}-{sched or 'none'}-{rep}"
            lines = [f'name = "{name}"', f'method = "{method}"', f'base = "{base}"', 'metric = "val_accuracy"',
                     'fuse = "off"', "retries = 0", f"count = {args.overhead_count}", "seed = 0"]  # fmt: skip
            if sched:
                lines += [f'scheduler = "{sched}"', "eta = 3", "min_epochs = 1"]
            lines += ["[parameters]", '"optim.lr" = { log_uniform = [1e-4, 1e-1] }',
                      '"optim.weight_decay" = { log_uniform = [1e-6, 1e-1] }']  # fmt: skip
            sw = out / f"{name}.toml"
            sw.write_text("\n".join(lines) + "\n")
            wall, rc = run_sweep(binary, sw, out / "vol", workers=8)
            runs, recs, failed = collect(out / "vol", name)
            rows[label].append(dict(wall=wall, records=recs, runs=len(runs), epochs=sum(r["epochs"] for r in runs), rc=rc))
            print(f"rep {rep} {label}: {wall:.2f} s, {len(runs)} runs, {recs} records, rc {rc}", flush=True)
    print()
    print(
        f"### Study overhead: {args.overhead_count} trials of {args.overhead_epochs} epoch(s) on tiny data, "
        f"`spotrun sweep --workers 8`, local disk ({args.reps} repetitions, interleaved)"
    )
    print()
    print("| variant | wall s (each repetition) | median wall s | runs | epochs trained | study records | added per record vs random |")
    print("|---|---|---|---|---|---|---|")
    base_wall = med([r["wall"] for r in rows["random (no study)"]])
    for label, rs in rows.items():
        w = med([r["wall"] for r in rs])
        recs = rs[0]["records"]
        walls = ", ".join(f"{r['wall']:.2f}" for r in rs)
        added = f"{(w - base_wall) / recs * 1000:.1f} ms" if recs else "-"
        print(
            f"| {label} | {walls} | {w:.2f} | {rs[0]['runs']} | {rs[0]['epochs']} | "
            f"{recs} | {added} |"
        )
    print()
    print("ASHA's closing phase read from its journal (all 8 workers deciding stops; each stop also writes that")
    print("trial's weights and done.json): the journal advanced one record per")
    spans = [stop_phase(out / "vol" / f"ov-random-asha-{rep}" / "study") for rep in range(args.reps)]
    print(", ".join(f"{ms / max(n - 1, 1):.1f} ms ({n} records in {ms} ms)" for n, ms in spans) + " (per repetition).")
    n, wall = journal_floor(out)
    print()
    print(f"The journal's file-system protocol alone (Python, 8 processes racing for numbered records on this disk):")
    print(f"{n} records in {wall:.2f} s = {wall / n * 1000:.2f} ms per record of wall time with 8 writers.")
    print()


def stop_phase(study):
    """The study's closing phase, read from its own records: after the last trial reached a rung, every record is a
    `stopped` (sync + decide + temp file, fsync, link) or a `finished`, written by all workers at once, each worker
    also writing the stopped trial's weights and done.json in between. Returns (records, span ms) of that tail."""
    recs, seq = [], 0
    while (study / f"{seq:08}.json").exists():
        recs.append(json.loads((study / f"{seq:08}.json").read_text()))
        seq += 1
    k = max(i for i, r in enumerate(recs) if r["decision"]["kind"] not in ("stopped", "finished"))
    tail = recs[k + 1 :]
    return len(tail), (tail[-1]["unix_ms"] - tail[0]["unix_ms"]) if tail else 0


def _journal_writer(args):
    """The journal's file-system protocol alone (what spotrun's journal.rs does per record, in Python): read
    records by name from the last one seen, then write the next under a temporary name, fsync, link(2) to its
    number; a lost race reads on and tries the next number. Returns how many records this writer wrote."""
    directory, writes, me = args
    seen, written = 0, 0
    while written < writes:
        while True:  # catch up, by name
            try:
                json.loads((directory / f"{seen:08}.json").read_text())
                seen += 1
            except FileNotFoundError:
                break
        body = json.dumps({"seq": seen, "nonce": f"{me}-{written}", "decision": {"kind": "stopped", "trial": written, "epoch": 1}})
        tmp = directory / f".{seen:08}.tmp-{me}-{written}"
        tmp.write_text(body)
        fd = os.open(tmp, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        try:
            os.link(tmp, directory / f"{seen:08}.json")
            written += 1
        except FileExistsError:
            pass
        os.unlink(tmp)
    return written


def journal_floor(out, writers=8, writes=100):
    directory = out / "journal-floor"
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    import multiprocessing

    with multiprocessing.Pool(writers) as pool:
        t0 = time.monotonic()
        n = sum(pool.map(_journal_writer, [(directory, writes, i) for i in range(writers)]))
        wall = time.monotonic() - t0
    return n, wall


POPULATION = 8
INTERVAL = 3


def write_pbt(out, ds, name, seed):
    """PBT over lr and weight decay (log-uniform; the width stays the base's 128: PBT cannot change it mid-run)."""
    lines = [
        f'name = "{name}"',
        'method = "random"',
        f'base = "{out / f"base-{ds}.toml"}"',
        'metric = "val_accuracy"',
        "retries = 0",
        f"count = {POPULATION}",
        f"seed = {seed}",
        'scheduler = "pbt"',
        f"interval = {INTERVAL}",
        "[parameters]",
        f'"optim.lr" = {{ log_uniform = [{LR[0]}, {LR[1]}] }}',
        f'"optim.weight_decay" = {{ log_uniform = [{WD[0]}, {WD[1]}] }}',
    ]
    path = out / "sweeps" / f"{name}.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def pbt(args):
    """PBT (population 8, interval 3) next to random search (27 configs) in the same invocation, per seed."""
    binary, out = args.bin, Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    export_digits(out)
    rows = []
    for ds in args.datasets:
        write_base(out, ds)
        vol = out / "vol"
        for s in range(args.seeds):
            r_name, p_name = f"{ds}-random-s{s}", f"{ds}-pbt-s{s}"
            run_sweep(binary, write_sweep(out, ds, r_name, "random", seed=s), vol)
            wall, rc = run_sweep(binary, write_pbt(out, ds, p_name, s), vol)
            r_runs, _, _ = collect(vol, r_name)
            p_runs, recs, _ = collect(vol, p_name)
            exploits = sum(
                1 for f in (vol / p_name / "study").glob("*.json") if '"kind":"exploited"' in f.read_text()
            )
            rows.append((ds, s, best_final(r_runs), len(r_runs) * EPOCHS, best_final(p_runs), POPULATION * EPOCHS, exploits, rc))
            print(f"[{ds}] seed {s}: random {rows[-1][2]:.4f}, pbt {rows[-1][4]:.4f} ({exploits} exploits, rc {rc})", flush=True)
    print()
    print(f"| data | seed | random best ({COUNT} configs) | random epochs | PBT best (population {POPULATION}, interval {INTERVAL}) | PBT epochs | exploits |")
    print("|---|---|---|---|---|---|---|")
    for ds, s, rb, re_, pb, pe, ex, _ in rows:
        print(f"| {ds} | {s} | {rb:.4f} | {re_} | {pb:.4f} | {pe} | {ex} |")
    for ds in args.datasets:
        r = [x for x in rows if x[0] == ds]
        print(f"| {ds} | median | {med([x[2] for x in r]):.4f} | {r[0][3]} | {med([x[4] for x in r]):.4f} | {r[0][5]} | {med([x[6] for x in r])} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=["search", "overhead", "pbt"])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--datasets", default="digits,synthetic")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--overhead-count", type=int, default=64)
    ap.add_argument("--overhead-epochs", type=int, default=3)
    args = ap.parse_args()
    args.datasets = args.datasets.split(",")
    {"search": search, "overhead": overhead, "pbt": pbt}[args.part](args)


if __name__ == "__main__":
    main()
