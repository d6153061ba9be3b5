//! Images end to end against a real registry (Debian's docker-registry on 127.0.0.1, filled
//! by skopeo): pull in every format, run, save, load elsewhere, share layers, remove; and
//! every kind of bad content, after which the store holds nothing half-written.

use capsa_tests::registry::{tar_of, Auth, BuiltLayer, LocalRegistry, OciLayout, Packing};
use capsa_tests::{busybox_tarball, text, TestEnv};
use serde_json::json;
use std::path::Path;

/// The busybox root file system as a gzip layer.
fn busybox_layer(layout: &OciLayout) -> BuiltLayer {
    let tar = std::fs::read(busybox_tarball()).unwrap();
    layout.layer(&tar, Packing::Gzip)
}

fn sh_config() -> serde_json::Value {
    json!({"Cmd": ["sh"], "Env": ["PATH=/bin"]})
}

/// Pushes a one-layer busybox image to `reg` as `repo:tag` (with `creds` when the registry
/// asks); returns the layer's digest.
fn push_busybox(reg: &LocalRegistry, repo: &str, tag: &str, creds: Option<&str>) -> String {
    let mut layout = OciLayout::new();
    let base = busybox_layer(&layout);
    let digest = base.descriptor["digest"].as_str().unwrap().to_string();
    let desc = layout.image("amd64", &[base], sh_config());
    layout.tag(tag, desc);
    reg.push_as(&layout, tag, repo, creds);
    digest
}

/// A three-layer image: busybox (gzip), files (`middle`: zstd where the format allows),
/// then whiteouts (plain tar).
fn three_layer_image(layout: &mut OciLayout, tag: &str, middle: Packing) {
    let base = busybox_layer(layout);
    let files = layout.layer(
        &tar_of(&[
            ("data/", None),
            ("data/a", Some(b"a\n")),
            ("data/b", Some(b"b\n")),
            ("etc/motd", Some(b"from layer two\n")),
            ("old/", None),
            ("old/x", Some(b"x\n")),
        ]),
        middle,
    );
    let removals = layout.layer(
        &tar_of(&[
            ("data/.wh.a", Some(b"")),
            ("old/", None),
            ("old/.wh..wh..opq", Some(b"")),
            ("old/y", Some(b"y\n")),
        ]),
        Packing::Plain,
    );
    let desc = layout.image("amd64", &[base, files, removals], sh_config());
    layout.tag(tag, desc);
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_pulled_multi_layer_image_runs_and_survives_save_and_load() {
    let env = TestEnv::new();
    let reg = LocalRegistry::start(&env);
    let mut layout = OciLayout::new();
    three_layer_image(&mut layout, "1.0", Packing::Zstd);
    reg.push(&layout, "1.0", "test/app");
    let name = format!("{}/test/app:1.0", reg.host());

    let pulled = ok(&env.capsa(&["pull", &name]));
    assert!(pulled.contains("Pull complete"), "{pulled}");
    assert!(pulled.trim_end().ends_with(&name), "{pulled}");
    // Whiteouts and opaque directories of the top layer hide what lower layers had.
    let out = ok(&env.run(&[
        "--rm",
        &name,
        "sh",
        "-c",
        "cat /etc/motd; ls /data; ls /old",
    ]));
    assert_eq!(out, "from layer two\nb\ny\n");
    let listed = ok(&env.capsa(&["images", "--digests"]));
    assert!(
        listed.contains(&format!("{}/test/app", reg.host())),
        "{listed}"
    );
    assert!(listed.contains("sha256:"), "{listed}");

    // A second pull fetches nothing.
    let again = ok(&env.capsa(&["pull", &name]));
    assert!(again.contains("Already exists"), "{again}");
    assert!(again.contains("Image is up to date"), "{again}");

    // save -> load into another root: same ID, same layers, same behaviour.
    let archive = env.root().join("app.tar");
    ok(&env.capsa(&["save", "-o", archive.to_str().unwrap(), &name]));
    let other = TestEnv::new();
    let loaded = ok(&other.capsa(&["load", "-i", archive.to_str().unwrap()]));
    assert!(
        loaded.contains(&format!("Loaded image: {name}")),
        "{loaded}"
    );
    let fmt = "{{.Id}} {{json .RootFS.Layers}}";
    assert_eq!(
        ok(&env.capsa(&["image", "inspect", "-f", fmt, &name])),
        ok(&other.capsa(&["image", "inspect", "-f", fmt, &name]))
    );
    let out = ok(&other.run(&["--rm", &name, "cat", "/etc/motd"]));
    assert_eq!(out, "from layer two\n");
    // The archive is a valid OCI layout and docker-archive for other tools too.
    let skopeo = std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            &format!("docker-archive:{}", archive.display()),
        ])
        .output()
        .unwrap();
    assert!(skopeo.status.success(), "{}", text(&skopeo.stderr));
}

