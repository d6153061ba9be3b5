//! Healthchecks as Docker runs them: `--health-*` flags, the image's HEALTHCHECK,
//! `--no-healthcheck`, and the API's `Config.Healthcheck`; the result in `inspect`
//! (`State.Health`), `ps` (`Up ... (healthy)`, `--filter health=`) and `events`; a check
//! that never returns is killed at its timeout; the prober goes with its container.

use capsa_tests::{busybox_tarball, eventually, text, TestEnv};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bound on waiting for a check's result (checks every 200 ms; a loaded CI machine).
const LIMIT: Duration = Duration::from_secs(60);

fn run_ok(env: &TestEnv, args: &[&str]) -> String {
    let out = env.run(args);
    assert!(out.status.success(), "run {args:?}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// `State.Health.Status` of `name`, `none` when it has no `State.Health` (as Docker's, a
/// template naming it then fails: `map has no entry for key "Health"`).
fn health(env: &TestEnv, name: &str) -> String {
    let state: Value = serde_json::from_str(&env.inspect(name, "{{json .State}}")).unwrap();
    state["Health"]["Status"]
        .as_str()
        .unwrap_or("none")
        .to_string()
}

/// `State.Health` of `name` (the CLI shows control characters escaped: `\n` as `\\n`).
fn health_json(env: &TestEnv, name: &str) -> Value {
    serde_json::from_str(&env.inspect(name, "{{json .State.Health}}")).unwrap()
}

fn wait_health(env: &TestEnv, name: &str, want: &str) {
    eventually(&format!("{name} is {want}"), LIMIT, || {
        health(env, name) == want
    });
}

/// PIDs of the probers (`capsa health <short id>`) of container `id`.
fn probers(id: &str) -> Vec<u32> {
    let want = format!("capsa\0health\0{}", &id[..12]);
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).starts_with(&want))
        })
        .collect()
}

/// Host processes `sleep 6061` (the hanging check) that are alive (not zombies).
fn live_checks() -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == b"sleep\x006061\x00")
                && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                    !s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
        })
        .count()
}

