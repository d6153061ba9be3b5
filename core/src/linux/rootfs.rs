//! The container's root file system, built inside the init's own mount namespace (so no
//! mount is ever visible on the host, and none can be left behind): the overlay of the image
//! layers, the spec's mounts, /dev, then pivot_root, masked and read-only paths. Every path
//! inside the root is resolved by [`inroot`] and every mount is made onto the descriptor it
//! returned, so no symlink in the image can aim a mount, a node or a file at the host.

use crate::linux::inroot::{self, Kind, Root};
use crate::linux::mountapi;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::{Mount, Spec};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The layers of an overlay root.
#[derive(Debug, Clone)]
pub struct OverlayLayers {
    /// Read-only layer directories, lowest first.
    pub lower: Vec<PathBuf>,
    /// The container's writable layer.
    pub upper: PathBuf,
    /// overlayfs's work directory (same file system as `upper`).
    pub work: PathBuf,
    /// Where a user-namespaced init attaches its idmapped layers: `<dir>/<n>`, made by the
    /// engine, one per layer.
    pub attach_dir: PathBuf,
}

/// The same layers as descriptors, for a user-namespaced init that may not walk the host
/// paths leading to them: lower layers idmapped (top first), and every bind-mount source
/// of the spec opened beforehand.
pub struct FdLayers {
    /// Idmapped lower layers, top first, still detached.
    pub lower: Vec<OwnedFd>,
    /// Empty directories to attach them on, one per layer.
    pub lower_targets: Vec<OwnedFd>,
    /// The writable layer (owned by the namespace's root).
    pub upper: OwnedFd,
    /// overlayfs's work directory.
    pub work: OwnedFd,
    /// The directory the root is mounted on.
    pub target: OwnedFd,
    /// Bind-mount sources of the spec, by their host path.
    pub bind_sources: HashMap<PathBuf, OwnedFd>,
}

/// Where the root's layers come from.
pub enum RootLayers<'a> {
    /// Host paths (init is root on the host).
    Paths(&'a OverlayLayers),
    /// Descriptors (init is root only in its user namespace).
    Fds(FdLayers),
    /// No layers: the spec's root path is a prepared directory (an OCI bundle's rootfs),
    /// bound onto itself so that it is a mount point to pivot into.
    Directory,
    /// The same in a user namespace: the directory and every bind-mount source of the spec
    /// opened beforehand, by their host paths.
    DirectoryFds {
        target: OwnedFd,
        bind_sources: HashMap<PathBuf, OwnedFd>,
    },
}

/// Errors of root file system set-up, naming the path and the step.
#[derive(Debug, thiserror::Error)]
#[error("{step} {path}: {source}")]
pub struct RootfsError {
    step: &'static str,
    path: String,
    source: std::io::Error,
}

fn err<'a, E: Into<std::io::Error>>(
    step: &'static str,
    path: &'a Path,
) -> impl FnOnce(E) -> RootfsError + 'a {
    move |e| RootfsError {
        step,
        path: path.display().to_string(),
        source: e.into(),
    }
}

/// Mounts the overlay root at `target`. Lower paths are given relative to their common
/// directory (entered with chdir) to stay under the one-page limit on mount options.
pub fn mount_overlay(layers: &OverlayLayers, target: &Path) -> Result<(), RootfsError> {
    let base = layers
        .lower
        .first()
        .and_then(|l| l.parent())
        .and_then(|l| l.parent())
        .map(Path::to_path_buf);
    let lower: Vec<String> = layers
        .lower
        .iter()
        .rev() // overlayfs lists the top layer first
        .map(|l| {
            base.as_ref()
                .and_then(|b| l.strip_prefix(b).ok())
                .unwrap_or(l)
                .display()
                .to_string()
        })
        .collect();
    if let Some(b) = &base {
        std::env::set_current_dir(b).map_err(err("chdir", b))?;
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={},index=off",
        lower.join(":"),
        layers.upper.display(),
        layers.work.display()
    );
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(err("mount overlay on", target))
}

