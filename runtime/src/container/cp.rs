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
use capsa_core::tar_copy::{extract, extract_on_host, top_name, write_tar};
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

/// Where `cp` out of a container puts what it copies.
pub enum CopyDest<'a> {
    /// Extracted at this path on the host.
    Path(&'a Path),
    /// As a tar stream (`cp CTR:SRC -`, the API's `GET /archive`).
    Tar(&'a mut (dyn Write + Send)),
}

impl CopyDest<'_> {
    /// How errors name it.
    fn describe(&self) -> String {
        match self {
            CopyDest::Path(p) => p.display().to_string(),
            CopyDest::Tar(_) => "-".into(),
        }
    }
}

/// What `cp` into a container copies.
pub enum CopySource<'a> {
    /// A file or folder on the host.
    Path(&'a Path),
    /// A tar stream, extracted into the destination itself (`cp - CTR:DEST`, the API's
    /// `PUT /archive`).
    Tar(&'a mut (dyn Read + Send)),
}

/// Why the container's side of a copy could not be set up or failed.
#[derive(Debug, thiserror::Error)]
pub enum CopySideError {
    /// The container's init could not be opened.
    #[error("{0}")]
    Pidfd(#[source] std::io::Error),
    /// The running container could not be frozen for the copy.
    #[error("freezing the container for the copy: {0}")]
    Freeze(String),
    /// The error pipe could not be made.
    #[error("{0}")]
    Pipe(#[source] nix::Error),
    /// The child could not be forked.
    #[error("{0}")]
    Fork(#[source] std::io::Error),
    /// The child failed; its message crossed the pipe as text (a forked child's error
    /// cannot cross as a value).
    #[error("{0}")]
    Child(String),
}

/// Why the child could not make the container's root its own.
#[derive(Debug, thiserror::Error)]
enum EnterError {
    #[error("prctl(PR_SET_DUMPABLE): {0}")]
    Dumpable(#[source] std::io::Error),
    #[error("enter the container: {0}")]
    Setns(#[source] std::io::Error),
    #[error("nothing to enter")]
    Nothing,
    #[error("become the user namespace's root: {0}")]
    NamespaceRoot(#[source] nix::Error),
    #[error("unshare: {0}")]
    Unshare(#[source] nix::Error),
    #[error("make rslave: {0}")]
    Rslave(#[source] nix::Error),
    #[error("{path}: {source}")]
    Rootfs {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Overlay(#[source] crate::linux::rootfs::RootfsError),
    #[error("volumes: {0}")]
    Volumes(#[source] crate::linux::rootfs::RootfsError),
    #[error("chroot: {0}")]
    Chroot(#[source] nix::Error),
    #[error("chdir: {0}")]
    Chdir(#[source] std::io::Error),
}

/// Why one side of the tar stream of `copy_out` failed.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("{path}: {source}")]
    Archive {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[source] std::io::Error),
    #[error("{0}")]
    Extract(#[source] capsa_core::tar_copy::ExtractError),
}

/// Runs `place` in a child whose root is process-tree container `state`'s (mounted in a
/// private mount namespace when it is stopped), reading what `feed` writes here into the
/// other end of a pipe: a build's `COPY` placing files as the container sees its paths.
pub(crate) fn feed_into_root(
    store: &ContainerStore,
    state: &State,
    feed: impl FnOnce(std::fs::File) -> std::io::Result<()>,
    place: impl FnOnce(std::fs::File) -> Result<(), String>,
) -> Result<(), ContainerError> {
    let at = PathBuf::from("-");
    let (r, w) = pipe(&at)?;
    let child = move || place(std::fs::File::from(r));
    let parent = move || feed(std::fs::File::from(w));
    match in_container(store, state, child, parent)? {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        sent => sent.map_err(|e| ContainerError::io(&at, e)),
    }
}

/// Runs `child_work` in a child whose root is the container's, and `parent_work` here
/// meanwhile (the two ends of a pipe). The child's error, if any, is returned.
fn in_container<T, E: std::fmt::Display>(
    store: &ContainerStore,
    state: &State,
    child_work: impl FnOnce() -> Result<(), E>,
    parent_work: impl FnOnce() -> T,
) -> Result<T, ContainerError> {
    let id = state.id.clone();
    let setup = |e: CopySideError| ContainerError::Copy {
        id: id.clone(),
        source: e,
    };
    // A VM container never comes here: its agent serves the copy, in the guest. The pidfd
    // first, then the check: it names the process checked, whatever happens to the PID.
    let pidfd = match state.pid.map(sys::pidfd_open) {
        Some(Ok(fd)) if state.init_alive() => Some(fd),
        Some(Err(e)) if state.init_alive() => return Err(setup(CopySideError::Pidfd(e))),
        _ => None,
    };
    let layers = if pidfd.is_none() {
        Some(stopped_root(store, state)?)
    } else {
        None
    };
    // A running workload is frozen while the copy works in its root (as Docker's cp does
    // since CVE-2018-15664): it cannot swap what the copy is about to open, nor stall it
    // with a FIFO put where a file was.
    let frozen = match &pidfd {
        Some(_) => Some(Frozen::freeze(state).map_err(setup)?),
        None => None,
    };
    // In a user namespace the copy works as the namespace's root, no stronger: a host
    // root there would reach host files the container sees but may not change.
    let user_ns = match (&pidfd, state.pid) {
        (Some(_), Some(pid)) => in_own_user_namespace(pid)
            .map_err(CopySideError::Pidfd)
            .map_err(setup)?,
        _ => false,
    };
    let result = in_child(
        || enter(pidfd.as_ref(), user_ns, layers.as_ref()),
        child_work,
        parent_work,
    );
    drop(frozen);
    result.map_err(setup)
}

/// A running container's cgroup frozen for a copy, thawed when dropped (unless it was
/// paused before, which it stays).
struct Frozen {
    cgroup: Option<Box<dyn crate::linux::cgroups::CgroupManager>>,
}

impl Frozen {
    fn freeze(state: &State) -> Result<Frozen, CopySideError> {
        if state.paused {
            return Ok(Frozen { cgroup: None });
        }
        let cgroup = crate::linux::cgroups::manager(&state.cgroup);
        cgroup
            .set_frozen(true)
            .map_err(|e| CopySideError::Freeze(e.to_string()))?;
        Ok(Frozen {
            cgroup: Some(cgroup),
        })
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Some(cgroup) = &self.cgroup {
            let _ = cgroup.set_frozen(false);
        }
    }
}

/// The root of a stopped container, to be mounted in a private mount namespace: its layers
/// under its writable layer.
struct StoppedRoot {
    layers: OverlayLayers,
    rootfs: PathBuf,
    /// The container's spec: its bind mounts (volumes) are mounted too.
    spec: Option<oci_spec::runtime::Spec>,
}

fn stopped_root(store: &ContainerStore, state: &State) -> Result<StoppedRoot, ContainerError> {
    let image = ImageStore::new(store.root()).resolve(&state.image_id)?;
    let dir = store.dir(&state.id);
    // A container whose spec cannot be read (a torn create) is copied without its volumes.
    let spec = oci_spec::runtime::Spec::load(dir.config()).ok();
    // Its volumes are mounted by path: each must still be a plain directory, as a start
    // checks (a `_data` swapped for a symlink would lead the copy onto the host).
    if spec.is_some() {
        super::volumes::check_again(store, &state.volumes)?;
    }
    Ok(StoppedRoot {
        layers: dir.overlay_layers(image.layer_dirs),
        rootfs: dir.rootfs(),
        spec,
    })
}

/// Forks a child that runs `enter` then `child_work`; runs `parent_work` here meanwhile.
fn in_child<T, E: std::fmt::Display>(
    enter: impl FnOnce() -> Result<(), EnterError>,
    child_work: impl FnOnce() -> Result<(), E>,
    parent_work: impl FnOnce() -> T,
) -> Result<T, CopySideError> {
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(CopySideError::Pipe)?;
    match fork_into_namespaces(0, None).map_err(CopySideError::Fork)? {
        Forked::Child => {
            drop((err_r, parent_work));
            // It never execs: non-dumpable for its whole life, so no ptrace or /proc access
            // by anything that shares its credentials once it is in the container's root.
            let result = sys::set_dumpable(false)
                .map_err(EnterError::Dumpable)
                .and_then(|()| enter())
                .map_err(|e| e.to_string())
                .and_then(|()| child_work().map_err(|e| e.to_string()));
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
            use nix::sys::wait::{waitpid, WaitStatus};
            let status = waitpid(nix::unistd::Pid::from_raw(child), None);
            if !msg.is_empty() {
                return Err(CopySideError::Child(msg));
            }
            match status {
                Ok(WaitStatus::Exited(_, 0)) => Ok(out),
                Ok(other) => Err(CopySideError::Child(format!(
                    "the copy process ended unexpectedly ({other:?})"
                ))),
                Err(e) => Err(CopySideError::Child(format!("the copy process: {e}"))),
            }
        }
    }
}

/// Whether process `pid` is in a user namespace other than this process's.
fn in_own_user_namespace(pid: i32) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let theirs = std::fs::metadata(format!("/proc/{pid}/ns/user"))?;
    let ours = std::fs::metadata("/proc/self/ns/user")?;
    Ok((theirs.dev(), theirs.ino()) != (ours.dev(), ours.ino()))
}

/// Makes the container's root this process's root; with `user_ns`, its user namespace
/// this process's too, as that namespace's root.
fn enter(
    pidfd: Option<&OwnedFd>,
    user_ns: bool,
    root: Option<&StoppedRoot>,
) -> Result<(), EnterError> {
    if let Some(fd) = pidfd {
        let flags = libc::CLONE_NEWNS | if user_ns { libc::CLONE_NEWUSER } else { 0 };
        sys::setns_pidfd(fd, flags as u64).map_err(EnterError::Setns)?;
        if user_ns {
            let zero = (nix::unistd::Gid::from_raw(0), nix::unistd::Uid::from_raw(0));
            nix::unistd::setresgid(zero.0, zero.0, zero.0).map_err(EnterError::NamespaceRoot)?;
            nix::unistd::setresuid(zero.1, zero.1, zero.1).map_err(EnterError::NamespaceRoot)?;
        }
        return Ok(());
    }
    let root = root.ok_or(EnterError::Nothing)?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(EnterError::Unshare)?;
    let private = nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE;
    nix::mount::mount(None::<&str>, "/", None::<&str>, private, None::<&str>)
        .map_err(EnterError::Rslave)?;
    std::fs::create_dir_all(&root.rootfs).map_err(|source| EnterError::Rootfs {
        path: root.rootfs.display().to_string(),
        source,
    })?;
    mount_overlay(&root.layers, &root.rootfs).map_err(EnterError::Overlay)?;
    if let Some(spec) = &root.spec {
        crate::linux::rootfs::mount_binds(&root.rootfs, spec).map_err(EnterError::Volumes)?;
    }
    nix::unistd::chroot(&root.rootfs).map_err(EnterError::Chroot)?;
    std::env::set_current_dir("/").map_err(EnterError::Chdir)
}

fn pipe(at: &Path) -> Result<(OwnedFd, OwnedFd), ContainerError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| ContainerError::io(at, e.into()))
}

/// `cp` out of a sandbox whose side `copy` streams the archive (a VM's guest): into the
/// extraction here (or to stdout), through a pipe between two threads.
pub fn copy_out_streamed(
    dest: CopyDest,
    keep_owners: bool,
    src: &Path,
    copy: impl FnOnce(&mut dyn Write) -> Result<(), ContainerError> + Send,
) -> Result<(), ContainerError> {
    let dest = match dest {
        CopyDest::Tar(out) => return copy(out),
        CopyDest::Path(p) => p,
    };
    let (r, w) = pipe(dest)?;
    let (r, mut w) = (std::fs::File::from(r), std::fs::File::from(w));
    std::thread::scope(|scope| {
        let streamer = scope.spawn(move || copy(&mut w));
        let top = top_name(src);
        let extracted =
            extract_on_host(r, dest, keep_owners, &top).map_err(|e| ContainerError::CopyTo {
                dest: dest.display().to_string(),
                source: Box::new(e),
            });
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
    src: CopySource,
    copy: impl FnOnce(&mut dyn Read, bool) -> Result<(), ContainerError>,
) -> Result<(), ContainerError> {
    let src = match src {
        CopySource::Tar(input) => return copy(input, true),
        CopySource::Path(p) => p,
    };
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
    dest: CopyDest,
    keep_owners: bool,
) -> Result<(), ContainerError> {
    let described = dest.describe();
    let (r, w) = pipe(Path::new(&described))?;
    let name = top_name(src);
    let top = name.clone();
    let inside = src.to_path_buf();
    let child = move || {
        write_tar(&inside, &name, std::fs::File::from(w)).map_err(|source| StreamError::Archive {
            path: inside.display().to_string(),
            source,
        })
    };
    let parent = move || -> Result<(), StreamError> {
        let stream = std::fs::File::from(r);
        match dest {
            CopyDest::Tar(out) => {
                let mut stream = stream;
                std::io::copy(&mut stream, out)
                    .map(|_| ())
                    .map_err(StreamError::Io)
            }
            CopyDest::Path(dest) => {
                extract_on_host(stream, dest, keep_owners, &top).map_err(StreamError::Extract)
            }
        }
    };
    in_container(store, state, child, parent)?.map_err(|e| ContainerError::CopyTo {
        dest: described,
        source: Box::new(e),
    })
}

/// Refuses a host source of `cp` that does not exist (`-` is stdin), before any sandbox
/// is asked to take it.
pub fn check_source(src: &CopySource) -> Result<(), ContainerError> {
    let CopySource::Path(src) = src else {
        return Ok(());
    };
    if std::fs::symlink_metadata(src).is_err() {
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
    src: CopySource,
    dest: &Path,
    keep_owners: bool,
) -> Result<(), ContainerError> {
    let from_stream = matches!(src, CopySource::Tar(_));
    let at = match &src {
        CopySource::Path(p) => p.to_path_buf(),
        CopySource::Tar(_) => PathBuf::from("-"),
    };
    let (r, w) = pipe(&at)?;
    let target = dest.to_path_buf();
    let child = move || {
        extract(std::fs::File::from(r), &target, from_stream, keep_owners)
            .map_err(|e| format!("cp to {}: {e}", target.display()))
    };
    let parent = move || -> std::io::Result<()> {
        let mut pipe = std::fs::File::from(w);
        match src {
            CopySource::Tar(input) => std::io::copy(input, &mut pipe).map(|_| ()),
            CopySource::Path(src) => write_tar(src, &top_name(src), pipe),
        }
    };
    match in_container(store, state, child, parent)? {
        // The container's side took a whole archive and ended well: what it left unread
        // is the archive's padding (tar writers round up to 10 KiB records).
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        sent => sent.map_err(|e| ContainerError::io(&at, e)),
    }
}
