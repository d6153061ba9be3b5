//! The image endpoints of `capsa serve`, driven by the real docker CLI: list, inspect,
//! history, tag, rmi (and its conflict), save and load, import and prune, and pull from a
//! local registry with Docker's progress stream.

use capsa_tests::registry::{LocalRegistry, OciLayout, Packing};
use capsa_tests::{busybox_tarball, text, TestEnv};
use serde_json::{json, Value};

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn images_list_inspect_tag_history_and_remove_as_docker_shows_them() {
    let env = TestEnv::new();
    let api = env.serve();
    let listed = api.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(listed.trim(), "busybox:latest");

    // The summary: Created is an integer, VirtualSize only for old clients.
    let (status, list) = api.request_json("GET", "/v1.50/images/json", None);
    assert_eq!(status, 200);
    let summary = &list[0];
    let id = summary["Id"].as_str().unwrap().to_string();
    assert!(id.starts_with("sha256:"), "{summary}");
    assert!(summary["Created"].is_i64(), "{summary}");
    assert_eq!(summary["SharedSize"], -1);
    assert_eq!(summary["Containers"], -1);
    assert!(summary["Size"].as_u64().unwrap() > 0, "{summary}");
    assert!(summary.get("VirtualSize").is_none(), "{summary}");
    let (_, old) = api.request_json("GET", "/v1.43/images/json", None);
    assert_eq!(old[0]["VirtualSize"], summary["Size"]);

    let inspected = api.docker_ok(&["image", "inspect", "--format", "{{.Id}}", "busybox"]);
    assert_eq!(inspected.trim(), id);
    let inspected = api.docker_ok(&["inspect", "--format", "{{.Id}} {{.Config.Cmd}}", "busybox"]);
    assert_eq!(inspected.trim(), format!("{id} [sh]"));
    let history = api.docker_ok(&["history", "-q", "busybox"]);
    assert_eq!(history.lines().next(), Some(&id[7..19]), "{history}");

    // tag through the CLI and raw: 201; the new names are listed and filtered.
    api.docker_ok(&["tag", "busybox", "mybox:v1"]);
    let (status, _) = api.request("POST", "/images/busybox/tag?repo=other/box&tag=v2", None);
    assert_eq!(status, 201);
    let listed = api.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}", "mybox"]);
    assert_eq!(listed.trim(), "mybox:v1");
    let (_, filtered) = api.request_json(
        "GET",
        "/images/json?filters=%7B%22reference%22%3A%5B%22other%2F*%22%5D%7D",
        None,
    );
    assert_eq!(filtered[0]["RepoTags"], json!(["other/box:v2"]));
    let (_, none) = api.request_json(
        "GET",
        "/images/json?filters=%7B%22dangling%22%3A%5B%22true%22%5D%7D",
        None,
    );
    assert_eq!(none, json!([]));

    let removed = api.docker_ok(&["rmi", "mybox:v1"]);
    assert_eq!(removed.trim(), "Untagged: mybox:v1");
    let (status, body) = api.request_json("DELETE", "/images/other/box:v2", None);
    assert_eq!(status, 200);
    assert_eq!(body, json!([{"Untagged": "other/box:v2"}]));

    let (status, body) = api.request_json("GET", "/images/nope/json", None);
    assert_eq!(status, 404);
    assert_eq!(body["message"], "No such image: nope");
    let out = api.docker(&["rmi", "nope"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("No such image: nope"),
        "{}",
        text(&out.stderr)
    );

    // An image a container uses keeps its last name unless forced, in Docker's words.
    ok(&env.create(&["--name", "user", "busybox", "true"]));
    let out = api.docker(&["rmi", "busybox"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(
            "conflict: unable to remove repository reference \"busybox\" (must force) - container"
        ),
        "{}",
        text(&out.stderr)
    );
    let (status, _) = api.request_json("DELETE", "/images/busybox", None);
    assert_eq!(status, 409);
    ok(&env.capsa(&["rm", "-f", "user"]));
    env.assert_clean();
}

#[test]
fn save_load_import_and_prune_through_the_docker_cli() {
    let env = TestEnv::new();
    let api = env.serve();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("saved.tar");
    api.docker_ok(&["tag", "busybox", "saved:v1"]);
    api.docker_ok(&["save", "-o", archive.to_str().unwrap(), "saved:v1"]);
    assert!(std::fs::metadata(&archive).unwrap().len() > 100_000);
    // Raw: the archive is a tar with Docker's manifest.json.
    let (status, tar) = api.request("GET", "/images/get?names=saved%3Av1", None);
    assert_eq!(status, 200);
    let mut entries = tar::Archive::new(&tar[..]);
    let names: Vec<String> = entries
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "manifest.json"), "{names:?}");
    let (status, _) = api.request("GET", "/images/nope/get", None);
    assert_eq!(status, 404);

    api.docker_ok(&["rmi", "saved:v1"]);
    let loaded = api.docker_ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains("Loaded image: saved:v1"), "{loaded}");
    let listed = api.docker_ok(&["images", "-q", "saved:v1"]);
    assert_eq!(listed.lines().count(), 1, "{listed}");

    // An import without a name is dangling; prune takes it and leaves busybox.
    let imported = api.docker_ok(&["import", busybox_tarball().to_str().unwrap()]);
    let imported = imported.trim();
    assert!(imported.starts_with("sha256:"), "{imported}");
    let dangling = api.docker_ok(&["images", "-q", "--no-trunc", "-f", "dangling=true"]);
    assert_eq!(dangling.trim(), imported);
    let pruned = api.docker_ok(&["image", "prune", "-f"]);
    assert!(pruned.contains(&format!("deleted: {imported}")), "{pruned}");
    let (status, _) = api.request("GET", &format!("/images/{imported}/json"), None);
    assert_eq!(status, 404);
    let left = api.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(left.contains("busybox:latest"), "{left}");
    // A named import with Dockerfile changes (each a repeated `changes` parameter).
    api.docker_ok(&[
        "import",
        "-c",
        "ENV A=1",
        "-c",
        "CMD [\"sh\", \"-c\", \"true\"]",
        busybox_tarball().to_str().unwrap(),
        "imported:v1",
    ]);
    let config = api.docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{.Config.Env}} {{.Config.Cmd}}",
        "imported:v1",
    ]);
    assert_eq!(config.trim(), "[A=1] [sh -c true]");
    env.assert_clean();
}

