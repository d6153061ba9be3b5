//! The server's relay of a [`Session`] (a terminal on a monitor's socket, an exec's pty or
//! pipes) to a hijacked connection: the blocking half of `attach` and `exec/{id}/start`,
//! as `cli::terminal::relay` is the CLI's. It runs on a blocking thread, waits in poll(2)
//! over the session, the client's input, the client's socket (a hang-up ends it) and the
//! window sizes asked through `resize`.

use super::stream::{framed, Wires};
use crate::container::session::{End, Session};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

/// How often the relay looks whether its client has gone while nothing else happens (ms).
const CHECK_MS: i32 = 1000;

/// Window sizes asked for a session through `resize`, the last one kept, with a pipe that
/// wakes its relay.
pub struct Resizes {
    pending: Mutex<Option<(u16, u16)>>,
    wake_r: OwnedFd,
    wake_w: OwnedFd,
}

impl Resizes {
    /// A new, empty one.
    pub fn new() -> std::io::Result<Arc<Resizes>> {
        let flags = nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK;
        let (wake_r, wake_w) = nix::unistd::pipe2(flags)?;
        Ok(Arc::new(Resizes {
            pending: Mutex::new(None),
            wake_r,
            wake_w,
        }))
    }

    /// Asks for a window of `rows` by `cols`.
    pub fn ask(&self, rows: u16, cols: u16) {
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some((rows, cols));
        let _ = nix::unistd::write(&self.wake_w, b"r");
    }

    fn take(&self) -> Option<(u16, u16)> {
        let mut buf = [0u8; 64];
        while matches!(nix::unistd::read(self.wake_r.as_raw_fd(), &mut buf), Ok(n) if n > 0) {}
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// What a relay passes on.
pub struct RelayOptions<'a> {
    /// Frame output in Docker's 8-byte headers (no terminal).
    pub multiplex: bool,
    /// Pass the client's input on.
    pub stdin: bool,
    /// Pass stdout, stderr on.
    pub stdout: bool,
    pub stderr: bool,
    /// With a terminal: the keys that detach (empty: none).
    pub detach_keys: &'a [u8],
    /// Window sizes asked for this session.
    pub resizes: Option<&'a Resizes>,
}

/// Relays `session` to the client of `wires` until it ends, the client detaches or goes.
pub fn relay(session: &mut dyn Session, wires: &mut Wires, opts: &RelayOptions) -> End {
    let tty = session.tty();
    let mut detach =
        capsa_core::linux::tty::DetachKeys::new(if tty { opts.detach_keys } else { &[] });
    let mut stdin_open = opts.stdin;
    let mut gone = false;
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let mut pfds = session.interests();
        let theirs = pfds.len();
        let input_at = pfds.len();
        pfds.push(libc::pollfd {
            fd: if stdin_open && session.accepts_input() {
                wires.input.as_raw_fd()
            } else {
                -1
            },
            events: libc::POLLIN,
            revents: 0,
        });
        let resize_at = pfds.len();
        pfds.push(libc::pollfd {
            fd: opts.resizes.map_or(-1, |r| r.wake_r.as_raw_fd()),
            events: libc::POLLIN,
            revents: 0,
        });
        let peer_at = pfds.len();
        pfds.push(libc::pollfd {
            fd: wires.peer_fd(),
            events: 0,
            revents: 0,
        });
        // SAFETY: `pfds` is a live array of pollfd of the length given.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, CHECK_MS) };
        if n < 0 {
            continue;
        }
        if pfds[peer_at].revents & (libc::POLLHUP | libc::POLLERR) != 0 || wires.output.is_closed()
        {
            return End::Broken("the client has gone".into());
        }
        if pfds[resize_at].revents != 0 {
            if let Some((rows, cols)) = opts.resizes.and_then(Resizes::take) {
                session.resize(rows, cols);
            }
        }
        let output = &wires.output;
        let mut out = |stream, data: &[u8]| {
            let wanted = match stream {
                crate::container::session::Stream::Stdout => opts.stdout,
                crate::container::session::Stream::Stderr => opts.stderr,
            };
            if !wanted {
                return true;
            }
            if output
                .blocking_send(framed(opts.multiplex, stream, data))
                .is_err()
            {
                gone = true;
            }
            true
        };
        if let Some(end) = session.on_ready(&pfds[..theirs], &mut out) {
            return end;
        }
        if gone {
            return End::Broken("the client has gone".into());
        }
        if pfds[input_at].revents == 0 {
            continue;
        }
        let n = match wires.input.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(n) => n,
            Err(_) => 0,
        };
        if n == 0 {
            // The client's half-close: the workload's input ends.
            stdin_open = false;
            session.close_input();
            continue;
        }
        let Some(pass) = detach.filter(&buf[..n]) else {
            return End::Detached;
        };
        if !pass.is_empty() && session.input(&pass).is_err() {
            stdin_open = false;
        }
    }
}
