#!/usr/bin/env bash
# Every GPU check in one call, for a GPU machine that has PyTorch 2.11 but no Rust toolchain.
#
# Build here first (scripts/test.sh, or `cargo build --release && cargo bench --no-run`, which names the bench
# binaries), carry three files to the GPU machine, target/release/spotrun and the
# target/release/deps/train_throughput-<hash> and gpt_throughput-<hash> it names (~14 MB together; all of
# target/release is GBs), then run
#   OUT=<dir> scripts/gpu-check.sh        (the device tool: timeout_s ~560; the script stops itself at ~6 min)
#
# It prints a table (and writes it to $OUT/gpu-check.md, with every command's output in $OUT/gpu-check.log):
#   - the device;
#   - MLP 784-1024-1024-10 and the CNN at batch 8192 bf16, data on the GPU: samples/s, mean GPU utilisation
#     while training (nvidia-smi, every 200 ms), peak memory used on the card (nvidia-smi: includes the CUDA
#     context, the dataset and the caching allocator's reserve);
#   - the same models in PyTorch eager on the same data on the GPU, back to back (benches/train_throughput.rs;
#     eager uses torch's default AdamW, spotrun the fused kernel; for the CNN also eager with channels-last);
#   - an fp16 + dynamic grad scaler run;
#   - bit-identical resume under train.deterministic = true: stopped at an epoch end, and by SIGTERM mid-run;
#   - what checkpointing every epoch costs (time the saves paused the training loop, and the loop's length);
#   - the GPT of configs/gpt_shakespeare_char.toml (6x384, block 256, batch 64) on the built-in token stream, bf16:
#     tokens/s, MFU ((6*N + 12*L*C*T) FLOPs per token over the card's dense bf16 peak, nanoGPT's estimate), GPU
#     busy %, peak memory, the PyTorch-eager ratio (benches/gpt_throughput.rs: a third binary to carry,
#     target/release/deps/gpt_throughput-<hash>), and bit-identical resume after SIGTERM, deterministic;
#   - the same GPT exported with torch.jit.script and trained as model.kind = "torchscript", bf16: tokens/s,
#     whether autocast reached inside the module (weights differ from an fp32 run), exact resume after SIGTERM;
#   - a 16-run fused sweep (MLP 64-256-256-10) against --no-fuse: wall time and GPU busy % of each.
# Each measured run is sized by a short calibration run to last about GPU_CHECK_TARGET_S seconds, so a fast
# card is not measured on start-up noise. Every step has its own time limit and the whole script a deadline;
# a failed step becomes a FAILED row instead of ending the script, and rows are written to gpu-check.md as they
# come, so even a killed call brings back what it measured.
#
#   --dry   every step on the CPU with tiny sizes (scripts/test.sh runs this, so the script cannot rot)
# Env: TORCH_VENV (default /opt/torch/.venv, else the spotrun set-up venv), SPOTRUN_BIN, SPOTRUN_BENCH_BIN,
#      OUT (table and logs; run directories, which hold GBs of checkpoints, stay in a temp dir that is removed),
#      GPU_CHECK_TARGET_S (12), GPU_CHECK_N (training samples, 524288), GPU_CHECK_DEADLINE_S (360).
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
export SPOTRUN_BENCH_EAGER="${ROOT}/scripts/bench_eager.py"  # the bench binary may not sit in its build tree
BIN="${SPOTRUN_BIN:-${ROOT}/target/release/spotrun}"
BENCH="${SPOTRUN_BENCH_BIN:-$(ls -t "${ROOT}"/target/release/deps/train_throughput-* 2>/dev/null | grep -v '\.d$' | head -n 1 || true)}"
GPT_BENCH="${SPOTRUN_GPT_BENCH_BIN:-$(ls -t "${ROOT}"/target/release/deps/gpt_throughput-* 2>/dev/null | grep -v '\.d$' | head -n 1 || true)}"
export SPOTRUN_BENCH_GPT_EAGER="${ROOT}/scripts/bench_gpt_eager.py"
[ -x "$BIN" ] || { echo "gpu-check: no spotrun binary at $BIN (build it first)" >&2; exit 1; }
[ -x "$BENCH" ] || { echo "gpu-check: no target/release/deps/train_throughput-* (cargo bench --no-run first)" >&2; exit 1; }
if ldd "$BIN" "$BENCH" | grep 'not found'; then
    echo "gpu-check: libraries missing for the binaries with LD_LIBRARY_PATH=${LD_LIBRARY_PATH}" >&2
    exit 1
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
REPORT="${OUT:-$(mktemp -d)}"
mkdir -p "$REPORT"
LOG="$REPORT/gpu-check.log"
: > "$LOG"

