//! A foreground workload's pipes (`run` and `exec` without `-d` or `-t` in the process
//! tree) as a [`Session`]: the pipes made for it ([`Pipes`]) on one side, the front end's
//! relay loop on the other, which copies to and from the caller's own stdin, stdout and
//! stderr. Those never reach the container themselves (see [`crate::linux::process::stdio`]).
//!
//! Output is handed on as it comes, each stream in order; with `-i` the caller's input is
//! written to the workload's pipe as the workload takes it, and its end closes that pipe.
//! When the process being waited for has exited (its pidfd is readable) what it wrote is
//! drained and the session ends: a process it left behind keeps nothing of the caller's,
//! and a write of its gets EPIPE.

use super::session::{End, Out, Session, Stream};
use super::ContainerError;
use crate::linux::process::stdio::{Input, Ours, Output, Pipes};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// Pipes for a relayed workload: stdin fed by the relay with `-i` (else empty, as Docker
/// gives it), stdout and stderr on one pipe when the front end writes both to one place
/// (`merged`), so that their order holds, else on two.
pub fn pipes(interactive: bool, merged: bool) -> io::Result<Pipes> {
    let input = if interactive {
        Input::Fed
    } else {
        Input::Closed
    };
    let output = if merged {
        Output::Merged
    } else {
        Output::Separate
    };
    Pipes::new(input, output)
}

/// Whether this process's stdout and stderr are one file (a terminal, or `2>&1`): then one
/// pipe for both keeps the order in which the workload wrote them. Only a front end that
/// relays to its own streams asks (the CLI); a server keeps the two apart for its clients.
pub fn caller_output_merged() -> bool {
    same_file(io::stdout().as_fd(), io::stderr().as_fd())
}

fn same_file(a: BorrowedFd, b: BorrowedFd) -> bool {
    use nix::sys::stat::fstat;
    match (fstat(a.as_raw_fd()), fstat(b.as_raw_fd())) {
        (Ok(x), Ok(y)) => (x.st_dev, x.st_ino, x.st_rdev) == (y.st_dev, y.st_ino, y.st_rdev),
        _ => false,
    }
}

/// Bytes read at a time.
const CHUNK: usize = 64 * 1024;

/// One output stream: the workload's pipe and which stream it is.
struct Outlet {
    from: Option<OwnedFd>,
    stream: Stream,
}

impl Outlet {
    /// Copies one read's worth. False once the stream is over (end-of-file, or the
    /// destination refuses: the pipe is closed, so the workload's next write fails as it
    /// would have on the destination).
    fn pump(&mut self, buf: &mut [u8], out: Out) -> bool {
        let Some(from) = &self.from else {
            return false;
        };
        let more = match nix::unistd::read(from.as_raw_fd(), buf) {
            Ok(0) => false,
            Ok(n) => out(self.stream, &buf[..n]),
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => true,
            Err(_) => false,
        };
        if !more {
            self.from = None;
        }
        more
    }

    /// After the workload's exit: copies what its pipe holds now, and no more (a process it
    /// left behind may go on writing, or hold the pipe open without writing).
    fn drain(&mut self, buf: &mut [u8], out: Out) {
        let Some(from) = &self.from else {
            return;
        };
        let mut held: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int to the pointer given.
        if unsafe { libc::ioctl(from.as_raw_fd(), libc::FIONREAD, &mut held) } != 0 {
            return;
        }
        let mut left = usize::try_from(held).unwrap_or(0);
        while left > 0 {
            let want = left.min(buf.len());
            match nix::unistd::read(from.as_raw_fd(), &mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => {
                    if !out(self.stream, &buf[..n]) {
                        break;
                    }
                    left -= n;
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => break,
            }
        }
    }
}

/// The workload's stdin: what our stdin gave that it has not taken yet.
struct Inlet {
    to: Option<OwnedFd>,
    pending: Vec<u8>,
    /// Our stdin has ended (or failed): close the pipe once `pending` is written.
    ended: bool,
}

impl Inlet {
    /// Writes what the pipe takes now.
    fn give(&mut self) {
        let Some(to) = &self.to else {
            return;
        };
        while !self.pending.is_empty() {
            match nix::unistd::write(to, &self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(_) => {
                    // The workload closed its stdin: nothing more goes there.
                    self.pending.clear();
                    self.ended = true;
                    break;
                }
            }
        }
        self.close_if_done();
    }

