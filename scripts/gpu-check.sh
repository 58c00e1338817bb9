#!/usr/bin/env bash
# Every GPU check in one call, for a GPU machine that has PyTorch 2.11 but no Rust toolchain.
#
# Build here first (scripts/test.sh, or `cargo build --release && cargo bench --no-run`, which names the bench
# binaries), carry three files to the GPU machine, target/release/spotrun and the
# target/release/deps/train_throughput-<hash> and gpt_throughput-<hash> it names (~14 MB together; all of
# target/release is GBs), then run
#   OUT=<dir> scripts/gpu-check.sh        (the device tool: timeout_s 580; the script stops itself at 500 s)
#
# It prints a table (and writes it to $OUT/gpu-check.md, with every command's output in $OUT/gpu-check.log),
# correctness first, so that a call cut short still answers whether the GPU path is right:
#   - versions: NVIDIA driver, CUDA runtime (torch's build), torch, cuDNN, Python; the device as spotrun sees it
#     (`spotrun devices`: the driver's CUDA version and the one libtorch was built for);
#   - the data: the synthetic 784-feature task written once to a safetensors file (GPU_CHECK_N samples, 1.6 GB),
#     which every throughput row reads instead of generating it again in each process;
#   - correctness: bit-identical resume under train.deterministic = true (stopped at an epoch end, and by SIGTERM
#     mid-run), the CNN under train.deterministic, an fp16 + dynamic grad scaler run, the GPT of
#     configs/gpt_shakespeare_char.toml (SIGTERM + resume, deterministic), the same GPT exported with
#     torch.jit.script and trained as model.kind = "torchscript" in bf16 (tokens/s, whether autocast reached
#     inside the module, exact resume after SIGTERM);
#   - throughput: MLP 784-1024-1024-10 and the CNN at batch 8192 bf16, data on the GPU: samples/s, mean GPU
#     utilisation while training (nvidia-smi, every 200 ms), peak memory used on the card (nvidia-smi: includes
#     the CUDA context, the dataset and the caching allocator's reserve); the same models in PyTorch eager on the
#     same data, back to back (benches/train_throughput.rs; eager uses torch's default AdamW, spotrun the fused
#     kernel; for the CNN also eager with channels-last); what checkpointing every epoch costs; the GPT (6x384,
#     block 256, batch 64) on the built-in token stream, bf16: tokens/s, MFU ((6*N + 12*L*C*T) FLOPs per token
#     over the card's dense bf16 peak, nanoGPT's estimate), GPU busy %, peak memory, the PyTorch-eager ratio
#     (benches/gpt_throughput.rs); a 16-run fused sweep (MLP 64-256-256-10) against --no-fuse.
# Each measured run is sized by a short calibration run to last about GPU_CHECK_TARGET_S seconds, so a fast
# card is not measured on start-up noise. Every step has its own time limit and the whole script a deadline;
# a failed step becomes a FAILED row instead of ending the script, and rows are written to gpu-check.md as they
# come (with the second each was written, the "s" column), so even a killed call brings back what it measured.
#
# The deadline, estimated before any GPU has run this (an H100; the "s" column of the first real table
# recalibrates it), from the steps of a dry run's log: ~43 spotrun process starts (27 steps, plus the 16
# one-process runs of the --no-fuse sweep) at ~4 s each (libtorch load, CUDA context, cuBLAS/cuDNN set-up, reading
# the 1.6 GB file) = ~170 s; ~12 Python starts with torch (versions, the data, the TorchScript export, the eager
# sides of the benches) at ~5 s = ~60 s; measured training: 3 x 8 s (MLP, CNN, GPT) plus their calibration runs
# and 2 bench rounds of ~3 s a side per model = ~70 s; the deterministic GPT and TorchScript runs (7 x 150 small
# steps), the checkpoint runs and the sweeps' own compute = ~50 s; writing the data ~15 s. About 370 s in all:
# GPU_CHECK_DEADLINE_S = 500 keeps ~130 s in reserve and still ends before a 580 s device call does (a lent
# session is 15 minutes, including the machine's start).
#
#   --dry   every step on the CPU with tiny sizes (scripts/test.sh runs this, so the script cannot rot); it fails
#           unless every row printed a result and none was SKIPPED.
# Python: the first of $TORCH_VENV, /opt/torch/.venv, the spotrun set-up venv, python3 that is 3.10 or newer and
# imports torch (no tomllib needed: scripts/gpu_check.py reads the TOML it needs itself on 3.10).
# Env: TORCH_VENV, SPOTRUN_BIN, SPOTRUN_BENCH_BIN, SPOTRUN_GPT_BENCH_BIN,
#      OUT (table and logs; run directories, which hold GBs of checkpoints, stay in a temp dir that is removed),
#      GPU_CHECK_TARGET_S (8), GPU_CHECK_N (training samples, 524288), GPU_CHECK_DEADLINE_S (500).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY=0
[ "${1:-}" = "--dry" ] && DRY=1
START=$SECONDS
HELP="${ROOT}/scripts/gpu_check.py"

