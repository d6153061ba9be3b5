//! The control socket of a running VM container: its monitor (the process that holds the
//! agent connection) listens on /run/capsa-vm/<id>.ctl, and other capsa commands (`exec`,
//! `stats`, `top`, `pause`, `cp`) send it one request in the agent protocol; the monitor relays it to the agent and
//! streams back the answer and, for `exec`, the process's output and exit.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use super::control_server::SOCKET_DIR;
use super::protocol::{self, Event, ExecRequest, GuestStats, Message, Request, Response, Stream};
use crate::container::exec::ExecOptions;
use crate::container::{ContainerError, ContainerStore};

/// The control socket of container `id`.
pub fn path(id: &str) -> PathBuf {
    PathBuf::from(SOCKET_DIR).join(format!("{id}.ctl"))
}

fn connect(id: &str) -> Result<UnixStream, ContainerError> {
    UnixStream::connect(path(id)).map_err(|_| ContainerError::WrongState {
        id: id.to_string(),
        reason: "container is not running".into(),
    })
}

fn io(id: &str, e: impl std::fmt::Display) -> ContainerError {
    ContainerError::Vm(format!("container {id}: {e}"))
}

/// `exec` in a VM container: the command's exit code, its output on this terminal; with `-i`
/// this terminal's input, with `-t` a pty in the guest that follows this window.
pub fn exec(store: &ContainerStore, id: &str, opts: &ExecOptions) -> Result<i32, ContainerError> {
    let (_, spec_process, user) = crate::container::exec::process_for(store, id, opts)?;
    let request = Request::Exec(Box::new(ExecRequest {
        process: String::new(),
        spec_process,
        user,
        // A detached command has no client to read from.
        interactive: opts.interactive && !opts.detach,
        tty: opts.tty,
    }));
    if opts.detach {
        // The monitor drops the output of a client that has gone; the agent reaps the process.
        let mut stream = connect(id)?;
        protocol::write_frame(&mut stream, 1, Message::Request(request)).map_err(|e| io(id, e))?;
        return match protocol::read_frame(&mut stream)
            .map_err(|e| io(id, e))?
            .message
        {
            Message::Response(Response::Error { message, .. }) => {
                Err(io(id, format!("exec: {message}")))
            }
            _ => Ok(0),
        };
    }
    let terminal = Terminal {
        verb: "exec",
        stdin: opts.interactive,
        tty: opts.tty,
        detach_keys: Vec::new(),
    };
    Ok(session(id, request, &terminal)?.unwrap_or(0))
}

/// `attach` to a running VM container: its output from now on, and with `stdin` this
/// terminal's input (for a workload started with `-i`); with `-t` the detach keys leave it
/// running. The workload's exit code, or None when the user detached.
pub fn attach(
    id: &str,
    stdin: bool,
    tty: bool,
    detach_keys: &[u8],
) -> Result<Option<i32>, ContainerError> {
    let terminal = Terminal {
        verb: "attach",
        stdin,
        tty,
        detach_keys: if tty {
            detach_keys.to_vec()
        } else {
            Vec::new()
        },
    };
    session(id, Request::Attach { stdin }, &terminal)
}

/// How this terminal takes part in a session with a process in the VM.
struct Terminal {
    /// What the session is, for its errors.
    verb: &'static str,
    /// Relay this terminal's input.
    stdin: bool,
    /// The process has a pty in the guest: raw mode here, window size there.
    tty: bool,
    /// Typed in sequence, these end the session and leave the process running.
    detach_keys: Vec<u8>,
}

