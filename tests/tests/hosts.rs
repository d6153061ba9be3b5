//! /etc/hosts on user-defined networks comes from capsa's records only: what a member writes
//! into its /etc/hostname or /etc/hosts never reaches another member (nor survives the next
//! rewrite of its own file), and names that could smuggle lines in are refused at create.

use capsa_tests::{text, TestEnv};

/// An 8 MiB host name, written by the workload: the size the probe used.
const HUGE_HOSTNAME: &str = "head -c 8388608 /dev/zero | tr '\\0' x > /etc/hostname";

fn ok(env: &TestEnv, args: &[&str]) -> String {
    let out = env.capsa(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

fn hosts_of(env: &TestEnv, name: &str) -> String {
    ok(env, &["exec", name, "cat", "/etc/hosts"])
}

#[test]
fn a_member_cannot_write_into_other_members_hosts_files() {
    let env = TestEnv::new();
    ok(&env, &["network", "create", "hostsnet"]);
    let on_net = ["--network", "hostsnet"];
    for (name, extra) in [
        ("evil", "--hostname=evilhost"),
        ("victim", "--hostname=victim"),
    ] {
        let mut args = vec!["-d", "--name", name, extra];
        args.extend_from_slice(&on_net);
        args.extend_from_slice(&["busybox", "sleep", "120"]);
        let out = env.run(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    // The attacker rewrites its own /etc/hostname and /etc/hosts...
    ok(
        &env,
        &[
            "exec",
            "evil",
            "sh",
            "-c",
            "printf 'evil\\n10.231.7.250 db payments.internal\\n' > /etc/hostname; \
             echo '10.231.7.251 sneaky' >> /etc/hosts",
        ],
    );
    // ...then a third member starts, which rewrites every member's hosts file.
    let mut args = vec!["-d", "--name", "late"];
    args.extend_from_slice(&on_net);
    args.extend_from_slice(&["busybox", "sleep", "120"]);
    assert!(env.run(&args).status.success());
    let evil_ip = env.inspect("evil", "{{.NetworkSettings.Networks.hostsnet.IPAddress}}");
    for member in ["victim", "late", "evil"] {
        let hosts = hosts_of(&env, member);
        for injected in ["10.231.7.250", "payments.internal", "sneaky", " db"] {
            assert!(
                !hosts.contains(injected),
                "{member} got {injected:?}:\n{hosts}"
            );
        }
        // The attacker is still listed, under the names capsa gave it.
        assert!(
            hosts.contains(&format!("{evil_ip}\tevil evilhost\n")),
            "{member}:\n{hosts}"
        );
    }

    // A huge hostname does not make anyone's hosts file huge.
    ok(&env, &["exec", "evil", "sh", "-c", HUGE_HOSTNAME]);
    ok(&env, &["rm", "-f", "late"]);
    let hosts = hosts_of(&env, "victim");
    assert!(hosts.len() < 4096, "victim's hosts: {} bytes", hosts.len());
    assert!(!hosts.contains("late"), "{hosts}");
    for name in ["evil", "victim"] {
        ok(&env, &["rm", "-f", name]);
    }
    ok(&env, &["network", "rm", "hostsnet"]);
    env.assert_clean();
}

#[test]
fn names_that_could_inject_hosts_lines_are_refused_at_create() {
    let env = TestEnv::new();
    ok(&env, &["network", "create", "namenet"]);
    let long_label = "a".repeat(64);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--hostname", "evil\n10.0.0.1 db"], "--hostname"),
        (vec!["--hostname", "a b"], "--hostname"),
        (vec!["--hostname", &long_label], "--hostname"),
        (
            vec!["--network", "namenet", "--network-alias", "x 10.0.0.1"],
            "--network-alias",
        ),
        (
            vec!["--network", "namenet", "--network-alias", "a..b"],
            "--network-alias",
        ),
        (vec!["--add-host", "db\tdb2:10.0.0.1"], "--add-host"),
        (vec!["--add-host", "#x:10.0.0.1"], "--add-host"),
        (vec!["--name", "a..b"], "invalid container name"),
        (vec!["--name", &long_label], "invalid container name"),
    ];
    for (flags, needle) in cases {
        let mut args = flags.clone();
        args.extend_from_slice(&["busybox", "true"]);
        let out = env.create(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{flags:?}: {err}");
        assert!(err.contains(needle), "{flags:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{flags:?}: {err}");
    }
    // `network connect --alias` is checked the same way.
    ok(&env, &["create", "--name", "plain", "busybox", "true"]);
    let out = env.capsa(&["network", "connect", "--alias", "x\ny", "namenet", "plain"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("--network-alias"),
        "{}",
        text(&out.stderr)
    );
    ok(&env, &["rm", "-f", "plain"]);
    ok(&env, &["network", "rm", "namenet"]);
    env.assert_clean();
}
