//! What a workload in `--isolation vm` sees of its guest and what the host sees of it, as a
//! user checks it: the guest's clock is the host's, and `stats` shows the workload.

use capsa_tests::{text, TestEnv};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Asserts that `out` (a `date +%s` line) lies within 2 s of [`before`, `after`].
fn assert_host_time(out: &std::process::Output, before: i64, after: i64, when: &str) {
    let line = text(&out.stdout);
    let guest: i64 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{when}: {line:?} {}", text(&out.stderr)));
    assert!(
        guest >= before - 2 && guest <= after + 2,
        "{when}: the guest says {guest}, the host {before}..{after}"
    );
}

#[test]
fn a_vm_has_the_hosts_time_when_its_workload_starts_and_keeps_it() {
    let env = TestEnv::new();
    let before = now();
    let out = env.run(&[
        "--rm",
        "--isolation",
        "vm",
        "--network",
        "none",
        "busybox",
        "date",
        "+%s",
    ]);
    assert_host_time(&out, before, now(), "at start");

    let out = env.run(&[
        "-d",
        "--isolation",
        "vm",
        "--network",
        "none",
        "--name",
        "clock",
        "busybox",
        "sleep",
        "600",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // What is measured: the guest's clock over 20 s of an idle VM, not a synchronisation.
    std::thread::sleep(std::time::Duration::from_secs(20));
    let before = now();
    let out = env.capsa(&["exec", "clock", "date", "+%s"]);
    assert_host_time(&out, before, now(), "after 20 s idle");
    assert!(env.capsa(&["rm", "-f", "clock"]).status.success());
    env.assert_clean();
}
