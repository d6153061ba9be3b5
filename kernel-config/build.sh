#!/usr/bin/env bash
# Builds capsa's guest kernel: Debian's linux-source-6.1 (installed if missing), `make
# tinyconfig` plus guest.config, vmlinux only. The result is cached outside the checkout by a
# hash of guest.config, this script and the source's version, so a second run returns at once.
# The last line printed is the path of vmlinux.
#   CAPSA_KERNEL_CACHE  where builds are kept (default /var/cache/capsa/kernel)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${CAPSA_KERNEL_CACHE:-/var/cache/capsa/kernel}

need=(linux-source-6.1 build-essential flex bison libelf-dev bc xz-utils)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "kernel: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

version=$(dpkg-query -W -f='${Version}' linux-source-6.1)
key=$( (cat "$here/guest.config" "$here/build.sh"; echo "$version") | sha256sum | cut -c1-16)
out="$cache/$key"
if [[ -f "$out/vmlinux" ]]; then
  echo "kernel: cached build of linux-source $version ($key)" >&2
  echo "$out/vmlinux"
  exit 0
fi
mkdir -p "$cache"

src="$cache/src-$version"
if [[ ! -f "$src/Makefile" ]]; then
  echo "kernel: unpacking linux-source $version" >&2
  rm -rf "$src.tmp"
  mkdir -p "$src.tmp"
  tar -xf /usr/src/linux-source-6.1.tar.xz -C "$src.tmp" --strip-components=1
  mv "$src.tmp" "$src"
fi

build="$cache/build-$key"
rm -rf "$build"
mkdir -p "$build"
make -s -C "$src" O="$build" tinyconfig >/dev/null
"$src/scripts/kconfig/merge_config.sh" -m -O "$build" "$build/.config" "$here/guest.config" >/dev/null
make -s -C "$src" O="$build" olddefconfig >/dev/null

# Every option asked for must have survived (a missing dependency drops one silently).
lost=()
while IFS= read -r line; do
  [[ "$line" =~ ^CONFIG_([A-Za-z0-9_]+)=(.*)$ ]] || continue
  opt=${BASH_REMATCH[1]} want=${BASH_REMATCH[2]}
  if [[ "$want" == n ]]; then
    grep -qx "CONFIG_$opt=y" "$build/.config" && lost+=("$opt=n")
  else
    grep -qx "CONFIG_$opt=$want" "$build/.config" || lost+=("$opt=$want")
  fi
done < "$here/guest.config"
if ((${#lost[@]})); then
  echo "kernel: guest.config options that did not survive olddefconfig: ${lost[*]}" >&2
  exit 1
fi

echo "kernel: building vmlinux with $(nproc) jobs (a few minutes)" >&2
make -s -C "$src" O="$build" -j"$(nproc)" vmlinux >&2
mkdir -p "$out.tmp"
cp "$build/vmlinux" "$build/.config" "$out.tmp/"
rm -rf "$out"
mv "$out.tmp" "$out"
rm -rf "$build"
echo "$out/vmlinux"
