#!/usr/bin/env bash
# Every GPU check in one call, for a GPU machine that has PyTorch 2.11 but no Rust toolchain.
#
# Build here first (scripts/test.sh, or `cargo build --release && cargo bench --no-run`), carry target/release
# (spotrun + deps/train_throughput-*) to the GPU machine, then run:  scripts/gpu-check.sh
#
# It prints a table (and writes it to $OUT/gpu-check.md, with every command's output in $OUT/gpu-check.log):
#   - the device;
#   - MLP 784-1024-1024-10 and the CNN at batch 8192 bf16: samples/s, mean GPU utilisation while training
#     (nvidia-smi, every 200 ms), peak GPU memory;
#   - the same models in PyTorch eager on the same data, back to back (benches/train_throughput.rs);
#   - an fp16 + dynamic grad scaler run;
#   - bit-identical resume under train.deterministic = true: stopped at an epoch end, and by SIGTERM mid-run;
#   - what checkpointing every epoch costs (time the saves paused training, and the wall-time difference).
# Each measured run is sized by a short calibration run to last about GPU_CHECK_TARGET_S seconds, so a fast
# card is not measured on start-up noise. Every step has its own time limit and the whole script a deadline;
# a failed step becomes a FAILED row instead of ending the script, so one call always brings back a table.
#
#   --dry   every step on the CPU with tiny sizes (scripts/test.sh runs this, so the script cannot rot)
# Env: TORCH_VENV (default /opt/torch/.venv, else the spotrun set-up venv), SPOTRUN_BIN, OUT (table and logs;
#      run directories, which hold GBs of checkpoints, stay in a temp dir that is removed),
#      GPU_CHECK_TARGET_S (12), GPU_CHECK_N (training samples, 524288), GPU_CHECK_DEADLINE_S (450).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY=0
[ "${1:-}" = "--dry" ] && DRY=1
START=$SECONDS

VENV="${TORCH_VENV:-/opt/torch/.venv}"
[ -x "${VENV}/bin/python" ] || VENV="${SPOTRUN_TORCH_VENV:-${HOME}/.cache/spotrun/torch-2.11.0}"
PY="${VENV}/bin/python"
TORCH_LIB="$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')" ||
    { echo "gpu-check: no torch in ${VENV} (set TORCH_VENV)" >&2; exit 1; }
export LD_LIBRARY_PATH="${TORCH_LIB}${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
export SPOTRUN_PYTHON="$PY"
BIN="${SPOTRUN_BIN:-${ROOT}/target/release/spotrun}"
BENCH="$(ls -t "${ROOT}"/target/release/deps/train_throughput-* 2>/dev/null | grep -v '\.d$' | head -n 1 || true)"
[ -x "$BIN" ] || { echo "gpu-check: no spotrun binary at $BIN (build it first)" >&2; exit 1; }
[ -n "$BENCH" ] || { echo "gpu-check: no target/release/deps/train_throughput-* (cargo bench --no-run first)" >&2; exit 1; }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
REPORT="${OUT:-$(mktemp -d)}"
mkdir -p "$REPORT"
LOG="$REPORT/gpu-check.log"
: > "$LOG"

if [ "$DRY" = 1 ]; then
    DEV=cpu; PREC=fp32; N=2048; VAL=512; BATCH=512; TARGET=1; BENCH_TARGET=1; ROUNDS=1; MAX_EPOCHS=3
    LIMIT=120; BENCH_LIMIT=300; DEADLINE=600
    CNN=(--set data.shape=[1,28,28] --set model.kind=cnn --set model.hidden=[32] --set model.channels=[4,8])
    CNN_SETS="data.shape=[1,28,28];model.hidden=[32];model.channels=[4,8]"
    CNN_DESC="CNN conv 4-8 fc 32"; CK_EPOCHS=3
