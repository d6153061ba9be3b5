//! `cp`: copies files between a container and the host, both ways, for running and stopped
//! containers, or as tar streams (`-`).
//!
//! The container's side always runs in a child process whose root *is* the container's
//! root, so no path, symlink or `..` inside the container can lead to the host: for a
//! running container the child joins its mount namespace (which sets root and working
//! directory to the container's); for a stopped one it makes a private mount namespace,
//! mounts the overlay there and chroots into it (the mount ends with the child). The data
//! crosses between the two sides as a tar stream on a pipe.
//!
//! A sandbox whose side runs elsewhere (a VM's guest, running or not: the host never mounts
//! the guest-written disk) streams the archive through [`copy_out_streamed`] and
//! [`copy_in_streamed`].

use super::state::State;
use super::store::ContainerStore;
use super::ContainerError;
use crate::image::ImageStore;
use crate::linux::rootfs::{mount_overlay, OverlayLayers};
use crate::linux::sys::{self, fork_into_namespaces, Forked};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// One end of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A path on the host, or `-` (a tar stream on stdin/stdout).
    Host(PathBuf),
    /// `CONTAINER:PATH`.
    Container(String, PathBuf),
}

impl Location {
    /// Parses Docker's forms; a host path containing `:` must start with `/` or `.`.
    pub fn parse(arg: &str) -> Location {
        if arg.starts_with('/') || arg.starts_with('.') || arg == "-" {
            return Location::Host(PathBuf::from(arg));
        }
        match arg.split_once(':') {
            Some((ctr, path)) if !ctr.is_empty() => {
                Location::Container(ctr.to_string(), PathBuf::from(path))
            }
            _ => Location::Host(PathBuf::from(arg)),
        }
    }
}

/// Writes `src` (a file or a directory tree, symlinks kept as links) as a tar stream whose
/// top entry is named `name`.
pub fn write_tar(src: &Path, name: &Path, out: impl Write) -> std::io::Result<()> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let meta = std::fs::symlink_metadata(src)?;
    if meta.is_dir() {
        b.append_dir_all(name, src)?;
    } else {
        b.append_path_with_name(src, name)?;
    }
    b.into_inner()?.flush()
}

/// Mode bits dropped from what `cp` writes on the host: capsa extracts as root, so a
/// set-user-ID or set-group-ID file a workload made would be a root-owned one on the host
/// (Docker's client extracts as the calling user, whose files cannot carry root's bits).
const HOST_DROPPED_BITS: u32 = libc::S_ISUID | libc::S_ISGID;

/// Extracts a tar stream at `dest` inside a container (or a VM's guest): modes are kept,
/// set-user-ID and set-group-ID bits too (what a container holds is its own business).
/// See [`extract_on_host`] for the placement rules.
pub fn extract(input: impl Read, dest: &Path, as_is: bool) -> Result<(), String> {
    extract_masked(input, dest, as_is, 0)
}

/// Extracts a tar stream that came out of a container at `dest` on the host, as `cp` does:
/// into `dest` when it is a directory, else as `dest` itself: the stream's top entry takes
/// `dest`'s name (extracted into a temporary sibling, then renamed, so tar's own checks
/// keep every entry inside). Set-user-ID and set-group-ID bits are dropped.
pub fn extract_on_host(input: impl Read, dest: &Path) -> Result<(), String> {
    extract_masked(input, dest, false, HOST_DROPPED_BITS)
}

