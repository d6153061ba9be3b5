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
