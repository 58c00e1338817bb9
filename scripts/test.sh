#!/usr/bin/env bash
# From a fresh clone: install the pinned libtorch if missing, then run the whole test suite (unit, integration
# through the real binary, Python interop, a real Slurm cluster, the Modal app), check formatting, and compile the
# benches so they cannot rot. SPOTRUN_SKIP_SLURM=1 skips installing Slurm (then its tests say SKIPPED).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "${SPOTRUN_ROOT}"
if cargo fmt --version >/dev/null 2>&1; then
    cargo fmt --all -- --check
fi
for s in scripts/*.sh .ci/run; do bash -n "$s"; done
# Lints and docs are part of the build: warnings fail it (same release profile, so nothing is compiled twice).
cargo clippy --release --locked --all-targets --features test-hooks -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --release --locked --no-deps --features test-hooks
"${SPOTRUN_PYTHON}" -m py_compile scripts/*.py tests/*.py
# Engines: a real single-node Slurm (Debian packages, installed once; the tests start and stop their own cluster)
# and the `modal` package in its own pinned venv (the Modal app is imported, never deployed).
if [ "${SPOTRUN_SKIP_SLURM:-0}" != 1 ]; then
    scripts/slurm-local.sh install
    export SPOTRUN_REQUIRE_SLURM=1
fi
MODAL_VENV="${SPOTRUN_MODAL_VENV:-${HOME}/.cache/spotrun/modal-1.6.4}"
if ! "${MODAL_VENV}/bin/python" -c "import modal" 2>/dev/null; then
    python3 -m venv "${MODAL_VENV}"
    "${MODAL_VENV}/bin/pip" install --quiet --disable-pip-version-check "modal==1.6.4"
fi
export SPOTRUN_MODAL_PYTHON="${MODAL_VENV}/bin/python" SPOTRUN_REQUIRE_MODAL=1
# tensorboard's own reader, to read back the event files spotrun writes (pinned, in its own venv, installed once).
TB_VENV="${SPOTRUN_TB_VENV:-${HOME}/.cache/spotrun/tensorboard-2.21.0}"
if ! "${TB_VENV}/bin/python" -c "import tensorboard.backend.event_processing.event_accumulator" 2>/dev/null; then
    python3 -m venv "${TB_VENV}"
    "${TB_VENV}/bin/pip" install --quiet --disable-pip-version-check "tensorboard==2.21.0"
fi
export SPOTRUN_TB_PYTHON="${TB_VENV}/bin/python"
# numpy, pyarrow, Pillow and tokenizers: the data-source tests make their inputs (and a real tokenizer.json) with the
# libraries a user's data comes from (pinned, in their own venv, installed once).
DATA_VENV="${SPOTRUN_DATA_VENV:-${HOME}/.cache/spotrun/testdata-1}"
if ! "${DATA_VENV}/bin/python" -c "import numpy, pyarrow, PIL, tokenizers" 2>/dev/null; then
    python3 -m venv "${DATA_VENV}"
    "${DATA_VENV}/bin/pip" install --quiet --disable-pip-version-check \
        "numpy==2.4.6" "pyarrow==26.0.1" "pillow==13.0.0" "tokenizers==0.23.3"
fi
export SPOTRUN_DATA_PYTHON="${DATA_VENV}/bin/python"
cargo test --release --locked --features test-hooks
if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
    echo "scripts/test.sh: a Slurm daemon is still running after the tests" >&2
    exit 1
fi
cargo bench --locked --no-run --features test-hooks
"${SPOTRUN_PYTHON}" tests/eager_loader_check.py
# The binary a user builds (no test-hooks feature) must ignore the SPOTRUN_TEST_* variables.
cargo build --release --locked
hooks_out="$(SPOTRUN_TEST_STARTUP_DELAY_MS=1 target/release/spotrun train --quiet --run-dir "$(mktemp -d)/run" \
    --set data.synthetic.train=200 --set data.synthetic.val=50 --set model.hidden=[8] --set train.epochs=1 2>&1)"
if grep -q "test: start-up delay" <<<"${hooks_out}"; then
    echo "scripts/test.sh: the release binary reads a test-only hook" >&2
    exit 1
fi
# The GPU check script, end to end on the CPU with tiny sizes, so it cannot rot before a GPU is lent.
OUT="$(mktemp -d)" scripts/gpu-check.sh --dry
echo "scripts/test.sh: all tests passed"
