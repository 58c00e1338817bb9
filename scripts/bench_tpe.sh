#!/usr/bin/env bash
# spotrun's TPE sampler against Optuna's (the reference whose defaults it ports) and random search, on synthetic
# objectives, for BENCHMARKS.md ("TPE vs Optuna"). Not part of scripts/test.sh.
# Usage: scripts/bench_tpe.sh [SEEDS] [TRIALS]   (defaults 40 and 50; makes the Optuna venv once, builds the example)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
seeds=${1:-40}
trials=${2:-50}
VENV="${SPOTRUN_OPTUNA_VENV:-${HOME}/.cache/spotrun/bench-optuna}"
if ! "${VENV}/bin/python" -c "import optuna, sys; sys.exit(optuna.__version__ != '5.0.0')" 2>/dev/null; then
    python3 -m venv "${VENV}"
    "${VENV}/bin/pip" install --quiet --disable-pip-version-check "optuna==5.0.0" "numpy==2.4.6"
fi
cargo build --release --locked -q --example tpe_objective
"${VENV}/bin/python" scripts/bench_tpe.py target/release/examples/tpe_objective "${seeds}" "${trials}"