/// [`extract`] with the mode bits in `mask` cleared from every entry (`as_is`: a `-`
/// stream goes into `dest` as it is).
fn extract_masked(input: impl Read, dest: &Path, as_is: bool, mask: u32) -> Result<(), String> {
    let unpack = |dir: &Path| -> Result<(), String> {
        // Oversized long-name and PAX headers are refused before tar buffers them.
        let mut archive = tar::Archive::new(crate::image::tar_guard::HeaderGuard::new(input));
        archive.set_preserve_permissions(true);
        archive.set_mask(mask);
        archive.set_preserve_mtime(true);
        archive.set_overwrite(true);
        for entry in archive.entries().map_err(|e| e.to_string())? {
            let mut entry = entry.map_err(|e| format!("malformed tar stream: {e}"))?;
            let path = entry.path().map_err(|e| e.to_string())?.into_owned();
            if !entry
                .unpack_in(dir)
                .map_err(|e| format!("{}: {e}", path.display()))?
            {
                return Err(format!("{}: path leaves the destination", path.display()));
            }
        }
        Ok(())
    };
    if as_is || dest.is_dir() {
        return unpack(dest);
    }
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(format!("{}: no such directory", parent.display()));
    }
    let tmp = tempfile::Builder::new()
        .prefix(".capsa-cp-")
        .tempdir_in(parent)
        .map_err(|e| format!("{}: {e}", parent.display()))?;
    unpack(tmp.path())?;
    let top = std::fs::read_dir(tmp.path())
        .map_err(|e| e.to_string())?
        .flatten()
        .next()
        .ok_or("the copy is empty")?;
    std::fs::rename(top.path(), dest).map_err(|e| format!("{}: {e}", dest.display()))
}

/// Runs `child_work` in a child whose root is the container's, and `parent_work` here
/// meanwhile (the two ends of a pipe). The child's error, if any, is returned.
fn in_container<T>(
    store: &ContainerStore,
    state: &State,
    child_work: impl FnOnce() -> Result<(), String>,
    parent_work: impl FnOnce() -> T,
) -> Result<T, ContainerError> {
    let id = state.id.clone();
    let setup = |e: String| ContainerError::Setup {
        id: id.clone(),
        reason: e,
    };
    // A VM container never comes here: its agent serves the copy, in the guest.
    let pidfd = match (state.init_alive(), state.pid) {
        (true, Some(pid)) => Some(sys::pidfd_open(pid).map_err(|e| setup(e.to_string()))?),
        _ => None,
    };
    let layers = if pidfd.is_none() {
        Some(stopped_root(store, state)?)
    } else {
        None
    };
    in_child(
        || enter(pidfd.as_ref(), layers.as_ref()),
        child_work,
        parent_work,
    )
    .map_err(setup)
}

/// The root of a stopped container, to be mounted in a private mount namespace: its layers
/// under its writable layer.
struct StoppedRoot {
    layers: OverlayLayers,
    rootfs: PathBuf,
}

fn stopped_root(store: &ContainerStore, state: &State) -> Result<StoppedRoot, ContainerError> {
    let image = ImageStore::new(store.root()).resolve(&state.image_id)?;
    let dir = store.dir(&state.id);
    Ok(StoppedRoot {
        layers: dir.overlay_layers(image.layer_dirs),
        rootfs: dir.rootfs(),
    })
}

/// Runs `child_work` in the mount namespace (and so the root) of process `pid`, and
/// `parent_work` here meanwhile: how the guest agent serves `cp` for a VM container.
pub fn in_root_of<T>(
    pid: i32,
    child_work: impl FnOnce() -> Result<(), String>,
    parent_work: impl FnOnce() -> T,
) -> Result<T, String> {
    let pidfd = sys::pidfd_open(pid).map_err(|e| format!("process {pid}: {e}"))?;
    in_child(|| enter(Some(&pidfd), None), child_work, parent_work)
}

