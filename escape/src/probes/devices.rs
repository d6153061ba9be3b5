//! Device probes: make a node for a device the instance was not given and open it (the
//! capability to make it, the device cgroup at open, and `nodev` mounts each stop it), then
//! read a disk's first sector, never writing.

use std::path::{Path, PathBuf};

use super::files::{first_disk, mount_of};
use super::Env;
use crate::findings::Finding;
use crate::sys::{self, describe};

/// /dev/kmsg: opening it write-only needs no privilege of the log itself, so only the
/// layers in front of the device decide; nothing is written.
const KMSG: (u32, u32) = (1, 11);

/// A device node made for one probe, removed when dropped.
struct Node {
    path: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// mknod(2) of a node at a fresh path in the scratch directory.
fn make_node(
    env: &Env,
    tag: &str,
    kind: libc::mode_t,
    (major, minor): (u32, u32),
) -> Result<Node, i32> {
    let path = env
        .scratch
        .join(format!("capsa-escape-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let c = sys::cstring(&path);
    // SAFETY: a valid path; makes one node owned by this probe, removed by Node's drop.
    let rc = unsafe { libc::mknod(c.as_ptr(), kind | 0o600, libc::makedev(major, minor)) };
    if rc != 0 {
        return Err(sys::errno());
    }
    Ok(Node { path })
}

/// The mount options where the node was made (`nodev` refuses every open).
fn scratch_facts(f: Finding, env: &Env) -> Finding {
    match mount_of(&env.scratch.display().to_string()) {
        Some((point, options)) => f
            .fact("scratch_mount", point)
            .fact("scratch_options", options),
        None => f,
    }
}

/// Makes a node for `dev` and opens it with `flags`; the open descriptor is closed at once.
fn make_and_open(
    name: &str,
    env: &Env,
    kind: libc::mode_t,
    dev: (u32, u32),
    flags: i32,
    what: &str,
) -> Finding {
    let node = match make_node(env, name, kind, dev) {
        Ok(n) => n,
        Err(e) => {
            return Finding::refused(
                name,
                e,
                format!("mknod {what} {}:{}: {}", dev.0, dev.1, describe(e)),
            )
            .fact("stage", "mknod");
        }
    };
    let f = match sys::open(&node.path, flags | libc::O_NOCTTY | libc::O_NONBLOCK) {
        Ok(fd) => {
            sys::close(fd);
            Finding::reached(name, format!("made and opened {what} {}:{}", dev.0, dev.1))
        }
        Err(e) => Finding::refused(
            name,
            e,
            format!("open {what} {}:{}: {}", dev.0, dev.1, describe(e)),
        )
        .fact("stage", "open"),
    };
    scratch_facts(f.fact("dev", format!("{}:{}", dev.0, dev.1)), env)
}

pub fn char_device(env: &Env) -> Finding {
    make_and_open(
        "device_char",
        env,
        libc::S_IFCHR,
        KMSG,
        libc::O_WRONLY,
        "the kernel log /dev/kmsg",
    )
}

/// The first disk's name and `major:minor`.
fn disk() -> Option<(String, (u32, u32))> {
    let name = first_disk()?;
    let dev = sys::read_line(&format!("/sys/block/{name}/dev"))?;
    let (major, minor) = dev.split_once(':')?;
    Some((name, (major.parse().ok()?, minor.parse().ok()?)))
}

pub fn block_device(env: &Env) -> Finding {
    const NAME: &str = "device_block";
    match disk() {
        Some((name, dev)) => make_and_open(
            NAME,
            env,
            libc::S_IFBLK,
            dev,
            libc::O_RDONLY,
            &format!("disk {name}"),
        )
        .fact("disk", name),
        None => Finding::absent(NAME, Some(libc::ENOENT), "no disk in /sys/block"),
    }
}

/// The first SECTOR_BYTES of an open device, fingerprinted.
fn read_start(path: &Path) -> Result<String, i32> {
    let fd = sys::open(path, libc::O_RDONLY | libc::O_NONBLOCK)?;
    let mut buf = vec![0u8; crate::SECTOR_BYTES];
    // SAFETY: reads into a buffer of exactly that length, from the descriptor opened above.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    let result = if n < 0 {
        Err(sys::errno())
    } else {
        Ok(crate::fingerprint(&buf[..n as usize]))
    };
    sys::close(fd);
    result
}

pub fn raw_disk_read(env: &Env) -> Finding {
    const NAME: &str = "raw_disk_read";
    let Some((name, dev)) = disk() else {
        return Finding::absent(NAME, Some(libc::ENOENT), "no disk in /sys/block");
    };
    // The instance's own /dev first (a privileged one has the host's), else a node made here.
    let existing = PathBuf::from(format!("/dev/{name}"));
    let made;
    let path = if existing.exists() {
        existing
    } else {
        made = match make_node(env, NAME, libc::S_IFBLK, dev) {
            Ok(n) => n,
            Err(e) => {
                return Finding::refused(
                    NAME,
                    e,
                    format!("no /dev/{name}; mknod {}:{}: {}", dev.0, dev.1, describe(e)),
                )
                .fact("stage", "mknod")
                .fact("disk", name);
            }
        };
        made.path.clone()
    };
    let f = match read_start(&path) {
        Ok(fp) => Finding::reached(
            NAME,
            format!(
                "read the first {} bytes of disk {name} ({}:{})",
                crate::SECTOR_BYTES,
                dev.0,
                dev.1
            ),
        )
        .fact("fingerprint", fp),
        Err(e) => Finding::refused(
            NAME,
            e,
            format!(
                "read disk {name} ({}:{}) through {}: {}",
                dev.0,
                dev.1,
                path.display(),
                describe(e)
            ),
        )
        .fact("stage", "open"),
    };
    scratch_facts(
        f.fact("disk", name)
            .fact("dev", format!("{}:{}", dev.0, dev.1)),
        env,
    )
}