/// Mount flags named in OCI mount options; the rest is file-system data.
fn parse_options(options: &[String]) -> (MsFlags, Vec<String>, bool) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    let mut recursive_bind = false;
    for o in options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags &= !MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            // The opposites, as the OCI spec lists them: a later word undoes an earlier one
            // (a tmpfs's defaults, then what the user gave).
            "suid" => flags &= !MsFlags::MS_NOSUID,
            "dev" => flags &= !MsFlags::MS_NODEV,
            "exec" => flags &= !MsFlags::MS_NOEXEC,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "norelatime" => flags &= !MsFlags::MS_RELATIME,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "nostrictatime" => flags &= !MsFlags::MS_STRICTATIME,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "atime" => flags &= !MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "diratime" => flags &= !MsFlags::MS_NODIRATIME,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => {
                flags |= MsFlags::MS_BIND | MsFlags::MS_REC;
                recursive_bind = true;
            }
            // Applied once the mount exists (see `propagation`).
            o if propagation(o).is_some() => {}
            other => data.push(other.to_string()),
        }
    }
    (flags, data, recursive_bind)
}

/// The propagation flags an OCI option (a mount's, or `linux.rootfsPropagation`) names.
pub fn propagation(option: &str) -> Option<MsFlags> {
    let (flag, recursive) = match option {
        "private" => (MsFlags::MS_PRIVATE, false),
        "rprivate" => (MsFlags::MS_PRIVATE, true),
        "slave" => (MsFlags::MS_SLAVE, false),
        "rslave" => (MsFlags::MS_SLAVE, true),
        "shared" => (MsFlags::MS_SHARED, false),
        "rshared" => (MsFlags::MS_SHARED, true),
        "unbindable" => (MsFlags::MS_UNBINDABLE, false),
        "runbindable" => (MsFlags::MS_UNBINDABLE, true),
        _ => return None,
    };
    Some(if recursive {
        flag | MsFlags::MS_REC
    } else {
        flag
    })
}

/// Sets the propagation of the mount at `dest` inside `root` (made in the init's own mount
/// namespace and, for a bind, cloned as a private copy: a shared one starts a peer group of
/// its own there, never one with the host's mounts).
fn set_propagation(root: &Root, dest: &Path, flags: MsFlags) -> Result<(), RootfsError> {
    let mounted = root.resolve(dest).map_err(err("resolve", dest))?;
    mount(
        None::<&str>,
        &inroot::fd_path(mounted.as_fd()),
        None::<&str>,
        flags,
        None::<&str>,
    )
    .map_err(err("set propagation of", dest))
}

/// `linux.rootfsPropagation` on the container's root, after pivot_root: the root is then
/// a mount of the init's own namespace (the host's side was made a slave first).
pub fn set_root_propagation(spec: &Spec) -> Result<(), RootfsError> {
    let wanted = spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().as_deref())
        .and_then(propagation);
    let Some(flags) = wanted else {
        return Ok(());
    };
    let root = Path::new("/");
    mount(None::<&str>, root, None::<&str>, flags, None::<&str>)
        .map_err(err("set propagation of", root))
}

/// Where a bind mount's source is.
enum BindSource<'a> {
    /// A host path (the init is root on the host).
    Path(&'a Path),
    /// A descriptor opened in advance (user namespace).
    Fd(BorrowedFd<'a>),
}

impl BindSource<'_> {
    fn is_dir(&self) -> std::io::Result<bool> {
        match self {
            BindSource::Path(p) => Ok(p.is_dir()),
            BindSource::Fd(fd) => inroot::is_dir(*fd),
        }
    }

    /// A detached copy of the source's mount tree, ready to attach.
    fn clone_tree(&self, recursive: bool) -> std::io::Result<OwnedFd> {
        match self {
            BindSource::Path(p) => {
                let fd = mountapi::open_path(p)?;
                mountapi::clone_tree(fd.as_fd(), recursive)
            }
            BindSource::Fd(fd) => mountapi::clone_tree(*fd, recursive),
        }
    }
}

/// `MOUNT_ATTR_*` for the per-mount flags of a bind mount.
fn bind_attrs(flags: MsFlags) -> u64 {
    [
        (MsFlags::MS_RDONLY, mountapi::MOUNT_ATTR_RDONLY),
        (MsFlags::MS_NOSUID, mountapi::MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, mountapi::MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, mountapi::MOUNT_ATTR_NOEXEC),
    ]
    .iter()
    .filter(|(f, _)| flags.contains(*f))
    .fold(0, |acc, (_, a)| acc | a)
}

