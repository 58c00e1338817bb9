#!/usr/bin/env bash
# More fuzz/property inputs than scripts/test.sh runs: N per in-process target (default 20000; config TOML and
# --set values, sweep files, manifests, tensor files, data-file headers, .npy/.npz/Parquet data files, sweep-volume
# records, tokenizer.json files, PNG and JPEG bytes) and N/100 for the target that starts a real `spotrun train` per input. Prints
# "fuzz <target>: N inputs, 0 panics" per target.
# Usage: scripts/fuzz.sh [N]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "${SPOTRUN_ROOT}"
N="${1:-20000}"
run() {
    local n="$1" filter="$2"
    shift 2
    SPOTRUN_FUZZ_CASES="${n}" cargo test --release --locked --features test-hooks --test integration "${filter}" \
        -- --nocapture "$@" > "${TMPDIR:-/tmp}/spotrun-fuzz.log" 2>&1 || {
        grep -E 'panicked|minimal failing|Test failed' -A20 "${TMPDIR:-/tmp}/spotrun-fuzz.log" >&2
        exit 1
    }
    grep -E '^fuzz |^test result' "${TMPDIR:-/tmp}/spotrun-fuzz.log"
}
run "${N}" fuzz:: --skip fuzz_the_binary
# The study's journal (damaged, reordered, duplicated records), an in-crate target.
SPOTRUN_FUZZ_CASES="${N}" cargo test --release --locked --features test-hooks --lib study::fuzz -- --nocapture 2>&1 \
    | grep -E '^fuzz |^test result|panicked'
run "$(( N / 100 > 1 ? N / 100 : 1 ))" fuzz::fuzz_the_binary