fn names_with(env: &TestEnv, filter: &str) -> String {
    let out = env.capsa(&["ps", "-a", "--filter", filter, "--format", "{{.Names}}"]);
    assert!(out.status.success(), "ps: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_passing_check_makes_the_container_healthy_and_its_prober_goes_with_it() {
    let env = TestEnv::new();
    let since = now().to_string();
    let id = run_ok(
        &env,
        &[
            "-d",
            "--network",
            "none",
            "--name",
            "ok",
            "--health-cmd",
            "echo fine",
            "--health-interval",
            "200ms",
            "busybox",
            "sleep",
            "300",
        ],
    );
    let plain = run_ok(
        &env,
        &[
            "-d",
            "--network",
            "none",
            "--name",
            "plain",
            "busybox",
            "sleep",
            "300",
        ],
    );
    wait_health(&env, "ok", "healthy");
    assert_eq!(
        env.inspect("ok", "{{json .Config.Healthcheck.Test}}"),
        r#"["CMD-SHELL","echo fine"]"#
    );
    assert_eq!(env.inspect("ok", "{{.State.Health.FailingStreak}}"), "0");
    let log = &health_json(&env, "ok")["Log"][0];
    assert_eq!(
        (&log["ExitCode"], &log["Output"]),
        (&json!(0), &json!("fine\\n")),
        "{log}"
    );
    assert!(
        env.ps_line("ok").contains("(healthy)"),
        "{}",
        env.ps_line("ok")
    );
    assert!(
        !env.ps_line("plain").contains("health"),
        "{}",
        env.ps_line("plain")
    );
    assert_eq!(names_with(&env, "health=healthy"), "ok");
    assert_eq!(names_with(&env, "health=none"), "plain");
    assert_eq!(names_with(&env, "health=unhealthy"), "");
    assert_eq!(health(&env, "plain"), "none");
    let events = text(
        &env.capsa(&[
            "events",
            "--since",
            &since,
            "--until",
            &(now() + 1).to_string(),
            "--filter",
            "container=ok",
            "--format",
            "{{.Action}}",
        ])
        .stdout,
    );
    assert!(events.contains("health_status: healthy"), "{events}");

    // One prober for the container with a check, none for the one without.
    assert_eq!(probers(&id).len(), 1, "prober of ok");
    assert!(
        probers(&plain).is_empty(),
        "a container without a check has a prober"
    );
    let out = env.capsa(&["rm", "-f", "ok", "plain"]);
    assert!(out.status.success(), "rm: {}", text(&out.stderr));
    // In the monitor's cgroup, the prober is killed with it: gone when rm returns.
    assert!(probers(&id).is_empty(), "a prober outlived rm -f");
    env.assert_clean();
}

#[test]
fn a_failing_check_turns_unhealthy_after_its_retries_and_stop_ends_the_prober() {
    let env = TestEnv::new();
    let id = run_ok(
        &env,
        &[
            "-d",
            "--network",
            "none",
            "--name",
            "bad",
            "--health-cmd",
            "echo broken; exit 3",
            "--health-interval",
            "200ms",
            "--health-retries",
            "2",
            "busybox",
            "sleep",
            "300",
        ],
    );
    wait_health(&env, "bad", "unhealthy");
    let streak: u32 = env
        .inspect("bad", "{{.State.Health.FailingStreak}}")
        .parse()
        .unwrap();
    assert!(streak >= 2, "streak {streak}");
    let log = health_json(&env, "bad")["Log"].clone();
    for entry in log.as_array().unwrap().iter().take(2) {
        assert_eq!(entry["ExitCode"], 3, "{log}");
        assert_eq!(entry["Output"], "broken\\n", "{log}");
    }
    assert!(
        env.ps_line("bad").contains("(unhealthy)"),
        "{}",
        env.ps_line("bad")
    );
    assert_eq!(names_with(&env, "health=unhealthy"), "bad");

    assert_eq!(probers(&id).len(), 1);
    let out = env.capsa(&["stop", "-t", "1", "bad"]);
    assert!(out.status.success(), "stop: {}", text(&out.stderr));
    eventually("the prober has ended with the container", LIMIT, || {
        probers(&id).is_empty()
    });
    let out = env.capsa(&["rm", "bad"]);
    assert!(out.status.success(), "rm: {}", text(&out.stderr));
    env.assert_clean();
}

#[test]
fn a_restarted_container_is_checked_again_by_a_new_prober() {
    let env = TestEnv::new();
    // Exits at once the first time; the restart runs on.
    let script = "[ -e /again ] && exec sleep 300; touch /again; exit 1";
    let id = run_ok(
        &env,
        &[
            "-d",
            "--network",
            "none",
            "--name",
            "again",
            "--restart",
            "always",
            "--health-cmd",
            "true",
            "--health-interval",
            "200ms",
            "busybox",
            "sh",
            "-c",
            script,
        ],
    );
    eventually("the restarted container is healthy", LIMIT, || {
        env.inspect("again", "{{.RestartCount}}") == "1" && health(&env, "again") == "healthy"
    });
    // The restart's prober (forked by the monitor), not the first run's.
    assert_eq!(probers(&id).len(), 1);
    let out = env.capsa(&["rm", "-f", "again"]);
    assert!(out.status.success(), "rm: {}", text(&out.stderr));
    eventually("the prober has gone", LIMIT, || probers(&id).is_empty());
    env.assert_clean();
}

#[test]
fn a_check_that_never_returns_is_killed_at_its_timeout() {
    let env = TestEnv::new();
    let id = run_ok(
        &env,
        &[
            "-d",
            "--network",
            "none",
            "--name",
            "hangs",
            "--health-cmd",
            "sleep 6061",
            "--health-interval",
            "200ms",
            "--health-timeout",
            "300ms",
            "--health-retries",
            "1",
            "busybox",
            "sleep",
            "300",
        ],
    );
    wait_health(&env, "hangs", "unhealthy");
    let first = &health_json(&env, "hangs")["Log"][0];
    assert_eq!(first["ExitCode"], -1, "{first}");
    assert_eq!(first["Output"], "Health check exceeded timeout (300ms)");
    // Each check was killed: once three have ended, at most the one running now is alive.
    eventually("three checks have ended", LIMIT, || {
        env.inspect("hangs", "{{len .State.Health.Log}}")
            .parse::<usize>()
            .is_ok_and(|n| n >= 3)
    });
    let live = live_checks();
    assert!(live <= 1, "{live} checks outlived their timeout");
    let out = env.capsa(&["rm", "-f", "hangs"]);
    assert!(out.status.success(), "rm: {}", text(&out.stderr));
    eventually("the prober has gone", LIMIT, || probers(&id).is_empty());
    eventually("no check is left", LIMIT, || live_checks() == 0);
    env.assert_clean();
}

#[test]
fn the_images_healthcheck_runs_unless_overridden_or_disabled() {
    let env = TestEnv::new();
    let tar = busybox_tarball().to_str().unwrap().to_string();
    let out = env.capsa(&[
        "import",
        "-c",
        "ENV PATH=/bin",
        "-c",
        "HEALTHCHECK --interval=200ms --retries=1 CMD test -e /ready",
        &tar,
        "checked",
    ]);
    assert!(out.status.success(), "import: {}", text(&out.stderr));

    let script = "touch /ready; exec sleep 300";
    run_ok(
        &env,
        &[
            "-d",
            "--network",
            "none",
            "--name",
            "img",
            "checked",
            "sh",
            "-c",
            script,
        ],
    );
    wait_health(&env, "img", "healthy");
    let config: Value =
        serde_json::from_str(&env.inspect("img", "{{json .Config.Healthcheck}}")).unwrap();
    assert_eq!(
        config,
        json!({"Test": ["CMD-SHELL", "test -e /ready"], "Interval": 200000000, "Retries": 1})
    );

    // --health-cmd replaces the image's test; its interval and retries are inherited.
    run_ok(
        &env,
        &[
            "-d",
            "--network",
            "none",
            "--name",
            "over",
            "--health-cmd",
            "exit 1",
            "checked",
            "sh",
            "-c",
            script,
        ],
    );
    wait_health(&env, "over", "unhealthy");
    assert_eq!(
        env.inspect("over", "{{.State.Health.FailingStreak}}"),
        "1",
        "retries 1 comes from the image"
    );

    let off = run_ok(
        &env,
        &[
            "-d",
            "--network",
            "none",
            "--name",
            "off",
            "--no-healthcheck",
            "checked",
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!(health(&env, "off"), "none");
    assert_eq!(
        env.inspect("off", "{{json .Config.Healthcheck.Test}}"),
        r#"["NONE"]"#
    );
    assert!(probers(&off).is_empty(), "--no-healthcheck still probes");
    assert!(
        !env.ps_line("off").contains("health"),
        "{}",
        env.ps_line("off")
    );
    let out = env.capsa(&["rm", "-f", "img", "over", "off"]);
    assert!(out.status.success(), "rm: {}", text(&out.stderr));
    env.assert_clean();
}

#[test]
fn bad_healthcheck_flags_are_refused_with_one_line_and_leave_nothing() {
    let env = TestEnv::new();
    for (flags, message) in [
        (
            &["--health-cmd", "true", "--health-interval", "-1s"][..],
            "--health-interval cannot be negative",
        ),
        (
            &["--health-cmd", "true", "--health-timeout", "500us"][..],
            "Timeout in Healthcheck cannot be less than 1ms",
        ),
        (
            &["--health-cmd", "true", "--health-retries", "-1"][..],
            "--health-retries cannot be negative",
        ),
        (
            &["--no-healthcheck", "--health-cmd", "true"][..],
            "--no-healthcheck conflicts with --health-* options",
        ),
    ] {
        let mut args = vec!["-d", "--network", "none"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["busybox", "sleep", "300"]);
        let out = env.run(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{flags:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{flags:?}: {err}");
        assert!(err.contains(message), "{flags:?}: {err}");
    }
    let out = env.capsa(&[
        "import",
        "-c",
        "HEALTHCHECK --interval=-2s CMD true",
        busybox_tarball().to_str().unwrap(),
        "bad",
    ]);
    assert!(
        !out.status.success(),
        "a bad HEALTHCHECK change was imported"
    );
    env.assert_clean();
}

#[test]
fn the_docker_cli_runs_a_healthcheck_through_the_api() {
    let env = TestEnv::new();
    let api = env.serve();
    api.docker_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "none",
        "--health-cmd",
        "true",
        "--health-interval",
        "200ms",
        "busybox",
        "sleep",
        "300",
    ]);
    eventually("docker inspect says healthy", LIMIT, || {
        api.docker_ok(&["inspect", "--format", "{{.State.Health.Status}}", "web"])
            .trim()
            == "healthy"
    });
    let status = api.docker_ok(&[
        "ps",
        "--format",
        "{{.Status}}",
        "--filter",
        "health=healthy",
    ]);
    assert!(status.trim().ends_with("(healthy)"), "{status}");
    let test = api.docker_ok(&[
        "inspect",
        "--format",
        "{{json .Config.Healthcheck.Test}}",
        "web",
    ]);
    assert_eq!(test.trim(), r#"["CMD-SHELL","true"]"#);

    let out = api.docker(&[
        "run",
        "-d",
        "--network",
        "none",
        "--health-cmd",
        "true",
        "--health-interval",
        "500us",
        "busybox",
        "true",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Interval in Healthcheck cannot be less than 1ms"),
        "{}",
        text(&out.stderr)
    );
    api.docker_ok(&["rm", "-f", "web"]);
    env.assert_clean();
}

#[test]
fn a_vm_container_takes_the_images_healthcheck_unless_disabled() {
    let env = TestEnv::new();
    let tar = busybox_tarball().to_str().unwrap().to_string();
    let out = env.capsa(&[
        "import",
        "-c",
        "ENV PATH=/bin",
        "-c",
        "HEALTHCHECK --interval=200ms CMD true",
        &tar,
        "checked",
    ]);
    assert!(out.status.success(), "import: {}", text(&out.stderr));
    // A foreground VM run with the image's check (its prober follows the run).
    let out = env.run(&[
        "--rm",
        "--isolation",
        "vm",
        "--network",
        "none",
        "checked",
        "echo",
        "booted",
    ]);
    assert!(out.status.success(), "run: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "booted");
    let out = env.create(&[
        "--isolation",
        "vm",
        "--network",
        "none",
        "--name",
        "vm",
        "--no-healthcheck",
        "checked",
        "true",
    ]);
    assert!(out.status.success(), "create: {}", text(&out.stderr));
    assert_eq!(health(&env, "vm"), "none");
    let out = env.create(&[
        "--isolation",
        "vm",
        "--network",
        "none",
        "--name",
        "vm-checked",
        "checked",
        "true",
    ]);
    assert!(out.status.success(), "create: {}", text(&out.stderr));
    assert_eq!(
        env.inspect("vm-checked", "{{json .Config.Healthcheck.Test}}"),
        r#"["CMD-SHELL","true"]"#
    );
    assert!(env.capsa(&["rm", "vm-checked"]).status.success());
    assert_eq!(
        env.inspect("vm", "{{json .Config.Healthcheck.Test}}"),
        r#"["NONE"]"#
    );
    assert!(env.capsa(&["rm", "vm"]).status.success());
    env.assert_clean();
}