if [ "$DRY" = 1 ]; then
    DEV=cpu; PREC=fp32; N=2048; VAL=512; BATCH=512; TARGET=1; BENCH_TARGET=1; ROUNDS=1; MAX_EPOCHS=3
    LIMIT=120; BENCH_LIMIT=300; DEADLINE=600; PLACE=()
    CNN=(--set data.shape=[1,28,28] --set model.kind=cnn --set model.hidden=[32] --set model.channels=[4,8])
    CNN_SETS="data.shape=[1,28,28];model.hidden=[32];model.channels=[4,8]"
    CNN_DESC="CNN conv 4-8 fc 32"; CK_EPOCHS=3
else
    DEV=cuda; PREC=bf16; N="${GPU_CHECK_N:-524288}"; VAL=10000; BATCH=8192; TARGET="${GPU_CHECK_TARGET_S:-12}"
    BENCH_TARGET=3; ROUNDS=2; MAX_EPOCHS=400; LIMIT=120; BENCH_LIMIT=200; DEADLINE="${GPU_CHECK_DEADLINE_S:-360}"
    PLACE=(--set data.on_device=true)  # on the GPU as the eager side is; fail loudly rather than measure the host
    CNN=(--set data.shape=[1,28,28] --set model.kind=cnn --set model.hidden=[128] --set model.channels=[32,64])
    CNN_SETS=""  # the bench's own CNN is conv 32-64 fc 128
    CNN_DESC="CNN conv 32-64 fc 128"; CK_EPOCHS=10
fi
DETN=$(( N < 65536 ? N : 65536 ))
# log_every=0: no host sync for progress inside an epoch, as in the bench.
BASE=(--quiet --set train.device="$DEV" --set train.precision="$PREC" --set data.synthetic.val="$VAL"
      --set train.batch_size="$BATCH" --set train.log_every=0 "${PLACE[@]}")
