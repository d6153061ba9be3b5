#!/usr/bin/env bash
# README's test command: sets the machine up, checks formatting and lints, builds, and runs
# every test (unit tests and the end-to-end tests in tests/, which need root).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The end-to-end tests drive target/debug/capsa, so it is built first.
cargo build --workspace --bins
cargo test --workspace
