#!/usr/bin/env bash
# Byte-equal behaviour of two spotrun binaries (issue 21): runs four tiny scenarios with each binary, in fresh
# temporary directories, and compares per run: the final weights (sha256 of model.safetensors), metrics.jsonl
# without its wall-clock fields (epoch_seconds, samples_per_sec, tokens_per_sec), every checkpoint (step, reason,
# epoch, batch, the CRC32 of its files; checkpoint.keep_last = 100 keeps them all) and, for sweeps, the step each
# attempt started from. Prints one SAME/DIFFERENT line per scenario (with a diff under DIFFERENT) and exits 1 on any
# difference, 2 when a scenario could not be run as meant (its precondition was not observed).
#
#   (a) a single run (dropout on, checkpoints mid-epoch);
#   (b) a fused group: a 4-run sweep (optim.lr x optim.weight_decay) trained as one fused model;
#   (c) the same group preempted, then finished with --no-fuse: SIGTERM to the worker and the launcher once run #0's
#       epoch-1 line is in its metrics.jsonl while its step-14 checkpoint (written in the background, each file held
#       1 s by SPOTRUN_TEST_WRITE_DELAY_MS) has not committed: the group is inside its epoch-end save, which waits
#       for that write before it checks for a signal, so both binaries stop at the same point (the start of epoch 2);
#   (d) the same group halving on out of memory (SPOTRUN_TEST_FUSED_OOM_ABOVE=2: 4 runs fail, 2 at a time fit).
#
# Both binaries must be built with `--features test-hooks` ((c) and (d) use the hooks).
# Usage: scripts/compare-binaries.sh OLD_BIN NEW_BIN    (e.g. an af925fa build against target/release/spotrun)
# SPOTRUN_COMPARE_SCENARIOS="a c" runs only those scenarios.
set -euo pipefail

