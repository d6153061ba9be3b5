#!/usr/bin/env python3
"""Pull + unpack of a realistic multi-layer image: `capsa pull` against `skopeo copy` +
`umoci unpack`, from the same loopback registry, interleaved, in one run.

    python3 bench/pull_vs_skopeo.py [--runs 5] [--big-mib 256] [--out docs/benchmarks]

The image is a Debian 12 minbase root file system made by debootstrap (cached in
/var/cache/capsa-bench), split into four gzip layers, pushed with skopeo to Debian's
docker-registry on 127.0.0.1. A second image adds one incompressible layer of --big-mib
MiB, to show whether peak memory grows with layer size. Wall time and peak RSS (GNU time)
per run; the peer's figure is skopeo's wall plus umoci's, and the larger of their RSS.
Needs root, target/release/capsa, and the packages scripts/setup.sh installs.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import tarfile
import tempfile
import time

CACHE = "/var/cache/capsa-bench"
ROOTFS = os.path.join(CACHE, "debian-bookworm-minbase")
CAPSA = os.path.abspath("target/release/capsa")


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def ensure_rootfs():
    if os.path.isdir(os.path.join(ROOTFS, "usr")):
        return
    tmp = ROOTFS + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(CACHE, exist_ok=True)
    print("bench: debootstrap --variant=minbase bookworm (once, cached in %s)" % CACHE)
    sh("debootstrap", "--variant=minbase", "bookworm", tmp, stdout=subprocess.DEVNULL)
    os.rename(tmp, ROOTFS)


def layer_tar(paths_filter):
    """A tar (bytes) of the rootfs entries whose top-level path passes the filter."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for top in sorted(os.listdir(ROOTFS)):
            if os.path.islink(os.path.join(ROOTFS, top)):  # merged /usr: bin -> usr/bin
                if paths_filter(top):
                    tar.add(os.path.join(ROOTFS, top), arcname=top, recursive=False)
                continue
            for dirpath, dirnames, filenames in os.walk(os.path.join(ROOTFS, top)):
                dirnames.sort()
                rel_dir = os.path.relpath(dirpath, ROOTFS)
                if paths_filter(rel_dir):
                    tar.add(dirpath, arcname=rel_dir, recursive=False)
                for f in sorted(filenames):
                    rel = os.path.join(rel_dir, f)
                    if paths_filter(rel):
                        tar.add(os.path.join(dirpath, f), arcname=rel, recursive=False)
    return buf.getvalue()


