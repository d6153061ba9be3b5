#!/usr/bin/env python3
"""What an idle container costs the host outside the workload: its monitor, in two builds.

For each build (its own state root, busybox imported from Debian's busybox-static) this
starts N detached `sleep` containers and, with `--vm`, one detached VM, lets them settle,
then reads over a window of `--seconds`:
  - each monitor's CPU time (utime + stime of every thread, from /proc/PID/task/*/stat)
    and its context switches (voluntary + involuntary): an idle monitor should never wake;
  - each monitor's PSS (/proc/PID/smaps_rollup), the memory it holds per container.
The monitor is the process the container's record names (`monitor_pid` in state.json).

  python3 bench/idle_monitor.py --old /work/baseline-16/capsa --new target/release/capsa \\
      --containers 10 --vm --seconds 60 --out docs/benchmarks --name idle-monitor
"""
import argparse, glob, json, os, platform, statistics, subprocess, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TICK = os.sysconf("SC_CLK_TCK")


def threads_cpu_and_switches(pid):
    """(CPU seconds, context switches) summed over the threads of `pid`."""
    cpu, switches = 0, 0
    for task in glob.glob(f"/proc/{pid}/task/*"):
        with open(f"{task}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        with open(f"{task}/status") as f:
            for line in f:
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    switches += int(line.split()[1])
    return cpu / TICK, switches


def pss_kib(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


class Build:
    def __init__(self, label, binary, tmp, tar, kernel):
        self.label, self.binary = label, binary
        self.root = os.path.join(tmp, label)
        self.env = dict(os.environ)
        if kernel:
            self.env["CAPSA_KERNEL"] = kernel
        self.capsa = [binary, "--root", self.root]
        subprocess.run(self.capsa + ["import", "-c", 'CMD ["sh"]', tar, "busybox"],
                       check=True, stdout=subprocess.DEVNULL, env=self.env)

    def start(self, name, vm):
        argv = self.capsa + ["run", "-d", "--name", name, "--network", "none"]
        if vm:
            argv += ["--isolation", "vm"]
        subprocess.run(argv + ["busybox", "sleep", "100000"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env)
        out = subprocess.run(self.capsa + ["inspect", "-f", "{{.Id}}", name], check=True,
                             capture_output=True, text=True, env=self.env).stdout.strip()
        with open(os.path.join(self.root, "containers", out, "state.json")) as f:
            return json.load(f)["monitor_pid"]

    def close(self):
        subprocess.run(self.capsa + ["rm", "-f"] + self.names, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env=self.env)


def measure(build, containers, vm, seconds):
    build.names = [f"idle{i}" for i in range(containers)] + (["idlevm"] if vm else [])
    pids = {n: build.start(n, n == "idlevm") for n in build.names}
    time.sleep(5)  # past start-up: the first log writes, the VM's boot
    before = {n: threads_cpu_and_switches(p) for n, p in pids.items()}
    time.sleep(seconds)
    after = {n: threads_cpu_and_switches(p) for n, p in pids.items()}
    pss = {n: pss_kib(p) for n, p in pids.items()}
    build.close()
    rows = {}
    for n in build.names:
        rows[n] = {
            "cpu_ms": round((after[n][0] - before[n][0]) * 1000),
            "wakeups": after[n][1] - before[n][1],
            "pss_kib": pss[n],
        }
    ctr = [rows[n] for n in build.names if n != "idlevm"]
    return {
        "containers": {
            "monitor_cpu_ms_total": sum(r["cpu_ms"] for r in ctr),
            "monitor_wakeups_total": sum(r["wakeups"] for r in ctr),
            "monitor_pss_kib_median": statistics.median(r["pss_kib"] for r in ctr) if ctr else None,
        },
        "vm": rows.get("idlevm"),
        "per_monitor": rows,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True)
    ap.add_argument("--new", default=os.path.join(ROOT, "target/release/capsa"))
    ap.add_argument("--containers", type=int, default=10)
    ap.add_argument("--vm", action="store_true", help="also one detached VM (needs CAPSA_KERNEL)")
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--out")
    ap.add_argument("--name", default="idle-monitor")
    a = ap.parse_args()
    kernel = os.environ.get("CAPSA_KERNEL")
    with tempfile.TemporaryDirectory(prefix="capsa-idle-") as tmp:
        tar = os.path.join(tmp, "busybox.tar")
        subprocess.run([os.path.join(ROOT, "scripts/make-busybox-rootfs.sh"), tar], check=True,
                       stdout=subprocess.DEVNULL)
        results = {}
        for label, binary in (("old", a.old), ("new", a.new)):
            results[label] = measure(Build(label, binary, tmp, tar, kernel), a.containers, a.vm,
                                     a.seconds)
    report = {
        "command": "bench/idle_monitor.py " + " ".join(os.sys.argv[1:]),
        "machine": {"kernel": platform.release(), "cpus": os.cpu_count()},
        "seconds": a.seconds,
        "results": results,
    }
    lines = ["| build | container monitors: CPU over the window (ms, all) | wake-ups (all) | PSS per monitor (KiB, median) | VM monitor: CPU (ms) | VM wake-ups | VM monitor PSS (KiB) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for label in ("old", "new"):
        r = results[label]
        c, v = r["containers"], r["vm"] or {}
        lines.append(f"| {label} | {c['monitor_cpu_ms_total']} | {c['monitor_wakeups_total']} | "
                     f"{c['monitor_pss_kib_median']} | {v.get('cpu_ms', '-')} | {v.get('wakeups', '-')} | {v.get('pss_kib', '-')} |")
    table = "\n".join(lines)
    print(table)
    if a.out:
        with open(os.path.join(a.out, a.name + ".json"), "w") as f:
            json.dump(report, f, indent=1)
        with open(os.path.join(a.out, a.name + "-table.md"), "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
