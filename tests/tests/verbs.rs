//! The everyday verbs on detached containers: logs, stop, kill.

use capsa_tests::{eventually, run_bounded, text, TestEnv};
use std::time::Duration;

#[test]
fn logs_follow_a_ticking_container_until_it_exits() {
    let env = TestEnv::new();
    let out = env.run(&[
        "-d",
        "--name",
        "tick",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do echo tick $i; usleep 100000; done; echo done >&2",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let follow = run_bounded(
        env.command(&["logs", "-f", "tick"]),
        Duration::from_secs(30),
    );
    assert_eq!(
        text(&follow.stdout),
        "tick 1\ntick 2\ntick 3\ntick 4\ntick 5\n"
    );
    assert_eq!(text(&follow.stderr), "done\n");
    // The log outlives the container's exit.
    assert!(env.ps_line("tick").contains("Exited (0)"));
    // --tail counts lines of both streams together, as Docker's does.
    let tail = env.capsa(&["logs", "--tail", "3", "tick"]);
    assert_eq!(text(&tail.stdout), "tick 4\ntick 5\n");
    assert_eq!(text(&tail.stderr), "done\n");
    let stamped = text(&env.capsa(&["logs", "-t", "-n", "2", "tick"]).stdout);
    let (stamp, line) = stamped.trim_end().split_once(' ').unwrap();
    assert!(stamp.starts_with("20") && stamp.ends_with('Z'), "{stamp}");
    assert_eq!(line, "tick 5");
    assert_eq!(
        text(
            &env.capsa(&["logs", "--since", "2999-01-01T00:00:00Z", "tick"])
                .stdout
        ),
        ""
    );
}

#[test]
fn logs_rotate_within_the_given_bounds() {
    let env = TestEnv::new();
    let out = env.run(&[
        "-d",
        "--name",
        "chatty",
        "--log-opt",
        "max-size=1k",
        "--log-opt",
        "max-file=2",
        "busybox",
        "sh",
        "-c",
        "i=0; while [ $i -lt 300 ]; do echo line $i; i=$((i+1)); done",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&env.capsa(&["wait", "chatty"]).stdout).trim(), "0");
    let id = env.inspect("chatty", "{{.Id}}");
    let dir = env.root().join("containers").join(&id);
    let logs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("ctr.log"))
        .collect();
    assert_eq!(logs.len(), 2, "expected ctr.log and ctr.log.1");
    for f in &logs {
        assert!(
            f.metadata().unwrap().len() <= 1024,
            "{:?} is over max-size",
            f.path()
        );
    }
    let shown = text(&env.capsa(&["logs", "chatty"]).stdout);
    assert!(shown.ends_with("line 299\n"), "{shown}");
    assert!(!shown.contains("line 0\n"), "rotated-out lines still shown");
}

#[test]
fn stop_uses_the_containers_handler_or_kills_after_the_grace_period() {
    let env = TestEnv::new();
    let graceful = [
        "-d",
        "--name",
        "polite",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 0' TERM; echo ready; while true; do usleep 50000; done",
    ];
    assert!(env.run(&graceful).status.success());
    // PID 1 gets SIGTERM only once it has a handler, so wait for the trap.
    eventually("trap installed", Duration::from_secs(20), || {
        text(&env.capsa(&["logs", "polite"]).stdout).contains("ready")
    });
    let out = env.capsa(&["stop", "polite"]);
    assert_eq!(text(&out.stdout).trim(), "polite");
    assert!(
        env.ps_line("polite").contains("Exited (0)"),
        "{}",
        env.ps_line("polite")
    );
    // `sleep` as PID 1 ignores SIGTERM: killed after -t seconds, 137 as in Docker.
    assert!(env
        .run(&["-d", "--name", "stubborn", "busybox", "sleep", "600"])
        .status
        .success());
    assert!(env.capsa(&["stop", "-t", "1", "stubborn"]).status.success());
    assert!(
        env.ps_line("stubborn").contains("Exited (137)"),
        "{}",
        env.ps_line("stubborn")
    );
}

