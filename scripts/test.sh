#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the integration tests
# (real etcd, the real server binary, stock kubectl 1.27 and 1.33).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferrokube-target}"
scripts/install-deps.sh
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
