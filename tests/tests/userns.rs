//! `--userns=auto`: root inside is an unprivileged host user, with a private ID range.

use capsa_tests::{text, TestEnv};

fn host_uid_of(env: &TestEnv, name: &str) -> u32 {
    let pid = env.inspect(name, "{{.State.Pid}}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    uid.split_whitespace().nth(1).unwrap().parse().unwrap()
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
