#!/usr/bin/env python3
"""What `capsa serve` costs a Docker user: the docker CLI through the API against capsa's
own CLI, listing many containers, and the server's memory.

On its own state root (busybox imported from Debian's busybox-static) this measures:
  - `docker run --rm --network none busybox true` through `capsa serve` against
    `capsa run --rm --network none busybox true`, wall time per run (median, p90);
  - `docker ps` with N running containers, with none (the docker CLI's own floor), and
    the raw `GET /containers/json` under it;
  - the server's PSS (/proc/PID/smaps_rollup) idle after start, after the runs, and with
    C idle connections open (each a `GET /events` stream), so the cost per connection.

  python3 bench/api.py --capsa target/release/capsa --runs 30 --containers 100 \\
      --connections 100 --out docs/benchmarks --name api
"""
import argparse, json, os, platform, socket, statistics, subprocess, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def pss_kib(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def wall(argv, runs, env=None):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {"median_ms": round(statistics.median(times), 2),
            "p90_ms": round(times[int(0.9 * (len(times) - 1))], 2),
            "runs": runs}


def raw_get(sock_path, path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n".encode())
    while s.recv(65536):
        pass
    s.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--capsa", default=os.path.join(ROOT, "target/release/capsa"))
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--containers", type=int, default=100)
    p.add_argument("--connections", type=int, default=100)
    p.add_argument("--out")
    p.add_argument("--name", default="api")
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="capsa-api-bench-")
    root = os.path.join(tmp, "root")
    sock = os.path.join(tmp, "api.sock")
    capsa = [a.capsa, "--root", root]
    tar = os.path.join(tmp, "busybox.tar")
    subprocess.run([os.path.join(ROOT, "scripts/make-busybox-rootfs.sh"), tar], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(capsa + ["import", "-c", 'CMD ["sh"]', "-c", "ENV PATH=/bin", tar, "busybox"],
                   check=True, stdout=subprocess.DEVNULL)
    server = subprocess.Popen(capsa + ["serve", "-H", f"unix://{sock}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = dict(os.environ, DOCKER_HOST=f"unix://{sock}", DOCKER_CONFIG=tmp)
    try:
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        wall(["docker", "version"], 1, env)
        result = {"idle_pss_kib": pss_kib(server.pid)}
        quick = ["run", "--rm", "--network", "none", "busybox", "true"]
        wall(capsa + quick, 3)
        wall(["docker"] + quick, 3, env)
        result["capsa_run"] = wall(capsa + quick, a.runs)
        result["docker_run_via_serve"] = wall(["docker"] + quick, a.runs, env)
        result["pss_after_runs_kib"] = pss_kib(server.pid)
        # The docker CLI's own floor: the same command with nothing to list.
        result["docker_ps_empty"] = wall(["docker", "ps"], 20, env)
        for i in range(a.containers):
            subprocess.run(capsa + ["run", "-d", "--network", "none", "--name", f"idle{i}",
                                    "busybox", "sleep", "100000"],
                           check=True, stdout=subprocess.DEVNULL)
        result["docker_ps"] = wall(["docker", "ps"], 20, env)
        times = []
        for _ in range(20):
            t = time.perf_counter()
            raw_get(sock, "/v1.50/containers/json")
            times.append((time.perf_counter() - t) * 1000)
        result["get_containers_json_median_ms"] = round(statistics.median(times), 2)
        result["listed_containers"] = a.containers
        before = pss_kib(server.pid)
        conns = []
        for _ in range(a.connections):
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock)
            s.sendall(b"GET /v1.50/events HTTP/1.1\r\nHost: docker\r\n\r\n")
            conns.append(s)
        time.sleep(1)
        after = pss_kib(server.pid)
        for s in conns:
            s.close()
        result["connections"] = a.connections
        result["pss_with_connections_kib"] = after
        result["per_connection_kib"] = round((after - before) / max(1, a.connections), 1)
    finally:
        subprocess.run(capsa + ["rm", "-f"] + [f"idle{i}" for i in range(a.containers)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        server.terminate()
        server.wait(timeout=10)
        subprocess.run(["rm", "-rf", tmp])
    result["machine"] = f"{platform.node()} {platform.platform()} {os.cpu_count()} CPUs"
    result["command"] = "python3 bench/api.py " + " ".join(
        f"--{k} {v}" for k, v in [("runs", a.runs), ("containers", a.containers),
                                    ("connections", a.connections)])
    print(json.dumps(result, indent=2))
    if a.out:
        with open(os.path.join(a.out, f"{a.name}.json"), "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
