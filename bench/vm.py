#!/usr/bin/env python3
"""VM isolation figures (issue 7), per engine and accelerator, against the container isolation:
  - engine start -> guest agent ready (capsa logs it at --log-level info);
  - `run --rm IMAGE echo hi`: time to first output and total, container vs VM;
  - host memory of an idle VM container: PSS (smaps_rollup) of every host process of it (the
    capsa CLI that relays it and the engine), and the engine's RSS, which includes the guest
    memory the guest has touched.
Every figure is labelled with engine, accelerator and host kernel.
"""
import argparse, json, os, re, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from run_vs_runc import machine  # noqa: E402

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def summary(xs):
    return {"p50": pct(xs, 50), "p95": pct(xs, 95), "mean": statistics.mean(xs), "n": len(xs)}


def timed_run(capsa, flags, cmd):
    """(first output s, total s, agent ready ms or None, engine line)."""
    t0 = time.perf_counter()
    p = subprocess.Popen([capsa, "--log-level", "info", "run", "--rm", "--network", "none"] + flags + ["busybox"] + cmd,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = None
    for chunk in iter(lambda: p.stdout.read(1), b""):
        if first is None:
            first = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    p.wait()
    total = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"run {flags} exited {p.returncode}: {err}")
    text = ANSI.sub("", err)
    m = re.search(r"vm agent ready ms=([0-9.]+)", text)
    engine = next((l.split("vm isolation: ", 1)[1] for l in text.splitlines() if "vm isolation: " in l), "")
    return first, total, float(m.group(1)) if m else None, engine


def pss_kib(pid):
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


def idle_memory(capsa, flags):
    """PSS of the capsa CLI and its engine child while the workload sleeps."""
    p = subprocess.Popen([capsa, "--log-level", "info", "run", "--rm", "--network", "none"] + flags + ["busybox", "sh", "-c", "echo up; sleep 6"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    p.stdout.readline()  # the workload is running: the VM has booted and the agent is serving
    time.sleep(1)
    procs = [p.pid] + children(p.pid)
    result = {"processes": len(procs), "pss_kib": sum(pss_kib(x) for x in procs),
              "largest_rss_kib": max(rss_kib(x) for x in procs)}
    p.send_signal(15)
    p.wait(timeout=60)
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--capsa", default=os.path.join(ROOT, "target/release/capsa"))
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs/benchmarks"))
    a = ap.parse_args()
    configs = [("container", ["--isolation", "container"]), ("vm (qemu)", ["--isolation", "vm", "--vmm", "qemu"])]
    results = {"machine": machine(), "command": f"python3 bench/vm.py --runs {a.runs}", "image": "busybox", "runs": {}}
    for label, flags in configs:
        firsts, totals, ready, engine = [], [], [], "namespaces + cgroups"
        timed_run(a.capsa, flags, ["echo", "hi"])  # warm-up (builds the erofs images once)
        for _ in range(a.runs):
            f, t, r, e = timed_run(a.capsa, flags, ["echo", "hi"])
            firsts.append(f); totals.append(t)
            if r is not None:
                ready.append(r)
            engine = e.split(":")[0] if e else engine
        results["runs"][label] = {"engine": engine, "first_output_s": summary(firsts), "total_s": summary(totals),
                                  "agent_ready_ms": summary(ready) if ready else None, "idle": idle_memory(a.capsa, flags)}
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "vm.json"), "w") as f:
        json.dump(results, f, indent=2)
    m = results["machine"]
    md = ["# VM isolation against the container isolation\n",
          f"`{results['command']}` on {m['cpu']}, {m['cpus']} CPUs, {m['memory_gib']} GiB, host kernel {m['kernel']}; "
          f"image busybox, `run --rm --network none busybox echo hi`, {a.runs} runs after a warm-up.\n",
          "| isolation | engine (accelerator) | engine start -> agent ready p50 | first output p50 / p95 | total p50 | idle: PSS of its host processes | idle: largest RSS |",
          "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, r in results["runs"].items():
        ready = f"{r['agent_ready_ms']['p50']:.0f} ms" if r["agent_ready_ms"] else "-"
        md.append(f"| {label} | {r['engine']} | {ready} | {r['first_output_s']['p50'] * 1000:.1f} / {r['first_output_s']['p95'] * 1000:.1f} ms | "
                  f"{r['total_s']['p50'] * 1000:.1f} ms | {r['idle']['pss_kib'] / 1024:.1f} MiB ({r['idle']['processes']} processes) | {r['idle']['largest_rss_kib'] / 1024:.1f} MiB |")
    md.append("\nThe VM's idle PSS is the QEMU process (its RSS includes the guest memory the guest kernel and agent touched) "
              "plus the capsa CLI relaying the workload. On this host KVM has no vmx/svm, so the guest runs under QEMU's TCG "
              "emulator: every VM figure here is an emulated guest's, about two orders of magnitude slower to boot than under KVM.")
    with open(os.path.join(a.out, "vm.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
