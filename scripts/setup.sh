#!/usr/bin/env bash
# Installs everything capsa needs on a fresh Debian 12 machine, as root. Idempotent.
#   busybox-static  the default test image (imported with `capsa import`)
#   runc, crun      peers for the start-latency benchmark (crun refuses hybrid cgroups; shown)
#   python3, time   run the benchmark harness (GNU time measures peak RSS)
#   tmux            drives the terminal tests (-it, attach, detach keys) as a user would
set -euo pipefail

packages=(busybox-static runc crun python3 time tmux ca-certificates)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || { echo "setup: cargo (Rust) is required" >&2; exit 1; }
echo "setup: ok"
