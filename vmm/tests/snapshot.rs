//! capsa-vmm snapshots under KVM with the freestanding test guest (capsa.test=snapshot): the
//! guest fills memory, holds a value in a register and stops at its snapshot point; restored
//! in new processes it carries on as if it had never stopped, and the snapshot's files are
//! left as they were; a disk is given again (another file) and the guest goes on using it; a
//! vsock device is given another socket and CID, and the guest learns of both; a balloon
//! gives back what the guest frees. Damaged or foreign snapshots are refused before anything
//! runs.

mod common;

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use sha2::{Digest, Sha256};

const SNAPSHOT_POINT: &str = "guest at its snapshot point (no snapshot asked)";
const LIMIT: Duration = Duration::from_secs(120);
const GUEST_ARGS: [&str; 4] = [
    "--cmdline",
    "console=ttyS0 capsa.test=snapshot",
    "--mem",
    "64M",
];

fn boot(extra: &[&str]) -> Output {
    let mut args = vec!["--kernel", test_guest().to_str().unwrap()];
    args.extend(GUEST_ARGS);
    args.extend(extra);
    run_vmm(&args, LIMIT)
}

/// Boots the guest to its snapshot point with `--snapshot-to dir/snap`; returns the directory
/// and what the guest printed before it.
fn take_snapshot(dir: &Path) -> (PathBuf, String) {
    let snap = dir.join("snap");
    let out = boot(&["--snapshot-to", snap.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("guest stopped at its snapshot point"),
        "{stderr}"
    );
    (snap, text(&out.stdout))
}

fn restore(snap: &Path) -> Output {
    run_vmm(&["--restore-from", snap.to_str().unwrap()], LIMIT)
}

fn sha256(path: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

#[test]
fn restored_guest_continues_where_it_stopped_and_the_snapshot_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    // The same guest run without a snapshot directory: the snapshot point is ignored.
    let cold = boot(&[]);
    let stderr = text(&cold.stderr);
    assert_eq!(cold.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr.matches(SNAPSHOT_POINT).count(), 1, "{stderr}");
    let cold = text(&cold.stdout);
    assert!(cold.contains("snapshot: counter 42"), "{cold}");

    let (snap, before) = take_snapshot(dir.path());
    assert!(before.ends_with("counter 41\n"), "{before}");
    assert!(!before.contains("counter 42"), "{before}");
    let (memory, state) = (snap.join("memory"), snap.join("state"));
    let hashes = (sha256(&memory), sha256(&state));

    // Two restores at once from the same files.
    let spawn = || {
        Command::new(VMM)
            .arg("--restore-from")
            .arg(&snap)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn(), spawn());
    for out in [
        wait_with_limit(first, LIMIT),
        wait_with_limit(second, LIMIT),
    ] {
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        assert!(stdout.contains("ok: snapshot: memory survived"), "{stdout}");
        assert!(
            stdout.contains("ok: snapshot: register survived"),
            "{stdout}"
        );
        assert!(!stdout.contains("FAIL"), "{stdout}");
        // Nothing printed twice, nothing lost: the two halves make the uninterrupted run.
        assert_eq!(format!("{before}{stdout}"), cold);
        assert!(stderr.contains("guest stopped (i8042 reset)"), "{stderr}");
        // The snapshot point's port write was completed before the snapshot: not run again.
        assert!(!stderr.contains(SNAPSHOT_POINT), "{stderr}");
    }
    // The guest wrote its counter after the restores: the files did not take those writes.
    assert_eq!((sha256(&memory), sha256(&state)), hashes);
}

#[test]
fn damaged_or_foreign_snapshots_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (snap, _) = take_snapshot(dir.path());
    let state_path = snap.join("state");
    let state = std::fs::read(&state_path).unwrap();
    let memory_hash = sha256(&snap.join("memory"));

    // A second snapshot into the same directory would change the memory file under restored
    // VMs: refused before the VM runs, the first snapshot left whole.
    let again = boot(&["--snapshot-to", snap.to_str().unwrap()]);
    let stderr = text(&again.stderr);
    assert_eq!(again.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("holds a snapshot already"), "{stderr}");
    assert!(again.stdout.is_empty(), "the guest ran");
    assert_eq!(std::fs::read(&state_path).unwrap(), state);
    assert_eq!(sha256(&snap.join("memory")), memory_hash);

    let refused = |why: &str| {
        let out = restore(&snap);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{why}: {stderr}");
        assert!(stderr.contains(why), "{why}: {stderr}");
        assert!(out.stdout.is_empty(), "{why}: the guest ran");
        assert!(!stderr.contains("KVM_RUN"), "{why}: a vCPU ran: {stderr}");
    };

    std::fs::write(&state_path, &state[..state.len() - 100]).unwrap();
    refused("checksum mismatch (the state file is truncated or corrupt)");

    // Another format's file, with a checksum that matches its body.
    let text_state = String::from_utf8(state.clone()).unwrap();
    let (header, body) = text_state.split_once('\n').unwrap();
    let foreign = header.replacen(" 2 sha256=", " 1 sha256=", 1);
    assert_ne!(foreign, header);
    std::fs::write(&state_path, format!("{foreign}\n{body}")).unwrap();
    refused("format 1, this capsa-vmm reads format 2 only");

    std::fs::write(&state_path, &state).unwrap();
    let memory = std::fs::OpenOptions::new()
        .write(true)
        .open(snap.join("memory"))
        .unwrap();
    memory.set_len(32 << 20).unwrap();
    refused("33554432 bytes, the snapshot's guest has 67108864");
}