#[test]
fn the_platform_is_chosen_from_an_index() {
    let env = TestEnv::new();
    let reg = LocalRegistry::start(&env);
    let mut layout = OciLayout::new();
    let base = busybox_layer(&layout);
    let amd = layout.image(
        "amd64",
        std::slice::from_ref(&base),
        json!({"Env": ["PATH=/bin", "ARCH=amd64"]}),
    );
    let arm = layout.image(
        "arm64",
        &[base],
        json!({"Env": ["PATH=/bin", "ARCH=arm64"]}),
    );
    let index = layout.index_of(&[amd, arm]);
    layout.tag("multi", index);
    reg.push(&layout, "multi", "test/multi");
    let name = format!("{}/test/multi:multi", reg.host());

    ok(&env.capsa(&["pull", "-q", &name]));
    let arch = ok(&env.capsa(&["image", "inspect", "-f", "{{.Architecture}}", &name]));
    assert_eq!(arch.trim(), "amd64");
    assert_eq!(
        ok(&env.run(&["--rm", &name, "sh", "-c", "echo $ARCH"])),
        "amd64\n"
    );
    ok(&env.capsa(&["pull", "-q", "--platform", "linux/arm64", &name]));
    let arch = ok(&env.capsa(&["image", "inspect", "-f", "{{.Architecture}}", &name]));
    assert_eq!(arch.trim(), "arm64");

    let out = env.capsa(&["pull", "--platform", "linux/s390x", &name]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("linux/s390x") && err.contains("linux/arm64"),
        "{err}"
    );
}

#[test]
fn shared_layers_are_fetched_once_even_by_concurrent_pulls() {
    let env = TestEnv::new();
    let reg = LocalRegistry::start(&env);
    let mut layout = OciLayout::new();
    let base = busybox_layer(&layout);
    for (tag, file) in [("one", "1"), ("two", "2")] {
        let extra = layout.layer(&tar_of(&[("which", Some(file.as_bytes()))]), Packing::Gzip);
        let desc = layout.image("amd64", &[base.clone(), extra], sh_config());
        layout.tag(tag, desc);
        reg.push(&layout, tag, "test/shared");
    }
    let names: Vec<String> = ["one", "two"]
        .iter()
        .map(|t| format!("{}/test/shared:{t}", reg.host()))
        .collect();
    let children: Vec<_> = names
        .iter()
        .map(|n| env.command(&["pull", "-q", n]).output())
        .collect();
    for out in children {
        ok(&out.unwrap());
    }
    // The base is the same tar as the imported busybox: one directory for all three
    // images, plus each pulled image's own top layer.
    assert_eq!(entries(&env.root().join("layers")).len(), 1 + 2);
    for (n, want) in names.iter().zip(["1", "2"]) {
        assert_eq!(ok(&env.run(&["--rm", n, "cat", "/which"])), want);
    }
    let df = ok(&env.capsa(&["system", "df", "-v"]));
    assert!(df.contains("SHARED SIZE"), "{df}");
    assert!(df.contains("Images, logical"), "{df}");
}

