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
# The VM isolation's pieces: the static guest agent (beside the capsa binaries) and the guest
# kernel (cached after the first build, about 4 minutes on 2 cores). The freestanding test
# guest of capsa-vmm's tests is compiled by those tests with gcc.
scripts/build-agent.sh >/dev/null
CAPSA_KERNEL=$(kernel-config/build.sh | tail -n 1)
export CAPSA_KERNEL
cargo test --workspace --no-fail-fast
