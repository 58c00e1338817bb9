#!/usr/bin/env bash
# Idempotent set-up: a Python venv with the pinned PyTorch (2.11.0) outside the clone, built for this host's CUDA.
#
# The venv lives in $SPOTRUN_TORCH_VENV (default: ~/.cache/spotrun/torch-2.11.0) so a fresh clone, e.g. in CI,
# reuses it. Re-running is cheap: it only asks the venv's torch for its version and CUDA build, and nvidia-smi for
# the driver. Prints `LIBTORCH=<dir>` on its last line.
#
# Which torch build: PyPI's torch==2.11.0 is the CUDA 13.0 build, which needs an NVIDIA driver >= 580; on an older
# driver libtorch sees no GPU at all. So:
#   - no nvidia-smi (a CPU machine), or a driver >= 580: PyPI's build;
#   - SPOTRUN_TORCH_INDEX=<url>: torch from that wheel index, whatever the driver (PyTorch's CUDA 12 builds:
#     https://download.pytorch.org/whl/cu128 for a driver >= 570, .../cu126 for >= 560);
#   - a driver < 580 and no SPOTRUN_TORCH_INDEX: one line saying what to set, and exit 1 (never a CUDA 13 build
#     that would leave the GPU unused); SPOTRUN_TORCH_INDEX=pypi takes PyPI's build anyway (e.g. to build here and
#     train elsewhere).
# A venv whose torch the driver cannot run is reinstalled from SPOTRUN_TORCH_INDEX, or reported in that one line.
# SPOTRUN_NVIDIA_SMI names the nvidia-smi to ask (default: the one on PATH; the tests point it at a fake).
set -euo pipefail

TORCH_VERSION="2.11.0"
VENV="${SPOTRUN_TORCH_VENV:-${HOME}/.cache/spotrun/torch-${TORCH_VERSION}}"
PY="${VENV}/bin/python"
INDEX="${SPOTRUN_TORCH_INDEX:-}"
SMI="${SPOTRUN_NVIDIA_SMI:-nvidia-smi}"
CUDA13_DRIVER=580  # NVIDIA's minimum Linux driver for CUDA 13.x (CUDA 12.x: 525 with minor-version compatibility)

say() { echo "spotrun setup: $*" >&2; }

# The NVIDIA driver's major version (575 for 575.57.08); empty without nvidia-smi or a working driver. The
# output is read whole (one line per GPU): `| head -n 1` could SIGPIPE nvidia-smi and, under pipefail, end set-up.
driver_major() {
    local out
    command -v "$SMI" >/dev/null 2>&1 || return 0
    out="$("$SMI" --query-gpu=driver_version --format=csv,noheader 2>/dev/null)" || return 0
    out="${out%%$'\n'*}"
    out="${out%%.*}"
    echo "${out//[^0-9]/}"
}

# "VERSION CUDA DIR" of the venv's torch (CUDA "none" for a CPU build); fails when torch, safetensors or numpy
# does not import.
installed() {
    [ -x "$PY" ] && "$PY" -c 'import os, torch, safetensors, numpy
print(torch.__version__, torch.version.cuda or "none", os.path.dirname(torch.__file__))' 2>/dev/null
}

# runs_on_driver CUDA: whether a torch built for CUDA (e.g. 13.0) can use this host's driver.
runs_on_driver() {
    [ -z "$DRIVER" ] || [ "$1" = none ] && return 0
    local need=525
    [ "${1%%.*}" -ge 13 ] && need=$CUDA13_DRIVER
    [ "$DRIVER" -ge "$need" ]
}

hint() {
    echo "set SPOTRUN_TORCH_INDEX to a CUDA 12 wheel index (https://download.pytorch.org/whl/cu128 for a driver >= 570, .../cu126 for >= 560) and rerun, or upgrade the NVIDIA driver to >= ${CUDA13_DRIVER} (SPOTRUN_TORCH_INDEX=pypi keeps PyPI's CUDA 13.0 build)"
}

install_torch() {
    mkdir -p "$(dirname "$VENV")"
    [ -x "$PY" ] || python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
    if [ -n "$INDEX" ] && [ "$INDEX" != pypi ]; then
        say "installing torch==${TORCH_VERSION} from ${INDEX} into ${VENV} (one time, a few GB, a few minutes)"
        "$PY" -m pip install --quiet --disable-pip-version-check --index-url "$INDEX" "torch==${TORCH_VERSION}" >&2
        "$PY" -m pip install --quiet --disable-pip-version-check safetensors numpy >&2
    else
        say "installing torch==${TORCH_VERSION} from PyPI into ${VENV} (one time, ~5 GB, a few minutes)"
        "$PY" -m pip install --quiet --disable-pip-version-check "torch==${TORCH_VERSION}" safetensors numpy >&2
    fi
}

DRIVER="$(driver_major)"
state="$(installed || true)"
read -r have_version have_cuda libtorch <<<"${state:-- - -}"
if [ "${have_version%%+*}" = "$TORCH_VERSION" ] && { runs_on_driver "$have_cuda" || [ "$INDEX" = pypi ]; }; then
    : # the right torch is there: nothing to do
elif [ -z "$INDEX" ] && ! runs_on_driver 13.0; then
    if [ "${have_version%%+*}" = "$TORCH_VERSION" ]; then
        say "${VENV} has torch ${have_version} (CUDA ${have_cuda}), which NVIDIA driver ${DRIVER} cannot run: $(hint)"
    else
        say "NVIDIA driver ${DRIVER} is older than PyPI's torch ${TORCH_VERSION} (CUDA 13.0) needs: $(hint)"
    fi
    exit 1
else
    if [ "${have_version%%+*}" = "$TORCH_VERSION" ]; then
        # pip counts 2.11.0+cu130 as torch==2.11.0: remove it, or the index's build is never fetched.
        say "${VENV} has torch ${have_version} (CUDA ${have_cuda}), which NVIDIA driver ${DRIVER} cannot run: replacing it"
        "$PY" -m pip uninstall --quiet --disable-pip-version-check -y torch >&2
    fi
    install_torch
    state="$(installed || true)"
    read -r have_version have_cuda libtorch <<<"${state:-- - -}"
    if [ "${have_version%%+*}" != "$TORCH_VERSION" ]; then
        say "torch ${TORCH_VERSION} still not importable from ${VENV}"
        exit 1
    fi
    if ! runs_on_driver "$have_cuda" && [ "$INDEX" != pypi ]; then
        say "${INDEX:-PyPI} gave torch ${have_version} (CUDA ${have_cuda}), which NVIDIA driver ${DRIVER} cannot run: $(hint)"
        exit 1
    fi
fi
echo "LIBTORCH=${libtorch}"
