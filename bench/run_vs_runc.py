#!/usr/bin/env python3
"""Start latency of `capsa run --rm busybox true` against `runc run` on the same rootfs.

Interleaved runs after a warm-up; for each run the wall time, and from wait4(2) the CPU time
(user+sys of the process tree) and the peak RSS of the largest process in it. Medians and
p95 are printed and written as Markdown and JSON with the machine's description. crun is
tried once and its answer recorded (it refuses hybrid cgroup hosts).

This is the container-isolation slice of what `capsa bench` will measure.
"""
import argparse, json, os, platform, shutil, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def peak_rss_kib(argv):
    """Peak RSS of the largest process of argv's tree, by GNU time. (wait4 from Python
    would report Python's own RSS: a forked child starts with its parent's high-water mark.)"""
    with tempfile.NamedTemporaryFile("r") as f:
        subprocess.run(["/usr/bin/time", "-o", f.name, "-f", "%M"] + argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return int(f.read().strip().splitlines()[-1])


def timed(argv, **kw):
    """Runs argv; returns (wall seconds, cpu seconds, exit code)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}: {err.strip()}")
    return wall, ru.ru_utime + ru.ru_stime, p.returncode


def summary(xs):
    xs = sorted(xs)
    return {"median": statistics.median(xs), "p95": xs[min(len(xs) - 1, int(0.95 * len(xs)))], "min": xs[0], "max": xs[-1]}


def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
    except Exception as e:  # reported, never hidden
        return f"unavailable: {e}"


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
    return {"kernel": platform.release(), "cpu": cpu, "cpus": os.cpu_count(), "memory_gib": round(int(mem) / 2**20, 1)}


def make_bundle(tmp):
    bundle = os.path.join(tmp, "bundle")
    rootfs = os.path.join(bundle, "rootfs")
    os.makedirs(rootfs)
    tar = os.path.join(tmp, "busybox.tar")
    subprocess.run([os.path.join(ROOT, "scripts/make-busybox-rootfs.sh"), tar], check=True)
    subprocess.run(["tar", "-C", rootfs, "-xf", tar], check=True)
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    cfg = json.load(open(os.path.join(bundle, "config.json")))
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["true"]
    cfg["process"]["env"] = ["PATH=/bin"]
    json.dump(cfg, open(os.path.join(bundle, "config.json"), "w"))
    return bundle, tar


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--capsa", default=os.path.join(ROOT, "target/release/capsa"))
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rss-runs", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs/benchmarks"))
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="capsa-bench-")
    capsa_root = os.path.join(tmp, "capsa-root")
    runc_root = os.path.join(tmp, "runc-root")
    try:
        bundle, tar = make_bundle(tmp)
        capsa = [a.capsa, "--root", capsa_root]
        subprocess.run(capsa + ["import", "-c", "ENV PATH=/bin", tar, "busybox"], check=True, stdout=subprocess.DEVNULL)
        peers = {
            # runc's spec gives a network namespace with loopback only: capsa's --network none.
            "capsa": lambda i: capsa + ["run", "--rm", "--network", "none", "busybox", "true"],
            "runc": lambda i: ["runc", "--root", runc_root, "run", "--bundle", bundle, f"bench-{i}"],
        }
        crun = subprocess.run(["crun", "--root", os.path.join(tmp, "crun-root"), "run", "--bundle", bundle, "crun-probe"], capture_output=True, text=True) if shutil.which("crun") else None
        samples = {k: {"wall": [], "cpu": [], "rss_kib": []} for k in peers}
        # Start from a quiet disk: writeback of a fresh build (scripts/main.sh builds just
        # before) contends with every container's file-system work and doubled capsa's times.
        os.sync()
        for i in range(a.warmup + a.runs):
            for name, argv in peers.items():  # interleaved: drift hits both alike
                wall, cpu, _ = timed(argv(i))
                if i >= a.warmup:
                    samples[name]["wall"].append(wall)
                    samples[name]["cpu"].append(cpu)
        for i in range(a.rss_runs):
            for name, argv in peers.items():
                samples[name]["rss_kib"].append(peak_rss_kib(argv(10_000 + i)))
        result = {
            "command": " ".join(sys.argv),
            "machine": machine(),
            "versions": {"capsa": version([a.capsa, "--version"]), "runc": version(["runc", "--version"])},
            "crun": (crun.stderr.strip() or "ran") if crun else "not installed",
            "runs": a.runs, "warmup": a.warmup,
            "results": {k: {m: summary(v) for m, v in s.items()} for k, s in samples.items()},
            "samples": samples,
        }
    finally:
        subprocess.run(["rm", "-rf", tmp])
    r = result["results"]
    ratio = r["capsa"]["wall"]["median"] / r["runc"]["wall"]["median"]
    lines = [
        "| runtime | wall p50 (ms) | wall p95 (ms) | CPU p50 (ms) | peak RSS p50 (MiB) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for k in peers:
        lines.append(f"| {k} | {r[k]['wall']['median']*1e3:.2f} | {r[k]['wall']['p95']*1e3:.2f} | {r[k]['cpu']['median']*1e3:.2f} | {r[k]['rss_kib']['median']/1024:.1f} |")
    table = "\n".join(lines)
    print(table)
    print(f"capsa/runc wall median ratio: {ratio:.2f}   crun: {result['crun']}")
    os.makedirs(a.out, exist_ok=True)
    json.dump(result, open(os.path.join(a.out, "run-vs-runc.json"), "w"), indent=1)
    m = result["machine"]
    md = f"""# `capsa run` vs `runc run`: start latency

Produced by `{result['command']}` ({a.runs} interleaved runs each after {a.warmup} warm-up runs).

Machine: {m['cpu']}, {m['cpus']} CPUs, {m['memory_gib']} GiB, kernel {m['kernel']}, cgroups v1 (hybrid).
Versions: {result['versions']['capsa']}; {result['versions']['runc']}.

Workload: busybox `true` from the same rootfs tree, default set-up of each runtime, both
with a network namespace holding only loopback (capsa `--network none`; capsa also brings
loopback up, runc leaves it down; the bridge's cost is in network.md). capsa
does more than runc's `runc spec` default here: an overlay root with a fresh writable layer
(runc: the plain directory), Docker's seccomp profile (runc: none), a cgroup namespace, the
device cgroup rules, masked and read-only /proc paths, and `--rm` removal of its state;
both create pid, mount, uts, ipc and net namespaces.
Wall time is fork to exit of the CLI; CPU is user+sys of the whole process tree (wait4);
peak RSS is the largest single process of the tree (GNU time, {a.rss_runs} separate runs).

{table}

capsa/runc median wall-time ratio: **{ratio:.2f}** (goal: at most 0.50).

crun 1.8.1 on this host: `{result['crun']}`

Raw samples: [run-vs-runc.json](run-vs-runc.json).
"""
    open(os.path.join(a.out, "run-vs-runc.md"), "w").write(md)


if __name__ == "__main__":
    main()
