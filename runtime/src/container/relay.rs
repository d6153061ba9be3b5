//! A foreground workload's streams (`run` and `exec` without `-d` or `-t`), relayed between
//! the pipes made for it ([`Pipes`]) and this process's own stdin, stdout and stderr, which
//! never reach the container themselves (see [`crate::linux::process::stdio`]).
//!
//! One loop, on this thread: output is copied as it comes, each stream in order; with `-i`
//! stdin is copied to the workload's pipe as the workload takes it, and its end-of-file
//! closes that pipe. When the process being waited for has exited (its pidfd is readable)
//! what it wrote is drained and the relay ends: a process it left behind keeps nothing of
//! the caller's, and a write of its gets EPIPE.

use crate::linux::process::stdio::{Input, Ours, Output, Pipes};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// Pipes for a foreground workload of this process: stdin fed from ours with `-i` (else
/// empty, as Docker gives it), stdout and stderr on one pipe when ours are the same file
/// (a terminal, or `2>&1`), so that their order holds, else on two.
pub fn pipes(interactive: bool) -> io::Result<Pipes> {
    let input = if interactive {
        Input::Fed
    } else {
        Input::Closed
    };
    let output = if same_file(io::stdout().as_fd(), io::stderr().as_fd()) {
        Output::Merged
    } else {
        Output::Separate
    };
    Pipes::new(input, output)
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

/// One output stream: the workload's pipe and where it goes.
struct Outlet {
    from: Option<OwnedFd>,
    to: BorrowedFd<'static>,
}

impl Outlet {
    /// Copies one read's worth. False once the stream is over (end-of-file, or the
    /// destination refuses: the pipe is closed, so the workload's next write fails as it
    /// would have on the destination).
    fn pump(&mut self, buf: &mut [u8]) -> bool {
        let Some(from) = &self.from else {
            return false;
        };
        let more = match nix::unistd::read(from.as_raw_fd(), buf) {
            Ok(0) => false,
            Ok(n) => write_all(self.to, &buf[..n]).is_ok(),
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
    fn drain(&mut self, buf: &mut [u8]) {
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
                    if write_all(self.to, &buf[..n]).is_err() {
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
    /// Reads our stdin (readable now) into `pending`.
    fn take(&mut self, buf: &mut [u8]) {
        match nix::unistd::read(libc::STDIN_FILENO, buf) {
            Ok(0) => self.ended = true,
            Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
            Err(_) => self.ended = true,
        }
        self.close_if_done();
    }

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

/// Writes all of `buf` to `fd`, waiting while it is full (it may be non-blocking: it is
/// shared with whoever started us).
fn write_all(fd: BorrowedFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => {
                let mut p = [libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                }];
                // SAFETY: one pollfd that lives across the call.
                unsafe { libc::poll(p.as_mut_ptr(), 1, -1) };
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
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

/// Relays until `exited` (the pidfd of the process waited for) is readable, then drains
/// what the workload wrote. Without a pidfd (none could be had), until the end of its
/// output instead.
pub fn relay(ours: Ours, exited: Option<BorrowedFd>) {
    for fd in [&ours.stdin, &ours.stdout, &ours.stderr]
        .into_iter()
        .flatten()
    {
        set_nonblocking(fd);
    }
    // SAFETY: descriptors 0, 1 and 2 stay open for this process's whole life.
    let (stdout, stderr) = unsafe {
        (
            BorrowedFd::borrow_raw(libc::STDOUT_FILENO),
            BorrowedFd::borrow_raw(libc::STDERR_FILENO),
        )
    };
    let mut outlets = [
        Outlet {
            from: ours.stdout,
            to: stdout,
        },
        Outlet {
            from: ours.stderr,
            to: stderr,
        },
    ];
    let mut inlet = Inlet {
        ended: ours.stdin.is_none(),
        to: ours.stdin,
        pending: Vec::new(),
    };
    let mut buf = vec![0u8; CHUNK];
    loop {
        let feeding = inlet.to.is_some();
        let mut fds = [
            pollfd(exited.map(|e| e.as_raw_fd()), libc::POLLIN),
            pollfd(
                outlets[0].from.as_ref().map(|f| f.as_raw_fd()),
                libc::POLLIN,
            ),
            pollfd(
                outlets[1].from.as_ref().map(|f| f.as_raw_fd()),
                libc::POLLIN,
            ),
            pollfd(
                (feeding && inlet.pending.is_empty() && !inlet.ended).then_some(libc::STDIN_FILENO),
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
        ];
        // SAFETY: an array of pollfds that lives across the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if rc < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue; // a signal, forwarded to the workload
            }
            break;
        }
        let ready = |i: usize| fds[i].revents != 0;
        for (i, outlet) in outlets.iter_mut().enumerate() {
            if ready(i + 1) {
                outlet.pump(&mut buf);
            }
        }
        if ready(3) {
            inlet.take(&mut buf);
        }
        if ready(4) || (ready(3) && !inlet.pending.is_empty()) {
            inlet.give();
        }
        let output_over = outlets.iter().all(|o| o.from.is_none());
        if ready(0) || (exited.is_none() && output_over) {
            break;
        }
    }
    for outlet in &mut outlets {
        outlet.drain(&mut buf);
    }
}
