//! `capsa push` end to end against real registries (Debian's docker-registry on 127.0.0.1):
//! what is pushed pulls back bit-identical (same manifest digest) with capsa and skopeo and
//! runs; blobs the registry has are skipped or mounted; every tag with `--all-tags`; basic
//! and bearer auth; refusals that leave nothing claimed; and `docker push` through
//! `capsa serve`.

use capsa_tests::registry::{sha256, tar_of, Auth, LocalRegistry, OciLayout, Packing};
use capsa_tests::{busybox_tarball, run_bounded, text, TestEnv};
use serde_json::{json, Value};
use std::process::Output;
use std::time::Duration;

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Asserts that the command failed with exit 1; returns its standard error.
fn failed(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

/// Puts a three-layer image on `reg` as `repo:tag` with skopeo (`flags`: its format): busybox
/// (gzip), files (`middle`), whiteouts (plain tar, or gzip where the format needs it).
fn seed(reg: &LocalRegistry, repo: &str, tag: &str, middle: Packing, flags: &[&str]) {
    let mut layout = OciLayout::new();
    let base = layout.layer(&std::fs::read(busybox_tarball()).unwrap(), Packing::Gzip);
    let files = layout.layer(
        &tar_of(&[
            ("data/", None),
            ("data/a", Some(b"a\n")),
            ("etc/motd", Some(b"from layer two\n")),
        ]),
        middle,
    );
    let top = layout.layer(
        &tar_of(&[("data/.wh.a", Some(b"")), ("data/b", Some(b"b\n"))]),
        middle,
    );
    let config = json!({"Cmd": ["sh"], "Env": ["PATH=/bin"]});
    let desc = layout.image("amd64", &[base, files, top], config);
    layout.tag(tag, desc);
    reg.push_with(&layout, tag, repo, flags);
}

/// skopeo in `env`'s network namespace.
fn skopeo(env: &TestEnv, args: &[&str]) -> Output {
    let mut cmd = env.host_command("skopeo");
    cmd.args(args);
    run_bounded(cmd, Duration::from_secs(120))
}

/// The manifest the registry serves for `name` (read by skopeo), and its digest.
fn served(env: &TestEnv, name: &str, creds: Option<&str>) -> Option<(String, String)> {
    let mut args = vec!["inspect", "--raw", "--tls-verify=false"];
    if let Some(c) = creds {
        args.extend(["--creds", c]);
    }
    let image = format!("docker://{name}");
    args.push(&image);
    let out = skopeo(env, &args);
    out.status
        .success()
        .then(|| (text(&out.stdout), sha256(&out.stdout)))
}

fn inspect(env: &TestEnv, name: &str, format: &str) -> String {
    ok(&env.capsa(&["image", "inspect", "-f", format, name]))
        .trim()
        .to_string()
}

#[test]
fn pushed_images_pull_back_bit_identical_and_run() {
    let env = TestEnv::new();
    let src = LocalRegistry::start(&env);
    let dst = LocalRegistry::start(&env);
    // The second image's busybox layer is the first's: the registry mounts it.
    for (repo, middle, flags, media_type, uploaded) in [
        (
            "team/oci",
            Packing::Zstd,
            &[][..],
            "application/vnd.oci.image.manifest.v1+json",
            3,
        ),
        (
            "team/docker",
            Packing::Gzip,
            &["--format", "v2s2"][..],
            "application/vnd.docker.distribution.manifest.v2+json",
            2,
        ),
    ] {
        seed(&src, repo, "v1", middle, flags);
        let pulled = format!("{}/{repo}:v1", src.host());
        ok(&env.capsa(&["pull", "-q", &pulled]));
        let (_, local) = served(&env, &pulled, None).unwrap();
        let name = format!("{}/{repo}:v1", dst.host());
        ok(&env.capsa(&["tag", &pulled, &name]));

        let out = ok(&env.capsa(&["push", &name]));
        let refers = format!("The push refers to repository [{}/{repo}]", dst.host());
        assert!(out.starts_with(&refers), "{out}");
        assert_eq!(out.matches(": Pushed\n").count(), uploaded, "{out}");
        let mounted = out.matches(": Mounted from team/oci\n").count();
        assert_eq!(mounted, 3 - uploaded, "{out}");
        assert!(
            out.contains(&format!("v1: digest: {local} size: ")),
            "{out}"
        );
        // The registry serves the very manifest pulled from the first one, in its media
        // type, and skopeo reads back every blob it names (checking each digest).
        let (manifest, digest) = served(&env, &name, None).expect("pushed manifest");
        assert_eq!(digest, local);
        assert!(manifest.contains(media_type), "{manifest}");
        let copy_dir = tempfile::tempdir().unwrap();
        let oci = format!("oci:{}:v1", copy_dir.path().display());
        let copied = skopeo(
            &env,
            &[
                "copy",
                "--src-tls-verify=false",
                &format!("docker://{name}"),
                &oci,
            ],
        );
        assert!(copied.status.success(), "{}", text(&copied.stderr));

        // Another root pulls the same manifest digest and image ID, and runs it.
        let other = TestEnv::sharing_netns_of(&env);
        ok(&other.capsa(&["pull", "-q", &name]));
        let digests = inspect(&other, &name, "{{json .RepoDigests}}");
        assert!(digests.contains(&format!("/{repo}@{local}")), "{digests}");
        assert_eq!(
            inspect(&other, &name, "{{.Id}}"),
            inspect(&env, &name, "{{.Id}}")
        );
        let motd = ok(&other.run(&["--rm", &name, "sh", "-c", "cat /etc/motd; ls /data"]));
        assert_eq!(motd, "from layer two\nb\n");
        drop(other);

        // A second push sends nothing; the push is recorded as a repo digest.
        let again = ok(&env.capsa(&["push", &name]));
        assert_eq!(
            again.matches(": Layer already exists").count(),
            3,
            "{again}"
        );
        assert!(!again.contains("Pushed"), "{again}");
        let digests = inspect(&env, &name, "{{json .RepoDigests}}");
        let pushed = format!("{}/{repo}@{local}", dst.host());
        assert!(digests.contains(&pushed), "{digests}");
    }
    env.assert_clean();
}

#[test]
fn blobs_are_mounted_from_sibling_repositories_or_uploaded_when_the_registry_declines() {
    let env = TestEnv::new();
    let reg = LocalRegistry::start(&env);
    let base = format!("{}/team/base:1", reg.host());
    ok(&env.capsa(&["tag", "busybox", &base]));
    let out = ok(&env.capsa(&["push", &base]));
    assert!(out.contains(": Pushed"), "{out}");

    // The store knows the layer is in team/base of this registry: the registry links it.
    let app = format!("{}/team/app:1", reg.host());
    ok(&env.capsa(&["tag", "busybox", &app]));
    let out = ok(&env.capsa(&["push", &app]));
    assert!(out.contains(": Mounted from team/base"), "{out}");
    assert!(!out.contains("Pushed"), "{out}");

    // A registry that cannot mount (the source repository is gone) opens an upload
    // session in its answer, and the layer goes up through it.
    std::fs::remove_dir_all(reg.repository_dir("team/base")).unwrap();
    let third = format!("{}/team/third:1", reg.host());
    ok(&env.capsa(&["tag", "busybox", &third]));
    let out = ok(&env.capsa(&["push", &third]));
    assert!(out.contains(": Pushed"), "{out}");
    assert!(!out.contains("Mounted"), "{out}");
    let other = TestEnv::sharing_netns_of(&env);
    ok(&other.capsa(&["pull", "-q", &third]));
    assert_eq!(ok(&other.run(&["--rm", &third, "echo", "up"])), "up\n");
    drop(other);
    env.assert_clean();
}

#[test]
fn all_tags_pushes_every_tag_of_the_repository_and_nothing_else() {
    let env = TestEnv::new();
    let reg = LocalRegistry::start(&env);
    let repo = format!("{}/team/bb", reg.host());
    for name in [
        format!("{repo}:1"),
        format!("{repo}:2"),
        format!("{}/team/other:1", reg.host()),
    ] {
        ok(&env.capsa(&["tag", "busybox", &name]));
    }
    let out = ok(&env.capsa(&["push", "--all-tags", &repo]));
    assert!(out.contains("\n1: digest: sha256:"), "{out}");
    assert!(out.contains("\n2: digest: sha256:"), "{out}");
    let tags = skopeo(
        &env,
        &[
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{repo}"),
        ],
    );
    let tags: Value = serde_json::from_slice(&tags.stdout).unwrap();
    let mut tags: Vec<&str> = tags["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    tags.sort();
    assert_eq!(tags, ["1", "2"]);
    let other = format!("{}/team/other:1", reg.host());
    assert!(served(&env, &other, None).is_none());

    // -q: the names pushed, nothing else; a tag with -a is refused.
    let quiet = ok(&env.capsa(&["image", "push", "-a", "-q", &repo]));
    assert_eq!(quiet, format!("{repo}:1\n{repo}:2\n"));
    let err = failed(&env.capsa(&["push", "-a", &format!("{repo}:1")]));
    assert!(err.contains("--all-tags"), "{err}");
}

#[test]
fn basic_auth_push_needs_login_and_a_refusal_claims_nothing() {
    push_needs_login(Auth::Basic("tester", "s3cret"));
}

#[test]
fn bearer_token_push_asks_for_the_push_scope() {
    push_needs_login(Auth::Token("tester", "s3cret"));
}

fn push_needs_login(auth: Auth<'_>) {
    let env = TestEnv::new();
    let reg = LocalRegistry::start_with_auth(&env, auth);
    let name = format!("{}/test/private:1", reg.host());
    ok(&env.capsa(&["tag", "busybox", &name]));

    let denied = env.capsa(&["push", &name]);
    let err = failed(&denied);
    assert!(err.contains("401"), "{err}");
    assert!(err.contains("capsa login"), "{err}");
    assert!(
        !text(&denied.stdout).contains("digest:"),
        "{}",
        text(&denied.stdout)
    );
    // Nothing claimed: the registry has no such tag, the store records no push.
    assert!(served(&env, &name, Some("tester:s3cret")).is_none());
    assert_eq!(inspect(&env, &name, "{{json .RepoDigests}}"), "[]");

    let login = env.capsa_with_stdin(
        &["login", "-u", "tester", "--password-stdin", &reg.host()],
        b"s3cret\n",
    );
    ok(&login);
    let out = ok(&env.capsa(&["push", &name]));
    let (_, digest) = served(&env, &name, Some("tester:s3cret")).expect("pushed");
    assert!(
        out.contains(&format!("1: digest: {digest} size: ")),
        "{out}"
    );
    // A mount asks to push here and to pull from the source repository at once.
    let sibling = format!("{}/test/sibling:1", reg.host());
    ok(&env.capsa(&["tag", "busybox", &sibling]));
    let out = ok(&env.capsa(&["push", &sibling]));
    assert!(out.contains(": Mounted from test/private"), "{out}");
    env.assert_clean();
}

#[test]
fn an_image_not_in_the_store_or_a_digest_is_named_and_nothing_is_sent() {
    let env = TestEnv::new();
    // Port 1: nothing listens; a push that reached for the registry would say so instead.
    let err = failed(&env.capsa(&["push", "127.0.0.1:1/team/nope:1"]));
    assert!(
        err.contains("no such image: 127.0.0.1:1/team/nope:1"),
        "{err}"
    );
    let err = failed(&env.capsa(&["push", "-a", "127.0.0.1:1/team/nope"]));
    assert!(
        err.contains("no such image: 127.0.0.1:1/team/nope"),
        "{err}"
    );
    let pinned = format!("busybox@sha256:{}", "0".repeat(64));
    let err = failed(&env.capsa(&["push", &pinned]));
    assert!(err.contains("digest"), "{err}");
    env.assert_clean();
}

#[test]
fn docker_push_through_capsa_serve_streams_docker_progress() {
    use base64::Engine as _;
    let env = TestEnv::new();
    let reg = LocalRegistry::start(&env);
    let api = env.serve();
    let name = format!("{}/team/api:v1", reg.host());
    api.docker_ok(&["tag", "busybox", &name]);
    let out = api.docker_ok(&["push", &name]);
    assert!(out.contains(": Pushed"), "{out}");
    let (_, digest) = served(&env, &name, None).expect("pushed");
    assert!(
        out.contains(&format!("v1: digest: {digest} size: ")),
        "{out}"
    );

    // Raw: Docker's JSON lines, the layer already there, the tag's digest in `aux`.
    let path = format!("/images/{}/team/api/push?tag=v1", reg.host());
    let (status, body) = api.request("POST", &path, None);
    assert_eq!(status, 200);
    let lines: Vec<Value> = text(&body)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines[0]["status"],
        format!("The push refers to repository [{}/team/api]", reg.host())
    );
    assert!(
        lines.iter().any(|l| l["status"] == "Layer already exists"),
        "{lines:?}"
    );
    let last = lines.last().unwrap();
    assert_eq!(
        last["aux"],
        json!({"Tag": "v1", "Digest": digest, "Size": last["aux"]["Size"]})
    );

    // An image the store does not have: the client's 404.
    let out = api.docker(&["push", &format!("{}/team/nope:v1", reg.host())]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("No such image"),
        "{}",
        text(&out.stderr)
    );

    // An authenticated registry: refused without credentials (the 401 named in the
    // stream's error), accepted with those the docker CLI sends from its config.
    let private = LocalRegistry::start_with_auth(&env, Auth::Basic("tester", "s3cret"));
    let name = format!("{}/team/private:v1", private.host());
    api.docker_ok(&["tag", "busybox", &name]);
    let denied = api.docker(&["push", &name]);
    assert!(!denied.status.success());
    assert!(
        text(&denied.stderr).contains("401"),
        "{}",
        text(&denied.stderr)
    );
    assert!(served(&env, &name, Some("tester:s3cret")).is_none());
    let config = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("tester:s3cret");
    std::fs::write(
        config.path().join("config.json"),
        json!({"auths": {private.host(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let mut push = api.docker_command(&["push", &name]);
    push.env("DOCKER_CONFIG", config.path());
    let out = run_bounded(push, Duration::from_secs(60));
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), api.log());
    assert!(served(&env, &name, Some("tester:s3cret")).is_some());
    // The credentials served this push only.
    assert!(!env.root().join("auth.json").exists());
    env.assert_clean();
}

#[test]
fn a_layer_larger_than_one_patch_goes_up_in_several_and_arrives_whole() {
    // 34 MiB of noise in a plain tar: more than one 32 MiB PATCH, streamed from the store.
    let mut noise = vec![0u8; 34 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in noise.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let mut layout = OciLayout::new();
    let layer = layout.layer(&tar_of(&[("noise", Some(&noise))]), Packing::Plain);
    drop(noise);
    let size = layer.descriptor["size"].as_u64().unwrap();
    let layer_digest = layer.descriptor["digest"].as_str().unwrap().to_string();
    assert!(size > 32 << 20);
    let desc = layout.image("amd64", &[layer], json!({"Cmd": ["sh"]}));
    let local = desc["digest"].as_str().unwrap().to_string();
    layout.tag("big", desc);
    let env = TestEnv::new();
    let archive = env.root().join("big.tar");
    let tar = std::process::Command::new("tar")
        .arg("-C")
        .arg(layout.path())
        .args(["-cf", archive.to_str().unwrap(), "."])
        .output()
        .unwrap();
    assert!(tar.status.success(), "{}", text(&tar.stderr));
    ok(&env.capsa(&["load", "-q", "-i", archive.to_str().unwrap()]));
    std::fs::remove_file(&archive).unwrap();
    let reg = LocalRegistry::start(&env);
    let name = format!("{}/team/big:1", reg.host());
    ok(&env.capsa(&["tag", "big", &name]));
    let out = ok(&env.capsa(&["push", &name]));
    assert!(out.contains(&format!("1: digest: {local} size: ")), "{out}");
    let (_, digest) = served(&env, &name, None).expect("pushed");
    assert_eq!(digest, local);
    // The registry checked the whole blob's digest at the final PUT; skopeo checks it again.
    let copy_dir = tempfile::tempdir().unwrap();
    let oci = format!("oci:{}:big", copy_dir.path().display());
    let copied = skopeo(
        &env,
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{name}"),
            &oci,
        ],
    );
    assert!(copied.status.success(), "{}", text(&copied.stderr));
    let stored = std::fs::metadata(reg.blob_file(&layer_digest)).unwrap();
    assert_eq!(stored.len(), size);
}

#[test]
fn a_registry_that_refuses_uploads_is_named_and_nothing_is_claimed() {
    use capsa_tests::registry::HostileServer;
    let env = TestEnv::new();
    let registry = HostileServer::start(&env, "127.0.0.1", "refuse-uploads", "");
    let name = format!("{}/team/app:1", registry.host());
    ok(&env.capsa(&["tag", "busybox", &name]));
    let out = env.capsa(&["push", &name]);
    let err = failed(&out);
    assert!(err.contains("503"), "{err}");
    assert!(
        err.contains("UNAVAILABLE: read-only for maintenance"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        !text(&out.stdout).contains("digest:"),
        "{}",
        text(&out.stdout)
    );
    // No manifest was offered, and the store records no push.
    let seen = registry.requests();
    assert!(!seen.contains("/manifests/"), "{seen}");
    assert_eq!(inspect(&env, &name, "{{json .RepoDigests}}"), "[]");
}

/// A registry may send uploads to another host (a storage service): the layer goes there,
/// the user's credentials do not.
#[test]
fn credentials_never_follow_an_upload_to_another_host() {
    use base64::Engine as _;
    use capsa_tests::registry::HostileServer;
    let env = TestEnv::new();
    let elsewhere = HostileServer::start(&env, "127.0.0.2", "refuse-uploads", "");
    let registry = HostileServer::start(&env, "127.0.0.1", "upload-elsewhere", &elsewhere.host());
    let secret = base64::engine::general_purpose::STANDARD.encode("alice:S3cretPW");
    let auth = json!({"auths": {registry.host(): {"auth": secret}}});
    std::fs::write(env.root().join("auth.json"), auth.to_string()).unwrap();
    let name = format!("{}/team/app:1", registry.host());
    ok(&env.capsa(&["tag", "busybox", &name]));
    let out = env.capsa(&["push", &name]);
    let err = failed(&out);
    // The registry got the credentials; the other host got the upload without them.
    assert!(registry.requests().contains(&format!("Basic {secret}")));
    let seen = elsewhere.requests();
    assert!(seen.contains("PATCH /upload -"), "{seen}");
    assert!(
        !seen.contains("Basic"),
        "credentials reached another host: {seen}"
    );
    assert!(err.contains("503"), "{err}");
}

#[test]
fn push_on_a_terminal_draws_one_line_per_layer() {
    let env = TestEnv::new();
    let src = LocalRegistry::start(&env);
    let dst = LocalRegistry::start(&env);
    seed(&src, "team/tty", "v1", Packing::Gzip, &[]);
    let pulled = format!("{}/team/tty:v1", src.host());
    ok(&env.capsa(&["pull", "-q", &pulled]));
    let name = format!("{}/team/tty:v1", dst.host());
    ok(&env.capsa(&["tag", &pulled, &name]));
    let command = format!(
        "{} push {name}; echo push-exit=$?; sleep 30",
        env.shell_prefix()
    );
    let tmux = capsa_tests::Tmux::start(&command, 120, 20);
    tmux.wait_for("push-exit=0");
    let screen = tmux.screen();
    let lines: Vec<&str> = screen.lines().collect();
    // One line per layer, ending in its final state (the bars drew over themselves).
    let pushed = lines.iter().filter(|l| l.ends_with(": Pushed")).count();
    assert_eq!(pushed, 3, "{screen}");
    assert!(
        !screen.contains("Pushing") && !screen.contains("Preparing"),
        "{screen}"
    );
    let digest = lines
        .iter()
        .position(|l| l.starts_with("v1: digest: sha256:"));
    let last_layer = lines.iter().rposition(|l| l.ends_with(": Pushed"));
    assert!(digest > last_layer, "bars stay above the summary: {screen}");
}

/// A registry open to anonymous reads answers `GET /v2/` without a challenge and asks for
/// credentials at the first push request: the stored ones are sent then.
#[test]
fn a_registry_that_asks_for_credentials_only_at_push_gets_them() {
    use base64::Engine as _;
    use capsa_tests::registry::HostileServer;
    let env = TestEnv::new();
    let registry = HostileServer::start(&env, "127.0.0.1", "challenge-on-push", "");
    let secret = base64::engine::general_purpose::STANDARD.encode("alice:S3cretPW");
    let auth = json!({"auths": {registry.host(): {"auth": secret}}});
    std::fs::write(env.root().join("auth.json"), auth.to_string()).unwrap();
    let name = format!("{}/team/app:1", registry.host());
    ok(&env.capsa(&["tag", "busybox", &name]));
    let err = failed(&env.capsa(&["push", &name]));
    // Past the challenge: the upload itself was refused (the registry is read-only).
    assert!(err.contains("503"), "{err}");
    let seen = registry.requests();
    assert!(
        seen.contains(&format!("POST /v2/team/app/blobs/uploads/ Basic {secret}")),
        "{seen}"
    );
}
