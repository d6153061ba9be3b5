//! A VM template's guest RAM as one sealed memfd that every clone of it maps privately, so
//! the pages no clone writes (kernel text, the agent) are in host memory once.
//!
//! The memfd is sealed once filled (`F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW |
//! F_SEAL_SEAL`): a writable private mapping of it is allowed (copy-on-write), while
//! write(2), a writable shared mapping, ftruncate and fallocate are refused to every
//! process, root included, and no seal can be taken off. So no clone's engine can change
//! what another clone (running or to come) sees of the template.
//!
//! capsa has no daemon, so one holder process per template keeps the memfd: `capsa
//! __vm-template-ram DIR`, started by the first clone that finds none; root, a session of
//! its own, in the root cgroup (not the cgroup of the capsa that started it, which a
//! container's removal would kill); it holds the memfd and answers the unix socket
//! `DIR/ram.sock` (in the template's folder: 0700, root's) with it over SCM_RIGHTS, to peers
//! with uid 0 alone. It ends as soon as anything in its template's folder is deleted or
//! renamed (`capsa system vm-template rm`, a rebuild, a removed state root, [`stop`] once
//! the template is stale). A clone takes
//! the memfd from the holder only, never from another clone's engine (whose memfd could be
//! its own, writable), and checks that it is sealed and made from the template file it
//! checked; on any failure the clone gets a private copy of the RAM instead.

use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{
    getsockopt, recvmsg, sendmsg, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
};

/// The hidden first argument that makes `capsa` a holder.
pub const HOLDER_ARG: &str = "__vm-template-ram";
/// The holder's socket, in the template's folder.
pub const SOCKET: &str = "ram.sock";
/// Held while a holder is being started (one at a time per template).
const START_LOCK: &str = "ram.holder.lock";
/// The seals a clone's RAM memfd must have.
pub const SEALS: libc::c_int =
    libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
/// How long a clone waits for the holder's answer (the first one copies the RAM).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a clone gets no shared RAM (it gets a private copy).
#[derive(Debug, thiserror::Error)]
pub enum SharedRamError {
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the holder's socket is not root's (uid {0})")]
    NotRoot(u32),
    #[error("the holder sent no memfd")]
    NoMemfd,
    #[error("the holder's memfd is of another template file ({0})")]
    OtherTemplate(String),
    #[error("the holder's memfd lacks seals (has {0:#x})")]
    Unsealed(libc::c_int),
    #[error("the holder's memfd holds {got} bytes, not {want}")]
    Size { got: u64, want: u64 },
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> SharedRamError {
    move |source| SharedRamError::Io { what, source }
}

/// Names template RAM file `m`: a clone uses a memfd only if made from this very file.
fn ram_tag(m: &std::fs::Metadata) -> String {
    format!(
        "{}:{}:{}:{}.{}",
        m.dev(),
        m.ino(),
        m.len(),
        m.ctime(),
        m.ctime_nsec()
    )
}

/// The sealed memfd of template folder `dir`'s RAM, checked: made from `ram` (the RAM file
/// the clone's template check opened), sealed, of its size. Starts the holder if none
/// answers.
pub fn fetch(dir: &Path, ram: &File) -> Result<OwnedFd, SharedRamError> {
    let meta = ram.metadata().map_err(io_err("the template's RAM file"))?;
    let (fd, tag) = match ask(dir) {
        Ok(answer) => answer,
        Err(SharedRamError::Io { source, .. })
            if matches!(
                source.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            start_holder(dir)?;
            ask(dir)?
        }
        Err(e) => return Err(e),
    };
    if tag != ram_tag(&meta) {
        return Err(SharedRamError::OtherTemplate(tag));
    }
    check_sealed(&fd, meta.len())?;
    Ok(fd)
}

/// Whether `fd` has every seal of [`SEALS`] and `len` bytes.
pub fn check_sealed(fd: &OwnedFd, len: u64) -> Result<(), SharedRamError> {
    // SAFETY: fcntl F_GET_SEALS on a descriptor we own.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if seals < 0 {
        return Err(SharedRamError::Io {
            what: "F_GET_SEALS on the holder's memfd",
            source: io::Error::last_os_error(),
        });
    }
    if seals & SEALS != SEALS {
        return Err(SharedRamError::Unsealed(seals));
    }
    let got = File::from(fd.try_clone().map_err(io_err("the holder's memfd"))?)
        .metadata()
        .map_err(io_err("the holder's memfd"))?
        .len();
    if got != len {
        return Err(SharedRamError::Size { got, want: len });
    }
    Ok(())
}

