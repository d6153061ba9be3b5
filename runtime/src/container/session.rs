//! A caller's end of a workload's streams, in both isolations: what `exec` and `attach`
//! return ([`Session`]) and what a foreground run hands its front end ([`Front`]). A
//! session is a source of typed output (which stream, which bytes) and a handle for input,
//! end of input and window sizes; the front end renders it in its one relay loop (the CLI's
//! is `cli::terminal::relay`), so no code of the library writes to a terminal.
//!
//! Three kinds, one per way to reach a workload's streams:
//! - [`super::relay::PipeSession`]: pipes made for a process of this host (`exec`, `run`
//!   without `-t` in the process tree);
//! - [`PtySession`]: the pty master of a process of this host (`exec -t`);
//! - [`FrameSession`]: a monitor's socket, in the one attach wire format, the host <->
//!   agent protocol's frames (`Input`, `Resize`, `CloseInput` requests; `Output` and
//!   `Exited` events): the process tree's attach socket and a VM's control socket alike.
//!
//! None hands the caller's own descriptors to the workload: they stay in the front end,
//! which copies bytes (see [`crate::linux::process::stdio`]).

use super::ContainerError;
pub use capsa_core::protocol::Stream;
use capsa_core::protocol::{self, Event, Message, Request, Response};
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

/// How a session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The workload's process exited with this code (a VM's monitor says so).
    Exited(i32),
    /// The workload's side closed its streams; its exit is recorded elsewhere.
    Closed,
    /// The user typed the detach keys; the workload runs on.
    Detached,
    /// The other side broke off with this reason.
    Broken(String),
}

/// Where a session's output goes: false when it takes no more of `stream` (the session
/// then stops reading that stream, so the workload's next write to it fails).
pub type Out<'a> = &'a mut dyn FnMut(Stream, &[u8]) -> bool;

/// A caller's end of a workload's streams. The front end waits in poll(2) over
/// [`Session::interests`] (plus its own input), then calls [`Session::on_ready`].
pub trait Session {
    /// Whether the workload has a terminal: the caller's goes raw, its window size is
    /// followed, the detach keys are watched.
    fn tty(&self) -> bool;

    /// The descriptors to wait for, and for what.
    fn interests(&self) -> Vec<libc::pollfd>;

    /// After a poll over [`Session::interests`] (`ready`, in their order): takes what is
    /// ready, output to `out`; how the session ended, once it has.
    fn on_ready(&mut self, ready: &[libc::pollfd], out: Out) -> Option<End>;

    /// Whether more input is taken now (a pipe still holding earlier input is not polled
    /// for more, so a workload that reads slowly slows its writer).
    fn accepts_input(&self) -> bool {
        true
    }

    /// Bytes for the workload's stdin.
    fn input(&mut self, data: &[u8]) -> std::io::Result<()>;

    /// The caller's input has ended.
    fn close_input(&mut self);

    /// The caller's window size, for the workload's terminal.
    fn resize(&mut self, rows: u16, cols: u16);

    /// After the relay: the workload's exit code (None when the user detached).
    fn finish(self: Box<Self>, end: End) -> Result<Option<i32>, ContainerError>;
}

/// The front end's side of a foreground run, whose monitor is this process.
pub trait Front {
    /// Relays `session` until it ends.
    fn relay(&mut self, session: &mut dyn Session) -> End;

    /// Output of a workload whose relay the sandbox runs itself (a VM's monitor loop).
    fn output(&mut self, stream: Stream, data: &[u8]);

    /// The caller's input, read on a thread of the sandbox's.
    fn input(&mut self) -> Box<dyn std::io::Read + Send>;

    /// The caller's window size, if it has one.
    fn window_size(&self) -> Option<(u16, u16)>;
}

/// Docker's default detach sequence: ctrl-p, ctrl-q.
pub const DEFAULT_DETACH_KEYS: &[u8] = &[0x10, 0x11];

/// A `--detach-keys` value that names no keys.
#[derive(Debug, thiserror::Error)]
#[error("--detach-keys {spec:?}: expected keys such as ctrl-p,ctrl-q")]
pub struct DetachKeysError {
    spec: String,
}

/// Parses `--detach-keys` (`ctrl-p,ctrl-q`, `ctrl-x`, `a,b`).
pub fn parse_detach_keys(spec: &str) -> Result<Vec<u8>, DetachKeysError> {
    spec.split(',')
        .map(|k| match k.trim().strip_prefix("ctrl-") {
            Some(c) if c.len() == 1 && c.as_bytes()[0].is_ascii_alphabetic() => {
                Ok(c.as_bytes()[0].to_ascii_lowercase() & 0x1f)
            }
            Some(c) if c == "@" || c == "[" || c == "\\" || c == "]" || c == "^" || c == "_" => {
                Ok(c.as_bytes()[0] & 0x1f)
            }
            None if k.trim().len() == 1 => Ok(k.trim().as_bytes()[0]),
            _ => Err(DetachKeysError {
                spec: spec.to_string(),
            }),
        })
        .collect()
}

