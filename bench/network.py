#!/usr/bin/env python3
"""Network figures of capsa's bridge, in one run, inside a network namespace made for the
run (nothing touches the machine's own network):

- TCP throughput (iperf3, 5 s) and round-trip time (1-byte ping-pong) from the host to a
  container: through a port published on 127.0.0.1, to the container's bridge address
  directly, and over the host's loopback alone (no container) as the ceiling;
- start latency of `run --rm busybox true` with `--network none` against the bridge.

    python3 bench/network.py [--runs 50] [--out docs/benchmarks]

The servers in the container are the host's iperf3 and python3, its /usr mounted read-only
(busybox has neither). Needs root, target/release/capsa, iperf3 (scripts/setup.sh).
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time

CAPSA = os.path.abspath("target/release/capsa")
NS = "capsa-bench-net"
USR = ["-v", "/usr:/usr:ro", "-v", "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro"]
PINGPONG_SERVER = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 7000)); s.listen(8)
while True:
    c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        d = c.recv(1)
        if not d: break
        c.sendall(d)
    c.close()
"""
PINGPONG_CLIENT = """
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = socket.create_connection((host, port)); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
for _ in range(200): c.sendall(b'x'); c.recv(1)
t = time.perf_counter()
for _ in range(n): c.sendall(b'x'); c.recv(1)
print((time.perf_counter() - t) / n * 1e6)
"""


def ns(*argv, **kw):
    return subprocess.run(["ip", "netns", "exec", NS] + list(argv), **kw)


def capsa(root, *argv, **kw):
    return subprocess.run(["nsenter", f"--net=/run/netns/{NS}", CAPSA, "--root", root] + list(argv), **kw)


def wait_port(host, port):
    for _ in range(200):
        probe = f"import socket; socket.create_connection(('{host}', {port}), timeout=0.2)"
        if ns("python3", "-c", probe, capture_output=True).returncode == 0:
            return
        time.sleep(0.05)
    raise SystemExit(f"bench: nothing answers on {host}:{port}")


def iperf(host, port):
    # A server still starting refuses the test: a few tries.
    for _ in range(50):
        out = ns("iperf3", "-c", host, "-p", str(port), "-t", "5", "-J", capture_output=True, text=True)
        result = json.loads(out.stdout or "{}")
        if out.returncode == 0 and "sum_received" in result.get("end", {}):
            return result["end"]["sum_received"]["bits_per_second"] / 1e9
        time.sleep(0.1)
    raise SystemExit(f"bench: iperf3 to {host}:{port}: {result.get('error', out.stderr)}")


def rtt(host, port):
    out = ns("python3", "-c", PINGPONG_CLIENT, host, str(port), "5000", capture_output=True, text=True, check=True)
    return float(out.stdout)


