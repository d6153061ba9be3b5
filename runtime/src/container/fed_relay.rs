//! The monitor's relay for a container run with `-i` and no terminal: its stdout and
//! stderr go to the log and, as `Output` events on the attach socket, to every attached
//! client; what clients send as `Input` goes to its stdin pipe, and with `StdinOnce`
//! (`docker run -i`) a client's `CloseInput` closes it, so a workload reading input from
//! a file or a pipe sees its end. A container whose log driver is `none` runs through it
//! too, without a stdin: attached clients are the only place its output goes.
//!
//! Input is taken from clients only while the stdin pipe has room: a workload that does
//! not read holds its clients back, never the monitor's memory or its output.

use super::logfile;
use super::session::{client_frame, ClientFrame};
use capsa_core::protocol::{self, Event, Message, Stream};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};

/// Bytes read from an output pipe at once.
const READ_CHUNK: usize = 64 * 1024;

/// One attached client.
struct Client {
    stream: UnixStream,
    frames: protocol::FrameReader,
}

/// Input received and not yet taken by the workload's stdin pipe.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// A client ended its input: close stdin once `bytes` is written.
    close: bool,
}

/// Relays until the container's last process has closed its stdout and stderr.
pub fn relay(
    out: OwnedFd,
    err: OwnedFd,
    stdin: Option<OwnedFd>,
    listener: UnixListener,
    stdin_once: bool,
    log: &mut logfile::Writer,
) {
    for fd in [Some(&out), Some(&err), stdin.as_ref()]
        .into_iter()
        .flatten()
    {
        let _ = nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
    }
    let _ = listener.set_nonblocking(true);
    let mut outputs = [Some(out), Some(err)];
    let mut stdin = stdin;
    let mut clients: Vec<Client> = Vec::new();
    let mut pending = Pending::default();
    let mut buf = vec![0u8; READ_CHUNK];
    while outputs.iter().any(Option::is_some) {
        let fd_of = |o: &Option<OwnedFd>| o.as_ref().map_or(-1, |f| f.as_raw_fd());
        let want_input = pending.bytes.is_empty() && !pending.close;
        let mut pfds = vec![
            pollfd(fd_of(&outputs[0]), libc::POLLIN),
            pollfd(fd_of(&outputs[1]), libc::POLLIN),
            pollfd(listener.as_raw_fd(), libc::POLLIN),
            pollfd(if want_input { -1 } else { fd_of(&stdin) }, libc::POLLOUT),
        ];
        pfds.extend(clients.iter().map(|c| {
            pollfd(
                if want_input { c.stream.as_raw_fd() } else { -1 },
                libc::POLLIN,
            )
        }));
        // SAFETY: `pfds` is a live array of pollfd of the length given.
        if unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) } < 0 {
            continue; // EINTR
        }
        // Clients' input first, then new clients, then output: a client attached before
        // the start sees the first byte (it connected before the init was released).
        let mut keep = vec![true; clients.len()];
        for (i, c) in clients.iter_mut().enumerate() {
            if pfds[4 + i].revents != 0 {
                keep[i] = take_input(c, &mut pending, stdin_once);
            }
        }
        let mut k = keep.into_iter();
        clients.retain(|_| k.next().unwrap_or(true));
        if pfds[2].revents != 0 {
            while let Ok((stream, _)) = listener.accept() {
                let _ = stream.set_nonblocking(false);
                clients.push(Client {
                    stream,
                    frames: super::session::client_frames(),
                });
            }
        }
        feed_stdin(&mut stdin, &mut pending);
        for (n, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
            if pfds[n].revents != 0 {
                copy_output(&mut outputs[n], n, stream, &mut buf, log, &mut clients);
            }
        }
    }
}

fn pollfd(fd: i32, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Reads a client's frames into `pending`. False when the client is gone or spoke out
/// of turn.
fn take_input(c: &mut Client, pending: &mut Pending, stdin_once: bool) -> bool {
    if c.frames.fill(&mut c.stream).is_err() {
        return false;
    }
    while let Some(envelope) = c.frames.next_frame().transpose() {
        match client_frame(envelope) {
            Ok(ClientFrame::Input(data)) => pending.bytes.extend_from_slice(&data),
            // Without StdinOnce the input stays open for the next client, as in Docker.
            Ok(ClientFrame::CloseInput) => pending.close |= stdin_once,
            Ok(ClientFrame::Resize(..)) | Ok(ClientFrame::Ignored) => {}
            Err(_) => return false,
        }
    }
    true
}

/// Writes what the stdin pipe takes now; closes it once a client's input has ended and
/// everything before that end is written.
fn feed_stdin(stdin: &mut Option<OwnedFd>, pending: &mut Pending) {
    let Some(fd) = stdin.as_ref() else {
        pending.bytes.clear(); // stdin is closed: nothing will read this
        return;
    };
    while !pending.bytes.is_empty() {
        match nix::unistd::write(fd, &pending.bytes) {
            Ok(n) => {
                pending.bytes.drain(..n);
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => return,
            Err(_) => {
                // The workload closed its stdin: what is left has no reader.
                pending.bytes.clear();
                *stdin = None;
                return;
            }
        }
    }
    if pending.close {
        *stdin = None;
        pending.close = false;
    }
}

/// Reads what an output pipe holds into the log and to every client.
fn copy_output(
    fd: &mut Option<OwnedFd>,
    n: usize,
    stream: Stream,
    buf: &mut [u8],
    log: &mut logfile::Writer,
    clients: &mut Vec<Client>,
) {
    let Some(raw) = fd.as_ref().map(|f| f.as_raw_fd()) else {
        return;
    };
    loop {
        match nix::unistd::read(raw, buf) {
            Ok(0) => {
                log.flush(n);
                *fd = None;
                return;
            }
            Ok(len) => {
                log.write(n, &buf[..len]);
                let frame = output_frame(stream, &buf[..len]);
                clients.retain_mut(|c| c.stream.write_all(&frame).is_ok());
                if len < buf.len() {
                    return;
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => return,
            Err(_) => {
                log.flush(n);
                *fd = None;
                return;
            }
        }
    }
}

/// One output chunk of `stream` as a frame of the attach wire format.
fn output_frame(stream: Stream, data: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(data.len() * 4 / 3 + 96);
    let event = Event::Output {
        process: String::new(),
        stream,
        data: protocol::Bytes(data.to_vec()),
    };
    // An output chunk is far below the frame limit: encoding cannot fail.
    let _ = protocol::write_frame(&mut frame, 0, Message::Event(event));
    frame
}
