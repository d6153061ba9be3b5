//! `capsa serve`'s streaming container endpoints, driven by the real docker CLI and by raw
//! requests: logs, attach (hijacked, attached before the start), exec, stats, archive
//! (`docker cp`), export, resize.

use capsa_tests::api::ApiServer;
use capsa_tests::{eventually, text, TestEnv, Tmux};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::Duration;

/// A detached container started with the capsa CLI (the same state the server serves).
fn run_detached(env: &TestEnv, args: &[&str]) -> String {
    let mut all = vec!["-d", "--network", "none"];
    all.extend_from_slice(args);
    let out = env.run(&all);
    assert!(out.status.success(), "run: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// A container created (not started) with the capsa CLI.
fn create(env: &TestEnv, args: &[&str]) -> String {
    let mut all = vec!["create", "--network", "none", "--cgroup-parent"];
    all.push(env.cgroup_parent());
    all.extend_from_slice(args);
    let out = env.capsa(&all);
    assert!(out.status.success(), "create: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// Splits Docker's multiplexed stream into stdout and stderr; panics on a torn frame.
fn demux(mut raw: &[u8]) -> (String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while !raw.is_empty() {
        assert!(raw.len() >= 8, "a torn frame header: {raw:?}");
        let len = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]) as usize;
        assert_eq!(&raw[1..4], &[0, 0, 0], "frame header {:?}", &raw[..8]);
        let data = &raw[8..8 + len];
        match raw[0] {
            1 => out.extend_from_slice(data),
            2 => err.extend_from_slice(data),
            other => panic!("stream type {other}"),
        }
        raw = &raw[8 + len..];
    }
    (text(&out), text(&err))
}

/// A hijacked connection: the response head, then the raw stream.
struct Hijacked {
    stream: UnixStream,
    head: String,
    early: Vec<u8>,
}

fn hijack(api: &ApiServer, path: &str, body: &str) -> Hijacked {
    let mut stream = UnixStream::connect(api.socket()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "no response head: {}", text(&raw));
        raw.extend_from_slice(&buf[..n]);
    }
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    Hijacked {
        head: text(&raw[..end]),
        early: raw[end + 4..].to_vec(),
        stream,
    }
}

impl Hijacked {
    /// Sends `input` and half-closes, then reads to the end of the stream.
    fn finish(mut self, input: &[u8]) -> Vec<u8> {
        self.stream.write_all(input).unwrap();
        self.stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut all = self.early;
        self.stream.read_to_end(&mut all).unwrap();
        all
    }
}

#[test]
fn docker_logs_separates_streams_tails_stamps_and_follows() {
    let env = TestEnv::new();
    let api = env.serve();
    run_detached(
        &env,
        &[
            "--name",
            "talk",
            "busybox",
            "sh",
            "-c",
            "echo out1; echo err1 >&2; echo out2",
        ],
    );
    eventually("talk exits", Duration::from_secs(30), || {
        env.ps_line("talk").contains("Exited")
    });
    let out = api.docker(&["logs", "talk"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out1\nout2\n");
    assert_eq!(text(&out.stderr), "err1\n");
    let stamped = api.docker_ok(&["logs", "-t", "talk"]);
    let first = stamped.lines().next().unwrap();
    let (time, rest) = first.split_once(' ').unwrap();
    assert_eq!(rest, "out1");
    assert!(time.contains('T') && time.ends_with('Z'), "{first}");

    // -f prints what comes while it runs and returns when the container stops.
    run_detached(
        &env,
        &[
            "--name",
            "slow",
            "busybox",
            "sh",
            "-c",
            "echo a; sleep 1; echo b; sleep 1; echo c",
        ],
    );
    let followed = api.docker_ok(&["logs", "-f", "slow"]);
    assert_eq!(followed, "a\nb\nc\n");
    assert_eq!(api.docker_ok(&["logs", "--tail", "1", "slow"]), "c\n");
    assert_eq!(api.docker_ok(&["logs", "-n", "2", "slow"]), "b\nc\n");
    assert!(env.ps_line("slow").contains("Exited (0)"));
}

#[test]
fn raw_logs_are_multiplexed_without_a_terminal_and_raw_with_one() {
    let env = TestEnv::new();
    let api = env.serve();
    run_detached(
        &env,
        &[
            "--name",
            "plain",
            "busybox",
            "sh",
            "-c",
            "echo o; echo e >&2",
        ],
    );
    run_detached(&env, &["-t", "--name", "term", "busybox", "echo", "tty"]);
    eventually("both exit", Duration::from_secs(30), || {
        env.ps_line("plain").contains("Exited") && env.ps_line("term").contains("Exited")
    });
    let (status, body) = api.request(
        "GET",
        "/v1.50/containers/plain/logs?stdout=1&stderr=1",
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(demux(&body), ("o\n".into(), "e\n".into()));
    let (_, body) = api.request("GET", "/v1.50/containers/plain/logs?stderr=1", None);
    assert_eq!(demux(&body), (String::new(), "e\n".into()));
    let (status, body) = api.request("GET", "/v1.50/containers/term/logs?stdout=1", None);
    assert_eq!(status, 200);
    assert_eq!(text(&body), "tty\r\n");
    let (status, body) = api.request_json("GET", "/v1.50/containers/nope/logs?stdout=1", None);
    assert_eq!(status, 404);
    assert_eq!(body["message"], "No such container: nope");
    let (status, _) = api.request("GET", "/v1.50/containers/plain/logs", None);
    assert_eq!(status, 400, "no stream chosen");
}

#[test]
fn an_attach_made_before_the_start_sees_the_first_byte_and_the_end() {
    let env = TestEnv::new();
    let api = env.serve();
    let id = create(
        &env,
        &["busybox", "sh", "-c", "echo first; echo oops >&2; exit 3"],
    );
    let attached = hijack(
        &api,
        &format!("/v1.50/containers/{id}/attach?stream=1&stdout=1&stderr=1"),
        "",
    );
    assert!(
        attached.head.starts_with("HTTP/1.1 101"),
        "{}",
        attached.head
    );
    let head = attached.head.to_ascii_lowercase();
    assert!(head.contains("upgrade: tcp"), "{head}");
    assert!(
        head.contains("content-type: application/vnd.docker.multiplexed-stream"),
        "{head}"
    );
    let start = env.capsa(&["start", &id]);
    assert!(start.status.success(), "{}", text(&start.stderr));
    let stream = attached.finish(b"");
    assert_eq!(demux(&stream), ("first\n".into(), "oops\n".into()));
    let code = env.capsa(&["inspect", "-f", "{{.State.ExitCode}}", &id]);
    assert_eq!(text(&code.stdout).trim(), "3");

    // A terminal: raw bytes, and the client's input reaches it.
    let id = create(&env, &["-it", "busybox", "sh", "-c", "read x; echo got-$x"]);
    let attached = hijack(
        &api,
        &format!("/v1.50/containers/{id}/attach?stream=1&stdin=1&stdout=1&stderr=1"),
        "",
    );
    assert!(attached
        .head
        .to_ascii_lowercase()
        .contains("application/vnd.docker.raw-stream"));
    let start = env.capsa(&["start", &id]);
    assert!(start.status.success(), "{}", text(&start.stderr));
    let stream = text(&attached.finish(b"abc\n"));
    assert!(stream.contains("got-abc\r\n"), "{stream:?}");

    let (status, body) = api.request_json("POST", "/v1.50/containers/nope/attach?stream=1", None);
    assert_eq!(status, 404);
    assert_eq!(body["message"], "No such container: nope");
}

#[test]
fn a_running_vm_takes_stdin_through_attach_and_its_half_close_ends_it() {
    let env = TestEnv::new();
    let api = env.serve();
    let id = run_detached(
        &env,
        &[
            "-i",
            "--isolation",
            "vm",
            "busybox",
            "sh",
            "-c",
            "cat; echo bye >&2",
        ],
    );
    eventually("the VM runs", Duration::from_secs(120), || {
        env.ps_line(&env_name(&env, &id)).contains("Up ")
    });
    let attached = hijack(
        &api,
        &format!("/v1.50/containers/{id}/attach?stream=1&stdin=1&stdout=1&stderr=1"),
        "",
    );
    assert!(
        attached.head.starts_with("HTTP/1.1 101"),
        "{}",
        attached.head
    );
    let stream = attached.finish(b"to-the-vm\n");
    assert_eq!(demux(&stream), ("to-the-vm\n".into(), "bye\n".into()));
    env.capsa(&["rm", "-f", &id]);
}

/// The name of container `id`.
fn env_name(env: &TestEnv, id: &str) -> String {
    text(&env.capsa(&["inspect", "-f", "{{.Name}}", id]).stdout)
        .trim()
        .trim_start_matches('/')
        .to_string()
}

#[test]
fn docker_exec_runs_commands_with_their_exit_codes_and_stdin() {
    let env = TestEnv::new();
    let api = env.serve();
    run_detached(&env, &["--name", "box", "busybox", "sleep", "600"]);
    let out = api.docker(&["exec", "box", "sh", "-c", "echo hi; echo there >&2; exit 5"]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(text(&out.stdout), "hi\n");
    assert_eq!(text(&out.stderr), "there\n");
    // -i: piped input reaches the command, its end ends it.
    let mut cmd = api.docker_command(&["exec", "-i", "box", "sh", "-c", "cat; echo done"]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"piped\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "piped\ndone\n");
    let out = api.docker(&["exec", "box", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    // --privileged: this command alone gets every capability; the container keeps its own.
    let cap_eff = |args: &[&str]| {
        let out = api.docker_ok(args);
        out.lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap_or_else(|| panic!("{out}"))
    };
    let status = ["box", "grep", "CapEff", "/proc/self/status"];
    let plain = cap_eff(&[&["exec"][..], &status].concat());
    let privileged = cap_eff(&[&["exec", "--privileged"][..], &status].concat());
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    assert_eq!(plain & CAP_SYS_ADMIN, 0, "{plain:x}");
    assert_ne!(privileged & CAP_SYS_ADMIN, 0, "{privileged:x}");
    assert_eq!(cap_eff(&[&["exec"][..], &status].concat()), plain);
    // -d: runs on in the background.
    api.docker_ok(&["exec", "-d", "box", "sh", "-c", "echo bg > /tmp/bg"]);
    eventually("the detached exec ran", Duration::from_secs(30), || {
        api.docker(&["exec", "box", "cat", "/tmp/bg"]).stdout == b"bg\n"
    });

    // The exec instance as Docker describes it.
    let (status, created) = api.request_json(
        "POST",
        "/v1.50/containers/box/exec",
        Some(&serde_json::json!({"Cmd": ["sh", "-c", "exit 4"], "AttachStdout": true})),
    );
    assert_eq!(status, 201, "{created}");
    let exec = created["Id"].as_str().unwrap().to_string();
    assert_eq!(exec.len(), 64);
    let (_, before) = api.request_json("GET", &format!("/v1.50/exec/{exec}/json"), None);
    assert_eq!(before["Running"], false);
    assert_eq!(before["ExitCode"], serde_json::Value::Null);
    assert_eq!(before["ProcessConfig"]["entrypoint"], "sh");
    assert_eq!(
        before["ProcessConfig"]["arguments"],
        serde_json::json!(["-c", "exit 4"])
    );
    assert_eq!(before["OpenStdout"], true);
    let stream = hijack(
        &api,
        &format!("/v1.50/exec/{exec}/start"),
        r#"{"Detach":false,"Tty":false}"#,
    );
    assert!(stream.head.starts_with("HTTP/1.1 101"), "{}", stream.head);
    stream.finish(b"");
    let (_, after) = api.request_json("GET", &format!("/v1.50/exec/{exec}/json"), None);
    assert_eq!(after["ExitCode"], 4, "{after}");
    assert_eq!(after["Running"], false);
    assert!(after["ContainerID"].as_str().unwrap().len() == 64);
    let (status, _) = api.request_json(
        "POST",
        &format!("/v1.50/exec/{exec}/start"),
        Some(&serde_json::json!({})),
    );
    assert_eq!(status, 409, "a second start");
    let (status, body) = api.request_json("GET", "/v1.50/exec/nope/json", None);
    assert_eq!(status, 404);
    assert_eq!(body["message"], "No such exec instance: nope");

    // Not running: 409 in Docker's words.
    run_detached(&env, &["--name", "done", "busybox", "true"]);
    eventually("done exits", Duration::from_secs(30), || {
        env.ps_line("done").contains("Exited")
    });
    let (status, body) = api.request_json(
        "POST",
        "/v1.50/containers/done/exec",
        Some(&serde_json::json!({"Cmd": ["true"]})),
    );
    assert_eq!(status, 409);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .ends_with("is not running"),
        "{body}"
    );
}

fn docker_line(api: &ApiServer, args: &str) -> String {
    format!(
        "DOCKER_HOST={} docker {args}; echo EXIT=$?; sleep 600",
        api.docker_host()
    )
}

#[test]
fn docker_exec_it_and_attach_with_detach_keys_in_a_terminal() {
    let env = TestEnv::new();
    let api = env.serve();
    run_detached(&env, &["-it", "--name", "term", "busybox", "sh"]);
    let exec = Tmux::start(&docker_line(&api, "exec -it term sh"), 100, 30);
    exec.wait_for("/ #");
    exec.send(&["stty size; echo in-$((6*7))", "Enter"]);
    exec.wait_for("in-42");
    exec.wait_for("30 100");
    exec.send(&["exit 6", "Enter"]);
    exec.wait_for("EXIT=6");

    let attach = Tmux::start(&docker_line(&api, "attach term"), 80, 24);
    attach.send(&["echo attached-$((1+1))", "Enter"]);
    attach.wait_for("attached-2");
    attach.send(&["C-p", "C-q"]);
    attach.wait_for("EXIT=");
    assert!(
        env.ps_line("term").contains("Up "),
        "{}",
        env.ps_line("term")
    );
    let again = Tmux::start(&docker_line(&api, "attach term"), 80, 24);
    again.send(&["exit 2", "Enter"]);
    again.wait_for("EXIT=2");
    eventually("term exits", Duration::from_secs(30), || {
        env.ps_line("term").contains("Exited (2)")
    });
}

#[test]
fn docker_cp_copies_both_ways_and_a_missing_path_is_404() {
    let env = TestEnv::new();
    let api = env.serve();
    run_detached(&env, &["--name", "box", "busybox", "sleep", "600"]);
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out_s = out_dir.to_str().unwrap();
    api.docker_ok(&["cp", "box:/etc/passwd", out_s]);
    let copied = std::fs::read_to_string(out_dir.join("passwd")).unwrap();
    assert!(copied.starts_with("root:"), "{copied}");

    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/f"), "inside\n").unwrap();
    api.docker_ok(&["cp", tree.to_str().unwrap(), "box:/tmp/newname"]);
    api.docker_ok(&["cp", tree.to_str().unwrap(), "box:/tmp/"]);
    let seen = api.docker_ok(&[
        "exec",
        "box",
        "cat",
        "/tmp/newname/sub/f",
        "/tmp/tree/sub/f",
    ]);
    assert_eq!(seen, "inside\ninside\n");
    // `docker cp -a` (copyUIDGID) keeps the archive's owners; a plain one gives root.
    std::os::unix::fs::chown(tree.join("sub/f"), Some(1234), Some(5678)).unwrap();
    api.docker_ok(&["cp", "-a", tree.to_str().unwrap(), "box:/tmp/kept"]);
    api.docker_ok(&["cp", tree.to_str().unwrap(), "box:/tmp/plain"]);
    let owners = api.docker_ok(&[
        "exec",
        "box",
        "stat",
        "-c",
        "%u:%g",
        "/tmp/kept/sub/f",
        "/tmp/plain/sub/f",
    ]);
    assert_eq!(owners, "1234:5678\n0:0\n");

    let out = api.docker(&["cp", "box:/no/such", out_s]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Could not find the file /no/such in container box"),
        "{}",
        text(&out.stderr)
    );
    let (status, body) =
        api.request_json("GET", "/v1.50/containers/box/archive?path=/no/such", None);
    assert_eq!(status, 404);
    assert_eq!(
        body["message"],
        "Could not find the file /no/such in container box"
    );
    let (status, _) = api.request("HEAD", "/v1.50/containers/box/archive?path=/no/such", None);
    assert_eq!(status, 404);
}

#[test]
fn archive_head_describes_the_path_as_docker_does() {
    use base64::Engine;
    let env = TestEnv::new();
    let api = env.serve();
    run_detached(&env, &["--name", "box", "busybox", "sleep", "600"]);
    let mut s = UnixStream::connect(api.socket()).unwrap();
    s.write_all(b"HEAD /v1.50/containers/box/archive?path=/etc HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let value = raw
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("x-docker-container-path-stat:")
        })
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| panic!("no stat header: {raw}"));
    let json: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(value)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(json["name"], "etc");
    assert_ne!(
        json["mode"].as_u64().unwrap() & (1 << 31),
        0,
        "a directory: {json}"
    );
    assert!(
        json["mtime"].is_string() && json["linkTarget"].is_string(),
        "{json}"
    );
}

#[test]
fn docker_stats_shows_memory_and_the_json_has_dockers_fields() {
    let env = TestEnv::new();
    let api = env.serve();
    // Some CPU in user mode first (cgroup v1 counts it in 10 ms ticks), then idle.
    let spin = "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; exec sleep 600";
    run_detached(&env, &["--name", "busy", "busybox", "sh", "-c", spin]);
    let out = api.docker_ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.MemUsage}} {{.CPUPerc}}",
        "busy",
    ]);
    let line = out.trim();
    assert!(line.starts_with("busy "), "{line}");
    let mem = line.split(' ').nth(1).unwrap();
    assert!(
        (mem.ends_with("KiB") || mem.ends_with("MiB")) && !mem.starts_with("0B"),
        "{line}"
    );
    assert!(line.ends_with('%'), "{line}");

    let (status, body) = api.request_json("GET", "/v1.50/containers/busy/stats?stream=0", None);
    assert_eq!(status, 200);
    assert_eq!(body["name"], "/busy");
    assert!(
        body["cpu_stats"]["cpu_usage"]["total_usage"]
            .as_u64()
            .unwrap()
            > 0
    );
    let usage = &body["cpu_stats"]["cpu_usage"];
    assert!(usage["usage_in_usermode"].as_u64().unwrap() > 0, "{usage}");
    assert!(usage["usage_in_kernelmode"].is_u64(), "{usage}");
    assert!(body["cpu_stats"]["system_cpu_usage"].as_u64().unwrap() > 0);
    assert!(
        body["precpu_stats"]["system_cpu_usage"].as_u64().unwrap() > 0,
        "stream=0 fills precpu"
    );
    assert!(body["cpu_stats"]["online_cpus"].as_u64().unwrap() >= 1);
    assert!(body["memory_stats"]["usage"].as_u64().unwrap() > 0);
    assert!(body["memory_stats"]["limit"].as_u64().unwrap() > 0);
    assert!(body["memory_stats"]["stats"]["inactive_file"].is_u64());
    assert_eq!(body["pids_stats"]["current"], 1);
    assert!(body["networks"]["eth0"]["rx_bytes"].is_u64());
    assert!(body["read"].is_string() && body["preread"].is_string());
    let (status, body) = api.request_json("GET", "/v1.50/containers/nope/stats?stream=0", None);
    assert_eq!(status, 404);
    assert_eq!(body["message"], "No such container: nope");
}

#[test]
fn docker_export_is_the_container_filesystem() {
    let env = TestEnv::new();
    let api = env.serve();
    run_detached(
        &env,
        &[
            "--name",
            "box",
            "busybox",
            "sh",
            "-c",
            "echo mark > /marker; sleep 600",
        ],
    );
    eventually("the marker is written", Duration::from_secs(30), || {
        api.docker(&["exec", "box", "cat", "/marker"]).stdout == b"mark\n"
    });
    let mut export = api
        .docker_command(&["export", "box"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let listing = std::process::Command::new("tar")
        .arg("t")
        .stdin(export.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(export.wait().unwrap().success());
    let names = text(&listing.stdout);
    assert!(
        names
            .lines()
            .any(|l| l.trim_start_matches("./") == "bin/busybox"),
        "{names}"
    );
    assert!(
        names
            .lines()
            .any(|l| l.trim_start_matches("./") == "marker"),
        "{names}"
    );
    assert!(!names
        .lines()
        .any(|l| l.trim_start_matches("./").starts_with("proc/self")));
}

/// `docker run` needs create and wait (written beside these endpoints): the foreground
/// flow attaches before the start and reads until the stream ends.
#[test]
fn docker_run_in_the_foreground_prints_output_and_exit_codes() {
    let env = TestEnv::new();
    let api = env.serve();
    let out = api.docker(&["run", "--rm", "--network", "none", "busybox", "echo", "hi"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stderr),
        api.log()
    );
    assert_eq!(text(&out.stdout), "hi\n");
    let out = api.docker(&[
        "run",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "echo e >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out.stderr), "e\n");
    let term = Tmux::start(
        &docker_line(&api, "run -it --name it --network none busybox sh"),
        90,
        25,
    );
    term.wait_for("/ #");
    term.send(&["stty size; echo run-$((2*21))", "Enter"]);
    term.wait_for("run-42");
    term.wait_for("25 90");
    term.send(&["C-p", "C-q"]);
    term.wait_for("EXIT=0");
    assert!(env.ps_line("it").contains("Up "), "{}", env.ps_line("it"));
}

#[test]
fn docker_run_i_feeds_stdin_without_a_terminal() {
    let env = TestEnv::new();
    let api = env.serve();
    let piped = |args: &[&str], input: &[u8]| {
        use std::io::Write;
        let mut cmd = api.docker_command(args);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    };
    // Input from a pipe reaches the workload, and its end ends `cat`.
    let out = piped(
        &["run", "-i", "--rm", "--network", "none", "busybox", "cat"],
        b"line one\nline two\n",
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        capsa_tests::text(&out.stderr)
    );
    assert_eq!(capsa_tests::text(&out.stdout), "line one\nline two\n");
    // stdout and stderr stay apart, and the exit code is the workload's.
    let out = piped(
        &[
            "run",
            "-i",
            "--rm",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "wc -l; echo oops >&2; exit 3",
        ],
        b"a\nb\nc\n",
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(capsa_tests::text(&out.stdout).trim(), "3");
    assert_eq!(capsa_tests::text(&out.stderr).trim(), "oops");
    assert_eq!(
        capsa_tests::text(&env.capsa(&["ps", "-aq"]).stdout).trim(),
        ""
    );
}
