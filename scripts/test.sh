#!/usr/bin/env bash
# Runs the whole test suite (unit, integration against real captures, end-to-end with the
# binary). Installs what is missing first. One release build serves every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --release --locked "$@"