/// Bind-mounts `source` onto the descriptor `target` with `attrs` set before the mount
/// becomes visible.
fn bind_onto(
    source: &BindSource,
    target: BorrowedFd,
    recursive: bool,
    attrs: u64,
) -> std::io::Result<()> {
    let tree = source.clone_tree(recursive)?;
    if attrs != 0 {
        mountapi::set_attrs(&tree, attrs)?;
    }
    mountapi::attach(&tree, target)
}

/// A new file system mounted onto the descriptor `target` (through its /proc/self/fd
/// link, which names exactly that inode).
fn mount_fs_onto(
    source: &Path,
    target: BorrowedFd,
    typ: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> nix::Result<()> {
    mount(
        Some(source),
        &inroot::fd_path(target),
        Some(typ),
        flags,
        data,
    )
}

/// Identity of a file: a mount target must not be the root itself.
fn identity(fd: BorrowedFd) -> std::io::Result<(u64, u64)> {
    let st = nix::sys::stat::fstat(fd.as_raw_fd())?;
    Ok((st.st_dev, st.st_ino))
}

/// Refuses a target that the image's symlinks turned into the root itself or into /proc
/// (where a mount would hide what procfs must show, as runc refuses since CVE-2019-19921).
fn check_target(target: BorrowedFd, root_id: (u64, u64)) -> std::io::Result<()> {
    if identity(target)? == root_id {
        return Err(std::io::Error::other(
            "it resolves to the container's root (refused)",
        ));
    }
    let fs = nix::sys::statfs::fstatfs(target)?;
    if fs.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC {
        return Err(std::io::Error::other("it resolves into /proc (refused)"));
    }
    Ok(())
}

/// Mounts one spec mount inside `root`; a bind source found in `opened` is reached through
/// its descriptor. The destination is resolved inside the root and the mount made onto the
/// descriptor that resolution returned.
fn mount_one(
    root: &Root,
    root_id: (u64, u64),
    m: &Mount,
    opened: Option<&HashMap<PathBuf, OwnedFd>>,
) -> Result<(), RootfsError> {
    let dest = m.destination();
    let options = m.options().clone().unwrap_or_default();
    let (flags, data, recursive) = parse_options(&options);
    let typ = m.typ().clone().unwrap_or_else(|| "none".into());
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from(&typ));
    let is_bind = flags.contains(MsFlags::MS_BIND);
    let propagate = options.iter().find_map(|o| propagation(o));
    let target = if matches!(typ.as_str(), "proc" | "sysfs") {
        // Only a real directory: a symlink could aim procfs or sysfs at another mount.
        root.real_dir(dest)
            .map(OwnedFd::from)
            .map_err(err("mount point for", dest))?
    } else {
        let kind = match is_bind {
            true => {
                let src = match opened.and_then(|o| o.get(&source)) {
                    Some(fd) => BindSource::Fd(fd.as_fd()),
                    None => BindSource::Path(&source),
                };
                match src.is_dir().map_err(err("bind source", &source))? {
                    true => Kind::Dir,
                    false => Kind::File,
                }
            }
            false => Kind::Dir,
        };
        root.mount_point(dest, kind)
            .map_err(err("create mount point", dest))?
    };
    check_target(target.as_fd(), root_id).map_err(err("mount on", dest))?;
    if is_bind {
        let src = match opened.and_then(|o| o.get(&source)) {
            Some(fd) => BindSource::Fd(fd.as_fd()),
            None => BindSource::Path(&source),
        };
        bind_onto(&src, target.as_fd(), recursive, bind_attrs(flags))
            .map_err(err("bind mount on", dest))?;
    } else {
        let data = data.join(",");
        let data = (!data.is_empty()).then_some(data.as_str());
        mount_fs_onto(&source, target.as_fd(), &typ, flags, data).map_err(err("mount on", dest))?;
    }
    match propagate {
        Some(p) => set_propagation(root, dest, p),
        None => Ok(()),
    }
}

/// The host paths of the spec's bind mounts (opened in advance for a user namespace).
pub fn bind_sources(spec: &Spec) -> Vec<PathBuf> {
    spec.mounts()
        .iter()
        .flatten()
        .filter(|m| {
            m.options()
                .iter()
                .flatten()
                .any(|o| o == "bind" || o == "rbind")
        })
        .filter_map(|m| m.source().clone())
        .collect()
}

