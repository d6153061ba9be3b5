//! The control socket of a running VM container: its monitor (the process that holds the
//! agent connection) listens on /run/capsa-vm/<id>.ctl, and other capsa commands (`exec`,
//! `stats`, `top`, `pause`, `cp`) send it one request in the agent protocol; the monitor
//! relays it to the agent and streams back the answer and, for `exec` and `attach`, the
//! process's output and exit: a [`FrameSession`] the front end relays.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use super::control_server::SOCKET_DIR;
use super::protocol::{self, Event, ExecRequest, GuestStats, Message, Request, Response, Stream};
use crate::container::exec::ExecOptions;
use crate::container::session::{End, Finish, FrameSession, Session};
use crate::container::{ContainerError, ContainerStore};

/// The control socket of container `id`.
pub fn path(id: &str) -> PathBuf {
    PathBuf::from(SOCKET_DIR).join(format!("{id}.ctl"))
}

pub(super) fn connect(id: &str) -> Result<UnixStream, ContainerError> {
    UnixStream::connect(path(id)).map_err(|_| ContainerError::WrongState {
        id: id.to_string(),
        reason: "container is not running".into(),
    })
}

fn io(id: &str, e: impl std::fmt::Display) -> ContainerError {
    ContainerError::Vm(format!("container {id}: {e}"))
}

/// `exec` in a VM container: the session with the command's streams (None with `-d`),
/// whose `finish` is its exit code; with `-i` the caller's input, with `-t` a pty in the
/// guest that follows the caller's window.
pub fn exec(
    store: &ContainerStore,
    id: &str,
    opts: &ExecOptions,
) -> Result<Option<Box<dyn Session>>, ContainerError> {
    let (_, spec_process, user) = crate::container::exec::process_for(store, id, opts)?;
    let request = Request::Exec(Box::new(ExecRequest {
        process: String::new(),
        container: String::new(),
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
            _ => Ok(None),
        };
    }
    let owner = id.to_string();
    let finish: Finish = Box::new(move |end| match end {
        End::Exited(code) => Ok(Some(code)),
        End::Detached => Ok(None),
        End::Closed => Err(io(&owner, "the monitor closed the session")),
        End::Broken(why) => Err(io(&owner, format!("exec: {why}"))),
    });
    session(id, request, "exec", opts.tty, finish).map(Some)
}

/// `attach` to a running VM container: its output from now on, and with `stdin` the
/// caller's input (for a workload started with `-i`); with `-t` its pty. The session's
/// `finish` is the workload's exit code once recorded.
pub fn attach(
    store: &ContainerStore,
    id: &str,
    stdin: bool,
    tty: bool,
) -> Result<Box<dyn Session>, ContainerError> {
    let (store, owner) = (store.clone(), id.to_string());
    let finish: Finish = Box::new(move |end| match end {
        End::Exited(code) => {
            // As Docker's, attach returns once the exit is recorded.
            crate::container::wait::wait_exit(&store, &owner)?;
            Ok(Some(code))
        }
        End::Detached => Ok(None),
        End::Closed => Err(io(&owner, "the monitor closed the session")),
        End::Broken(why) => Err(io(&owner, format!("attach: {why}"))),
    });
    session(id, Request::Attach { stdin }, "attach", tty, finish)
}

/// Sends `request` (an exec or an attach) to the monitor; the session that follows.
fn session(
    id: &str,
    request: Request,
    verb: &'static str,
    tty: bool,
    finish: Finish,
) -> Result<Box<dyn Session>, ContainerError> {
    let stream = connect(id)?;
    let refused = |why: String| io(id, format!("{verb}: {why}"));
    let session = FrameSession::request(stream, request, tty, refused, finish)?;
    Ok(Box::new(session))
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
    let request = Request::CopyOut {
        process: String::new(),
        path: path.display().to_string(),
    };
    stream_out(id, request, to)
}

/// `commit` of a running VM container: its writable layer as an image layer tar into `to`,
/// as the copy process in the guest writes it (`skipped`: the spec's mount points).
pub fn copy_layer_out(
    id: &str,
    skipped: Vec<String>,
    to: &mut dyn Write,
) -> Result<(), ContainerError> {
    let request = Request::CopyOutLayer {
        process: String::new(),
        skipped,
    };
    stream_out(id, request, to)
}

/// Sends a request for a copy process that writes a tar stream, and relays it into `to`.
fn stream_out(id: &str, request: Request, to: &mut dyn Write) -> Result<(), ContainerError> {
    let mut stream = copy_session(id, request)?;
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

/// How a `cp` into a VM extracts its stream.
#[derive(Clone, Copy, Debug)]
pub struct CopyInto {
    /// Into the path itself, as for a tar stream given on stdin.
    pub as_is: bool,
    /// `cp -a`: entries take the uid and gid the stream names.
    pub keep_owners: bool,
}

/// `cp` into a running VM container: the tar stream read from `from` extracted at `path`
/// by the copy process in the guest, sent in chunks as it is read.
pub fn copy_in(
    id: &str,
    path: &std::path::Path,
    from: &mut dyn std::io::Read,
    how: CopyInto,
) -> Result<(), ContainerError> {
    let mut stream = copy_session(
        id,
        Request::CopyIn {
            process: String::new(),
            path: path.display().to_string(),
            as_is: how.as_is,
            keep_owners: how.keep_owners,
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
