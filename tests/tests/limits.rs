//! cgroup limits as a user checks them: the OOM kill, the fork limit, the CPU quota.

use capsa_tests::{text, TestEnv};

#[test]
fn memory_limit_kills_an_allocator_with_137_and_reports_oom() {
    let env = TestEnv::new();
    // dd allocates its 64 MiB block buffer and fills it from /dev/zero.
    let out = env.run(&[
        "--name",
        "hog",
        "-m",
        "32m",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=64M",
        "count=1",
    ]);
    assert_eq!(
        out.status.code(),
        Some(137),
        "stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(
        env.inspect("hog", "{{.State.OOMKilled}} {{.State.ExitCode}}"),
        "true 137"
    );
    assert_eq!(
        env.inspect("hog", "{{.HostConfig.Memory}}"),
        (32u64 << 20).to_string()
    );
    // The same allocation fits without the limit.
    let out = env.run(&[
        "--rm",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=64M",
        "count=1",
    ]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn pids_limit_stops_a_fork_loop() {
    let env = TestEnv::new();
    // Counting must not fork once the limit is reached: a glob over /proc is a builtin.
    // When sh (PID 1) exits, the namespace's other processes go with it.
    // The fork loop runs in a child shell, which busybox ends at the first failed fork.
    let script = "sh -c 'i=0; while [ $i -lt 50 ]; do sleep 30 & i=$((i+1)); done' 2>/dev/null; \
                  set -- /proc/[0-9]*; echo $#";
    let out = env.sh(&["--pids-limit", "6"], script);
    let processes: u32 = out.trim().parse().unwrap();
    assert!(processes <= 6, "{processes} processes under a limit of 6");
    assert!(processes >= 2, "no process could fork at all");
}

#[test]
fn cpu_quota_is_set_in_the_containers_cgroup() {
    let env = TestEnv::new();
    let out = env.create(&["--name", "quota", "--cpus", "0.5", "busybox", "true"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        env.inspect("quota", "{{.HostConfig.NanoCpus}}"),
        "500000000"
    );
    let id = env.inspect("quota", "{{.Id}}");
    let parent = env.cgroup_parent().trim_start_matches('/');
    let quota = std::path::Path::new("/sys/fs/cgroup/cpu")
        .join(parent)
        .join(&id)
        .join("cpu.cfs_quota_us");
    if quota.parent().unwrap().exists() {
        assert_eq!(std::fs::read_to_string(&quota).unwrap().trim(), "50000");
    }
}

#[test]
fn limits_nest_under_the_given_cgroup_parent() {
    let env = TestEnv::new();
    let parent = env.cgroup_parent().trim_start_matches('/').to_string();
    let out = env.create(&["--name", "nested", "-m", "64m", "busybox", "true"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = env.inspect("nested", "{{.Id}}");
    let limit = std::path::Path::new("/sys/fs/cgroup/memory")
        .join(&parent)
        .join(&id)
        .join("memory.limit_in_bytes");
    if std::path::Path::new("/sys/fs/cgroup/memory").exists() {
        assert_eq!(
            std::fs::read_to_string(&limit).unwrap().trim(),
            (64u64 << 20).to_string()
        );
    }
    assert!(env.capsa(&["rm", "-f", "nested"]).status.success());
    env.assert_clean();
}

#[test]
fn by_default_containers_nest_under_the_callers_own_cgroup() {
    let env = TestEnv::new();
    // No --cgroup-parent: the engine's own cgroup (this test's) encloses the container.
    let out = env.capsa(&["run", "-d", "--name", "own", "busybox", "sleep", "60"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pid = env.inspect("own", "{{.State.Pid}}");
    let id = env.inspect("own", "{{.Id}}");
    let mine = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let theirs = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let memory = |t: &str| {
        t.lines()
            .find(|l| l.split(':').nth(1) == Some("memory"))
            .map(|l| l.split(':').nth(2).unwrap().to_string())
    };
    if let (Some(mine), Some(theirs)) = (memory(&mine), memory(&theirs)) {
        let expected = format!("{}/capsa/{id}", mine.trim_end_matches('/'));
        assert_eq!(theirs, expected);
    } else {
        let v2 = |t: &str| {
            t.lines()
                .find(|l| l.starts_with("0::"))
                .unwrap()
                .trim_start_matches("0::")
                .to_string()
        };
        assert!(v2(&theirs).ends_with(&format!("/capsa/{id}")), "{theirs}");
    }
    assert!(env.capsa(&["rm", "-f", "own"]).status.success());
}
