//! The state directory is root's alone: another local user (here `nobody`) cannot traverse
//! it, so cannot run a setuid-root file from an image layer or from a container's writable
//! layer, nor read a container's config.json (its `-e` values). A store made with shared
//! modes is made private the first time capsa opens it. A state directory another user
//! controls (it, or a folder above it) is refused before capsa reads or writes in it, and a
//! path that is not a store is refused and left as it was.

use capsa_tests::{as_nobody, busybox_tarball, capsa_bin, eventually, run_bounded, text, TestEnv};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// Prints its effective user ID: what a setuid-root copy would give its caller.
const EUID_C: &str = r#"
#include <stdio.h>
#include <unistd.h>
int main(void) { printf("euid=%d\n", (int)geteuid()); return 0; }
"#;

/// A store of its own, created by capsa (so with the modes capsa chooses), in a folder
/// every user may traverse, as /var/lib is.
struct Store {
    _parent: tempfile::TempDir,
    root: PathBuf,
    probe_dir: PathBuf,
}

impl Store {
    fn capsa(&self, env: &TestEnv, args: &[&str]) -> Output {
        let mut c = env.host_command("nsenter");
        c.arg(capsa_bin()).arg("--root").arg(&self.root).args(args);
        run_bounded(c, Duration::from_secs(60))
    }

