//! What another local user (here `nobody`) can get from capsa's host side: no `-e` value
//! from a detached container's monitor (its command line is `capsa monitor <short id>`),
//! and no set-user-ID file from `cp` out of a container. Both isolations.

use capsa_tests::{as_nobody, text, TestEnv};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use std::time::Duration;

/// The monitor PID the container's record holds (read as root).
fn monitor_pid(env: &TestEnv, id: &str) -> i32 {
    let path = env.root().join("containers").join(id).join("state.json");
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    state["monitor_pid"].as_i64().expect("a monitor PID") as i32
}

/// Runs a detached container with a secret in its flags, then checks what nobody sees of
/// its monitor.
fn check_monitor_command_line(isolation: &str) {
    let env = TestEnv::new();
    let out = env.run(&[
        "-d",
        "--isolation",
        isolation,
        "--name",
        "holder",
        "-e",
        "DB_PASSWORD=hunter2-argv",
        "busybox",
        "sleep",
        "600",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    let pid = monitor_pid(&env, &id).to_string();
    let cmdline = as_nobody("/bin/cat", &[&format!("/proc/{pid}/cmdline")]);
    assert!(
        cmdline.status.success(),
        "nobody reads any cmdline: {}",
        text(&cmdline.stderr)
    );
    let seen = text(&cmdline.stdout);
    assert!(!seen.contains("hunter2"), "the monitor shows {seen:?}");
    assert!(!seen.contains("DB_PASSWORD"), "the monitor shows {seen:?}");
    // ps still tells what the process is.
    let ps = as_nobody("/bin/ps", &["-o", "args=", "-p", &pid]);
    assert_eq!(
        text(&ps.stdout).trim(),
        format!("capsa monitor {}", &id[..12]),
        "{}",
        text(&ps.stderr)
    );
    // The environment area is not for other users at all.
    let environ = as_nobody("/bin/cat", &[&format!("/proc/{pid}/environ")]);
    assert!(!environ.status.success());
    assert!(env.capsa(&["rm", "-f", "holder"]).status.success());
    env.assert_clean();
}

#[test]
fn a_detached_containers_monitor_shows_no_flag_values_to_other_users() {
    check_monitor_command_line("container");
}

#[test]
fn a_detached_vms_monitor_shows_no_flag_values_to_other_users() {
    check_monitor_command_line("vm");
}

/// A container (of `isolation`) holding a set-user-ID file and a set-group-ID folder
/// owned by root, made as a workload makes them; `cp` takes both out to the host, and a
/// set-user-ID host file into the container.
fn check_cp_special_bits(isolation: &str) {
    let env = TestEnv::new();
    let out = env.run(&[
        "-d",
        "--isolation",
        isolation,
        "--name",
        "files",
        "busybox",
        "sh",
        "-c",
        "mkdir /out && cp /bin/busybox /out/tool && chmod 4755 /out/tool && \
         chmod 2755 /out && touch /ready && sleep 600",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    capsa_tests::eventually(
        "the workload made its files",
        Duration::from_secs(60),
        || {
            env.capsa(&["exec", "files", "test", "-e", "/ready"])
                .status
                .success()
        },
    );
    let host = tempfile::tempdir().unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    // A file to a new name, and a folder into an existing one.
    let file = host.path().join("tool-copy");
    let out = env.capsa(&["cp", "files:/out/tool", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = env.capsa(&["cp", "files:/out", host.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for (path, want) in [
        (file.clone(), 0o755),
        (host.path().join("out/tool"), 0o755),
        (host.path().join("out"), 0o755),
    ] {
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.uid(), 0, "{}", path.display());
        assert_eq!(mode(&path), want, "{} keeps a set-ID bit", path.display());
    }
    // Into the container, the modes are the container's own business and stay.
    let suid = host.path().join("suid-in");
    std::fs::write(&suid, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let out = env.capsa(&["cp", suid.to_str().unwrap(), "files:/tmp/"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let seen = env.capsa(&["exec", "files", "stat", "-c", "%a", "/tmp/suid-in"]);
    assert_eq!(text(&seen.stdout).trim(), "4755", "{}", text(&seen.stderr));
    assert!(env.capsa(&["rm", "-f", "files"]).status.success());
    env.assert_clean();
}

#[test]
fn cp_out_of_a_container_writes_no_set_id_file_on_the_host() {
    check_cp_special_bits("container");
}

#[test]
fn cp_out_of_a_vm_writes_no_set_id_file_on_the_host() {
    check_cp_special_bits("vm");
}