else
    DEV=cuda; PREC=bf16; N="${GPU_CHECK_N:-524288}"; VAL=10000; BATCH=8192; TARGET="${GPU_CHECK_TARGET_S:-12}"
    BENCH_TARGET=3; ROUNDS=2; MAX_EPOCHS=400; LIMIT=120; BENCH_LIMIT=200; DEADLINE="${GPU_CHECK_DEADLINE_S:-450}"
    CNN=(--set data.shape=[1,28,28] --set model.kind=cnn --set model.hidden=[128] --set model.channels=[32,64])
    CNN_SETS=""  # the bench's own CNN is conv 32-64 fc 128
    CNN_DESC="CNN conv 32-64 fc 128"; CK_EPOCHS=10
fi
DETN=$(( N < 65536 ? N : 65536 ))
BASE=(--quiet --set train.device="$DEV" --set train.precision="$PREC" --set data.synthetic.val="$VAL"
      --set train.batch_size="$BATCH")
COMMON=("${BASE[@]}" --set data.synthetic.train="$N")
ROWS=()
row() {
    ROWS+=("$(printf '| %-52s | %s |' "$1" "$2")")
    printf 'gpu-check: %s: %s\n' "$1" "$2" >&2
}
time_left() { [ $((SECONDS - START)) -lt "$DEADLINE" ]; }
# logged NAME LIMIT CMD...: runs CMD under a time limit with its output appended to the log.
logged() {
    local name="$1" limit="$2" rc
    shift 2
    echo "== ${name} ($((SECONDS - START))s): $*" >> "$LOG"
    timeout --kill-after=20 "$limit" "$@" >> "$LOG" 2>&1
    rc=$?
    [ "$rc" = 0 ] || echo "== ${name}: exit ${rc}" >> "$LOG"
    return "$rc"
}
failed() { echo "FAILED: $1 (see gpu-check.log)"; }
# Median samples/s over the epochs after the first, from a run directory's metrics.jsonl.
rate() { "$PY" - "$1" <<'PYEOF'
import json, statistics, sys
m = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
r = [x["samples_per_sec"] for x in m[1:]] or [m[-1]["samples_per_sec"]]
print(f"{statistics.median(r):.0f}")
PYEOF
}
# epochs RATE SECONDS: epochs of N samples that train for about SECONDS at RATE, plus the untimed first one.
epochs() { "$PY" -c "import math; print(max(2, min($MAX_EPOCHS, math.ceil($2 * $1 / $N) + 1)))"; }
last_cost() { grep '^checkpoints: ' "$LOG" | tail -n 1 | sed 's/^checkpoints: //'; }

# sampled NAME DIR ARGS...: a `spotrun train` with nvidia-smi sampling; prints "R samples/s, util U, peak M".
sampled() {
    local name="$1" dir="$2" smi="$REPORT/smi-$1.csv" pid="" rc util="n/a" mem="n/a"
    shift 2
    if [ "$DRY" = 0 ] && command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 200 > "$smi" 2>/dev/null &
        pid=$!
    fi
    logged "$name" "$LIMIT" "$BIN" train --run-dir "$dir" "$@"
    rc=$?
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi
    [ "$rc" = 0 ] || return 1
    if [ -s "$smi" ]; then
        # Mean over the window from the first to the last busy sample (start-up and exit excluded).
        util="$(awk -F', *' '{u[NR]=$1} $1>0 {if (!a) a=NR; b=NR} END {if (!a) {print "0%"; exit} for (i=a; i<=b; i++) s+=u[i]; printf "%.0f%%", s/(b-a+1)}' "$smi")"
        mem="$(awk -F', *' '$2>m {m=$2} END {printf "%d MiB", m}' "$smi")"
    fi
    echo "$(rate "$dir") samples/s, util ${util}, peak ${mem}"
}

row "device" "$("$BIN" devices 2>&1 | head -n 1)"
row "torch" "$("$PY" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tail -n 1)"