COMMON=("${BASE[@]}" --set data.synthetic.train="$N")
TABLE="$REPORT/gpu-check.md"
{
    echo "spotrun gpu-check $(date -u +%Y-%m-%dT%H:%MZ) $([ "$DRY" = 1 ] && echo '(DRY RUN on the CPU: numbers mean nothing)')"
    echo "| check | result |"
    echo "|---|---|"
} > "$TABLE"
row() {
    printf '| %-52s | %s |\n' "$1" "$2" >> "$TABLE"
    printf 'gpu-check: %s: %s\n' "$1" "$2" >&2
}
time_left() { [ $((SECONDS - START)) -lt "$DEADLINE" ]; }
# lim SECONDS: a step's time limit, cut to what is left before the deadline (at least 10 s).
lim() { local left=$((DEADLINE - (SECONDS - START))); [ "$left" -lt 10 ] && left=10; echo $(( $1 < left ? $1 : left )); }
# logged NAME LIMIT CMD...: runs CMD under a time limit with its output appended to the log.
logged() {
    local name="$1" limit="$2" rc
    shift 2
    echo "== ${name} ($((SECONDS - START))s): $*" >> "$LOG"
    timeout --kill-after=20 "$(lim "$limit")" "$@" >> "$LOG" 2>&1
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
# term_at_commit NAME DIR ARGS...: `spotrun train --run-dir DIR ARGS...`, SIGTERMed as soon as its first checkpoint
# commits (the run is then mid-way); prints the exit code (143 when the signal stopped it).
term_at_commit() {
    local name="$1" dir="$2" pid
    shift 2
    echo "== ${name}" >> "$LOG"
    timeout --kill-after=20 "$(lim "$LIMIT")" "$BIN" train --run-dir "$dir" "$@" >> "$LOG" 2>&1 &
    pid=$!
    for _ in $(seq 1 1200); do compgen -G "$dir/checkpoints/*/manifest.json" >/dev/null && break; sleep 0.05; done
    kill -TERM "$pid" 2>/dev/null
    wait "$pid"
    echo $?
}

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

DEVICES="$("$BIN" devices 2>&1)"
row "device" "$(echo "$DEVICES" | head -n 1); $(echo "$DEVICES" | grep '^libtorch sees')"
row "torch" "$("$PY" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tail -n 1)"
if [ "$DRY" = 0 ] && ! echo "$DEVICES" | grep -q '^libtorch sees [1-9]'; then
    row "CUDA in libtorch" "$(failed "libtorch sees no CUDA device; nothing else can be measured")"
    cat "$TABLE"
    exit 1
fi
FP16_EPOCHS=3

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
    [ "$m" = mlp ] && FP16_EPOCHS="$EP"
    # Training as measured: no checkpoints but the final one (their cost is measured on its own below).
    if res="$(sampled "$m" "$WORK/$m" "${ARGS[@]}" --set train.epochs="$EP" --set checkpoint.every_epochs=0)"; then
        row "$DESC ($EP epochs x $N)" "$res"
    else
        row "$DESC ($EP epochs x $N)" "$(failed "spotrun train")"
    fi
    time_left || { row "vs PyTorch eager: $m" "SKIPPED (deadline)"; continue; }
    BE=$(( $(epochs "$R0" "$BENCH_TARGET") - 1 ))
    SETS="data.synthetic.train=$N;data.synthetic.val=$VAL;train.batch_size=$BATCH${PLACE[*]:+;data.on_device=true}"
    [ "$m" = cnn ] && [ -n "$CNN_SETS" ] && SETS="$SETS;$CNN_SETS"
    if SPOTRUN_BENCH_MODELS="$m" SPOTRUN_BENCH_ROUNDS="$ROUNDS" SPOTRUN_BENCH_EPOCHS="$BE" \
        SPOTRUN_BENCH_DEVICE="$DEV" SPOTRUN_BENCH_PRECISION="$PREC" SPOTRUN_BENCH_SETS="$SETS" \
        logged "$m vs eager" "$BENCH_LIMIT" "$BENCH"; then
        line="$(grep -E "^\| ${m} " "$LOG" | tail -n 1)"
        f() { echo "$line" | cut -d'|' -f"$1" | xargs; }
        res="spotrun $(f 3), eager $(f 4): $(f 5)"
        tuned="eager$([ "$m" = cnn ] && echo ' + channels-last')$([ "$DRY" = 1 ] && echo ' + malloc settings')"
        [ "$(f 6)" = n/a ] || res="$res; $tuned $(f 6): $(f 7)"
        case "$res" in *NaN*|*inf*) res="$(failed "no measurement: $res")";; esac
        row "vs PyTorch eager: $(f 2), ${ROUNDS}x${BE} epochs" "$res"
    else
        row "vs PyTorch eager: $m" "$(failed "benches/train_throughput.rs")"
    fi
done

if time_left; then
    if res="$(sampled fp16 "$WORK/fp16" "${COMMON[@]}" --set train.precision=fp16 --set train.epochs="$FP16_EPOCHS" \
        --set checkpoint.every_epochs=0)"; then
        res="$res, $("$PY" -c "import json; m=[json.loads(l) for l in open('$WORK/fp16/metrics.jsonl')][-1]; print(f\"val_loss {m['val_loss']:.4f}, skipped steps {m.get('skipped_steps')}\")")"
        row "MLP fp16 + dynamic grad scaler ($FP16_EPOCHS epochs x $N)" "$res"
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
        # Signalled as soon as the first checkpoint commits (step 3 of epoch 1).
        code="$(term_at_commit "det signal" "$WORK/det-c" "${DET[@]}" --set train.epochs=$DET_EPOCHS)"
        at="$(ls -d "$WORK"/det-c/checkpoints/*/ 2>/dev/null | sort | tail -n 1)"
        where="$("$PY" -c "import json,sys; m=json.load(open(sys.argv[1]+'/manifest.json')); print(f\"epoch {m['epoch']+1} batch {m['batch']}, {m['reason']}\")" "$at" 2>/dev/null)"
        if logged "det resume" "$LIMIT" "$BIN" train --run-dir "$WORK/det-c" "${DET[@]}" --set train.epochs=$DET_EPOCHS; then
            s="$(same "$WORK/det-c")"
            # Only a run the signal stopped (exit 143) before its final save tested anything.
            [ "$code" = 143 ] && [ "${where##*, }" != final ] || s="NOT TESTED: the run ended before the signal"
            row "SIGTERM (exit $code, saved at ${where:-?}), resume" "$s"
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