#[test]
fn bad_blobs_fail_the_pull_and_leave_nothing_behind() {
    let env = TestEnv::new();
    let reg = LocalRegistry::start(&env);
    let digest = push_busybox(&reg, "test/bad", "1", None);
    let name = format!("{}/test/bad:1", reg.host());
    let blob = reg.blob_file(&digest);
    let good = std::fs::read(&blob).unwrap();
    let layers_before = entries(&env.root().join("layers"));

    let check_failed = |what: &str, expect: &str| {
        let out = env.capsa(&["pull", &name]);
        assert!(!out.status.success(), "{what}: pull succeeded");
        let err = text(&out.stderr);
        assert!(
            err.contains(&name) && err.contains(&digest),
            "{what}: {err}"
        );
        assert!(err.contains(expect), "{what}: {err}");
        assert!(
            !ok(&env.capsa(&["images"])).contains("test/bad"),
            "{what}: listed"
        );
        assert_eq!(entries(&env.root().join("layers")), layers_before, "{what}");
        assert!(
            entries(&env.root().join("tmp")).is_empty(),
            "{what}: staging left"
        );
    };
    // The same length, other bytes: the digest no longer matches.
    let mut corrupt = good.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xff;
    std::fs::write(&blob, &corrupt).unwrap();
    check_failed("corrupt blob", "digest mismatch");
    // Cut short.
    std::fs::write(&blob, &good[..good.len() / 3]).unwrap();
    check_failed("truncated blob", "truncated blob");
    // The registry lost it: a 404 for the blob.
    std::fs::remove_file(&blob).unwrap();
    check_failed("missing blob", "404");
    // A good copy again: the pull succeeds and the image runs.
    std::fs::write(&blob, &good).unwrap();
    ok(&env.capsa(&["pull", "-q", &name]));
    assert_eq!(ok(&env.run(&["--rm", &name, "echo", "fine"])), "fine\n");

    let missing = env.capsa(&["pull", &format!("{}/test/bad:nope", reg.host())]);
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("not found"),
        "{}",
        text(&missing.stderr)
    );
}

/// rt2 #1 by pull: a config whose diff ID is a path (`sha256:<hex>/../../x`) is refused
/// where the config is read, naming the ID (it failed on a missing lock file before, by
/// accident); nothing is stored.
#[test]
fn a_pulled_config_whose_diff_id_is_a_path_is_refused() {
    let env = TestEnv::new();
    let reg = LocalRegistry::start(&env);
    let mut layout = OciLayout::new();
    let layer = layout.layer(&tar_of(&[("hello", Some(b"hi\n"))]), Packing::Gzip);
    let bad_id = format!("{}/../../x", layer.diff_id);
    let bad = BuiltLayer {
        diff_id: bad_id.clone(),
        ..layer
    };
    let desc = layout.image("amd64", &[bad], sh_config());
    layout.tag("1", desc);
    reg.push(&layout, "1", "test/baddiff");
    let name = format!("{}/test/baddiff:1", reg.host());
    let layers_before = entries(&env.root().join("layers"));
    let blobs_before = entries(&env.root().join("blobs/sha256"));

    let out = env.capsa(&["pull", &name]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(&name), "{err}");
    assert!(
        err.contains(&format!(
            "rootfs.diff_ids[0]: {bad_id:?} is not a sha256 digest"
        )),
        "{err}"
    );
    assert!(!ok(&env.capsa(&["images"])).contains("baddiff"));
    assert_eq!(entries(&env.root().join("layers")), layers_before);
    assert_eq!(entries(&env.root().join("blobs/sha256")), blobs_before);
    assert!(entries(&env.root().join("tmp")).is_empty(), "staging left");
}

#[test]
fn a_layer_that_writes_outside_its_directory_is_refused() {
    let env = TestEnv::new();
    let reg = LocalRegistry::start(&env);
    let mut layout = OciLayout::new();
    let base = busybox_layer(&layout);
    let evil = layout.layer(
        &tar_of(&[("../../../../tmp/capsa-escaped", Some(b"pwned"))]),
        Packing::Gzip,
    );
    let evil_digest = evil.descriptor["digest"].as_str().unwrap().to_string();
    let desc = layout.image("amd64", &[base, evil], sh_config());
    layout.tag("1", desc);
    reg.push(&layout, "1", "test/evil");
    let name = format!("{}/test/evil:1", reg.host());
    let out = env.capsa(&["pull", &name]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains(&evil_digest) && err.contains(".."), "{err}");
    assert!(!Path::new("/tmp/capsa-escaped").exists());
    assert!(!ok(&env.capsa(&["images"])).contains("test/evil"));
    assert!(entries(&env.root().join("tmp")).is_empty());
}

