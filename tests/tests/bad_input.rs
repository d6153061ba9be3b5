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
        // `relative:/data` names a volume now (issue 16); a relative path is still refused.
        &["-v", "./relative:/data", "busybox", "true"],
        "use absolute path",
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

/// An OCI-layout archive of one image `name` whose config lists `diff_ids` and whose
/// manifest lists `layers` (descriptors); `blobs` are the blob files it carries beside the
/// config and manifest. Nothing is checked: an attacker writes what they like.
fn oci_archive(
    name: &str,
    blobs: &[&[u8]],
    diff_ids: &[String],
    layers: &[serde_json::Value],
    config: serde_json::Value,
) -> Vec<u8> {
    use serde_json::json;
    let cfg = json!({
        "architecture": "amd64", "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    })
    .to_string();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(cfg.as_bytes()), "size": cfg.len()},
        "layers": layers,
    })
    .to_string();
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": sha256(manifest.as_bytes()), "size": manifest.len(),
        "annotations": {"io.containerd.image.name": format!("docker.io/library/{name}:latest")},
    }]})
    .to_string();
    let mut files: Vec<(String, Vec<u8>)> = blobs
        .iter()
        .chain([&cfg.as_bytes(), &manifest.as_bytes()])
        .map(|b| {
            let hex = sha256(b).trim_start_matches("sha256:").to_string();
            (format!("blobs/sha256/{hex}"), b.to_vec())
        })
        .collect();
    files.push(("index.json".into(), index.into_bytes()));
    files.push((
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    ));
    let entries: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    raw_tar(&entries)
}

/// The descriptor of an uncompressed layer blob.
fn tar_layer(blob: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar",
        "digest": sha256(blob), "size": blob.len(),
    })
}

/// A layer holding `x/diff`, a symlink to the host's `/`.
fn symlink_to_root_layer() -> Vec<u8> {
    let header = |kind: tar::EntryType, mode: u32| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        h
    };
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::Directory, 0o755);
    b.append_data(&mut h, "x", std::io::empty()).unwrap();
    let mut h = header(tar::EntryType::Symlink, 0o777);
    b.append_link(&mut h, "x/diff", "/").unwrap();
    b.into_inner().unwrap()
}