# find_python: the first candidate that is Python >= 3.10 and imports torch; says why the others were not taken.
find_python() {
    local p v tried=()
    for p in ${TORCH_VENV:+"${TORCH_VENV}/bin/python"} /opt/torch/.venv/bin/python \
        "${SPOTRUN_TORCH_VENV:-${HOME}/.cache/spotrun/torch-2.11.0}/bin/python" "$(command -v python3 || true)"; do
        [ -n "$p" ] && [ -x "$p" ] || continue
        v="$("$p" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)"
        if ! "$p" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            tried+=("$p is Python ${v:-?}")
        elif ! "$p" -c 'import torch' 2>/dev/null; then
            tried+=("$p (Python $v) has no torch")
        else
            echo "$p"
            return 0
        fi
    done
    local why
    why="$([ "${#tried[@]}" = 0 ] && echo "no candidate" || printf '%s, ' "${tried[@]}")"
    echo "gpu-check: no Python >= 3.10 with torch found (${why%, }); set TORCH_VENV to a venv that has one" >&2
    return 1
}
PY="$(find_python)" || exit 1
TORCH_LIB="$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')" ||
    { echo "gpu-check: torch does not load in ${PY}" >&2; exit 1; }
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
    LIMIT=120; BENCH_LIMIT=300; DEADLINE=600; PLACE=(); FP16_EPOCHS=2
    CNN=(--set data.shape=[1,28,28] --set model.kind=cnn --set model.hidden=[32] --set model.channels=[4,8])
    CNN_SETS="data.shape=[1,28,28];model.hidden=[32];model.channels=[4,8]"
    CNN_DESC="CNN conv 4-8 fc 32"; CK_EPOCHS=3
else
    DEV=cuda; PREC=bf16; N="${GPU_CHECK_N:-524288}"; VAL=10000; BATCH=8192; TARGET="${GPU_CHECK_TARGET_S:-8}"
    BENCH_TARGET=3; ROUNDS=2; MAX_EPOCHS=400; LIMIT=120; BENCH_LIMIT=200; DEADLINE="${GPU_CHECK_DEADLINE_S:-500}"
    PLACE=(--set data.on_device=true)  # on the GPU as the eager side is; fail loudly rather than measure the host
    FP16_EPOCHS=3
    CNN=(--set data.shape=[1,28,28] --set model.kind=cnn --set model.hidden=[128] --set model.channels=[32,64])
    CNN_SETS=""  # the bench's own CNN is conv 32-64 fc 128
    CNN_DESC="CNN conv 32-64 fc 128"; CK_EPOCHS=10
fi
DETN=$(( N < 65536 ? N : 65536 ))
DATA="$WORK/data.safetensors"
# log_every=0: no host sync for progress inside an epoch, as in the bench.
BASE=(--quiet --set train.device="$DEV" --set train.precision="$PREC" --set train.batch_size="$BATCH"
      --set train.log_every=0 "${PLACE[@]}")
# The throughput rows' data: the file written once below.
COMMON=("${BASE[@]}" --set data.source=\"safetensors\" --set data.path="\"$DATA\"")
TABLE="$REPORT/gpu-check.md"
{
    echo "spotrun gpu-check $(date -u +%Y-%m-%dT%H:%MZ) $([ "$DRY" = 1 ] && echo '(DRY RUN on the CPU: numbers mean nothing)')"
    echo "| check | result | s |"
    echo "|---|---|---|"
} > "$TABLE"
ROWS=0
row() {
    ROWS=$((ROWS + 1))
    printf '| %-52s | %s | %d |\n' "$1" "$2" "$((SECONDS - START))" >> "$TABLE"
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
# Median samples/s (tokens/s: tok) over the epochs after the first, from a run directory's metrics.jsonl.
rate() { "$PY" "$HELP" rate "$1" samples_per_sec; }
tok() { "$PY" "$HELP" rate "$1" tokens_per_sec; }
# epochs RATE SECONDS: epochs of N samples that train for about SECONDS at RATE, plus the untimed first one.
epochs() { "$PY" -c "import math; print(max(2, min($MAX_EPOCHS, math.ceil($2 * $1 / $N) + 1)))"; }
last_cost() { grep '^checkpoints: ' "$LOG" | tail -n 1 | sed 's/^checkpoints: //'; }
same() { cmp -s "$1/model.safetensors" "$2/model.safetensors" && echo bit-identical || echo DIFFERENT; }
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
# smi_start FILE FIELDS: nvidia-smi sampling every 200 ms into FILE (GPU mode only); sets SMI_PID.
smi_start() {
    SMI_PID=""
    if [ "$DRY" = 0 ] && command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu="$2" --format=csv,noheader,nounits -lms 200 > "$1" 2>/dev/null &
        SMI_PID=$!
    fi
}
smi_stop() { if [ -n "$SMI_PID" ]; then kill "$SMI_PID" 2>/dev/null; wait "$SMI_PID" 2>/dev/null; fi; }

# sampled NAME DIR ARGS...: a `spotrun train` with nvidia-smi sampling; prints "R samples/s, util U, peak M".
sampled() {
    local name="$1" dir="$2" smi="$REPORT/smi-$1.csv" rc util="n/a" mem="n/a"
    shift 2
    smi_start "$smi" utilization.gpu,memory.used
    logged "$name" "$LIMIT" "$BIN" train --run-dir "$dir" "$@"
    rc=$?
    smi_stop
    [ "$rc" = 0 ] || return 1
    if [ -s "$smi" ]; then
        # Mean over the window from the first to the last busy sample (start-up and exit excluded).
        util="$(awk -F', *' '{u[NR]=$1} $1>0 {if (!a) a=NR; b=NR} END {if (!a) {print "0%"; exit} for (i=a; i<=b; i++) s+=u[i]; printf "%.0f%%", s/(b-a+1)}' "$smi")"
        mem="$(awk -F', *' '$2>m {m=$2} END {printf "%d MiB", m}' "$smi")"
    fi
    echo "$(rate "$dir") samples/s, util ${util}, peak ${mem}"
}

# ---- What runs here.
row "versions" "$("$PY" "$HELP" versions 2>&1 | tail -n 1)"
DEVICES="$("$BIN" devices 2>&1)"
row "device" "$(echo "$DEVICES" | head -n 1); $(echo "$DEVICES" | grep -E '^(driver|libtorch sees)' | paste -sd';' | sed 's/;/; /')"
if [ "$DRY" = 0 ] && ! echo "$DEVICES" | grep -q '^libtorch sees [1-9]'; then
    row "CUDA in libtorch" "$(failed "libtorch sees no CUDA device; nothing else can be measured. $(echo "$DEVICES" | grep '^warning' | cut -c1-400)")"
    cat "$TABLE"
    exit 1
fi

# ---- The data of every throughput row, written once (generating 1.6 GB in each process took seconds each).
t0=$SECONDS
if logged "data" "$LIMIT" "$PY" "$HELP" data "$DATA" "$N" "$VAL" 784; then
    row "data: $N x 784 + $VAL val, synthetic, one safetensors file" "$(( $(stat -c %s "$DATA") >> 20 )) MiB in $((SECONDS - t0)) s"
else
    row "data: $N x 784 synthetic" "$(failed "scripts/gpu_check.py data")"
fi

# ---- Correctness first: a call cut short still says whether the GPU path is right.
# Bit-identical resume: the straight run against (a) 1 epoch, then the same command with more epochs and
# (b) a SIGTERM part-way through the run, then the same command. Small data: these measure nothing.
DET_EPOCHS=$([ "$DRY" = 1 ] && echo 3 || echo 6)
DET=("${BASE[@]}" --set data.synthetic.train="$DETN" --set data.synthetic.val="$VAL" --set train.deterministic=true
     --set model.dropout=0.1 --set checkpoint.every_steps=3)
if logged "det straight" "$LIMIT" "$BIN" train --run-dir "$WORK/det-a" "${DET[@]}" --set train.epochs=$DET_EPOCHS; then
    if logged "det 1 epoch" "$LIMIT" "$BIN" train --run-dir "$WORK/det-b" "${DET[@]}" --set train.epochs=1 &&
        logged "det extend" "$LIMIT" "$BIN" train --run-dir "$WORK/det-b" "${DET[@]}" --set train.epochs=$DET_EPOCHS; then
        row "resume at an epoch end vs straight, deterministic" "$(same "$WORK/det-a" "$WORK/det-b")"
    else
        row "resume at an epoch end vs straight, deterministic" "$(failed "spotrun train")"
    fi
    # Signalled as soon as the first checkpoint commits (step 3 of epoch 1).
    code="$(term_at_commit "det signal" "$WORK/det-c" "${DET[@]}" --set train.epochs=$DET_EPOCHS)"
    at="$(ls -d "$WORK"/det-c/checkpoints/*/ 2>/dev/null | sort | tail -n 1)"
    where="$("$PY" "$HELP" where "$at" 2>/dev/null)"
    if logged "det resume" "$LIMIT" "$BIN" train --run-dir "$WORK/det-c" "${DET[@]}" --set train.epochs=$DET_EPOCHS; then
        s="$(same "$WORK/det-a" "$WORK/det-c")"
        # Only a run the signal stopped (exit 143) before its final save tested anything.
        [ "$code" = 143 ] && [ "${where##*, }" != final ] || s="NOT TESTED: the run ended before the signal"
        row "SIGTERM (exit $code, saved at ${where:-?}), resume" "$s"
    else
        row "SIGTERM mid-run, resume" "$(failed "spotrun train")"
    fi
else
    row "deterministic run" "$(failed "spotrun train")"
    row "SIGTERM mid-run, resume" "$(failed "no straight run to compare with")"
fi
if logged "cnn deterministic" "$LIMIT" "$BIN" train --run-dir "$WORK/det-cnn" "${BASE[@]}" "${CNN[@]}" \
    --set data.synthetic.train="$DETN" --set data.synthetic.val="$VAL" --set train.deterministic=true --set train.epochs=1; then
    row "CNN under train.deterministic" "runs"
else
    row "CNN under train.deterministic" "error: $(grep '^error' "$LOG" | tail -n 1 | cut -c1-160)"
fi

if res="$(sampled fp16 "$WORK/fp16" "${COMMON[@]}" --set train.precision=fp16 --set train.epochs="$FP16_EPOCHS" \
    --set checkpoint.every_epochs=0)"; then
    row "MLP fp16 + dynamic grad scaler ($FP16_EPOCHS epochs x $N)" "$res, $("$PY" "$HELP" last "$WORK/fp16")"
else
    row "MLP fp16 + dynamic grad scaler" "$(failed "spotrun train")"
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
GD=("${GPT[@]}" --set train.deterministic=true --set train.steps_per_epoch="$GPT_STEPS" --set train.epochs=3
    --set checkpoint.every_steps=2)
if logged "gpt det straight" "$LIMIT" "$BIN" train --run-dir "$WORK/gpt-a" "${GD[@]}"; then
    code="$(term_at_commit "gpt det signal" "$WORK/gpt-c" "${GD[@]}")"
    if logged "gpt det resume" "$LIMIT" "$BIN" train --run-dir "$WORK/gpt-c" "${GD[@]}"; then
        s="$(same "$WORK/gpt-a" "$WORK/gpt-c")"
        [ "$code" = 143 ] || s="NOT TESTED: the run ended before the signal (exit $code)"
        row "GPT SIGTERM (exit $code) + resume vs straight, deterministic" "$s"
    else
        row "GPT SIGTERM + resume, deterministic" "$(failed "spotrun train")"
    fi
else
    row "GPT deterministic run" "$(failed "spotrun train")"
fi

# The user's own module: SpotrunGPT scripted at the GPT rows' shape, trained through model.kind = "torchscript".
logged "ts export" "$LIMIT" "$PY" "$HELP" script-gpt "$WORK/gpt.toml" "$WORK/gpt.pt" "$ROOT/scripts" "$DRY"
TS=("${GPT[@]}" --set model.kind=torchscript --set model.path="\"$WORK/gpt.pt\"" --set train.precision=bf16 --set train.deterministic=true
    --set train.steps_per_epoch="$GPT_STEPS" --set train.epochs=3 --set checkpoint.every_steps=2)
if logged "ts straight" "$LIMIT" "$BIN" train --run-dir "$WORK/ts-a" "${TS[@]}" &&
    logged "ts fp32" "$LIMIT" "$BIN" train --run-dir "$WORK/ts-f" "${TS[@]}" --set train.precision=fp32; then
    active="$(cmp -s "$WORK/ts-a/model.safetensors" "$WORK/ts-f/model.safetensors" && echo "NOT ACTIVE (same as fp32)" || echo "active (differs from fp32)")"
    code="$(term_at_commit "ts signal" "$WORK/ts-c" "${TS[@]}")"
    if logged "ts resume" "$LIMIT" "$BIN" train --run-dir "$WORK/ts-c" "${TS[@]}"; then
        s="$(same "$WORK/ts-a" "$WORK/ts-c")"
        [ "$code" = 143 ] || s="NOT TESTED: the run ended before the signal (exit $code)"
        row "TorchScript GPT bf16, deterministic" "$(tok "$WORK/ts-a") tokens/s; autocast ${active}; SIGTERM + resume: $s"
    else
        row "TorchScript GPT bf16" "$(failed "spotrun train (resume)")"
    fi
else
    row "TorchScript GPT bf16" "$(failed "spotrun train")"
fi

# ---- Throughput.
for m in mlp cnn; do
    if [ "$m" = cnn ]; then ARGS=("${COMMON[@]}" "${CNN[@]}"); DESC="$CNN_DESC"; else ARGS=("${COMMON[@]}"); DESC="MLP 784-1024-1024-10"; fi
    DESC="${DESC}, batch ${BATCH} ${PREC}"
    if ! time_left; then row "$DESC" "SKIPPED (deadline)"; row "vs PyTorch eager: $m" "SKIPPED (deadline)"; continue; fi
    if ! logged "$m calibration" "$LIMIT" "$BIN" train --run-dir "$WORK/$m-cal" "${ARGS[@]}" \
        --set train.epochs=2 --set checkpoint.every_epochs=0; then
        row "$DESC" "$(failed "calibration run")"
        row "vs PyTorch eager: $m" "$(failed "no calibration")"
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
    SETS="data.source=\"safetensors\";data.path=\"$DATA\";train.batch_size=$BATCH${PLACE[*]:+;data.on_device=true}"
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

# What checkpointing every epoch costs (MLP: 7.5 MB of weights + 15 MB of AdamW state per save). On a fast card an
# epoch of N samples is short, so read the per-save cost; long epochs make it a small fraction. Process wall time
# would be mostly start-up: compare the loop times from the "checkpoints:" lines.
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
        row "checkpoint every epoch, sync" "$(failed "spotrun train")"
        row "checkpoint every epoch, async" "$(failed "spotrun train")"
    fi
else
    row "checkpoint every epoch, sync" "SKIPPED (deadline)"
    row "checkpoint every epoch, async" "SKIPPED (deadline)"
fi

if time_left; then
    if logged "gpt calibration" "$LIMIT" "$BIN" train --run-dir "$WORK/gpt-cal" "${GPT[@]}" --set train.epochs=2 \
        --set train.steps_per_epoch="$GPT_STEPS" --set checkpoint.every_epochs=0; then
        T0="$(tok "$WORK/gpt-cal")"
        EP="$("$PY" -c "import math; print(max(2, min(40, math.ceil($TARGET * $T0 / ($GPT_STEPS * 64 * 256)) + 1)))")"
        if res="$(sampled gpt "$WORK/gpt" "${GPT[@]}" --set train.epochs="$EP" --set train.steps_per_epoch="$GPT_STEPS" \
            --set checkpoint.every_epochs=0)"; then
            T="$(tok "$WORK/gpt")"
            mfu="$("$PY" "$HELP" mfu "$WORK/gpt/config.toml" "$T" "$(echo "$DEVICES" | head -n 1)")"
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

# Fused sweeps: the 16-run grid of BENCHMARKS.md "Fused sweeps" (MLP 64-256-256-10, 4 lr x 4 weight decay) on
# the device, one fused worker against --no-fuse (one process per run, one at a time on the card); wall time and
# mean GPU busy % over each sweep; and the fused sweep again with the step's other form.
# swept NAME VOL ARGS...: a `spotrun sweep` with nvidia-smi sampling; prints "S s, util U".
swept() {
    local name="$1" vol="$2" smi="$REPORT/smi-$1.csv" rc util="n/a" t0
    shift 2
    smi_start "$smi" utilization.gpu
    t0=$SECONDS
    logged "$name" "$BENCH_LIMIT" "$BIN" sweep "${SWEEP_FILE:-$WORK/fuse16.toml}" --volume "$vol" -q "$@"
    rc=$?
    smi_stop
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
train = { epochs = ${FUSE_EPOCHS}, batch_size = 128, device = "${DEV}", precision = "${PREC}", fused_step = "batched" }
[parameters]
"optim.lr" = [0.0003, 0.001, 0.003, 0.01]
"optim.weight_decay" = [0.0, 0.001, 0.01, 0.1]
EOF
    # The same grid with the step's other form (train.fused_step = "per_run": 16 AdamW kernel calls and 17 losses a
    # step instead of 1 and 1): which of the two is faster on a GPU decides `auto` there (BENCHMARKS.md).
    sed 's/fused_step = "batched"/fused_step = "per_run"/' "$WORK/fuse16.toml" > "$WORK/fuse16-per-run.toml"
    SLOT=(--workers 1); [ "$DRY" = 1 ] || SLOT=(--gpus 0)
    if f="$(swept "fused sweep" "$WORK/fv" "${SLOT[@]}")" && u="$(swept "unfused sweep" "$WORK/uv" "${SLOT[@]}" --no-fuse)" \
        && p="$(SWEEP_FILE="$WORK/fuse16-per-run.toml" swept "fused sweep per run" "$WORK/pv" "${SLOT[@]}")"; then
        ratio="$("$PY" -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print(f'{b / max(a, 1):.2f}x')" "${f%% s,*}" "${u%% s,*}")"
        row "fused sweep: 16 MLP runs, ${FUSE_EPOCHS} epochs" "fused, batched step ${f}; fused, per-run step ${p}; --no-fuse ${u}; batched vs --no-fuse ${ratio} (goal >= 5x)"
    else
        row "fused sweep: 16 MLP runs" "$(failed "spotrun sweep")"
    fi
else
    row "fused sweep: 16 MLP runs" "SKIPPED (deadline)"
fi

echo "($((SECONDS - START)) s in all, deadline ${DEADLINE} s)" >> "$TABLE"
echo
cat "$TABLE"
# Every row above, in the order written: a missing or extra row means a branch printed the wrong number.
EXPECTED_ROWS=18
if [ "$ROWS" != "$EXPECTED_ROWS" ]; then
    echo "gpu-check: ${ROWS} rows, expected ${EXPECTED_ROWS}" >&2
    exit 1
fi
if [ "$DRY" = 1 ] && grep -q 'SKIPPED' "$TABLE"; then
    echo "gpu-check --dry: a row was SKIPPED: the dry run must finish every row within its ${DEADLINE} s deadline" >&2
    exit 1
fi
! grep -q 'FAILED\|DIFFERENT' "$TABLE"
