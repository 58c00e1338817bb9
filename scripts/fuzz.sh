#!/usr/bin/env bash
# More fuzz/property inputs than scripts/test.sh runs: N per target (default 5000; the binary target, which
# starts a real `spotrun train` per input, gets N/25). Prints "fuzz <target>: N inputs, 0 panics" per target.
# Usage: scripts/fuzz.sh [N]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "${SPOTRUN_ROOT}"
N="${1:-5000}"
run() { SPOTRUN_FUZZ_CASES="$1" cargo test --release --locked --test integration "$2" -- --nocapture 2>&1 |
    grep -E '^fuzz |^test result|panicked|minimal failing' ; }
run "${N}" "fuzz::fuzz_config fuzz::fuzz_sweep fuzz::fuzz_checkpoint fuzz::fuzz_safetensors" 
run "$(( N / 25 > 1 ? N / 25 : 1 ))" fuzz::fuzz_the_binary
