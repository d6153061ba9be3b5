#!/usr/bin/env python3
"""`ps` and `stats --no-stream` latency with N running containers, and the memory capsa's
own process (the monitor) costs per running container.

Starts N detached `sleep` containers in a private state directory, then: median wall time of
`ps` and `ps -a` over 20 runs and of `stats --no-stream` over 5 runs (it samples over
0.5 s, as Docker's samples over an interval); each monitor's PSS and private memory from
/proc/PID/smaps_rollup. Everything is removed afterwards. Writes Markdown and JSON.
"""
import argparse, json, os, platform, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def wall(argv, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def rollup(pid):
    vals = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":"):
            vals[parts[0][:-1]] = int(parts[1])
    return vals


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--capsa", default=os.path.join(ROOT, "target/release/capsa"))
    ap.add_argument("--containers", type=int, default=100)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs/benchmarks"))
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="capsa-verbs-")
    capsa = [a.capsa, "--root", os.path.join(tmp, "root")]
    try:
        tar = os.path.join(tmp, "busybox.tar")
        subprocess.run([os.path.join(ROOT, "scripts/make-busybox-rootfs.sh"), tar], check=True)
        subprocess.run(capsa + ["import", "-c", "ENV PATH=/bin", tar, "busybox"], check=True, stdout=subprocess.DEVNULL)
        os.sync()
        t = time.perf_counter()
        for i in range(a.containers):
            subprocess.run(capsa + ["run", "-d", "--name", f"c{i}", "busybox", "sleep", "3600"], check=True, stdout=subprocess.DEVNULL)
        start_all = time.perf_counter() - t
        os.sync()
        ps = wall(capsa + ["ps"], 20)
        ps_a = wall(capsa + ["ps", "-a"], 20)
        stats = wall(capsa + ["stats", "--no-stream"], 5)
        pss, private = [], []
        for d in os.listdir(os.path.join(tmp, "root", "containers")):
            state = json.load(open(os.path.join(tmp, "root", "containers", d, "state.json")))
            r = rollup(state["monitor_pid"])
            pss.append(r["Pss"])
            private.append(r["Private_Clean"] + r["Private_Dirty"])
    finally:
        ids = subprocess.run(capsa + ["ps", "-aq", "--no-trunc"], capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(capsa + ["rm", "-f"] + ids, stdout=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", tmp])
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    result = {
        "command": " ".join(sys.argv),
        "machine": {"kernel": platform.release(), "cpu": cpu, "cpus": os.cpu_count()},
        "containers": a.containers,
        "start_all_s": start_all,
        "ps_ms_p50": ps, "ps_a_ms_p50": ps_a, "stats_no_stream_ms_p50": stats,
        "monitor_pss_kib": {"median": statistics.median(pss), "max": max(pss)},
        "monitor_private_kib": {"median": statistics.median(private), "max": max(private)},
    }
    os.makedirs(a.out, exist_ok=True)
    json.dump(result, open(os.path.join(a.out, "verbs.json"), "w"), indent=1)
    m = result["machine"]
    table = f"""| with {a.containers} running containers | figure |
| --- | --- |
| `capsa ps`, median wall | {ps:.1f} ms |
| `capsa ps -a`, median wall | {ps_a:.1f} ms |
| `capsa stats --no-stream`, median wall (includes its 500 ms sampling interval) | {stats:.0f} ms |
| monitor process per container, PSS (median / max) | {statistics.median(pss)/1024:.2f} / {max(pss)/1024:.2f} MiB |
| monitor process per container, private memory (median / max) | {statistics.median(private)/1024:.2f} / {max(private)/1024:.2f} MiB |
| starting all {a.containers} with `run -d`, one after another | {start_all:.1f} s |"""
    print(table)
    md = f"""# Everyday verbs at scale

Produced by `{result['command']}` on {m['cpu']}, {m['cpus']} CPUs, kernel {m['kernel']} (cgroups v1, hybrid).

{table}

capsa's only process per running container is its monitor (conmon's role; the goal was under
2 MiB of private memory). PSS counts the pages it shares with other monitors (the capsa binary)
fractionally. Raw figures: [verbs.json](verbs.json).
"""
    open(os.path.join(a.out, "verbs.md"), "w").write(md)


if __name__ == "__main__":
    main()
