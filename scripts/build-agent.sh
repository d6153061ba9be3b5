#!/usr/bin/env bash
# Builds the guest agent as a static binary (it is /init of the VM's initramfs, where no shared
# libraries exist) and puts it beside the capsa binaries, where capsa looks for it.
#   scripts/build-agent.sh [debug|release]   (default: release; both target dirs get a copy)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# A target dir of its own: crt-static applies to everything compiled for the target, which must
# not touch the host binaries' build (build scripts and proc-macros stay dynamic with --target).
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -q -p capsa-agent \
  --target x86_64-unknown-linux-gnu --target-dir target/agent
agent=target/agent/x86_64-unknown-linux-gnu/release/capsa-agent
# Named apart from cargo's own (dynamic) target/*/capsa-agent, which a later build may refresh.
for dir in target/debug target/release; do
  mkdir -p "$dir"
  install -m 0755 "$agent" "$dir/capsa-agent-static"
  strip "$dir/capsa-agent-static" 2>/dev/null || true
done
echo "$agent"
