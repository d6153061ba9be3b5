//! The default seccomp profile, checked from inside a container with a static C program:
//! io_uring is denied (as Docker denies it since 25), AF_VSOCK sockets too, also when the
//! caller sets register bits the kernel ignores; `seccomp=unconfined` lifts the filter.

use capsa_tests::{text, TestEnv};
use std::path::Path;
use std::process::Command;

/// Each argument names one call; the program prints `<name> ok` or `<name> <errno name>`.
const PROBE_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static void report(const char *name, long rc) {
    if (rc >= 0) { printf("%s ok\n", name); close((int)rc); }
    else printf("%s %s\n", name, strerrorname_np(errno));
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        char params[120]; /* struct io_uring_params, zeroed */
        memset(params, 0, sizeof params);
        if (!strcmp(argv[i], "io_uring_setup"))
            report(argv[i], syscall(SYS_io_uring_setup, 8L, params));
        else if (!strcmp(argv[i], "vsock"))
            report(argv[i], syscall(SYS_socket, 40L, 1L, 0L));
        else if (!strcmp(argv[i], "vsock_high_bits"))
            report(argv[i], syscall(SYS_socket, (1L << 32) | 40L, 1L, 0L));
        else if (!strcmp(argv[i], "inet"))
            report(argv[i], syscall(SYS_socket, 2L, 1L, 0L));
    }
    return 0;
}
"#;

/// Compiles the probe with `gcc -static` into `dir/probe`.
fn build_probe(dir: &Path) {
    let src = dir.join("probe.c");
    std::fs::write(&src, PROBE_C).unwrap();
    let out = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(dir.join("probe"))
        .arg(&src)
        .output()
        .expect("gcc (build-essential, installed by scripts/setup.sh)");
    assert!(out.status.success(), "gcc: {}", text(&out.stderr));
}

fn probe(env: &TestEnv, dir: &Path, flags: &[&str]) -> String {
    let volume = format!("{}:/probe:ro", dir.display());
    let mut args = vec!["--rm", "--network", "none", "-v", &volume];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[
        "busybox",
        "/probe/probe",
        "io_uring_setup",
        "vsock",
        "vsock_high_bits",
        "inet",
    ]);
    let out = env.run(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn io_uring_and_vsock_are_denied_by_default_and_allowed_unconfined() {
    let env = TestEnv::new();
    let dir = tempfile::tempdir().unwrap();
    build_probe(dir.path());
    assert_eq!(
        probe(&env, dir.path(), &[]),
        "io_uring_setup EPERM\nvsock EPERM\nvsock_high_bits EPERM\ninet ok\n"
    );
    // Without the filter io_uring works here (kernel.io_uring_disabled is 0 on this host);
    // the socket calls reach the kernel, which answers for itself (EAFNOSUPPORT or ok).
    let unconfined = probe(&env, dir.path(), &["--security-opt", "seccomp=unconfined"]);
    let lines: Vec<&str> = unconfined.lines().collect();
    let io_uring_disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim() != "0")
        .unwrap_or(false);
    if !io_uring_disabled {
        assert_eq!(lines[0], "io_uring_setup ok", "{unconfined}");
    }
    assert!(
        !lines[1].ends_with("EPERM") && !lines[2].ends_with("EPERM"),
        "{unconfined}"
    );
    env.assert_clean();
}
