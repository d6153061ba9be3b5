//! Docker's grouped command forms, typed as the seeds' walkthrough types them
//! (`container run --detach --publish ...`, `container ls`, `image ls`, `system prune`),
//! give what the short forms give; verbs of later issues and unknown verbs answer with one
//! line, exit 125, and create nothing.

use capsa_tests::{eventually, text, TestEnv};
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

/// `wget` from the test's host namespace; None while nothing answers.
fn fetch(env: &TestEnv, url: &str) -> Option<String> {
    // (busybox 1.35's wget crashes with -T; timeout(1) bounds it instead.)
    let out = env
        .host_command("timeout")
        .args(["5", "/bin/busybox", "wget", "-q", "-O", "-", url])
        .output()
        .unwrap();
    out.status.success().then(|| text(&out.stdout))
}

/// One line on stderr naming `needle`, exit 125, nothing on stdout.
fn refused(out: &Output, needle: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(needle), "{needle:?} not in {err:?}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn the_walkthrough_in_grouped_forms() {
    let env = TestEnv::new();
    let script = "mkdir -p /www && echo hello > /www/index.html && echo serving && exec httpd -f -p 80 -h /www";
    let id = ok(&env.capsa(&[
        "container",
        "run",
        "--detach",
        "--publish",
        "8088:80",
        "--name",
        "web",
        "--cgroup-parent",
        env.cgroup_parent(),
        "--env",
        "GREETING=hi",
        "--workdir",
        "/www",
        "busybox",
        "sh",
        "-c",
        script,
    ]));
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    let mut body = None;
    eventually(
        "the published port answers",
        Duration::from_secs(30),
        || {
            body = fetch(&env, "http://127.0.0.1:8088/");
            body.is_some()
        },
    );
    assert_eq!(body.as_deref(), Some("hello\n"));

    let ls = ok(&env.capsa(&["container", "ls"]));
    assert!(ls.contains("web") && ls.contains("8088->80/tcp"), "{ls}");
    for same in [
        vec!["ps"],
        vec!["container", "ps"],
        vec!["container", "list"],
    ] {
        assert_eq!(ok(&env.capsa(&same)), ls, "{same:?}");
    }
    let top = ok(&env.capsa(&["container", "top", "web"]));
    assert!(top.contains("httpd -f -p 80"), "{top}");
    eventually(
        "the log has the first line",
        Duration::from_secs(10),
        || text(&env.capsa(&["container", "logs", "web"]).stdout) == "serving\n",
    );
    let state = ok(&env.capsa(&[
        "container",
        "inspect",
        "-f",
        "{{.State.Status}} {{.Id}}",
        "web",
    ]));
    assert_eq!(state, format!("running {id}\n"));
    let stats = ok(&env.capsa(&["container", "stats", "--no-stream", "web"]));
    assert!(stats.lines().any(|l| l.contains("web")), "{stats}");
    let env_seen = ok(&env.capsa(&[
        "container",
        "exec",
        "web",
        "sh",
        "-c",
        "echo $GREETING $PWD",
    ]));
    assert_eq!(env_seen, "hi /www\n");

    // cp both ways: a page copied in is served; the index copied out is the one served.
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("new.html");
    std::fs::write(&page, "copied in\n").unwrap();
    ok(&env.capsa(&[
        "container",
        "cp",
        page.to_str().unwrap(),
        "web:/www/new.html",
    ]));
    assert_eq!(
        fetch(&env, "http://127.0.0.1:8088/new.html").as_deref(),
        Some("copied in\n")
    );
    let out_file = dir.path().join("index.html");
    ok(&env.capsa(&[
        "container",
        "cp",
        "web:/www/index.html",
        out_file.to_str().unwrap(),
    ]));
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "hello\n");

    // The three forms list the same images (by a format without the age, which moves
    // from "Less than a second ago" to "1 second ago" between two calls).
    let listed = |form: &[&str]| {
        let mut args = form.to_vec();
        args.extend(["--format", "{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}"]);
        ok(&env.capsa(&args))
    };
    let images = listed(&["image", "ls"]);
    assert!(
        images.lines().any(|l| l.starts_with("busybox:latest ")),
        "{images}"
    );
    assert_eq!(listed(&["images"]), images);
    assert_eq!(listed(&["image", "list"]), images);
    assert!(ok(&env.capsa(&["images"])).starts_with("REPOSITORY "));

    assert_eq!(
        ok(&env.capsa(&["container", "rm", "--force", "web"])),
        "web\n"
    );
    assert_eq!(ok(&env.capsa(&["container", "ls", "--all", "--quiet"])), "");
    assert!(fetch(&env, "http://127.0.0.1:8088/").is_none());
    env.assert_clean();
}

