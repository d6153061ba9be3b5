#!/usr/bin/env python3
"""capsa-vmm snapshot restore (issue 20), with the freestanding test guest (capsa.test=snapshot):
one snapshot taken at the guest's snapshot point, then N restores in fresh processes, each timed
from just before exec (CAPSA_VMM_T0) to
  - the first KVM_RUN (the guest's first instruction after the restore), wall and CPU;
  - the guest's boot-timer write (its first act after the snapshot point), wall and CPU;
  - the first byte of the guest's serial output reaching this script through a pipe;
and, interleaved with them at the same load, a cold boot of the same guest to its first
KVM_RUN (capsa.bench=boot), for comparison.
Writes docs/benchmarks/vmm_snapshot.json and the "Snapshot restore" part of vmm.md.
"""
import argparse, json, os, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from run_vs_runc import machine  # noqa: E402
from vmm import build_guest, parse_us, summary  # noqa: E402

MARK = "<!-- vmm_snapshot.py -->"


def take(vmm, guest, snap, mem):
    p = subprocess.run([vmm, "--kernel", guest, "--serial", "none", "--mem", mem, "--cmdline",
                        "capsa.test=snapshot", "--snapshot-to", snap], capture_output=True, text=True)
    if p.returncode != 0 or "snapshot point" not in p.stderr:
        raise RuntimeError(f"snapshot failed ({p.returncode}): {p.stderr}")


def restore_once(vmm, snap):
    t0 = time.time_ns()
    env = dict(os.environ, CAPSA_VMM_T0=str(t0))
    p = subprocess.Popen([vmm, "--restore-from", snap], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.read(p.stdout.fileno(), 1)
    first_out_us = (time.time_ns() - t0) // 1000
    out, err = p.communicate()
    err = err.decode()
    if p.returncode != 0:
        raise RuntimeError(f"restore exited {p.returncode}: {err}")
    return parse_us(err, "first KVM_RUN"), parse_us(err, "guest ready (boot timer)"), first_out_us


def cold_once(vmm, guest, mem):
    env = dict(os.environ, CAPSA_VMM_T0=str(time.time_ns()))
    p = subprocess.run([vmm, "--kernel", guest, "--serial", "none", "--mem", mem, "--cmdline", "capsa.bench=boot"],
                       env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"cold boot exited {p.returncode}: {p.stderr}")
    return parse_us(p.stderr, "first KVM_RUN")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vmm", default=os.path.join(ROOT, "target/release/capsa-vmm"))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--mem", default="128M")
    ap.add_argument("--label", default="release")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs/benchmarks"))
    a = ap.parse_args()
    series = {"first_kvm_run_wall": [], "first_kvm_run_cpu": [], "boot_timer_wall": [], "boot_timer_cpu": [],
              "first_serial_byte_wall": [], "cold_first_kvm_run_wall": [], "cold_first_kvm_run_cpu": []}
    with tempfile.TemporaryDirectory() as tmp:
        guest, snap = os.path.join(tmp, "guest"), os.path.join(tmp, "snap")
        build_guest(guest)
        take(a.vmm, guest, snap, a.mem)
        state_bytes = os.path.getsize(os.path.join(snap, "state"))
        for i in range(a.runs + 3):
            (fw, fc), (bw, bc), out = restore_once(a.vmm, snap)
            cw, cc = cold_once(a.vmm, guest, a.mem)
            if i < 3:
                continue  # warm-up: the memory file in the page cache
            for k, v in zip(series, (fw, fc, bw, bc, out, cw, cc)):
                series[k].append(v)
    load = open("/proc/loadavg").read().split()[:3]
    result = {"machine": machine(), "label": a.label, "runs": a.runs, "guest_memory": a.mem,
              "state_file_bytes": state_bytes, "loadavg_after": load,
              "command": f"python3 bench/vmm_snapshot.py --runs {a.runs} --vmm {os.path.relpath(a.vmm, ROOT)} --label {a.label}",
              "restore": {k: summary(v) for k, v in series.items()}}
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "vmm_snapshot.json")
    runs = json.load(open(path)) if os.path.exists(path) else {}
    runs[a.label] = result
    with open(path, "w") as f:
        json.dump(runs, f, indent=2)
    write_md(os.path.join(a.out, "vmm.md"), runs)


def write_md(md_path, runs):
    any_run = next(iter(runs.values()))
    md = [MARK, "## Snapshot restore (`--snapshot-to`, `--restore-from`)\n",
          f"Test guest with `capsa.test=snapshot`, {any_run['guest_memory']} guest, 1 vCPU, serial to a pipe; "
          f"{any_run['runs']} restores of one snapshot (3 warm-up runs first: the memory file is in the page cache), "
          f"each a fresh capsa-vmm process; times from just before exec (CAPSA_VMM_T0). Machine: "
          f"{any_run['machine']['cpu']}, {any_run['machine']['cpus']} CPUs, kernel {any_run['machine']['kernel']}, "
          "KVM nested PVM, shared with other helpers' builds (load average after each run below).\n",
          "| build | restore: first KVM_RUN p50 wall / CPU | restore: boot-timer write p50 wall / CPU | restore: first serial byte p50 wall | cold boot: first KVM_RUN p50 wall / CPU | state file | load avg |",
          "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, r in runs.items():
        s = r["restore"]
        md.append(f"| {label} | {s['first_kvm_run_wall']['p50_ms']:.2f} / {s['first_kvm_run_cpu']['p50_ms']:.2f} ms "
                  f"| {s['boot_timer_wall']['p50_ms']:.2f} / {s['boot_timer_cpu']['p50_ms']:.2f} ms "
                  f"| {s['first_serial_byte_wall']['p50_ms']:.2f} ms "
                  f"| {s['cold_first_kvm_run_wall']['p50_ms']:.2f} / {s['cold_first_kvm_run_cpu']['p50_ms']:.2f} ms "
                  f"| {r['state_file_bytes']} B | {' '.join(r['loadavg_after'])} |")
    md.append("\nCommands: " + "; ".join(f"`{r['command']}`" for r in runs.values()) + ".")
    md.append("Firecracker's published figure for a snapshot restore is a few milliseconds.")
    text = open(md_path).read() if os.path.exists(md_path) else ""
    text = text.split(MARK)[0].rstrip() + "\n\n" + "\n".join(md) + "\n"
    with open(md_path, "w") as f:
        f.write(text)
    print("\n".join(md))


if __name__ == "__main__":
    main()
