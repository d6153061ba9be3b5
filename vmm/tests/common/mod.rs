//! Helpers for the capsa-vmm tests: building the freestanding test guest, finding the guest
//! kernel, and running the `capsa-vmm` binary with a time limit.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const VMM: &str = env!("CARGO_BIN_EXE_capsa-vmm");

/// Compiles tests/guest/guest.c once per test binary (gcc, freestanding, static).
pub fn test_guest() -> &'static Path {
    static GUEST: OnceLock<PathBuf> = OnceLock::new();
    GUEST.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("capsa-test-guest-{}", std::process::id()));
        let status = Command::new("gcc")
            .args([
                "-O1",
                "-ffreestanding",
                "-fno-stack-protector",
                "-fno-pic",
                "-no-pie",
                "-mno-red-zone",
            ])
            .args([
                "-mgeneral-regs-only",
                "-fno-builtin",
                "-nostdlib",
                "-static",
                "-Wall",
                "-Werror",
            ])
            .arg(format!("-Wl,-T,{}", src.join("guest.ld").display()))
            .args(["-Wl,--build-id=none", "-Wl,--no-warn-rwx-segments", "-o"])
            .arg(&out)
            .arg(src.join("guest.c"))
            .status()
            .expect("run gcc");
        assert!(status.success(), "building the test guest failed");
        out
    })
}

/// The guest vmlinux: `$CAPSA_KERNEL`, else what kernel-config/build.sh builds (cached).
pub fn guest_kernel() -> PathBuf {
    if let Ok(p) = std::env::var("CAPSA_KERNEL") {
        return p.into();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel-config/build.sh");
    let out = Command::new("bash")
        .arg(script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run build.sh");
    assert!(out.status.success(), "kernel-config/build.sh failed");
    let text = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(
        text.lines()
            .last()
            .expect("build.sh prints the vmlinux path")
            .trim(),
    )
}

/// Runs capsa-vmm to completion, killing it after `limit`.
pub fn run_vmm(args: &[&str], limit: Duration) -> Output {
    let child = Command::new(VMM)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn capsa-vmm");
    wait_with_limit(child, limit)
}

pub fn wait_with_limit(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect output")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
