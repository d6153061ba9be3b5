//! rt1 #4: a user or group ID above 2^31-1 is refused, in both isolations. 4294967295 is
//! `(uid_t)-1`, which setresuid and setresgid read as "leave unchanged": accepted, it ran
//! the workload as root while every "not root" check on the string passed.

use capsa_tests::{text, TestEnv};

/// Runs `busybox id -u; id -g` with `flags` (and `image`), and checks it is refused with
/// one line naming the out-of-range ID, nothing left behind, and never printing root's id.
fn refused(env: &TestEnv, flags: &[&str], image: &str, needle: &str) {
    let mut args = vec!["--rm", "--network", "none"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[image, "sh", "-c", "id -u; id -g"]);
    let out = env.run(&args);
    let (stdout, err) = (text(&out.stdout), text(&out.stderr));
    assert!(
        stdout.trim().is_empty(),
        "{flags:?} {image}: the workload ran as {stdout:?}"
    );
    assert_ne!(out.status.code(), Some(0), "{flags:?} {image}: {err}");
    assert!(err.contains(needle), "{flags:?} {image}: {err}");
    assert!(
        err.contains("out of range"),
        "{flags:?} {image}: the cause is named: {err}"
    );
    // A VM run says which engine it chose first (and, the first time, that it built its
    // VM template); the refusal is one line after them.
    let engine_choice = |l: &&str| {
        l.starts_with("capsa: vm template: ")
            || ["qemu", "capsa"]
                .iter()
                .any(|e| l.starts_with(&format!("capsa: vm isolation: {e}")))
    };
    assert_eq!(
        err.lines().filter(|l| !engine_choice(l)).count(),
        1,
        "{flags:?} {image}: one line: {err}"
    );
    env.assert_clean();
}

/// An image whose config says `User: 4294967295` (which a "not root" policy accepts).
fn minus_one_image(env: &TestEnv) -> &'static str {
    let tar = capsa_tests::busybox_tarball().to_str().unwrap().to_string();
    let out = env.capsa(&[
        "import",
        "-c",
        "USER 4294967295",
        "-c",
        "ENV PATH=/bin",
        &tar,
        "minus-one",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    "minus-one"
}

fn check(isolation: &str) {
    let env = TestEnv::new();
    let iso = ["--isolation", isolation];
    let with = |extra: &[&'static str]| -> Vec<&str> { iso.iter().chain(extra).copied().collect() };
    refused(
        &env,
        &with(&["-u", "4294967295"]),
        "busybox",
        "uid 4294967295",
    );
    refused(
        &env,
        &with(&["-u", "1000:4294967295"]),
        "busybox",
        "gid 4294967295",
    );
    refused(
        &env,
        &with(&["-u", "2147483648"]),
        "busybox",
        "uid 2147483648",
    );
    let image = minus_one_image(&env);
    refused(&env, &with(&[]), image, "uid 4294967295");
    // The top of the range still works.
    let out = env.run(
        &[
            &with(&["--rm", "--network", "none", "-u", "2147483647:2147483647"])[..],
            &["busybox", "sh", "-c", "id -u; id -g"],
        ]
        .concat(),
    );
    assert_eq!(
        text(&out.stdout),
        "2147483647\n2147483647\n",
        "{}",
        text(&out.stderr)
    );
    env.assert_clean();
}

#[test]
fn ids_above_2_31_are_refused_in_a_container() {
    check("container");
}

#[test]
fn ids_above_2_31_are_refused_in_a_vm() {
    check("vm");
}
