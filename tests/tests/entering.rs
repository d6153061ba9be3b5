//! Processes that enter a container (`exec`, the `--init` PID 1) as an attacker inside the
//! container sees them: no ptrace before their own execve, and nothing of the host in
//! /proc (the caller's argv and environment, the host's capsa binary). The attacker is a
//! small static C program (entering/attacker.c) compiled here and mounted read-only.

use capsa_tests::{capsa_bin, eventually, text, TestEnv};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// What capsa's environment carries for the attacker to look for.
const SECRET: &str = "CAPSA_TEST_SECRET=entering-5f3a9c";
/// How many `exec`s the attacker watches.
const EXECS: usize = 100;

/// The directory holding the compiled attacker, once per test binary.
fn attacker_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("capsa-attacker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/entering/attacker.c");
        let status = Command::new("gcc")
            .args(["-static", "-O2", "-Wall", "-o"])
            .arg(dir.join("attacker"))
            .arg(&source)
            .status()
            .expect("run gcc (build-essential, installed by scripts/setup.sh)");
        assert!(status.success(), "gcc {}", source.display());
        dir
    })
}

/// The attacker's arguments after its mode: the host capsa binary's device and inode, the
/// argv marker (this test's state root, on every capsa command line) and the env marker.
fn markers(env: &TestEnv) -> Vec<String> {
    let host = std::fs::metadata(capsa_bin()).unwrap();
    vec![
        host.dev().to_string(),
        host.ino().to_string(),
        env.root().display().to_string(),
        SECRET.to_string(),
    ]
}

fn secret_env() -> [(&'static str, &'static str); 1] {
    let (key, value) = SECRET.split_once('=').unwrap();
    [(key, value)]
}

/// `key=N` of the attacker's summary line.
fn count(summary: &str, key: &str) -> u64 {
    summary
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {summary:?}"))
}

/// Runs the attacker as the container's main process while `capsa exec` runs EXECS times
/// (each exec'd shell waits until the attacker has seen it run busybox), and returns its
/// summary line.
fn watch_execs(env: &TestEnv, extra: &[&str], try_ptrace: bool) -> String {
    let volume = format!("{}:/x:ro", attacker_dir().display());
    let marks = markers(env);
    let mut args = vec!["-d", "--name", "victim", "-v", &volume];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["busybox", "/x/attacker", "watch"]);
    args.extend(marks.iter().map(String::as_str));
    args.push(if try_ptrace { "1" } else { "0" });
    let out = env.run(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for n in 0..EXECS {
        let out = env.capsa_env(
            &[
                "exec",
                "victim",
                "sh",
                "-c",
                "until [ -e /tmp/seen/$$ ]; do :; done",
            ],
            &secret_env(),
        );
        assert!(out.status.success(), "exec {n}: {}", text(&out.stderr));
    }
    // Detached: the watcher, the container's PID 1, ends as soon as /tmp/stop exists, and
    // with it every process of the container, this exec's own capsa-init among them.
    let out = env.capsa(&["exec", "-d", "victim", "touch", "/tmp/stop"]);
    assert!(out.status.success(), "exec -d touch: {}", text(&out.stderr));
    let waited = env.capsa(&["wait", "victim"]);
    assert_eq!(text(&waited.stdout).trim(), "0", "{}", text(&waited.stderr));
    let logs = text(&env.capsa(&["logs", "victim"]).stdout);
    let summary = logs
        .lines()
        .find(|l| l.starts_with("summary "))
        .unwrap_or_else(|| panic!("no summary in the attacker's output: {logs}"))
        .to_string();
    assert!(
        count(&summary, "workloads") >= EXECS as u64,
        "the attacker saw every exec'd command run: {summary}"
    );
    summary
}

#[test]
fn exec_children_cannot_be_traced_and_show_nothing_of_the_host() {
    let env = TestEnv::new();
    let summary = watch_execs(&env, &[], true);
    for leak in ["attached", "cmdline", "environ", "exe"] {
        assert_eq!(count(&summary, leak), 0, "{leak}: {summary}");
    }
}

#[test]
fn exec_children_show_nothing_of_the_host_even_to_cap_sys_ptrace() {
    let env = TestEnv::new();
    // With CAP_SYS_PTRACE the container may trace its own processes, non-dumpable or not:
    // what it finds there must still be nothing of the host.
    let summary = watch_execs(&env, &["--cap-add", "SYS_PTRACE"], false);
    for leak in ["cmdline", "environ", "exe"] {
        assert_eq!(count(&summary, leak), 0, "{leak}: {summary}");
    }
}

/// `key=value` of the attacker's pid1 report.
fn field<'a>(report: &'a str, key: &str) -> &'a str {
    report
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {report}"))
}

