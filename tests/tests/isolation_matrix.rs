//! `capsa bench --scenario isolation` as a user reads it: every escape probe has a verdict for
//! every subject, and what the matrix says stopped a probe is what a user finds when they run
//! the probe again without that layer (or, for the store, when they try as another user).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use capsa_tests::{run_bounded, text, TestEnv};
use serde_json::Value;

/// The rows a user finds in the matrix, in order.
const ROWS: [&str; 22] = [
    "mount",
    "proc_sys_write",
    "sys_write",
    "masked_proc_read",
    "device_char",
    "device_block",
    "raw_disk_read",
    "kernel_module",
    "kexec",
    "bpf",
    "perf_event",
    "io_uring",
    "userfaultfd",
    "keyctl",
    "user_namespace",
    "ptrace_other_pidns",
    "raw_socket",
    "host_file_proc_root",
    "leaked_fds",
    "exec_ptrace_window",
    "image_dev_symlink",
    "store_local_user",
];

fn matrix(env: &TestEnv, isolation: &str) -> (Value, String, std::path::PathBuf) {
    let out_dir = env.root().join(format!("report-{isolation}"));
    let out = run_bounded(
        env.command(&[
            "bench",
            "--scenario",
            "isolation",
            "--isolation",
            isolation,
            "--peers",
            "",
            "--quick",
            "--cgroup-parent",
            env.cgroup_parent(),
            "--out",
            out_dir.to_str().unwrap(),
        ]),
        Duration::from_secs(900),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("bench.json")).unwrap())
            .unwrap();
    (json, stdout, out_dir)
}

fn cell<'a>(json: &'a Value, subject: &str, probe: &str) -> &'a Value {
    let c = &json["isolation"][subject]["cells"][probe];
    assert!(
        c.is_object(),
        "{subject} has a cell for {probe}: {}",
        json["isolation"][subject]
    );
    c
}

