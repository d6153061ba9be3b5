//! The container's root file system, built inside the init's own mount namespace (so no
//! mount is ever visible on the host, and none can be left behind): the overlay of the image
//! layers, the spec's mounts, /dev, then pivot_root, masked and read-only paths.

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::{Mount, Spec};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

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

/// Resolves `unsafe_path` inside `root` as if `root` were `/`: symlinks (absolute or with
/// `..`) cannot lead outside it. Missing components are kept as they are.
pub fn secure_join(root: &Path, unsafe_path: &Path) -> std::io::Result<PathBuf> {
    const MAX_LINKS: u32 = 255;
    let mut resolved = PathBuf::new();
    let mut pending: Vec<std::ffi::OsString> = unsafe_path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = root.join(&resolved).join(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = std::fs::read_link(&candidate)?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(p) => pending.push(p.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => resolved.push(&part),
        }
    }
    Ok(root.join(resolved))
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
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => {
                flags |= MsFlags::MS_BIND | MsFlags::MS_REC;
                recursive_bind = true;
            }
            "private" | "rprivate" | "slave" | "rslave" | "shared" | "rshared" => {}
            other => data.push(other.to_string()),
        }
    }
    (flags, data, recursive_bind)
}

/// Mounts one spec mount under `rootfs`; a bind source found in `opened` is reached through
/// its descriptor.
fn mount_one(
    rootfs: &Path,
    m: &Mount,
    opened: Option<&HashMap<PathBuf, OwnedFd>>,
) -> Result<(), RootfsError> {
    let dest = secure_join(rootfs, m.destination()).map_err(err("resolve", m.destination()))?;
    let options = m.options().clone().unwrap_or_default();
    let (flags, data, _) = parse_options(&options);
    let typ = m.typ().clone().unwrap_or_else(|| "none".into());
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from(&typ));
    let source = match opened.and_then(|o| o.get(&source)) {
        Some(fd) => PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
        None => source,
    };
    let is_bind = flags.contains(MsFlags::MS_BIND);
    if is_bind && !source.is_dir() {
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(err("create mount point", parent))?;
        }
        if !dest.exists() {
            std::fs::File::create(&dest).map_err(err("create mount point", &dest))?;
        }
    } else {
        std::fs::create_dir_all(&dest).map_err(err("create mount point", &dest))?;
    }
    let data = data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    if is_bind {
        mount(
            Some(&source),
            &dest,
            None::<&str>,
            flags & (MsFlags::MS_BIND | MsFlags::MS_REC),
            None::<&str>,
        )
        .map_err(err("bind mount on", &dest))?;
        // A bind mount takes ro/nosuid/... only on a remount.
        let extra = flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
        if !extra.is_empty() {
            mount(
                None::<&str>,
                &dest,
                None::<&str>,
                extra | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                None::<&str>,
            )
            .map_err(err("remount", &dest))?;
        }
    } else {
        mount(Some(&source), &dest, Some(typ.as_str()), flags, data)
            .map_err(err("mount", &dest))?;
    }
    Ok(())
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
/// Returns the directory to pivot into.
pub fn prepare(spec: &Spec, layers: RootLayers) -> Result<PathBuf, RootfsError> {
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
            (rootfs, None)
        }
        RootLayers::Fds(f) => {
            for (layer, target) in f.lower.iter().zip(&f.lower_targets) {
                crate::linux::mountapi::attach(layer, target)
                    .map_err(err("attach layer for", &rootfs))?;
            }
            let mnt =
                crate::linux::mountapi::overlay_from_fds(&f.lower, &f.upper, &f.work, &f.target)
                    .map_err(err("mount overlay on", &rootfs))?;
            nix::unistd::fchdir(mnt.as_raw_fd()).map_err(err("enter", &rootfs))?;
            (PathBuf::from("."), Some(f.bind_sources))
        }
    };
    for m in spec.mounts().iter().flatten() {
        mount_one(&root, m, opened.as_ref())?;
    }
    let devices = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default();
    // Device nodes made in a user namespace cannot be opened: bind the host's instead.
    let bind = opened.is_some();
    crate::linux::devices::populate_dev(&root, &devices, bind)
        .map_err(err("populate", &root.join("dev")))?;
    Ok(root)
}

/// Bind-mounts the pty slave `console` (a host path) as `rootfs`/dev/console.
pub fn bind_console(console: &Path, rootfs: &Path) -> Result<(), RootfsError> {
    let target = rootfs.join("dev/console");
    std::fs::File::create(&target).map_err(err("create", &target))?;
    mount(
        Some(console),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(err("bind console on", &target))
}

/// Makes `rootfs` the root: the old root is detached, so the host's tree is unreachable.
pub fn pivot(rootfs: &Path) -> Result<(), RootfsError> {
    std::env::set_current_dir(rootfs).map_err(err("chdir", rootfs))?;
    nix::unistd::pivot_root(".", ".").map_err(err("pivot_root", rootfs))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(err("detach old root", rootfs))?;
    std::env::set_current_dir("/").map_err(err("chdir", Path::new("/")))
}

/// Hides `paths` (Docker's masked /proc and /sys entries): directories under an empty
/// read-only tmpfs, files under /dev/null.
pub fn mask_paths(paths: &[String]) -> Result<(), RootfsError> {
    for p in paths {
        let path = Path::new(p);
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        let result = if meta.is_dir() {
            mount(
                Some("tmpfs"),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None::<&str>,
            )
        } else {
            mount(
                Some("/dev/null"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        };
        result.map_err(err("mask", path))?;
    }
    Ok(())
}

/// Makes `paths` read-only (bind onto themselves, then remount read-only).
pub fn readonly_paths(paths: &[String]) -> Result<(), RootfsError> {
    for p in paths {
        let path = Path::new(p);
        if !path.exists() {
            continue;
        }
        mount(
            Some(path),
            path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(err("bind", path))?;
        let flags = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC;
        mount(Some(path), path, None::<&str>, flags, None::<&str>)
            .map_err(err("remount ro", path))?;
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
    fn symlinks_cannot_escape_the_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc", root.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", root.path().join("rel")).unwrap();
        let a = secure_join(root.path(), Path::new("/abs/passwd")).unwrap();
        assert_eq!(a, root.path().join("etc/passwd"));
        let r = secure_join(root.path(), Path::new("/rel/passwd")).unwrap();
        assert_eq!(r, root.path().join("etc/passwd"));
        let up = secure_join(root.path(), Path::new("/../../x")).unwrap();
        assert_eq!(up, root.path().join("x"));
    }

    #[test]
    fn symlink_loops_end() {
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/loop", root.path().join("loop")).unwrap();
        assert!(secure_join(root.path(), Path::new("/loop/x")).is_err());
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let (flags, data, _) = parse_options(&["nosuid".into(), "mode=755".into(), "ro".into()]);
        assert!(flags.contains(MsFlags::MS_NOSUID | MsFlags::MS_RDONLY));
        assert_eq!(data, vec!["mode=755".to_string()]);
    }
}