/// Forks a child that runs `enter` then `child_work`; runs `parent_work` here meanwhile.
fn in_child<T>(
    enter: impl FnOnce() -> Result<(), String>,
    child_work: impl FnOnce() -> Result<(), String>,
    parent_work: impl FnOnce() -> T,
) -> Result<T, String> {
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
    match fork_into_namespaces(0, None).map_err(|e| e.to_string())? {
        Forked::Child => {
            drop((err_r, parent_work));
            // It never execs: non-dumpable for its whole life, so no ptrace or /proc access
            // by anything that shares its credentials once it is in the container's root.
            let result = sys::set_dumpable(false)
                .map_err(|e| format!("prctl(PR_SET_DUMPABLE): {e}"))
                .and_then(|()| enter())
                .and_then(|()| child_work());
            let code = match result {
                Ok(()) => 0,
                Err(msg) => {
                    let _ = nix::unistd::write(&err_w, msg.as_bytes());
                    1
                }
            };
            // SAFETY: ends the forked child without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        Forked::Parent(child) => {
            drop((err_w, child_work));
            let out = parent_work();
            let mut msg = String::new();
            let _ = std::fs::File::from(err_r).read_to_string(&mut msg);
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None);
            if msg.is_empty() {
                Ok(out)
            } else {
                Err(msg)
            }
        }
    }
}

/// Makes the container's root this process's root.
fn enter(pidfd: Option<&OwnedFd>, root: Option<&StoppedRoot>) -> Result<(), String> {
    if let Some(fd) = pidfd {
        return sys::setns_pidfd(fd, libc::CLONE_NEWNS as u64)
            .map_err(|e| format!("enter the container: {e}"));
    }
    let root = root.ok_or("nothing to enter")?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare: {e}"))?;
    let private = nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE;
    nix::mount::mount(None::<&str>, "/", None::<&str>, private, None::<&str>)
        .map_err(|e| format!("make rslave: {e}"))?;
    std::fs::create_dir_all(&root.rootfs).map_err(|e| format!("{}: {e}", root.rootfs.display()))?;
    mount_overlay(&root.layers, &root.rootfs).map_err(|e| e.to_string())?;
    nix::unistd::chroot(&root.rootfs).map_err(|e| format!("chroot: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir: {e}"))
}

/// The name the copied tree gets: the source's last component (`/` copies as `.`).
pub fn top_name(src: &Path) -> PathBuf {
    src.file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn pipe(at: &Path) -> Result<(OwnedFd, OwnedFd), ContainerError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| ContainerError::io(at, e.into()))
}

/// `cp` out of a sandbox whose side `copy` streams the archive (a VM's guest): into the
/// extraction here (or to stdout), through a pipe between two threads.
pub fn copy_out_streamed(
    dest: &Path,
    copy: impl FnOnce(&mut dyn Write) -> Result<(), ContainerError> + Send,
) -> Result<(), ContainerError> {
    if dest == Path::new("-") {
        return copy(&mut std::io::stdout().lock());
    }
    let (r, w) = pipe(dest)?;
    let (r, mut w) = (std::fs::File::from(r), std::fs::File::from(w));
    std::thread::scope(|scope| {
        let streamer = scope.spawn(move || copy(&mut w));
        let extracted = extract_on_host(r, dest)
            .map_err(|e| ContainerError::InvalidArgument(format!("cp to {}: {e}", dest.display())));
        let streamed = streamer
            .join()
            .unwrap_or_else(|_| Err(ContainerError::Vm("cp: the copy thread panicked".into())));
        // The guest's reason (no such file...) explains an empty or broken archive best.
        streamed.and(extracted)
    })
}

/// `cp` into a sandbox whose side `copy` takes the archive (a VM's guest; `as_is`: a stream
/// given on stdin, extracted into the destination itself): stdin's, or one made here on a
/// thread, streamed as it is produced.
pub fn copy_in_streamed(
    src: &Path,
    copy: impl FnOnce(&mut dyn Read, bool) -> Result<(), ContainerError>,
) -> Result<(), ContainerError> {
    if src == Path::new("-") {
        return copy(&mut std::io::stdin().lock(), true);
    }
    let (r, w) = pipe(src)?;
    let (mut r, w) = (std::fs::File::from(r), std::fs::File::from(w));
    let (from, name) = (src.to_path_buf(), top_name(src));
    let maker = std::thread::spawn(move || write_tar(&from, &name, w));
    let sent = copy(&mut r, false);
    drop(r); // a maker still writing stops at the closed pipe
    let made = maker
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the archive thread panicked")));
    // A host file that could not be read explains a broken archive best.
    made.map_err(|e| ContainerError::io(src, e))?;
    sent
}

