//! The agent's copy processes, run here against directories standing for a container's
//! root (as `MountRoot` mounts it). The copy process is forked, so this file holds one test:
//! its binary has no other thread running while the copy process starts (the agent itself is
//! single-threaded). Needs root (the copy process chroots), as the workspace's tests do.

use std::io::{Read, Write};
use std::os::unix::fs::symlink;
use std::path::Path;

use capsa_agent::copy::{self, CopyProcess, Root};

/// Waits for the copy process; returns its exit code, its stdout and its stderr.
fn finish(mut p: CopyProcess) -> (i32, Vec<u8>, String) {
    let mut out = Vec::new();
    p.stdout.read_to_end(&mut out).unwrap();
    let mut err = String::new();
    p.stderr.read_to_string(&mut err).unwrap();
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(p.pid), None).unwrap();
    let nix::sys::wait::WaitStatus::Exited(_, code) = status else {
        panic!("copy process: {status:?}");
    };
    (code, out, err)
}

#[test]
fn copies_stay_inside_the_root_they_were_given() {
    let host = tempfile::tempdir().unwrap();
    let secret = host.path().join("host-secret");
    std::fs::write(&secret, "host only").unwrap();
    let root = host.path().join("root");
    std::fs::create_dir_all(root.join("data/sub")).unwrap();
    std::fs::write(root.join("data/sub/file"), "inside").unwrap();
    // A link an image could hold: `/` inside the root must stay the root.
    symlink("/", root.join("data/up")).unwrap();

    // Out of the root: the archive holds the tree under its last component, the link kept.
    let (code, archive, err) = finish(copy::copy_out(Root::Mounted(&root), "/data").unwrap());
    assert_eq!((code, err.as_str()), (0, ""));
    let names: Vec<String> = tar::Archive::new(&archive[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.contains(&"data/sub/file".to_string()), "{names:?}");
    assert!(names.contains(&"data/up".to_string()), "{names:?}");

    // A host path, directly or through the link, is looked up inside the root: not found.
    for path in [
        secret.display().to_string(),
        format!("/data/up{}", secret.display()),
    ] {
        let (code, archive, err) = finish(copy::copy_out(Root::Mounted(&root), &path).unwrap());
        assert_eq!(code, 1, "{path}: {err}");
        assert!(!String::from_utf8_lossy(&archive).contains("host only"));
        assert!(err.contains("No such file or directory"), "{path}: {err}");
    }

    // Into another root: the archive lands at the path inside it, nowhere else.
    let other = host.path().join("other");
    std::fs::create_dir_all(other.join("dst")).unwrap();
    let mut p = copy::copy_in(Root::Mounted(&other), "/dst", false, false).unwrap();
    let mut stdin = p.stdin.take().unwrap();
    stdin
        .write_all(&archive_of_one("data/file", b"copied"))
        .unwrap();
    drop(stdin);
    let (code, _, err) = finish(p);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(
        std::fs::read(other.join("dst/data/file")).unwrap(),
        b"copied"
    );
    assert!(!Path::new("/dst/data/file").exists(), "written on the host");

    // A broken archive fails the copy with the reason, naming the destination.
    let mut p = copy::copy_in(Root::Mounted(&other), "/dst", false, false).unwrap();
    let mut stdin = p.stdin.take().unwrap();
    stdin.write_all(&[0x41; 1024]).unwrap();
    drop(stdin);
    let (code, _, err) = finish(p);
    assert_eq!(code, 1);
    assert!(err.starts_with("/dst: malformed tar stream"), "{err}");

    // A workload that is gone is named before anything is forked.
    let err = copy::copy_out(Root::Workload(i32::MAX), "/").err().unwrap();
    assert!(
        err.to_string()
            .starts_with(&format!("process {}: ", i32::MAX)),
        "{err}"
    );

    // `commit`'s copy: an upper directory as an image layer, deletions as `.wh.` entries,
    // the spec's mount points left out; one that is not there is named.
    let upper = host.path().join("upper");
    std::fs::create_dir_all(upper.join("proc")).unwrap();
    std::fs::write(upper.join("made"), "new").unwrap();
    nix::sys::stat::mknod(
        &upper.join("deleted"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    let p = copy::copy_layer(upper.clone(), vec!["proc".into()]).unwrap();
    let (code, archive, err) = finish(p);
    assert_eq!((code, err.as_str()), (0, ""));
    let names: Vec<String> = tar::Archive::new(&archive[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, [".wh.deleted", "made"]);
    let (code, _, err) = finish(copy::copy_layer(host.path().join("none"), vec![]).unwrap());
    assert_eq!(code, 1);
    assert!(err.starts_with("the writable layer: "), "{err}");
}

/// A tar stream holding one file `name` with `data`.
fn archive_of_one(name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    b.append_data(&mut h, name, data).unwrap();
    b.into_inner().unwrap()
}