for m in mlp cnn; do
    if [ "$m" = cnn ]; then ARGS=("${COMMON[@]}" "${CNN[@]}"); DESC="$CNN_DESC"; else ARGS=("${COMMON[@]}"); DESC="MLP 784-1024-1024-10"; fi
    DESC="${DESC}, batch ${BATCH} ${PREC}"
    time_left || { row "$DESC" "SKIPPED (deadline)"; continue; }
    if ! logged "$m calibration" "$LIMIT" "$BIN" train --run-dir "$WORK/$m-cal" "${ARGS[@]}" \
        --set train.epochs=2 --set checkpoint.every_epochs=0; then
        row "$DESC" "$(failed "calibration run")"
        continue
    fi
    R0="$(rate "$WORK/$m-cal")"
    EP="$(epochs "$R0" "$TARGET")"
    # Training as measured: no checkpoints but the final one (their cost is measured on its own below).
    if res="$(sampled "$m" "$WORK/$m" "${ARGS[@]}" --set train.epochs="$EP" --set checkpoint.every_epochs=0)"; then
        row "$DESC ($EP epochs x $N)" "$res"
    else
        row "$DESC ($EP epochs x $N)" "$(failed "spotrun train")"
    fi
    time_left || { row "vs PyTorch eager: $m" "SKIPPED (deadline)"; continue; }
    BE=$(( $(epochs "$R0" "$BENCH_TARGET") - 1 ))
    SETS="data.synthetic.train=$N;data.synthetic.val=$VAL;train.batch_size=$BATCH"
    [ "$m" = cnn ] && [ -n "$CNN_SETS" ] && SETS="$SETS;$CNN_SETS"
    if SPOTRUN_BENCH_MODELS="$m" SPOTRUN_BENCH_ROUNDS="$ROUNDS" SPOTRUN_BENCH_EPOCHS="$BE" \
        SPOTRUN_BENCH_DEVICE="$DEV" SPOTRUN_BENCH_PRECISION="$PREC" SPOTRUN_BENCH_SETS="$SETS" \
        logged "$m vs eager" "$BENCH_LIMIT" "$BENCH"; then
        line="$(grep -E "^\| ${m} " "$LOG" | tail -n 1)"
        row "vs PyTorch eager: $(echo "$line" | cut -d'|' -f2 | xargs), ${ROUNDS}x${BE} epochs" \
            "spotrun $(echo "$line" | cut -d'|' -f3 | xargs), eager $(echo "$line" | cut -d'|' -f4 | xargs): $(echo "$line" | cut -d'|' -f5 | xargs)"
    else
        row "vs PyTorch eager: $m" "$(failed "benches/train_throughput.rs")"
    fi
done

if time_left; then
    if res="$(sampled fp16 "$WORK/fp16" "${COMMON[@]}" --set train.precision=fp16 --set train.epochs=3)"; then
        res="$res, $("$PY" -c "import json; m=[json.loads(l) for l in open('$WORK/fp16/metrics.jsonl')][-1]; print(f\"val_loss {m['val_loss']:.4f}, skipped steps {m.get('skipped_steps')}\")")"
        row "MLP fp16 + dynamic grad scaler, 3 epochs" "$res"
    else
        row "MLP fp16 + dynamic grad scaler" "$(failed "spotrun train")"
    fi
else
    row "MLP fp16 + dynamic grad scaler" "SKIPPED (deadline)"
fi

