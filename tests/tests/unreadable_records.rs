//! A container whose record (state.json) cannot be read, as a power loss after a
//! non-durable write leaves it: `ps -a` shows it as such, `rm` says what to do, `rm -f`
//! (by name, full ID or prefix) and `container prune` remove what is left, and its name
//! becomes free again.

use capsa_tests::{text, TestEnv};
use std::path::PathBuf;

/// Runs `busybox true` as container `name` (kept after it exits); returns its ID.
fn exited(env: &TestEnv, name: &str) -> String {
    let out = env.run(&["--name", name, "busybox", "true"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    env.inspect(name, "{{.Id}}")
}

fn record(env: &TestEnv, id: &str) -> PathBuf {
    env.root().join("containers").join(id).join("state.json")
}

#[test]
fn an_empty_record_is_listed_refused_by_rm_and_removed_by_rm_f() {
    let env = TestEnv::new();
    let id = exited(&env, "torn");
    std::fs::write(record(&env, &id), b"").unwrap();
    let line = env.ps_line("torn");
    assert!(line.starts_with(&id[..12]), "ps -a: {line:?}");
    assert!(line.contains("unreadable"), "ps -a: {line:?}");
    let all = text(&env.capsa(&["ps", "-a", "-q", "--no-trunc"]).stdout);
    assert!(all.contains(&id), "ps -aq: {all:?}");
    let out = env.capsa(&["rm", "torn"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("unreadable") && err.contains("rm -f"), "{err}");
    assert!(record(&env, &id).exists(), "plain rm removed it");
    let out = env.capsa(&["rm", "-f", &id[..10]]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    env.assert_clean();
    // The name is free again.
    exited(&env, "torn");
}

#[test]
fn prune_removes_a_torn_record() {
    let env = TestEnv::new();
    let id = exited(&env, "half");
    let whole = std::fs::read(record(&env, &id)).unwrap();
    std::fs::write(record(&env, &id), &whole[..whole.len() / 2]).unwrap();
    let out = env.capsa(&["container", "prune", "-f"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&id), "{}", text(&out.stdout));
    env.assert_clean();
}

#[test]
fn rm_f_kills_and_removes_the_cgroup_a_record_of_another_shape_still_names() {
    let env = TestEnv::new();
    let out = env.run(&["-d", "--name", "odd", "busybox", "sleep", "600"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = env.inspect("odd", "{{.Id}}");
    let pid: i32 = env.inspect("odd", "{{.State.Pid}}").parse().unwrap();
    // Valid JSON that is no longer a record this capsa reads (another version's, say).
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record(&env, &id)).unwrap()).unwrap();
    state["status"] = "sideways".into();
    std::fs::write(record(&env, &id), serde_json::to_vec(&state).unwrap()).unwrap();
    assert!(env.ps_line("odd").contains("unreadable"));
    assert!(!env.leftover_cgroups().is_empty());
    let out = env.capsa(&["rm", "-f", "odd"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Gone, or a zombie its monitor has yet to reap.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .next();
    assert!(
        matches!(state, None | Some("Z")),
        "the workload {pid} survived rm -f: {stat}"
    );
    env.assert_clean();
}