/// Pushes busybox as `repo:tag`; returns its layer's digest.
fn push_busybox(reg: &LocalRegistry, repo: &str, tag: &str) -> String {
    let mut layout = OciLayout::new();
    let tar = std::fs::read(busybox_tarball()).unwrap();
    let base = layout.layer(&tar, Packing::Gzip);
    let digest = base.descriptor["digest"].as_str().unwrap().to_string();
    let desc = layout.image(
        "amd64",
        &[base],
        json!({"Cmd": ["sh"], "Env": ["PATH=/bin"]}),
    );
    layout.tag(tag, desc);
    reg.push(&layout, tag, repo);
    digest
}

#[test]
fn docker_pull_streams_progress_from_a_registry() {
    let env = TestEnv::new();
    let reg = LocalRegistry::start(&env);
    push_busybox(&reg, "team/app", "v1");
    let api = env.serve();
    let name = format!("{}/team/app:v1", reg.host());
    let pulled = api.docker_ok(&["pull", &name]);
    assert!(pulled.contains("v1: Pulling from team/app"), "{pulled}");
    assert!(pulled.contains("Pull complete"), "{pulled}");
    assert!(pulled.contains("Digest: sha256:"), "{pulled}");
    assert!(
        pulled.contains(&format!("Status: Downloaded newer image for {name}")),
        "{pulled}"
    );
    let listed = api.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(listed.contains(&name), "{listed}");

    // Raw: JSON lines, the layer already here, the image up to date.
    let (status, body) = api.request(
        "POST",
        &format!("/images/create?fromImage={}/team/app&tag=v1", reg.host()),
        None,
    );
    assert_eq!(status, 200);
    let lines: Vec<Value> = text(&body)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines[0],
        json!({"status": "Pulling from team/app", "id": "v1"})
    );
    assert!(
        lines.iter().any(|l| l["status"] == "Already exists"),
        "{lines:?}"
    );
    assert_eq!(
        lines.last().unwrap()["status"],
        format!("Status: Image is up to date for {name}")
    );

    // A missing image: 404 before the stream, and the CLI says so.
    let (status, body) = api.request_json(
        "POST",
        &format!("/images/create?fromImage={}/team/nope&tag=v1", reg.host()),
        None,
    );
    assert_eq!(status, 404, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("team/nope"),
        "{body}"
    );
    let out = api.docker(&["pull", &format!("{}/team/nope:v1", reg.host())]);
    assert!(!out.status.success());
    // A layer that breaks after the stream began: status 200, then Docker's error line.
    let mut layout = OciLayout::new();
    let layer = layout.layer(
        &capsa_tests::registry::tar_of(&[("f", Some(b"x\n"))]),
        Packing::Gzip,
    );
    let digest = layer.descriptor["digest"].as_str().unwrap().to_string();
    let desc = layout.image("amd64", &[layer], json!({"Cmd": ["sh"]}));
    layout.tag("bad", desc);
    reg.push(&layout, "bad", "team/bad");
    let blob = reg.blob_file(&digest);
    let mut corrupt = std::fs::read(&blob).unwrap();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    std::fs::write(&blob, &corrupt).unwrap();
    let (status, body) = api.request(
        "POST",
        &format!("/images/create?fromImage={}/team/bad&tag=bad", reg.host()),
        None,
    );
    assert_eq!(status, 200);
    let last: Value = serde_json::from_str(text(&body).lines().last().unwrap()).unwrap();
    let message = last["error"].as_str().unwrap();
    assert!(message.contains(&digest), "{last}");
    assert_eq!(last["errorDetail"]["message"], message);
    let out = api.docker(&["pull", &format!("{}/team/bad:bad", reg.host())]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains(&digest), "{}", text(&out.stderr));

    // Bad references are the client's error.
    let (status, _) = api.request("POST", "/images/create?fromImage=UPPER/case", None);
    assert_eq!(status, 400);
    env.assert_clean();
}