    fn ok(&self, env: &TestEnv, args: &[&str]) -> String {
        let out = self.capsa(env, args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    }
}

/// The store with busybox and an image whose only file is a setuid-root `bin/euid`.
fn store_with_setuid_image(env: &TestEnv) -> Store {
    let parent = tempfile::Builder::new()
        .prefix("capsa-perm-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let probe_dir = parent.path().join("probe");
    std::fs::create_dir(&probe_dir).unwrap();
    std::fs::set_permissions(&probe_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = probe_dir.join("euid.c");
    std::fs::write(&src, EUID_C).unwrap();
    let out = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(probe_dir.join("euid"))
        .arg(&src)
        .output()
        .expect("gcc (build-essential, installed by scripts/setup.sh)");
    assert!(out.status.success(), "gcc: {}", text(&out.stderr));
    let store = Store {
        root: parent.path().join("store"),
        _parent: parent,
        probe_dir,
    };
    let tar = busybox_tarball().to_str().unwrap().to_string();
    store.ok(
        env,
        &[
            "import",
            "-c",
            r#"CMD ["sh"]"#,
            "-c",
            "ENV PATH=/bin",
            &tar,
            "busybox",
        ],
    );
    let suid_tar = store.probe_dir.join("suid.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&suid_tar).unwrap());
    let binary = std::fs::read(store.probe_dir.join("euid")).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(binary.len() as u64);
    h.set_mode(0o4755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1);
    b.append_data(&mut h, "bin/euid", &binary[..]).unwrap();
    b.finish().unwrap();
    store.ok(env, &["import", suid_tar.to_str().unwrap(), "suidimg"]);
    store
}

/// A container that made a setuid-root file in its writable layer (as any default
/// container can: it holds CAP_FSETID) and carries a secret in its environment.
fn container_with_setuid_upper(env: &TestEnv, store: &Store) -> PathBuf {
    let volume = format!("{}:/probe:ro", store.probe_dir.display());
    let id = store.ok(
        env,
        &[
            "run",
            "-d",
            "--name",
            "holder",
            "--network",
            "none",
            "--cgroup-parent",
            env.cgroup_parent(),
            "-e",
            "SECRET=hunter2",
            "-v",
            &volume,
            "busybox",
            "sh",
            "-c",
            "cp /probe/euid /suid && chmod 4755 /suid && sleep 600",
        ],
    );
    let dir = store.root.join("containers").join(id.trim());
    let suid = dir.join("upper/suid");
    eventually(
        "the setuid file in the upper dir",
        Duration::from_secs(20),
        || std::fs::metadata(&suid).is_ok_and(|m| m.permissions().mode() & 0o4000 != 0),
    );
    dir
}

/// The setuid `bin/euid` in the store's layers (found as root).
fn layer_euid(store: &Store) -> PathBuf {
    std::fs::read_dir(store.root.join("layers"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("diff/bin/euid"))
        .find(|p| p.exists())
        .expect("the layer holding bin/euid")
}

/// What `nobody` must not be able to do in `store`, whose container folder is `dir`.
fn assert_closed_to_nobody(store: &Store, dir: &Path) {
    // The probe itself runs for nobody (setpriv works), and is not setuid there.
    let plain = as_nobody(store.probe_dir.join("euid"), &[]);
    assert_eq!(text(&plain.stdout), "euid=65534\n");
    for setuid in [layer_euid(store), dir.join("upper/suid")] {
        let out = as_nobody(&setuid, &[]);
        assert!(
            !out.status.success() && !text(&out.stdout).contains("euid=0"),
            "nobody ran {}: {}",
            setuid.display(),
            text(&out.stdout)
        );
    }
    let config = dir.join("config.json");
    let out = as_nobody(Path::new("/bin/cat"), &[config.to_str().unwrap()]);
    assert!(!out.status.success(), "nobody read config.json");
    assert!(!text(&out.stdout).contains("hunter2"));
    let listing = as_nobody(Path::new("/bin/ls"), &[store.root.to_str().unwrap()]);
    assert!(!listing.status.success(), "nobody lists the store");
    // Behind the closed folders, the records are private as well.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&store.root), 0o700);
    for folder in ["layers", "containers"] {
        assert_eq!(mode(&store.root.join(folder)), 0o700, "{folder}");
    }
    assert_eq!(mode(dir), 0o700);
    for record in ["config.json", "state.json", "ctr.log"] {
        assert_eq!(mode(&dir.join(record)), 0o600, "{record}");
    }
}

fn remove(env: &TestEnv, store: &Store) {
    store.ok(env, &["rm", "-f", "holder"]);
    assert!(env.leftover_cgroups().is_empty());
}

#[test]
fn a_new_store_is_closed_to_other_users() {
    let env = TestEnv::new();
    let store = store_with_setuid_image(&env);
    let dir = container_with_setuid_upper(&env, &store);
    assert_closed_to_nobody(&store, &dir);
    remove(&env, &store);
}

#[test]
fn a_store_with_shared_modes_is_made_private_on_first_use() {
    let env = TestEnv::new();
    let store = store_with_setuid_image(&env);
    let dir = container_with_setuid_upper(&env, &store);
    // What capsa made before the store was private.
    let set = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    for folder in [
        &store.root,
        &store.root.join("layers"),
        &store.root.join("containers"),
        &dir,
    ] {
        set(folder, 0o755);
    }
    for record in ["config.json", "state.json", "ctr.log"] {
        set(&dir.join(record), 0o644);
    }
    let open = as_nobody(
        Path::new("/bin/cat"),
        &[dir.join("config.json").to_str().unwrap()],
    );
    assert!(
        text(&open.stdout).contains("hunter2"),
        "the old modes are in place"
    );
    store.ok(&env, &["ps"]);
    assert_closed_to_nobody(&store, &dir);
    // The running container is untouched by the change.
    assert_eq!(
        store
            .ok(&env, &["exec", "holder", "cat", "/etc/hostname"])
            .len(),
        13
    );
    remove(&env, &store);
}

/// `capsa --root ROOT ps` (no network needed), bounded.
fn ps_with_root(root: &Path) -> Output {
    let mut c = Command::new(capsa_bin());
    c.arg("--root").arg(root).arg("ps");
    run_bounded(c, Duration::from_secs(30))
}

/// A folder that stands for /tmp (root's, world-writable, sticky), inside a private one.
fn sticky_public_dir() -> (tempfile::TempDir, PathBuf) {
    let top = tempfile::Builder::new()
        .prefix("capsa-owner-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let public = top.path().join("public");
    std::fs::create_dir(&public).unwrap();
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o1777)).unwrap();
    (top, public)
}

/// Asserts that `capsa --root root ps` is refused in one line naming `culprit` and
/// `cause`, with exit 125, and that nothing appeared in `untouched`.
fn assert_root_refused(root: &Path, culprit: &Path, cause: &str, untouched: &Path) {
    let before: Vec<_> = std::fs::read_dir(untouched)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let out = ps_with_root(root);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{}: {err}", root.display());
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(&culprit.display().to_string()) && err.contains(cause),
        "expected {} and {cause:?} in {err:?}",
        culprit.display()
    );
    let after: Vec<_> = std::fs::read_dir(untouched)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(before, after, "capsa wrote into {}", untouched.display());
}

#[test]
fn a_state_directory_another_user_controls_is_refused_before_use() {
    let (_top, public) = sticky_public_dir();
    // nobody made the folder first (a --root under /tmp), or a folder above it.
    let theirs = public.join("store");
    let mine = public.join("mine");
    for dir in [&theirs, &mine] {
        let out = as_nobody(
            Path::new("/bin/mkdir"),
            &["-m", "700", dir.to_str().unwrap()],
        );
        assert!(
            out.status.success(),
            "mkdir as nobody: {}",
            text(&out.stderr)
        );
    }
    assert_root_refused(&theirs, &theirs, "owned by uid 65534", &theirs);
    assert_root_refused(&mine.join("store"), &mine, "owned by uid 65534", &mine);
    // A folder of root's that every user may write to, without the sticky bit.
    let open = public.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_root_refused(&open.join("store"), &open, "writable by other users", &open);
    // The sticky public folder itself is fine above a store of root's (as /tmp is).
    let ours = public.join("ours");
    let out = ps_with_root(&ours);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let meta = std::fs::metadata(&ours).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
}

#[test]
fn a_path_that_is_not_a_store_is_refused_and_left_as_it_was() {
    let top = tempfile::Builder::new()
        .prefix("capsa-notstore-")
        .tempdir()
        .unwrap();
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    let set =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    // A shared folder of other people's files (`--root .` in the wrong place, `--root /etc`).
    let shared = top.path().join("shared");
    std::fs::create_dir_all(shared.join("alice-dir")).unwrap();
    std::fs::write(shared.join("alice-file"), "hi\n").unwrap();
    std::fs::write(shared.join("alice-script"), "#!/bin/sh\n").unwrap();
    set(&shared, 0o755);
    set(&shared.join("alice-dir"), 0o755);
    set(&shared.join("alice-file"), 0o644);
    set(&shared.join("alice-script"), 0o4755);
    assert_root_refused(&shared, &shared, "no capsa store", &shared);
    assert_eq!(mode(&shared), 0o755);
    assert_eq!(mode(&shared.join("alice-dir")), 0o755);
    assert_eq!(mode(&shared.join("alice-file")), 0o644);
    assert_eq!(mode(&shared.join("alice-script")), 0o4755);
    // A file.
    let file = top.path().join("file");
    std::fs::write(&file, "data\n").unwrap();
    set(&file, 0o644);
    let out = ps_with_root(&file);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("not a directory"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(mode(&file), 0o644);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "data\n");
    // A store made with shared modes: capsa's entries are made private, nothing else is.
    let store = top.path().join("store");
    assert!(ps_with_root(&store).status.success());
    std::fs::write(store.join("notes.txt"), "mine\n").unwrap();
    std::fs::create_dir(store.join("lost+found")).unwrap();
    for (p, m) in [
        (store.clone(), 0o755),
        (store.join("containers"), 0o755),
        (store.join("notes.txt"), 0o644),
        (store.join("lost+found"), 0o755),
    ] {
        set(&p, m);
    }
    let out = ps_with_root(&store);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(mode(&store), 0o700);
    assert_eq!(mode(&store.join("containers")), 0o700);
    assert_eq!(mode(&store.join("notes.txt")), 0o644);
    assert_eq!(mode(&store.join("lost+found")), 0o755);
}
