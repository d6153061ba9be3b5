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
