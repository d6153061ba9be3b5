//! The monitor's side of the control socket (`/run/capsa-vm/<id>.ctl`): the clients other
//! capsa commands are (`exec`, `attach`, `stats`, `top`, `pause`, `cp`), each request
//! relayed to the agent and its answer, output and exit passed back.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use super::feed::{Feed, Ringer};
use super::protocol::{Event, Message, Request, Response};
use super::VmError;

/// Control sockets live here (root's only: 0700, sockets 0600): a Unix socket path must fit
/// in 108 bytes, which a container folder under a long state root does not.
pub const SOCKET_DIR: &str = "/run/capsa-vm";

pub(super) fn bind_control(id: &str) -> Result<UnixListener, VmError> {
    super::jail::private_dir(Path::new(SOCKET_DIR))?;
    let path = super::control::path(id);
    let _ = std::fs::remove_file(&path);
    let l =
        UnixListener::bind(&path).map_err(|e| VmError::Io(format!("{}: {e}", path.display())))?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| VmError::Io(format!("{}: {e}", path.display())))?;
    l.set_nonblocking(true)
        .map_err(|e| VmError::Io(e.to_string()))?;
    Ok(l)
}

/// The control socket's clients: those that wait for an `exec`'s output, by process name,
/// those attached to the workload, and what the interactive ones send (input, window
/// sizes), read on a thread per client.
pub(super) struct Clients {
    pub(super) waiting: std::collections::HashMap<String, UnixStream>,
    pub(super) attached: Vec<UnixStream>,
    /// The workload's process name, which attached clients' input is for.
    pub(super) workload: String,
    /// Whether the workload's stdin is open (`-i`), so that an attached client may write.
    pub(super) stdin_open: bool,
    pub(super) next: u64,
    /// Bounded: a client sending faster than the agent takes it (a large `cp` in) waits
    /// in its socket instead of filling the monitor's memory.
    pub(super) from_clients: Ringer<Request>,
    pub(super) requests: Feed<Request>,
    /// A pod's VM: clients also unpack, create, start and signal the pod's containers.
    pub(super) pod: bool,
}

/// Requests from clients queued in the monitor, at most; and relayed per turn of its loop, at
/// most, so that the workload's output keeps flowing during a large `cp` in.
pub(super) const CLIENT_QUEUE: usize = 16;

/// The largest frame of input a client may send (a `cp` in chunk, base64 and all): with
/// [`CLIENT_QUEUE`], what clients' input may hold of the monitor's memory.
pub(super) const CLIENT_INPUT_FRAME: usize = 2 * super::protocol::COPY_CHUNK;

/// Clients served at once (waiting for an exec's output, or attached), at most: each holds a
/// socket and, when it sends input, a thread.
pub(super) const MAX_CLIENTS: usize = 64;

/// A client that does not take its output for this long is dropped, not waited for.
pub(super) const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A client's request on its way to the agent: what its answer goes with.
pub(super) struct ClientRequest {
    pub(super) stream: UnixStream,
    /// The id of the client's request, which its answer carries.
    pub(super) id: u64,
    /// The process started for the client, whose output it waits for.
    pub(super) name: Option<String>,
    /// The client sends input for that process.
    pub(super) talks: bool,
}

/// Answers a client's request with an error of the monitor's own.
pub(super) fn refuse(stream: &mut UnixStream, id: u64, message: String) {
    let error = Response::Error {
        kind: super::protocol::ErrorKind::BadRequest,
        message,
    };
    let _ = super::protocol::write_frame(stream, id, Message::Response(error));
}

/// Reads an `exec -i`/`-t` client's frames until it goes, naming its process in each. A
/// client that started its process (`own`: an exec's, a copy's, not an attach's) may also
/// signal it.
pub(super) fn read_client_input(
    mut stream: UnixStream,
    process: String,
    own: bool,
    kill_when_gone: bool,
    to: Ringer<Request>,
) {
    let _ = stream.set_read_timeout(None);
    while let Ok(env) = super::protocol::read_frame_limited(&mut stream, CLIENT_INPUT_FRAME) {
        let request = match env.message {
            Message::Request(Request::Input { data, .. }) => Request::Input {
                process: process.clone(),
                data,
            },
            Message::Request(Request::CloseInput { .. }) => Request::CloseInput {
                process: process.clone(),
            },
            Message::Request(Request::Resize { rows, cols, .. }) => Request::Resize {
                process: process.clone(),
                rows,
                cols,
            },
            // A client may signal the process it started (a healthcheck past its timeout).
            Message::Request(Request::Signal { signal, .. }) if own => Request::Signal {
                process: process.clone(),
                signal,
            },
            _ => continue,
        };
        if !to.send(request) {
            return;
        }
    }
    // A pod's follower that went (killed: an ExecSync past its timeout, a shim's kill)
    // takes its process with it, as a runc container's init or exec'd process would go.
    if kill_when_gone {
        to.send(Request::Signal {
            process,
            signal: libc::SIGKILL,
        });
    }
}

