//! The start gate. The init opens the container's `exec.fifo` for writing, which blocks
//! until `start` opens it for reading; it then writes one byte and execs. The write end is
//! close-on-exec, so `start` reads end-of-file when execve succeeded; when it failed, the
//! init writes `<exit code> <message>` first. So `start` learns of a missing command (127)
//! or a non-executable one (126) itself, as `docker start` reports it.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// The byte the init writes once it is released.
pub const STARTED: u8 = b'0';

/// How `start` saw the workload's execve.
#[derive(Debug, PartialEq, Eq)]
pub enum ExecOutcome {
    /// The workload is running.
    Started,
    /// execve failed: exit code (126 or 127) and message.
    Failed(i32, String),
}

/// Creates the fifo (mode 0600, root only).
pub fn create(path: &Path) -> io::Result<()> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(io::Error::from)
}

/// Releases the init waiting on `path` and reports how its execve went. `init_alive` is
/// polled while waiting so that a dead init is not waited for; `timeout` bounds the wait.
pub fn release(
    path: &Path,
    init_alive: impl Fn() -> bool,
    timeout: Duration,
) -> io::Result<ExecOutcome> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut fifo = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let deadline = Instant::now() + timeout;
    // Wait for the first byte; a fifo never opened by a writer does not report POLLHUP.
    loop {
        if crate::linux::sys::wait_readable(fifo.as_raw_fd(), 50)? {
            break;
        }
        if !init_alive() {
            return Err(io::Error::other("the container's init exited before start"));
        }
        if Instant::now() > deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
    }
    // Blocking from here: the writer is connected and closes on exec or after the error.
    // SAFETY: fcntl on a descriptor we own, clearing O_NONBLOCK.
    unsafe { libc::fcntl(fifo.as_raw_fd(), libc::F_SETFL, 0) };
    let mut data = Vec::new();
    fifo.read_to_end(&mut data)?;
    match data.split_first() {
        Some((&STARTED, [])) => Ok(ExecOutcome::Started),
        Some((&STARTED, rest)) => {
            let text = String::from_utf8_lossy(rest);
            let (code, msg) = text.split_once(' ').unwrap_or(("126", &text));
            Ok(ExecOutcome::Failed(
                code.parse().unwrap_or(126),
                msg.trim().to_string(),
            ))
        }
        _ => Err(io::Error::other(
            "the container's init closed the start gate without starting",
        )),
    }
}