/// A 1 MiB disk whose sector 0 starts with what the guest checks.
fn disk(path: &Path) -> String {
    let mut bytes = b"CAPSA-TEST-DISK".to_vec();
    bytes.resize(1 << 20, 0);
    std::fs::write(path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn a_restored_guest_goes_on_with_its_disk_on_the_backend_the_restore_gives() {
    let dir = tempfile::tempdir().unwrap();
    let before = disk(&dir.path().join("before.img"));
    let snap = dir.path().join("snap");
    let out = boot(&["--disk", &before, "--snapshot-to", snap.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains("ok: snapshot: disk read before"),
        "{stdout}"
    );

    // The same number of disks, in order, is required; nothing runs otherwise.
    let out = restore(&snap);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("had 1 virtio-blk disks, the restore was given 0"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "the guest ran without its disk");

    let after = disk(&dir.path().join("after.img"));
    let out = run_vmm(
        &["--restore-from", snap.to_str().unwrap(), "--disk", &after],
        LIMIT,
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("ok: snapshot: disk written after"),
        "{stdout}"
    );
    assert!(stdout.contains("ok: snapshot: disk read after"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    // The write went to the restore's disk, not the snapshotted VM's.
    assert_eq!(
        &std::fs::read(&after).unwrap()[512..528],
        b"WRITTEN-BY-GUEST"
    );
    assert_eq!(&std::fs::read(&before).unwrap()[512..528], &[0u8; 16]);
}

/// Accepts one connection on `path` (a vsock host listener) in a thread and returns what the
/// guest sent on it before closing or the VMM's exit closed it.
fn listen_once(path: &Path) -> std::thread::JoinHandle<String> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let mut got = String::new();
        let _ = s.read_to_string(&mut got);
        got
    })
}

#[test]
fn a_restored_guest_has_its_vsock_connections_reset_and_reaches_the_restores_socket() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("snap");
    let before = dir.path().join("before.sock");
    let open_at_snapshot = listen_once(&dir.path().join("before.sock_5000"));
    let out = boot(&[
        "--vsock",
        &format!("cid=3,uds={}", before.display()),
        "--snapshot-to",
        snap.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("ok: snapshot: vsock connection open before"),
        "{stdout}"
    );
    assert_eq!(open_at_snapshot.join().unwrap(), "open at the snapshot");

    // The restore must give the vsock device a host side again.
    let out = restore(&snap);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("had 1 vsock devices, the restore was given 0"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "the guest ran without its vsock");

    // Another socket and another CID: the guest learns both from the transport reset.
    let after = dir.path().join("after.sock");
    let hello = listen_once(&dir.path().join("after.sock_5000"));
    let vsock = format!("cid=7,uds={}", after.display());
    let out = run_vmm(
        &["--restore-from", snap.to_str().unwrap(), "--vsock", &vsock],
        LIMIT,
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("ok: snapshot: vsock transport reset"),
        "{stdout}"
    );
    assert!(stdout.contains("snapshot: vsock cid 7\n"), "{stdout}");
    assert!(
        stdout.contains("ok: snapshot: vsock connected after"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert_eq!(hello.join().unwrap(), "hello after the restore");
}

/// The guest ran to its end (exit 0), checked `check` ("ok: ..." on COM1) and failed none.
fn guest_passed(out: &Output, check: &str) {
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains(&format!("ok: {check}")), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[test]
fn memory_a_guest_reports_free_goes_back_to_zeros_or_to_the_snapshots_pages() {
    // Booted: the block's pages are anonymous; reported free, they read as zeros.
    let out = run_vmm(
        &[
            "--kernel",
            test_guest().to_str().unwrap(),
            "--cmdline",
            "console=ttyS0 capsa.test=reporting",
            "--mem",
            "64M",
            "--free-page-reporting",
        ],
        LIMIT,
    );
    guest_passed(&out, "reporting: the reported block reads as zeros");

    // Restored: the block holds the snapshot's bytes, the guest overwrites and frees it, and it
    // reads as the snapshot's again: the private copies were dropped for the file's pages.
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("snap");
    let out = boot(&[
        "--free-page-reporting",
        "--snapshot-to",
        snap.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let memory = snap.join("memory");
    let hash = sha256(&memory);
    let out = restore(&snap);
    guest_passed(
        &out,
        "snapshot: a reported block reads as the snapshot's again",
    );
    assert_eq!(
        sha256(&memory),
        hash,
        "the snapshot's memory file is unchanged"
    );
}