/// Sends `request` (an exec or an attach) to the monitor and relays the process's output
/// (and this terminal's input and window) until it exits (its code) or the user detaches.
fn session(id: &str, request: Request, terminal: &Terminal) -> Result<Option<i32>, ContainerError> {
    let mut stream = connect(id)?;
    // Signals for the window are read on a thread of their own, so block them first.
    let mut winch = if terminal.tty { window_changes() } else { None };
    let _raw = (terminal.tty && terminal.stdin).then(crate::linux::tty::RawMode::enter);
    protocol::write_frame(&mut stream, 1, Message::Request(request)).map_err(|e| io(id, e))?;
    let detached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    loop {
        let frame = match protocol::read_frame(&mut stream) {
            Ok(f) => f,
            Err(_) if detached.load(std::sync::atomic::Ordering::SeqCst) => return Ok(None),
            Err(e) => return Err(io(id, e)),
        };
        match frame.message {
            Message::Response(Response::Error { message, .. }) => {
                return Err(io(id, format!("{}: {message}", terminal.verb)))
            }
            Message::Response(_) => {
                let writer = std::sync::Arc::new(std::sync::Mutex::new(
                    stream.try_clone().map_err(|e| io(id, e))?,
                ));
                if terminal.tty {
                    send_window_size(&writer);
                }
                if let Some(fd) = winch.take() {
                    let w = writer.clone();
                    std::thread::spawn(move || relay_window_changes(fd, w));
                }
                if terminal.stdin {
                    let (w, keys, flag) = (
                        writer.clone(),
                        crate::linux::tty::DetachKeys::new(&terminal.detach_keys),
                        detached.clone(),
                    );
                    std::thread::spawn(move || relay_stdin(w, keys, flag));
                }
            }
            Message::Event(Event::Output {
                stream: s, data, ..
            }) => {
                let w: &mut dyn Write = if s == Stream::Stdout {
                    &mut out
                } else {
                    &mut err
                };
                let _ = w.write_all(&data.0);
                let _ = w.flush();
            }
            Message::Event(Event::Exited { code, .. }) => return Ok(Some(code)),
            Message::Request(_) => return Err(io(id, "unexpected request from the monitor")),
        }
    }
}

type SharedStream = std::sync::Arc<std::sync::Mutex<UnixStream>>;

fn send(to: &SharedStream, request: Request) -> bool {
    match to.lock() {
        Ok(mut s) => protocol::write_frame(&mut *s, 0, Message::Request(request)).is_ok(),
        Err(_) => false,
    }
}

/// This terminal's stdin as `Input` frames, then `CloseInput` at its end. The detach keys
/// end the session instead: the connection is shut, which the monitor takes as a client gone.
fn relay_stdin(
    to: SharedStream,
    mut keys: crate::linux::tty::DetachKeys,
    detached: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let mut buf = vec![0u8; 32 << 10];
    let mut stdin = std::io::stdin();
    loop {
        let request = match std::io::Read::read(&mut stdin, &mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(0) | Err(_) => Request::CloseInput {
                process: String::new(),
            },
            Ok(n) => match keys.filter(&buf[..n]) {
                Some(data) if data.is_empty() => continue,
                Some(data) => Request::Input {
                    process: String::new(),
                    data: protocol::Bytes(data),
                },
                None => {
                    detached.store(true, std::sync::atomic::Ordering::SeqCst);
                    if let Ok(s) = to.lock() {
                        let _ = s.shutdown(std::net::Shutdown::Both);
                    }
                    return;
                }
            },
        };
        let last = matches!(request, Request::CloseInput { .. });
        if !send(&to, request) || last {
            return;
        }
    }
}

fn send_window_size(to: &SharedStream) {
    if let Ok((rows, cols)) = crate::linux::sys::window_size(libc::STDOUT_FILENO) {
        send(
            to,
            Request::Resize {
                process: String::new(),
                rows,
                cols,
            },
        );
    }
}

/// SIGWINCH, blocked in this thread (and so in the threads it starts) and read from a
/// signalfd; None when that cannot be set up (the size then stays the first one).
fn window_changes() -> Option<nix::sys::signalfd::SignalFd> {
    let mut mask = nix::sys::signal::SigSet::empty();
    mask.add(nix::sys::signal::Signal::SIGWINCH);
    mask.thread_block().ok()?;
    nix::sys::signalfd::SignalFd::new(&mask).ok()
}

fn relay_window_changes(fd: nix::sys::signalfd::SignalFd, to: SharedStream) {
    while let Ok(Some(_)) = fd.read_signal() {
        send_window_size(&to);
    }
}

/// The guest's and the workload's counters.
pub fn stats(id: &str) -> Result<GuestStats, ContainerError> {
    match call(id, Request::Stats)? {
        Response::Stats(s) => Ok(s),
        other => Err(io(id, format!("unexpected answer: {}", other.kind()))),
    }
}

/// The workload's processes, as `top` prints them.
pub fn top(id: &str) -> Result<Vec<String>, ContainerError> {
    match call(id, Request::Top)? {
        Response::Top(rows) => Ok(rows),
        other => Err(io(id, format!("unexpected answer: {}", other.kind()))),
    }
}

/// Freezes or thaws the workload's cgroup inside the guest (`pause`, `unpause`).
pub fn set_frozen(id: &str, frozen: bool) -> Result<(), ContainerError> {
    match call(id, Request::Freeze { frozen })? {
        Response::Ok => Ok(()),
        other => Err(io(id, format!("unexpected answer: {}", other.kind()))),
    }
}

