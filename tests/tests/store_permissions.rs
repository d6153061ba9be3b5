//! The state directory is root's alone: another local user (here `nobody`) cannot traverse
//! it, so cannot run a setuid-root file from an image layer or from a container's writable
//! layer, nor read a container's config.json (its `-e` values). A store made with shared
//! modes is made private the first time capsa opens it.

use capsa_tests::{busybox_tarball, capsa_bin, eventually, run_bounded, text, TestEnv};
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

/// `program args` as uid and gid 65534 with no supplementary groups. setpriv keeps its
/// capabilities until its own execve, so the program is found by a shell that runs as
/// nobody already.
fn as_nobody(program: &Path, args: &[&str]) -> Output {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--",
        "/bin/sh",
        "-c",
        "exec \"$0\" \"$@\"",
    ]);
    c.arg(program).args(args);
    run_bounded(c, Duration::from_secs(20))
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
    let plain = as_nobody(&store.probe_dir.join("euid"), &[]);
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
