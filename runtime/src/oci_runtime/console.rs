//! `--console-socket`: the process gets a new pty's slave as its terminal, and the caller
//! (the shim, conmon) gets the master over the Unix socket it named, as one SCM_RIGHTS
//! message, as runc sends it.

use super::RuntimeError;
use crate::linux::process::stdio::Pty;
use std::io::IoSlice;
use std::os::fd::AsRawFd;
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
