#!/usr/bin/env bash
# Idempotent set-up: a Python venv with the pinned PyTorch (2.11.0, from PyPI) outside the clone.
#
# The venv lives in $SPOTRUN_TORCH_VENV (default: ~/.cache/spotrun/torch-2.11.0) so a fresh clone, e.g. in CI,
# reuses it. Re-running is cheap: it only checks `torch.__version__`. Prints `LIBTORCH=<dir>` on its last line.
set -euo pipefail

TORCH_VERSION="2.11.0"
VENV="${SPOTRUN_TORCH_VENV:-${HOME}/.cache/spotrun/torch-${TORCH_VERSION}}"
PY="${VENV}/bin/python"

have_torch() {
    [ -x "$PY" ] && "$PY" - "$TORCH_VERSION" <<'PYEOF' >/dev/null 2>&1
import sys, torch, safetensors, numpy
sys.exit(0 if torch.__version__.split("+")[0] == sys.argv[1] else 1)
PYEOF
}

if ! have_torch; then
    echo "spotrun setup: installing torch==${TORCH_VERSION} into ${VENV} (one time, ~5 GB, a few minutes)" >&2
    mkdir -p "$(dirname "$VENV")"
    [ -x "$PY" ] || python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
    "$PY" -m pip install --quiet --disable-pip-version-check "torch==${TORCH_VERSION}" safetensors numpy >&2
    if ! have_torch; then
        echo "spotrun setup: torch ${TORCH_VERSION} still not importable from ${VENV}" >&2
        exit 1
    fi
fi

LIBTORCH="$("$PY" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
echo "LIBTORCH=${LIBTORCH}"