impl Clients {
    pub(super) fn new(workload: &str, stdin_open: bool) -> Result<Self, VmError> {
        let (from_clients, requests) = Feed::new(CLIENT_QUEUE)
            .map_err(|e| VmError::Io(format!("the control clients' queue: {e}")))?;
        Ok(Clients {
            waiting: Default::default(),
            attached: Vec::new(),
            workload: workload.to_string(),
            stdin_open,
            next: 0,
            from_clients,
            requests,
            pod: false,
        })
    }

    /// The clients of a pod's VM, whose first container (the sandbox) is `sandbox`.
    pub(super) fn for_pod(sandbox: &str) -> Result<Self, VmError> {
        let mut clients = Self::new(sandbox, false)?;
        clients.pod = true;
        Ok(clients)
    }

    /// A name for a process started for a client (`exec-3`, `copy-4`).
    pub(super) fn new_name(&mut self, kind: &str) -> String {
        self.next += 1;
        format!("{kind}-{}", self.next)
    }

    /// Whether [`MAX_CLIENTS`] are served, once those that hung up are let go.
    pub(super) fn full(&mut self) -> bool {
        self.waiting.retain(|_, s| !hung_up(s));
        self.attached.retain(|s| !hung_up(s));
        self.waiting.len() + self.attached.len() >= MAX_CLIENTS
    }

    /// Reads a client's one request: what to ask the agent for it, or None when it was
    /// answered here (an attach, a refusal).
    pub(super) fn take(&mut self, mut stream: UnixStream) -> Option<(ClientRequest, Request)> {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.set_write_timeout(Some(CLIENT_WRITE_TIMEOUT));
        let env = super::protocol::read_frame(&mut stream).ok()?;
        let stays = matches!(
            env.message,
            Message::Request(
                Request::Attach { .. }
                    | Request::Exec(_)
                    | Request::CopyOut { .. }
                    | Request::CopyOutLayer { .. }
                    | Request::CopyIn { .. }
                    | Request::Unpack { .. }
                    | Request::Create(_)
            )
        );
        if stays && self.full() {
            refuse(
                &mut stream,
                env.id,
                format!("this VM's monitor serves at most {MAX_CLIENTS} clients at once"),
            );
            return None;
        }
        let mut talks = false;
        let (request, name) = match env.message {
            Message::Request(Request::Attach { stdin }) => {
                self.attach(stream, env.id, stdin);
                return None;
            }
            Message::Request(Request::Exec(mut e)) => {
                e.process = self.new_name("exec");
                talks = e.interactive || e.tty;
                let name = e.process.clone();
                (Request::Exec(e), Some(name))
            }
            Message::Request(Request::CopyOut { path, .. }) => {
                let process = self.new_name("copy");
                (
                    Request::CopyOut {
                        process: process.clone(),
                        path,
                    },
                    Some(process),
                )
            }
            Message::Request(Request::CopyOutLayer { skipped, .. }) => {
                let process = self.new_name("copy");
                (
                    Request::CopyOutLayer {
                        process: process.clone(),
                        skipped,
                    },
                    Some(process),
                )
            }
            Message::Request(Request::CopyIn {
                path,
                as_is,
                keep_owners,
                ..
            }) => {
                let process = self.new_name("copy");
                talks = true; // the archive arrives as the client's input
                (
                    Request::CopyIn {
                        process: process.clone(),
                        path,
                        as_is,
                        keep_owners,
                    },
                    Some(process),
                )
            }
            Message::Request(r @ (Request::Stats | Request::Top | Request::Freeze { .. })) => {
                (r, None)
            }
            message if self.pod => match self.take_pod(message) {
                Some((request, name, client_talks)) => {
                    talks = client_talks;
                    (request, name)
                }
                None => {
                    let only = "only exec, stats, top, freeze, copies and a pod's unpack, \
                                create, start and signal are served here";
                    refuse(&mut stream, env.id, only.into());
                    return None;
                }
            },
            _ => {
                let only = "only exec, stats, top, freeze and copies are served here";
                refuse(&mut stream, env.id, only.into());
                return None;
            }
        };
        let client = ClientRequest {
            stream,
            id: env.id,
            name,
            talks,
        };
        Some((client, request))
    }

