//! The json-file log under output without newlines: records are split at 16 KiB as
//! Docker's driver splits them, `logs` joins them back byte for byte, rotation still holds,
//! and the monitor's own memory stays bounded however long the line.

use capsa_tests::{eventually, text, TestEnv};
use std::path::Path;
use std::time::Duration;

/// Most bytes of output in one record (Docker's json-file driver: 16 KiB).
const MAX_RECORD: usize = 16 * 1024;
/// Bytes of newline-free output in the flood.
const FLOOD: usize = 40 << 20;
/// The monitor's peak resident memory must stay below this after the flood (it is a fork
/// of the CLI, about 16 MiB in a debug build; holding the line would add the 40 MiB).
const MONITOR_RSS_LIMIT_KB: u64 = 32 << 10;

/// The `log` field of every record in the log files of `dir` (rotated ones too).
fn records(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("ctr.log") {
            continue;
        }
        let content = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in content.lines() {
            let rec: serde_json::Value = serde_json::from_str(line).expect("a JSON record");
            out.push(rec["log"].as_str().unwrap().to_string());
        }
    }
    out
}

fn container_dir(env: &TestEnv, name: &str) -> std::path::PathBuf {
    let id = env.inspect(name, "{{.Id}}");
    env.root().join("containers").join(id)
}