/// `system prune -f` removes stopped containers, unused networks and dangling images, and
/// keeps what a running container uses; `-a` then takes every unused image.
#[test]
fn system_prune_removes_what_nothing_uses() {
    let env = TestEnv::new();
    let tar = capsa_tests::busybox_tarball().to_str().unwrap().to_string();
    let dangling = ok(&env.capsa(&["import", "-c", "ENV WHO=dangling", &tar]));
    let dangling = dangling.trim();
    ok(&env.capsa(&["import", "-c", "ENV WHO=named", &tar, "named:1"]));
    ok(&env.capsa(&["network", "create", "unused"]));
    ok(&env.capsa(&["network", "create", "used"]));
    let stopped = ok(&env.create(&["--name", "stopped", "--network", "none", "named:1", "true"]));
    let stopped = stopped.trim();
    ok(&env.run(&[
        "-d",
        "--name",
        "running",
        "--network",
        "used",
        "busybox",
        "sleep",
        "600",
    ]));

    let out = ok(&env.capsa(&["system", "prune", "-f"]));
    let expected_sections = [
        format!("Deleted Containers:\n{stopped}\n\n"),
        "Deleted Networks:\nunused\n\n".to_string(),
        format!("Deleted Images:\ndeleted: {dangling}\n\n"),
    ];
    for section in &expected_sections {
        assert!(out.contains(section.as_str()), "{section:?} not in:\n{out}");
    }
    assert!(out.contains("Total reclaimed space: "), "{out}");
    let left = ok(&env.capsa(&["container", "ls", "-a", "--format", "{{.Names}}"]));
    assert_eq!(left, "running\n");
    let networks = ok(&env.capsa(&["network", "ls"]));
    assert!(
        networks.contains("used") && !networks.contains("unused"),
        "{networks}"
    );
    assert_eq!(repositories(&env), ["busybox", "named"]);

    // -a: every image no container uses (named:1 now), and never the running one's.
    let out = ok(&env.capsa(&["system", "prune", "-a", "-f"]));
    assert!(out.contains("untagged: named:1"), "{out}");
    assert_eq!(repositories(&env), ["busybox"]);
    ok(&env.capsa(&["container", "rm", "--force", "running"]));
    ok(&env.capsa(&["network", "rm", "used"]));
    env.assert_clean();
}

/// The REPOSITORY column of `image ls`, sorted.
fn repositories(env: &TestEnv) -> Vec<String> {
    let listed = ok(&env.capsa(&["image", "ls"]));
    let mut repos: Vec<String> = listed
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    repos.sort();
    repos
}

#[test]
fn an_unknown_container_verb_is_one_line_exit_125_and_creates_nothing() {
    let env = TestEnv::new();
    refused(
        &env.capsa(&["container", "frobnicate", "busybox"]),
        "unknown command: capsa container frobnicate",
    );
    refused(
        &env.capsa(&["container", "run", "--frobnicate", "busybox"]),
        "unknown flag: --frobnicate",
    );
    refused(&env.capsa(&["image", "lss"]), "see 'capsa image --help'");
    assert!(env.container_dirs().is_empty());
    env.assert_clean();
}

#[test]
fn verbs_are_listed_where_docker_lists_them() {
    let env = TestEnv::new();
    // The verbs are listed where Docker lists them.
    let help = ok(&env.capsa(&["image", "--help"]));
    assert!(help.contains("push") && help.contains("build"), "{help}");
    let help = ok(&env.capsa(&["system", "--help"]));
    assert!(help.contains("events") && help.contains("prune"), "{help}");
    let images = ok(&env.capsa(&["images", "-q"]));
    assert_eq!(images.lines().count(), 1, "{images}");
    env.assert_clean();
}

#[test]
fn help_verb_shows_the_verbs_help() {
    let env = TestEnv::new();
    // `docker help run` is `docker run --help`; `docker help` is `docker --help`.
    let by_verb = ok(&env.capsa(&["help", "run"]));
    assert_eq!(by_verb, ok(&env.capsa(&["run", "--help"])));
    assert!(by_verb.contains("--publish"), "{by_verb}");
    assert_eq!(
        ok(&env.capsa(&["help", "container", "ls"])),
        ok(&env.capsa(&["container", "ls", "--help"]))
    );
    assert_eq!(ok(&env.capsa(&["help"])), ok(&env.capsa(&["--help"])));
    refused(&env.capsa(&["help", "frobnicate"]), "frobnicate");
}
