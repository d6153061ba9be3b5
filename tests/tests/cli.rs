//! `version`, `info`, `import`, `images` as a new user first meets them.

use capsa_tests::{text, TestEnv};

#[test]
fn version_prints_client_engine_and_api() {
    let env = TestEnv::new();
    let out = text(&env.capsa(&["version"]).stdout);
    for needle in [
        "Client:",
        "Server:",
        "API version:",
        env!("CARGO_PKG_VERSION"),
    ] {
        assert!(out.contains(needle), "{needle} missing from: {out}");
    }
}

#[test]
fn info_describes_cgroups_kvm_and_counts() {
    let env = TestEnv::new();
    assert!(env
        .run(&["--name", "one", "busybox", "true"])
        .status
        .success());
    let out = text(&env.capsa(&["info"]).stdout);
    for needle in [
        "Containers: 1",
        "Exited: 1",
        "Images: 1",
        "Cgroup Version: ",
        "KVM: ",
        " vm: ",
        "Kernel Version: ",
    ] {
        assert!(out.contains(needle), "{needle} missing from: {out}");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&env.capsa(&["info", "--json"]).stdout).unwrap();
    assert_eq!(json["containers"]["total"], 1);
}

#[test]
fn imported_images_are_listed_and_shared_layers_are_stored_once() {
    let env = TestEnv::new();
    let tar = capsa_tests::busybox_tarball().to_str().unwrap();
    let out = env.capsa(&["import", tar, "other:v2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("sha256:"));
    let images = text(&env.capsa(&["images"]).stdout);
    assert!(
        images.contains("busybox") && images.contains("latest"),
        "{images}"
    );
    assert!(
        images.contains("other") && images.contains("v2"),
        "{images}"
    );
    let layers = std::fs::read_dir(env.root().join("layers"))
        .unwrap()
        .count();
    assert_eq!(layers, 1, "the same layer was unpacked twice");
    assert_eq!(
        text(&env.run(&["--rm", "other:v2", "echo", "hi"]).stdout),
        "hi\n"
    );
}