/// One request to the holder of `dir`: its memfd and the tag of the file it was made from.
fn ask(dir: &Path) -> Result<(OwnedFd, String), SharedRamError> {
    let stream = UnixStream::connect(dir.join(SOCKET)).map_err(io_err("the holder's socket"))?;
    let peer = getsockopt(&stream, sockopt::PeerCredentials)
        .map_err(|e| io_err("the holder's credentials")(e.into()))?;
    if peer.uid() != 0 {
        return Err(SharedRamError::NotRoot(peer.uid()));
    }
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(io_err("the holder's socket"))?;
    let mut buf = [0u8; 256];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| io_err("the holder's answer")(e.into()))?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for c in msg
        .cmsgs()
        .map_err(|e| io_err("the holder's answer")(e.into()))?
    {
        if let ControlMessageOwned::ScmRights(list) = c {
            // SAFETY: SCM_RIGHTS hands us new descriptors, ours to own and close.
            fds.extend(
                list.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let n = msg.bytes;
    let tag = String::from_utf8_lossy(&buf[..n]).into_owned();
    let fd = fds.into_iter().next().ok_or(SharedRamError::NoMemfd)?;
    Ok((fd, tag))
}

/// Starts the holder of `dir` unless one answers: under the start lock, binds its socket
/// (a stale one of a dead holder replaced) and hands the listening socket to a new `capsa
/// __vm-template-ram DIR` as its stdin. Connections queue on it until the holder serves.
fn start_holder(dir: &Path) -> Result<(), SharedRamError> {
    let lock_path = dir.join(START_LOCK);
    let _lock = super::jail::lock_file(&lock_path, true).map_err(io_err("the holder's lock"))?;
    let path = dir.join(SOCKET);
    if UnixStream::connect(&path).is_ok() {
        return Ok(()); // another capsa started one meanwhile
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(io_err("the holder's socket"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err("the holder's socket"))?;
    let exe = std::env::current_exe().map_err(io_err("capsa's own path"))?;
    let mut intermediate = std::process::Command::new(exe)
        .arg(HOLDER_ARG)
        .arg(dir)
        .stdin(OwnedFd::from(listener))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .env_clear()
        .spawn()
        .map_err(io_err("starting the holder"))?;
    // It forks the holder and exits at once: the holder is no child of this process.
    intermediate.wait().map_err(io_err("starting the holder"))?;
    Ok(())
}

/// Stops the holder of template folder `dir`, if any: it ends when its socket is removed
/// (running clones keep the memfd; its memory goes with the last of them).
pub fn stop(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(SOCKET));
}

/// `capsa __vm-template-ram DIR`: the holder of template folder DIR's memfd (see the
/// module's notes). None when `capsa` was not invoked so.
pub fn invoked() -> Option<i32> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != HOLDER_ARG {
        return None;
    }
    let dir = PathBuf::from(args.next()?);
    Some(match hold(&dir) {
        Ok(()) => 0,
        Err(_) => 1,
    })
}

/// The holder: detaches, makes the memfd, serves it until its template's folder changes.
fn hold(dir: &Path) -> Result<(), SharedRamError> {
    // Nothing of its starter is kept: no descriptor it leaked (a lock, a disk), no cwd, no
    // blocked or ignored signal (a foreground `capsa run` blocks SIGTERM and SIGINT).
    crate::linux::sys::reset_signals();
    // SAFETY: close_range on integers.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    std::env::set_current_dir("/").map_err(io_err("chdir /"))?;
    // SAFETY: dup of our stdin (the listening socket its starter handed over).
    let listener = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3) };
    if listener < 0 {
        return Err(io_err("the listening socket")(io::Error::last_os_error()));
    }
    // SAFETY: a new descriptor from the fcntl above, owned from here on.
    let listener = UnixListener::from(unsafe { OwnedFd::from_raw_fd(listener) });
    let null = File::open("/dev/null").map_err(io_err("/dev/null"))?;
    nix::unistd::dup2(null.as_raw_fd(), 0).map_err(|e| io_err("/dev/null")(e.into()))?;
    drop(null);
    let _ = nix::unistd::setsid();
    // A single thread (just exec'd): the child may run anything after fork.
    match crate::linux::sys::fork_into_namespaces(0, None).map_err(io_err("fork"))? {
        crate::linux::sys::Forked::Parent(_) => std::process::exit(0),
        crate::linux::sys::Forked::Child => {}
    }
    leave_cgroup();
    let watch = watch_folder(dir)?;
    let ram = File::open(dir.join("ram")).map_err(io_err("the template's RAM file"))?;
    let tag = ram_tag(&ram.metadata().map_err(io_err("the template's RAM file"))?);
    let memfd = sealed_copy(&ram).map_err(io_err("the RAM memfd"))?;
    drop(ram);
    serve(&listener, &watch, &memfd, &tag)
}