/// `/proc/PID/status` field `key` in kB.
fn status_kb(pid: i64, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_newline_free_flood_is_split_rotated_and_costs_the_monitor_no_memory() {
    let env = TestEnv::new();
    let script =
        format!("head -c {FLOOD} /dev/zero | tr '\\0' a; printf '\\nflood-done\\n'; sleep 600");
    let out = env.run(&[
        "-d",
        "--name",
        "flood",
        "--network",
        "none",
        "--cpus",
        "0.5",
        "-m",
        "64m",
        "--log-opt",
        "max-size=1m",
        "--log-opt",
        "max-file=2",
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = container_dir(&env, "flood");
    eventually(
        "the flood to reach the log",
        Duration::from_secs(180),
        || std::fs::read_to_string(dir.join("ctr.log")).is_ok_and(|l| l.contains("flood-done")),
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap();
    let monitor = state["monitor_pid"].as_i64().unwrap();
    let peak = status_kb(monitor, "VmHWM:");
    assert!(
        peak < MONITOR_RSS_LIMIT_KB,
        "the monitor peaked at {peak} kB after {} MiB without a newline",
        FLOOD >> 20
    );
    let logs = records(&dir);
    assert!(
        logs.iter().all(|l| l.len() <= MAX_RECORD),
        "a record holds more than 16 KiB"
    );
    assert!(logs
        .iter()
        .any(|l| l.len() == MAX_RECORD && !l.ends_with('\n')));
    for f in ["ctr.log", "ctr.log.1"] {
        let size = std::fs::metadata(dir.join(f)).unwrap().len();
        assert!(size <= 1 << 20, "{f} is {size} bytes, over max-size");
    }
    assert!(!dir.join("ctr.log.2").exists());
    assert!(env.capsa(&["rm", "-f", "flood"]).status.success());
    env.assert_clean();
}

#[test]
fn logs_give_back_the_exact_byte_stream() {
    let env = TestEnv::new();
    // 'x' then 2-byte characters, so a record boundary falls inside one of them; a short
    // line; then a tail without a newline on stderr.
    let script = "printf x; yes é | head -n 20000 | tr -d '\\n'; printf '\\nshort\\n'; \
                  head -c 40000 /dev/zero | tr '\\0' b >&2";
    let out = env.run(&[
        "-d",
        "--name",
        "bytes",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = env.capsa(&["wait", "bytes"]);
    assert_eq!(text(&out.stdout).trim(), "0");
    let mut expected_out = b"x".to_vec();
    expected_out.extend("é".repeat(20_000).as_bytes());
    expected_out.extend_from_slice(b"\nshort\n");
    let expected_err = vec![b'b'; 40_000];
    for follow in [false, true] {
        let args: &[&str] = if follow {
            &["logs", "-f", "bytes"]
        } else {
            &["logs", "bytes"]
        };
        let out = env.capsa(args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(out.stdout == expected_out, "{args:?}: stdout differs");
        assert!(out.stderr == expected_err, "{args:?}: stderr differs");
    }
    let logs = records(&container_dir(&env, "bytes"));
    assert!(logs.iter().all(|l| l.len() <= MAX_RECORD));
    // stdout: the long line in 3 records, then "short"; stderr: 16 + 16 + 7 KB.
    assert_eq!(
        logs.len(),
        7,
        "{:?}",
        logs.iter().map(String::len).collect::<Vec<_>>()
    );
    assert!(env.capsa(&["rm", "bytes"]).status.success());
    env.assert_clean();
}

/// `--log-driver none`: nothing is written anywhere, `logs` refuses in Docker's words, and
/// the output still reaches whoever is attached (`start -a` here, `docker run` below).
#[test]
fn the_none_driver_keeps_nothing_and_attached_clients_still_see_the_output() {
    let env = TestEnv::new();
    let created = env.create(&[
        "--name",
        "quiet",
        "--log-driver",
        "none",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "echo to-out; echo to-err >&2",
    ]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let started = env.capsa(&["start", "-a", "quiet"]);
    assert!(started.status.success(), "{}", text(&started.stderr));
    assert_eq!(text(&started.stdout), "to-out\n");
    assert_eq!(text(&started.stderr), "to-err\n");
    let logs = env.capsa(&["logs", "quiet"]);
    assert_eq!(logs.status.code(), Some(1));
    assert!(
        text(&logs.stderr).contains("configured logging driver does not support reading"),
        "{}",
        text(&logs.stderr)
    );
    let dirs = env.container_dirs();
    assert_eq!(dirs.len(), 1);
    let kept: Vec<_> = std::fs::read_dir(&dirs[0])
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("ctr.log"))
        .collect();
    assert!(kept.is_empty(), "a log file was written: {kept:?}");
    assert_eq!(
        env.inspect("quiet", "{{.HostConfig.LogConfig.Type}}"),
        "none"
    );

    // Through the Docker API: `docker run` prints what it attached to.
    let api = env.serve();
    let out = api.docker_ok(&[
        "run",
        "--rm",
        "--log-driver",
        "none",
        "--network",
        "none",
        "busybox",
        "echo",
        "via-api",
    ]);
    assert_eq!(out, "via-api\n");

    for (flags, why) in [
        (
            &["--log-driver", "none", "--log-opt", "max-size=1m"][..],
            "takes no options",
        ),
        (
            &["--log-driver", "syslog"][..],
            "no log driver named 'syslog'",
        ),
    ] {
        let out = env.run(&[flags, &["--rm", "busybox", "true"][..]].concat());
        assert_eq!(out.status.code(), Some(125), "{flags:?}");
        assert!(
            text(&out.stderr).contains(why),
            "{flags:?}: {}",
            text(&out.stderr)
        );
    }
    assert!(env.capsa(&["rm", "quiet"]).status.success());
    env.assert_clean();
}

/// `--log-driver local`: read back by `logs`, shown as `local`.
#[test]
fn the_local_driver_keeps_the_output_for_logs() {
    let env = TestEnv::new();
    let out = env.run(&[
        "-d",
        "--name",
        "kept",
        "--log-driver",
        "local",
        "--network",
        "none",
        "busybox",
        "echo",
        "kept-line",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&env.capsa(&["wait", "kept"]).stdout).trim(), "0");
    assert_eq!(text(&env.capsa(&["logs", "kept"]).stdout), "kept-line\n");
    assert_eq!(
        env.inspect("kept", "{{.HostConfig.LogConfig.Type}}"),
        "local"
    );
    assert!(env.capsa(&["rm", "kept"]).status.success());
    env.assert_clean();
}