/// Copies `src` out of process-tree container `state` to `dest` on the host (`-`: a tar
/// stream on stdout).
pub fn copy_out(
    store: &ContainerStore,
    state: &State,
    src: &Path,
    dest: &Path,
) -> Result<(), ContainerError> {
    let (r, w) = pipe(dest)?;
    let name = top_name(src);
    let inside = src.to_path_buf();
    let child = move || {
        write_tar(&inside, &name, std::fs::File::from(w))
            .map_err(|e| format!("{}: {e}", inside.display()))
    };
    let parent = move || -> Result<(), String> {
        let stream = std::fs::File::from(r);
        if dest == Path::new("-") {
            let mut stream = stream;
            std::io::copy(&mut stream, &mut std::io::stdout())
                .map(|_| ())
                .map_err(|e| e.to_string())
        } else {
            extract_on_host(stream, dest)
        }
    };
    in_container(store, state, child, parent)?
        .map_err(|e| ContainerError::InvalidArgument(format!("cp to {}: {e}", dest.display())))
}

/// Refuses a host source of `cp` that does not exist (`-` is stdin), before any sandbox
/// is asked to take it.
pub fn check_source(src: &Path) -> Result<(), ContainerError> {
    if src != Path::new("-") && std::fs::symlink_metadata(src).is_err() {
        return Err(ContainerError::InvalidArgument(format!(
            "cp: {}: no such file or directory",
            src.display()
        )));
    }
    Ok(())
}

/// Copies `src` from the host (`-`: a tar stream on stdin) into process-tree container
/// `state` at `dest` (see [`check_source`]).
pub fn copy_in(
    store: &ContainerStore,
    state: &State,
    src: &Path,
    dest: &Path,
) -> Result<(), ContainerError> {
    let from_stdin = src == Path::new("-");
    let (r, w) = pipe(src)?;
    let target = dest.to_path_buf();
    let child = move || {
        extract(std::fs::File::from(r), &target, from_stdin)
            .map_err(|e| format!("cp to {}: {e}", target.display()))
    };
    let name = top_name(src);
    let parent = move || -> std::io::Result<()> {
        let mut pipe = std::fs::File::from(w);
        if from_stdin {
            std::io::copy(&mut std::io::stdin().lock(), &mut pipe).map(|_| ())
        } else {
            write_tar(src, &name, pipe)
        }
    };
    in_container(store, state, child, parent)?.map_err(|e| ContainerError::io(src, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A stream holding `top/` (set-group-ID) and `top/tool` (set-user-ID).
    fn stream_with_special_bits() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o2755);
        dir.set_size(0);
        b.append_data(&mut dir, "top", std::io::empty()).unwrap();
        let mut file = tar::Header::new_gnu();
        file.set_mode(0o4755);
        file.set_size(2);
        b.append_data(&mut file, "top/tool", &b"#!"[..]).unwrap();
        b.into_inner().unwrap()
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn copies_to_the_host_lose_setuid_and_setgid_and_copies_inside_keep_them() {
        let host = tempfile::tempdir().unwrap();
        extract_on_host(&stream_with_special_bits()[..], &host.path().join("out")).unwrap();
        assert_eq!(mode(&host.path().join("out")), 0o755);
        assert_eq!(mode(&host.path().join("out/tool")), 0o755);
        let inside = tempfile::tempdir().unwrap();
        extract(&stream_with_special_bits()[..], inside.path(), true).unwrap();
        assert_eq!(mode(&inside.path().join("top")), 0o2755);
        assert_eq!(mode(&inside.path().join("top/tool")), 0o4755);
    }
}
