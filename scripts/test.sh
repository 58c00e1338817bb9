#!/usr/bin/env bash
# From a fresh clone: install the pinned libtorch if missing, then run the whole test suite (unit, integration
# through the real binary, Python interop), check formatting, and compile the benches so they cannot rot.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "${SPOTRUN_ROOT}"
if cargo fmt --version >/dev/null 2>&1; then
    cargo fmt --all -- --check
fi
for s in scripts/*.sh .ci/run; do bash -n "$s"; done
"${SPOTRUN_PYTHON}" -m py_compile scripts/*.py
cargo test --release --locked
cargo bench --locked --no-run
# The GPU check script, end to end on the CPU with tiny sizes, so it cannot rot before a GPU is lent.
OUT="$(mktemp -d)" scripts/gpu-check.sh --dry
echo "scripts/test.sh: all tests passed"
