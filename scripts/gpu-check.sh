#!/usr/bin/env bash
# Every GPU check in one call, for a GPU machine that has PyTorch 2.11 but no Rust toolchain.
#
# Build here first (scripts/test.sh or `cargo build --release && cargo bench --no-run`), carry target/release
# (spotrun + deps/train_throughput-*) to the GPU machine, then run:  scripts/gpu-check.sh
# It prints a table: device; MLP and CNN at batch 8192 bf16 (samples/s, GPU utilisation from nvidia-smi, peak
# memory) side by side with PyTorch eager on the same data; an fp16 + grad-scaler run; a bit-identical resume check
# under train.deterministic = true; the per-epoch checkpoint overhead.
#
#   --dry   run every step on the CPU with tiny sizes (used by scripts/test.sh so this script cannot rot)
# Env: TORCH_VENV (default /opt/torch/.venv, else the spotrun set-up venv), SPOTRUN_BIN, OUT (work dir).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY=0
[ "${1:-}" = "--dry" ] && DRY=1

VENV="${TORCH_VENV:-/opt/torch/.venv}"
[ -x "${VENV}/bin/python" ] || VENV="${SPOTRUN_TORCH_VENV:-${HOME}/.cache/spotrun/torch-2.11.0}"
PY="${VENV}/bin/python"
TORCH_LIB="$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="${TORCH_LIB}${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
export SPOTRUN_PYTHON="$PY"
BIN="${SPOTRUN_BIN:-${ROOT}/target/release/spotrun}"
BENCH="$(ls -t "${ROOT}"/target/release/deps/train_throughput-* 2>/dev/null | grep -v '\.d$' | head -n 1 || true)"
WORK="${OUT:-$(mktemp -d)}"
mkdir -p "$WORK"
[ -x "$BIN" ] || { echo "gpu-check: no spotrun binary at $BIN (build it first)" >&2; exit 1; }
[ -n "$BENCH" ] || { echo "gpu-check: no target/release/deps/train_throughput-* (cargo bench --no-run first)" >&2; exit 1; }

if [ "$DRY" = 1 ]; then
    DEV=cpu; PREC=fp32; EPOCHS=2
    SMALL=(--set data.synthetic.train=2048 --set data.synthetic.val=512 --set train.batch_size=512)
    CNN=(--set data.shape=[1,28,28] --set model.kind=cnn --set model.hidden=[32] --set model.channels=[4,8])
    export SPOTRUN_BENCH_MODELS=mlp SPOTRUN_BENCH_ROUNDS=1 SPOTRUN_BENCH_EPOCHS=1
    export SPOTRUN_BENCH_SETS="data.synthetic.train=2048;data.synthetic.val=512;train.batch_size=512"
else
    DEV=cuda; PREC=bf16; EPOCHS=4
    SMALL=()
    CNN=(--set data.shape=[1,28,28] --set model.kind=cnn --set model.hidden=[128] --set model.channels=[32,64])
    export SPOTRUN_BENCH_MODELS=mlp,cnn SPOTRUN_BENCH_ROUNDS=2 SPOTRUN_BENCH_EPOCHS=3
fi
COMMON=(--quiet --set train.device="$DEV" --set train.precision="$PREC" --set train.epochs="$EPOCHS" "${SMALL[@]}")
ROWS=()
row() { ROWS+=("$(printf '| %-44s | %s |' "$1" "$2")"); }

# Median samples/s over epochs after the first, from a run dir's metrics.jsonl.
rate() { "$PY" - "$1" <<'PYEOF'
import json, statistics, sys
m = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
r = [x["samples_per_sec"] for x in m[1:]] or [m[-1]["samples_per_sec"]]
print(f"{statistics.median(r):.0f}")
PYEOF
}

# Runs spotrun with nvidia-smi sampling utilisation and memory; prints "samples/s, util %, peak MiB".
sampled_run() {
    local dir="$1"; shift
    local smi="$WORK/smi-$(basename "$dir").csv"
    local pid=""
    if command -v nvidia-smi >/dev/null && [ "$DRY" = 0 ]; then
        nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 200 > "$smi" &
        pid=$!
    fi
    "$BIN" train --run-dir "$dir" "$@" >/dev/null
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    local util="n/a" mem="n/a"
    if [ -s "$smi" ]; then
        util="$(awk -F', ' '$1>0 {s+=$1; n++} END {if (n) printf "%.0f%%", s/n; else print "0%"}' "$smi")"
        mem="$(awk -F', ' '$2>m {m=$2} END {printf "%d MiB", m}' "$smi")"
    fi
    echo "$(rate "$dir") samples/s, util ${util}, peak ${mem}"
}

row "device" "$("$BIN" devices | head -n 1)"
row "MLP 784-1024-1024-10, batch 8192, $PREC" "$(sampled_run "$WORK/mlp" "${COMMON[@]}")"
row "CNN conv 32-64 fc 128, batch 8192, $PREC" "$(sampled_run "$WORK/cnn" "${COMMON[@]}" "${CNN[@]}")"

SPOTRUN_BENCH_DEVICE="$DEV" SPOTRUN_BENCH_PRECISION="$PREC" "$BENCH" > "$WORK/side-by-side.txt" 2> "$WORK/side-by-side.err" || true
while IFS= read -r line; do
    case "$line" in "| mlp"*|"| cnn"*) row "vs PyTorch eager: $(echo "$line" | cut -d'|' -f2 | xargs)" "$(echo "$line" | cut -d'|' -f3-7 | xargs) (spotrun, eager, ratio, eager+malloc, ratio)";; esac
