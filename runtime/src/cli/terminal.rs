//! The front end's one relay: every session a sandbox hands the CLI (`run`, `run -it`,
//! `start -ai`, `attach`, `exec` with or without `-t`, in either isolation) is relayed
//! here between the user's terminal or streams and the workload: its output to stdout or
//! stderr as it comes, keystrokes or piped input to it, window sizes as they change, and
//! with a terminal the user's in raw mode and the detach keys (Docker's ctrl-p,ctrl-q)
//! watched. The library never writes to the terminal; this file does.

use crate::container::session::{End, Front, Session, Stream};
use crate::container::ContainerError;
use crate::linux::sys;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicI32, Ordering};

pub use crate::container::session::{parse_detach_keys, DEFAULT_DETACH_KEYS};

/// Write end of the pipe SIGWINCH pokes (-1: none).
static WINCH_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_winch(_: libc::c_int) {
    let fd = WINCH_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; one byte from a static.
        unsafe { libc::write(fd, b"w".as_ptr().cast(), 1) };
    }
}

/// SIGWINCH poking a pipe, for as long as this lives.
struct WindowChanges {
    read: std::os::fd::OwnedFd,
    _write: std::os::fd::OwnedFd,
}

impl WindowChanges {
    fn watch() -> Option<WindowChanges> {
        let flags = nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK;
        let (read, write) = nix::unistd::pipe2(flags).ok()?;
        WINCH_PIPE.store(write.as_raw_fd(), Ordering::Relaxed);
        // SAFETY: `on_winch` only calls async-signal-safe functions.
        unsafe { libc::signal(libc::SIGWINCH, on_winch as *const () as libc::sighandler_t) };
        Some(WindowChanges {
            read,
            _write: write,
        })
    }
}

impl Drop for WindowChanges {
    fn drop(&mut self) {
        WINCH_PIPE.store(-1, Ordering::Relaxed);
    }
}

/// This terminal's window size, if stdout is one.
fn window_size() -> Option<(u16, u16)> {
    sys::window_size(libc::STDOUT_FILENO).ok()
}

/// Writes all of `data` to stdout or stderr, waiting while it is full (it may be
/// non-blocking: it is shared with whoever started us). False once it refuses.
fn write_out(stream: Stream, mut data: &[u8]) -> bool {
    let fd = match stream {
        Stream::Stdout => libc::STDOUT_FILENO,
        Stream::Stderr => libc::STDERR_FILENO,
    };
    // SAFETY: descriptors 1 and 2 stay open for this process's whole life.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
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
            Err(_) => return false,
        }
    }
    true
}

/// Relays `session` until it ends or, with a terminal, the detach keys are typed. `stdin`:
/// pass this process's input on.
pub fn relay(session: &mut dyn Session, stdin: bool, detach_keys: &[u8]) -> End {
    // A side that closes mid-write must not end this process with the terminal raw.
    sys::set_broken_pipe_kills(false);
    let tty = session.tty();
    let _raw = (tty && stdin).then(crate::linux::tty::RawMode::enter);
    let winch = if tty { WindowChanges::watch() } else { None };
    if let Some((rows, cols)) = window_size().filter(|_| tty) {
        session.resize(rows, cols);
    }
    let mut stdin_open = stdin;
    let mut detach = crate::linux::tty::DetachKeys::new(if tty { detach_keys } else { &[] });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut pfds = session.interests();
        let theirs = pfds.len();
        let winch_at = pfds.len();
        pfds.push(libc::pollfd {
            fd: winch.as_ref().map_or(-1, |w| w.read.as_raw_fd()),
            events: libc::POLLIN,
            revents: 0,
        });
        let stdin_at = pfds.len();
        pfds.push(libc::pollfd {
            fd: if stdin_open && session.accepts_input() {
                libc::STDIN_FILENO
            } else {
                -1
            },
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: `pfds` is a live array of pollfd of the length given.
        if unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) } < 0 {
            continue; // EINTR: a window change, or a signal forwarded to the workload
        }
        if pfds[winch_at].revents != 0 {
            if let Some(w) = &winch {
                let _ = nix::unistd::read(w.read.as_raw_fd(), &mut [0u8; 16]);
            }
            if let Some((rows, cols)) = window_size() {
                session.resize(rows, cols);
            }
        }
        if let Some(end) = session.on_ready(&pfds[..theirs], &mut write_out) {
            return end;
        }
        if pfds[stdin_at].revents == 0 {
            continue;
        }
        let n = match nix::unistd::read(libc::STDIN_FILENO, &mut buf) {
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => continue,
            Ok(n) => n,
            Err(_) => 0,
        };
        if n == 0 {
            stdin_open = false;
            session.close_input();
            continue;
        }
        let Some(pass) = detach.filter(&buf[..n]) else {
            // Docker's words on detaching, on a line of their own once the terminal is
            // itself again.
            drop(_raw);
            eprintln!("read escape sequence");
            return End::Detached;
        };
        if !pass.is_empty() && session.input(&pass).is_err() {
            // The other side has gone: its end comes with the next read.
            stdin_open = false;
        }
    }
}

/// Relays `session` to its end: the workload's exit code, None when the user detached.
pub fn run(
    mut session: Box<dyn Session>,
    stdin: bool,
    detach_keys: &[u8],
) -> Result<Option<i32>, ContainerError> {
    let end = relay(session.as_mut(), stdin, detach_keys);
    session.finish(end)
}

/// The CLI as the front end of a foreground `run`: the workload's streams are this
/// process's own.
pub struct Caller {
    /// `-i`: this process's input goes to the workload.
    pub stdin: bool,
    /// `-t`: the workload has a terminal; this one goes raw once its input is taken.
    pub tty: bool,
    raw: Option<crate::linux::tty::RawMode>,
}

impl Caller {
    pub fn new(stdin: bool, tty: bool) -> Caller {
        Caller {
            stdin,
            tty,
            raw: None,
        }
    }
}

impl Front for Caller {
    fn relay(&mut self, session: &mut dyn Session) -> End {
        relay(session, self.stdin, &[])
    }

    fn output(&mut self, stream: Stream, data: &[u8]) {
        write_out(stream, data);
    }

    fn input(&mut self) -> Box<dyn std::io::Read + Send> {
        if self.tty && self.raw.is_none() {
            // With -it the keys go to the workload's pty as typed (its line discipline
            // handles ctrl-c).
            self.raw = Some(crate::linux::tty::RawMode::enter());
        }
        Box::new(std::io::stdin())
    }

    fn window_size(&self) -> Option<(u16, u16)> {
        window_size()
    }
}
