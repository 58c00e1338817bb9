#!/usr/bin/env bash
# Issue 22's search methods through the real binary, for BENCHMARKS.md ("Adaptive search (issue 22)"):
#  search:   random, grid, spotrun's TPE, ASHA (random configs, same seed) and Optuna's TPESampler (defaults,
#            constant_liar=True, each trial one `spotrun train`) on sklearn's digits and the built-in task: epochs
#            spent and best final val_accuracy, over SEEDS seeds (27 configs, 27 epochs, --workers 2, 1 thread each);
#  overhead: what the study adds per decision with 8 concurrent workers on the local disk;
#  pbt:      PBT (population 8, interval 3, lr and weight decay) next to random search, per seed (PBT_SEEDS, 3).
# Not part of scripts/test.sh (about 80 s per seed on the 2-core VM, plus ~1 min for the overhead part).
# Usage: scripts/bench_search.sh [SEEDS] [OUT]   (defaults 8 and a temporary directory)
#   SPOTRUN_BIN=/path/to/spotrun to use a built binary (else builds target/release/spotrun);
#   LIBTORCH=... the torch directory whose lib/ the binary loads (else scripts/common.sh finds it).
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-8}
out=${2:-$(mktemp -d)}
if [ -z "${SPOTRUN_BIN:-}" ]; then
    source scripts/common.sh
    cargo build --release --locked -q
    SPOTRUN_BIN=$PWD/target/release/spotrun
fi
LIBTORCH=${LIBTORCH:-${HOME}/.cache/spotrun/torch-2.11.0/lib/python3.11/site-packages/torch}
export LD_LIBRARY_PATH="${LIBTORCH}/lib${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
VENV="${SPOTRUN_SEARCH_VENV:-${HOME}/.cache/spotrun/bench-search-1}"
if ! "${VENV}/bin/python" -c "import optuna, sklearn, safetensors, sys; sys.exit(optuna.__version__ != '5.0.0' or sklearn.__version__ != '1.9.1')" 2>/dev/null; then
    python3 -m venv "${VENV}"
    "${VENV}/bin/pip" install --quiet --disable-pip-version-check "optuna==5.0.0" "numpy==2.4.6" \
        "scikit-learn==1.9.1" "safetensors==0.8.0"
fi
echo "machine: $(nproc) cores, $(uname -m), $(date -u +%Y-%m-%d); binary: ${SPOTRUN_BIN} ($("${SPOTRUN_BIN}" --version))"
echo "python: $("${VENV}/bin/python" -c 'import optuna, sklearn, numpy; print("optuna", optuna.__version__, "scikit-learn", sklearn.__version__, "numpy", numpy.__version__)')"
"${VENV}/bin/python" scripts/bench_search.py search --bin "${SPOTRUN_BIN}" --out "${out}" --seeds "${seeds}"
"${VENV}/bin/python" scripts/bench_search.py overhead --bin "${SPOTRUN_BIN}" --out "${out}" --reps 5
"${VENV}/bin/python" scripts/bench_search.py pbt --bin "${SPOTRUN_BIN}" --out "${out}/pbt" --seeds "${PBT_SEEDS:-3}"
