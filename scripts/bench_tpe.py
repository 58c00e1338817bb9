"""spotrun's TPE against Optuna's TPESampler (defaults, constant_liar=True) and random search, for BENCHMARKS.md.

Run by scripts/bench_tpe.sh (which makes the venv and builds the example). The objectives are the ones
examples/tpe_objective.rs defines (its header says what they are); both samplers minimize the same function, the
noisy one with the same noise level (each with its own noise stream). Prints a Markdown table: the median over seeds
of the best true value so far after 10/20/30/50 trials.
"""
import json
import math
import statistics
import subprocess
import sys

import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)
WIDTH = {64: 1.0, 128: 0.3, 256: 0.0, 512: 0.2}


def truth(objective, p):
    d = lambda x, at: (math.log10(x) - at) ** 2  # noqa: E731
    if objective == "mixed":
        return d(p["lr"], -3) + 25 * (p["dropout"] - 0.1) ** 2 + 0.1 * (p["layers"] - 5) ** 2
    return d(p["lr"], -3) + 0.5 * d(p["wd"], -4) + WIDTH[p["width"]]


def suggest(objective, trial):
    p = {"lr": trial.suggest_float("lr", 1e-5, 1e-1, log=True)}
    if objective == "mixed":
        p["dropout"] = trial.suggest_float("dropout", 0.0, 0.5)
        p["layers"] = trial.suggest_int("layers", 1, 8)
    else:
        p["wd"] = trial.suggest_float("wd", 1e-6, 1e-1, log=True)
        p["width"] = trial.suggest_categorical("width", [64, 128, 256, 512])
    return p


def optuna_run(objective, seed, trials, sampler):
    import random

    noise = random.Random(seed)
    study = optuna.create_study(sampler=sampler)
    best, best_observed, best_true = [], math.inf, math.inf
    for _ in range(trials):
        trial = study.ask()
        f = truth(objective, suggest(objective, trial))
        observed = f + 0.3 * noise.gauss(0, 1) if objective == "noisy" else f
        study.tell(trial, observed)
        if observed < best_observed:
            best_observed, best_true = observed, f
        best.append(best_true)
    return best


def spotrun_run(example, objective, seed, trials):
    out = subprocess.run([example, objective, str(seed), str(trials)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["best"]


def main():
    example, seeds, trials = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    at = [n for n in (10, 20, 30, 50) if n <= trials]
    print(f"optuna {optuna.__version__}; median over {seeds} seeds of the best true value after N trials (lower is better)")
    print()
    print("| objective | sampler | " + " | ".join(f"{n} trials" for n in at) + " |")
    print("|---|---|" + "---|" * len(at))
    for objective in ("bowl", "noisy", "mixed"):
        runs = {
            "Optuna TPE": [optuna_run(objective, s, trials, optuna.samplers.TPESampler(seed=s, constant_liar=True)) for s in range(seeds)],
            "spotrun TPE": [spotrun_run(example, objective, s, trials) for s in range(seeds)],
            "random (Optuna)": [optuna_run(objective, s, trials, optuna.samplers.RandomSampler(seed=s)) for s in range(seeds)],
        }
        for name, bests in runs.items():
            cells = [f"{statistics.median(b[n - 1] for b in bests):.3f}" for n in at]
            print(f"| {objective} | {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
