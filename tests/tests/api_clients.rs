//! Real clients against `capsa serve`: docker-py (the SDK docker-compose and
//! testcontainers build on) through its everyday flows, and Debian's docker-compose 1.29
//! bringing a two-service file up and down.

use capsa_tests::{eventually, run_bounded, text, TestEnv};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn source_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/api"))
}

#[test]
fn docker_py_runs_its_everyday_flows() {
    let env = TestEnv::new();
    let api = env.serve();
    let mut py = Command::new("python3");
    py.arg(source_dir().join("docker_py_flows.py"))
        .env("DOCKER_HOST", api.docker_host());
    let out = run_bounded(py, Duration::from_secs(240));
    assert!(
        out.status.success() && text(&out.stdout).contains("ALL OK"),
        "stdout:\n{}\nstderr:\n{}\nserver:\n{}",
        text(&out.stdout),
        text(&out.stderr),
        api.log()
    );
    // Everything the script made is gone again.
    assert_eq!(text(&env.capsa(&["ps", "-aq"]).stdout).trim(), "");
}

#[test]
fn docker_compose_brings_a_two_service_file_up_and_down() {
    let env = TestEnv::new();
    let api = env.serve();
    let compose = |args: &[&str]| {
        let mut c = Command::new("docker-compose");
        c.current_dir(source_dir().join("compose"))
            .env("DOCKER_HOST", api.docker_host())
            .env("COMPOSE_PROJECT_NAME", "capsatest")
            .args(args);
        let out = run_bounded(c, Duration::from_secs(120));
        assert!(
            out.status.success(),
            "docker-compose {args:?}: {}\nserver:\n{}",
            text(&out.stderr),
            api.log()
        );
        text(&out.stdout)
    };
    compose(&["up", "-d"]);
    let ps = compose(&["ps"]);
    assert_eq!(ps.matches(" Up ").count(), 2, "{ps}");
    assert_eq!(
        text(&env.capsa(&["ps", "-q"]).stdout).lines().count(),
        2,
        "capsa sees what compose made"
    );
    // The client reaches the web service by its name, on the project's network.
    let mut page = String::new();
    eventually(
        "client reaches web by name",
        Duration::from_secs(20),
        || {
            page = compose(&[
                "exec",
                "-T",
                "client",
                "wget",
                "-q",
                "-O",
                "-",
                "http://web/",
            ]);
            page.contains("served-by-web")
        },
    );
    // The published port answers on the host.
    eventually("published port", Duration::from_secs(20), || {
        let out = env
            .host_command("timeout")
            .args([
                "5",
                "/bin/busybox",
                "wget",
                "-q",
                "-O",
                "-",
                "http://127.0.0.1:18480/",
            ])
            .output()
            .unwrap();
        text(&out.stdout).contains("served-by-web")
    });
    let logs = compose(&["logs", "web"]);
    assert!(logs.contains("web_1"), "{logs}");
    compose(&["down", "-v"]);
    assert_eq!(text(&env.capsa(&["ps", "-aq"]).stdout).trim(), "");
    let volumes = text(&env.capsa(&["volume", "ls", "-q"]).stdout);
    assert!(!volumes.contains("capsatest_site"), "{volumes}");
    let networks = text(&env.capsa(&["network", "ls"]).stdout);
    assert!(!networks.contains("capsatest_default"), "{networks}");
}
