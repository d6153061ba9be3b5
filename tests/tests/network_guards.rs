//! What a default workload (CAP_NET_RAW, as Docker gives) can do to the host's network with
//! forged frames on the bridge, checked as its target would: a service bound to the host's
//! 127.0.0.1 never answers it (CVE-2020-8558), and a forged IPv6 router advertisement
//! changes neither the host's routes and addresses nor reaches another workload
//! (CVE-2020-10749); nor from a VM.
//!
//! The forging program (network_guards/forge.c, built with `gcc -static`) sends each forged
//! frame and then a control the host must answer, from one CPU: frames from one CPU are
//! handled in order, so once the control is answered the forged frame has been dealt with.

use capsa_tests::{text, TestEnv};
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};

const FORGE_C: &str = include_str!("network_guards/forge.c");
/// The default bridge's address in each test's network namespace.
const GATEWAY: &str = "10.88.0.1";

/// Compiles the forging program into `dir/forge`.
fn build_forge(dir: &Path) {
    let src = dir.join("forge.c");
    std::fs::write(&src, FORGE_C).unwrap();
    let out = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(dir.join("forge"))
        .arg(&src)
        .output()
        .expect("gcc (build-essential, installed by scripts/setup.sh)");
    assert!(out.status.success(), "gcc: {}", text(&out.stderr));
}

/// Runs `make` on a thread inside the test's network namespace (the containers' host), so
/// the socket it makes belongs to that namespace.
fn in_netns<T: Send + 'static>(env: &TestEnv, make: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = std::fs::File::open(format!("/run/netns/{}", env.netns())).unwrap();
    std::thread::spawn(move || {
        // SAFETY: setns on a namespace descriptor we own, for this thread only.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        make()
    })
    .join()
    .unwrap()
}

/// `forge ARGS` in a default container (bridge network, default capabilities).
fn forge(env: &TestEnv, dir: &Path, args: &str) -> String {
    let volume = format!("{}:/x:ro", dir.display());
    env.sh(&["-v", &volume], &format!("/x/forge {args}"))
}

/// What the host's IPv6 configuration shows on the bridge, and its default routes.
fn ipv6_state(env: &TestEnv) -> String {
    let mut state = String::new();
    for args in [
        &["-6", "route", "show", "dev", "capsa0"][..],
        &["-6", "route", "show", "default"],
        &["-6", "addr", "show", "dev", "capsa0"],
    ] {
        let out = env.host_command("ip").args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {}", text(&out.stderr));
        state.push_str(&text(&out.stdout));
    }
    state
}

fn all_ipv6(env: &TestEnv) -> String {
    let route = env.host_command("ip").args(["-6", "route"]).output();
    let addr = env.host_command("ip").args(["-6", "addr"]).output();
    text(&route.unwrap().stdout) + &text(&addr.unwrap().stdout)
}

#[test]
fn a_container_gets_no_answer_from_the_hosts_loopback_services() {
    let env = TestEnv::new();
    let dir = tempfile::tempdir().unwrap();
    build_forge(dir.path());
    // The host's loopback-only service; it answers SYNs once listening.
    let service = in_netns(&env, || TcpListener::bind("127.0.0.1:0").unwrap());
    let port = service.local_addr().unwrap().port();
    let out = forge(&env, dir.path(), &format!("loopback {GATEWAY} {port}"));
    assert_eq!(out, "loopback silent\ncontrol answered\n");
    // Ports published on 127.0.0.1 still work from the host: network.rs checks them.
}

#[test]
fn a_router_advertisement_changes_nothing_on_the_host_or_another_workload() {
    let env = TestEnv::new();
    let dir = tempfile::tempdir().unwrap();
    build_forge(dir.path());
    env.sh(&[], "true"); // the bridge exists from here on
    let before = ipv6_state(&env);
    // A neighbour on the bridge, listening for every IPv6 frame on its eth0.
    let volume = format!("{}:/x:ro", dir.path().display());
    let mut sniffer = env
        .command(&[
            "run",
            "--rm",
            "--cgroup-parent",
            env.cgroup_parent(),
            "-v",
            &volume,
            "busybox",
            "/x/forge",
            "sniff",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sniffer.stdout.take().unwrap());
    let mut ready = String::new();
    lines.read_line(&mut ready).unwrap();
    assert_eq!(ready, "ready\n");
    assert_eq!(
        forge(&env, dir.path(), &format!("ra {GATEWAY}")),
        "control refused\n"
    );
    let mut seen = String::new();
    lines.read_to_string(&mut seen).unwrap();
    let status = sniffer.wait().unwrap();
    assert!(status.success(), "sniffer: {seen}");
    assert_eq!(seen, "no ra\necho seen\n", "the neighbour's view");
    assert_eq!(
        ipv6_state(&env),
        before,
        "the host's IPv6 configuration changed"
    );
    let everything = all_ipv6(&env);
    assert!(!everything.contains("2001:db8"), "{everything}");
    let off = env
        .host_command("cat")
        .arg("/proc/sys/net/ipv6/conf/capsa0/disable_ipv6")
        .output()
        .unwrap();
    assert_eq!(text(&off.stdout), "1\n", "IPv6 is off on the bridge");
}

#[test]
fn a_vm_guest_has_no_ipv6_and_its_router_advertisement_changes_nothing() {
    let env = TestEnv::new();
    let dir = tempfile::tempdir().unwrap();
    build_forge(dir.path());
    env.sh(&[], "true");
    let before = ipv6_state(&env);
    let out = env.sh(
        &[
            "--isolation",
            "vm",
            "-v",
            &format!("{}:/x:ro", dir.path().display()),
        ],
        &format!("cat /proc/sys/net/ipv6/conf/eth0/disable_ipv6; /x/forge ra6 {GATEWAY}"),
    );
    assert!(
        out.starts_with("1\n"),
        "IPv6 is off on the guest's eth0: {out}"
    );
    assert!(out.ends_with("control refused\n"), "{out}");
    assert_eq!(
        ipv6_state(&env),
        before,
        "the host's IPv6 configuration changed"
    );
    let everything = all_ipv6(&env);
    assert!(!everything.contains("2001:db8"), "{everything}");
}