/// Everything before pivot_root: private propagation, the overlay, the spec's mounts, /dev.
/// Returns the root to pivot into.
pub fn prepare(spec: &Spec, layers: RootLayers) -> Result<Root, RootfsError> {
    let rootfs = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_else(|| PathBuf::from("rootfs"));
    // Nothing mounted from here on may propagate back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(err("make rslave", Path::new("/")))?;
    let (root, opened) = match layers {
        RootLayers::Paths(l) => {
            mount_overlay(l, &rootfs)?;
            (Root::open(&rootfs).map_err(err("open", &rootfs))?, None)
        }
        RootLayers::Fds(f) => {
            for (layer, target) in f.lower.iter().zip(&f.lower_targets) {
                mountapi::attach(layer, target).map_err(err("attach layer for", &rootfs))?;
            }
            let mnt = mountapi::overlay_from_fds(&f.lower, &f.upper, &f.work, &f.target)
                .map_err(err("mount overlay on", &rootfs))?;
            (Root::from_fd(mnt), Some(f.bind_sources))
        }
        RootLayers::Directory => {
            bind_directory_onto_itself(&rootfs)?;
            (Root::open(&rootfs).map_err(err("open", &rootfs))?, None)
        }
        RootLayers::DirectoryFds {
            target,
            bind_sources,
        } => {
            let tree = mountapi::clone_tree(target.as_fd(), true).map_err(err("bind", &rootfs))?;
            mountapi::attach(&tree, target.as_fd()).map_err(err("bind", &rootfs))?;
            (Root::from_fd(tree), Some(bind_sources))
        }
    };
    let root_id = identity(root.as_fd()).map_err(err("stat", &rootfs))?;
    for m in spec.mounts().iter().flatten() {
        mount_one(&root, root_id, m, opened.as_ref())?;
    }
    let devices = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default();
    // Device nodes made in a user namespace cannot be opened: bind the host's instead.
    let bind = opened.is_some();
    crate::linux::devices::populate_dev(&root, &devices, bind)
        .map_err(err("populate", Path::new("/dev")))?;
    Ok(root)
}

/// Makes the directory `rootfs` a mount point of its own (with what is mounted under it),
/// in the init's mount namespace: pivot_root needs one.
fn bind_directory_onto_itself(rootfs: &Path) -> Result<(), RootfsError> {
    let fd = mountapi::open_path(rootfs).map_err(err("open", rootfs))?;
    let tree = mountapi::clone_tree(fd.as_fd(), true).map_err(err("bind", rootfs))?;
    mountapi::attach(&tree, fd.as_fd()).map_err(err("bind", rootfs))
}

/// Bind-mounts the spec's bind mounts (volumes, `-v`, the container's /etc files; none under
/// /proc, /sys or /dev) inside the
/// root mounted at `rootfs`, resolved in it as at start: the view of a stopped container
/// that `cp` gives, as Docker's does. The caller is in a private mount namespace.
pub fn mount_binds(rootfs: &Path, spec: &Spec) -> Result<(), RootfsError> {
    let root = Root::open(rootfs).map_err(err("open", rootfs))?;
    let root_id = identity(root.as_fd()).map_err(err("stat", rootfs))?;
    // Kernel file systems (/proc, /sys and the cgroups bound in it, /dev) are not part of a
    // stopped container's files.
    let kernel = |p: &Path| ["/proc", "/sys", "/dev"].iter().any(|k| p.starts_with(k));
    let binds = spec.mounts().iter().flatten().filter(|m| {
        !kernel(m.destination())
            && m.options()
                .iter()
                .flatten()
                .any(|o| o == "bind" || o == "rbind")
    });
    for m in binds {
        mount_one(&root, root_id, m, None)?;
    }
    Ok(())
}

/// Bind-mounts the pty slave `console` (a descriptor of it) as /dev/console inside `root`.
pub fn bind_console(console: BorrowedFd, root: &Root) -> Result<(), RootfsError> {
    let dest = Path::new("/dev/console");
    let target = root
        .mount_point(dest, Kind::File)
        .map_err(err("create", dest))?;
    bind_onto(&BindSource::Fd(console), target.as_fd(), false, 0)
        .map_err(err("bind console on", dest))
}

/// Makes `root` the root: the old root is detached, so the host's tree is unreachable.
pub fn pivot(root: &Root) -> Result<(), RootfsError> {
    let here = Path::new(".");
    nix::unistd::fchdir(root.as_fd().as_raw_fd()).map_err(err("enter", here))?;
    nix::unistd::pivot_root(".", ".").map_err(err("pivot_root", here))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(err("detach old root", here))?;
    std::env::set_current_dir("/").map_err(err("chdir", Path::new("/")))
}