/// One request with a single answer; an agent's error becomes the error.
fn call(id: &str, request: Request) -> Result<Response, ContainerError> {
    let mut stream = connect(id)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| io(id, e))?;
    protocol::write_frame(&mut stream, 1, Message::Request(request)).map_err(|e| io(id, e))?;
    match protocol::read_frame(&mut stream)
        .map_err(|e| io(id, e))?
        .message
    {
        Message::Response(Response::Error { message, .. }) => Err(io(id, message)),
        Message::Response(r) => Ok(r),
        other => Err(io(id, format!("unexpected answer: {}", other.kind()))),
    }
}

/// `cp` out of a running VM container: `path` as a tar stream into `to`, as the copy process
/// in the guest writes it. A receiver that stops taking it ends the copy quietly: its own
/// error says why.
pub fn copy_out(
    id: &str,
    path: &std::path::Path,
    to: &mut dyn Write,
) -> Result<(), ContainerError> {
    let mut stream = copy_session(
        id,
        Request::CopyOut {
            process: String::new(),
            path: path.display().to_string(),
        },
    )?;
    let mut why = Vec::new();
    loop {
        match protocol::read_frame(&mut stream)
            .map_err(|e| io(id, e))?
            .message
        {
            Message::Event(Event::Output {
                stream: Stream::Stdout,
                data,
                ..
            }) => {
                if to.write_all(&data.0).is_err() {
                    return Ok(());
                }
            }
            Message::Event(Event::Output { data, .. }) => keep_reason(&mut why, &data.0),
            Message::Event(Event::Exited { code, .. }) => return copy_result(id, code, &why),
            other => return Err(io(id, format!("cp: unexpected message: {}", other.kind()))),
        }
    }
}

/// `cp` into a running VM container: the tar stream read from `from` extracted at `path`
/// by the copy process in the guest, sent in chunks as it is read.
pub fn copy_in(
    id: &str,
    path: &std::path::Path,
    from: &mut dyn std::io::Read,
    as_is: bool,
) -> Result<(), ContainerError> {
    let mut stream = copy_session(
        id,
        Request::CopyIn {
            process: String::new(),
            path: path.display().to_string(),
            as_is,
        },
    )?;
    let mut buf = vec![0u8; protocol::COPY_CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(id, format!("cp: reading the archive: {e}"))),
            Ok(n) => n,
        };
        let request = if n == 0 {
            Request::CloseInput {
                process: String::new(),
            }
        } else {
            Request::Input {
                process: String::new(),
                data: protocol::Bytes(buf[..n].to_vec()),
            }
        };
        // A copy process that failed early makes the monitor drop this client: its reason
        // then comes below, with its exit.
        if protocol::write_frame(&mut stream, 0, Message::Request(request)).is_err() || n == 0 {
            break;
        }
    }
    let mut why = Vec::new();
    loop {
        match protocol::read_frame(&mut stream)
            .map_err(|e| io(id, e))?
            .message
        {
            Message::Event(Event::Output { data, .. }) => keep_reason(&mut why, &data.0),
            Message::Event(Event::Exited { code, .. }) => return copy_result(id, code, &why),
            other => return Err(io(id, format!("cp: unexpected message: {}", other.kind()))),
        }
    }
}

/// Sends a copy request; the connection then carries its stream.
fn copy_session(id: &str, request: Request) -> Result<UnixStream, ContainerError> {
    let mut stream = connect(id)?;
    protocol::write_frame(&mut stream, 1, Message::Request(request)).map_err(|e| io(id, e))?;
    match protocol::read_frame(&mut stream)
        .map_err(|e| io(id, e))?
        .message
    {
        Message::Response(Response::Ok) => Ok(stream),
        Message::Response(Response::Error { message, .. }) => Err(io(id, format!("cp: {message}"))),
        other => Err(io(id, format!("cp: unexpected answer: {}", other.kind()))),
    }
}

/// The most of a copy process's error output kept for its error message.
const REASON_BYTES: usize = 4 << 10;

/// Keeps the start of what a copy process wrote on stderr, at most [`REASON_BYTES`]: its
/// reason comes first, and the guest decides how much follows.
pub(crate) fn keep_reason(why: &mut Vec<u8>, data: &[u8]) {
    let room = REASON_BYTES.saturating_sub(why.len());
    why.extend_from_slice(&data[..data.len().min(room)]);
}

pub(crate) fn copy_result(id: &str, code: i32, why: &[u8]) -> Result<(), ContainerError> {
    if code == 0 {
        return Ok(());
    }
    let why = String::from_utf8_lossy(why);
    Err(ContainerError::InvalidArgument(format!(
        "cp in container {}: {}",
        crate::container::id::short(id),
        super::agent::guest_text(why.trim())
    )))
}