#[test]
fn a_pull_uses_the_credentials_of_x_registry_auth() {
    use base64::Engine as _;
    let env = TestEnv::new();
    let reg = LocalRegistry::start_with_auth(
        &env,
        capsa_tests::registry::Auth::Basic("tester", "s3cret"),
    );
    let mut layout = OciLayout::new();
    let tar = std::fs::read(busybox_tarball()).unwrap();
    let base = layout.layer(&tar, Packing::Gzip);
    let desc = layout.image("amd64", &[base], json!({"Cmd": ["sh"]}));
    layout.tag("1", desc);
    reg.push_as(&layout, "1", "test/private", Some("tester:s3cret"));
    let api = env.serve();
    let path = format!(
        "/v1.50/images/create?fromImage={}/test/private&tag=1",
        reg.host()
    );
    let pull = |auth: Option<&str>| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-s", "-w", "\n%{http_code}", "-X", "POST", "--unix-socket"])
            .arg(api.socket())
            .arg(format!("http://x{path}"));
        if let Some(a) = auth {
            let header = base64::engine::general_purpose::URL_SAFE.encode(a);
            cmd.args(["-H", &format!("X-Registry-Auth: {header}")]);
        }
        text(&capsa_tests::run_bounded(cmd, std::time::Duration::from_secs(60)).stdout)
    };
    // Without credentials the registry's 401 is the client's 404; wrong ones too.
    let denied = pull(None);
    assert!(denied.ends_with("\n404"), "{denied}");
    let wrong = pull(Some(
        r#"{"username":"tester","password":"nope","serveraddress":"x"}"#,
    ));
    assert!(wrong.ends_with("\n404"), "{wrong}");
    let pulled = pull(Some(
        r#"{"username":"tester","password":"s3cret","serveraddress":"x"}"#,
    ));
    assert!(pulled.ends_with("\n200"), "{pulled}");
    assert!(
        pulled.contains("Status: Downloaded newer image for"),
        "{pulled}"
    );
    // Nothing was stored: the credentials served this pull only.
    assert!(!env.root().join("auth.json").exists());
    let listed = api.docker_ok(&["images", "--format", "{{.Repository}}"]);
    assert!(listed.contains("test/private"), "{listed}");
    env.assert_clean();
}
