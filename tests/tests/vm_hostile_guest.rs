//! The VM's host side against a hostile guest. The guest agent is replaced (`CAPSA_AGENT`) by
//! a small static program (vm_hostile_guest/agent.c, compiled here) that speaks the agent
//! protocol well enough to be booted, then does what a guest whose kernel the workload took
//! over can do: flood events instead of answering, write its console without end, answer
//! with megabytes of terminal escapes, stop in the middle of a request. The host must keep
//! its own memory and the files the guest writes through bounded, and stop a VM that breaks
//! the protocol with one clear line. Each test boots a VM (QEMU; TCG here).

use capsa_tests::{run_bounded, text, TestEnv};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

/// The console log keeps its first 64 KiB and its last 256 to 512 KiB (vm/console.rs), plus
/// one line saying how much was left out.
const CONSOLE_LOG_BOUND: u64 = (64 << 10) + (512 << 10) + 100;

/// The hostile agent, compiled once per test binary.
fn hostile_agent() -> &'static Path {
    static AGENT: OnceLock<PathBuf> = OnceLock::new();
    AGENT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("capsa-hostile-agent-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm_hostile_guest/agent.c");
        let binary = dir.join("agent");
        let status = Command::new("gcc")
            .arg(format!(
                "-DPROTOCOL_VERSION=\"{}\"",
                capsa_core::protocol::PROTOCOL_VERSION
            ))
            .args(["-static", "-O2", "-Wall", "-o"])
            .arg(&binary)
            .arg(&source)
            .status()
            .expect("run gcc (build-essential, installed by scripts/setup.sh)");
        assert!(status.success(), "gcc {}", source.display());
        binary
    })
}

/// A memory cgroup of its own for the `capsa` process (the VM's monitor when it runs in the
/// foreground): the jailed engine leaves it for its own cgroup, so what it counts is the
/// monitor's memory. Its limit stands where the old monitor, queueing every event, went far
/// past; a monitor killed there exits by SIGKILL, not with a recorded error.
struct MonitorCgroup {
    dir: PathBuf,
}

impl MonitorCgroup {
    fn new(env: &TestEnv, limit: u64) -> MonitorCgroup {
        let name = format!("{}-monitor", env.cgroup_parent().trim_start_matches('/'));
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let dir = if v2 {
            Path::new("/sys/fs/cgroup").join(name)
        } else {
            Path::new("/sys/fs/cgroup/memory").join(name)
        };
        std::fs::create_dir_all(&dir).unwrap();
        let knob = if v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        std::fs::write(dir.join(knob), limit.to_string()).unwrap();
        if v2 {
            let _ = std::fs::write(dir.join("memory.swap.max"), "0");
        }
        MonitorCgroup { dir }
    }

    /// `capsa ARGS` run in this cgroup with the hostile agent.
    fn capsa(&self, env: &TestEnv, args: &[&str]) -> Output {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "echo $$ > {} && exec {} \"$@\"",
                self.dir.join("cgroup.procs").display(),
                env.shell_prefix()
            ))
            .arg("sh")
            .args(args)
            .env("CAPSA_AGENT", hostile_agent());
        run_bounded(cmd, Duration::from_secs(120))
    }
}

impl Drop for MonitorCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `capsa run --isolation vm` with the hostile agent as the guest's /init.
fn hostile_run(env: &TestEnv, args: &[&str]) -> Output {
    let mut all = vec![
        "run",
        "--cgroup-parent",
        env.cgroup_parent(),
        "--isolation",
        "vm",
        "--network",
        "none",
    ];
    all.extend_from_slice(args);
    env.capsa_env(&all, &[("CAPSA_AGENT", hostile_agent().to_str().unwrap())])
}

fn console_log(env: &TestEnv, name: &str) -> PathBuf {
    let id = env.inspect(name, "{{.Id}}");
    env.root()
        .join("containers")
        .join(id)
        .join("vm/console.log")
}