# What checkpointing every epoch costs (MLP: 7.5 MB of weights + 15 MB of AdamW state per save). On a fast card an
# epoch of N samples is short, so read the per-save cost; long epochs make it a small fraction. Process wall time
# would be mostly data generation and CUDA start-up: compare the loop times from the "checkpoints:" lines.
if time_left; then
    # ck NAME ARGS...: trains the MLP and prints its "N saves paused training for Xs (P% of Ls)".
    ck() {
        local name="$1"
        shift
        logged "$name" "$LIMIT" "$BIN" train "$@" || return 1
        last_cost
    }
    loop_s() { echo "$1" | sed -n 's/.* of \([0-9.]*\)s)$/\1/p'; }
    CK=("${COMMON[@]}" --set train.epochs="$CK_EPOCHS" --set checkpoint.keep_last=2)
    if c_none="$(ck "ckpt none" --run-dir "$WORK/ck-none" "${CK[@]}" --set checkpoint.every_epochs=0)" &&
        c_sync="$(ck "ckpt sync" --run-dir "$WORK/ck-sync" "${CK[@]}" --set checkpoint.every_epochs=1)" &&
        c_async="$(ck "ckpt async" --run-dir "$WORK/ck-async" "${CK[@]}" --set checkpoint.every_epochs=1 \
            --set checkpoint.async=true)"; then
        base="loop $(loop_s "$c_none")s with only the final save"
        row "checkpoint every epoch, sync (MLP, $CK_EPOCHS epochs x $N)" "$c_sync; $base"
        row "checkpoint every epoch, async" "$c_async; $base"
    else
        row "checkpoint cost" "$(failed "spotrun train")"
    fi
else
    row "checkpoint cost" "SKIPPED (deadline)"
fi

# The GPT: configs/gpt_shakespeare_char.toml without its data.path, i.e. on the built-in token stream.
grep -v '^path = ' "$ROOT/configs/gpt_shakespeare_char.toml" > "$WORK/gpt.toml"
if [ "$DRY" = 1 ]; then
    GPT=(--set model.n_layer=1 --set model.n_embd=32 --set model.n_head=2 --set model.block_size=32
         --set train.batch_size=8 --set data.synthetic.train=20000 --set data.synthetic.val=2000)
    GPT_STEPS=12; GPT_BENCH_SETS="model.n_layer=1;model.n_embd=32;model.n_head=2;model.block_size=32;train.batch_size=8"
    GPT_BENCH_STEPS=2; GPT_DESC="GPT 1x32 block 32 batch 8"
else
    GPT=(--set data.synthetic.train=2000000 --set data.synthetic.val=100000)
    GPT_STEPS=50; GPT_BENCH_SETS=""; GPT_BENCH_STEPS=20; GPT_DESC="GPT 6x384 block 256 batch 64 (shakespeare_char)"
fi
GPT=("$WORK/gpt.toml" "${BASE[@]}" --set train.batch_size=64 --set train.eval_batches=2 "${GPT[@]}")
# tok DIR: median tokens/s over the epochs after the first.
tok() { "$PY" - "$1" <<'PYEOF'
import json, statistics, sys
m = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
r = [x["tokens_per_sec"] for x in m[1:]] or [m[-1]["tokens_per_sec"]]
print(f"{statistics.median(r):.0f}")
PYEOF
}
if time_left; then
    if logged "gpt calibration" "$LIMIT" "$BIN" train --run-dir "$WORK/gpt-cal" "${GPT[@]}" --set train.epochs=2 \
        --set train.steps_per_epoch="$GPT_STEPS" --set checkpoint.every_epochs=0; then
        T0="$(tok "$WORK/gpt-cal")"
        EP="$("$PY" -c "import math; print(max(2, min(40, math.ceil($TARGET * $T0 / ($GPT_STEPS * 64 * 256)) + 1)))")"
        if res="$(sampled gpt "$WORK/gpt" "${GPT[@]}" --set train.epochs="$EP" --set train.steps_per_epoch="$GPT_STEPS" \
            --set checkpoint.every_epochs=0)"; then
            T="$(tok "$WORK/gpt")"
            GPU_NAME="$(echo "$DEVICES" | head -n 1)"
            mfu="$("$PY" - "$WORK/gpt/config.toml" "$T" "$GPU_NAME" <<'PYEOF'