    /// A pod VM's own requests: the request for the agent, the process whose events the
    /// client then waits for, and whether it sends input for it. A pod container's init
    /// is named by its ID, so its creator gets its output and exit and may signal it.
    fn take_pod(&mut self, message: Message) -> Option<(Request, Option<String>, bool)> {
        match message {
            Message::Request(Request::Unpack { dir, .. }) => {
                let process = self.new_name("unpack");
                let request = Request::Unpack {
                    process: process.clone(),
                    dir,
                };
                Some((request, Some(process), true))
            }
            Message::Request(Request::Create(c)) if c.root_dir.is_some() => {
                let name = c.id.clone();
                Some((Request::Create(c), Some(name), true))
            }
            Message::Request(
                r @ (Request::StartContainer { .. }
                | Request::RemoveContainer { .. }
                | Request::Signal { .. }),
            ) => Some((r, None, false)),
            _ => None,
        }
    }

    /// Gives the client the agent's answer; one whose process now runs waits for its output
    /// (and sends its input).
    pub(super) fn answer(&mut self, client: ClientRequest, answer: Result<Response, VmError>) {
        let ClientRequest {
            mut stream,
            id,
            name,
            talks,
        } = client;
        let response = answer.unwrap_or_else(|e| Response::Error {
            kind: super::protocol::ErrorKind::Internal,
            message: e.to_string(),
        });
        let ok = !matches!(response, Response::Error { .. });
        if super::protocol::write_frame(&mut stream, id, Message::Response(response)).is_ok() && ok
        {
            if let Some(name) = name {
                if let (true, Ok(reader)) = (talks, stream.try_clone()) {
                    let to = self.from_clients.clone();
                    let process = name.clone();
                    let kill = self.pod;
                    std::thread::spawn(move || read_client_input(reader, process, true, kill, to));
                }
                self.waiting.insert(name, stream);
            }
        }
    }

    /// Takes an `attach` client: from now on it gets the workload's output and exit, and its
    /// input goes to the workload while its stdin is open.
    pub(super) fn attach(&mut self, mut stream: UnixStream, id: u64, stdin: bool) {
        let ok = Message::Response(Response::Ok);
        if super::protocol::write_frame(&mut stream, id, ok).is_err() {
            return;
        }
        if stdin && self.stdin_open {
            if let Ok(reader) = stream.try_clone() {
                let (to, process) = (self.from_clients.clone(), self.workload.clone());
                std::thread::spawn(move || read_client_input(reader, process, false, false, to));
            }
        }
        self.attached.push(stream);
    }

    /// An event of the workload goes to every attached client; one that has gone is dropped.
    pub(super) fn broadcast(&mut self, event: &Event) {
        self.attached.retain_mut(|s| {
            super::protocol::write_frame(s, 0, Message::Event(event.clone())).is_ok()
        });
    }

    /// An event of an `exec`'d process goes to the client waiting for it.
    pub(super) fn forward(&mut self, event: Event) {
        let (name, last) = (
            event.process().to_string(),
            matches!(event, Event::Exited { .. }),
        );
        let gone = match self.waiting.get_mut(&name) {
            Some(s) => super::protocol::write_frame(s, 0, Message::Event(event)).is_err(),
            None => false,
        };
        if last || gone {
            if let Some(s) = self.waiting.remove(&name).filter(|_| gone) {
                // Dropped (gone, or too slow to take its output): shut for both sides, so
                // that its input thread here ends and the client sees the end, rather than
                // waiting forever on a socket nobody writes.
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// Whether the client at the other end of `stream` has closed it.
pub(super) fn hung_up(stream: &UnixStream) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::empty())];
    poll(&mut fds, PollTimeout::ZERO).is_ok()
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR))
}
