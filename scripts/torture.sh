#!/usr/bin/env bash
# The long kill test: SIGKILLs one run N times (default 120) at random moments, checking after every kill that
# each checkpoint directory that looks committed verifies, and at the end that the weights are byte-identical to
# an uninterrupted run. Usage: scripts/torture.sh [KILLS] [SEED]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "${SPOTRUN_ROOT}"
export SPOTRUN_TORTURE_KILLS="${1:-120}" SPOTRUN_TORTURE_SEED="${2:-11400714819323198485}"
cargo build --release --locked --features test-hooks
# The test runs a copy of the binary, so rebuilding target/ while it goes on cannot change it mid-run.
SPOTRUN_TEST_BIN="$(mktemp -d)/spotrun"
cp target/release/spotrun "${SPOTRUN_TEST_BIN}"
export SPOTRUN_TEST_BIN
cargo test --release --locked --features test-hooks --test integration torture_many_sigkills -- --ignored --nocapture
