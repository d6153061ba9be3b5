//! Text that comes from images (their Cmd, their User) reaches the terminal with its
//! control characters escaped: a newline never starts a line of `ps` or of an error, an
//! escape sequence never reaches the terminal.

use capsa_tests::{busybox_tarball, text, TestEnv};

/// Imports busybox as `name` with the image config change `change`.
fn import_with(env: &TestEnv, name: &str, change: &str) {
    let tar = busybox_tarball().to_str().unwrap();
    let out = env.capsa(&["import", "-c", change, tar, name]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

fn assert_no_escape(what: &str, out: &str) {
    assert!(!out.contains('\x1b'), "{what} prints an ESC: {out:?}");
    assert!(
        !out.contains('\u{202e}'),
        "{what} prints a direction override: {out:?}"
    );
}

#[test]
fn an_images_cmd_stays_on_its_line_of_ps() {
    let env = TestEnv::new();
    import_with(
        &env,
        "forger",
        r#"CMD ["sh", "-c", "true\nf00dfeedbeef   fake   \"sh\"   Up 2 days   web\u001b[2J\u202e"]"#,
    );
    let out = env.create(&["--name", "forged", "forger"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for args in [
        vec!["ps", "-a", "--no-trunc"],
        vec!["ps", "-a"],
        vec!["ps", "-a", "--format", "{{.Command}} {{.Names}}"],
        vec!["ps", "-a", "--format", "table {{.Command}}\t{{.Names}}"],
        vec!["inspect", "-f", "{{.Config.Cmd}}", "forged"],
    ] {
        let out = env.capsa(&args);
        let shown = text(&out.stdout);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert_no_escape(&format!("{args:?}"), &shown);
        let rows = if args[0] == "ps" && !args.contains(&"{{.Command}} {{.Names}}") {
            2
        } else {
            1
        };
        assert_eq!(shown.lines().count(), rows, "{args:?}: {shown}");
        assert!(
            !shown.lines().any(|l| l.starts_with("f00dfeedbeef")),
            "{args:?}: a forged row: {shown}"
        );
    }
    let full = text(&env.capsa(&["ps", "-a", "--no-trunc"]).stdout);
    assert!(full.contains(r"true\nf00dfeedbeef"), "{full}");
    assert!(full.contains(r"\x1b[2J"), "{full}");
    assert!(env.capsa(&["rm", "-f", "forged"]).status.success());
    env.assert_clean();
}

#[test]
fn an_images_user_stays_on_the_error_line() {
    let env = TestEnv::new();
    import_with(&env, "baduser", "USER ghost\nall clear\x1b]0;pwned\x07");
    let out = env.run(&["--rm", "baduser", "true"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert_no_escape("the error", &err);
    assert!(err.contains(r"ghost\nall clear\x1b]0;pwned\x07"), "{err:?}");
    env.assert_clean();
}

#[test]
fn the_name_rule_is_stated_exactly() {
    let env = TestEnv::new();
    let out = env.run(&["--name", "a", "busybox", "true"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains("2 to 128 characters matching [a-zA-Z0-9][a-zA-Z0-9_.-]+"),
        "{err}"
    );
    env.assert_clean();
}