fn pollin(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// The pty master of a process on this host (`exec -t`), with that process's capsa-init
/// (a child of this process) to wait for.
pub struct PtySession {
    master: OwnedFd,
    pid: i32,
    buf: Vec<u8>,
}

impl PtySession {
    pub fn new(master: OwnedFd, pid: i32) -> PtySession {
        PtySession {
            master,
            pid,
            buf: vec![0u8; 32 << 10],
        }
    }
}

impl Session for PtySession {
    fn tty(&self) -> bool {
        true
    }

    fn interests(&self) -> Vec<libc::pollfd> {
        vec![pollin(self.master.as_raw_fd())]
    }

    fn on_ready(&mut self, ready: &[libc::pollfd], out: Out) -> Option<End> {
        if ready.first().is_none_or(|p| p.revents == 0) {
            return None;
        }
        match nix::unistd::read(self.master.as_raw_fd(), &mut self.buf) {
            Ok(n) if n > 0 => {
                out(Stream::Stdout, &self.buf[..n]);
                None
            }
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => None,
            _ => Some(End::Closed), // EIO: no process holds the terminal any more
        }
    }

    fn input(&mut self, data: &[u8]) -> std::io::Result<()> {
        let mut data = data;
        while !data.is_empty() {
            match nix::unistd::write(&self.master, data) {
                Ok(n) => data = &data[n..],
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn close_input(&mut self) {
        // A terminal has no end of input of its own: the user types ctrl-d.
    }

    fn resize(&mut self, rows: u16, cols: u16) {
        let _ = crate::linux::sys::set_window_size(self.master.as_raw_fd(), rows, cols);
    }

    fn finish(self: Box<Self>, end: End) -> Result<Option<i32>, ContainerError> {
        Ok(match end {
            End::Detached => None,
            _ => Some(super::monitor::wait_child(self.pid)),
        })
    }
}

/// What follows a [`FrameSession`]'s end.
pub type Finish = Box<dyn FnOnce(End) -> Result<Option<i32>, ContainerError>>;

/// A monitor's socket in the attach wire format: the protocol's frames (see the module).
pub struct FrameSession {
    stream: UnixStream,
    frames: protocol::FrameReader,
    /// The process the session is with, as the frames name it.
    process: String,
    tty: bool,
    /// Events read before the session began (with the answer to its request).
    early: VecDeque<Event>,
    finish: Finish,
}

/// The largest frame a session takes from a monitor (an output chunk, base64 in JSON).
const SESSION_FRAME: usize = 1 << 20;

impl FrameSession {
    /// A session over `stream`, already past its request's answer.
    pub fn new(stream: UnixStream, tty: bool, finish: Finish) -> FrameSession {
        FrameSession {
            stream,
            frames: protocol::FrameReader::new(SESSION_FRAME),
            process: String::new(),
            tty,
            early: VecDeque::new(),
            finish,
        }
    }

    /// Sends `request` (an exec or an attach) and waits for its answer; the events that came
    /// before it are kept for the relay. The agent's error is the error.
    pub fn request(
        mut stream: UnixStream,
        request: Request,
        tty: bool,
        refused: impl Fn(String) -> ContainerError,
        finish: Finish,
    ) -> Result<FrameSession, ContainerError> {
        protocol::write_frame(&mut stream, 1, Message::Request(request))
            .map_err(|e| refused(e.to_string()))?;
        let mut early = VecDeque::new();
        loop {
            match protocol::read_frame(&mut stream)
                .map_err(|e| refused(e.to_string()))?
                .message
            {
                Message::Response(Response::Error { message, .. }) => return Err(refused(message)),
                Message::Response(_) => break,
                Message::Event(e) => early.push_back(e),
                Message::Request(_) => {
                    return Err(refused("unexpected request from the monitor".into()))
                }
            }
        }
        let mut session = FrameSession::new(stream, tty, finish);
        session.early = early;
        Ok(session)
    }

    fn send(&mut self, request: Request) -> std::io::Result<()> {
        protocol::write_frame(&mut self.stream, 0, Message::Request(request))
            .map_err(std::io::Error::other)
    }

    /// One event to `out`; the end when it is the exit.
    fn event(event: Event, out: Out) -> Option<End> {
        match event {
            Event::Output { stream, data, .. } => {
                out(stream, &data.0);
                None
            }
            Event::Exited { code, .. } => Some(End::Exited(code)),
        }
    }
}

impl Session for FrameSession {
    fn tty(&self) -> bool {
        self.tty
    }

    fn interests(&self) -> Vec<libc::pollfd> {
        vec![pollin(self.stream.as_raw_fd())]
    }

    fn on_ready(&mut self, ready: &[libc::pollfd], out: Out) -> Option<End> {
        while let Some(event) = self.early.pop_front() {
            if let Some(end) = Self::event(event, out) {
                return Some(end);
            }
        }
        if ready.first().is_none_or(|p| p.revents == 0) {
            return None;
        }
        match self.frames.fill(&mut self.stream) {
            Err(protocol::ProtocolError::Closed) => return Some(End::Closed),
            Err(e) => return Some(End::Broken(e.to_string())),
            Ok(()) => {}
        }
        loop {
            match self.frames.next_frame() {
                Ok(None) => return None,
                Ok(Some(envelope)) => match envelope.message {
                    Message::Event(event) => {
                        if let Some(end) = Self::event(event, out) {
                            return Some(end);
                        }
                    }
                    Message::Response(Response::Error { message, .. }) => {
                        return Some(End::Broken(message))
                    }
                    other => {
                        return Some(End::Broken(format!("unexpected {}", other.kind())));
                    }
                },
                Err(e) => return Some(End::Broken(e.to_string())),
            }
        }
    }

    fn input(&mut self, data: &[u8]) -> std::io::Result<()> {
        let process = self.process.clone();
        self.send(Request::Input {
            process,
            data: protocol::Bytes(data.to_vec()),
        })
    }

    fn close_input(&mut self) {
        let process = self.process.clone();
        let _ = self.send(Request::CloseInput { process });
    }

    fn resize(&mut self, rows: u16, cols: u16) {
        let process = self.process.clone();
        let _ = self.send(Request::Resize {
            process,
            rows,
            cols,
        });
    }

    fn finish(self: Box<Self>, end: End) -> Result<Option<i32>, ContainerError> {
        // The connection closes first: a monitor takes that as the client gone.
        let FrameSession { stream, finish, .. } = *self;
        drop(stream);
        finish(end)
    }
}

/// One output chunk of the workload's terminal as a frame of the attach wire format (the
/// process tree's monitor sends it to every attached client).
pub fn output_frame(data: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(data.len() * 4 / 3 + 96);
    let event = Event::Output {
        process: String::new(),
        stream: Stream::Stdout,
        data: protocol::Bytes(data.to_vec()),
    };
    // An output chunk is far below the frame limit: encoding cannot fail.
    let _ = protocol::write_frame(&mut frame, 0, Message::Event(event));
    frame
}

/// What a client of the process tree's attach socket asks of the terminal.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientFrame {
    /// Keyboard input.
    Input(Vec<u8>),
    /// The client's window size (rows, columns).
    Resize(u16, u16),
    /// The end of a client's input (a terminal has none; a `-i` container's stdin
    /// closes).
    CloseInput,
    /// Nothing the monitor acts on.
    Ignored,
}

/// Why a client of the attach socket is dropped.
#[derive(Debug, thiserror::Error)]
pub enum ClientFrameError {
    #[error("malformed frame on the attach socket")]
    Malformed(#[source] protocol::ProtocolError),
    #[error("unexpected {0} on the attach socket")]
    Unexpected(&'static str),
}

/// A client's frame as the terminal takes it; `Err` for anything a client may not send.
pub fn client_frame(
    envelope: Result<protocol::Envelope, protocol::ProtocolError>,
) -> Result<ClientFrame, ClientFrameError> {
    match envelope.map_err(ClientFrameError::Malformed)?.message {
        Message::Request(Request::Input { data, .. }) => Ok(ClientFrame::Input(data.0)),
        Message::Request(Request::Resize { rows, cols, .. }) => Ok(ClientFrame::Resize(rows, cols)),
        Message::Request(Request::CloseInput { .. }) => Ok(ClientFrame::CloseInput),
        other => Err(ClientFrameError::Unexpected(other.kind())),
    }
}

/// A client's frame reader for the attach socket.
pub fn client_frames() -> protocol::FrameReader {
    protocol::FrameReader::new(SESSION_FRAME)
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

    #[test]
    fn a_client_and_the_terminal_speak_one_wire_format() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut client = FrameSession::new(a, true, Box::new(|_| Ok(None)));
        client.input(b"ls\r").unwrap();
        client.resize(40, 120);
        client.close_input();
        let mut frames = client_frames();
        let mut b = b;
        let mut got = Vec::new();
        while got.len() < 3 {
            frames.fill(&mut b).unwrap();
            while let Some(env) = frames.next_frame().unwrap() {
                got.push(client_frame(Ok(env)).unwrap());
            }
        }
        assert_eq!(
            got,
            [
                ClientFrame::Input(b"ls\r".to_vec()),
                ClientFrame::Resize(40, 120),
                ClientFrame::CloseInput
            ]
        );
        // The terminal's output reaches the client as output of its stdout.
        std::io::Write::write_all(&mut b, &output_frame(b"hello")).unwrap();
        drop(b);
        let mut seen = Vec::new();
        let ready = client.interests();
        let mut ready = ready;
        ready[0].revents = libc::POLLIN;
        let mut end = None;
        while end.is_none() {
            end = client.on_ready(&ready, &mut |s, d| {
                seen.push((s, d.to_vec()));
                true
            });
        }
        assert_eq!(seen, [(Stream::Stdout, b"hello".to_vec())]);
        assert_eq!(end, Some(End::Closed));
    }

    #[test]
    fn a_client_may_not_send_other_requests() {
        let envelope = protocol::Envelope {
            version: protocol::PROTOCOL_VERSION,
            id: 0,
            message: Message::Request(Request::Stats),
            host_time_ns: None,
        };
        assert!(matches!(
            client_frame(Ok(envelope)),
            Err(ClientFrameError::Unexpected(_))
        ));
    }
}
