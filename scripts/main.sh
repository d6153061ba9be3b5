#!/usr/bin/env bash
# README's main command: sets up, builds capsa, imports the busybox image, runs it in each
# isolation this machine offers, and measures `capsa run` against runc on the same rootfs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/setup.sh
cargo build --release --workspace --bins
capsa=target/release/capsa
if ! "$capsa" images | grep -q '^busybox '; then
  tar=$(mktemp --suffix=.tar)
  scripts/make-busybox-rootfs.sh "$tar"
  "$capsa" import -c 'CMD ["sh"]' -c 'ENV PATH=/bin' "$tar" busybox
  rm -f "$tar"
fi
"$capsa" info | sed -n '/^Isolations:/,/^Kernel Version/p'
echo
echo "== container isolation"
"$capsa" run --rm --hostname capsa-demo busybox sh -c 'echo "hostname=$(hostname) pid=$$ kernel=$(uname -r)"'
echo
echo "== vm isolation"
"$capsa" run --rm --isolation vm busybox true || echo "(the VM isolation is not built yet; see README)"
echo
echo "== start latency: capsa run --rm busybox true vs runc run (same rootfs)"
python3 bench/run_vs_runc.py --capsa "$capsa" --runs "${RUNS:-30}" --out docs/benchmarks