def start_latency(root, network, runs):
    walls = []
    for _ in range(runs):
        t = time.perf_counter()
        capsa(root, "run", "--rm", "--network", network, "busybox", "true", check=True, stdout=subprocess.DEVNULL)
        walls.append((time.perf_counter() - t) * 1000)
    return walls


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--out", default="docs/benchmarks")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="capsa-net-bench-")
    root = os.path.join(tmp, "root")
    subprocess.run(["ip", "netns", "add", NS], check=True)
    servers = []
    ns("ip", "link", "set", "lo", "up", check=True)
    try:
        tar = os.path.join(tmp, "busybox.tar")
        rootfs = os.path.join(tmp, "rootfs")
        for d in ("bin", "etc", "tmp"):  # iperf3 keeps its buffer in a file in /tmp
            os.makedirs(os.path.join(rootfs, d))
        os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
        shutil.copy("/bin/busybox", os.path.join(rootfs, "bin/busybox"))
        for applet in ("sh", "true"):
            os.symlink("busybox", os.path.join(rootfs, "bin", applet))
        subprocess.run(["tar", "-C", rootfs, "-cf", tar, "."], check=True)
        capsa(root, "import", "-c", "ENV PATH=/bin:/usr/bin", tar, "busybox", check=True, stdout=subprocess.DEVNULL)
        capsa(root, "run", "-d", "--name", "srv", "-p", "127.0.0.1:15201:5201", *USR,
              "busybox", "iperf3", "-s", "-p", "5201", check=True, stdout=subprocess.DEVNULL)
        capsa(root, "run", "-d", "--name", "pp", "-p", "127.0.0.1:17000:7000", *USR,
              "busybox", "python3", "-c", PINGPONG_SERVER, check=True, stdout=subprocess.DEVNULL)
        def address(name):
            return capsa(root, "inspect", "-f", "{{.NetworkSettings.IPAddress}}", name,
                         capture_output=True, text=True, check=True).stdout.strip()
        srv_ip, pp_ip = address("srv"), address("pp")
        host_iperf = subprocess.Popen(["ip", "netns", "exec", NS, "iperf3", "-s", "-p", "25201"],
                                      stdout=subprocess.DEVNULL)
        host_pp = subprocess.Popen(["ip", "netns", "exec", NS, "python3", "-c",
                                    PINGPONG_SERVER.replace("7000", "27000")])
        servers += [host_iperf, host_pp]
        # (throughput server, round-trip server) of each path
        paths = {"published 127.0.0.1 port": (("127.0.0.1", 15201), ("127.0.0.1", 17000)),
                 "bridge address": ((srv_ip, 5201), (pp_ip, 7000)),
                 "host loopback, no container": (("127.0.0.1", 25201), ("127.0.0.1", 27000))}
        results = {}
        for _, pingpong in paths.values():
            wait_port(*pingpong)
        for round_ in range(3):  # interleaved rounds; the median of three is reported
            for name, (throughput, pingpong) in paths.items():
                r = results.setdefault(name, {"gbit_s": [], "rtt_us": []})
                r["gbit_s"].append(iperf(*throughput))
                r["rtt_us"].append(rtt(*pingpong))
        capsa(root, "rm", "-f", "srv", "pp", check=True, stdout=subprocess.DEVNULL)
        start = {"none": [], "bridge": []}
        for mode in start:  # warm-up
            start_latency(root, mode, 5)
        for _ in range(a.runs):
            for mode in start:
                start[mode] += start_latency(root, mode, 1)
        report = {
            "command": f"python3 bench/network.py --runs {a.runs}",
            "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
            "iperf3": subprocess.run(["iperf3", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
            "paths": {k: {"gbit_s_median": round(statistics.median(v["gbit_s"]), 2),
                          "rtt_us_median": round(statistics.median(v["rtt_us"]), 1),
                          "samples": v} for k, v in results.items()},
            "start_ms": {k: {"p50": round(statistics.median(v), 2), "p95": round(pct(v, 0.95), 2),
                             "samples": [round(x, 2) for x in v]} for k, v in start.items()},
        }
        pub = report["paths"]["published 127.0.0.1 port"]["gbit_s_median"]
        direct = report["paths"]["bridge address"]["gbit_s_median"]
        report["published_vs_bridge_throughput"] = round(pub / direct, 2)
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "network.json"), "w") as f:
            json.dump(report, f, indent=1)
        print(json.dumps({k: v for k, v in report.items() if k not in ("paths", "start_ms")}, indent=1))
        for k, v in report["paths"].items():
            print(f"{k:32} {v['gbit_s_median']:7.2f} Gbit/s  {v['rtt_us_median']:7.1f} us")
        for k, v in report["start_ms"].items():
            print(f"start --network {k:7} p50 {v['p50']:.2f} ms  p95 {v['p95']:.2f} ms")
    finally:
        for p in servers:
            p.kill()
            p.wait()
        subprocess.run(["nsenter", f"--net=/run/netns/{NS}", CAPSA, "--root", root, "rm", "-f", "srv", "pp"],
                       capture_output=True)
        subprocess.run(["ip", "netns", "del", NS])
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
