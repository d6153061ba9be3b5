//! Our guest vmlinux under capsa-vmm. On hosts whose KVM has vmx/svm it boots fully; on nested
//! PVM hosts (these machines) the guest kernel is emulated and stops at its first XSAVE-family
//! instruction, so what is checked is what such a host allows: PVH entry, the memory map, the MP
//! table, the serial console (banner and the echoed command line), and a clean report of the
//! crash with exit status 3 rather than a hang or a VMM panic.

mod common;

use std::time::Duration;

use common::*;

fn host_has_hardware_virtualization() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
        c.lines()
            .any(|l| l.starts_with("flags") && (l.contains(" vmx") || l.contains(" svm")))
    })
}

#[test]
fn vmlinux_boots_to_its_console_banner() {
    let kernel = guest_kernel();
    let cmdline = "console=ttyS0 reboot=k panic=-1 capsa.test=banner";
    let out = run_vmm(
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--cmdline",
            cmdline,
            "--mem",
            "256M",
            "--vcpus",
            "2",
        ],
        Duration::from_secs(120),
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        stdout.contains("Linux version 6.1"),
        "no banner:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!("Command line: {cmdline}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("BIOS-e820: [mem 0x0000000000100000-0x000000000fffffff] usable"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Processors: 2"),
        "MP table not read:\n{stdout}"
    );
    if host_has_hardware_virtualization() {
        // No initramfs: a full boot ends in the kernel's panic, which reboot=k turns into a reset.
        assert_eq!(out.status.code(), Some(0), "{stderr}");
    } else {
        eprintln!("skipped the full boot: this host's KVM has no vmx/svm, so the guest kernel is emulated and stops early");
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert!(stderr.contains("guest crashed"), "{stderr}");
    }
}

#[test]
fn bad_input_is_named_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, vec![0x5a; 4096]).unwrap();
    let guest = test_guest().to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (
            &["--kernel", "/nonexistent/vmlinux"],
            "cannot open kernel /nonexistent/vmlinux",
        ),
        (
            &["--kernel", garbage.to_str().unwrap()],
            "is neither an x86-64 ELF vmlinux nor a bzImage",
        ),
        (
            &["--kernel", guest, "--mem", "100001"],
            "not a multiple of the 4 KiB page",
        ),
        (&["--kernel", guest, "--mem", "1024G"], "is outside"),
        (
            &["--kernel", guest, "--disk", "/nonexistent/disk.img"],
            "cannot open disk /nonexistent/disk.img",
        ),
        (
            &["--kernel", guest, "--initrd", "/nonexistent/initrd"],
            "cannot read initramfs /nonexistent/initrd",
        ),
    ];
    for (args, message) in cases {
        let out = run_vmm(args, Duration::from_secs(30));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(message),
            "{args:?}: expected {message:?} in {stderr}"
        );
    }
    let out = run_vmm(
        &["--kernel", guest, "--vsock", "cid=3"],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("both cid=N and uds=PATH are needed"));
}

#[test]
fn a_tap_backed_nic_is_set_up_in_the_vmm_network_namespace() {
    // `unshare -n`: the tap is created in a namespace of its own and vanishes with it.
    let out = std::process::Command::new("unshare")
        .args([
            "-n",
            VMM,
            "--kernel",
            test_guest().to_str().unwrap(),
            "--net",
            "tap=ctap-test,mac=02:00:00:00:00:07",
        ])
        .args([
            "--cmdline",
            "console=ttyS0 capsa.bench=boot",
            "--serial",
            "none",
        ])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("guest stopped (i8042 reset)"), "{stderr}");
}