done < "$WORK/side-by-side.txt"

"$BIN" train --run-dir "$WORK/fp16" "${COMMON[@]}" --set train.precision=fp16 >/dev/null
row "fp16 + grad scaler" "$("$PY" -c "import json; m=[json.loads(l) for l in open('$WORK/fp16/metrics.jsonl')][-1]; print(f\"val_loss {m['val_loss']:.4f}, skipped steps {m.get('skipped_steps')}\")")"

DET=(--set train.deterministic=true --set model.dropout=0.1)
"$BIN" train --run-dir "$WORK/det-a" "${COMMON[@]}" "${DET[@]}" >/dev/null
"$BIN" train --run-dir "$WORK/det-b" "${COMMON[@]}" "${DET[@]}" --set train.epochs=1 >/dev/null
"$BIN" train --run-dir "$WORK/det-b" "${COMMON[@]}" "${DET[@]}" >/dev/null
if cmp -s "$WORK/det-a/model.safetensors" "$WORK/det-b/model.safetensors"; then same="bit-identical"; else same="DIFFERENT"; fi
row "resume (1 epoch + extend) vs straight, deterministic" "$same"

calc() { "$PY" -c "print(round($1, 2))"; }
wall() { local t0; t0=$(date +%s.%N); "$BIN" train --run-dir "$1" "${@:2}" >/dev/null; calc "$(date +%s.%N) - $t0"; }
t_none=$(wall "$WORK/ck-none" "${COMMON[@]}" --set checkpoint.every_epochs=0)
t_async=$(wall "$WORK/ck-async" "${COMMON[@]}" --set checkpoint.every_epochs=1 --set checkpoint.async=true)
row "checkpoint every epoch (async) overhead" "$(calc "100 * ($t_async - $t_none) / $t_none")% of ${t_none}s wall"

echo
echo "spotrun gpu-check $(date -u +%Y-%m-%dT%H:%MZ) $([ "$DRY" = 1 ] && echo '(DRY RUN on the CPU: numbers mean nothing)')"
echo "| check | result |"
echo "|---|---|"
printf '%s\n' "${ROWS[@]}"
[ "$same" = "bit-identical" ]