import sys, tomllib
m = tomllib.load(open(sys.argv[1], "rb"))["model"]
L, C, T, V = m["n_layer"], m["n_embd"], m["block_size"], m.get("vocab_size", 27)
n = L * (12 * C * C + 2 * C) + C + V * C          # parameters without the position embedding (nanoGPT's N)
flops_per_token = 6 * n + 12 * L * C * T
name = sys.argv[3]
peak = next((p for k, p in [("H100", 989e12), ("H200", 989e12), ("A100", 312e12), ("L4", 121e12)] if k in name), None)
rate = float(sys.argv[2]) * flops_per_token
print(f"MFU {100 * rate / peak:.1f}% ({rate / 1e12:.1f} TFLOP/s)" if peak else f"{rate / 1e12:.2f} TFLOP/s, MFU n/a (unknown peak)")
PYEOF
)"
            row "$GPT_DESC ${PREC}, $EP epochs x $GPT_STEPS steps" "${res/samples\/s/windows\/s}, $T tokens/s, $mfu"
        else
            row "$GPT_DESC" "$(failed "spotrun train")"
        fi
    else
        row "$GPT_DESC" "$(failed "calibration run")"
    fi
else
    row "$GPT_DESC" "SKIPPED (deadline)"
fi
if time_left && [ -x "$GPT_BENCH" ]; then
    if SPOTRUN_BENCH_ROUNDS="$ROUNDS" SPOTRUN_BENCH_STEPS="$GPT_BENCH_STEPS" SPOTRUN_BENCH_WARMUP=2 \
        SPOTRUN_BENCH_DEVICE="$DEV" SPOTRUN_BENCH_PRECISION="$PREC" SPOTRUN_BENCH_SETS="$GPT_BENCH_SETS" \
        logged "gpt vs eager" "$BENCH_LIMIT" "$GPT_BENCH"; then
        line="$(grep -E '^\| gpt ' "$LOG" | tail -n 1)"
        f() { echo "$line" | cut -d'|' -f"$1" | xargs; }
        row "vs PyTorch eager: $(f 2)" "spotrun $(f 3), eager $(f 4) tokens/s: $(f 5)"
    else
        row "vs PyTorch eager: GPT" "$(failed "benches/gpt_throughput.rs")"
    fi
else
    row "vs PyTorch eager: GPT" "SKIPPED ($([ -x "$GPT_BENCH" ] && echo deadline || echo "no gpt_throughput binary"))"
fi
if time_left; then
    GD=("${GPT[@]}" --set train.deterministic=true --set train.steps_per_epoch="$GPT_STEPS" --set train.epochs=3
        --set checkpoint.every_steps=2)
    if logged "gpt det straight" "$LIMIT" "$BIN" train --run-dir "$WORK/gpt-a" "${GD[@]}"; then
        code="$(term_at_commit "gpt det signal" "$WORK/gpt-c" "${GD[@]}")"
        if logged "gpt det resume" "$LIMIT" "$BIN" train --run-dir "$WORK/gpt-c" "${GD[@]}"; then
            s="$(cmp -s "$WORK/gpt-a/model.safetensors" "$WORK/gpt-c/model.safetensors" && echo bit-identical || echo DIFFERENT)"
            [ "$code" = 143 ] || s="NOT TESTED: the run ended before the signal (exit $code)"
            row "GPT SIGTERM (exit $code) + resume vs straight, deterministic" "$s"
        else
            row "GPT SIGTERM + resume, deterministic" "$(failed "spotrun train")"
        fi
    else
        row "GPT deterministic run" "$(failed "spotrun train")"
    fi
else
    row "GPT deterministic resume" "SKIPPED (deadline)"
fi

# The user's own module: SpotrunGPT scripted at the GPT rows' shape, trained through model.kind = "torchscript".
if time_left; then
    "$PY" - "$WORK/gpt.toml" "$WORK/gpt.pt" "$ROOT/scripts" "$DRY" >> "$LOG" 2>&1 <<'PYEOF'
import sys, tomllib, torch
sys.path.insert(0, sys.argv[3])
from spotrun_models import SpotrunGPT
m = tomllib.load(open(sys.argv[1], "rb"))["model"]
if sys.argv[4] == "1":
    m.update(n_layer=1, n_embd=32, n_head=2, block_size=32)
