#!/usr/bin/env bash
# From a fresh clone: install the pinned libtorch if missing, build, and train the built-in default.
# Extra arguments go to `spotrun train`, e.g. scripts/quickstart.sh configs/cnn.toml --set train.epochs=2
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "${SPOTRUN_ROOT}"
cargo build --release --locked
exec ./target/release/spotrun train "$@"
