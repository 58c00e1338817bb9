#!/usr/bin/env bash
# More fuzz/property inputs than scripts/test.sh runs: N per target (default 5000; the binary target, which
# starts a real `spotrun train` per input, gets N/25). Prints "fuzz <target>: N inputs, 0 panics" per target.
# Usage: scripts/fuzz.sh [N]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "${SPOTRUN_ROOT}"
N="${1:-5000}"
run() {
    local n="$1"
    shift
    SPOTRUN_FUZZ_CASES="${n}" cargo test --release --locked --features test-hooks --test integration fuzz:: -- --nocapture "$@" 2>&1 |
        grep -E '^fuzz |^test result|panicked|minimal failing' -A3
    test "${PIPESTATUS[0]}" -eq 0
}
run "${N}" --skip fuzz_the_binary
run "$(( N / 25 > 1 ? N / 25 : 1 ))" fuzz_the_binary
