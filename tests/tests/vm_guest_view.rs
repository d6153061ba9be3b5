//! What a workload in `--isolation vm` sees of its guest and what the host sees of it, as a
//! user checks it: the guest's clock is the host's, and `stats` shows the workload.

use capsa_tests::{text, TestEnv};
use std::time::Duration;

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

#[test]
fn stats_of_a_vm_show_its_workloads_cpu_memory_processes_and_disk_writes() {
    let env = TestEnv::new();
    // No limit set: the counters must not depend on a controller a limit would enable.
    let script = "dd if=/dev/zero of=/big bs=1M count=8 && sync && touch /written; \
                  while :; do :; done";
    let out = env.run(&[
        "-d",
        "--isolation",
        "vm",
        "--network",
        "none",
        "--name",
        "busy",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    capsa_tests::eventually(
        "the workload wrote its file",
        Duration::from_secs(60),
        || {
            env.capsa(&["exec", "busy", "test", "-e", "/written"])
                .status
                .success()
        },
    );
    let out = env.capsa(&["stats", "--no-stream", "--format", "{{json .}}", "busy"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let row: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON row");
    let field = |name: &str| row[name].as_str().unwrap_or_default().to_string();
    let cpu: f64 = field("CPUPerc").trim_end_matches('%').parse().unwrap();
    assert!(cpu > 0.0, "a spinning workload uses CPU: {row}");
    let memory = field("MemUsage");
    assert!(!memory.starts_with("0B"), "memory: {row}");
    let pids: u64 = field("PIDs").parse().unwrap();
    assert!(pids >= 1, "processes: {row}");
    let written = field("BlockIO");
    assert!(
        !written.ends_with("/ 0B"),
        "8 MiB written and synced: {row}"
    );
    // The table reads the same counters.
    let out = env.capsa(&["stats", "--no-stream", "busy"]);
    let table = text(&out.stdout);
    let line = table.lines().nth(1).unwrap_or_default();
    assert!(!line.trim_end().ends_with(" 0"), "PIDS column: {table}");
    assert!(env.capsa(&["rm", "-f", "busy"]).status.success());
    env.assert_clean();
}
