//! `--console-socket`: the process gets a new pty's slave as its terminal, and the caller
//! (the shim, conmon) gets the master over the Unix socket it named, as one SCM_RIGHTS
//! message, as runc sends it.

use super::RuntimeError;
use crate::linux::devpts;
use crate::linux::process::stdio::Pty;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Size of a pty when the spec gives none.
const DEFAULT_SIZE: (u16, u16) = (24, 80);

/// `size` (rows, columns), or the default one when it is absent or empty.
pub fn or_default(size: Option<(u16, u16)>) -> (u16, u16) {
    size.filter(|(r, c)| *r > 0 && *c > 0)
        .unwrap_or(DEFAULT_SIZE)
}

/// A pty of the host's of `size` (rows, columns) or the default one.
fn open_pty(size: Option<(u16, u16)>) -> Result<Pty, RuntimeError> {
    let (rows, cols) = or_default(size);
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
    let (rows, cols) = or_default(size);
    match devpts::open_pty_of(init_pid, still_init, rows, cols) {
        Ok(pty) => Ok(pty),
        Err(devpts::DevptsError::Missing) => open_pty(size),
        Err(e) => Err(RuntimeError::io("the container's terminal")(
            std::io::Error::other(e),
        )),
    }
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

/// Sends a pty's master to the Unix socket at `socket`.
pub fn send_master(socket: &Path, master: BorrowedFd) -> Result<(), RuntimeError> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let what = || format!("console socket {}", socket.display());
    let stream = UnixStream::connect(socket).map_err(RuntimeError::io(what()))?;
    let fds = [master.as_raw_fd()];
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
