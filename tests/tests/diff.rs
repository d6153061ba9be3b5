//! `capsa diff` (and `container diff`): a container's changes against its image, as
//! `docker diff` prints them, for stopped and running containers; never following what
//! the workload put in its writable layer; refused with a reason for a VM container.

use capsa_tests::{text, TestEnv};

fn diff(env: &TestEnv, args: &[&str]) -> String {
    let out = env.capsa(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn diff_lists_added_changed_and_deleted_paths_as_docker_prints_them() {
    let env = TestEnv::new();
    let script = "echo x >> /etc/passwd; rm /etc/group; mkdir -p /home/app/d/e; touch /tmp/new; \
                  rm /bin/ls; rm -r /mnt; mkdir /mnt; touch /mnt/x; chmod 750 /root";
    let out = env.run(&[
        "--name",
        "changed",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let want = "C /bin\nD /bin/ls\nC /etc\nD /etc/group\nC /etc/passwd\nC /home\nC /home/app\n\
                A /home/app/d\nA /home/app/d/e\nC /mnt\nA /mnt/x\nC /root\nC /tmp\nA /tmp/new\n";
    assert_eq!(diff(&env, &["diff", "changed"]), want);
    assert_eq!(diff(&env, &["container", "diff", "changed"]), want);
    // A container that changed nothing (capsa's own mount points do not count).
    let out = env.run(&[
        "--name",
        "quiet",
        "--network",
        "none",
        "-v",
        "vol:/data",
        "--tmpfs",
        "/scratch",
        "busybox",
        "true",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(diff(&env, &["diff", "quiet"]), "");
    let out = env.capsa(&["diff", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("No such container"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn diff_of_a_running_container_never_follows_its_links_to_the_host() {
    let env = TestEnv::new();
    let out = env.run(&[
        "-d",
        "--name",
        "live",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "ln -s / /tmp/hostroot; ln -s /etc /tmp/etc; mkdir /tmp/ready; exec sleep 600",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    capsa_tests::eventually(
        "the links are made",
        std::time::Duration::from_secs(20),
        || diff(&env, &["diff", "live"]).contains("A /tmp/ready"),
    );
    let out = diff(&env, &["diff", "live"]);
    assert_eq!(out, "C /tmp\nA /tmp/etc\nA /tmp/hostroot\nA /tmp/ready\n");
    let out = env.capsa(&["rm", "-f", "live"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn vm_diff_says_it_is_not_available_for_a_vm_container() {
    let env = TestEnv::new();
    let out = env.create(&["--isolation", "vm", "--name", "guest", "busybox", "true"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = env.capsa(&["diff", "guest"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("not available for a VM container") && err.contains("never parses"),
        "{err}"
    );
    assert_eq!(text(&out.stdout), "");
}
