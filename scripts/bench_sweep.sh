#!/usr/bin/env bash
# Sweep overheads for BENCHMARKS.md:
#  1. launch-to-first-step per run: process start -> first optimizer step of each `spotrun worker` child, as
#     printed by SPOTRUN_PRINT_STARTUP=1 into each run's worker.log (libtorch load, data, model, lease included);
#  2. total throughput of a 4-run sweep with 1 run per CPU slot (2 threads each) against 2 runs per slot
#     (`--per-gpu 2`, 1 thread each), in training samples per second of wall time, launcher included.
# Usage: scripts/bench_sweep.sh [RUNS]   (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
cargo build --release --locked -q
runs=${1:-4}
bin=$PWD/target/release/spotrun
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
lrs=$(python3 -c "print(', '.join(str(1e-3 * (1 + i)) for i in range($runs)))")
train=20000 epochs=3
cat > "$tmp/bench.toml" <<TOML
name = "bench"
[base]
data.synthetic = { train = $train, val = 2000, features = 784 }
model.hidden = [512, 512]
train = { batch_size = 1024, epochs = $epochs }
[parameters]
"optim.lr" = [$lrs]
TOML
samples=$((runs * train * epochs))
measure() { # label, extra args
  local vol="$tmp/vol-$1"; shift
  local t0 t1
  t0=$(date +%s.%N)
  SPOTRUN_PRINT_STARTUP=1 "$bin" sweep "$tmp/bench.toml" --volume "$vol" --quiet "$@" > /dev/null
  t1=$(date +%s.%N)
  local wall starts
  wall=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
  starts=$(cat "$vol"/bench/runs/*/worker.log | sed -n 's/^startup: first step done \([0-9.]*\)s.*/\1/p' | sort -n | tr '\n' ' ')
  python3 - "$wall" "$samples" "$starts" "$*" <<'PY'
import sys, statistics
wall, samples, starts, args = float(sys.argv[1]), int(sys.argv[2]), [float(x) for x in sys.argv[3].split()], sys.argv[4]
print(f"| `{args}` | {wall:.2f} s | {samples / wall:,.0f} samples/s | median {statistics.median(starts):.2f} s (min {min(starts):.2f}, max {max(starts):.2f}) |")
PY
}
echo "| launcher options ($runs runs x $epochs epochs x $train samples) | wall | total throughput | process start -> first step, per run |"
echo "|---|---|---|---|"
measure one --workers 1 --per-gpu 1
measure two --workers 1 --per-gpu 2
measure one-again --workers 1 --per-gpu 1
measure two-again --workers 1 --per-gpu 2
echo
echo "one 'spotrun train' of the same config, for reference:"
SPOTRUN_PRINT_STARTUP=1 "$bin" train --run-dir "$tmp/single" --quiet --set data.synthetic.train=$train \
  --set data.synthetic.val=2000 --set 'model.hidden=[512, 512]' --set train.batch_size=1024 --set train.epochs=1 2>&1 | grep startup
python3 -c "import time; t=time.time(); import torch; print(f'python -c \"import torch\": {time.time()-t:.2f} s (import only)')" 2>/dev/null \
  || "$SPOTRUN_PYTHON" -c "import time; t=time.time(); import torch; print(f'import torch: {time.time()-t:.2f} s')"