torch.manual_seed(0)
torch.jit.script(SpotrunGPT(27, m["block_size"], m["n_layer"], m["n_head"], m["n_embd"], m["dropout"], m.get("bias", False))).save(sys.argv[2])
PYEOF
    TS=("${GPT[@]}" --set model.kind=torchscript --set model.path="\"$WORK/gpt.pt\"" --set train.precision=bf16 --set train.deterministic=true
        --set train.steps_per_epoch="$GPT_STEPS" --set train.epochs=3 --set checkpoint.every_steps=2)
    if logged "ts straight" "$LIMIT" "$BIN" train --run-dir "$WORK/ts-a" "${TS[@]}" &&
        logged "ts fp32" "$LIMIT" "$BIN" train --run-dir "$WORK/ts-f" "${TS[@]}" --set train.precision=fp32; then
        active="$(cmp -s "$WORK/ts-a/model.safetensors" "$WORK/ts-f/model.safetensors" && echo "NOT ACTIVE (same as fp32)" || echo "active (differs from fp32)")"
        code="$(term_at_commit "ts signal" "$WORK/ts-c" "${TS[@]}")"
        if logged "ts resume" "$LIMIT" "$BIN" train --run-dir "$WORK/ts-c" "${TS[@]}"; then
            s="$(cmp -s "$WORK/ts-a/model.safetensors" "$WORK/ts-c/model.safetensors" && echo bit-identical || echo DIFFERENT)"
            [ "$code" = 143 ] || s="NOT TESTED: the run ended before the signal (exit $code)"
            row "TorchScript GPT bf16, deterministic" "$(tok "$WORK/ts-a") tokens/s; autocast ${active}; SIGTERM + resume: $s"
        else
            row "TorchScript GPT bf16" "$(failed "spotrun train (resume)")"
        fi
    else
        row "TorchScript GPT bf16" "$(failed "spotrun train")"
    fi
else
    row "TorchScript GPT" "SKIPPED (deadline)"
fi

# Fused sweeps: the 16-run grid of BENCHMARKS.md "Fused sweeps" (MLP 64-256-256-10, 4 lr x 4 weight decay) on
# the device, one fused worker against --no-fuse (one process per run, one at a time on the card); wall time and
# mean GPU busy % over each sweep.
# swept NAME VOL ARGS...: a `spotrun sweep` with nvidia-smi sampling; prints "S s, util U".
swept() {
    local name="$1" vol="$2" smi="$REPORT/smi-$1.csv" pid="" rc util="n/a" t0
    shift 2
    if [ "$DRY" = 0 ] && command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 200 > "$smi" 2>/dev/null &
        pid=$!
    fi
    t0=$SECONDS
    logged "$name" "$BENCH_LIMIT" "$BIN" sweep "$WORK/fuse16.toml" --volume "$vol" -q "$@"
    rc=$?
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi
    [ "$rc" = 0 ] || return 1
    [ -s "$smi" ] && util="$(awk '{s+=$1; n++} END {printf "%.0f%%", n ? s/n : 0}' "$smi")"
    echo "$((SECONDS - t0)) s, util ${util}"
}
if time_left; then
    FUSE_EPOCHS=$([ "$DRY" = 1 ] && echo 2 || echo 30)
    cat > "$WORK/fuse16.toml" <<EOF
name = "fuse16"
[base]
data.synthetic = { train = 1437, val = 360, features = 64, classes = 10 }
model.hidden = [256, 256]
train = { epochs = ${FUSE_EPOCHS}, batch_size = 128, device = "${DEV}", precision = "${PREC}" }
[parameters]
"optim.lr" = [0.0003, 0.001, 0.003, 0.01]
"optim.weight_decay" = [0.0, 0.001, 0.01, 0.1]
EOF
    SLOT=(--workers 1); [ "$DRY" = 1 ] || SLOT=(--gpus 0)
    if f="$(swept "fused sweep" "$WORK/fv" "${SLOT[@]}")" && u="$(swept "unfused sweep" "$WORK/uv" "${SLOT[@]}" --no-fuse)"; then
        ratio="$("$PY" -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print(f'{b / max(a, 1):.2f}x')" "${f%% s,*}" "${u%% s,*}")"
        row "fused sweep: 16 MLP runs, ${FUSE_EPOCHS} epochs" "fused ${f}; --no-fuse ${u}; ${ratio} (goal >= 5x)"
    else
        row "fused sweep: 16 MLP runs" "$(failed "spotrun sweep")"
    fi
else
    row "fused sweep" "SKIPPED (deadline)"
fi

echo "($((SECONDS - START)) s in all)" >> "$TABLE"
echo
cat "$TABLE"
! grep -q 'FAILED\|DIFFERENT' "$TABLE"