#[test]
fn run_pulls_a_missing_image() {
    let env = TestEnv::new();
    let reg = LocalRegistry::start(&env);
    push_busybox(&reg, "test/auto", "latest", None);
    let name = format!("{}/test/auto", reg.host());
    let out = env.run(&["--rm", &name, "echo", "pulled and ran"]);
    assert_eq!(ok(&out), "pulled and ran\n");
    assert!(
        text(&out.stderr).contains("Unable to find image"),
        "{}",
        text(&out.stderr)
    );
    let never = env.run(&["--rm", "--pull", "never", "no/such:image", "true"]);
    assert_eq!(never.status.code(), Some(125));
    assert!(text(&never.stderr).contains("no/such:image"));
}

#[test]
fn basic_auth_login_stores_credentials_privately_and_logout_forgets_them() {
    login_pull_logout(Auth::Basic("tester", "s3cret"));
}

#[test]
fn bearer_token_auth_works_with_login() {
    login_pull_logout(Auth::Token("tester", "s3cret"));
}

fn login_pull_logout(auth: Auth<'_>) {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    let reg = LocalRegistry::start_with_auth(&env, auth);
    push_busybox(&reg, "test/private", "1", Some("tester:s3cret"));
    let name = format!("{}/test/private:1", reg.host());

    let denied = env.capsa(&["pull", &name]);
    assert!(!denied.status.success());
    assert!(
        text(&denied.stderr).contains("401"),
        "{}",
        text(&denied.stderr)
    );
    let wrong = env.capsa_with_stdin(
        &["login", "-u", "tester", "--password-stdin", &reg.host()],
        b"wrong\n",
    );
    assert!(!wrong.status.success());
    assert!(
        !env.root().join("auth.json").exists()
            || !std::fs::read_to_string(env.root().join("auth.json"))
                .unwrap()
                .contains(&reg.host())
    );

    let login = env.capsa_with_stdin(
        &["login", "-u", "tester", "--password-stdin", &reg.host()],
        b"s3cret\n",
    );
    assert!(
        text(&login.stdout).contains("Login Succeeded"),
        "{}",
        text(&login.stderr)
    );
    let mode = std::fs::metadata(env.root().join("auth.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    ok(&env.capsa(&["pull", "-q", &name]));
    ok(&env.capsa(&["rmi", &name]));
    ok(&env.capsa(&["logout", &reg.host()]));
    assert!(!env.capsa(&["pull", &name]).status.success());
}

#[test]
fn rmi_tag_and_prune_keep_what_containers_use() {
    let env = TestEnv::new();
    let reg = LocalRegistry::start(&env);
    push_busybox(&reg, "test/rm", "1", None);
    let name = format!("{}/test/rm:1", reg.host());
    ok(&env.capsa(&["pull", "-q", &name]));
    ok(&env.capsa(&["tag", &name, "mine:v1"]));
    let id = ok(&env.capsa(&["image", "inspect", "-f", "{{.Id}}", "mine:v1"]));
    // Two names: removing one only untags.
    let out = ok(&env.capsa(&["rmi", "mine:v1"]));
    assert_eq!(out, "Untagged: mine:v1\n");
    // A container uses it: removal needs -f, and even then the image stays (unnamed).
    ok(&env.create(&["--name", "user", &name, "true"]));
    let refused = env.capsa(&["rmi", &name]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("conflict"),
        "{}",
        text(&refused.stderr)
    );
    ok(&env.capsa(&["rmi", "-f", &name]));
    assert!(ok(&env.capsa(&["images"])).contains("<none>"));
    ok(&env.capsa(&["start", "-a", "user"]));
    // Without the container, prune removes it and its layer and blobs.
    ok(&env.capsa(&["rm", "user"]));
    let pruned = ok(&env.capsa(&["image", "prune", "-f"]));
    assert!(pruned.contains(id.trim()), "{pruned}");
    let blobs_left = entries(&env.root().join("blobs/sha256"));
    // Only the imported busybox remains: its manifest, config and one layer blob.
    assert_eq!(blobs_left.len(), 3, "{blobs_left:?}");
    assert_eq!(entries(&env.root().join("layers")).len(), 1);
    env.assert_clean();
}

#[test]
fn docker_archives_from_skopeo_load_and_bad_archives_do_not() {
    let mut layout = OciLayout::new();
    // docker-archive has no zstd layers.
    three_layer_image(&mut layout, "v2", Packing::Gzip);
    let env = TestEnv::new();
    let archive = env.root().join("docker.tar");
    let out = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            &format!("oci:{}:v2", layout.path().display()),
            &format!("docker-archive:{}:example/app:v2", archive.display()),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let loaded = ok(&env.capsa(&["load", "-i", archive.to_str().unwrap()]));
    assert!(loaded.contains("Loaded image: example/app:v2"), "{loaded}");
    assert_eq!(
        ok(&env.run(&["--rm", "example/app:v2", "ls", "/data"])),
        "b\n"
    );
    let history = ok(&env.capsa(&["history", "example/app:v2"]));
    assert!(history.contains("test layer 2"), "{history}");

    let junk = env.root().join("junk.tar");
    std::fs::write(&junk, b"this is not a tar archive at all").unwrap();
    let out = env.capsa(&["load", "-i", junk.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("junk.tar"),
        "{}",
        text(&out.stderr)
    );
    assert!(entries(&env.root().join("tmp")).is_empty());
}

#[test]
fn search_lists_matching_repositories_of_a_catalog() {
    let env = TestEnv::new();
    let reg = LocalRegistry::start(&env);
    push_busybox(&reg, "team/webapp", "1", None);
    push_busybox(&reg, "team/db", "1", None);
    let out = ok(&env.capsa(&["search", &format!("{}/web", reg.host())]));
    assert!(
        out.contains("team/webapp") && !out.contains("team/db"),
        "{out}"
    );
}

#[test]
fn an_interrupted_pull_leaves_nothing_a_later_pull_trips_over() {
    let env = TestEnv::new();
    let reg = LocalRegistry::start(&env);
    let mut layout = OciLayout::new();
    let base = busybox_layer(&layout);
    // 48 MiB that does not compress: the pull is still streaming when it is killed.
    let mut noise = vec![0u8; 48 << 20];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in noise.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    let big = layout.layer(&tar_of(&[("noise", Some(&noise))]), Packing::Gzip);
    let desc = layout.image("amd64", &[base, big], sh_config());
    layout.tag("1", desc);
    reg.push(&layout, "1", "test/big");
    let name = format!("{}/test/big:1", reg.host());

    let mut child = env.command(&["pull", "-q", &name]).spawn().unwrap();
    capsa_tests::eventually(
        "a layer being staged",
        std::time::Duration::from_secs(30),
        || {
            entries(&env.root().join("tmp"))
                .iter()
                .any(|e| e.starts_with("staging-"))
        },
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!ok(&env.capsa(&["images"])).contains("test/big"));

    ok(&env.capsa(&["pull", "-q", &name]));
    assert_eq!(
        ok(&env.run(&["--rm", &name, "sh", "-c", "wc -c < /noise"])).trim(),
        (48 << 20).to_string()
    );
    // The killed pull's staging directories are swept by later image commands: at once when
    // the pull died holding its lock, ten seconds on if it died in the instant of taking it.
    let swept = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        ok(&env.capsa(&["image", "prune", "-f"]));
        let left = entries(&env.root().join("tmp"));
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < swept,
            "the killed pull's leftovers are not swept: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

#[test]
fn https_registries_are_verified_against_certs_d() {
    let env = TestEnv::new();
    let reg = LocalRegistry::start_with_auth(&env, Auth::Tls);
    push_busybox(&reg, "test/tls", "1", None);
    let name = format!("{}/test/tls:1", reg.host());
    // The CA is unknown: HTTPS fails verification, and plain HTTP finds a TLS server.
    let out = env.capsa(&["pull", &name]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("https:") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    // Trusted through certs.d, as Docker's /etc/docker/certs.d.
    let certs = env.root().join("certs.d").join(reg.host());
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(reg.ca_certificate(), certs.join("ca.crt")).unwrap();
    ok(&env.capsa(&["pull", "-q", &name]));
    assert_eq!(ok(&env.run(&["--rm", &name, "echo", "tls"])), "tls\n");
}

#[test]
fn pull_on_a_terminal_draws_one_line_per_layer() {
    let env = TestEnv::new();
    let reg = LocalRegistry::start(&env);
    let mut layout = OciLayout::new();
    three_layer_image(&mut layout, "tty", Packing::Gzip);
    reg.push(&layout, "tty", "test/tty");
    let name = format!("{}/test/tty:tty", reg.host());
    let command = format!(
        "{} pull {name}; echo pull-exit=$?; sleep 30",
        env.shell_prefix()
    );
    let tmux = capsa_tests::Tmux::start(&command, 120, 20);
    tmux.wait_for("pull-exit=0");
    let screen = tmux.screen();
    let lines: Vec<&str> = screen.lines().collect();
    // One line per layer, ending in its final state (the bars drew over themselves).
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.ends_with(": Pull complete"))
            .count(),
        3,
        "{screen}"
    );
    assert!(!screen.contains("Downloading"), "{screen}");
    let digest = lines.iter().position(|l| l.starts_with("Digest: sha256:"));
    let last_layer = lines.iter().rposition(|l| l.contains(": Pull complete"));
    assert!(digest > last_layer, "bars stay above the summary: {screen}");
}

#[test]
fn docker_media_types_and_pulls_by_digest() {
    let env = TestEnv::new();
    let reg = LocalRegistry::start(&env);
    let mut layout = OciLayout::new();
    let base = busybox_layer(&layout);
    let amd = layout.image("amd64", std::slice::from_ref(&base), sh_config());
    let arm = layout.image("arm64", &[base], sh_config());
    let index = layout.index_of(&[amd, arm]);
    layout.tag("list", index);
    // skopeo converts to Docker's manifest list and schema 2 manifests on the way.
    reg.push_with(&layout, "list", "test/docker", &["--format", "v2s2"]);
    let name = format!("{}/test/docker:list", reg.host());
    assert!(env.capsa(&["pull", "-q", &name]).status.success());
    // What was stored is what the registry served: Docker's schema 2.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.root().join("images.json")).unwrap()).unwrap();
    let stored_docker_manifest = index["images"].as_object().unwrap().keys().any(|digest| {
        let blob = env
            .root()
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        std::fs::read_to_string(blob)
            .is_ok_and(|m| m.contains("application/vnd.docker.distribution.manifest.v2+json"))
    });
    assert!(
        stored_docker_manifest,
        "no Docker schema 2 manifest was pulled"
    );
    let repo_digest = env.capsa(&["image", "inspect", "-f", "{{json .RepoDigests}}", &name]);
    let repo_digest = text(&repo_digest.stdout);
    let digest = repo_digest
        .split('@')
        .nth(1)
        .and_then(|d| d.split('"').next())
        .unwrap_or_else(|| panic!("no repo digest: {repo_digest}"))
        .to_string();
    // The same image by digest, into another root: the list is verified against it.
    let other = TestEnv::new();
    let reg_for_other = format!("{}/test/docker@{digest}", reg.host());
    let pulled = in_netns_of(&env, &other, &["pull", "-q", &reg_for_other]);
    assert!(pulled.status.success(), "{}", text(&pulled.stderr));
    let wrong = format!("{}/test/docker@sha256:{}", reg.host(), "0".repeat(64));
    let out = in_netns_of(&env, &other, &["pull", &wrong]);
    assert!(!out.status.success());
}

/// Runs `capsa ARGS` with `other`'s root in `env`'s network namespace (where the registry is).
fn in_netns_of(env: &TestEnv, other: &TestEnv, args: &[&str]) -> std::process::Output {
    let mut cmd = env.host_command(capsa_tests::capsa_bin().to_str().unwrap());
    cmd.arg("--root").arg(other.root()).args(args);
    capsa_tests::run_bounded(cmd, std::time::Duration::from_secs(60))
}

/// rt2 #7: stored credentials for a plain-HTTP registry are never sent to a token realm
/// over plain HTTP on another host (they were, in the clear, to whatever host the realm
/// named); the pull is refused saying why.
#[test]
fn credentials_never_go_to_a_plain_http_realm_on_another_host() {
    use base64::Engine as _;
    use capsa_tests::registry::HostileServer;
    let env = TestEnv::new();
    let realm = HostileServer::start(&env, "127.0.0.2", "token", "");
    let token_url = format!("http://{}/token", realm.host());
    let registry = HostileServer::start(&env, "127.0.0.1", "bearer", &token_url);
    let secret = "alice:S3cretPW";
    let auth = format!(
        r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
        registry.host(),
        base64::engine::general_purpose::STANDARD.encode(secret)
    );
    std::fs::write(env.root().join("auth.json"), auth).unwrap();
    let out = env.capsa(&["pull", &format!("{}/app", registry.host())]);
    let err = text(&out.stderr);
    let seen = realm.requests();
    assert!(
        !seen.contains("Basic"),
        "credentials reached the realm: {seen}"
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("the token realm is plain HTTP on another host (127.0.0.2)"),
        "{err}"
    );
}

/// rt2 #13: a registry's own error text with a newline and terminal escape sequences is
/// shown on one line, escaped.
#[test]
fn registry_error_text_is_shown_escaped_on_one_line() {
    use capsa_tests::registry::HostileServer;
    let env = TestEnv::new();
    let registry = HostileServer::start(&env, "127.0.0.1", "hostile-errors", "");
    let out = env.capsa(&["pull", &format!("{}/app:1", registry.host())]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!err.contains('\u{1b}') && !err.contains('\u{7}'), "{err:?}");
    assert!(
        err.contains(r"no such thing\nInjected second line \x1b[31mRED"),
        "{err}"
    );
}

/// Red team 30 #6: a registry's redirect is followed to HTTPS anywhere, but to plain HTTP
/// only to loopback or an insecure registry: a private image's manifests and blobs never
/// cross the network in the clear.
#[test]
fn redirects_to_plain_http_elsewhere_are_refused() {
    use capsa_tests::registry::HostileServer;
    let env = TestEnv::new();
    // To a non-loopback host over HTTP: refused before any connection (nothing listens
    // there; the test's network namespace has no route off this machine).
    let registry = HostileServer::start(&env, "127.0.0.1", "redirect", "10.77.0.1:8080");
    let out = env.capsa(&["pull", &format!("{}/private:1", registry.host())]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("plain HTTP to 10.77.0.1:8080, which is neither loopback nor listed as an insecure registry"),
        "{err}"
    );
    // To loopback: followed (the other server's own answer reaches the user).
    let moved = HostileServer::start(&env, "127.0.0.2", "hostile-errors", "");
    let registry = HostileServer::start(&env, "127.0.0.1", "redirect", &moved.host());
    let out = env.capsa(&["pull", &format!("{}/private:1", registry.host())]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no such thing"), "{err}");
    assert!(
        moved.requests().contains("GET /v2/moved/manifests/1"),
        "{}",
        moved.requests()
    );
}

/// Issue 16 #11: one image (one config) that arrives under two manifests, imported from a
/// tarball and pulled after another tool pushed it (skopeo, converting to Docker's
/// schema 2), is one image: its own ID runs it, `system df` measures it, `images` shows its
/// age and size, and `rmi` by ID treats its two names as Docker does.
#[test]
fn one_config_under_two_manifests_is_one_image() {
    let env = TestEnv::new();
    let reg = LocalRegistry::start(&env);
    let archive = env.root().join("busybox-save.tar");
    ok(&env.capsa(&["save", "-o", archive.to_str().unwrap(), "busybox"]));
    let name = format!("{}/test/same:1", reg.host());
    let mut push = env.host_command("skopeo");
    push.args(["copy", "--quiet", "--dest-tls-verify=false"])
        .args(["--format", "v2s2"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("docker://{name}"));
    let pushed = capsa_tests::run_bounded(push, std::time::Duration::from_secs(60));
    assert!(pushed.status.success(), "{}", text(&pushed.stderr));
    ok(&env.capsa(&["pull", "-q", &name]));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.root().join("images.json")).unwrap()).unwrap();
    assert_eq!(
        index["images"].as_object().unwrap().len(),
        2,
        "two manifests are stored: {index}"
    );
    let id = ok(&env.capsa(&["image", "inspect", "-f", "{{.Id}}", "busybox"]));
    let pulled_id = ok(&env.capsa(&["image", "inspect", "-f", "{{.Id}}", &name]));
    assert_eq!(id, pulled_id, "one config, one ID");
    let id = id.trim().to_string();
    let short = &id["sha256:".len()..][..12];

    assert_eq!(
        ok(&env.capsa(&["images", "-q", "busybox"])),
        format!("{short}\n")
    );
    assert_eq!(ok(&env.capsa(&["images", "-q"])), format!("{short}\n"));
    let listed = ok(&env.capsa(&["images"]));
    let rows: Vec<&str> = listed.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "one row per name: {listed}");
    for row in &rows {
        assert!(row.contains(short), "{listed}");
        assert!(!row.contains("N/A") && !row.contains(" 0B"), "{listed}");
    }
    let ran = env.run(&["--rm", "--network", "none", short, "true"]);
    assert!(ran.status.success(), "{}", text(&ran.stderr));
    let df = ok(&env.capsa(&["system", "df"]));
    assert!(
        df.lines()
            .any(|l| l.starts_with("Images ") && l.split_whitespace().nth(1) == Some("1")),
        "{df}"
    );
    let df = ok(&env.capsa(&["system", "df", "-v"]));
    assert_eq!(df.matches(short).count(), 1, "{df}");
    let inspected = ok(&env.capsa(&["image", "inspect", "-f", "{{json .RepoTags}}", short]));
    assert!(
        inspected.contains("busybox:latest") && inspected.contains("test/same:1"),
        "{inspected}"
    );

    // By ID, with two names: refused without -f, and nothing untagged.
    let refused = env.capsa(&["rmi", short]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("referenced in multiple repositories"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(ok(&env.capsa(&["images"])).lines().count(), 3);
    // -f untags both names and deletes the image, both manifests and every blob and layer.
    let removed = ok(&env.capsa(&["rmi", "-f", short]));
    let mut lines: Vec<&str> = removed.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            format!("Deleted: {id}").as_str(),
            format!("Untagged: {name}").as_str(),
            "Untagged: busybox:latest",
        ],
        "{removed}"
    );
    assert_eq!(ok(&env.capsa(&["images", "-q"])), "");
    assert!(entries(&env.root().join("blobs/sha256")).is_empty());
    assert!(entries(&env.root().join("layers")).is_empty());
    env.assert_clean();
}

#[test]
fn an_oci_layout_whose_index_names_a_tag_loads_tagged() {
    // skopeo's and umoci's `oci:DIR:NAME` write NAME as the ref.name annotation alone.
    let mut layout = OciLayout::new();
    let base = busybox_layer(&layout);
    let desc = layout.image("amd64", &[base], sh_config());
    layout.tag("web", desc);
    let env = TestEnv::new();
    let archive = env.root().join("oci.tar");
    let tar = std::process::Command::new("tar")
        .arg("-C")
        .arg(layout.path())
        .args(["-cf", archive.to_str().unwrap(), "."])
        .output()
        .unwrap();
    assert!(tar.status.success(), "{}", text(&tar.stderr));
    let loaded = ok(&env.capsa(&["load", "-i", archive.to_str().unwrap()]));
    assert!(loaded.contains("Loaded image: web:latest"), "{loaded}");
    let listed = ok(&env.capsa(&["images", "--format", "{{.Repository}}:{{.Tag}}"]));
    assert!(listed.lines().any(|l| l == "web:latest"), "{listed}");
    assert!(!listed.contains("<none>"), "{listed}");
    assert_eq!(ok(&env.run(&["--rm", "web", "echo", "hi"])), "hi\n");
}
