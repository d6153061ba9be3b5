//! `--userns=auto`: root inside is an unprivileged host user, with a private ID range,
//! unique on the host (whichever state root holds the container) for as long as the
//! container exists.

use capsa_tests::{text, TestEnv};

/// The host-wide registry of ranges: one record per range taken.
const REGISTRY: &str = "/var/lib/capsa-userns";

/// The records that name a container of `env` (by its state root and `id`).
fn records_naming(env: &TestEnv, id: &str) -> Vec<String> {
    let root = env.root().canonicalize().unwrap().display().to_string();
    std::fs::read_dir(REGISTRY)
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let record = std::fs::read_to_string(e.path()).unwrap_or_default();
                    record.contains(&format!("{root:?}")) && record.contains(id)
                })
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn host_uid_of(env: &TestEnv, name: &str) -> u32 {
    let pid = env.inspect(name, "{{.State.Pid}}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    uid.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Runs `command` in a new `--userns=auto` container `name` (detached with `detach`);
/// returns its ID.
fn run_userns(env: &TestEnv, name: &str, detach: bool, command: &[&str]) -> String {
    let mut all = vec!["--name", name, "--userns=auto"];
    if detach {
        all.push("-d");
    }
    all.push("busybox");
    all.extend_from_slice(command);
    let out = env.run(&all);
    assert!(out.status.success(), "{}", text(&out.stderr));
    env.inspect(name, "{{.Id}}")
}

#[test]
fn root_inside_is_an_unprivileged_host_user_with_its_own_range() {
    let env = TestEnv::new();
    for name in ["ua", "ub"] {
        let out = env.run(&[
            "-d",
            "--name",
            name,
            "--userns=auto",
            "busybox",
            "sleep",
            "60",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let (a, b) = (host_uid_of(&env, "ua"), host_uid_of(&env, "ub"));
    assert!(a >= 100_000 && b >= 100_000, "host uids {a} {b}");
    assert!(a.abs_diff(b) >= 65_536, "ranges overlap: {a} {b}");
    let map = text(&env.capsa(&["inspect", "-f", "{{.State.Pid}}", "ua"]).stdout);
    let uid_map = std::fs::read_to_string(format!("/proc/{}/uid_map", map.trim())).unwrap();
    assert_eq!(
        uid_map.split_whitespace().collect::<Vec<_>>(),
        vec!["0", &a.to_string(), "65536"]
    );
    for name in ["ua", "ub"] {
        assert!(env.capsa(&["rm", "-f", name]).status.success());
    }
    env.assert_clean();
}

#[test]
fn image_files_belong_to_root_inside_and_stay_writable() {
    let env = TestEnv::new();
    let out = env.sh(
        &["--userns=auto"],
        "id -u; stat -c %u /bin/busybox; echo extra >> /etc/passwd && tail -1 /etc/passwd; \
         touch /made && stat -c %u /made; echo x > /dev/null && echo devnull; echo 127.0.0.2 extra >> /etc/hosts && echo hosts",
    );
    assert_eq!(out, "0\n0\nextra\n0\ndevnull\nhosts\n");
    env.assert_clean();
}

#[test]
fn privileged_operations_stay_refused() {
    let env = TestEnv::new();
    let out = env.run(&[
        "--rm",
        "--userns=auto",
        "busybox",
        "mount",
        "-t",
        "tmpfs",
        "none",
        "/mnt",
    ]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "mount succeeded in a user namespace"
    );
    let out = env.sh(
        &["--userns=auto"],
        "ls /sys/class/net; grep CapEff /proc/self/status",
    );
    // The bridge's veth arrives in a user-namespaced container too.
    assert_eq!(out, "eth0\nlo\nCapEff:\t00000000a80425fb\n");
}

#[test]
fn bad_userns_values_and_combinations_are_refused() {
    let env = TestEnv::new();
    for args in [
        vec!["--userns=sideways", "busybox", "true"],
        vec!["--userns=auto", "--privileged", "busybox", "true"],
    ] {
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        assert!(
            text(&out.stderr).contains("userns"),
            "{}",
            text(&out.stderr)
        );
    }
    env.assert_clean();
}

#[test]
fn ranges_are_unique_across_state_roots_and_rm_gives_them_back() {
    let (a, b) = (TestEnv::new(), TestEnv::new());
    let id_a = run_userns(&a, "ua", true, &["sleep", "600"]);
    let id_b = run_userns(&b, "ub", true, &["sleep", "600"]);
    let (uid_a, uid_b) = (host_uid_of(&a, "ua"), host_uid_of(&b, "ub"));
    assert!(
        uid_a.abs_diff(uid_b) >= 65_536,
        "two roots share host IDs: {uid_a} {uid_b}"
    );
    for (env, id, uid) in [(&a, &id_a, uid_a), (&b, &id_b, uid_b)] {
        assert_eq!(
            records_naming(env, id),
            vec![uid.to_string()],
            "the record of {uid}"
        );
    }
    assert!(a.capsa(&["rm", "-f", "ua"]).status.success());
    assert!(
        records_naming(&a, &id_a).is_empty(),
        "rm left its range taken"
    );
    assert_eq!(records_naming(&b, &id_b), vec![uid_b.to_string()]);
    assert!(b.capsa(&["rm", "-f", "ub"]).status.success());
    assert!(records_naming(&b, &id_b).is_empty());
    a.assert_clean();
    b.assert_clean();
}

#[test]
fn a_stopped_container_keeps_its_range_and_a_vanished_ones_is_reclaimed() {
    let gone = TestEnv::new();
    // Stopped, not removed: its writable layer still holds files of its IDs.
    let id = run_userns(&gone, "stopped", false, &["touch", "/made-by-root-inside"]);
    let held = records_naming(&gone, &id);
    assert_eq!(
        held.len(),
        1,
        "a stopped container holds its range: {held:?}"
    );
    let other = TestEnv::new();
    let _ = run_userns(&other, "other", false, &["true"]);
    assert_eq!(
        records_naming(&gone, &id),
        held,
        "still held after another allocation"
    );
    // Its state root wiped by hand (no `rm`): the record no longer names a container.
    std::fs::remove_dir_all(gone.root().join("containers").join(&id)).unwrap();
    let _ = run_userns(&other, "next", false, &["true"]);
    assert!(
        records_naming(&gone, &id).is_empty(),
        "the stale record of a vanished container is still there"
    );
    assert!(other.capsa(&["rm", "-f", "other", "next"]).status.success());
}
