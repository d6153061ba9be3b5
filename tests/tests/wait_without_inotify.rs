//! rt1 #8: `capsa wait` and `logs -f` work when inotify is unavailable. A container's root
//! is host root, and inotify instances are counted per user, so a workload can take every
//! one of root's (fs.inotify.max_user_instances); `wait` then failed for every container on
//! the host. Here the failure is injected into the one `capsa` process under test
//! (`strace --inject`), which is exactly what the kernel answers when the instances are
//! gone, without taking them from every other root process on this machine.

use capsa_tests::{capsa_bin, run_bounded, text, TestEnv};
use std::time::Duration;

/// `capsa ARGS` in the test's environment with every inotify_init1 failing with EMFILE.
fn without_inotify(env: &TestEnv, args: &[&str]) -> std::process::Output {
    let mut cmd = env.host_command("strace");
    cmd.args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=inotify_init1"])
        .args(["-e", "inject=inotify_init1:error=EMFILE"])
        .arg(capsa_bin())
        .arg("--root")
        .arg(env.root())
        .args(args);
    run_bounded(cmd, Duration::from_secs(60))
}

#[test]
fn wait_and_logs_follow_work_without_inotify() {
    let env = TestEnv::new();
    // The container ends when its stdin (the monitor's /dev/null) says so: at once, or
    // while `wait` waits; either way `wait` must report its exit code.
    let out = env.run(&[
        "-d",
        "--name",
        "ww",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "echo hello; read x; exit 3",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = without_inotify(&env, &["wait", "ww"]);
    assert!(out.status.success(), "wait failed: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "3");
    let out = without_inotify(&env, &["logs", "-f", "ww"]);
    assert!(
        out.status.success(),
        "logs -f failed: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "hello\n");
    let out = without_inotify(&env, &["start", "-a", "ww"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "start -a: {}",
        text(&out.stderr)
    );
    assert!(env.capsa(&["rm", "ww"]).status.success());
    env.assert_clean();
}
