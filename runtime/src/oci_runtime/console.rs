//! `--console-socket`: the process gets a new pty's slave as its terminal, and the caller
//! (the shim, conmon) gets the master over the Unix socket it named, as one SCM_RIGHTS
//! message, as runc sends it.

use super::RuntimeError;
use crate::linux::process::stdio::Pty;
use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Size of a pty when the spec gives none.
const DEFAULT_SIZE: (u16, u16) = (24, 80);

/// A pty of `size` (rows, columns) or the default one.
pub fn open_pty(size: Option<(u16, u16)>) -> Result<Pty, RuntimeError> {
    let (rows, cols) = size
        .filter(|(r, c)| *r > 0 && *c > 0)
        .unwrap_or(DEFAULT_SIZE);
    Pty::open(rows, cols).map_err(RuntimeError::io("open a pty"))
}

/// A pty of the container whose init is `init_pid`: opened on its own devpts (its
/// `/dev/pts/ptmx`, resolved inside its root), so that the process finds its terminal's
/// name there as under runc. Falls back to a pty of the host's when the container has no
/// devpts of its own. `still_init` tells whether `init_pid` is still the container's init
/// (checked once its root is open, so a reused PID is never taken for it).
pub fn open_pty_in(
    init_pid: i32,
    still_init: impl Fn() -> bool,
    size: Option<(u16, u16)>,
) -> Result<Pty, RuntimeError> {
    match container_pty(init_pid, still_init) {
        Ok(Some(pty)) => {
            let (rows, cols) = size
                .filter(|(r, c)| *r > 0 && *c > 0)
                .unwrap_or(DEFAULT_SIZE);
            crate::linux::sys::set_window_size(pty.master().as_raw_fd(), rows, cols)
                .map_err(RuntimeError::io("pty window size"))?;
            Ok(pty)
        }
        Ok(None) => open_pty(size),
        Err(e) => Err(RuntimeError::io("the container's /dev/pts/ptmx")(e)),
    }
}

/// The master opened through the container's `/dev/pts/ptmx` (checked to be the ptmx
/// device, c 5:2), unlocked, and its slave through TIOCGPTPEER (never by a path the
/// container controls). None when the container has no such node.
fn container_pty(init_pid: i32, still_init: impl Fn() -> bool) -> std::io::Result<Option<Pty>> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let root = crate::linux::inroot::Root::open(Path::new(&format!("/proc/{init_pid}/root")))?;
    if !still_init() {
        return Err(std::io::Error::other("the container's init has exited"));
    }
    let node = match root.resolve(Path::new("/dev/pts/ptmx")) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    let st = nix::sys::stat::fstat(node.as_raw_fd())?;
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR || st.st_rdev != nix::sys::stat::makedev(5, 2) {
        return Err(std::io::Error::other("not the ptmx device"));
    }
    let master: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", node.as_raw_fd()))?
        .into();
    let unlock: libc::c_int = 0;
    // SAFETY: ioctls on a descriptor we own; TIOCSPTLCK reads the int behind the pointer,
    // which outlives the call; TIOCGPTPEER takes open flags and returns a new descriptor.
    let slave = unsafe {
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        OwnedFd::from_raw_fd(fd)
    };
    Ok(Some(Pty::from_ends(master, slave)))
}

/// The size `process.consoleSize` asks for.
pub fn size_of(process: &oci_spec::runtime::Process) -> Option<(u16, u16)> {
    process.console_size().map(|b| {
        (
            u16::try_from(b.height()).unwrap_or(u16::MAX),
            u16::try_from(b.width()).unwrap_or(u16::MAX),
        )
    })
}

/// Sends the pty's master to the Unix socket at `socket`.
pub fn send_master(socket: &Path, pty: &Pty) -> Result<(), RuntimeError> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let what = || format!("console socket {}", socket.display());
    let stream = UnixStream::connect(socket).map_err(RuntimeError::io(what()))?;
    let fds = [pty.master().as_raw_fd()];
    let name = b"/dev/ptmx";
    sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(name)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| RuntimeError::io(what())(e.into()))?;
    Ok(())
}
