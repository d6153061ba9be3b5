//! capsa-vmm under KVM with the freestanding test guest: it finds the virtio-mmio devices, reads
//! and writes the disk, talks vsock both ways with host Unix sockets, writes to a named console
//! port, signals the boot timer and stops the VM through the i8042.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn disk(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("disk.img");
    let mut bytes = b"CAPSA-TEST-DISK".to_vec();
    bytes.resize(1 << 20, 0);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Connects to the VMM's listening socket at `path`. The file appears at bind(), before the
/// VMM's listen(), so a connection is refused until then: retried, for at most 30 s.
fn connect_when_listening(path: &Path) -> UnixStream {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match UnixStream::connect(path) {
            Ok(stream) => return stream,
            Err(e) => assert!(
                Instant::now() < deadline,
                "{} never accepted a connection: {e}",
                path.display()
            ),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn test_guest_uses_block_vsock_boot_timer_and_reset() {
    let dir = tempfile::tempdir().unwrap();
    let disk = disk(dir.path());
    let uds = dir.path().join("v.sock");
    // The guest connects to host port 5000: the VMM connects to <uds>_5000.
    let guest_to_host = UnixListener::bind(format!("{}_5000", uds.display())).unwrap();
    let console = dir.path().join("console.sock");
    let child = Command::new(VMM)
        .arg("--kernel")
        .arg(test_guest())
        .arg("--disk")
        .arg(&disk)
        .arg("--vsock")
        .arg(format!("cid=3,uds={}", uds.display()))
        .arg("--console")
        .arg(format!("name=capsa.test,uds={}", console.display()))
        .args(["--cmdline", "console=ttyS0", "--mem", "64M"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // The console port's host side: connected before the guest looks for it.
    let mut port = connect_when_listening(&console);
    port.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut host = connect_when_listening(&uds);
    host.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    host.write_all(b"CONNECT 1234\n").unwrap();
    let mut reply = [0u8; 64];
    let n = host.read(&mut reply).unwrap();
    let reply = text(&reply[..n]);
    assert!(
        reply.starts_with("OK ") && reply.ends_with('\n'),
        "handshake reply {reply:?}"
    );
    host.write_all(b"ping over vsock").unwrap();
    let mut echo = [0u8; 15];
    host.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"ping over vsock");

    guest_to_host.set_nonblocking(false).unwrap();
    let (mut from_guest, _) = guest_to_host.accept().unwrap();
    from_guest
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut said = String::new();
    from_guest.read_to_string(&mut said).unwrap();
    assert_eq!(said, "hello from guest");

    let mut line = [0u8; 27];
    port.read_exact(&mut line).unwrap();
    assert_eq!(&line, b"hello over the console port");

    let out = wait_with_limit(child, Duration::from_secs(120));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("test guest: all ok"), "{stdout}");
    assert!(
        stdout.contains("ok: console: port 1 is named capsa.test"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(stderr.contains("guest ready (boot timer):"), "{stderr}");
    assert!(stderr.contains("guest stopped (i8042 reset)"), "{stderr}");
    let written = std::fs::read(&disk).unwrap();
    assert_eq!(&written[512..528], b"WRITTEN-BY-GUEST");
}

#[test]
fn read_only_disk_refuses_the_guest_write() {
    let dir = tempfile::tempdir().unwrap();
    let disk = disk(dir.path());
    let out = run_vmm(
        &[
            "--kernel",
            test_guest().to_str().unwrap(),
            "--disk",
            &format!("{},ro", disk.display()),
            "--mem",
            "64M",
        ],
        Duration::from_secs(120),
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("ok: virtio-blk read sector 0"), "{stdout}");
    assert!(
        stdout.contains("FAIL: virtio-blk write sector 1"),
        "{stdout}"
    );
    assert_eq!(&std::fs::read(&disk).unwrap()[512..528], &[0u8; 16]);
    // The guest still stops the VM itself: only one device was found, which it reports.
    assert_eq!(out.status.code(), Some(0));
}
