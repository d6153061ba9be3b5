//! Docker's first-use copy: a new, empty volume mounted over a path where the image has
//! content gets that content (an image's `VOLUME /var/lib/db` starts with what the image
//! put there).
//!
//! The image's view of the path is read the way `cp` reads a stopped container: in a
//! child with a private mount namespace, over an overlay of the image's layers with an
//! empty upper layer, chrooted into it, so the image's symlinks resolve inside the image.
//! The child writes a tar stream of the tree; this process unpacks it into the volume,
//! owners and modes kept, every entry checked to stay under `_data`.

use super::{Volume, VolumeError};
use crate::linux::rootfs::{mount_overlay, OverlayLayers};
use crate::linux::sys::{self, Forked};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

/// The top entry of the stream: the volume's data directory.
const TOP: &str = "_data";

/// Why the first-use copy failed (shown after "copying the image's PATH into it: ").
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A pipe to the child could not be made.
    #[error("pipe: {0}")]
    Pipe(#[source] nix::Error),
    /// The child could not be started, or its stream not read.
    #[error("{0}")]
    Process(#[source] std::io::Error),
    /// The child failed: its message (it comes from another process, as text).
    #[error("{0}")]
    Child(String),
    /// The stream is not a tar archive.
    #[error("malformed tar stream: {0}")]
    Malformed(#[source] std::io::Error),
    /// An entry could not be read or written.
    #[error("{}: {source}", .path.display())]
    Entry {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An entry would land outside `_data`.
    #[error("{}: outside the volume (refused)", .0.display())]
    Outside(PathBuf),
}

/// Why the child could not write the image's tree (sent to the parent as text).
#[derive(Debug, thiserror::Error)]
enum TreeError {
    #[error("prctl(PR_SET_DUMPABLE): {0}")]
    Dumpable(#[source] std::io::Error),
    #[error("make rslave: {0}")]
    Rslave(#[source] nix::Error),
    #[error(transparent)]
    Overlay(#[from] crate::linux::rootfs::RootfsError),
    #[error("chroot: {0}")]
    Chroot(#[source] nix::Error),
    #[error("chdir: {0}")]
    Chdir(#[source] std::io::Error),
    #[error("{}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Write(#[source] std::io::Error),
}

/// Copies what the image with `layers` (lowest first) holds at `path` into `volume`'s
/// empty `_data`; `scratch` is a private directory on the store's file system for the
/// overlay's upper and work directories. Returns whether anything was copied: nothing is
/// when no layer has the path or the volume already holds something.
pub fn from_image(
    layers: &[PathBuf],
    path: &str,
    volume: &Volume,
    scratch: &Path,
) -> Result<bool, VolumeError> {
    let in_some_layer = layers.iter().any(|l| {
        crate::linux::inroot::Root::open(l).is_ok_and(|r| r.resolve(Path::new(path)).is_ok())
    });
    let data = volume.data_dir();
    let empty = std::fs::read_dir(&data)
        .map_err(|e| VolumeError::io(&data, e))?
        .next()
        .is_none();
    if !in_some_layer || !empty || layers.is_empty() {
        return Ok(false);
    }
    let work = tempfile::Builder::new()
        .prefix("volume-copy-")
        .tempdir_in(scratch)
        .map_err(|e| VolumeError::io(scratch, e))?;
    let overlay = OverlayLayers {
        lower: layers.to_vec(),
        upper: work.path().join("upper"),
        work: work.path().join("work"),
        attach_dir: work.path().join("attach"),
    };
    let target = work.path().join("root");
    for d in [&overlay.upper, &overlay.work, &target] {
        std::fs::create_dir(d).map_err(|e| VolumeError::io(d, e))?;
    }
    let copy = stream_from_child(&overlay, &target, Path::new(path), |stream| {
        unpack(stream, &volume.dir)
    });
    copy.map_err(|source| VolumeError::FirstCopy {
        name: volume.record.name.clone(),
        path: path.to_string(),
        source,
    })?;
    Ok(true)
}

/// Runs a child that mounts `overlay` on `target`, chroots there and writes `path` as a
/// tar stream; `read` consumes the stream here. The child's error, if any, wins.
fn stream_from_child(
    overlay: &OverlayLayers,
    target: &Path,
    path: &Path,
    read: impl FnOnce(std::fs::File) -> Result<(), CopyError>,
) -> Result<(), CopyError> {
    let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
    let (data_r, data_w) = nix::unistd::pipe2(cloexec).map_err(CopyError::Pipe)?;
    let (err_r, err_w) = nix::unistd::pipe2(cloexec).map_err(CopyError::Pipe)?;
    let flags = libc::CLONE_NEWNS as u64;
    match sys::fork_into_namespaces(flags, None).map_err(CopyError::Process)? {
        Forked::Child => {
            drop((data_r, err_r));
            let result = write_image_tree(overlay, target, path, std::fs::File::from(data_w));
            let code = match result {
                Ok(()) => 0,
                Err(e) => {
                    let msg = e.to_string();
                    let _ = std::fs::File::from(err_w).write_all(msg.as_bytes());
                    1
                }
            };
            // SAFETY: ends the forked child without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        Forked::Parent(child) => {
            drop((data_w, err_w));
            let mut stream = std::fs::File::from(data_r);
            let read_result = read(stream.try_clone().map_err(CopyError::Process)?);
            // Drain what is left so the child never blocks on a full pipe.
            let _ = std::io::copy(&mut stream, &mut std::io::sink());
            drop(stream);
            let mut msg = String::new();
            let _ = std::fs::File::from(err_r).read_to_string(&mut msg);
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None);
            if !msg.is_empty() {
                return Err(CopyError::Child(msg));
            }
            read_result
        }
    }
}

/// The child's work: the image's root in a private mount namespace, then `path` as a tar
/// stream whose top entry is [`TOP`] (nothing when it is not a directory there).
fn write_image_tree(
    overlay: &OverlayLayers,
    target: &Path,
    path: &Path,
    out: std::fs::File,
) -> Result<(), TreeError> {
    sys::set_dumpable(false).map_err(TreeError::Dumpable)?;
    let private = nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE;
    nix::mount::mount(None::<&str>, "/", None::<&str>, private, None::<&str>)
        .map_err(TreeError::Rslave)?;
    mount_overlay(overlay, target)?;
    nix::unistd::chroot(target).map_err(TreeError::Chroot)?;
    std::env::set_current_dir("/").map_err(TreeError::Chdir)?;
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    // Followed inside the image's root, as the container will see it.
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        b.append_dir_all(TOP, path)
            .map_err(|source| TreeError::Read {
                path: path.to_path_buf(),
                source,
            })?;
    }
    b.into_inner()
        .and_then(|mut f| f.flush())
        .map_err(TreeError::Write)
}

/// Unpacks the child's stream into the volume's folder: every entry under [`TOP`], owners,
/// modes and times kept.
fn unpack(stream: std::fs::File, volume_dir: &Path) -> Result<(), CopyError> {
    let mut archive = tar::Archive::new(crate::image::tar_guard::HeaderGuard::new(stream));
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    for entry in archive.entries().map_err(CopyError::Malformed)? {
        let mut entry = entry.map_err(CopyError::Malformed)?;
        let path = entry.path().map_err(CopyError::Malformed)?.into_owned();
        let under_top = path.components().next() == Some(Component::Normal(TOP.as_ref()));
        if !under_top
            || !entry
                .unpack_in(volume_dir)
                .map_err(|source| CopyError::Entry {
                    path: path.clone(),
                    source,
                })?
        {
            return Err(CopyError::Outside(path));
        }
    }
    Ok(())
}
