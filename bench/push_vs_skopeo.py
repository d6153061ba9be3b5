#!/usr/bin/env python3
"""Push of a 4-layer image to a loopback registry: `capsa push` against `skopeo copy`
(from an OCI layout holding the same blobs), interleaved, in one run.

    python3 bench/push_vs_skopeo.py [--runs 5] [--out docs/benchmarks]

The image has four gzip layers of incompressible data (16, 32, 64 and 128 MiB of noise); a
second image has the same four plus a 512 MiB one, to show whether peak memory grows with
layer size. capsa loads the layout into its store once (`capsa load`), then each run pushes
to an empty Debian docker-registry on 127.0.0.1 (restarted on a fresh directory before each
push, so every blob is uploaded). skopeo copies `oci:LAYOUT` to the same place the same
way. Wall time and peak RSS by GNU time. The pushed manifest digest is checked to be the
layout's own. Needs root, target/release/capsa, skopeo and docker-registry.
"""
import argparse
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pull_vs_skopeo import Layout, noise_tar, summary, timed, version  # noqa: E402

CAPSA = os.path.abspath("target/release/capsa")


class Registry:
    """docker-registry on a fixed loopback port, restarted empty on demand."""

    def __init__(self, work):
        self.work = work
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.host = "127.0.0.1:%d" % self.port
        self.proc = None

    def fresh(self):
        self.stop()
        data = os.path.join(self.work, "registry-data")
        shutil.rmtree(data, ignore_errors=True)
        cfg = os.path.join(self.work, "registry.yml")
        with open(cfg, "w") as f:
            f.write("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                    "    rootdirectory: %s\nhttp:\n  addr: %s\n" % (data, self.host))
        self.proc = subprocess.Popen(["docker-registry", "serve", cfg],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(400):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("bench: docker-registry did not start")

    def stop(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def served_digest(ref):
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", "docker://" + ref],
                         check=True, capture_output=True).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default="docs/benchmarks")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="capsa-push-bench-", dir="/var/tmp")
    reg = Registry(work)
    try:
        layout = Layout(os.path.join(work, "layout"))
        tars = [noise_tar(m) for m in (16, 32, 64, 128)]
        gz, raw = layout.image("four", tars, level=1)
        big_tars = tars + [noise_tar(512)]
        big_gz, big_raw = layout.image("big", big_tars, level=1)
        del tars, big_tars
        digests = {d["annotations"]["org.opencontainers.image.ref.name"]: d["digest"]
                   for d in layout.index}
        root = os.path.join(work, "capsa-root")
        archive = os.path.join(work, "layout.tar")
        subprocess.run(["tar", "-C", layout.path, "-cf", archive, "."], check=True)
        subprocess.run([CAPSA, "--root", root, "load", "-q", "-i", archive], check=True,
                       stdout=subprocess.DEVNULL)
        os.remove(archive)
        for tag in ("four", "big"):
            subprocess.run([CAPSA, "--root", root, "tag", tag,
                            "%s/bench/%s:v1" % (reg.host, tag)], check=True)

        def capsa(tag):
            reg.fresh()
            ref = "%s/bench/%s:v1" % (reg.host, tag)
            r = timed([CAPSA, "--root", root, "push", "-q", ref])
            if served_digest(ref) != digests[tag]:
                raise SystemExit("bench: capsa pushed another manifest digest")
            return r

        def skopeo(tag):
            reg.fresh()
            ref = "%s/bench/%s:v1" % (reg.host, tag)
            r = timed(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                       "oci:%s:%s" % (layout.path, tag), "docker://" + ref])
            if served_digest(ref) != digests[tag]:
                raise SystemExit("bench: skopeo pushed another manifest digest")
            return r

        results = {"capsa": [], "skopeo": [], "capsa_big": [], "skopeo_big": []}
        capsa("four")  # warm-up: the page cache holds the blobs for both
        skopeo("four")
        for i in range(args.runs):
            for name, fn, tag in (("capsa", capsa, "four"), ("skopeo", skopeo, "four"),
                                  ("capsa_big", capsa, "big"), ("skopeo_big", skopeo, "big")):
                os.sync()
                results[name].append(fn(tag))
            print("bench: run %d/%d done" % (i + 1, args.runs))
        report = {
            "command": "python3 bench/push_vs_skopeo.py --runs %d" % args.runs,
            "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                        "cpu": version(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo"])},
            "image": {"layers": 4, "compressed_bytes": gz, "uncompressed_bytes": raw},
            "big_image": {"layers": 5, "compressed_bytes": big_gz, "uncompressed_bytes": big_raw},
            "peers": {"skopeo": version(["skopeo", "--version"]),
                      "docker-registry": version(["docker-registry", "--version"])},
            "results": {k: summary(v) for k, v in results.items()},
        }
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "push-vs-skopeo.json"), "w") as f:
            json.dump(report, f, indent=2)
        print(json.dumps({k: {"wall_median_s": v["wall_s"]["median"],
                              "rss_median_mib": v["peak_rss_mib"]["median"]}
                          for k, v in report["results"].items()}, indent=2))
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
