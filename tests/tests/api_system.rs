//! `capsa serve` answers what clients ask first: the version handshake, errors in
//! Docker's shape, and one server per state root.

use capsa_tests::{text, TestEnv};

#[test]
fn the_docker_cli_negotiates_and_reads_version_and_info() {
    let env = TestEnv::new();
    let api = env.serve();
    let version = api.docker_ok(&["version", "--format", "{{.Server.APIVersion}}"]);
    assert_eq!(version.trim(), "1.50");
    let info = api.docker_ok(&["info", "--format", "{{.Containers}} {{.Driver}}"]);
    assert_eq!(info.trim(), "0 overlayfs");
    // An old client's version is served; a future one is refused in dockerd's words.
    let (status, _) = api.request("GET", "/v1.41/_ping", None);
    assert_eq!(status, 200);
    let (status, body) = api.request_json("GET", "/v1.99/version", None);
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("too new"),
        "{body}"
    );
    let (status, body) = api.request_json("GET", "/v1.43/no/such/path", None);
    assert_eq!(status, 404);
    assert!(body["message"].is_string(), "{body}");
}

#[test]
fn a_second_server_on_the_same_root_refuses_to_start() {
    let env = TestEnv::new();
    let _api = env.serve();
    let other = env.root().join("other.sock");
    let out = env.capsa(&["serve", "-H", &format!("unix://{}", other.display())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("already serves"),
        "{}",
        text(&out.stderr)
    );
    assert!(!other.exists());
}

#[test]
fn the_socket_is_root_only_without_a_group() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let env = TestEnv::new();
    let api = env.serve();
    let meta = std::fs::metadata(api.socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), 0);
    let out = capsa_tests::as_nobody(
        "curl",
        &[
            "-s",
            "--unix-socket",
            api.socket().to_str().unwrap(),
            "http://x/_ping",
        ],
    );
    assert!(!text(&out.stdout).contains("OK"), "nobody reached the API");
}

#[test]
fn a_group_socket_is_that_groups_and_no_one_elses() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let env = TestEnv::new();
    let api = env.serve_with(&["--group", "4242"]);
    let meta = std::fs::symlink_metadata(api.socket()).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()));
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!((meta.uid(), meta.gid()), (0, 4242));
}

/// The descriptors of process `pid`, as their /proc links read.
fn descriptors(pid: i64) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.display().to_string())
        .collect()
}

/// The `PPid:` of process `pid`.
fn parent_of(pid: i64) -> i64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[test]
fn monitors_made_through_the_api_hold_nothing_of_the_server() {
    let env = TestEnv::new();
    let api = env.serve();
    // An open client connection while the container is made: a monitor forked from the
    // server itself would copy it, and this client would never see its end.
    let idle = std::os::unix::net::UnixStream::connect(api.socket()).unwrap();
    let id = api
        .docker_ok(&["run", "-d", "--network", "none", "busybox", "sleep", "600"])
        .trim()
        .to_string();
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.root().join("containers").join(&id).join("state.json")).unwrap(),
    )
    .unwrap();
    let monitor = state["monitor_pid"].as_i64().unwrap();
    let held = descriptors(monitor);
    let lock = env.root().join("locks/serve").display().to_string();
    assert!(
        !held.contains(&lock),
        "the monitor holds the server's lock: {held:?}"
    );
    assert!(
        !held.iter().any(|d| d.starts_with("socket:")),
        "the monitor holds a socket of the server's: {held:?}"
    );
    assert_ne!(
        parent_of(monitor),
        i64::from(api.pid()),
        "the monitor is the server's child"
    );
    drop(idle);
    // Containers that exit leave no zombie under a server that stays up.
    for _ in 0..3 {
        api.docker_ok(&["run", "-d", "--network", "none", "busybox", "true"]);
    }
    capsa_tests::eventually(
        "containers exit",
        std::time::Duration::from_secs(20),
        || text(&env.capsa(&["ps", "-q"]).stdout).lines().count() == 1,
    );
    let zombies: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i64>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
                s.contains("State:\tZ") && s.contains(&format!("PPid:\t{}\n", api.pid()))
            })
        })
        .map(|pid| pid.to_string())
        .collect();
    assert!(zombies.is_empty(), "zombies under the server: {zombies:?}");
    api.docker_ok(&["rm", "-f", &id]);
}

#[test]
fn bad_bodies_and_a_hundred_clients_at_once_are_answered_and_lose_nothing() {
    let env = TestEnv::new();
    let api = env.serve();
    // A JSON body past the bound: 413, and no container made.
    let big = format!(
        r#"{{"Image":"busybox","Env":["X={}"]}}"#,
        "a".repeat(5 << 20)
    );
    let (status, _) = api.request("POST", "/v1.50/containers/create", Some(big.as_bytes()));
    assert_eq!(status, 413);
    // Malformed and mistyped bodies: 400 naming the cause.
    let (status, body) = api.request_json("POST", "/containers/create", None);
    assert_eq!(status, 400, "{body}");
    let (status, body) = api.request("POST", "/containers/create", Some(b"{not json"));
    assert_eq!(status, 400, "{}", text(&body));
    assert_eq!(text(&env.capsa(&["ps", "-aq"]).stdout).trim(), "");
    // One container, then a hundred clients at once listing, inspecting and pinging.
    let id = api
        .docker_ok(&[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            "steady",
            "busybox",
            "sleep",
            "600",
        ])
        .trim()
        .to_string();
    let socket = api.socket().to_path_buf();
    let clients: Vec<_> = (0..100)
        .map(|i| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let path = match i % 3 {
                    0 => "/v1.50/containers/json".to_string(),
                    1 => "/v1.50/containers/steady/json".to_string(),
                    _ => "/_ping".to_string(),
                };
                let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
                s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
                    .unwrap();
                write!(
                    s,
                    "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                out.starts_with("HTTP/1.1 200")
            })
        })
        .collect();
    let answered = clients
        .into_iter()
        .map(|c| c.join().unwrap_or(false))
        .filter(|ok| *ok)
        .count();
    assert_eq!(answered, 100);
    // Clients that go away in the middle of a request and of a log stream.
    for _ in 0..20 {
        use std::io::Write;
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        let _ = s.write_all(
            b"POST /containers/create HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"Ima",
        );
        let mut f = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        let _ = write!(
            f,
            "GET /containers/{id}/logs?follow=1&stdout=1 HTTP/1.1\r\nHost: x\r\n\r\n"
        );
    }
    let ps = api.docker_ok(&["ps", "--format", "{{.Names}}"]);
    assert_eq!(ps.trim(), "steady");
    let (status, body) = api.request_json("GET", "/containers/steady/json", None);
    assert_eq!(status, 200);
    assert_eq!(body["State"]["Running"], true);
}