/// Moves this process to the root cgroup of every hierarchy: out of the cgroup of the
/// capsa that started it (a container's monitor, whose cgroup its removal kills).
fn leave_cgroup() {
    use crate::linux::cgroups;
    let Some(mode) = cgroups::CgroupMode::detect() else {
        return;
    };
    let Ok(mut paths) = cgroups::resolve_paths(mode, Some("/capsa"), "holder") else {
        return;
    };
    for dir in paths.dirs.values_mut() {
        // <root>/capsa/holder, two levels up.
        if let Some(root) = dir.parent().and_then(Path::parent) {
            *dir = root.to_path_buf();
        }
    }
    let _ = cgroups::manager(&paths).add_task(std::process::id() as i32);
}

/// An inotify watch on `dir`: any entry deleted or renamed, or `dir` itself.
fn watch_folder(dir: &Path) -> Result<nix::sys::inotify::Inotify, SharedRamError> {
    use nix::sys::inotify::{AddWatchFlags as W, InitFlags, Inotify};
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC).map_err(|e| io_err("inotify")(e.into()))?;
    let flags = W::IN_DELETE
        | W::IN_MOVED_FROM
        | W::IN_MOVED_TO
        | W::IN_DELETE_SELF
        | W::IN_MOVE_SELF
        | W::IN_ONLYDIR;
    inotify
        .add_watch(dir, flags)
        .map_err(|e| io_err("inotify on the template's folder")(e.into()))?;
    Ok(inotify)
}

/// Answers each connection from uid 0 with `memfd` and `tag`, until `watch` sees a change.
fn serve(
    listener: &UnixListener,
    watch: &nix::sys::inotify::Inotify,
    memfd: &OwnedFd,
    tag: &str,
) -> Result<(), SharedRamError> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(watch.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io_err("poll")(e.into())),
        }
        let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
        if ready(&fds[1]) {
            return Ok(()); // the template was removed or is being rebuilt
        }
        if ready(&fds[0]) {
            if let Ok((stream, _)) = listener.accept() {
                let _ = answer(&stream, memfd, tag);
            }
        }
    }
}

