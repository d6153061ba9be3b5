#!/usr/bin/env python3
"""The cost of a change: two capsa builds, the same commands, interleaved runs.

Each build gets its own state root (busybox imported from Debian's busybox-static) and,
for a VM run, its own guest kernel (`--old-kernel`, `--new-kernel`; the agent and helpers
are found beside each binary). The cases are run alternately, old then new, after a
warm-up, so drift in the machine's load hits both alike. Wall time and CPU time (user+sys
of the whole process tree, from wait4) are recorded per run; p50, p95 and the ratio are
printed and written as JSON and Markdown.

  python3 bench/before_after.py --old /path/old/capsa --new target/release/capsa \\
      --case run --case exec --case vm --out docs/benchmarks --name isolation-fixes

Cases:
  run   `capsa run --rm --network none busybox true`   (the fast path)
  exec  `capsa exec CTR true` into a running `sleep` container
  vm    `capsa run --rm --network none --isolation vm busybox true`
"""
import argparse, json, os, platform, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def timed(argv, env):
    """Runs argv to its end; returns (wall s, cpu s). Fails loudly on a non-zero exit."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {code}: {err.strip()}")
    return wall, ru.ru_utime + ru.ru_stime


def summary(xs):
    xs = sorted(xs)
    return {"p50": statistics.median(xs), "p95": xs[min(len(xs) - 1, int(0.95 * len(xs)))],
            "min": xs[0], "max": xs[-1], "n": len(xs)}


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
    return {"kernel": platform.release(), "cpu": cpu, "cpus": os.cpu_count(),
            "memory_gib": round(int(mem) / 2**20, 1), "load_at_start": os.getloadavg()[0]}


class Build:
    """One capsa binary with a state root of its own."""

    def __init__(self, label, binary, kernel, tmp, tar):
        self.label, self.binary = label, os.path.abspath(binary)
        self.root = os.path.join(tmp, label)
        self.env = dict(os.environ)
        if kernel:
            self.env["CAPSA_KERNEL"] = kernel
        self.capsa = [self.binary, "--root", self.root]
        subprocess.run(self.capsa + ["import", "-c", "CMD [\"sh\"]", tar, "busybox"],
                       check=True, stdout=subprocess.DEVNULL, env=self.env)
        self.ctr = None

    def argv(self, case):
        if case == "run":
            return self.capsa + ["run", "--rm", "--network", "none", "busybox", "true"]
        if case == "exec":
            if self.ctr is None:
                self.ctr = f"ab-{self.label}"
                subprocess.run(self.capsa + ["run", "-d", "--network", "none", "--name", self.ctr,
                                             "busybox", "sleep", "100000"],
                               check=True, stdout=subprocess.DEVNULL, env=self.env)
            return self.capsa + ["exec", self.ctr, "true"]
        if case == "vm":
            return self.capsa + ["run", "--rm", "--network", "none", "--isolation", "vm", "busybox", "true"]
        raise SystemExit(f"unknown case {case!r}")

    def close(self):
        if self.ctr:
            subprocess.run(self.capsa + ["rm", "-f", self.ctr], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env=self.env)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True, help="the capsa binary before the change")
    ap.add_argument("--new", default=os.path.join(ROOT, "target/release/capsa"))
    ap.add_argument("--old-kernel", help="guest kernel for the old build's VM runs")
    ap.add_argument("--new-kernel", help="guest kernel for the new build's VM runs")
    ap.add_argument("--case", action="append", choices=["run", "exec", "vm"])
    ap.add_argument("--runs", type=int, default=100, help="runs per build and case (VM: --vm-runs)")
    ap.add_argument("--vm-runs", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs/benchmarks"))
    ap.add_argument("--name", default="before-after")
    a = ap.parse_args()
    cases = a.case or ["run", "exec"]
    tmp = tempfile.mkdtemp(prefix="capsa-ab-")
    builds = []
    try:
        tar = os.path.join(tmp, "busybox.tar")
        subprocess.run([os.path.join(ROOT, "scripts/make-busybox-rootfs.sh"), tar], check=True)
        builds = [Build("old", a.old, a.old_kernel, tmp, tar), Build("new", a.new, a.new_kernel, tmp, tar)]
        samples = {c: {b.label: {"wall": [], "cpu": []} for b in builds} for c in cases}
        os.sync()
        for case in cases:
            runs = a.vm_runs if case == "vm" else a.runs
            warm = min(a.warmup, 2) if case == "vm" else a.warmup
            for i in range(warm + runs):
                for b in builds:
                    wall, cpu = timed(b.argv(case), b.env)
                    if i >= warm:
                        samples[case][b.label]["wall"].append(wall)
                        samples[case][b.label]["cpu"].append(cpu)
    finally:
        for b in builds:
            b.close()
        subprocess.run(["rm", "-rf", tmp])
    result = {
        "command": " ".join(sys.argv), "machine": machine(), "cases": cases,
        "results": {c: {l: {m: summary(v) for m, v in s.items()} for l, s in per.items()} for c, per in samples.items()},
        "samples": samples,
    }
    lines = ["| case | old wall p50 (ms) | new wall p50 (ms) | ratio | old CPU p50 (ms) | new CPU p50 (ms) | ratio | runs |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in cases:
        r = result["results"][c]
        ow, nw = r["old"]["wall"]["p50"], r["new"]["wall"]["p50"]
        oc, nc = r["old"]["cpu"]["p50"], r["new"]["cpu"]["p50"]
        lines.append(f"| {c} | {ow*1e3:.1f} | {nw*1e3:.1f} | {nw/ow:.2f} | {oc*1e3:.1f} | {nc*1e3:.1f} | {nc/oc:.2f} | {r['new']['wall']['n']} |")
    table = "\n".join(lines)
    print(table)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, f"{a.name}.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(a.out, f"{a.name}-table.md"), "w") as f:
        f.write(table + "\n")


if __name__ == "__main__":
    main()
