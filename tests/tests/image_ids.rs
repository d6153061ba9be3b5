//! rt1 #5: `sha256:<hex>` and a bare 64-hex string always mean an image ID. No image can be
//! named that way (load, tag, import and pull refuse it), and a store that already holds
//! such a name (from before) still resolves the string to the image with that ID: an
//! archive cannot take over the reference an operator pins an image by.

use capsa_tests::{busybox_tarball, text, TestEnv};

fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// A docker-archive (`docker save` layout) of one image tagged `repo_tag`: the busybox
/// layer, and a config whose environment says `WHO=attacker`.
fn attacker_archive(repo_tag: &str) -> Vec<u8> {
    let layer = std::fs::read(busybox_tarball()).unwrap();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin", "WHO=attacker"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]},
    })
    .to_string();
    let manifest = serde_json::json!([{
        "Config": "config.json", "RepoTags": [repo_tag], "Layers": ["layer.tar"],
    }])
    .to_string();
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("layer.tar", &layer[..]),
        ("config.json", config.as_bytes()),
        ("manifest.json", manifest.as_bytes()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1);
        b.append_data(&mut h, name, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// What `sh -c 'echo ${WHO:-original}'` prints in a container of image `wanted`.
fn who_runs(env: &TestEnv, wanted: &str) -> String {
    let out = env.run(&[
        "--rm",
        "--network",
        "none",
        wanted,
        "sh",
        "-c",
        "echo ${WHO:-original}",
    ]);
    assert!(out.status.success(), "{wanted}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

fn refused(env: &TestEnv, args: &[&str]) {
    let out = env.capsa(args);
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{args:?} accepted");
    assert!(
        err.contains("image ID"),
        "{args:?}: the cause is named: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
}

#[test]
fn names_written_as_image_ids_are_refused_everywhere() {
    let env = TestEnv::new();
    let id = env.capsa(&["image", "inspect", "-f", "{{.Id}}", "busybox"]);
    let id = text(&id.stdout).trim().to_string();
    let hex = id.strip_prefix("sha256:").unwrap().to_string();
    let other = format!("sha256:{}", "1".repeat(64));
    let tar = busybox_tarball().to_str().unwrap().to_string();
    for name in [id.as_str(), hex.as_str(), other.as_str(), "sha256:latest"] {
        refused(&env, &["tag", "busybox", name]);
        refused(&env, &["import", &tar, name]);
        refused(&env, &["pull", name]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spoof.tar");
        std::fs::write(&path, attacker_archive(name)).unwrap();
        refused(&env, &["load", "-i", path.to_str().unwrap()]);
    }
    let listed = text(&env.capsa(&["images"]).stdout);
    assert!(!listed.contains("sha256 "), "{listed}");
    assert_eq!(who_runs(&env, &id), "original");
    assert_eq!(who_runs(&env, &hex), "original");
    env.assert_clean();
}

/// A store that holds a name spelled as busybox's ID on another image (as a load before
/// this fix left it) still runs busybox for that ID, in both spellings.
#[test]
fn an_id_resolves_to_its_image_even_when_a_name_spells_it() {
    let env = TestEnv::new();
    let id = env.capsa(&["image", "inspect", "-f", "{{.Id}}", "busybox"]);
    let id = text(&id.stdout).trim().to_string();
    let hex = id.strip_prefix("sha256:").unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evil.tar");
    std::fs::write(&path, attacker_archive("evil:1")).unwrap();
    let out = env.capsa(&["load", "-i", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(who_runs(&env, "evil:1"), "attacker");
    // Give the attacker's image the names the old code accepted.
    let index_path = env.root().join("images.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let images = index["images"].as_object_mut().unwrap();
    let evil = images
        .values_mut()
        .find(|r| r["names"].to_string().contains("evil:1"))
        .unwrap();
    evil["names"] = serde_json::json!([
        "docker.io/library/evil:1",
        format!("docker.io/library/sha256:{hex}"),
        format!("docker.io/library/{hex}:latest"),
    ]);
    std::fs::write(&index_path, serde_json::to_vec_pretty(&index).unwrap()).unwrap();
    assert_eq!(who_runs(&env, &id), "original");
    assert_eq!(who_runs(&env, &hex), "original");
    assert_eq!(
        who_runs(&env, &format!("sha256:{}", &hex[..12])),
        "original"
    );
    env.assert_clean();
}
