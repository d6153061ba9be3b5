//! `stop` sends the image's STOPSIGNAL (Docker's rule) unless `--stop-signal` overrides it,
//! in both isolations; `inspect` shows the signal.

use capsa_tests::{busybox_tarball, eventually, text, TestEnv};
use std::time::Duration;

/// A workload that exits 42 on SIGUSR1 and 43 on SIGUSR2 (a PID 1 with no handler ignores
/// both, and SIGTERM: only the right signal ends it before the grace period's SIGKILL).
const SCRIPT: &str = "trap 'exit 42' USR1; trap 'exit 43' USR2; touch /ready; sleep 600 & wait";

fn env_with_stopsignal_image() -> TestEnv {
    let env = TestEnv::new();
    let tar = busybox_tarball().to_str().unwrap().to_string();
    let out = env.capsa(&[
        "import",
        "-c",
        "ENV PATH=/bin",
        "-c",
        "STOPSIGNAL SIGUSR1",
        &tar,
        "quits",
    ]);
    assert!(out.status.success(), "import: {}", text(&out.stderr));
    env
}

/// Starts `name` from `quits` with `flags`, stops it, and returns its exit code.
fn stopped_code(env: &TestEnv, isolation: &str, name: &str, flags: &[&str]) -> String {
    let mut args = vec![
        "-d",
        "--isolation",
        isolation,
        "--network",
        "none",
        "--name",
        name,
    ];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["quits", "sh", "-c", SCRIPT]);
    let out = env.run(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    eventually(
        "the workload's traps are set",
        Duration::from_secs(60),
        || {
            env.capsa(&["exec", name, "test", "-e", "/ready"])
                .status
                .success()
        },
    );
    let out = env.capsa(&["stop", "-t", "30", name]);
    assert!(out.status.success(), "stop: {}", text(&out.stderr));
    env.inspect(name, "{{.State.ExitCode}}")
}

fn check(isolation: &str) {
    let env = env_with_stopsignal_image();
    assert_eq!(
        stopped_code(&env, isolation, "img", &[]),
        "42",
        "the image's SIGUSR1"
    );
    assert_eq!(env.inspect("img", "{{.Config.StopSignal}}"), "SIGUSR1");
    let code = stopped_code(&env, isolation, "flag", &["--stop-signal", "USR2"]);
    assert_eq!(code, "43", "--stop-signal overrides the image");
    assert_eq!(env.inspect("flag", "{{.Config.StopSignal}}"), "SIGUSR2");
    assert!(env.capsa(&["rm", "img", "flag"]).status.success());
    env.assert_clean();
}

#[test]
fn stop_sends_the_images_stopsignal_in_a_container() {
    check("container");
}

#[test]
fn stop_sends_the_images_stopsignal_in_a_vm() {
    check("vm");
}

#[test]
fn import_refuses_a_stopsignal_that_names_no_signal() {
    let env = TestEnv::new();
    let tar = busybox_tarball().to_str().unwrap().to_string();
    let out = env.capsa(&["import", "-c", "STOPSIGNAL SIGNOPE", &tar, "bad"]);
    assert!(!out.status.success());
    assert!(
        !env.capsa(&["image", "inspect", "bad"]).status.success(),
        "no image made"
    );
    assert!(
        text(&out.stderr).contains("STOPSIGNAL SIGNOPE"),
        "{}",
        text(&out.stderr)
    );
}
