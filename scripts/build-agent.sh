#!/usr/bin/env bash
# Builds the static binaries capsa puts inside instances and puts them beside the capsa
# binaries, where capsa looks for them:
#   capsa-agent-static  the guest agent, /init of the VM's initramfs (no shared libraries there)
#   capsa-probe-static  `capsa bench`'s overhead probe (the same binary in every isolation)
#   capsa-escape-static `capsa bench --scenario isolation`'s escape probe (likewise)
#   capsa-init-static   what `--init` and `exec` start a workload through (from a sealed
#                       memfd inside the container; in the VM's initramfs as /capsa-init)
#   scripts/build-agent.sh   (release builds; both target/debug and target/release get a copy)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# A target dir of its own: crt-static applies to everything compiled for the target, which must
# not touch the host binaries' build (build scripts and proc-macros stay dynamic with --target).
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -q -p capsa-agent -p capsa-probe -p capsa-init -p capsa-escape \
  --target x86_64-unknown-linux-gnu --target-dir target/agent
out=target/agent/x86_64-unknown-linux-gnu/release
# Named apart from cargo's own (dynamic) target/*/capsa-agent, which a later build may refresh.
for dir in target/debug target/release; do
  mkdir -p "$dir"
  for bin in capsa-agent capsa-probe capsa-init capsa-escape; do
    install -m 0755 "$out/$bin" "$dir/$bin-static"
    strip "$dir/$bin-static" 2>/dev/null || true
  done
done
echo "$out/capsa-agent"
