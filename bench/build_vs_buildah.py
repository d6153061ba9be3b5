#!/usr/bin/env python3
"""`capsa build` against `buildah bud --layers` on the same 10-step Dockerfile and context,
interleaved, in one run: a first build (no cache), a fully cached rebuild, and a rebuild
after one changed file (the last COPY's source: its step and the two after it rerun).

    python3 bench/build_vs_buildah.py [--runs 5] [--capsa target/debug/capsa] [--out docs/benchmarks]

Both start from the same busybox base, made once by each tool from the same rootfs tarball
(`FROM scratch` + `ADD rootfs.tar /`, not timed). RUN steps get no network in both
(`--network none`); buildah's run under runc (crun refuses this host's hybrid cgroups).
Each tool has a state directory of its own under /var/tmp. Wall time
of the whole command, as the user waits for it. Needs root, busybox-static and buildah.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

DOCKERFILE = """FROM bb
ENV APP=/app
WORKDIR /app
COPY a/ /app/a/
RUN cat /app/a/* > /app/all-a
COPY b/ /app/b/
RUN cat /app/b/* > /app/all-b
LABEL bench=1
COPY c.txt /app/c.txt
RUN wc -c /app/c.txt > /app/size
CMD ["cat", "/app/size"]
"""


def rootfs_tar(work):
    """A busybox-static root: /bin with the applets, /etc/passwd, /tmp."""
    root = os.path.join(work, "rootfs")
    os.makedirs(os.path.join(root, "bin"))
    os.makedirs(os.path.join(root, "etc"))
    os.makedirs(os.path.join(root, "tmp"), mode=0o1777)
    shutil.copy("/bin/busybox", os.path.join(root, "bin/busybox"))
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for a in applets:
        if a != "busybox":
            os.symlink("busybox", os.path.join(root, "bin", a))
    with open(os.path.join(root, "etc/passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    tar = os.path.join(work, "base", "rootfs.tar")
    os.makedirs(os.path.dirname(tar))
    subprocess.run(["tar", "-C", root, "-cf", tar, "."], check=True)
    with open(os.path.join(work, "base", "Dockerfile"), "w") as f:
        f.write('FROM scratch\nADD rootfs.tar /\nENV PATH=/bin\nCMD ["sh"]\n')
    return os.path.join(work, "base")


def context(work):
    ctx = os.path.join(work, "ctx")
    for d in ("a", "b"):
        os.makedirs(os.path.join(ctx, d))
        for i in range(50):
            with open(os.path.join(ctx, d, "f%02d" % i), "wb") as f:
                f.write(os.urandom(4096))
    with open(os.path.join(ctx, "c.txt"), "w") as f:
        f.write("first\n")
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write(DOCKERFILE)
    return ctx


class Capsa:
    name = "capsa build"

    def __init__(self, exe, work):
        self.exe = exe
        self.root = os.path.join(work, "capsa-root")
        os.makedirs(self.root)

    def cmd(self, *args):
        return [self.exe, "--root", self.root, *args]

    def base(self, base_ctx):
        run(self.cmd("build", "-q", "-t", "bb", base_ctx))

    def build(self, ctx, no_cache):
        extra = ["--no-cache"] if no_cache else []
        return self.cmd("build", "-q", "--network", "none", *extra, "-t", "out", ctx)


class Buildah:
    name = "buildah bud --layers"

    def __init__(self, work):
        self.root = os.path.join(work, "buildah-root")
        self.runroot = os.path.join(work, "buildah-runroot")

    def cmd(self, *args):
        return ["buildah", "--root", self.root, "--runroot", self.runroot, *args]

    def base(self, base_ctx):
        run(self.cmd("bud", "-q", "--layers", "-t", "bb", base_ctx))

    def build(self, ctx, no_cache):
        extra = ["--no-cache"] if no_cache else []
        # runc: crun refuses this host's hybrid cgroups.
        return self.cmd("bud", "-q", "--layers", "--runtime", "runc", "--network", "none",
                        *extra, "-t", "out", ctx)


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit("bench: %s failed: %s%s" % (" ".join(cmd), out.stdout, out.stderr))
    return out.stdout


def timed(cmd):
    start = time.perf_counter()
    run(cmd)
    return time.perf_counter() - start


def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
    except (OSError, IndexError):
        return "?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--capsa", default="target/debug/capsa")
    ap.add_argument("--out", default="docs/benchmarks")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="capsa-build-bench-", dir="/var/tmp")
    try:
        base = rootfs_tar(work)
        ctx = context(work)
        tools = [Capsa(os.path.abspath(args.capsa), work), Buildah(work)]
        for t in tools:
            t.base(base)
        phases = ["first build", "cached rebuild", "one file changed"]
        times = {t.name: {p: [] for p in phases} for t in tools}
        for i in range(args.runs):
            # Interleaved: each phase of each run, tools alternating which goes first.
            order = tools if i % 2 == 0 else list(reversed(tools))
            for t in order:
                with open(os.path.join(ctx, "c.txt"), "w") as f:
                    f.write("run %d first\n" % i)
                times[t.name]["first build"].append(timed(t.build(ctx, True)))
                times[t.name]["cached rebuild"].append(timed(t.build(ctx, False)))
                with open(os.path.join(ctx, "c.txt"), "w") as f:
                    f.write("run %d changed\n" % i)
                times[t.name]["one file changed"].append(timed(t.build(ctx, False)))
            print("run %d/%d done" % (i + 1, args.runs), file=sys.stderr)
        result = {
            "machine": "%s, %d CPUs, kernel %s" % (platform.machine(), os.cpu_count(),
                                                   platform.release()),
            "capsa": args.capsa,
            "buildah": version(["buildah", "--version"]),
            "runs": args.runs,
            "median_seconds": {t: {p: statistics.median(v) for p, v in ph.items()}
                               for t, ph in times.items()},
            "all_seconds": times,
        }
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "build.json"), "w") as f:
            json.dump(result, f, indent=2)
        print(json.dumps(result["median_seconds"], indent=2))
    finally:
        for t in ("capsa-root",):
            subprocess.run(["umount", "-R", os.path.join(work, t)], capture_output=True)
        subprocess.run(["buildah", "--root", os.path.join(work, "buildah-root"), "--runroot",
                        os.path.join(work, "buildah-runroot"), "rm", "--all"],
                       capture_output=True)
        subprocess.run(["umount", "-R", os.path.join(work, "buildah-root", "overlay")],
                       capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
