//! The run/create flags of issue 21 as a user checks them inside the container: `--group-add`
//! (`id -G`, also in `exec`), `--ulimit` (`ulimit`), `--shm-size` (`df /dev/shm`),
//! `--sysctl` (/proc/sys inside, the host's value unchanged), `--device` (the node opens,
//! another does not), the cgroup knobs (`--cpu-shares`, `--cpuset-cpus`, `--memory-swap`,
//! `--memory-reservation`, `--oom-kill-disable`, `--blkio-weight`) in the container's own
//! cgroup files and through `update`, `-e NAME` from the caller, `--add-host
//! NAME:host-gateway`; bad input refused naming the thing, exit 125, nothing left; the same
//! through the Docker API; and the flags that apply in a VM's guest.

use capsa_tests::{text, TestEnv};
use serde_json::json;

/// Runs `capsa run --rm --network none FLAGS busybox sh -c SCRIPT`; returns stdout.
fn sh(env: &TestEnv, flags: &[&str], script: &str) -> String {
    let mut all = vec!["--network", "none"];
    all.extend_from_slice(flags);
    env.sh(&all, script)
}

#[test]
fn groups_ulimits_shm_and_sysctls_are_what_the_workload_sees() {
    let env = TestEnv::new();
    let host_shmmax = std::fs::read_to_string("/proc/sys/kernel/shmmax").unwrap();
    let out = sh(
        &env,
        &[
            "--group-add",
            "wheel",
            "--group-add",
            "4242",
            "--ulimit",
            "nofile=1024:2048",
            "--ulimit",
            "nproc=100",
            "--shm-size",
            "16m",
            "--sysctl",
            "kernel.shmmax=123456",
            "--sysctl",
            "net.ipv4.ip_unprivileged_port_start=80",
        ],
        "id -G; ulimit -n; ulimit -Hn; ulimit -u; df -k /dev/shm | tail -n 1; \
         cat /proc/sys/kernel/shmmax /proc/sys/net/ipv4/ip_unprivileged_port_start",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0 10 4242", "{out}");
    assert_eq!(&lines[1..4], ["1024", "2048", "100"], "{out}");
    let shm: Vec<&str> = lines[4].split_whitespace().collect();
    assert_eq!(shm[1], "16384", "df /dev/shm: {out}");
    assert_eq!(&lines[5..7], ["123456", "80"], "{out}");
    // The IPC namespace's value changed, not the host's.
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/shmmax").unwrap(),
        host_shmmax
    );

    // An exec gets the added groups too; inspect shows what was asked as dockerd does.
    let out = env.run(&[
        "-d",
        "--name",
        "tuned",
        "--network",
        "none",
        "--group-add",
        "nogroup",
        "-u",
        "app",
        "--ulimit",
        "nofile=512:1024",
        "--shm-size",
        "8m",
        "--sysctl",
        "kernel.msgmax=4096",
        "busybox",
        "sleep",
        "300",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let exec = env.capsa(&["exec", "tuned", "id", "-G"]);
    // app is in wheel by /etc/group; nogroup comes from --group-add.
    assert_eq!(
        text(&exec.stdout).trim(),
        "1000 10 65534",
        "{}",
        text(&exec.stderr)
    );
    assert_eq!(
        env.inspect(
            "tuned",
            "{{json .HostConfig.GroupAdd}} {{json .HostConfig.Ulimits}} {{.HostConfig.ShmSize}} {{json .HostConfig.Sysctls}}"
        ),
        r#"["nogroup"] [{"Hard":1024,"Name":"nofile","Soft":512}] 8388608 {"kernel.msgmax":"4096"}"#
    );
    env.capsa(&["rm", "-f", "tuned"]);
}

#[test]
fn a_device_given_opens_and_another_does_not() {
    let env = TestEnv::new();
    // The loop driver's control node: harmless to open, absent from the default list.
    let host = "/dev/loop-control";
    assert!(
        std::path::Path::new(host).exists(),
        "{host} is needed for this test"
    );
    let out = sh(
        &env,
        &["--device", &format!("{host}:/dev/lc:r")],
        "ls -l /dev/lc | awk '{print $1, $5, $6}'; \
         : < /dev/lc && echo read-ok; \
         (: > /dev/lc) 2>/dev/null || echo write-denied; \
         mknod /dev/other c 10 235 && { (: < /dev/other) 2>/dev/null || echo other-denied; }",
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "crw------- 10, 237",
            "read-ok",
            "write-denied",
            "other-denied"
        ],
        "{out}"
    );
    // Without the flag the same node is refused.
    let out = sh(
        &env,
        &[],
        "mknod /dev/lc c 10 237 && { (: < /dev/lc) 2>/dev/null || echo denied; }",
    );
    assert_eq!(out.trim(), "denied");
}

/// `--device-cgroup-rule`: the cgroup lets the container use the numbers the rule names
/// with its access, a node made there by mknod opens, and another number stays denied;
/// inspect shows the rule; a malformed one is one line, exit 125.
#[test]
fn a_device_cgroup_rule_lets_that_number_open_and_no_other() {
    let env = TestEnv::new();
    let out = sh(
        &env,
        &["--device-cgroup-rule", "c 10:237 r"],
        "mknod /dev/lc c 10 237 && : < /dev/lc && echo read-ok; \
         (: > /dev/lc) 2>/dev/null || echo write-denied; \
         mknod /dev/other c 10 235 && { (: < /dev/other) 2>/dev/null || echo other-denied; }",
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["read-ok", "write-denied", "other-denied"],
        "{out}"
    );
    let out = env.create(&[
        "--name",
        "ruled",
        "--device-cgroup-rule",
        "b *:* m",
        "busybox",
        "true",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        env.inspect("ruled", "{{json .HostConfig.DeviceCgroupRules}}"),
        r#"["b *:* m"]"#
    );
    assert!(env.capsa(&["rm", "-f", "ruled"]).status.success());
    let out = env.run(&[
        "--rm",
        "--device-cgroup-rule",
        "c 10:237 rwx",
        "busybox",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr).lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("--device-cgroup-rule"));
    env.assert_clean();
}

#[test]
fn a_device_given_opens_and_another_does_not_on_cgroup_v2() {
    // cgroup v2 in a private mount namespace (this host mounts v1 controllers): the
    // allowlist is then the BPF program attached to the container's cgroup.
    let env = TestEnv::new();
    let host = "/dev/loop-control";
    assert!(std::path::Path::new(host).exists(), "{host} is needed");
    let inner = env.command(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--cgroup-parent",
        env.cgroup_parent(),
        "--device",
        &format!("{host}:/dev/lc:r"),
        "busybox",
        "sh",
        "-c",
        "grep -c cgroup2 /proc/self/mounts; : < /dev/lc && echo read-ok; \
         (: > /dev/lc) 2>/dev/null || echo write-denied; \
         mknod /dev/other c 10 235 && { (: < /dev/other) 2>/dev/null || echo other-denied; }",
    ]);
    let mut cmd = std::process::Command::new("unshare");
    cmd.args([
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        "umount -l /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && exec \"$@\"",
        "sh",
    ])
    .arg(inner.get_program())
    .args(inner.get_args());
    let out = capsa_tests::run_bounded(cmd, std::time::Duration::from_secs(60));
    assert_eq!(
        text(&out.stdout).lines().collect::<Vec<_>>(),
        ["1", "read-ok", "write-denied", "other-denied"],
        "{}",
        text(&out.stderr)
    );
}

/// A cgroup file of the running container `name`, read inside it (its own cgroup is
/// mounted at /sys/fs/cgroup: v1 per hierarchy, v2 one directory).
fn cgroup_file(env: &TestEnv, name: &str, v1: &str, v2: &str) -> String {
    let path = if std::path::Path::new("/sys/fs/cgroup/cpu").exists() {
        format!("/sys/fs/cgroup/{v1}")
    } else {
        format!("/sys/fs/cgroup/{v2}")
    };
    let out = env.capsa(&["exec", name, "cat", &path]);
    assert!(out.status.success(), "cat {path}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

#[test]
fn cgroup_knobs_reach_the_containers_cgroup_and_update_changes_them() {
    let env = TestEnv::new();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let last_cpu = (cpus - 1).to_string();
    let v1 = std::path::Path::new("/sys/fs/cgroup/cpu").exists();
    // A v1 kernel without swap accounting has no memsw files: --memory-swap is refused there.
    let swap =
        !v1 || std::path::Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists();
    if !swap {
        let out = env.run(&[
            "--rm",
            "--network",
            "none",
            "-m",
            "64m",
            "--memory-swap",
            "128m",
            "busybox",
            "true",
        ]);
        assert_eq!(out.status.code(), Some(125));
        let err = text(&out.stderr);
        assert!(err.contains("--memory-swap"), "{err}");
    }
    let mut args = vec![
        "-d",
        "--name",
        "knobs",
        "--network",
        "none",
        "--cpu-shares",
        "512",
        "--cpuset-cpus",
        "0",
        "-m",
        "64m",
        "--memory-reservation",
        "32m",
        "--memory-swappiness",
        "30",
        "--oom-kill-disable",
    ];
    if swap {
        args.extend(["--memory-swap", "128m"]);
    }
    args.extend(["busybox", "sleep", "300"]);
    let out = env.run(&["--rm", "--memory-swappiness", "101", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("valid memory swappiness range is 0-100"),
        "{}",
        text(&out.stderr)
    );
    let out = env.run(&args);
    if v1 {
        assert!(out.status.success(), "{}", text(&out.stderr));
    } else {
        // cgroup v2 has no switch for the OOM killer: refused by name.
        assert_eq!(out.status.code(), Some(125));
        assert!(text(&out.stderr).contains("--oom-kill-disable"));
        return;
    }
    let read = |v1: &str, v2: &str| cgroup_file(&env, "knobs", v1, v2);
    assert_eq!(read("cpu/cpu.shares", "cpu.weight"), "512");
    assert_eq!(read("cpuset/cpuset.cpus", "cpuset.cpus"), "0");
    assert_eq!(
        read("memory/memory.soft_limit_in_bytes", "memory.low"),
        (32u64 << 20).to_string()
    );
    if swap {
        assert_eq!(
            read("memory/memory.memsw.limit_in_bytes", "memory.swap.max"),
            (128u64 << 20).to_string()
        );
    }
    let oom = read("memory/memory.oom_control", "memory.events");
    assert!(oom.contains("oom_kill_disable 1"), "{oom}");
    assert_eq!(read("memory/memory.swappiness", "memory.events"), "30");
    assert_eq!(
        env.inspect("knobs", "{{.HostConfig.MemorySwappiness}}"),
        "30"
    );

    let mut args = vec![
        "update",
        "--cpu-shares",
        "256",
        "--cpuset-cpus",
        &last_cpu,
        "--memory-reservation",
        "16m",
    ];
    if swap {
        args.extend(["-m", "96m", "--memory-swap", "192m"]);
    }
    args.push("knobs");
    let out = env.capsa(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(read("cpu/cpu.shares", "cpu.weight"), "256");
    assert_eq!(read("cpuset/cpuset.cpus", "cpuset.cpus"), last_cpu);
    assert_eq!(
        read("memory/memory.soft_limit_in_bytes", "memory.low"),
        (16u64 << 20).to_string()
    );
    assert_eq!(
        env.inspect(
            "knobs",
            "{{.HostConfig.CpuShares}} {{.HostConfig.CpusetCpus}} {{.HostConfig.MemoryReservation}} {{.HostConfig.OomKillDisable}}"
        ),
        format!("256 {last_cpu} {} true", 16u64 << 20)
    );
    if swap {
        assert_eq!(
            read("memory/memory.memsw.limit_in_bytes", "memory.swap.max"),
            (192u64 << 20).to_string()
        );
        assert_eq!(
            env.inspect("knobs", "{{.HostConfig.MemorySwap}}"),
            (192u64 << 20).to_string()
        );
        // A swap limit below the memory limit is refused, and nothing changes.
        let out = env.capsa(&["update", "--memory-swap", "32m", "knobs"]);
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("memoryswap"),
            "{}",
            text(&out.stderr)
        );
        assert_eq!(
            read("memory/memory.memsw.limit_in_bytes", "memory.swap.max"),
            (192u64 << 20).to_string()
        );
    }
    env.capsa(&["rm", "-f", "knobs"]);
}

#[test]
fn blkio_weight_is_set_where_the_io_scheduler_weighs_cgroups_and_refused_elsewhere() {
    let env = TestEnv::new();
    let out = env.run(&[
        "-d",
        "--name",
        "io",
        "--network",
        "none",
        "--blkio-weight",
        "300",
        "busybox",
        "sleep",
        "300",
    ]);
    if out.status.success() {
        let weight = env.capsa(&[
            "exec",
            "io",
            "sh",
            "-c",
            "cat /sys/fs/cgroup/blkio/blkio.weight /sys/fs/cgroup/blkio/blkio.bfq.weight 2>/dev/null",
        ]);
        let weight = text(&weight.stdout);
        assert!(
            weight
                .lines()
                .any(|l| l.trim() == "300" || l.trim() == "default 300"),
            "{weight}"
        );
        assert_eq!(env.inspect("io", "{{.HostConfig.BlkioWeight}}"), "300");
        env.capsa(&["rm", "-f", "io"]);
    } else {
        assert_eq!(out.status.code(), Some(125));
        assert!(
            text(&out.stderr).contains("--blkio-weight"),
            "{}",
            text(&out.stderr)
        );
        env.assert_clean();
    }
}

#[test]
fn env_without_a_value_is_the_callers_or_not_set() {
    let env = TestEnv::new();
    let mut cmd = env.command(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--cgroup-parent",
        env.cgroup_parent(),
        "-e",
        "CAPSA_FROM_CALLER",
        "-e",
        "CAPSA_UNSET_HERE",
        "busybox",
        "sh",
        "-c",
        "echo ${CAPSA_FROM_CALLER-unset} ${CAPSA_UNSET_HERE-unset}",
    ]);
    cmd.env("CAPSA_FROM_CALLER", "v1")
        .env_remove("CAPSA_UNSET_HERE");
    let out = capsa_tests::run_bounded(cmd, std::time::Duration::from_secs(60));
    assert_eq!(
        text(&out.stdout).trim(),
        "v1 unset",
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn add_host_host_gateway_names_the_bridges_gateway_and_eth0_sysctls_apply() {
    let env = TestEnv::new();
    let out = env.sh(
        &[
            "--add-host",
            "gw.local:host-gateway",
            // A key of the interface the engine adds after the init is ready.
            "--sysctl",
            "net.ipv4.conf.eth0.route_localnet=1",
        ],
        "grep gw.local /etc/hosts | cut -f1; ip route | awk '/^default/ {print $3}'; \
         cat /proc/sys/net/ipv4/conf/eth0/route_localnet",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(
        lines[0], lines[1],
        "the hosts line is not the gateway: {out}"
    );
    assert_eq!(lines[2], "1", "{out}");
}

#[test]
fn bad_input_is_refused_naming_it_and_leaves_nothing() {
    let env = TestEnv::new();
    for (flags, needle) in [
        (
            vec!["--device", "/dev/capsa-no-such-device"],
            "/dev/capsa-no-such-device",
        ),
        (vec!["--device", "/etc/passwd"], "/etc/passwd"),
        (vec!["--ulimit", "bogus=1"], "invalid ulimit type: bogus"),
        (vec!["--ulimit", "nofile=2048:1024"], "2048 > 1024"),
        (vec!["--sysctl", "kernel.hostname=x"], "kernel.hostname"),
        (vec!["--sysctl", "vm.swappiness=1"], "vm.swappiness"),
        (vec!["--memory-swap", "64m"], "Memory limit"),
        (vec!["--cpu-shares", "1"], "--cpu-shares"),
        (vec!["--blkio-weight", "5"], "--blkio-weight"),
        (vec!["--group-add", "nosuchgroup"], "nosuchgroup"),
        // No eth0 without a network.
        (
            vec!["--sysctl", "net.ipv4.conf.eth0.route_localnet=1"],
            "net.ipv4.conf.eth0.route_localnet",
        ),
    ] {
        let mut args = vec!["--rm", "--network", "none"];
        args.extend_from_slice(&flags);
        args.extend_from_slice(&["busybox", "true"]);
        let out = env.run(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{flags:?}: {err}");
        assert!(err.contains(needle), "{flags:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{flags:?}: {err}");
    }
    let out = env.run(&[
        "--rm",
        "--network",
        "host",
        "--sysctl",
        "net.core.somaxconn=5",
        "busybox",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("net.core.somaxconn"));
    env.assert_clean();
}

#[test]
fn the_api_takes_these_host_config_fields_and_shows_them_back() {
    let env = TestEnv::new();
    let api = env.serve();
    let out = api.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--group-add",
        "wheel",
        "--ulimit",
        "nofile=512:1024",
        "--shm-size",
        "8m",
        "--sysctl",
        "kernel.shmmax=7777",
        "--device",
        "/dev/loop-control:/dev/lc:r",
        "busybox",
        "sh",
        "-c",
        "id -G; ulimit -n; df -k /dev/shm | tail -n 1 | awk '{print $2}'; cat /proc/sys/kernel/shmmax; : < /dev/lc && echo dev-ok",
    ]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["0 10", "512", "8192", "7777", "dev-ok"],
        "{out}"
    );
    api.docker_ok(&[
        "create",
        "--name",
        "shown",
        "--cpu-shares",
        "512",
        "--cpuset-cpus",
        "0",
        "-m",
        "64m",
        "--memory-reservation",
        "32m",
        "--add-host",
        "gw:host-gateway",
        "--device",
        "/dev/loop-control:/dev/lc:r",
        "busybox",
        "sh",
        "-c",
        "grep -w gw /etc/hosts | cut -f1; ip route | awk '/^default/ {print $3}'",
    ]);
    let shown = api.docker_ok(&[
        "inspect",
        "-f",
        "{{.HostConfig.CpuShares}} {{.HostConfig.CpusetCpus}} {{.HostConfig.MemoryReservation}} {{json .HostConfig.Devices}}",
        "shown",
    ]);
    assert_eq!(
        shown.trim(),
        format!(
            r#"512 0 {} [{{"CgroupPermissions":"r","PathInContainer":"/dev/lc","PathOnHost":"/dev/loop-control"}}]"#,
            32u64 << 20
        )
    );
    // What the docker CLI checks itself is checked by the server too, naming the field.
    for (host_config, needle) in [
        (
            json!({"Sysctls": {"kernel.hostname": "x"}}),
            "kernel.hostname",
        ),
        (
            json!({"Devices": [{"PathOnHost": "/dev/capsa-no-such-device", "PathInContainer": "/dev/x", "CgroupPermissions": "rwm"}]}),
            "/dev/capsa-no-such-device",
        ),
        (
            json!({"Ulimits": [{"Name": "nofile", "Soft": 20, "Hard": 10}]}),
            "20 > 10",
        ),
    ] {
        let (status, body) = api.request_json(
            "POST",
            "/containers/create",
            Some(&json!({"Image": "busybox", "Cmd": ["true"], "HostConfig": host_config})),
        );
        assert_eq!(status, 400, "{body}");
        assert!(
            body["message"].as_str().unwrap_or("").contains(needle),
            "{body}"
        );
    }
    // `docker update` changes them (kept in the spec of a container not running yet).
    api.docker_ok(&[
        "update",
        "--cpu-shares",
        "256",
        "--memory-reservation",
        "16m",
        "shown",
    ]);
    let shown = api.docker_ok(&[
        "inspect",
        "-f",
        "{{.HostConfig.CpuShares}} {{.HostConfig.MemoryReservation}}",
        "shown",
    ]);
    assert_eq!(shown.trim(), format!("256 {}", 16u64 << 20));
    // host-gateway became the bridge's gateway address.
    let hosts = api.docker_ok(&["start", "-a", "shown"]);
    let lines: Vec<&str> = hosts.lines().collect();
    assert_eq!(lines.len(), 2, "{hosts}");
    assert_eq!(lines[0], lines[1], "{hosts}");
    api.docker_ok(&["rm", "-f", "shown"]);
}

#[test]
fn in_a_vm_the_guest_applies_them_and_a_device_is_refused_by_name() {
    let env = TestEnv::new();
    let out = env.run(&[
        "--rm",
        "--isolation",
        "vm",
        "--network",
        "none",
        "--device",
        "/dev/loop-control",
        "busybox",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        err.contains("--device /dev/loop-control") && err.contains("vm"),
        "{err}"
    );

    let out = env.run(&[
        "-d",
        "--name",
        "guest",
        "--isolation",
        "vm",
        "--network",
        "none",
        "-u",
        "app",
        "--group-add",
        "nogroup",
        "--ulimit",
        "nofile=1024:2048",
        "--shm-size",
        "16m",
        "--sysctl",
        "kernel.shmmax=123456",
        "--cpu-shares",
        "512",
        "--cpuset-cpus",
        "0",
        "-m",
        "64m",
        "--memory-reservation",
        "32m",
        "busybox",
        "sleep",
        "600",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The workload (PID 1) and an exec both get the added group.
    let out = env.capsa(&[
        "exec",
        "guest",
        "sh",
        "-c",
        "grep Groups /proc/1/status | cut -f2 | xargs; id -G; ulimit -n; \
         df -k /dev/shm | tail -n 1 | awk '{print $2}'; cat /proc/sys/kernel/shmmax \
         /sys/fs/cgroup/cpu.weight /sys/fs/cgroup/cpuset.cpus /sys/fs/cgroup/memory.low",
    ]);
    // cpu.shares 512 is cgroup v2's cpu.weight 20 (runc's conversion).
    assert_eq!(
        text(&out.stdout).lines().collect::<Vec<_>>(),
        [
            "10 65534",
            "1000 10 65534",
            "1024",
            "16384",
            "123456",
            "20",
            "0",
            &(32u64 << 20).to_string()
        ],
        "{}",
        text(&out.stderr)
    );
    env.capsa(&["rm", "-f", "guest"]);
}

#[test]
fn uts_host_shares_the_hosts_hostname_namespace_and_nothing_else() {
    let env = TestEnv::new();
    let host_uts = std::fs::read_link("/proc/self/ns/uts").unwrap();
    let host_pid = std::fs::read_link("/proc/self/ns/pid").unwrap();
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let script = "readlink /proc/self/ns/uts; readlink /proc/self/ns/pid; hostname";
    let shared = sh(&env, &["--uts", "host"], script);
    let lines: Vec<&str> = shared.lines().collect();
    assert_eq!(lines[0], host_uts.to_str().unwrap(), "{shared}");
    assert_ne!(lines[1], host_pid.to_str().unwrap(), "{shared}");
    assert_eq!(lines[2], host_name.trim(), "{shared}");
    let own = sh(&env, &[], script);
    assert_ne!(
        own.lines().next(),
        Some(host_uts.to_str().unwrap()),
        "{own}"
    );
    let out = env.run(&[
        "--rm",
        "--uts",
        "host",
        "--hostname",
        "x",
        "busybox",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("--uts host"),
        "{}",
        text(&out.stderr)
    );
    env.assert_clean();
}

#[test]
fn pid_host_sees_the_hosts_processes_and_its_own_end_with_its_init() {
    let env = TestEnv::new();
    // The test process itself is visible from inside.
    let me = std::process::id();
    let out = sh(
        &env,
        &["--pid", "host"],
        &format!("test -d /proc/{me} && echo sees-host"),
    );
    assert_eq!(out, "sees-host\n");
    let own = sh(&env, &[], &format!("test -d /proc/{me} || echo own"));
    assert_eq!(own, "own\n");
    // No namespace ends with the init: what it left running is killed with its exit.
    let marker = format!("sleep {}", 4000 + me % 1000);
    let out = env.run(&[
        "-d",
        "--name",
        "hostpid",
        "--pid",
        "host",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        &format!("{marker} & exit 3"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&env.capsa(&["wait", "hostpid"]).stdout).trim(), "3");
    assert_eq!(env.inspect("hostpid", "{{.HostConfig.PidMode}}"), "host");
    let left = std::process::Command::new("pgrep")
        .args(["-f", &marker])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "left running: {}",
        text(&left.stdout)
    );
    assert!(env.capsa(&["rm", "hostpid"]).status.success());
    let out = env.run(&[
        "--rm", "--pid", "host", "--userns", "auto", "busybox", "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("--pid host"),
        "{}",
        text(&out.stderr)
    );
    env.assert_clean();
}