if [ $# -ne 2 ] || [ ! -x "$1" ] || [ ! -x "$2" ]; then
    echo "usage: scripts/compare-binaries.sh OLD_BIN NEW_BIN (two executable spotrun binaries)" >&2
    exit 2
fi
old=$(realpath "$1")
new=$(realpath "$2")
for tool in jq sha256sum; do
    command -v "$tool" > /dev/null || { echo "error: $tool is needed" >&2; exit 2; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

SETS=(--set data.synthetic.train=1000 --set data.synthetic.val=200 --set data.synthetic.features=16
      --set 'model.hidden=[16]' --set model.dropout=0.1 --set train.batch_size=50 --set train.epochs=3
      --set train.threads=1 --set checkpoint.every_steps=7 --set checkpoint.keep_last=100)

cat > "$tmp/group.toml" << 'TOML'
name = "group"
[base]
data.synthetic = { train = 1000, val = 200, features = 16 }
model.hidden = [16]
train = { batch_size = 50, epochs = 3, threads = 1 }
checkpoint = { every_steps = 7, keep_last = 100 }
[parameters]
"optim.lr" = [0.001, 0.01]
"optim.weight_decay" = [0.0, 0.1]
TOML

die() { echo "error: $*" >&2; exit 2; }

# What is compared of one run directory.
digest_run() {
    local run=$1 c
    echo "weights $(sha256sum < "$run/model.safetensors" | cut -d' ' -f1)"
    jq -cS 'del(.epoch_seconds, .samples_per_sec, .tokens_per_sec)' "$run/metrics.jsonl" | sed 's/^/metrics /'
    for c in "$run"/checkpoints/ckpt-*; do
        [ -f "$c/manifest.json" ] || continue
        jq -r '"checkpoint step \(.step) \(.reason) epoch \(.epoch) batch \(.batch) "
               + ([.files[] | "\(.name)=\(.crc32)"] | join(" "))' "$c/manifest.json"
    done
    if [ -f "$run/attempts.jsonl" ]; then
        echo "attempts $(jq -r 'select(.event == "start") | .step' "$run/attempts.jsonl" | tr '\n' ' ')"
    fi
}

# Every run of a sweep volume, in sweep order.
digest_sweep() {
    local dir=$1 i=0 id
    for id in $(jq -r '.runs[].id' "$dir/sweep.json"); do
        echo "== run $i ${id:0:8}"
        digest_run "$dir/runs/$id"
        i=$((i + 1))
    done
}

# Polls (10 ms) until "$@" succeeds; dies after 120 s.
wait_for() {
    local what=$1 deadline=$((SECONDS + 120))
    shift
    until "$@"; do
        [ $SECONDS -lt $deadline ] || die "timed out waiting for $what"
        sleep 0.01
    done
}

# The group is inside run #0's epoch-1 save: its epoch line is written (that comes first), and it waits there for
# its step-14 checkpoint, still being written in the background (held by the delay hook), before it checks for a
# signal. A signal now stops every member at the start of epoch 2, with either binary.
inside_epoch_end_save() {
    [ -s "$1/metrics.jsonl" ] && [ ! -f "$1/checkpoints/ckpt-0000000014/manifest.json" ]
}

fused_log() { cat "$1"/groups/*.log 2> /dev/null || true; }

scenario_a() { # BIN WORK
    "$1" train --run-dir "$2/run" "${SETS[@]}" > "$2/out" 2>&1 || die "(a) $1 failed: $(tail -3 "$2/out")"
    digest_run "$2/run"
}

scenario_b() {
    "$1" sweep "$tmp/group.toml" --volume "$2/vol" --workers 1 > "$2/out" 2>&1 || die "(b) $1 failed: $(tail -3 "$2/out")"
    fused_log "$2/vol/group" | grep -q "training 4 runs as one fused model" || die "(b) $1: the 4 runs did not fuse"
    digest_sweep "$2/vol/group"
}

scenario_c() {
    local pid worker run0 rc=0 r
    SPOTRUN_TEST_WRITE_DELAY_MS=1000 "$1" sweep "$tmp/group.toml" --volume "$2/vol" --workers 1 > "$2/out" 2>&1 &
    pid=$!
    wait_for "(c) $1: the sweep plan" test -s "$2/vol/group/sweep.json"
    run0="$2/vol/group/runs/$(jq -r '.runs[0].id' "$2/vol/group/sweep.json")"
    wait_for "(c) $1: the group inside its epoch-1 save" inside_epoch_end_save "$run0"
    # The worker gets the signal at once; the launcher (which would pass it on at its next poll, up to 100 ms
    # later) gets it too, so that it stops instead of starting the group again.
    worker=$(pgrep -P "$pid") || die "(c) $1: the launcher has no worker"
    kill -TERM "$worker" "$pid"
    wait "$pid" || rc=$?
    [ $rc -eq 143 ] || die "(c) $1: the preempted launcher exited $rc, not 143: $(tail -3 "$2/out")"
    fused_log "$2/vol/group" | grep -q "training 4 runs as one fused model" || die "(c) $1: the 4 runs did not fuse"
    for r in "$2"/vol/group/runs/*; do
        jq -e 'select(.outcome == "preempted")' "$r/attempts.jsonl" > /dev/null \
            || die "(c) $1: $(basename "$r") was not preempted: the signal missed the epoch-end save"
    done
    "$1" sweep "$tmp/group.toml" --volume "$2/vol" --workers 1 --no-fuse > "$2/out2" 2>&1 \
        || die "(c) $1: the --no-fuse relaunch failed: $(tail -3 "$2/out2")"
    digest_sweep "$2/vol/group"
}

scenario_d() {
    SPOTRUN_TEST_FUSED_OOM_ABOVE=2 "$1" sweep "$tmp/group.toml" --volume "$2/vol" --workers 1 > "$2/out" 2>&1 \
        || die "(d) $1 failed: $(tail -3 "$2/out")"
    fused_log "$2/vol/group" | grep -q "4 runs fused do not fit" || die "(d) $1: the group did not halve"
    digest_sweep "$2/vol/group"
}

different=0
for s in ${SPOTRUN_COMPARE_SCENARIOS:-a b c d}; do
    case $s in
        a) title="(a) single run" ;;
        b) title="(b) fused group of 4" ;;
        c) title="(c) fused group preempted in its epoch-1 save, resumed --no-fuse" ;;
        d) title="(d) fused group halving on out of memory" ;;
    esac
    for side in old new; do
        mkdir -p "$tmp/$s-$side"
        bin=$old
        [ $side = new ] && bin=$new
        "scenario_$s" "$bin" "$tmp/$s-$side" > "$tmp/$s-$side.digest"
    done
    if diff -u "$tmp/$s-old.digest" "$tmp/$s-new.digest" > "$tmp/$s.diff"; then
        echo "$title: SAME ($(grep -c '^weights' "$tmp/$s-old.digest") run(s), $(grep -c '^checkpoint' "$tmp/$s-old.digest") checkpoints)"
    else
        echo "$title: DIFFERENT"
        sed 's/^/    /' "$tmp/$s.diff"
        different=1
    fi
done
exit $different
