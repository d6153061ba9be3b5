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