# Bit-identical resume: the straight run against (a) 1 epoch, then the same command with more epochs and
# (b) a SIGTERM part-way through the run, then the same command.
DET_EPOCHS=$([ "$DRY" = 1 ] && echo 3 || echo 6)
if time_left; then
    DET=("${BASE[@]}" --set data.synthetic.train="$DETN" --set train.deterministic=true --set model.dropout=0.1
         --set checkpoint.every_steps=3)
    same() { cmp -s "$WORK/det-a/model.safetensors" "$1/model.safetensors" && echo bit-identical || echo DIFFERENT; }
    if logged "det straight" "$LIMIT" "$BIN" train --run-dir "$WORK/det-a" "${DET[@]}" --set train.epochs=$DET_EPOCHS; then
        if logged "det 1 epoch" "$LIMIT" "$BIN" train --run-dir "$WORK/det-b" "${DET[@]}" --set train.epochs=1 &&
            logged "det extend" "$LIMIT" "$BIN" train --run-dir "$WORK/det-b" "${DET[@]}" --set train.epochs=$DET_EPOCHS; then
            row "resume at an epoch end vs straight, deterministic" "$(same "$WORK/det-b")"
        else
            row "resume at an epoch end vs straight, deterministic" "$(failed "spotrun train")"
        fi
        echo "== det signal" >> "$LOG"
        "$BIN" train --run-dir "$WORK/det-c" "${DET[@]}" --set train.epochs=$DET_EPOCHS >> "$LOG" 2>&1 &
        pid=$!
        # Signal as soon as the first checkpoint commits (step 3 of epoch 1): the run is then mid-way.
        for _ in $(seq 1 1200); do compgen -G "$WORK/det-c/checkpoints/*/manifest.json" >/dev/null && break; sleep 0.05; done
        kill -TERM "$pid" 2>/dev/null
        wait "$pid"
        code=$?
        at="$(ls -d "$WORK"/det-c/checkpoints/*/ 2>/dev/null | sort | tail -n 1)"
        where="$("$PY" -c "import json,sys; m=json.load(open(sys.argv[1]+'/manifest.json')); print(f\"epoch {m['epoch']+1} batch {m['batch']}, {m['reason']}\")" "$at" 2>/dev/null)"
        if logged "det resume" "$LIMIT" "$BIN" train --run-dir "$WORK/det-c" "${DET[@]}" --set train.epochs=$DET_EPOCHS; then
            row "SIGTERM (exit $code, saved at ${where:-?}), resume" "$(same "$WORK/det-c")"
        else
            row "SIGTERM mid-run, resume" "$(failed "spotrun train")"
        fi
    else
        row "deterministic run" "$(failed "spotrun train")"
    fi
    if logged "cnn deterministic" "$LIMIT" "$BIN" train --run-dir "$WORK/det-cnn" "${BASE[@]}" "${CNN[@]}" \
        --set data.synthetic.train="$DETN" --set train.deterministic=true --set train.epochs=1; then
        row "CNN under train.deterministic" "runs"
    else
        row "CNN under train.deterministic" "error: $(grep '^error' "$LOG" | tail -n 1 | cut -c1-160)"
    fi
else
    row "deterministic resume" "SKIPPED (deadline)"
fi

# What checkpointing every epoch costs (MLP: 22 MB of weights + 44 MB of AdamW state per save). On a fast card an
# epoch of N samples is short, so read the per-save cost; long epochs make it a small fraction.
if time_left; then
    wall() {
        local name="$1" t0
        shift
        t0=$(date +%s.%N)
        logged "$name" "$LIMIT" "$BIN" train "$@" || return 1
        "$PY" -c "print(round($(date +%s.%N) - $t0, 2))"
    }
    CK=("${COMMON[@]}" --set train.epochs="$CK_EPOCHS" --set checkpoint.keep_last=2)
    if t_none="$(wall "ckpt none" --run-dir "$WORK/ck-none" "${CK[@]}" --set checkpoint.every_epochs=0)" &&
        t_sync="$(wall "ckpt sync" --run-dir "$WORK/ck-sync" "${CK[@]}" --set checkpoint.every_epochs=1)" &&
        c_sync="$(last_cost)" &&
        t_async="$(wall "ckpt async" --run-dir "$WORK/ck-async" "${CK[@]}" --set checkpoint.every_epochs=1 --set checkpoint.async=true)" &&
        c_async="$(last_cost)"; then
        row "checkpoint every epoch, sync (MLP, $CK_EPOCHS epochs x $N)" "${c_sync:-no saves reported}; wall ${t_sync}s vs ${t_none}s without"
        row "checkpoint every epoch, async" "${c_async:-no saves reported}; wall ${t_async}s vs ${t_none}s without"
    else
        row "checkpoint cost" "$(failed "spotrun train")"
    fi
else
    row "checkpoint cost" "SKIPPED (deadline)"
fi

{
    echo
    echo "spotrun gpu-check $(date -u +%Y-%m-%dT%H:%MZ), $((SECONDS - START)) s $([ "$DRY" = 1 ] && echo '(DRY RUN on the CPU: numbers mean nothing)')"
    echo "| check | result |"
    echo "|---|---|"
    printf '%s\n' "${ROWS[@]}"
} | tee "$REPORT/gpu-check.md"
! grep -q 'FAILED\|DIFFERENT' "$REPORT/gpu-check.md"
