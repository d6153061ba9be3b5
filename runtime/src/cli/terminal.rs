//! The terminal side of `run -it`, `start -ai`, `attach` and `exec -it`: the user's
//! terminal in raw mode, keystrokes to the container, its output to the screen, window
//! sizes as they change, and the detach keys (Docker's ctrl-p,ctrl-q).

use crate::container::attach;
use crate::linux::sys;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, Ordering};

/// Docker's default detach sequence: ctrl-p, ctrl-q.
pub const DEFAULT_DETACH_KEYS: &[u8] = &[0x10, 0x11];

/// The other end of the terminal.
pub enum Remote {
    /// A monitor's attach socket.
    Socket(UnixStream),
    /// A pty master held by this CLI (`exec -it`).
    Pty(OwnedFd),
}

impl Remote {
    fn fd(&self) -> i32 {
        match self {
            Remote::Socket(s) => s.as_raw_fd(),
            Remote::Pty(m) => m.as_raw_fd(),
        }
    }

    fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Remote::Socket(s) => s.write_all(&attach::input(data)),
            Remote::Pty(m) => nix::unistd::write(m, data).map(|_| ()).map_err(Into::into),
        }
    }

    /// Passes on this terminal's window size.
    pub fn resize(&mut self) {
        let Ok((rows, cols)) = sys::window_size(libc::STDOUT_FILENO) else {
            return;
        };
        let _ = match self {
            Remote::Socket(s) => s.write_all(&attach::resize(rows, cols)),
            Remote::Pty(m) => sys::set_window_size(m.as_raw_fd(), rows, cols),
        };
    }
}

/// How a relay ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The container's side closed (its processes exited).
    Closed,
    /// The user typed the detach keys; the container runs on.
    Detached,
}

/// Parses `--detach-keys` (`ctrl-p,ctrl-q`, `ctrl-x`, `a,b`).
pub fn parse_detach_keys(spec: &str) -> Result<Vec<u8>, String> {
    spec.split(',')
        .map(|k| match k.trim().strip_prefix("ctrl-") {
            Some(c) if c.len() == 1 && c.as_bytes()[0].is_ascii_alphabetic() => {
                Ok(c.as_bytes()[0].to_ascii_lowercase() & 0x1f)
            }
            Some(c) if c == "@" || c == "[" || c == "\\" || c == "]" || c == "^" || c == "_" => {
                Ok(c.as_bytes()[0] & 0x1f)
            }
            None if k.trim().len() == 1 => Ok(k.trim().as_bytes()[0]),
            _ => Err(format!(
                "--detach-keys {spec:?}: expected keys such as ctrl-p,ctrl-q"
            )),
        })
        .collect()
}

/// Write end of the pipe SIGWINCH pokes (-1: none).
static WINCH_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_winch(_: libc::c_int) {
    let fd = WINCH_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; one byte from a static.
        unsafe { libc::write(fd, b"w".as_ptr().cast(), 1) };
    }
}

/// Relays until the remote closes or the detach keys are typed. `stdin`: pass keystrokes.
pub fn relay(mut remote: Remote, stdin: bool, detach_keys: &[u8]) -> std::io::Result<Ended> {
    // A remote that closes mid-write must not end this process with the terminal raw.
    crate::linux::sys::set_broken_pipe_kills(false);
    let _raw = if stdin {
        Some(crate::linux::tty::RawMode::enter())
    } else {
        None
    };
    let (winch_r, winch_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
    WINCH_PIPE.store(winch_w.as_raw_fd(), Ordering::Relaxed);
    // SAFETY: `on_winch` only calls async-signal-safe functions.
    unsafe { libc::signal(libc::SIGWINCH, on_winch as *const () as libc::sighandler_t) };
    remote.resize();
    let mut stdin_open = stdin;
    let mut detach = crate::linux::tty::DetachKeys::new(detach_keys);
    let mut buf = vec![0u8; 32 * 1024];
    let mut out = std::io::stdout();
    let ended = loop {
        let mut pfds = vec![
            libc::pollfd {
                fd: remote.fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: winch_r.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if stdin_open {
            pfds.push(libc::pollfd {
                fd: libc::STDIN_FILENO,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: `pfds` is a live array of pollfd of the length given.
        if unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) } < 0 {
            continue; // EINTR (SIGWINCH)
        }
        if pfds[1].revents != 0 {
            let _ = nix::unistd::read(winch_r.as_raw_fd(), &mut [0u8; 16]);
            remote.resize();
        }
        if pfds[0].revents != 0 {
            let n = match &mut remote {
                Remote::Socket(s) => s.read(&mut buf).unwrap_or(0),
                Remote::Pty(m) => nix::unistd::read(m.as_raw_fd(), &mut buf).unwrap_or(0),
            };
            if n == 0 {
                break Ended::Closed;
            }
            out.write_all(&buf[..n])?;
            out.flush()?;
        }
        if stdin_open && pfds.get(2).is_some_and(|p| p.revents != 0) {
            let n = std::io::stdin().read(&mut buf).unwrap_or(0);
            if n == 0 {
                stdin_open = false;
                continue;
            }
            let Some(pass) = detach.filter(&buf[..n]) else {
                break Ended::Detached;
            };
            if !pass.is_empty() && remote.send(&pass).is_err() {
                break Ended::Closed;
            }
        }
    };
    WINCH_PIPE.store(-1, Ordering::Relaxed);
    drop(_raw);
    if matches!(ended, Ended::Detached) {
        // Docker's words on detaching, on a line of their own.
        eprintln!("read escape sequence");
    }
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_like_docker() {
        assert_eq!(
            parse_detach_keys("ctrl-p,ctrl-q").unwrap(),
            vec![0x10, 0x11]
        );
        assert_eq!(parse_detach_keys("ctrl-x").unwrap(), vec![0x18]);
        assert_eq!(parse_detach_keys("a,b").unwrap(), b"ab".to_vec());
        assert!(parse_detach_keys("ctrl-").is_err());
        assert!(parse_detach_keys("meta-x").is_err());
    }
}
