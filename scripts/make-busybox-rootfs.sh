#!/usr/bin/env bash
# Writes a busybox root file system tarball (from Debian's busybox-static) to $1:
# /bin/busybox with one symlink per applet, /etc/passwd and /etc/group with root, app
# (1000) and nobody, /tmp. The same tree the tests generate in tests/src/lib.rs.
set -euo pipefail
out=${1:?usage: make-busybox-rootfs.sh OUT.tar}
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir -p "$tree"/{bin,etc,tmp,mnt,root,home/app}
chmod 1777 "$tree/tmp"
cp /bin/busybox "$tree/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -s busybox "$tree/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$tree/etc/passwd"
printf 'root:x:0:\napp:x:1000:\nwheel:x:10:app\nnogroup:x:65534:\n' >"$tree/etc/group"
tar -C "$tree" --numeric-owner -cf "$out" .