fn by(c: &Value) -> Vec<&str> {
    c["by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect()
}

/// The probe's findings for `probes` in a container run with `flags`, as a user would run it.
fn probe_in_container(env: &TestEnv, flags: &[&str], probes: &str) -> Value {
    let probe_dir = env.root().join("bench").join("probe");
    let volume = format!("{}:/.capsa-probe:ro", probe_dir.display());
    let mut args = vec!["--rm", "--network", "none", "-v", &volume];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[
        "busybox",
        "/.capsa-probe/capsa-escape",
        "all",
        "--only",
        probes,
    ]);
    let out = env.run(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_str(text(&out.stdout).trim()).unwrap()
}

fn reach(findings: &Value, probe: &str) -> String {
    findings["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == probe)
        .map(|p| p["reach"].as_str().unwrap().to_string())
        .unwrap()
}

/// Whether uid/gid 65534 can read `path`.
fn nobody_reads(path: &Path) -> bool {
    Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "cat",
        ])
        .arg(path)
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn the_container_matrix_names_the_layer_that_stops_each_escape() {
    let env = TestEnv::new();
    let (json, stdout, out_dir) = matrix(&env, "container");
    const C: &str = "capsa-container";
    assert_eq!(
        json["isolation"][C]["status"], "ok",
        "{}",
        json["isolation"][C]
    );
    for probe in ROWS {
        let c = cell(&json, C, probe);
        assert!(
            ["allowed", "contained", "blocked", "not_applicable"]
                .contains(&c["verdict"].as_str().unwrap()),
            "{probe} measured: {c}"
        );
        assert!(!c["detail"].as_str().unwrap().is_empty(), "{probe}: {c}");
        assert!(stdout.contains(probe), "{probe} on the terminal: {stdout}");
    }
    assert_eq!(json["isolation"][C]["same_kernel"], true);

    // mount: refused by default, and the matrix says a capability stops it. A user who
    // adds every capability sees it go through; one who only drops seccomp does not.
    let mount = cell(&json, C, "mount");
    assert_eq!(
        (mount["verdict"].as_str(), by(mount)),
        (Some("blocked"), vec!["capability"]),
        "{mount}"
    );
    assert_eq!(
        reach(&probe_in_container(&env, &[], "mount"), "mount"),
        "refused"
    );
    assert_eq!(
        reach(
            &probe_in_container(&env, &["--cap-add", "ALL"], "mount"),
            "mount"
        ),
        "reached"
    );
    assert_eq!(
        reach(
            &probe_in_container(&env, &["--security-opt", "seccomp=unconfined"], "mount"),
            "mount"
        ),
        "refused"
    );

    // A device the container was not given: refused, by the device cgroup; with
    // --privileged (every device) the same probe opens it, so the refusal is not the host's.
    let device = cell(&json, C, "device_char");
    assert_eq!(device["verdict"], "blocked", "{device}");
    assert!(by(device).contains(&"device_cgroup"), "{device}");
    assert_eq!(
        reach(
            &probe_in_container(&env, &["--privileged"], "device_char"),
            "device_char"
        ),
        "reached"
    );
    // Reading a disk never gets through; where the host lets root read its disks, it is the
    // device cgroup that refuses it.
    let disk = cell(&json, C, "raw_disk_read");
    match disk["verdict"].as_str().unwrap() {
        "blocked" => assert!(by(disk).contains(&"device_cgroup"), "{disk}"),
        "not_applicable" => assert!(
            disk["detail"].as_str().unwrap().contains("host refuses"),
            "{disk}"
        ),
        other => panic!("raw disk read {other}: {disk}"),
    }

    for (probe, verdict, layer) in [
        ("proc_sys_write", "blocked", "read_only_path"),
        ("sys_write", "blocked", "read_only_path"),
        ("masked_proc_read", "blocked", "masked_path"),
        ("host_file_proc_root", "blocked", "namespace"),
        ("leaked_fds", "blocked", "runtime"),
        ("raw_socket", "contained", "namespace"),
    ] {
        let c = cell(&json, C, probe);
        assert_eq!(
            (c["verdict"].as_str(), by(c)),
            (Some(verdict), vec![layer]),
            "{probe}: {c}"
        );
    }

    // The store: the verdict is what another local user finds trying it.
    let created = env.create(&["--name", "record", "busybox", "true"]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let id = text(&created.stdout).trim().to_string();
    let config = env.root().join("containers").join(&id).join("config.json");
    assert!(config.is_file());
    let store = cell(&json, C, "store_local_user");
    assert_eq!(
        store["verdict"] == "allowed",
        nobody_reads(&config),
        "the matrix and uid 65534 agree on the store: {store}"
    );
    assert!(env.capsa(&["rm", "-f", "record"]).status.success());

    // The workload's own seccomp filter, read back: some syscalls, not all.
    let sys = &json["isolation"][C]["host_syscalls"];
    assert_eq!(sys["status"], "ok", "{sys}");
    let (reachable, table) = (
        sys["reachable"].as_u64().unwrap(),
        sys["table"].as_u64().unwrap(),
    );
    assert!(reachable > 100 && reachable < table, "{sys}");
    assert!(
        sys["filters"].as_u64().unwrap() >= 1 && sys["other_abis"] == false,
        "{sys}"
    );

    let svg = std::fs::read_to_string(out_dir.join("bench-isolation.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains(C), "the heat map");
    let md = std::fs::read_to_string(out_dir.join("bench.md")).unwrap();
    assert!(md.contains("## Isolation matrix"), "{md}");
    let images = text(&env.capsa(&["images"]).stdout);
    assert!(
        !images.contains("capsa-bench-hostile"),
        "the hostile image is removed: {images}"
    );
    env.assert_clean();
}

#[test]
fn in_a_vm_what_gets_through_is_the_guests_and_the_engine_is_measured() {
    let env = TestEnv::new();
    let (json, _, _) = matrix(&env, "vm");
    const V: &str = "capsa-vm";
    let result = &json["isolation"][V];
    assert_eq!(result["status"], "ok", "{result}");
    assert_eq!(
        result["same_kernel"], false,
        "the probe ran on the guest's kernel"
    );
    // A raw socket opens, inside the guest: contained by the hypervisor.
    let raw = cell(&json, V, "raw_socket");
    assert_eq!(
        (raw["verdict"].as_str(), by(raw)),
        (Some("contained"), vec!["hypervisor"]),
        "{raw}"
    );
    // mount is refused inside the guest, with the hypervisor behind it.
    let mount = cell(&json, V, "mount");
    assert_eq!(mount["verdict"], "blocked", "{mount}");
    assert_eq!(by(mount).last(), Some(&"hypervisor"), "{mount}");
    // The host file stays out of reach.
    let file = cell(&json, V, "host_file_proc_root");
    assert_eq!(file["verdict"], "blocked", "{file}");
    // The engine process is found and its filters read.
    let engine = &result["engine"];
    assert!(engine["pid"].as_i64().unwrap() > 0, "{engine}");
    assert_eq!(
        result["host_syscalls"]["status"], "ok",
        "{}",
        result["host_syscalls"]
    );
    env.assert_clean();
}
