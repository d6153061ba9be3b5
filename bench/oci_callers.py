#!/usr/bin/env python3
"""capsa-runc against runc as the OCI runtime of containerd and podman: the time of
`ctr run --rm --runc-binary RUNTIME IMAGE ID true` (a containerd of its own: own root,
state and socket) and of `podman --runtime RUNTIME run --rm ... IMAGE true`, each runtime
through each caller, interleaved round by round after a warm-up. The image is busybox
from scripts/make-busybox-rootfs.sh, imported by capsa and saved for both callers.

    cargo build --release -p capsa --bins
    python3 bench/oci_callers.py --capsa target/release/capsa --rounds 20

Medians and p10/p90 are printed and written as JSON (--out) with the machine.
"""
import argparse, json, os, shutil, signal, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_vs_runc import machine, summary, timed, version  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = "docker.io/library/busybox:bench"


def start_containerd(tmp):
    """A containerd of its own under tmp; returns (process, ctr command prefix)."""
    d = os.path.join(tmp, "ctd")
    os.makedirs(d)
    config = os.path.join(d, "config.toml")
    with open(config, "w") as f:
        f.write(f'''version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{d}/ctd.sock"
[ttrpc]
  address = "{d}/ctd.sock.ttrpc"
''')
    log = open(os.path.join(d, "containerd.log"), "w")
    proc = subprocess.Popen(["containerd", "--config", config], stdout=log, stderr=log)
    ctr = ["ctr", "--address", f"{d}/ctd.sock", "-n", "bench"]
    for _ in range(200):
        if subprocess.run(ctr + ["version"], capture_output=True).returncode == 0:
            return proc, ctr
        time.sleep(0.05)
    raise RuntimeError("containerd did not start (see its log in the temporary directory)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capsa", default=os.path.join(ROOT, "target/release/capsa"))
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--out", default=None, help="JSON report path")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="capsa-oci-callers-")
    containerd = None
    try:
        capsa_runc = os.path.join(tmp, "capsa-runc")
        os.symlink(os.path.abspath(a.capsa), capsa_runc)
        runc = shutil.which("runc")
        runtimes = {"capsa-runc": capsa_runc, "runc": runc}
        tar = os.path.join(tmp, "busybox.tar")
        subprocess.run([os.path.join(ROOT, "scripts/make-busybox-rootfs.sh"), tar], check=True)
        store = [a.capsa, "--root", os.path.join(tmp, "store")]
        quiet = {"stdout": subprocess.DEVNULL}
        subprocess.run(store + ["import", "-c", "ENV PATH=/bin", tar, IMAGE], check=True, **quiet)
        archive = os.path.join(tmp, "image.tar")
        subprocess.run(store + ["save", "-o", archive, IMAGE], check=True)
        containerd, ctr = start_containerd(tmp)
        subprocess.run(ctr + ["images", "import", archive], check=True, **quiet)
        podman = ["podman", "--root", f"{tmp}/podman/root", "--runroot", f"{tmp}/podman/run",
                  "--tmpdir", f"{tmp}/podman/tmp", "--cgroup-manager", "cgroupfs",
                  "--events-backend", "file", "--storage-driver", "overlay"]
        subprocess.run(podman + ["load", "-i", archive], check=True, capture_output=True)
        # The ulimits: this machine lacks CAP_SYS_RESOURCE, where podman's defaults fail
        # with runc too.
        limits = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]

        def ctr_run(name, runtime, i):
            root = os.path.join(tmp, f"{name}-root")
            return ctr + ["run", "--rm", "--runc-binary", runtime, "--runc-root", root,
                          IMAGE, f"{name}-{i}", "true"]

        def podman_run(name, runtime, i):
            return podman + ["--runtime", runtime, "run", "--rm", "--pull", "never",
                             "--network", "none"] + limits + [IMAGE, "true"]

        cases = [(caller, name, build) for caller, build in (("ctr run --rm", ctr_run),
                 ("podman run --rm", podman_run)) for name in runtimes]
        times = {(c, n): [] for c, n, _ in cases}
        for i in range(a.rounds + 1):  # round 0: warm-up, not kept
            for caller, name, build in cases:
                wall, _, _ = timed(build(name, runtimes[name], i))
                if i > 0:
                    times[(caller, name)].append(wall * 1000)
        load = open("/proc/loadavg").read().split()[:3]
        report = {
            "command": "python3 bench/oci_callers.py " + " ".join(sys.argv[1:]),
            "machine": machine(),
            "load_average_at_end": load,
            "rounds": a.rounds,
            "versions": {"containerd": version(["containerd", "--version"]),
                         "podman": version(["podman", "--version"]),
                         "runc": version(["runc", "--version"])},
            "results": [],
        }
        for caller, name, _ in cases:
            xs = sorted(times[(caller, name)])
            s = summary(xs)
            s["p10"], s["p90"] = xs[len(xs) // 10], xs[min(len(xs) - 1, len(xs) * 9 // 10)]
            report["results"].append({"caller": caller, "runtime": name, "ms": s})
            print(f"{caller:>16} {name:>10}: median {s['median']:.1f} ms "
                  f"(p10 {s['p10']:.1f}, p90 {s['p90']:.1f})")
        for caller in ("ctr run --rm", "podman run --rm"):
            ours = next(r for r in report["results"] if r["caller"] == caller and r["runtime"] == "capsa-runc")
            theirs = next(r for r in report["results"] if r["caller"] == caller and r["runtime"] == "runc")
            ratio = ours["ms"]["median"] / theirs["ms"]["median"]
            report.setdefault("ratios", {})[caller] = round(ratio, 3)
            print(f"{caller}: capsa-runc takes {ratio:.2f}x runc's time")
        print(f"load average at the end: {' '.join(load)}")
        if a.out:
            with open(a.out, "w") as f:
                json.dump(report, f, indent=2)
    finally:
        if containerd:
            containerd.send_signal(signal.SIGTERM)
            containerd.wait(timeout=30)
        subprocess.run(["podman", "--root", f"{tmp}/podman/root", "--runroot", f"{tmp}/podman/run",
                        "system", "reset", "-f"], capture_output=True)
        subprocess.run(["umount", "-R", tmp], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
