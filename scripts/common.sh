# Sourced by the other scripts: runs the idempotent set-up and exports what cargo needs to find libtorch.
# shellcheck shell=bash
SPOTRUN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LIBTORCH="$("${SPOTRUN_ROOT}/scripts/setup.sh" | sed -n 's/^LIBTORCH=//p' | tail -n 1)"
if [ -z "${LIBTORCH}" ]; then
    echo "spotrun: set-up did not report a libtorch directory" >&2
    exit 1
fi
export LIBTORCH
SPOTRUN_PYTHON="$(dirname "$(dirname "$(dirname "$(dirname "${LIBTORCH}")")")")/bin/python"
export SPOTRUN_PYTHON
# One profile for everything (tests, quickstart, benches): torch-sys's C++ is compiled once, not twice.
export CARGO_PROFILE=release