/// Starts `sleep 600` under `--init` with `extra` flags (capsa's environment carrying the
/// secret) and returns what the attacker, exec'd beside it, finds in /proc/1.
fn inspect_init(env: &TestEnv, name: &str, extra: &[&str]) -> String {
    let volume = format!("{}:/x:ro", attacker_dir().display());
    let mut args = vec!["run", "--cgroup-parent", env.cgroup_parent()];
    args.extend_from_slice(&["-d", "--init", "--name", name, "-v", &volume]);
    args.extend_from_slice(extra);
    args.extend_from_slice(&["busybox", "sleep", "600"]);
    let out = env.capsa_env(&args, &secret_env());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let marks = markers(env);
    let mut args = vec!["exec", name, "/x/attacker", "pid1"];
    args.extend(marks.iter().map(String::as_str));
    let out = env.capsa(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn the_init_is_its_own_program_with_a_clean_argv_and_environment() {
    let env = TestEnv::new();
    let report = inspect_init(&env, "plain", &[]);
    assert_eq!(field(&report, "cmdline_leak"), "0", "{report}");
    assert_eq!(
        field(&report, "cmdline").trim_end(),
        "capsa-init -- sleep 600",
        "{report}"
    );
    assert_eq!(field(&report, "comm"), "capsa-init", "{report}");
    assert_eq!(field(&report, "environ_leak"), "0", "{report}");
    assert_eq!(field(&report, "exe_host"), "0", "{report}");

    // CAP_SYS_PTRACE opens /proc/1/environ and exe: the workload's environment, and a
    // sealed in-memory program that cannot be written, now or once it has stopped.
    let report = inspect_init(&env, "traceable", &["--cap-add", "SYS_PTRACE"]);
    assert_eq!(field(&report, "environ_readable"), "1", "{report}");
    assert_eq!(field(&report, "environ_leak"), "0", "{report}");
    assert_eq!(field(&report, "exe_host"), "0", "{report}");
    assert_eq!(field(&report, "exe_writable"), "0", "{report}");
    assert_eq!(field(&report, "exe_reopened_writable"), "0", "{report}");
    assert_eq!(field(&report, "exe_sealed"), "1", "{report}");
}

#[test]
fn the_init_passes_signals_and_statuses_through() {
    let env = TestEnv::new();
    // A user signal reaches the workload, whose exit code becomes the container's.
    let script = "trap 'echo got-usr1; exit 7' USR1; touch /tmp/trapped; sleep 600 & wait";
    let out = env.run(&[
        "-d", "--init", "--name", "usr1", "busybox", "sh", "-c", script,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    eventually("the trap is set", Duration::from_secs(30), || {
        env.capsa(&["exec", "usr1", "test", "-e", "/tmp/trapped"])
            .status
            .success()
    });
    assert!(env.capsa(&["kill", "-s", "USR1", "usr1"]).status.success());
    let waited = env.capsa(&["wait", "usr1"]);
    assert_eq!(text(&waited.stdout).trim(), "7", "{}", text(&waited.stderr));
    assert!(text(&env.capsa(&["logs", "usr1"]).stdout).contains("got-usr1"));

    // `stop`'s SIGTERM reaches it too: killed by it, 128 + 15.
    let out = env.run(&["-d", "--init", "--name", "term", "busybox", "sleep", "600"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(env.capsa(&["stop", "-t", "30", "term"]).status.success());
    assert_eq!(env.inspect("term", "{{.State.ExitCode}}"), "143");

    // Exit codes, and exec failures found before the start gate closes.
    let code = |args: &[&str]| env.run(args).status.code();
    assert_eq!(
        code(&["--rm", "--init", "busybox", "sh", "-c", "exit 3"]),
        Some(3)
    );
    let missing = env.run(&["--rm", "--init", "busybox", "no-such-tool"]);
    assert_eq!(missing.status.code(), Some(127));
    assert!(text(&missing.stderr).contains("no-such-tool"));
    assert_eq!(
        code(&["--rm", "--init", "busybox", "/etc/passwd"]),
        Some(126)
    );
}

#[test]
fn exec_passes_signals_and_statuses_through() {
    let env = TestEnv::new();
    let out = env.run(&["-d", "--name", "ctr", "busybox", "sleep", "600"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let code = |args: &[&str]| env.capsa(args).status.code();
    assert_eq!(code(&["exec", "ctr", "sh", "-c", "exit 5"]), Some(5));
    assert_eq!(
        code(&["exec", "ctr", "sh", "-c", "kill -TERM $$"]),
        Some(143)
    );
    assert_eq!(code(&["exec", "ctr", "no-such-tool"]), Some(127));
    assert_eq!(code(&["exec", "ctr", "/etc/passwd"]), Some(126));
    // The exec'd command is the container's; its parent (capsa-init) is outside.
    let script = "echo $PPID; tr '\\0' ' ' < /proc/$$/cmdline; echo";
    let out = env.capsa(&["exec", "ctr", "sh", "-c", script]);
    assert_eq!(text(&out.stdout), format!("0\nsh -c {script} \n"));
}

#[test]
fn the_init_reaps_and_exits_with_the_workloads_code_in_a_vm() {
    let env = TestEnv::new();
    // The orphan (sleep 0, whose shell is gone) is PID 1's to reap.
    let script = "sh -c 'sleep 0 &'; while ps -o stat | grep -q '^Z'; do :; done; \
                  echo reaped; tr '\\0' ' ' < /proc/1/cmdline; echo; cat /proc/1/comm; exit 5";
    let out = env.run(&[
        "--rm",
        "--isolation",
        "vm",
        "--init",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{stdout}{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "reaped", "{stdout}");
    assert!(
        lines[1].starts_with("capsa-init -- sh -c "),
        "PID 1 in the guest: {stdout}"
    );
    assert_eq!(lines[2], "capsa-init", "{stdout}");
}

#[test]
fn a_missing_init_program_is_named() {
    let env = TestEnv::new();
    let out = env.run(&["-d", "--name", "ctr", "busybox", "sleep", "600"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The same capsa, in a directory without capsa-init-static beside it.
    let lonely = tempfile::tempdir().unwrap();
    let bin = lonely.path().join("capsa");
    if std::fs::hard_link(capsa_bin(), &bin).is_err() {
        std::fs::copy(capsa_bin(), &bin).unwrap();
    }
    let missing = lonely.path().join("capsa-init-static");
    let capsa = |args: &[&str]| {
        let mut c = env.host_command("nsenter");
        c.arg(&bin).arg("--root").arg(env.root()).args(args);
        capsa_tests::run_bounded(c, Duration::from_secs(60))
    };
    // run's engine errors exit 125, exec's 1 (as Docker's).
    let run = [
        "run",
        "--rm",
        "--cgroup-parent",
        env.cgroup_parent(),
        "--init",
        "busybox",
        "true",
    ];
    for (args, code) in [(&run[..], 125), (&["exec", "ctr", "true"][..], 1)] {
        let out = capsa(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&missing.display().to_string()),
            "{args:?}: {stderr}"
        );
    }
    // Nothing of the refused run is left.
    let ps = text(&env.capsa(&["ps", "-a", "-q"]).stdout);
    assert_eq!(ps.lines().count(), 1, "{ps}");
}

/// `exec --privileged` gives that command every capability, and nothing in the container
/// gains from it: the container's own processes cannot read the privileged one's memory or
/// environment (its capabilities are no subset of theirs), and a plain exec stays plain.
#[test]
fn a_privileged_exec_is_privileged_alone_and_out_of_the_containers_reach() {
    let env = TestEnv::new();
    let name = "privexec";
    let out = env.run(&["-d", "--name", name, "busybox", "sleep", "600"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cap_eff = |flags: &[&str]| {
        let mut args = vec!["exec"];
        args.extend_from_slice(flags);
        args.extend([name, "grep", "CapEff", "/proc/self/status"]);
        let out = env.capsa(&args);
        let line = text(&out.stdout);
        u64::from_str_radix(line.trim().trim_start_matches("CapEff:").trim(), 16)
            .unwrap_or_else(|_| panic!("{line} {}", text(&out.stderr)))
    };
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    const FIND_SLEEP: &str = "ps -o pid,args | grep '[s]leep 4321' | awk '{print $1}'";
    assert_eq!(cap_eff(&[]) & CAP_SYS_ADMIN, 0);
    assert_ne!(cap_eff(&["--privileged"]) & CAP_SYS_ADMIN, 0);
    let out = env.capsa(&[
        "exec",
        "-d",
        "--privileged",
        "-e",
        SECRET,
        name,
        "sleep",
        "4321",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut pid = String::new();
    eventually("the privileged sleep runs", Duration::from_secs(20), || {
        pid = text(&env.capsa(&["exec", name, "sh", "-c", FIND_SLEEP]).stdout)
            .trim()
            .to_string();
        !pid.is_empty()
    });
    // The same reads of the container's own unprivileged init work: what stops them above is
    // the privileged process's capabilities.
    let out = env.capsa(&["exec", name, "cat", "/proc/1/environ", "/proc/1/maps"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for file in ["environ", "mem", "maps"] {
        let out = env.capsa(&["exec", name, "cat", &format!("/proc/{pid}/{file}")]);
        assert!(!out.status.success(), "{file} was readable");
        assert!(!text(&out.stdout).contains("entering-5f3a9c"), "{file}");
    }
    assert_eq!(cap_eff(&[]) & CAP_SYS_ADMIN, 0, "a plain exec after it");
    env.capsa(&["rm", "-f", name]);
    env.assert_clean();
}
