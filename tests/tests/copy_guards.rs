//! A running workload is frozen while `cp` works in its root: it cannot swap a directory
//! the copy is about to write into for a symlink (red-team round 27: a workload racing the
//! copy got the operator's copy to chmod /bin, or a host directory bound into a user
//! namespace container, to the archive's mode). The extraction itself works by descriptor
//! and never follows a symlink below the destination (core's tar_copy tests race it).

use capsa_tests::{eventually, text, TestEnv};
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

fn wait_ready(env: &TestEnv, name: &str) {
    eventually("ready", Duration::from_secs(20), || {
        text(&env.capsa(&["logs", name]).stdout).contains("ready")
    });
}

/// The container's freezer state (cgroup v1 `freezer.state`, v2 `cgroup.freeze`), from
/// its cgroup under the test's parent (the test runs one container; its monitor's cgroup
/// beside it is not the container's).
fn frozen(env: &TestEnv) -> Option<bool> {
    let dirs = env.leftover_cgroups().into_iter();
    dirs.filter(|d| !d.to_string_lossy().ends_with("-monitor"))
        .find_map(|dir| {
            if let Ok(state) = std::fs::read_to_string(dir.join("freezer.state")) {
                return Some(state.trim() == "FROZEN");
            }
            std::fs::read_to_string(dir.join("cgroup.freeze"))
                .ok()
                .map(|s| s.trim() == "1")
        })
}

#[test]
fn the_workload_is_frozen_while_a_copy_works_in_its_root() {
    let env = TestEnv::new();
    let args = [
        "-d",
        "--name",
        "busy",
        "busybox",
        "sh",
        "-c",
        "echo ready; sleep 600",
    ];
    assert!(env.run(&args).status.success());
    wait_ready(&env, "busy");
    assert_eq!(frozen(&env), Some(false), "running, not frozen");
    // A copy fed from a stream this test holds open: it works in the root meanwhile.
    let mut cp = env.command(&["cp", "-", "busy:/tmp"]);
    let mut child = cp
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(5);
    b.append_data(&mut h, "copied.txt", &b"hello"[..]).unwrap();
    let archive = b.into_inner().unwrap();
    stdin.write_all(&archive[..512]).unwrap();
    stdin.flush().unwrap();
    eventually("frozen during the copy", Duration::from_secs(20), || {
        frozen(&env) == Some(true)
    });
    stdin.write_all(&archive[512..]).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(frozen(&env), Some(false), "thawed after the copy");
    let cat = env.capsa(&["exec", "busy", "cat", "/tmp/copied.txt"]);
    assert_eq!(text(&cat.stdout), "hello");
    // A paused container stays paused through a copy.
    assert!(env.capsa(&["pause", "busy"]).status.success());
    let src = env.root().join("again.txt");
    std::fs::write(&src, "x").unwrap();
    let out = env.capsa(&["cp", src.to_str().unwrap(), "busy:/tmp/"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(frozen(&env), Some(true), "still paused");
    assert!(env.capsa(&["unpause", "busy"]).status.success());
    // A copy killed while it works leaves the workload frozen (its thaw never runs): rm -f
    // still removes the container (a v1-frozen process does not die of SIGKILL).
    let mut child = env
        .command(&["cp", "-", "busy:/tmp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&archive[..512]).unwrap();
    stdin.flush().unwrap();
    eventually("frozen during the copy", Duration::from_secs(20), || {
        frozen(&env) == Some(true)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    assert_eq!(frozen(&env), Some(true), "left frozen by the killed copy");
    let out = env.capsa(&["rm", "-f", "busy"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    env.assert_clean();
}

#[test]
fn a_copy_into_a_user_namespace_container_acts_as_its_root_and_no_stronger() {
    let env = TestEnv::new();
    // A host directory bound in: root's, 0755, so the container's root (an unmapped user
    // on the host) cannot write it.
    let host_dir = env.root().join("host-dir");
    std::fs::create_dir_all(&host_dir).unwrap();
    let volume = format!("{}:/data", host_dir.display());
    let args = [
        "-d",
        "--name",
        "un",
        "--userns",
        "auto",
        "-v",
        &volume,
        "busybox",
        "sh",
        "-c",
        "echo ready; sleep 600",
    ];
    let ran = env.run(&args);
    assert!(ran.status.success(), "{}", text(&ran.stderr));
    wait_ready(&env, "un");
    let src = env.root().join("note.txt");
    std::fs::write(&src, "copied").unwrap();
    // Into the container's own files: works, and the file is its root's.
    let out = env.capsa(&["cp", src.to_str().unwrap(), "un:/tmp/"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let owner = env.capsa(&["exec", "un", "stat", "-c", "%u:%g %s", "/tmp/note.txt"]);
    assert_eq!(text(&owner.stdout).trim(), "0:0 6");
    // Into the host directory the container may not write: refused, nothing written.
    let out = env.capsa(&["cp", src.to_str().unwrap(), "un:/data/"]);
    assert!(
        !out.status.success(),
        "the copy wrote where the container cannot"
    );
    assert!(!host_dir.join("note.txt").exists());
    assert!(env.capsa(&["rm", "-f", "un"]).status.success());
    env.assert_clean();
}