def noise_tar(mib):
    data = bytearray(os.urandom(mib << 20))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("noise.bin")
        info.size = len(data)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Layout:
    def __init__(self, path):
        self.path = path
        os.makedirs(os.path.join(path, "blobs/sha256"))
        with open(os.path.join(path, "oci-layout"), "w") as f:
            f.write('{"imageLayoutVersion":"1.0.0"}')
        self.index = []

    def blob(self, media_type, data):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.path, "blobs/sha256", digest), "wb") as f:
            f.write(data)
        return {"mediaType": media_type, "digest": "sha256:" + digest, "size": len(data)}

    def image(self, tag, tars, level=6):
        layers, diff_ids = [], []
        for t in tars:
            diff_ids.append("sha256:" + hashlib.sha256(t).hexdigest())
            layers.append(self.blob("application/vnd.oci.image.layer.v1.tar+gzip",
                                    gzip.compress(t, compresslevel=level, mtime=0)))
        config = {"architecture": "amd64", "os": "linux",
                  "config": {"Cmd": ["/bin/bash"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
                  "rootfs": {"type": "layers", "diff_ids": diff_ids}}
        cfg = self.blob("application/vnd.oci.image.config.v1+json", json.dumps(config).encode())
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": cfg, "layers": layers}
        desc = self.blob("application/vnd.oci.image.manifest.v1+json", json.dumps(manifest).encode())
        desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
        self.index.append(desc)
        with open(os.path.join(self.path, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "manifests": self.index}, f)
        return sum(l["size"] for l in layers), sum(len(t) for t in tars)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_registry(workdir):
    port = free_port()
    cfg = os.path.join(workdir, "registry.yml")
    with open(cfg, "w") as f:
        f.write("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                "    rootdirectory: %s/data\nhttp:\n  addr: 127.0.0.1:%d\n" % (workdir, port))
    proc = subprocess.Popen(["docker-registry", "serve", cfg],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, "127.0.0.1:%d" % port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("bench: docker-registry did not start")


def timed(args):
    """(wall seconds, peak RSS KiB) of one command, by GNU time."""
    out = subprocess.run(["/usr/bin/time", "-f", "%e %M"] + args,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if out.returncode != 0:
        raise SystemExit("bench: %s failed: %s" % (" ".join(args), out.stderr))
    wall, rss = out.stderr.strip().splitlines()[-1].split()
    return float(wall), int(rss)


def capsa_pull(ref, scratch):
    root = os.path.join(scratch, "capsa-root")
    r = timed([CAPSA, "--root", root, "pull", "-q", ref])
    shutil.rmtree(root)
    return r


def skopeo_umoci(ref, scratch):
    oci = os.path.join(scratch, "oci")
    bundle = os.path.join(scratch, "bundle")
    w1, r1 = timed(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                    "docker://" + ref, "oci:%s:bench" % oci])
    w2, r2 = timed(["umoci", "unpack", "--image", "%s:bench" % oci, bundle])
    shutil.rmtree(oci)
    shutil.rmtree(bundle)
    return w1 + w2, max(r1, r2)


def summary(samples):
    walls = sorted(s[0] for s in samples)
    rss = sorted(s[1] for s in samples)
    return {"wall_s": {"median": statistics.median(walls), "min": walls[0], "max": walls[-1]},
            "peak_rss_mib": {"median": round(statistics.median(rss) / 1024, 1),
                             "max": round(rss[-1] / 1024, 1)},
            "samples": samples}


def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
    except (OSError, IndexError):
        return "unknown"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--big-mib", type=int, default=256)
    ap.add_argument("--out", default="docs/benchmarks")
    args = ap.parse_args()
    ensure_rootfs()
    work = tempfile.mkdtemp(prefix="capsa-pull-bench-", dir="/var/tmp")
    reg = None
    try:
        layout = Layout(os.path.join(work, "layout"))
        in_usr_lib = lambda p: p == "usr/lib" or p.startswith("usr/lib/")
        in_usr = lambda p: (p == "usr" or p.startswith("usr/")) and not in_usr_lib(p)
        in_var = lambda p: p == "var" or p.startswith("var/")
        rest = lambda p: not (in_usr_lib(p) or in_usr(p) or in_var(p))
        tars = [layer_tar(f) for f in (rest, in_usr_lib, in_usr, in_var)]
        deb_gz, deb_raw = layout.image("debian", tars)
        big_tars = tars + [noise_tar(args.big_mib)]
        big_gz, big_raw = layout.image("big", big_tars, level=1)
        reg, host = start_registry(work)
        for tag in ("debian", "big"):
            sh("skopeo", "copy", "--quiet", "--dest-tls-verify=false",
               "oci:%s:%s" % (layout.path, tag), "docker://%s/bench/debian:%s" % (host, tag))
        scratch = os.path.join(work, "scratch")
        os.makedirs(scratch)
        results = {"capsa": [], "skopeo+umoci": [], "capsa_big": []}
        ref = "%s/bench/debian:debian" % host
        for _ in range(1):  # warm-up: page cache holds the registry's blobs for both
            capsa_pull(ref, scratch)
            skopeo_umoci(ref, scratch)
        for i in range(args.runs):
            os.sync()
            results["capsa"].append(capsa_pull(ref, scratch))
            os.sync()
            results["skopeo+umoci"].append(skopeo_umoci(ref, scratch))
            os.sync()
            results["capsa_big"].append(capsa_pull("%s/bench/debian:big" % host, scratch))
            print("bench: run %d/%d done" % (i + 1, args.runs))
        report = {
            "command": "python3 bench/pull_vs_skopeo.py --runs %d --big-mib %d" % (args.runs, args.big_mib),
            "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                        "cpu": version(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo"])},
            "image": {"layers": len(tars), "compressed_bytes": deb_gz, "uncompressed_bytes": deb_raw},
            "big_image": {"layers": len(big_tars), "compressed_bytes": big_gz,
                          "uncompressed_bytes": big_raw},
            "peers": {"skopeo": version(["skopeo", "--version"]),
                      "umoci": version(["umoci", "--version"])},
            "results": {k: summary(v) for k, v in results.items()},
        }
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "pull-vs-skopeo.json"), "w") as f:
            json.dump(report, f, indent=2)
        c, p, b = (report["results"][k] for k in ("capsa", "skopeo+umoci", "capsa_big"))
        print(json.dumps({k: {"wall_median_s": v["wall_s"]["median"],
                              "rss_median_mib": v["peak_rss_mib"]["median"]}
                          for k, v in report["results"].items()}, indent=2))
        print("bench: capsa/peer wall ratio %.2f" % (c["wall_s"]["median"] / p["wall_s"]["median"]))
    finally:
        if reg:
            reg.kill()
            reg.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