    fn close_if_done(&mut self) {
        if self.ended && self.pending.is_empty() {
            self.to = None;
        }
    }
}

fn pollfd(fd: Option<RawFd>, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd: fd.unwrap_or(-1),
        events,
        revents: 0,
    }
}

/// Our ends do not block: one loop serves them all. (Never the caller's own streams: their
/// open file descriptions are shared with whoever started us.)
fn set_nonblocking(fd: &OwnedFd) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    if let Ok(flags) = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL) {
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        let _ = fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags));
    }
}

/// What follows a [`PipeSession`]'s end: the exit code of the process waited for.
pub type Finish = Box<dyn FnOnce() -> i32>;

/// A workload's pipes, until `exited` (the pidfd of the process waited for) is readable,
/// then what the workload wrote up to then. Without a pidfd (none could be had), until the
/// end of its output instead.
pub struct PipeSession {
    outlets: [Outlet; 2],
    inlet: Inlet,
    exited: Option<OwnedFd>,
    buf: Vec<u8>,
    finish: Option<Finish>,
}

impl PipeSession {
    /// `ours`: the caller's ends of the workload's pipes; `exited`: the pidfd to wait for;
    /// `finish`: its exit code once the session is over (None: the front end does not ask).
    pub fn new(ours: Ours, exited: Option<OwnedFd>, finish: Option<Finish>) -> PipeSession {
        for fd in [&ours.stdin, &ours.stdout, &ours.stderr]
            .into_iter()
            .flatten()
        {
            set_nonblocking(fd);
        }
        PipeSession {
            outlets: [
                Outlet {
                    from: ours.stdout,
                    stream: Stream::Stdout,
                },
                Outlet {
                    from: ours.stderr,
                    stream: Stream::Stderr,
                },
            ],
            inlet: Inlet {
                ended: ours.stdin.is_none(),
                to: ours.stdin,
                pending: Vec::new(),
            },
            exited,
            buf: vec![0u8; CHUNK],
            finish,
        }
    }
}

impl Session for PipeSession {
    fn tty(&self) -> bool {
        false
    }

    fn interests(&self) -> Vec<libc::pollfd> {
        let inlet = &self.inlet;
        vec![
            pollfd(self.exited.as_ref().map(|e| e.as_raw_fd()), libc::POLLIN),
            pollfd(
                self.outlets[0].from.as_ref().map(|f| f.as_raw_fd()),
                libc::POLLIN,
            ),
            pollfd(
                self.outlets[1].from.as_ref().map(|f| f.as_raw_fd()),
                libc::POLLIN,
            ),
            pollfd(
                inlet
                    .to
                    .as_ref()
                    .filter(|_| !inlet.pending.is_empty())
                    .map(|f| f.as_raw_fd()),
                libc::POLLOUT,
            ),
        ]
    }

    fn on_ready(&mut self, ready: &[libc::pollfd], out: Out) -> Option<End> {
        let ready = |i: usize| ready.get(i).is_some_and(|p| p.revents != 0);
        for (i, outlet) in self.outlets.iter_mut().enumerate() {
            if ready(i + 1) {
                outlet.pump(&mut self.buf, &mut *out);
            }
        }
        if ready(3) {
            self.inlet.give();
        }
        let output_over = self.outlets.iter().all(|o| o.from.is_none());
        if ready(0) || (self.exited.is_none() && output_over) {
            for outlet in &mut self.outlets {
                outlet.drain(&mut self.buf, &mut *out);
            }
            return Some(End::Closed);
        }
        None
    }

    fn accepts_input(&self) -> bool {
        self.inlet.to.is_some() && self.inlet.pending.is_empty() && !self.inlet.ended
    }

    fn input(&mut self, data: &[u8]) -> io::Result<()> {
        self.inlet.pending.extend_from_slice(data);
        self.inlet.give();
        Ok(())
    }

    fn close_input(&mut self) {
        self.inlet.ended = true;
        self.inlet.close_if_done();
    }

    fn resize(&mut self, _rows: u16, _cols: u16) {}

    fn finish(mut self: Box<Self>, _end: End) -> Result<Option<i32>, ContainerError> {
        // Nothing of the caller's stays with a process the workload left behind.
        self.inlet.to = None;
        self.outlets.iter_mut().for_each(|o| o.from = None);
        Ok(self.finish.take().map(|f| f()))
    }
}
