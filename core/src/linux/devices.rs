//! The container's minimal /dev: the device nodes every container gets, the cgroup rules
//! that confine device access, and the standard symlinks.

use crate::linux::inroot::{Kind, Root};
use nix::sys::stat::{makedev, SFlag};
use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
};
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::Path;

/// (name, major, minor) of the character devices every container gets, mode 0666.
const DEFAULT_NODES: &[(&str, i64, i64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Extra (major, minor) access allowed by the cgroup: console, ptmx, pty slaves (136:*),
/// the tun device.
const EXTRA_ALLOWED: &[(i64, Option<i64>)] =
    &[(5, Some(1)), (5, Some(2)), (136, None), (10, Some(200))];

/// Standard /dev symlinks (link, target).
const SYMLINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("core", "/proc/kcore"),
    ("ptmx", "pts/ptmx"),
];

/// The device nodes of an unprivileged container.
pub fn default_devices() -> Vec<LinuxDevice> {
    DEFAULT_NODES
        .iter()
        .map(|(name, major, minor)| {
            LinuxDeviceBuilder::default()
                .path(format!("/dev/{name}"))
                .typ(LinuxDeviceType::C)
                .major(*major)
                .minor(*minor)
                .file_mode(0o666u32)
                .uid(0u32)
                .gid(0u32)
                .build()
                .expect("all fields set")
        })
        .collect()
}

/// One device cgroup rule (`major`/`minor` `None` = every number).
pub fn rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .typ(typ)
        .access(access);
    if let Some(m) = major {
        b = b.major(m);
    }
    if let Some(m) = minor {
        b = b.minor(m);
    }
    b.build().expect("all fields set")
}

/// Device cgroup rules: deny all, allow mknod of anything (access is what matters), then
/// read/write only to the default nodes, ptys, the console and tun, as Docker does.
/// `privileged` allows everything.
pub fn default_cgroup_rules(privileged: bool) -> Vec<LinuxDeviceCgroup> {
    if privileged {
        return vec![rule(true, LinuxDeviceType::A, None, None, "rwm")];
    }
    let mut rules = vec![
        rule(false, LinuxDeviceType::A, None, None, "rwm"),
        rule(true, LinuxDeviceType::C, None, None, "m"),
        rule(true, LinuxDeviceType::B, None, None, "m"),
    ];
    for (_, major, minor) in DEFAULT_NODES {
        rules.push(rule(
            true,
            LinuxDeviceType::C,
            Some(*major),
            Some(*minor),
            "rwm",
        ));
    }
    for (major, minor) in EXTRA_ALLOWED {
        rules.push(rule(true, LinuxDeviceType::C, Some(*major), *minor, "rwm"));
    }
    rules
}

/// Every character and block device of the host's /dev (top level), for `--privileged`.
pub fn host_devices() -> Vec<LinuxDevice> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(entries) = std::fs::read_dir("/dev") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            let ft = meta.file_type();
            let typ = if ft.is_char_device() {
                LinuxDeviceType::C
            } else if ft.is_block_device() {
                LinuxDeviceType::B
            } else {
                return None;
            };
            let name = e.file_name().into_string().ok()?;
            if ["ptmx", "console", "tty"].contains(&name.as_str()) {
                return None;
            }
            let rdev = meta.rdev();
            LinuxDeviceBuilder::default()
                .path(format!("/dev/{name}"))
                .typ(typ)
                .major(nix::sys::stat::major(rdev) as i64)
                .minor(nix::sys::stat::minor(rdev) as i64)
                .file_mode(meta.mode() & 0o7777)
                .uid(meta.uid())
                .gid(meta.gid())
                .build()
                .ok()
        })
        .collect()
}

/// Creates `devices` inside `root` (whose /dev is already a fresh tmpfs) and the symlinks,
/// each resolved inside the root and made on the directory that resolution reached.
/// With `bind`, each node is the host's own, bind-mounted (for user namespaces, where a
/// node made with mknod cannot be opened).
pub fn populate_dev(root: &Root, devices: &[LinuxDevice], bind: bool) -> std::io::Result<()> {
    let dev_dir = Path::new("/dev");
    let dev = root.mkdir_all(dev_dir).map_err(in_path(dev_dir))?;
    for device in devices {
        let path = device.path();
        if bind {
            let target = root.mount_point(path, Kind::File).map_err(in_path(path))?;
            let source = crate::linux::mountapi::open_path(path).map_err(in_path(path))?;
            let tree =
                crate::linux::mountapi::clone_tree(source.as_fd(), false).map_err(in_path(path))?;
            crate::linux::mountapi::attach(&tree, target).map_err(in_path(path))?;
            continue;
        }
        let kind = match device.typ() {
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            _ => SFlag::S_IFCHR,
        };
        let mode = device.file_mode().unwrap_or(0o666);
        let number = makedev(device.major() as u64, device.minor() as u64);
        let owner = Some((device.uid().unwrap_or(0), device.gid().unwrap_or(0)));
        // /dev/NAME, the usual case, reuses the /dev directory opened above.
        let parent = path.parent().filter(|p| *p != dev_dir);
        let (other, name) = match (parent, path.file_name()) {
            (None, Some(name)) => (None, name.to_os_string()),
            _ => {
                let (dir, name) = root.parent(path).map_err(in_path(path))?;
                (Some(dir), name)
            }
        };
        other
            .as_ref()
            .unwrap_or(&dev)
            .mknod(&name, kind, mode, number, owner)
            .map_err(in_path(path))?;
    }
    for (link, target) in SYMLINKS {
        dev.symlink(OsStr::new(link), Path::new(target))
            .map_err(in_path(&dev_dir.join(link)))?;
    }
    Ok(())
}

/// Names `path` in an error about it.
fn in_path(path: &Path) -> impl FnOnce(std::io::Error) -> std::io::Error + '_ {
    move |e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