/// rt2 #1: a diff ID is the name of a layer directory. An archive whose diff ID is
/// `sha256:<chain of a stored layer>/diff/x` (that layer's `x/diff` being a symlink to /)
/// gave a container the host's / as its root; `sha256:../../..` reached any host directory.
/// Both are refused where the config is read, naming the archive and the ID.
#[test]
fn a_diff_id_that_is_a_path_is_refused_and_stores_nothing() {
    let env = TestEnv::new();
    let layer = symlink_to_root_layer();
    let id = sha256(&layer);
    let base = oci_archive(
        "base",
        &[&layer],
        std::slice::from_ref(&id),
        &[tar_layer(&layer)],
        serde_json::json!({"Cmd": ["/bin/sh"]}),
    );
    let dir = tempfile::tempdir().unwrap();
    let base_path = dir.path().join("base.tar");
    std::fs::write(&base_path, &base).unwrap();
    let out = env.capsa(&["load", "-i", base_path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The layer's blob is named but not carried: the store's copy was to be used.
    for (archive, diff_id) in [
        ("evil.tar", format!("{id}/diff/x")),
        (
            "dotdot.tar",
            "sha256:../../../../../../../../tmp".to_string(),
        ),
        ("upper.tar", id.to_uppercase().replace("SHA256", "sha256")),
    ] {
        let evil = oci_archive(
            "evil2",
            &[],
            std::slice::from_ref(&diff_id),
            &[tar_layer(&layer)],
            serde_json::json!({"Cmd": ["/bin/sh"]}),
        );
        let needle = format!("rootfs.diff_ids[0]: {diff_id:?} is not a sha256 digest");
        load_refused(&env, archive, &evil, &needle);
    }
    let out = env.run(&[
        "--rm",
        "--network",
        "none",
        "evil2",
        "head",
        "-1",
        "/etc/shadow",
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("evil2"), "{}", text(&out.stderr));
}

/// A layer already in the store is reused for an archive only when the archive's own blob
/// for it is that layer: a descriptor naming another stored blob (here the first image's
/// config) under the stored layer's diff ID is refused.
#[test]
fn a_stored_layer_is_reused_only_for_its_own_blob() {
    let env = TestEnv::new();
    let layer = raw_tar(&[("hello", b"hi\n")]);
    let id = sha256(&layer);
    let config = serde_json::json!({"Cmd": ["/hello"]});
    let good = oci_archive(
        "good",
        &[&layer],
        std::slice::from_ref(&id),
        &[tar_layer(&layer)],
        config.clone(),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("good.tar");
    std::fs::write(&path, &good).unwrap();
    for _ in 0..2 {
        // Twice: the second load reuses the stored layer after checking the blob.
        let out = env.capsa(&["load", "-i", path.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    // The config blob `good` stored, offered as the layer with the stored layer's diff ID.
    let stored_config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": [id]},
    })
    .to_string()
    .into_bytes();
    let swapped = oci_archive(
        "swapped",
        &[&stored_config],
        std::slice::from_ref(&id),
        &[tar_layer(&stored_config)],
        serde_json::json!({"Cmd": ["/hello"]}),
    );
    load_refused(&env, "swapped.tar", &swapped, "the config sha256:");
    load_refused(&env, "swapped.tar", &swapped, &format!("says {id}"));
}

/// rt2 #13: `load` takes gzip and zstd archives (as `docker load` does), by their magic.
#[test]
fn load_takes_compressed_archives() {
    use std::io::Write;
    let env = TestEnv::new();
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("bb.tar");
    let out = env.capsa(&["save", "-o", plain.to_str().unwrap(), "busybox"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bytes = std::fs::read(&plain).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&bytes).unwrap();
    let packed = [
        ("bb.tar.gz", gz.finish().unwrap()),
        ("bb.tar.zst", zstd::encode_all(&bytes[..], 3).unwrap()),
    ];
    for (name, data) in packed {
        let path = dir.path().join(name);
        std::fs::write(&path, data).unwrap();
        let out = env.capsa(&["rmi", "busybox"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let out = env.capsa(&["load", "-i", path.to_str().unwrap()]);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("Loaded image: busybox:latest"),
            "{name}: {}",
            text(&out.stdout)
        );
        assert_eq!(env.sh(&["--network", "none"], "echo ok"), "ok\n");
    }
}

/// rt2 #13: a config that does not parse is named with the field and the cause; a hard
/// link out of an archive is refused saying so.
#[test]
fn malformed_configs_and_hard_links_say_what_is_wrong() {
    let env = TestEnv::new();
    let layer = raw_tar(&[("hello", b"hi\n")]);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [5]},
    })
    .to_string();
    let manifest = serde_json::json!([{
        "Config": "config.json", "RepoTags": ["bad:1"], "Layers": ["layer.tar"],
    }])
    .to_string();
    let archive = raw_tar(&[
        ("layer.tar", &layer),
        ("config.json", config.as_bytes()),
        ("manifest.json", manifest.as_bytes()),
    ]);
    load_refused(
        &env,
        "badcfg.tar",
        &archive,
        "config config.json: rootfs.diff_ids[0]: invalid type: integer `5`, expected a string",
    );
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    h.set_mode(0o644);
    b.append_link(&mut h, "manifest.json", "/etc/shadow")
        .unwrap();
    let archive = b.into_inner().unwrap();
    load_refused(
        &env,
        "hardlink.tar",
        &archive,
        "entry manifest.json: a hard link to /etc/shadow, a file outside the archive",
    );
}

/// rt2 #13: layer entries whose names are not UTF-8 are unpacked as the bytes they are
/// (they were dropped, with exit 0).
#[test]
fn names_that_are_not_utf8_are_kept() {
    use std::os::unix::ffi::OsStrExt;
    let env = TestEnv::new();
    let mut b = tar::Builder::new(Vec::new());
    for name in [&b"caf\xe9"[..], b"ok"] {
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("names.tar");
    std::fs::write(&path, b.into_inner().unwrap()).unwrap();
    let out = env.capsa(&["import", path.to_str().unwrap(), "names"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = sha256(&std::fs::read(&path).unwrap());
    let diff = env
        .root()
        .join("layers")
        .join(id.trim_start_matches("sha256:"))
        .join("diff");
    let mut names: Vec<Vec<u8>> = std::fs::read_dir(&diff)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    names.sort();
    assert_eq!(names, [b"caf\xe9".to_vec(), b"ok".to_vec()]);
}

/// rt2 #13: an image's own WorkingDir or User that cannot work is named as the image's
/// config field (not as -w/-u, flags the user did not pass), on one line, its control
/// characters escaped.
#[test]
fn an_images_workdir_and_user_errors_name_the_config_field() {
    let env = TestEnv::new();
    let layer = std::fs::read(capsa_tests::busybox_tarball()).unwrap();
    let id = sha256(&layer);
    let dir = tempfile::tempdir().unwrap();
    for (name, config, needle) in [
        (
            "wd",
            serde_json::json!({"Cmd": ["true"], "WorkingDir": "rel\ndir"}),
            r#"the image's config WorkingDir "rel\ndir": the working directory must be an absolute path"#,
        ),
        (
            "usr",
            serde_json::json!({"Cmd": ["true"], "User": "ghost\n\u{1b}[31mred"}),
            r#"the image's config User "ghost\n\x1b[31mred""#,
        ),
    ] {
        let archive = oci_archive(
            name,
            &[&layer],
            std::slice::from_ref(&id),
            &[tar_layer(&layer)],
            config,
        );
        let path = dir.path().join(format!("{name}.tar"));
        std::fs::write(&path, archive).unwrap();
        let out = env.capsa(&["load", "-i", path.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let out = env.run(&["--rm", "--network", "none", name]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{name}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{name}: {err}");
        assert!(!err.contains('\u{1b}'), "{name}: {err}");
        assert!(err.contains(needle), "{name}: {err}");
        env.assert_clean();
    }
}