#[test]
fn kill_sends_the_named_signal_and_refuses_stopped_containers() {
    let env = TestEnv::new();
    let args = [
        "-d",
        "--name",
        "usr",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 42' USR1; echo ready; while true; do usleep 50000; done",
    ];
    assert!(env.run(&args).status.success());
    eventually("trap installed", Duration::from_secs(20), || {
        text(&env.capsa(&["logs", "usr"]).stdout).contains("ready")
    });
    assert!(env.capsa(&["kill", "-s", "USR1", "usr"]).status.success());
    assert_eq!(text(&env.capsa(&["wait", "usr"]).stdout).trim(), "42");
    let out = env.capsa(&["kill", "usr"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not running"),
        "{}",
        text(&out.stderr)
    );
    let out = env.capsa(&["kill", "-s", "NOPE", "usr"]);
    assert!(
        text(&out.stderr).contains("invalid signal"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn logs_of_a_foreground_container_say_where_the_output_went() {
    let env = TestEnv::new();
    assert!(env
        .run(&["--name", "fg", "busybox", "echo", "hi"])
        .status
        .success());
    let out = env.capsa(&["logs", "fg"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("foreground"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bad_log_options_are_refused() {
    let env = TestEnv::new();
    for opt in ["max-size=lots", "colour=red", "max-file=0"] {
        let out = env.run(&["--log-opt", opt, "busybox", "true"]);
        assert_eq!(out.status.code(), Some(125), "{opt}");
    }
    // max-file without max-size is taken, as Docker takes it (nothing rotates).
    let out = env.run(&["--rm", "--log-opt", "max-file=2", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = env.run(&["--log-driver", "syslog", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    env.assert_clean();
}

#[test]
fn ps_filters_formats_and_limits() {
    let env = TestEnv::new();
    assert!(env
        .run(&["--name", "first", "busybox", "sh", "-c", "echo x > /f"])
        .status
        .success());
    assert!(env
        .run(&["-d", "--name", "second", "busybox", "sleep", "60"])
        .status
        .success());
    let ps = |args: &[&str]| {
        let mut all = vec!["ps"];
        all.extend_from_slice(args);
        text(&env.capsa(&all).stdout)
    };
    // Running only by default; -a adds the exited one; -l / -n pick the newest.
    assert_eq!(ps(&["--format", "{{.Names}}"]), "second\n");
    assert_eq!(
        ps(&["-a", "--format", "{{.Names}} {{.State}}"]),
        "second running\nfirst exited\n"
    );
    assert_eq!(ps(&["-l", "--format", "{{.Names}}"]), "second\n");
    assert_eq!(ps(&["-n", "2", "-q"]).lines().count(), 2);
    assert_eq!(
        ps(&["-f", "status=exited", "--format", "{{.Names}}"]),
        "first\n"
    );
    assert_eq!(
        ps(&[
            "-f",
            "name=sec",
            "-f",
            "ancestor=busybox",
            "--format",
            "{{.Names}}"
        ]),
        "second\n"
    );
    assert_eq!(ps(&["-a", "-f", "ancestor=nothing-like-it", "-q"]), "");
    let table = ps(&["-a", "--format", "table {{.Names}}\\t{{.Status}}"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, vec!["NAMES", "STATUS"]);
    let json: serde_json::Value = serde_json::from_str(ps(&["--format", "json"]).trim()).unwrap();
    assert_eq!(json["Names"], "second");
    assert_eq!(json["ID"].as_str().unwrap().len(), 12);
    // -s: the writable layer holds the 2-byte file.
    let sized = ps(&["-a", "-s", "-f", "name=first", "--format", "{{.Size}}"]);
    assert!(sized.starts_with("2B (virtual "), "{sized}");
    let bad = env.capsa(&["ps", "-f", "colour=red"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad.stderr).contains("colour"));
}

#[test]
fn pause_freezes_and_unpause_thaws() {
    let env = TestEnv::new();
    let args = [
        "-d",
        "--name",
        "busy",
        "busybox",
        "sh",
        "-c",
        "while true; do echo t; usleep 20000; done",
    ];
    assert!(env.run(&args).status.success());
    let lines = || text(&env.capsa(&["logs", "busy"]).stdout).lines().count();
    eventually("output", Duration::from_secs(20), || lines() > 0);
    assert!(env.capsa(&["pause", "busy"]).status.success());
    assert_eq!(
        env.inspect("busy", "{{.State.Status}} {{.State.Paused}}"),
        "paused true"
    );
    assert!(env.ps_line("busy").contains("(Paused)"));
    // Output the monitor had not yet taken from the pipe when the freeze came lands first; a
    // running loop (a line every 20 ms) never settles over half a second.
    let frozen = capsa_tests::settled(Duration::from_millis(500), Duration::from_secs(10), lines);
    // A frozen container writes nothing while the engine is used for a while.
    for _ in 0..10 {
        env.capsa(&["inspect", "busy"]);
    }
    assert_eq!(lines(), frozen, "a paused container kept writing");
    assert_ne!(
        env.capsa(&["pause", "busy"]).status.code(),
        Some(0),
        "paused twice"
    );
    assert!(env.capsa(&["unpause", "busy"]).status.success());
    eventually("output resumes", Duration::from_secs(20), || {
        lines() > frozen
    });
    // A paused container can still be removed by force.
    assert!(env.capsa(&["pause", "busy"]).status.success());
    assert!(env.capsa(&["rm", "-f", "busy"]).status.success());
    env.assert_clean();
}

#[test]
fn rename_moves_the_name_atomically() {
    let env = TestEnv::new();
    assert!(env
        .run(&["--name", "old", "busybox", "true"])
        .status
        .success());
    assert!(env
        .run(&["--name", "taken", "busybox", "true"])
        .status
        .success());
    let clash = env.capsa(&["rename", "old", "taken"]);
    assert_eq!(clash.status.code(), Some(1));
    assert!(text(&clash.stderr).contains("already in use"));
    assert!(env.capsa(&["rename", "old", "new"]).status.success());
    assert_eq!(env.inspect("new", "{{.Name}}"), "/new");
    // The old name is free again.
    assert!(env
        .run(&["--name", "old", "busybox", "true"])
        .status
        .success());
}

#[test]
fn top_lists_the_containers_processes_only() {
    let env = TestEnv::new();
    assert!(env
        .run(&["-d", "--name", "topped", "busybox", "sleep", "60"])
        .status
        .success());
    let out = text(&env.capsa(&["top", "topped"]).stdout);
    let rows: Vec<&str> = out.lines().collect();
    assert!(rows[0].contains("PID") && rows[0].contains("CMD"), "{out}");
    assert_eq!(rows.len(), 2, "{out}");
    assert!(rows[1].ends_with("sleep 60"), "{out}");
    let custom = text(&env.capsa(&["top", "topped", "-o", "pid,comm"]).stdout);
    assert!(
        custom.lines().nth(1).unwrap().trim().ends_with("sleep"),
        "{custom}"
    );
    assert!(env.capsa(&["stop", "-t", "0", "topped"]).status.success());
    assert!(text(&env.capsa(&["top", "topped"]).stderr).contains("not running"));
}

#[test]
fn container_prune_removes_only_stopped_containers() {
    let env = TestEnv::new();
    assert!(env
        .run(&["--name", "done1", "busybox", "true"])
        .status
        .success());
    assert!(env
        .create(&["--name", "made", "busybox", "true"])
        .status
        .success());
    assert!(env
        .run(&["-d", "--name", "alive", "busybox", "sleep", "60"])
        .status
        .success());
    let out = env.capsa(&["container", "prune", "-f"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Deleted Containers:"));
    let left = text(&env.capsa(&["ps", "-a", "--format", "{{.Names}}"]).stdout);
    assert_eq!(left, "alive\n");
}

#[test]
fn on_failure_restarts_the_number_of_times_asked() {
    let env = TestEnv::new();
    let out = env.run(&[
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:3",
        "busybox",
        "sh",
        "-c",
        "echo run; exit 5",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    eventually(
        "three restarts, then exited",
        Duration::from_secs(30),
        || env.inspect("flaky", "{{.RestartCount}} {{.State.Status}}") == "3 exited",
    );
    assert_eq!(
        env.inspect(
            "flaky",
            "{{.State.ExitCode}} {{.HostConfig.RestartPolicy.Name}}"
        ),
        "5 on-failure"
    );
    assert_eq!(
        text(&env.capsa(&["logs", "flaky"]).stdout),
        "run\n".repeat(4)
    );
}

#[test]
fn stop_ends_an_always_policy() {
    let env = TestEnv::new();
    let out = env.run(&[
        "-d",
        "--name",
        "forever",
        "--restart",
        "always",
        "busybox",
        "sh",
        "-c",
        "echo up; usleep 200000",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    eventually("a restart", Duration::from_secs(30), || {
        env.inspect("forever", "{{.RestartCount}}") != "0"
    });
    assert!(env.capsa(&["stop", "-t", "1", "forever"]).status.success());
    eventually("settled", Duration::from_secs(30), || {
        env.inspect("forever", "{{.State.Status}}") == "exited"
    });
    let count = env.inspect("forever", "{{.RestartCount}}");
    // Observed over a few engine calls: no restart after the stop.
    for _ in 0..10 {
        env.capsa(&["inspect", "forever"]);
    }
    assert_eq!(
        env.inspect("forever", "{{.RestartCount}} {{.State.Status}}"),
        format!("{count} exited")
    );
}

#[test]
fn a_stopped_container_starts_again_with_its_writable_layer() {
    let env = TestEnv::new();
    let script = "echo run >> /history; wc -l < /history";
    assert_eq!(
        text(
            &env.run(&["--name", "again", "busybox", "sh", "-c", script])
                .stdout
        ),
        "1\n"
    );
    let second = env.capsa(&["start", "-a", "again"]);
    assert_eq!(text(&second.stdout), "2\n");
    assert_eq!(second.status.code(), Some(0));
    assert!(env
        .run(&["-d", "--name", "svc", "busybox", "sleep", "60"])
        .status
        .success());
    let before = env.inspect("svc", "{{.State.Pid}}");
    assert!(env.capsa(&["restart", "-t", "0", "svc"]).status.success());
    assert!(env.ps_line("svc").contains("Up "));
    assert_ne!(
        env.inspect("svc", "{{.State.Pid}}"),
        before,
        "restart kept the old process"
    );
}

#[test]
fn stop_signal_and_timeout_are_the_containers_own() {
    let env = TestEnv::new();
    let args = [
        "-d",
        "--name",
        "usr1",
        "--stop-signal",
        "USR1",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 7' USR1; echo ready; while true; do usleep 50000; done",
    ];
    assert!(env.run(&args).status.success());
    eventually("trap installed", Duration::from_secs(20), || {
        text(&env.capsa(&["logs", "usr1"]).stdout).contains("ready")
    });
    assert!(env.capsa(&["stop", "usr1"]).status.success());
    assert!(
        env.ps_line("usr1").contains("Exited (7)"),
        "{}",
        env.ps_line("usr1")
    );
}

#[test]
fn bad_restart_options_are_refused() {
    let env = TestEnv::new();
    for args in [
        vec!["--restart", "sometimes", "-d", "busybox", "true"],
        vec!["--restart", "always", "--rm", "-d", "busybox", "true"],
        vec!["--restart", "always", "busybox", "true"],
        vec!["--stop-signal", "NOPE", "-d", "busybox", "true"],
    ] {
        let out = env.run(&args);
        assert_eq!(
            out.status.code(),
            Some(125),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    env.assert_clean();
}

#[test]
fn exec_enters_every_namespace_and_the_confinement_of_the_container() {
    let env = TestEnv::new();
    assert!(env
        .run(&[
            "-d",
            "--name",
            "target",
            "--hostname",
            "inside",
            "busybox",
            "sleep",
            "60"
        ])
        .status
        .success());
    let out = env.capsa(&[
        "exec",
        "target",
        "sh",
        "-c",
        "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; \
        [ \"$(cat /proc/1/cgroup)\" = \"$(cat /proc/self/cgroup)\" ] && echo same-cgroup; \
        grep -E '^(CapEff|Seccomp|NoNewPrivs):' /proc/self/status",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| l.replace('\t', " "))
        .collect();
    assert_eq!(
        lines,
        vec![
            "inside",
            "sleep 60 ",
            "same-cgroup",
            "CapEff: 00000000a80425fb",
            "NoNewPrivs: 1",
            "Seccomp: 2"
        ]
    );
    let out = env.capsa(&[
        "exec",
        "-u",
        "app",
        "-w",
        "/tmp",
        "-e",
        "X=1",
        "target",
        "sh",
        "-c",
        "id -u; pwd; echo $X",
    ]);
    assert_eq!(text(&out.stdout), "1000\n/tmp\n1\n");
}

#[test]
fn exec_reports_codes_passes_stdin_and_detaches() {
    let env = TestEnv::new();
    assert!(env
        .run(&["-d", "--name", "t2", "busybox", "sleep", "60"])
        .status
        .success());
    assert_eq!(
        env.capsa(&["exec", "t2", "sh", "-c", "exit 4"])
            .status
            .code(),
        Some(4)
    );
    let missing = env.capsa(&["exec", "t2", "no-such-tool"]);
    assert_eq!(missing.status.code(), Some(127));
    assert!(text(&missing.stderr).contains("no-such-tool"));
    assert_eq!(
        text(
            &env.capsa_with_stdin(&["exec", "-i", "t2", "cat"], b"through exec\n")
                .stdout
        ),
        "through exec\n"
    );
    assert!(env
        .capsa(&["exec", "-d", "t2", "sh", "-c", "echo bg > /tmp/marker"])
        .status
        .success());
    eventually("detached exec ran", Duration::from_secs(20), || {
        text(&env.capsa(&["exec", "t2", "cat", "/tmp/marker"]).stdout) == "bg\n"
    });
    assert!(env.capsa(&["stop", "-t", "0", "t2"]).status.success());
    let stopped = env.capsa(&["exec", "t2", "true"]);
    assert_eq!(stopped.status.code(), Some(1));
    assert!(
        text(&stopped.stderr).contains("not running"),
        "{}",
        text(&stopped.stderr)
    );
}

#[test]
fn stats_show_the_limit_and_the_processes() {
    let env = TestEnv::new();
    let args = [
        "-d",
        "--name",
        "meter",
        "-m",
        "64m",
        // Loopback only: any NET I/O would be loopback's, which must not count.
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "sleep 60 & sleep 60 & wait",
    ];
    assert!(env.run(&args).status.success());
    eventually("both processes", Duration::from_secs(20), || {
        text(
            &env.capsa(&["stats", "--no-stream", "--format", "{{.PIDs}}", "meter"])
                .stdout,
        )
        .trim()
            == "3"
    });
    let out = text(
        &env.capsa(&[
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}}|{{.MemUsage}}|{{.CPUPerc}}|{{.NetIO}}",
            "meter",
        ])
        .stdout,
    );
    let f: Vec<&str> = out.trim().split('|').collect();
    assert_eq!(f[0], "meter");
    assert!(f[1].ends_with(" / 64MiB"), "{out}");
    assert!(f[2].ends_with('%'), "{out}");
    assert_eq!(f[3], "0B / 0B", "loopback traffic is not counted: {out}");
    let table = text(&env.capsa(&["stats", "--no-stream"]).stdout);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap()
        .split("   ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        header,
        vec![
            "CONTAINER ID",
            "NAME",
            "CPU %",
            "MEM USAGE / LIMIT",
            "MEM %",
            "NET I/O",
            "BLOCK I/O",
            "PIDS"
        ]
    );
}

#[test]
fn cp_replaces_a_web_page_in_a_running_container_and_copies_out() {
    let env = TestEnv::new();
    let args = [
        "-d",
        "--name",
        "web",
        "busybox",
        "sh",
        "-c",
        "mkdir -p /www && echo old > /www/index.html && echo ready && sleep 60",
    ];
    assert!(env.run(&args).status.success());
    eventually("ready", Duration::from_secs(20), || {
        text(&env.capsa(&["logs", "web"]).stdout).contains("ready")
    });
    let page = env.root().join("index.html");
    std::fs::write(&page, "<h1>new</h1>\n").unwrap();
    assert!(env
        .capsa(&["cp", page.to_str().unwrap(), "web:/www/index.html"])
        .status
        .success());
    assert_eq!(
        text(&env.capsa(&["exec", "web", "cat", "/www/index.html"]).stdout),
        "<h1>new</h1>\n"
    );
    // Out: a directory into a new host path, and a tar stream with `-`.
    let out_dir = env.root().join("copied");
    assert!(env
        .capsa(&["cp", "web:/www", out_dir.to_str().unwrap()])
        .status
        .success());
    assert_eq!(
        std::fs::read_to_string(out_dir.join("index.html")).unwrap(),
        "<h1>new</h1>\n"
    );
    let tar = env.capsa(&["cp", "web:/www/index.html", "-"]);
    let names: Vec<String> = tar::Archive::new(&tar.stdout[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, vec!["index.html"]);
}

#[test]
fn cp_a_keeps_owners_and_plain_cp_gives_files_to_root() {
    use std::os::unix::fs::MetadataExt;
    let env = TestEnv::new();
    assert!(env
        .run(&["-d", "--name", "own", "busybox", "sleep", "600"])
        .status
        .success());
    let host = env.root().join("owned");
    std::fs::create_dir_all(&host).unwrap();
    let file = host.join("f.txt");
    std::fs::write(&file, "x").unwrap();
    std::os::unix::fs::chown(&file, Some(1234), Some(5678)).unwrap();
    let owner = |path: &str| {
        let out = env.capsa(&["exec", "own", "stat", "-c", "%u:%g", path]);
        text(&out.stdout).trim().to_string()
    };
    // As Docker: a plain cp makes the files the container root's, -a keeps the archive's.
    assert!(env
        .capsa(&["cp", file.to_str().unwrap(), "own:/tmp/plain.txt"])
        .status
        .success());
    assert_eq!(owner("/tmp/plain.txt"), "0:0");
    let kept = env.capsa(&["cp", "-a", file.to_str().unwrap(), "own:/tmp/kept.txt"]);
    assert!(kept.status.success(), "{}", text(&kept.stderr));
    assert_eq!(owner("/tmp/kept.txt"), "1234:5678");
    // And out of the container.
    let made = env.capsa(&[
        "exec",
        "own",
        "sh",
        "-c",
        "echo y > /tmp/out.txt && chown 1000:1000 /tmp/out.txt",
    ]);
    assert!(made.status.success());
    let plain = host.join("out-plain.txt");
    assert!(env
        .capsa(&["cp", "own:/tmp/out.txt", plain.to_str().unwrap()])
        .status
        .success());
    assert_eq!(std::fs::metadata(&plain).unwrap().uid(), 0);
    let kept = host.join("out-kept.txt");
    assert!(env
        .capsa(&["cp", "-a", "own:/tmp/out.txt", kept.to_str().unwrap()])
        .status
        .success());
    let meta = std::fs::metadata(&kept).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
    assert!(env.capsa(&["rm", "-f", "own"]).status.success());
    env.assert_clean();
}

#[test]
fn cp_through_a_symlink_stays_inside_the_container() {
    let env = TestEnv::new();
    let args = [
        "-d",
        "--name",
        "trap",
        "busybox",
        "sh",
        "-c",
        "ln -s ../../../../../../tmp /escape && echo ready && sleep 60",
    ];
    assert!(env.run(&args).status.success());
    eventually("ready", Duration::from_secs(20), || {
        text(&env.capsa(&["logs", "trap"]).stdout).contains("ready")
    });
    let marker = format!("capsa-cp-escape-{}", std::process::id());
    let src = env.root().join(&marker);
    std::fs::write(&src, "x").unwrap();
    assert!(env
        .capsa(&["cp", src.to_str().unwrap(), "trap:/escape/"])
        .status
        .success());
    assert!(
        !std::path::Path::new("/tmp").join(&marker).exists(),
        "cp wrote through the symlink to the host"
    );
    assert_eq!(
        text(
            &env.capsa(&["exec", "trap", "cat", &format!("/tmp/{marker}")])
                .stdout
        ),
        "x"
    );
}

#[test]
fn cp_works_on_stopped_containers_and_leaves_no_mount() {
    let env = TestEnv::new();
    assert!(env
        .run(&[
            "--name",
            "gone",
            "busybox",
            "sh",
            "-c",
            "echo kept > /data.txt"
        ])
        .status
        .success());
    let out = env.root().join("data.txt");
    assert!(env
        .capsa(&["cp", "gone:/data.txt", out.to_str().unwrap()])
        .status
        .success());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "kept\n");
    let input = env.root().join("in.txt");
    std::fs::write(&input, "added\n").unwrap();
    assert!(env
        .capsa(&["cp", input.to_str().unwrap(), "gone:/in.txt"])
        .status
        .success());
    assert!(
        env.leftover_mounts().is_empty(),
        "{:?}",
        env.leftover_mounts()
    );
    let again = env.capsa(&["start", "-a", "gone"]);
    assert!(again.status.success());
    assert!(env
        .capsa(&[
            "cp",
            "gone:/in.txt",
            env.root().join("back.txt").to_str().unwrap()
        ])
        .status
        .success());
    assert_eq!(
        std::fs::read_to_string(env.root().join("back.txt")).unwrap(),
        "added\n"
    );
    let bad = env.capsa(&["cp", "/nonexistent-source", "gone:/x"]);
    assert_eq!(bad.status.code(), Some(1));
    let both = env.capsa(&["cp", "gone:/a", "gone:/b"]);
    assert!(text(&both.stderr).contains("exactly one"));
}

/// A tar stream may go on past its end-of-archive blocks (tar writers pad to whole 10 KiB
/// records; some pad more): the container's side stops at the end, the rest is padding,
/// and the copy succeeds (it failed with a broken pipe when the extractor ended first).
#[test]
fn cp_from_a_stream_takes_an_archive_followed_by_padding() {
    let env = TestEnv::new();
    let out = env.run(&["-d", "--name", "pad", "busybox", "sleep", "600"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut archive = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(7);
    header.set_mode(0o644);
    header.set_cksum();
    archive
        .append_data(&mut header, "padded.txt", &b"content"[..])
        .unwrap();
    let mut bytes = archive.into_inner().unwrap();
    bytes.extend(std::iter::repeat_n(0u8, 1 << 20));
    let cp = env.capsa_with_stdin(&["cp", "-", "pad:/tmp"], &bytes);
    assert!(cp.status.success(), "{}", text(&cp.stderr));
    let cat = env.capsa(&["exec", "pad", "cat", "/tmp/padded.txt"]);
    assert_eq!(text(&cat.stdout), "content");
    assert!(env.capsa(&["rm", "-f", "pad"]).status.success());
    env.assert_clean();
}

/// As Docker: `cp` of a stopped container sees its volumes and bind mounts at their places
/// (a job's results collected from its volume after it ended), both ways, and leaves no
/// mount behind.
#[test]
fn cp_of_a_stopped_container_reaches_its_volumes() {
    let env = TestEnv::new();
    let bound = env.root().join("bound");
    std::fs::create_dir(&bound).unwrap();
    let bind = format!("{}:/bound", bound.display());
    let out = env.run(&[
        "--name",
        "job",
        "-v",
        "/results",
        "-v",
        &bind,
        "busybox",
        "sh",
        "-c",
        "echo result > /results/r.txt; echo via-bind > /bound/b.txt",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got = env.root().join("r.txt");
    let cp = env.capsa(&["cp", "job:/results/r.txt", got.to_str().unwrap()]);
    assert!(cp.status.success(), "{}", text(&cp.stderr));
    assert_eq!(std::fs::read_to_string(&got).unwrap(), "result\n");
    let cp = env.capsa(&["cp", "job:/bound/b.txt", "-"]);
    assert!(cp.status.success(), "{}", text(&cp.stderr));
    assert!(
        text(&cp.stdout).contains("via-bind"),
        "{}",
        text(&cp.stdout)
    );
    // Into the volume: the next start reads it there.
    let input = env.root().join("in.txt");
    std::fs::write(&input, "added\n").unwrap();
    let cp = env.capsa(&["cp", input.to_str().unwrap(), "job:/results/in.txt"]);
    assert!(cp.status.success(), "{}", text(&cp.stderr));
    assert!(
        env.leftover_mounts().is_empty(),
        "{:?}",
        env.leftover_mounts()
    );
    let volume = env.inspect(
        "job",
        "{{range .Mounts}}{{if eq .Destination \"/results\"}}{{.Source}}{{end}}{{end}}",
    );
    assert_eq!(
        std::fs::read_to_string(std::path::Path::new(&volume).join("in.txt")).unwrap(),
        "added\n",
        "the file went into the volume {volume}, not under it"
    );
    assert!(env.capsa(&["rm", "-v", "job"]).status.success());
    env.assert_clean();
}

/// Starts an orphan in container `name` (its parent exits at once) and waits until it has
/// finished; returns the zombie count seen then (bounded wait for `expect_zombie`).
fn orphan_zombies(env: &TestEnv, name: &str, expect_zombie: bool) -> usize {
    assert!(env
        .capsa(&["exec", name, "sh", "-c", "(sleep 0.2; touch /done) & exit"])
        .status
        .success());
    eventually("the orphan finished", Duration::from_secs(20), || {
        env.capsa(&["exec", name, "ls", "/done"]).status.success()
    });
    let zombies = || {
        text(&env.capsa(&["exec", name, "ps", "-o", "stat"]).stdout)
            .lines()
            .filter(|l| l.trim().starts_with('Z'))
            .count()
    };
    let mut seen = zombies();
    if expect_zombie {
        eventually("the zombie", Duration::from_secs(20), || {
            seen = zombies();
            seen > 0
        });
    } else {
        eventually("reaped", Duration::from_secs(20), || {
            seen = zombies();
            seen == 0
        });
    }
    seen
}

#[test]
fn init_reaps_orphans_and_passes_signals_on() {
    let env = TestEnv::new();
    // Without --init, `sleep` is PID 1 and never reaps: the orphan stays a zombie.
    assert!(env
        .run(&["-d", "--name", "plain", "busybox", "sleep", "600"])
        .status
        .success());
    assert!(orphan_zombies(&env, "plain", true) > 0);
    // With --init, capsa-init is PID 1 and the workload runs under it.
    assert!(env
        .run(&["-d", "--name", "reaped", "--init", "busybox", "sleep", "600"])
        .status
        .success());
    assert_eq!(orphan_zombies(&env, "reaped", false), 0);
    let ps = text(
        &env.capsa(&["exec", "reaped", "ps", "-o", "pid,comm"])
            .stdout,
    );
    assert!(
        ps.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["1", "capsa-init"]),
        "{ps}"
    );
    // SIGTERM reaches the workload through the reaper: `stop` needs no grace period.
    assert!(env.capsa(&["stop", "-t", "30", "reaped"]).status.success());
    assert!(
        env.ps_line("reaped").contains("Exited (143)"),
        "{}",
        env.ps_line("reaped")
    );
    // Exit codes and exec failures pass through.
    assert_eq!(
        env.run(&["--rm", "--init", "busybox", "sh", "-c", "exit 3"])
            .status
            .code(),
        Some(3)
    );
    assert_eq!(
        env.run(&["--rm", "--init", "busybox", "no-such-tool"])
            .status
            .code(),
        Some(127)
    );
}

/// The names in the tar stream `cp CTR:/ -` writes for container `name`.
fn root_listing(env: &TestEnv, name: &str) -> Vec<String> {
    let out = env.capsa(&["cp", &format!("{name}:/"), "-"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut archive = tar::Archive::new(&out.stdout[..]);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let name = e.unwrap().path().unwrap().to_string_lossy().into_owned();
            format!("./{}", name.trim_start_matches("./"))
        })
        .collect()
}

/// What Docker's copy of a root file system has: the container's files (its /etc, what it
/// wrote), the kernel's views as empty directories.
fn assert_root_copy(names: &[String]) {
    let has = |n: &str| names.iter().any(|x| x.trim_end_matches('/') == n);
    for wanted in [
        "./etc",
        "./etc/passwd",
        "./etc/hosts",
        "./bin/busybox",
        "./tmp/mine",
        "./proc",
        "./sys",
    ] {
        assert!(has(wanted), "{wanted} missing from {names:?}");
    }
    let inside = |dir: &str| {
        names
            .iter()
            .filter(|n| n.starts_with(dir))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(inside("./proc/"), Vec::<String>::new());
    assert_eq!(inside("./sys/"), Vec::<String>::new());
}

#[test]
fn cp_of_the_root_gives_the_containers_file_system() {
    let env = TestEnv::new();
    let out = env.run(&[
        "-d",
        "--name",
        "up",
        "busybox",
        "sh",
        "-c",
        "echo x > /tmp/mine; exec sleep 600",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    capsa_tests::eventually("the file", std::time::Duration::from_secs(10), || {
        env.capsa(&["exec", "up", "test", "-f", "/tmp/mine"])
            .status
            .success()
    });
    assert_root_copy(&root_listing(&env, "up"));
    assert!(env.capsa(&["stop", "-t", "1", "up"]).status.success());
    assert_root_copy(&root_listing(&env, "up"));
}
