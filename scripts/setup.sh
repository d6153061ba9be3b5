#!/usr/bin/env bash
# Installs everything capsa needs on a fresh Debian 12 machine, as root. Idempotent.
#   busybox-static  the default test image (imported with `capsa import`)
#   runc, crun      peers for the start-latency benchmark (crun refuses hybrid cgroups; shown)
#   python3, time   run the benchmark harness (GNU time measures peak RSS)
#   tmux            drives the terminal tests (-it, attach, detach keys) as a user would
#   zsh, fish       the completion tests source `capsa completion zsh|fish` in each shell
#   docker-registry, skopeo, apache2-utils (htpasswd)
#                   a real registry on 127.0.0.1 for the image tests, filled by skopeo
#   umoci, debootstrap  the pull benchmark's peer (skopeo copy + umoci unpack) and its
#                   Debian rootfs image
#   iproute2, nftables  the bridge network (capsa uses netlink itself, and nft for NAT);
#                   the tests make their own network namespaces with ip
#   iperf3          the network benchmark's throughput figures
#   build-essential gcc for capsa-vmm's freestanding test guest (the guest kernel's own build
#                   tools are installed by kernel-config/build.sh)
#   qemu-system-x86 the VM isolation's QEMU engine (microvm; TCG where KVM lacks vmx/svm)
#   erofs-utils     mkfs.erofs: each image layer becomes a read-only erofs disk for VMs
#   e2fsck-static   goes into the VM's initramfs: the guest agent checks an unclean writable
#                   disk itself (the host never parses a file system its guest wrote)
#   curl            raw requests to `capsa serve`'s socket in the API tests
#   docker-compose  (1.29, Debian's) brings a compose file up against `capsa serve`
#   containerd, podman  real callers of `capsa-runc` (containerd's runc v2 shim and ctr;
#                   podman through conmon); the tests start their own containerd (own root,
#                   state and socket), beside any the machine runs
#   containernetworking-plugins  the CNI bridge/host-local/loopback plugins the CRI tests'
#                   containerd gives its pods (in the test's own network namespace)
#   protobuf-compiler  protoc, which the CRI tests' client bindings (k8s-cri) are built with
#   strace          fault injection for one process (a test makes inotify_init1 fail for
#                   `capsa wait` alone, as when a workload took every instance of root's)
set -euo pipefail

packages=(busybox-static runc crun python3 time tmux zsh fish ca-certificates docker-registry skopeo umoci apache2-utils debootstrap iproute2 nftables iperf3 build-essential qemu-system-x86 erofs-utils e2fsck-static strace curl docker-compose containerd podman containernetworking-plugins protobuf-compiler)
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
# The tests start their own registry on 127.0.0.1; the package's service (all interfaces,
# port 5000) is not wanted where the init system started it.
if command -v systemctl >/dev/null && systemctl is-active --quiet docker-registry 2>/dev/null; then
  systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi
# The API tests drive `capsa serve` with the real docker CLI (this kind of machine has
# 28.2 in /usr/local/bin; elsewhere Debian's 20.10 client, whose daemon stays off) and with
# docker-py, the SDK docker-compose and testcontainers build on.
if ! command -v docker >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
  if command -v systemctl >/dev/null; then
    systemctl disable --now docker.service docker.socket containerd.service >/dev/null 2>&1 || true
  fi
fi
if ! python3 -c 'import docker' 2>/dev/null; then
  python3 -m pip install -q 'docker==7.1.0' 'requests>=2.32,<3'
fi
if ! command -v cargo >/dev/null; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || { echo "setup: cargo (Rust) is required" >&2; exit 1; }
echo "setup: ok"
