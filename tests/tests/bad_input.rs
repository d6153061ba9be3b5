//! Bad input: one clear line naming the cause, exit 125, nothing created or left behind.

use capsa_tests::{text, TestEnv};

fn refused(env: &TestEnv, args: &[&str], needle: &str) {
    let out = env.run(args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{args:?}: {err}");
    assert!(
        err.contains(needle),
        "{args:?}: expected {needle:?} in {err:?}"
    );
    assert!(!err.contains("panicked"), "{err}");
    env.assert_clean();
}

#[test]
fn unknown_and_malformed_images() {
    let env = TestEnv::new();
    refused(&env, &["no-such-image"], "no-such-image");
    refused(&env, &["Bad:Ref:"], "invalid reference format");
}

#[test]
fn impossible_flag_values() {
    let env = TestEnv::new();
    refused(&env, &["-m", "-64m", "busybox", "true"], "--memory");
    refused(&env, &["-m", "lots", "busybox", "true"], "--memory");
    refused(&env, &["--cpus", "0", "busybox", "true"], "--cpus");
    refused(
        &env,
        &["--pids-limit", "-9", "busybox", "true"],
        "--pids-limit",
    );
    refused(
        &env,
        &["--cap-add", "CAP_FLY", "busybox", "true"],
        "CAP_FLY",
    );
    refused(
        &env,
        &["-v", "relative:/data", "busybox", "true"],
        "named volumes",
    );
    refused(
        &env,
        &["--security-opt", "apparmor=x", "busybox", "true"],
        "--security-opt",
    );
    refused(
        &env,
        &["--name", "bad name", "busybox", "true"],
        "invalid container name",
    );
    refused(&env, &["-w", "relative", "busybox", "true"], "absolute");
}

#[test]
fn unknown_user_is_refused_and_nothing_is_left() {
    let env = TestEnv::new();
    refused(
        &env,
        &["-u", "ghost", "busybox", "true"],
        "unable to find user ghost",
    );
}

#[test]
fn a_seccomp_profile_that_does_not_parse() {
    let env = TestEnv::new();
    let profile = env.root().join("broken.json");
    std::fs::write(&profile, "{ not json").unwrap();
    let opt = format!("seccomp={}", profile.display());
    refused(
        &env,
        &["--security-opt", &opt, "busybox", "true"],
        "broken.json",
    );
    let missing = format!("seccomp={}", env.root().join("missing.json").display());
    refused(
        &env,
        &["--security-opt", &missing, "busybox", "true"],
        "missing.json",
    );
}

#[test]
fn rm_and_start_of_unknown_containers() {
    let env = TestEnv::new();
    // `inspect` looks for images too, and says so as Docker does.
    for (verb, what) in [
        ("rm", "container"),
        ("start", "container"),
        ("wait", "container"),
        ("inspect", "object"),
    ] {
        let out = env.capsa(&[verb, "nope"]);
        assert_eq!(out.status.code(), Some(1), "{verb}");
        assert!(
            text(&out.stderr).contains(&format!("No such {what}: nope")),
            "{verb}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn importing_garbage_names_the_file_and_stores_nothing() {
    let env = TestEnv::new();
    let junk = env.root().join("junk.tar");
    std::fs::write(&junk, vec![0x42u8; 3000]).unwrap();
    let out = env.capsa(&["import", junk.to_str().unwrap(), "junk"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("junk.tar"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&env.capsa(&["images"]).stdout).contains("junk"));
}

#[test]
fn an_ambiguous_id_prefix_is_named_and_changes_nothing() {
    let env = TestEnv::new();
    // 17 containers: at least two share the first hex digit of their ID.
    let mut ids = Vec::new();
    for i in 0..17 {
        let out = env.create(&["--name", &format!("c{i}"), "busybox", "true"]);
        ids.push(text(&out.stdout).trim().to_string());
    }
    let shared = (0..ids.len())
        .flat_map(|a| ((a + 1)..ids.len()).map(move |b| (a, b)))
        .find(|&(a, b)| ids[a][..1] == ids[b][..1])
        .map(|(a, _)| ids[a][..1].to_string())
        .unwrap();
    let out = env.capsa(&["rm", "-f", &shared]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("multiple containers"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(env.container_dirs().len(), 17, "a container was removed");
}

#[test]
fn bad_templates_are_named() {
    let env = TestEnv::new();
    assert!(env
        .run(&["--name", "tpl", "busybox", "true"])
        .status
        .success());
    let out = env.capsa(&["inspect", "-f", "{{.State.Nope}}", "tpl"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(".State.Nope"),
        "{}",
        text(&out.stderr)
    );
    let out = env.capsa(&["ps", "-a", "--format", "{{.ID"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unclosed"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        env.inspect("tpl", "{{json .NetworkSettings.Networks.bridge.Gateway}}"),
        r#""10.88.0.1""#
    );
}

/// Every path in the store but the lock files (taking a lock creates its file), with
/// the image index's content: what a failed command must leave as it found it.
fn store_listing(env: &TestEnv) -> Vec<String> {
    fn walk(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let rel = e.path().strip_prefix(base).unwrap().display().to_string();
            if rel == "locks" || rel.starts_with("locks/") {
                continue;
            }
            out.push(rel);
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), base, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(env.root(), env.root(), &mut out);
    out.sort();
    out.push(std::fs::read_to_string(env.root().join("images.json")).unwrap_or_default());
    out
}

/// Asserts the store still lists `before`, naming what appeared or went.
fn assert_unchanged(env: &TestEnv, before: &[String], what: &str) {
    let after = store_listing(env);
    let added: Vec<_> = after.iter().filter(|p| !before.contains(p)).collect();
    let gone: Vec<_> = before.iter().filter(|p| !after.contains(p)).collect();
    assert!(
        added.is_empty() && gone.is_empty(),
        "{what}: the store changed: added {added:?}, gone {gone:?}"
    );
}

/// A tar stream of `(name, bytes)` entries, names written as given (even `..`).
fn raw_tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        h.set_entry_type(if name.ends_with('/') {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// `load -i FILE` (FILE in the store's parent), checked to fail with one line naming the
/// archive and `needle`, leaving the store unchanged.
fn load_refused(env: &TestEnv, name: &str, archive: &[u8], needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, archive).unwrap();
    let before = store_listing(env);
    let out = env.capsa(&["load", "-i", path.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{name}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{name}: {err}");
    assert!(err.contains(name) && err.contains(needle), "{name}: {err}");
    assert_unchanged(env, &before, name);
    assert!(!dir.path().join("escape").exists());
}

#[test]
fn loading_an_archive_that_holds_no_image_is_refused() {
    let env = TestEnv::new();
    let dotdot = raw_tar(&[("../escape", b"x"), ("manifest.json", b"[]")]);
    load_refused(&env, "dotdot.tar", &dotdot, "../escape: path leads outside");
    let empty = raw_tar(&[("manifest.json", b"[]")]);
    load_refused(&env, "empty.tar", &empty, "lists no images");
    let empty_oci = raw_tar(&[
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        ("index.json", br#"{"schemaVersion":2,"manifests":[]}"#),
    ]);
    load_refused(&env, "empty-oci.tar", &empty_oci, "lists no manifests");
}

#[test]
fn whiteouts_that_hide_no_file_are_named_and_nothing_is_stored() {
    let env = TestEnv::new();
    for (i, whiteout) in [".wh...", "d/.wh...", ".wh."].into_iter().enumerate() {
        // A good first layer, then the bad whiteout: neither may reach the store.
        let good = raw_tar(&[(&format!("ok{i}") as &str, b"fine")]);
        let bad = raw_tar(&[("d/", b""), (whiteout, b"")]);
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha256(&good), sha256(&bad)]},
        })
        .to_string();
        let manifest = serde_json::json!([{
            "Config": "config.json", "RepoTags": [format!("wh:{i}")],
            "Layers": ["good.tar", "bad.tar"],
        }])
        .to_string();
        let archive = raw_tar(&[
            ("good.tar", &good),
            ("bad.tar", &bad),
            ("config.json", config.as_bytes()),
            ("manifest.json", manifest.as_bytes()),
        ]);
        load_refused(&env, &format!("wh{i}.tar"), &archive, whiteout);
        // `import` of the same layer as a root file system says the same.
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs.tar");
        std::fs::write(&rootfs, &bad).unwrap();
        let before = store_listing(&env);
        let out = env.capsa(&["import", rootfs.to_str().unwrap(), "wh-import"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{whiteout}: {err}");
        assert!(
            err.contains(whiteout) && err.contains("whiteout"),
            "{whiteout}: {err}"
        );
        assert_unchanged(&env, &before, &format!("import of {whiteout}"));
    }
}
