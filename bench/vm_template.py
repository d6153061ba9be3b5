#!/usr/bin/env python3
"""VM start cold against from the VM template (issue 20), interleaved round by round:
  - `run --rm --network none --isolation vm busybox echo hi`: time to first output and total,
    and engine start -> agent ready (capsa logs it at --log-level info);
  - idle memory: PSS of the host processes of K VM containers running side by side
    (capsa CLIs and engines), per VM.
Cold is `CAPSA_VM_TEMPLATE=off`; the template is built (warm) before the first round.
`--idle-only` measures the memory alone (`--modes template --idle 20`: 20 clones), and
what the template's RAM holder keeps beside the clones (its own PSS, its memfd's pages).
"""
import argparse, json, os, re, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from run_vs_runc import machine  # noqa: E402
from vm import summary, pss_kib, children, ANSI  # noqa: E402


def env_for(mode):
    e = dict(os.environ)
    e["CAPSA_VM_TEMPLATE"] = "off" if mode == "cold" else "on"
    return e


def timed(capsa, root, mode):
    t0 = time.perf_counter()
    p = subprocess.Popen([capsa, "--root", root, "--log-level", "info", "run", "--rm", "--network", "none",
                          "--isolation", "vm", "--vmm", "qemu", "busybox", "echo", "hi"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env_for(mode))
    first = None
    for _ in iter(lambda: p.stdout.read(1), b""):
        if first is None:
            first = time.perf_counter() - t0
    err = ANSI.sub("", p.stderr.read().decode(errors="replace"))
    p.wait()
    total = time.perf_counter() - t0
    if p.returncode != 0 or first is None:
        raise RuntimeError(f"{mode}: exit {p.returncode}: {err}")
    restored = "vm restored from template" in err
    if restored != (mode == "template"):
        raise RuntimeError(f"{mode}: restored={restored}: {err}")
    m = re.search(r"vm agent ready ms=([0-9.]+)", err)
    return first, total, float(m.group(1))


def idle(capsa, root, mode, k):
    """PSS per VM of k VM containers idling side by side."""
    procs = []
    for _ in range(k):
        p = subprocess.Popen([capsa, "--root", root, "run", "--rm", "--network", "none", "--isolation", "vm",
                              "--vmm", "qemu", "busybox", "sh", "-c", "trap 'exit 0' TERM; echo up; sleep 900 & wait"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env_for(mode))
        p.stdout.readline()
        procs.append(p)
    time.sleep(2)
    pids = [x for p in procs for x in [p.pid] + children(p.pid)]
    total = sum(pss_kib(x) for x in pids)
    if mode == "template":
        for h in holders(root):
            print(f"holder {h}: PSS {pss_kib(h)/1024:.1f} MiB, memfd {memfd_kib(h)/1024:.1f} MiB resident")
    for p in procs:
        p.send_signal(15)
    for p in procs:
        p.wait(timeout=120)
    return total / k


def holders(root):
    """The PIDs of the VM template RAM holders of state root `root`."""
    out = []
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{d}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"__vm-template-ram" in cmd and any(root.encode() in c for c in cmd):
            out.append(int(d))
    return out


def memfd_kib(pid):
    """Memory held by the memfds process `pid` holds (mapped by clones or not)."""
    total = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/memfd:"):
            total += os.stat(f"/proc/{pid}/fd/{fd}").st_blocks // 2
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--capsa", default=os.path.join(ROOT, "target/debug/capsa"))
    ap.add_argument("--root", required=True, help="a state root holding the busybox image")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--idle", type=int, default=4, help="VMs side by side for the memory figure")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs/benchmarks"))
    ap.add_argument("--idle-only", action="store_true", help="memory alone, printed, not written")
    ap.add_argument("--modes", default="cold,template")
    a = ap.parse_args()
    subprocess.run([a.capsa, "--root", a.root, "system", "vm-template", "warm"], check=True)
    if a.idle_only:
        for mode in a.modes.split(","):
            print(f"{mode}: idle PSS/VM {idle(a.capsa, a.root, mode, a.idle)/1024:.1f} MiB ({a.idle} VMs)")
        return
    res = {"cold": ([], [], []), "template": ([], [], [])}
    for i in range(a.runs):
        order = ["cold", "template"] if i % 2 == 0 else ["template", "cold"]
        for mode in order:
            for xs, v in zip(res[mode], timed(a.capsa, a.root, mode)):
                xs.append(v)
    mem = {mode: idle(a.capsa, a.root, mode, a.idle) for mode in ("cold", "template")}
    out = {"machine": machine(), "command": f"python3 bench/vm_template.py --root ROOT --runs {a.runs} --idle {a.idle}",
           "binary": a.capsa, "runs": {}}
    for mode, (first, total, ready) in res.items():
        out["runs"][mode] = {"first_output_s": summary(first), "total_s": summary(total),
                             "agent_ready_ms": summary(ready), "idle_pss_per_vm_kib": mem[mode]}
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "vm_template.json"), "w") as f:
        json.dump(out, f, indent=2)
    for mode, r in out["runs"].items():
        print(f"{mode}: first output p50 {r['first_output_s']['p50']*1000:.0f} ms p95 {r['first_output_s']['p95']*1000:.0f} ms; "
              f"total p50 {r['total_s']['p50']*1000:.0f} ms; agent ready p50 {r['agent_ready_ms']['p50']:.0f} ms; "
              f"idle PSS/VM {r['idle_pss_per_vm_kib']/1024:.1f} MiB")


if __name__ == "__main__":
    main()
