#!/usr/bin/env python3
"""capsa-vmm's own figures (issue 6), with the freestanding test guest:
  - exec -> first KVM_RUN and exec -> the guest's boot-timer write, as the VMM logs them
    (the parent's CLOCK_REALTIME just before exec is passed in CAPSA_VMM_T0), wall and CPU;
  - VMM memory of an idle VM with 128 MiB and 1 GiB guests: RSS and private memory of every
    mapping except guest RAM, from /proc/PID/smaps, and the guest RAM actually touched.
Firecracker's bars: first KVM_RUN within 8 ms, VMM overhead at most 5 MiB.
The test guest is used because on nested-PVM hosts a Linux guest's kernel is emulated and never
reaches init; the figures are the VMM's, not a Linux boot's.
"""
import argparse, json, os, platform, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from run_vs_runc import machine  # noqa: E402


def build_guest(out):
    src = os.path.join(ROOT, "vmm/tests/guest")
    subprocess.run(["gcc", "-O1", "-ffreestanding", "-fno-stack-protector", "-fno-pic", "-no-pie", "-mno-red-zone",
                    "-mgeneral-regs-only", "-fno-builtin", "-nostdlib", "-static", f"-Wl,-T,{src}/guest.ld",
                    "-Wl,--build-id=none", "-Wl,--no-warn-rwx-segments", "-o", out, f"{src}/guest.c"], check=True)


def parse_us(stderr, label):
    for line in stderr.splitlines():
        if label in line:
            parts = line.split(":")[-1].split(",")
            return int(parts[0].split()[0]), int(parts[1].split()[0])
    raise RuntimeError(f"no {label!r} line in: {stderr}")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def summary(xs_us):
    return {"p50_ms": pct(xs_us, 50) / 1000, "p95_ms": pct(xs_us, 95) / 1000, "p99_ms": pct(xs_us, 99) / 1000,
            "mean_ms": statistics.mean(xs_us) / 1000}


def start_times(vmm, guest, runs):
    first = {"wall": [], "cpu": []}
    ready = {"wall": [], "cpu": []}
    for i in range(runs + 3):
        env = dict(os.environ, CAPSA_VMM_T0=str(time.time_ns()))
        p = subprocess.run([vmm, "--kernel", guest, "--serial", "none", "--mem", "128M", "--cmdline", "capsa.bench=boot"],
                           env=env, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"capsa-vmm exited {p.returncode}: {p.stderr}")
        if i < 3:
            continue  # warm-up
        w, c = parse_us(p.stderr, "first KVM_RUN")
        first["wall"].append(w); first["cpu"].append(c)
        w, c = parse_us(p.stderr, "guest ready (boot timer)")
        ready["wall"].append(w); ready["cpu"].append(c)
    return {"first_kvm_run": {k: summary(v) for k, v in first.items()},
            "boot_timer": {k: summary(v) for k, v in ready.items()}}


def memory(vmm, guest, mem_mib):
    p = subprocess.Popen([vmm, "--kernel", guest, "--serial", "none", "--mem", f"{mem_mib}M", "--cmdline", "capsa.bench=idle"],
                         stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stderr:
            if "boot timer" in line:
                break
        time.sleep(0.2)
        guest_bytes = mem_mib << 20
        totals = {"rss_kib": 0, "private_kib": 0, "guest_touched_kib": 0}
        cur = None
        for line in open(f"/proc/{p.pid}/smaps"):
            head = line.split()
            if "-" in head[0] and not head[0].endswith(":"):
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                # Guest RAM is the one anonymous mapping of the guest's size (below 3 GiB).
                cur = "guest" if hi - lo == guest_bytes and len(head) < 6 else "vmm"
            elif head[0] == "Rss:":
                totals["guest_touched_kib" if cur == "guest" else "rss_kib"] += int(head[1])
            elif head[0] in ("Private_Clean:", "Private_Dirty:") and cur == "vmm":
                totals["private_kib"] += int(head[1])
        return totals
    finally:
        p.kill()
        p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vmm", default=os.path.join(ROOT, "target/release/capsa-vmm"))
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs/benchmarks"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        guest = os.path.join(tmp, "guest")
        build_guest(guest)
        result = {"machine": machine(), "runs": a.runs, "command": " ".join(["python3", "bench/vmm.py", "--runs", str(a.runs)]),
                  "accelerator": "kvm (nested PVM: no vmx/svm)" if "vmx" not in open("/proc/cpuinfo").read() and "svm" not in open("/proc/cpuinfo").read() else "kvm",
                  "start": start_times(a.vmm, guest, a.runs),
                  "memory": {f"{m}MiB": memory(a.vmm, guest, m) for m in (128, 1024)}}
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "vmm.json"), "w") as f:
        json.dump(result, f, indent=2)
    s, m = result["start"], result["memory"]
    md = [f"# capsa-vmm: start and memory\n",
          f"`{result['command']}` on {result['machine']['cpu']}, {result['machine']['cpus']} CPUs, host kernel {result['machine']['kernel']}, accelerator {result['accelerator']}. Test guest (freestanding, tests/guest/guest.c), serial off, 1 vCPU.\n",
          "| from exec (CAPSA_VMM_T0) | p50 wall | p95 wall | p99 wall | p50 CPU |", "| --- | --- | --- | --- | --- |"]
    for k, label in (("first_kvm_run", "first KVM_RUN"), ("boot_timer", "guest boot-timer write")):
        w, c = s[k]["wall"], s[k]["cpu"]
        md.append(f"| {label} | {w['p50_ms']:.2f} ms | {w['p95_ms']:.2f} ms | {w['p99_ms']:.2f} ms | {c['p50_ms']:.2f} ms |")
    md += ["", "| guest memory | VMM RSS (all but guest RAM) | VMM private | guest RAM touched |", "| --- | --- | --- | --- |"]
    for k, v in m.items():
        md.append(f"| {k} | {v['rss_kib'] / 1024:.2f} MiB | {v['private_kib'] / 1024:.2f} MiB | {v['guest_touched_kib'] / 1024:.2f} MiB |")
    md.append("\nGoals (Firecracker's): first KVM_RUN within 8 ms; VMM overhead at most 5 MiB.")
    md_path = os.path.join(a.out, "vmm.md")
    # Keep the snapshot-restore part bench/vmm_snapshot.py writes after its marker.
    kept = open(md_path).read().partition("<!-- vmm_snapshot.py -->") if os.path.exists(md_path) else ("", "", "")
    with open(md_path, "w") as f:
        f.write("\n".join(md) + "\n" + ("\n" + kept[1] + kept[2] if kept[1] else ""))
    print("\n".join(md))


if __name__ == "__main__":
    main()
