#!/usr/bin/env python3
"""redis-benchmark through a container's published port, against the same redis on the
host, in one run inside a network namespace made for it (nothing touches the machine's
own network):

- host: redis-server on the namespace's loopback, no container (the ceiling);
- published: redis-server in a capsa container, reached at 127.0.0.1:PORT (nftables DNAT
  in the output hook, masquerade onto the bridge, veth);
- bridge: the same container reached at its bridge address (veth and bridge, no NAT).

The difference between published and bridge is what the NAT costs; between bridge and
host, what the veth and the bridge cost. Rounds are interleaved (host, published, bridge,
host, ...) so that drift on the machine falls on every path alike; each test's median over
the rounds is compared, and the ratio reported is the geometric mean over the tests, as
the issue's figure is.

    python3 bench/redis_port.py [--rounds 5] [--requests 20000] [--out docs/benchmarks]

The container runs the host's redis-server with its /usr mounted read-only. Needs root,
target/release/capsa and Debian's redis-server (which brings redis-benchmark and
redis-cli; not in scripts/setup.sh, since no test needs it: `apt-get install redis-server`).
"""
import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time

CAPSA = os.path.abspath("target/release/capsa")
NS = "capsa-bench-redis"
USR = ["-v", "/usr:/usr:ro", "-v", "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro"]
REDIS = ["--save", "", "--appendonly", "no", "--protected-mode", "no"]


def in_ns(*argv, **kw):
    return subprocess.run(["nsenter", f"--net=/run/netns/{NS}"] + list(argv), **kw)


def capsa(root, *argv, **kw):
    return in_ns(CAPSA, "--root", root, *argv, **kw)


def wait_redis(host, port):
    for _ in range(200):
        if in_ns("redis-cli", "-h", host, "-p", str(port), "ping", capture_output=True, text=True).stdout.strip() == "PONG":
            return
        time.sleep(0.05)
    raise SystemExit(f"bench: no redis answers on {host}:{port}")


def benchmark(host, port, requests):
    """{test: requests per second} of one redis-benchmark -q run."""
    out = in_ns("redis-benchmark", "-h", host, "-p", str(port), "-n", str(requests), "-q",
                capture_output=True, text=True, check=True).stdout
    rates = {}
    for line in out.replace("\r", "\n").splitlines():
        if " requests per second" not in line or ": " not in line:
            continue
        name, rest = line.rsplit(": ", 1)
        rates[name.strip()] = float(rest.split()[0])
    if not rates:
        raise SystemExit(f"bench: redis-benchmark on {host}:{port} printed no result")
    return rates


def geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


def busybox_image(root, tmp):
    rootfs = os.path.join(tmp, "rootfs")
    for d in ("bin", "etc", "tmp"):
        os.makedirs(os.path.join(rootfs, d))
    os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
    shutil.copy("/bin/busybox", os.path.join(rootfs, "bin/busybox"))
    os.symlink("busybox", os.path.join(rootfs, "bin", "sh"))
    tar = os.path.join(tmp, "busybox.tar")
    subprocess.run(["tar", "-C", rootfs, "-cf", tar, "."], check=True)
    capsa(root, "import", "-c", "ENV PATH=/bin:/usr/bin", tar, "busybox", check=True, stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--out", default="docs/benchmarks")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="capsa-redis-bench-")
    root = os.path.join(tmp, "root")
    subprocess.run(["ip", "netns", "add", NS], check=True)
    host_redis = None
    try:
        in_ns("ip", "link", "set", "lo", "up", check=True)
        busybox_image(root, tmp)
        capsa(root, "run", "-d", "--name", "redis", "-p", "127.0.0.1:16379:6379", *USR,
              "busybox", "/usr/bin/redis-server", *REDIS, check=True, stdout=subprocess.DEVNULL)
        address = capsa(root, "inspect", "-f", "{{.NetworkSettings.IPAddress}}", "redis",
                        capture_output=True, text=True, check=True).stdout.strip()
        host_redis = subprocess.Popen(["nsenter", f"--net=/run/netns/{NS}", "redis-server", "--port", "26379",
                                       *REDIS], stdout=subprocess.DEVNULL)
        paths = {"host": ("127.0.0.1", 26379), "published": ("127.0.0.1", 16379), "bridge": (address, 6379)}
        for host, port in paths.values():
            wait_redis(host, port)
            benchmark(host, port, 2000)  # warm-up
        samples = {p: {} for p in paths}
        for _ in range(a.rounds):
            for path, (host, port) in paths.items():
                for test, rate in benchmark(host, port, a.requests).items():
                    samples[path].setdefault(test, []).append(rate)
        tests = sorted(samples["host"])
        median = {p: {t: statistics.median(samples[p][t]) for t in tests} for p in paths}
        ratio = {p: round(geomean([median[p][t] / median["host"][t] for t in tests]), 3)
                 for p in ("published", "bridge")}
        report = {
            "command": f"python3 bench/redis_port.py --rounds {a.rounds} --requests {a.requests}",
            "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
            "redis": subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip(),
            "ratio_to_host_geomean": ratio,
            "published_to_bridge_geomean": round(geomean([median["published"][t] / median["bridge"][t]
                                                          for t in tests]), 3),
            "median_rps": median,
            "samples": samples,
        }
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "redis_port.json"), "w") as f:
            json.dump(report, f, indent=1)
        print(f"{'test':40} {'host':>9} {'published':>9} {'bridge':>9}")
        for t in tests:
            print(f"{t:40} {median['host'][t]:9.0f} {median['published'][t]:9.0f} {median['bridge'][t]:9.0f}")
        print(f"geometric mean against the host: published {ratio['published']}, bridge {ratio['bridge']}")
    finally:
        if host_redis:
            host_redis.kill()
            host_redis.wait()
        capsa(root, "rm", "-f", "redis", capture_output=True)
        subprocess.run(["ip", "netns", "del", NS])
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