/// The root after pivot_root, for the set-up that follows: paths still resolve inside it
/// and never through a magic link (the init's /proc/self/fd holds host descriptors).
pub fn current_root() -> Result<Root, RootfsError> {
    Root::open(Path::new("/")).map_err(err("open", Path::new("/")))
}

/// Resolves `path` in `root`; None when it does not exist.
fn resolve_existing(root: &Root, path: &Path) -> Result<Option<OwnedFd>, RootfsError> {
    match root.resolve(path) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(err("resolve", path)(e)),
    }
}

/// Hides `paths` (Docker's masked /proc and /sys entries): directories under an empty
/// read-only tmpfs, files under /dev/null.
pub fn mask_paths(root: &Root, paths: &[String]) -> Result<(), RootfsError> {
    let mut null = None;
    for p in paths {
        let path = Path::new(p);
        let Some(target) = resolve_existing(root, path)? else {
            continue;
        };
        if inroot::is_dir(target.as_fd()).map_err(err("stat", path))? {
            mount_fs_onto(
                Path::new("tmpfs"),
                target.as_fd(),
                "tmpfs",
                MsFlags::MS_RDONLY,
                None,
            )
            .map_err(err("mask", path))?;
            continue;
        }
        if null.is_none() {
            null = Some(dev_null(root)?);
        }
        let source = BindSource::Fd(null.as_ref().map(|n| n.as_fd()).expect("set above"));
        bind_onto(&source, target.as_fd(), false, 0).map_err(err("mask", path))?;
    }
    Ok(())
}

/// The container's /dev/null, checked to be the null device (what masks files).
fn dev_null(root: &Root) -> Result<OwnedFd, RootfsError> {
    let path = Path::new("/dev/null");
    let fd = root.resolve(path).map_err(err("open", path))?;
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(err("stat", path))?;
    let is_char = st.st_mode & libc::S_IFMT == libc::S_IFCHR;
    if !is_char || st.st_rdev != nix::sys::stat::makedev(1, 3) {
        return Err(err("mask with", path)(std::io::Error::other(
            "not the null device",
        )));
    }
    Ok(fd)
}

/// Makes `paths` read-only (with everything mounted under them): a read-only copy of each
/// mount tree is attached over itself.
pub fn readonly_paths(root: &Root, paths: &[String]) -> Result<(), RootfsError> {
    let attrs = mountapi::MOUNT_ATTR_RDONLY
        | mountapi::MOUNT_ATTR_NOSUID
        | mountapi::MOUNT_ATTR_NODEV
        | mountapi::MOUNT_ATTR_NOEXEC;
    for p in paths {
        let path = Path::new(p);
        let Some(target) = resolve_existing(root, path)? else {
            continue;
        };
        bind_onto(&BindSource::Fd(target.as_fd()), target.as_fd(), true, attrs)
            .map_err(err("make read-only", path))?;
    }
    Ok(())
}

/// `--read-only`: remounts the root read-only once every mount under it is in place.
pub fn remount_root_readonly() -> Result<(), RootfsError> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    mount(None::<&str>, "/", None::<&str>, flags, None::<&str>)
        .map_err(err("remount ro", Path::new("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagation_options_are_flags_applied_after_the_mount() {
        let (flags, data, _) = parse_options(&["rbind".into(), "rshared".into()]);
        assert!(
            !flags.contains(MsFlags::MS_SHARED),
            "not a mount(2) flag of the bind"
        );
        assert!(data.is_empty(), "not file-system data either");
        assert_eq!(
            propagation("rshared"),
            Some(MsFlags::MS_SHARED | MsFlags::MS_REC)
        );
        assert_eq!(propagation("slave"), Some(MsFlags::MS_SLAVE));
        assert_eq!(
            propagation("runbindable"),
            Some(MsFlags::MS_UNBINDABLE | MsFlags::MS_REC)
        );
        assert_eq!(propagation("bind"), None);
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let (flags, data, _) = parse_options(&["nosuid".into(), "mode=755".into(), "ro".into()]);
        assert!(flags.contains(MsFlags::MS_NOSUID | MsFlags::MS_RDONLY));
        assert_eq!(data, vec!["mode=755".to_string()]);
    }
}