#[test]
fn a_guest_that_floods_events_instead_of_answering_is_stopped_with_its_reason_in_bounded_memory() {
    let env = TestEnv::new();
    let cgroup = MonitorCgroup::new(&env, 160 << 20);
    let out = cgroup.capsa(
        &env,
        &[
            "run",
            "--cgroup-parent",
            env.cgroup_parent(),
            "--isolation",
            "vm",
            "--network",
            "none",
            "--name",
            "flood",
            "busybox",
            "flood-events",
        ],
    );
    let stderr = text(&out.stderr);
    // Not killed by the cgroup's OOM killer: it ended the VM itself, with the reason.
    assert_eq!(out.status.code(), Some(125), "{:?}: {stderr}", out.status);
    let reason = "broke the agent protocol: it sent more than 8 MiB of events";
    assert!(stderr.contains("VM flood ("), "{stderr}");
    assert!(stderr.contains(reason), "{stderr}");
    let error = env.inspect("flood", "{{.State.Error}}");
    assert!(
        error.contains(reason) && error.contains("the VM was stopped"),
        "{error}"
    );
    assert!(!error.contains('\n'), "one line: {error}");
    assert!(
        env.ps_line("flood").contains("Exited (125)"),
        "{}",
        env.ps_line("flood")
    );
    assert!(env.capsa(&["rm", "flood"]).status.success());
    drop(cgroup);
    env.assert_clean();
}

#[test]
fn a_guest_that_writes_its_console_without_end_leaves_a_bounded_log_with_its_start_and_end() {
    let env = TestEnv::new();
    // The guest writes 2 MiB to its serial console, between two marker lines.
    let out = hostile_run(&env, &["--name", "noisy", "busybox", "flood-console"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = console_log(&env, "noisy");
    let size = std::fs::metadata(&log).unwrap().len();
    assert!(size <= CONSOLE_LOG_BOUND, "console.log is {size} bytes");
    let content = text(&std::fs::read(&log).unwrap());
    assert!(
        content.contains("HOSTILE-CONSOLE-START"),
        "the boot is kept"
    );
    assert!(
        content.contains("HOSTILE-CONSOLE-END"),
        "the latest is kept"
    );
    let left_out = content
        .split_once("[capsa: ")
        .and_then(|(_, rest)| rest.split_once(" bytes left out here]"))
        .map(|(n, _)| n.parse::<u64>().unwrap())
        .expect("the log says what it left out");
    assert!(left_out > (1 << 20), "{left_out} bytes left out");
    assert!(env.capsa(&["rm", "noisy"]).status.success());
    env.assert_clean();
}

#[test]
fn a_guest_error_of_a_megabyte_of_escapes_is_recorded_as_one_short_line() {
    let env = TestEnv::new();
    let out = hostile_run(&env, &["--name", "liar", "busybox", "error-text"]);
    assert_eq!(out.status.code(), Some(125));
    let stderr = text(&out.stderr);
    assert!(stderr.len() < 4096, "{} bytes on stderr", stderr.len());
    assert!(stderr.contains("HOSTILE-ERROR"), "{stderr}");
    let error = env.inspect("liar", "{{.State.Error}}");
    assert!(error.len() < 2048, "a {}-byte error", error.len());
    assert!(error.contains("HOSTILE-ERROR"), "{error}");
    assert!(!error.chars().any(char::is_control), "{error:?}");
    assert!(env.capsa(&["rm", "liar"]).status.success());
    env.assert_clean();
}

#[test]
fn a_guest_that_stops_at_create_shows_its_console_through_the_drained_log() {
    let env = TestEnv::new();
    let out = hostile_run(&env, &["--rm", "busybox", "die"]);
    assert_eq!(out.status.code(), Some(125));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("guest console:"), "{stderr}");
    assert!(stderr.contains("HOSTILE-LAST-WORDS"), "{stderr}");
    env.assert_clean();
}
