#!/usr/bin/env bash
# Quick start: install what is missing, build ferrokube, bring up a one-node cluster.
# Extra arguments go to `ferrokube up` (e.g. --data-dir, --secure-port).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferrokube-target}"
scripts/install-deps.sh
cargo build --release
exec "$CARGO_TARGET_DIR/release/ferrokube" up "$@"