fn answer(stream: &UnixStream, memfd: &OwnedFd, tag: &str) -> io::Result<()> {
    let peer = getsockopt(stream, sockopt::PeerCredentials)?;
    if peer.uid() != 0 {
        return Err(io::Error::from(io::ErrorKind::PermissionDenied));
    }
    let fds = [memfd.as_raw_fd()];
    let iov = [IoSlice::new(tag.as_bytes())];
    sendmsg::<()>(
        stream.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// A sealed memfd holding what `ram` holds: its holes, and its pages of zeros, stay holes.
pub fn sealed_copy(ram: &File) -> io::Result<OwnedFd> {
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag as MFdFlags};
    let flags = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
    let memfd = File::from(memfd_create(c"capsa-vm-template-ram", flags)?);
    let len = ram.metadata()?.len();
    memfd.set_len(len)?;
    super::sparse::for_each_extent(ram, len, |start, end| copy_nonzero(ram, &memfd, start, end))?;
    // SAFETY: fcntl F_ADD_SEALS on the memfd we own.
    if unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(memfd.into())
}

/// Copies bytes `start..end` of `from` to `to` at the same offsets, but for whole pages of
/// zeros (a hole reads as zeros).
fn copy_nonzero(from: &File, to: &File, start: u64, end: u64) -> io::Result<()> {
    const PAGE: usize = 4096;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = start;
    while pos < end {
        let want = buf.len().min((end - pos) as usize);
        let n = from.read_at(&mut buf[..want], pos)?;
        if n == 0 {
            return Err(io::Error::other("the template's RAM file shrank"));
        }
        for (i, page) in buf[..n].chunks(PAGE).enumerate() {
            if page.iter().any(|&b| b != 0) {
                to.write_all_at(page, pos + (i * PAGE) as u64)?;
            }
        }
        pos += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sealed_copy_keeps_the_data_and_refuses_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ram");
        let f = File::create(&path).unwrap();
        f.set_len(16 << 20).unwrap();
        f.write_all_at(b"kernel text", 4 << 20).unwrap();
        f.write_all_at(&[0u8; 8192], 8 << 20).unwrap();
        drop(f);
        let ram = File::open(&path).unwrap();
        let memfd = sealed_copy(&ram).unwrap();
        check_sealed(&memfd, 16 << 20).unwrap();
        let copy = File::from(memfd);
        assert_eq!(std::fs::read(&path).unwrap(), {
            let mut all = vec![0u8; 16 << 20];
            copy.read_exact_at(&mut all, 0).unwrap();
            all
        });
        // Only the page of text is in memory: holes and zero pages stay holes.
        assert_eq!(copy.metadata().unwrap().blocks() * 512, 4096);
        let eperm = |r: io::Result<()>| r.unwrap_err().raw_os_error() == Some(libc::EPERM);
        assert!(eperm(copy.write_all_at(b"x", 0)));
        assert!(eperm(copy.set_len(0)));
        assert!(eperm(copy.set_len(32 << 20)));
    }

    #[test]
    fn a_memfd_without_every_seal_or_of_another_size_is_refused() {
        use nix::sys::memfd::{memfd_create, MemFdCreateFlag as F};
        let fd = memfd_create(c"t", F::MFD_CLOEXEC | F::MFD_ALLOW_SEALING).unwrap();
        let f = File::from(fd.try_clone().unwrap());
        f.set_len(4096).unwrap();
        let seal = |seals: libc::c_int| {
            // SAFETY: fcntl F_ADD_SEALS on a memfd of this test.
            assert_eq!(
                unsafe { libc::fcntl(f.as_raw_fd(), libc::F_ADD_SEALS, seals) },
                0
            );
        };
        seal(libc::F_SEAL_SHRINK | libc::F_SEAL_GROW);
        assert!(matches!(
            check_sealed(&fd, 4096),
            Err(SharedRamError::Unsealed(_))
        ));
        seal(SEALS);
        assert!(matches!(
            check_sealed(&fd, 8192),
            Err(SharedRamError::Size { .. })
        ));
        check_sealed(&fd, 4096).unwrap();
    }
}
