//! A container reads its own limits at /sys/fs/cgroup, as under Docker, and cannot change
//! them: cgroup v1 hierarchies as read-only bind mounts of its own cgroups on a tmpfs, cgroup
//! v2 (and the VM's guest) as a read-only cgroup2 mount inside its cgroup namespace.

use capsa_tests::{text, TestEnv};

/// Whether this host mounts cgroup v2 alone at /sys/fs/cgroup.
fn unified_host() -> bool {
    std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The file holding the memory limit inside a container of this host.
fn limit_file(vm: bool) -> &'static str {
    if vm || unified_host() {
        "/sys/fs/cgroup/memory.max"
    } else {
        "/sys/fs/cgroup/memory/memory.limit_in_bytes"
    }
}

/// Reads the limit, then tries to raise it, to make a cgroup and to reach a release_agent.
fn probe(env: &TestEnv, isolation: &str, extra: &[&str]) -> String {
    let vm = isolation == "vm";
    let file = limit_file(vm);
    let script = format!(
        "cat {file}; \
         echo 1073741824 > {file} && echo raised; \
         mkdir /sys/fs/cgroup/escape && echo made-top; \
         mkdir $(dirname {file})/escape && echo made-child; \
         find /sys/fs/cgroup -name release_agent; \
         grep -c ' /sys/fs/cgroup' /proc/self/mounts >/dev/null && echo mounted"
    );
    let mut args = vec![
        "--rm",
        "--isolation",
        isolation,
        "--network",
        "none",
        "-m",
        "64m",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["busybox", "sh", "-c", &script]);
    let out = env.run(&args);
    text(&out.stdout)
}

#[test]
fn a_container_reads_its_memory_limit_and_cannot_change_it() {
    let env = TestEnv::new();
    assert_eq!(probe(&env, "container", &[]), "67108864\nmounted\n");
    assert_eq!(
        probe(&env, "container", &["--userns=auto"]),
        "67108864\nmounted\n",
        "in a user namespace too"
    );
    env.assert_clean();
}

#[test]
fn a_vm_workload_reads_its_memory_limit_and_cannot_change_it() {
    let env = TestEnv::new();
    assert_eq!(probe(&env, "vm", &[]), "67108864\nmounted\n");
    env.assert_clean();
}

#[test]
fn a_privileged_container_gets_its_cgroups_writable_as_with_docker() {
    if unified_host() {
        return; // v2: the cgroup2 mount is read-write for --privileged, as before
    }
    let env = TestEnv::new();
    let script = "mkdir /sys/fs/cgroup/memory/sub && rmdir /sys/fs/cgroup/memory/sub && echo ok";
    let out = env.run(&[
        "--rm",
        "--privileged",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(text(&out.stdout), "ok\n", "{}", text(&out.stderr));
    env.assert_clean();
}
