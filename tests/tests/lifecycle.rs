//! create / start / wait / ps / rm, and what is left after interruptions.

use capsa_tests::{eventually, text, TestEnv};
use std::time::Duration;

#[test]
fn exited_containers_stay_until_removed_and_rm_leaves_nothing() {
    let env = TestEnv::new();
    let out = env.run(&["--name", "three", "busybox", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    let line = env.ps_line("three");
    assert!(
        line.contains("Exited (3)") && line.contains("ago"),
        "ps -a: {line}"
    );
    assert!(
        !text(&env.capsa(&["ps"]).stdout).contains("three"),
        "plain ps lists an exited container"
    );
    // An exited container holds no process and no cgroup, only its folder.
    assert!(
        env.leftover_cgroups().is_empty(),
        "cgroups of an exited container: {:?}",
        env.leftover_cgroups()
    );
    assert_eq!(env.container_dirs().len(), 1);
    assert!(env.capsa(&["rm", "three"]).status.success());
    env.assert_clean();
}

#[test]
fn create_waits_for_start_and_wait_returns_the_code() {
    let env = TestEnv::new();
    let marker = env.root().join("ran");
    let vol = format!("{}:/out", env.root().display());
    let out = env.create(&[
        "--name",
        "later",
        "-v",
        &vol,
        "busybox",
        "sh",
        "-c",
        "touch /out/ran; echo started; exit 7",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    assert_eq!(id.len(), 64, "create prints the full ID: {id:?}");
    assert!(env.ps_line("later").contains("Created"));
    assert!(!marker.exists(), "the workload ran before start");
    let start = env.capsa(&["start", "-a", "later"]);
    assert_eq!(text(&start.stdout), "started\n");
    assert_eq!(start.status.code(), Some(7));
    assert!(marker.exists());
    let wait = env.capsa(&["wait", "later"]);
    assert_eq!(text(&wait.stdout).trim(), "7");
    assert!(env.ps_line("later").contains("Exited (7)"));
    // As `docker start`: an exited container runs again, output appended to its log.
    let again = env.capsa(&["start", "-a", "later"]);
    assert_eq!(text(&again.stdout), "started\n");
    assert_eq!(again.status.code(), Some(7));
}

#[test]
fn detached_run_prints_the_id_and_rm_f_kills_it() {
    let env = TestEnv::new();
    let out = env.run(&["-d", "--name", "bg", "busybox", "sleep", "60"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim().len(), 64);
    assert!(env.ps_line("bg").contains("Up "));
    assert!(text(&env.capsa(&["ps", "-q"]).stdout).trim().len() == 12);
    let rm = env.capsa(&["rm", "bg"]);
    assert_ne!(
        rm.status.code(),
        Some(0),
        "rm without -f removed a running container"
    );
    assert!(text(&rm.stderr).contains("force"), "{}", text(&rm.stderr));
    let rm = env.capsa(&["rm", "-f", "bg"]);
    assert!(rm.status.success(), "{}", text(&rm.stderr));
    env.assert_clean();
}

#[test]
fn a_created_container_is_removed_without_force_and_never_runs() {
    // As `docker rm`: a container that was created and never started needs no `-f`.
    let env = TestEnv::new();
    let marker = env.root().join("ran");
    let vol = format!("{}:/out", env.root().display());
    let out = env.create(&[
        "--name",
        "unstarted",
        "-v",
        &vol,
        "busybox",
        "touch",
        "/out/ran",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rm = env.capsa(&["rm", "unstarted"]);
    assert!(
        rm.status.success(),
        "rm of a created container: {}",
        text(&rm.stderr)
    );
    assert!(
        !marker.exists(),
        "removing a created container ran its workload"
    );
    env.assert_clean();
}

#[test]
fn run_rm_leaves_nothing() {
    let env = TestEnv::new();
    for _ in 0..3 {
        assert!(env
            .run(&["--rm", "-m", "64m", "busybox", "true"])
            .status
            .success());
    }
    env.assert_clean();
}

#[test]
fn names_are_unique() {
    let env = TestEnv::new();
    assert!(env
        .run(&["--name", "dup", "busybox", "true"])
        .status
        .success());
    let out = env.run(&["--name", "dup", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("already in use"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(env.container_dirs().len(), 1);
}

#[test]
fn sigint_is_forwarded_to_the_container() {
    use std::io::BufRead;
    let env = TestEnv::new();
    let mut cmd = env.command(&[
        "run",
        "--name",
        "trap",
        "--cgroup-parent",
        env.cgroup_parent(),
        "busybox",
        "sh",
        "-c",
        "trap 'echo got INT; exit 130' INT; echo ready; while true; do sleep 1; done",
    ]);
    cmd.stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as i32;
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // "ready" is printed after the trap is set: from then on SIGINT has a handler.
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGINT) };
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "got INT\n");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(env.ps_line("trap").contains("Exited (130)"));
}

#[test]
fn killed_cli_leaves_a_truthful_state_that_rm_f_cleans() {
    let env = TestEnv::new();
    let mut cmd = env.command(&[
        "run",
        "--name",
        "orphan",
        "--cgroup-parent",
        env.cgroup_parent(),
        "busybox",
        "sleep",
        "60",
    ]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    eventually("container running", Duration::from_secs(20), || {
        env.ps_line("orphan").contains("Up")
    });
    child.kill().unwrap(); // SIGKILL to the CLI, which was the container's monitor
    child.wait().unwrap();
    // The workload outlives its CLI, as a Docker container outlives `docker run`.
    assert!(
        env.ps_line("orphan").contains("Up"),
        "{}",
        env.ps_line("orphan")
    );
    assert!(env.capsa(&["rm", "-f", "orphan"]).status.success());
    env.assert_clean();
}

#[test]
fn many_parallel_runs_leave_a_consistent_store() {
    let env = TestEnv::new();
    std::thread::scope(|s| {
        for i in 0..8 {
            let env = &env;
            s.spawn(move || {
                let name = format!("par{i}");
                let out = env.run(&["--name", &name, "busybox", "true"]);
                assert!(out.status.success(), "{}", text(&out.stderr));
            });
        }
    });
    let ps = text(&env.capsa(&["ps", "-aq"]).stdout);
    assert_eq!(ps.lines().count(), 8);
    for i in 0..8 {
        assert!(env.capsa(&["rm", &format!("par{i}")]).status.success());
    }
    env.assert_clean();
}

#[test]
fn fifty_parallel_clis_leave_a_consistent_store() {
    let env = TestEnv::new();
    std::thread::scope(|s| {
        for i in 0..50 {
            let env = &env;
            s.spawn(move || {
                let name = format!("p{i}");
                let out = env.run(&["-d", "--name", &name, "busybox", "sleep", "30"]);
                assert!(out.status.success(), "run {name}: {}", text(&out.stderr));
                let out = env.capsa(&["rm", "-f", &name]);
                assert!(out.status.success(), "rm {name}: {}", text(&out.stderr));
            });
        }
    });
    env.assert_clean();
}

#[test]
fn a_name_is_taken_by_exactly_one_of_many_racing_clis() {
    let env = TestEnv::new();
    let won = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..10 {
            let (env, won) = (&env, &won);
            s.spawn(move || {
                let out = env.create(&["--name", "contested", "busybox", "true"]);
                if out.status.success() {
                    won.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                } else {
                    assert!(
                        text(&out.stderr).contains("already in use"),
                        "{}",
                        text(&out.stderr)
                    );
                }
            });
        }
    });
    assert_eq!(won.into_inner(), 1);
    assert_eq!(env.container_dirs().len(), 1, "losers left folders behind");
}

#[test]
fn a_killed_monitor_is_reported_truthfully_and_rm_f_cleans() {
    let env = TestEnv::new();
    assert!(env
        .run(&["-d", "--name", "orphaned", "busybox", "sleep", "60"])
        .status
        .success());
    let id = env.inspect("orphaned", "{{.Id}}");
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.root().join("containers").join(&id).join("state.json")).unwrap(),
    )
    .unwrap();
    let monitor = state["monitor_pid"].as_i64().unwrap() as i32;
    // SAFETY: SIGKILL to the monitor process this test's container runs under.
    unsafe { libc::kill(monitor, libc::SIGKILL) };
    eventually("monitor gone", Duration::from_secs(20), || {
        !std::path::Path::new(&format!("/proc/{monitor}")).exists()
            || std::fs::read_to_string(format!("/proc/{monitor}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    });
    // The workload still runs, and says so.
    assert!(
        env.ps_line("orphaned").contains("Up "),
        "{}",
        env.ps_line("orphaned")
    );
    assert!(env.capsa(&["kill", "orphaned"]).status.success());
    eventually("exit seen", Duration::from_secs(20), || {
        env.ps_line("orphaned").contains("Exited (255)")
    });
    assert!(env
        .inspect("orphaned", "{{.State.Error}}")
        .contains("monitor"));
    assert!(env.capsa(&["rm", "-f", "orphaned"]).status.success());
    env.assert_clean();
}

#[test]
fn start_attach_reports_the_exit_code_under_load() {
    // Regression: a reader that saw the record say "running" and then both processes gone
    // (the monitor had recorded the exit and left in between) reported the status as lost.
    let env = TestEnv::new();
    std::thread::scope(|s| {
        for t in 0..2 {
            let env = &env;
            s.spawn(move || {
                for i in 0..20 {
                    let name = format!("r{t}-{i}");
                    assert!(env
                        .create(&[
                            "--name",
                            &name,
                            "busybox",
                            "sh",
                            "-c",
                            "echo started; exit 7"
                        ])
                        .status
                        .success());
                    let out = env.capsa(&["start", "-a", &name]);
                    assert_eq!(out.status.code(), Some(7), "{name}: {}", text(&out.stderr));
                    assert!(env.capsa(&["rm", &name]).status.success());
                }
            });
        }
    });
    env.assert_clean();
}

#[test]
fn an_interrupted_removal_is_finished_by_the_next_rm() {
    let env = TestEnv::new();
    // What an `rm` killed half-way leaves: a renamed folder whose lock nobody holds.
    let leftover = env
        .root()
        .join("containers")
        .join(format!(".removing-{}", "ab".repeat(32)));
    std::fs::create_dir_all(leftover.join("upper/etc")).unwrap();
    std::fs::write(leftover.join("lock"), "").unwrap();
    assert!(env
        .run(&["--name", "any", "busybox", "true"])
        .status
        .success());
    assert!(env.capsa(&["ps", "-aq"]).status.success());
    assert!(env.capsa(&["rm", "any"]).status.success());
    assert!(
        !leftover.exists(),
        "the interrupted removal was not finished"
    );
    env.assert_clean();
}

#[test]
fn a_detached_container_keeps_no_descriptor_of_its_callers() {
    let env = TestEnv::new();
    // The caller hands capsa a pipe as descriptor 3 (a shell's, a CI harness's): once
    // capsa has returned, the pipe's reader must see its end, though the container runs.
    let script = format!(
        "{} run -d --cgroup-parent {} --network none --name held busybox sleep 600 3>&1 >/dev/null 2>&1 | cat; echo reader-done",
        env.shell_prefix(),
        env.cgroup_parent()
    );
    let mut sh = std::process::Command::new("sh");
    sh.args(["-c", &script]);
    let out = capsa_tests::run_bounded(sh, std::time::Duration::from_secs(30));
    assert!(
        capsa_tests::text(&out.stdout).contains("reader-done"),
        "the pipe's reader never saw its end: a monitor holds the caller's descriptor"
    );
    assert!(env.ps_line("held").contains("Up "));
}
