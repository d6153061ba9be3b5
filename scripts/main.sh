#!/usr/bin/env bash
# README's main command: sets up, builds capsa, the guest agent and the guest kernel, imports
# the busybox image, and runs it side by side in both isolations with `capsa compare`; then
# measures both isolations and the peers with `capsa bench --quick` (report in
# target/bench-quick; the full suite is `capsa bench`, report in docs/benchmarks).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/setup.sh
cargo build --release --workspace --bins
scripts/build-agent.sh >/dev/null
CAPSA_KERNEL=$(kernel-config/build.sh | tail -n 1)
export CAPSA_KERNEL
capsa=target/release/capsa
if ! "$capsa" images | grep -q '^busybox '; then
  tar=$(mktemp --suffix=.tar)
  scripts/make-busybox-rootfs.sh "$tar"
  "$capsa" import -c 'CMD ["sh"]' -c 'ENV PATH=/bin' "$tar" busybox
  rm -f "$tar"
fi
"$capsa" info | sed -n '/^Isolations:/,/^Kernel Version/p'
echo
echo "== capsa compare busybox: the same image and command in a container and in a microVM"
"$capsa" compare busybox sh -c 'echo "hello from busybox, pid $$"; ls /bin | wc -l'
echo
echo "== capsa bench --quick: start latency, memory, density and overhead per isolation and peer"
"$capsa" bench --quick --out target/bench-quick
