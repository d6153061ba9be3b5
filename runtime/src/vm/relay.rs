//! The conversation with a booted VM's agent: create and start the workload, then relay
//! its output (to a foreground run's front end or the container's log), the front end's
//! input, signals and window sizes, and the control socket's clients, until the workload exits. It waits in
//! one poll over every descriptor (agent socket, control socket, signalfd, the engine's
//! pidfd, the doorbell of the threads that read input): an idle VM costs its monitor no
//! wake-up at all.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::agent::AgentClient;
use super::feed::{Feed, Taken};
use super::protocol::{CreateRequest, Event, Request, Response, Stream};
use super::VmError;
use super::{boot::*, control_server::*};
use crate::container::session::Front;
use crate::container::ContainerError;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

/// Where the workload's output goes: the front end of a foreground run, or the container's
/// json-file log.
pub(super) enum Sink<'a> {
    Front {
        /// With `-i`, what the front end's input delivers (None at its end).
        input: Option<Feed<Option<Vec<u8>>>>,
        front: &'a mut dyn Front,
    },
    Log(crate::container::logfile::Writer),
    /// This process's own stdout and stderr (a pod VM's keeper: the sandbox's streams,
    /// which its caller handed down).
    Stdio,
}

/// Reads the front end's input on a thread of its own (a blocking read cannot share the
/// relay loop). At most [`STDIN_CHUNKS`] chunks wait in the channel: a guest that takes its
/// input slowly makes this thread wait, not the monitor's memory grow with everything the
/// input holds.
pub(super) fn stdin_relay(
    mut stdin: Box<dyn std::io::Read + Send>,
) -> std::io::Result<Feed<Option<Vec<u8>>>> {
    let (tx, rx) = Feed::new(STDIN_CHUNKS)?;
    std::thread::spawn(move || {
        // Signals are for the relay loop's signalfd, not this thread.
        let _ = SigSet::all().thread_block();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match stdin.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Ok(0) | Err(_) => {
                    tx.send(None);
                    return;
                }
                Ok(n) => {
                    if !tx.send(Some(buf[..n].to_vec())) {
                        return;
                    }
                }
            }
        }
    });
    Ok(rx)
}

/// Chunks of stdin (64 KiB each) read ahead of the guest, at most.
pub(super) const STDIN_CHUNKS: usize = 4;

impl Sink<'_> {
    pub(super) fn write(&mut self, stream: Stream, data: &[u8]) {
        match self {
            Sink::Front { front, .. } => front.output(stream, data),
            Sink::Log(w) => w.write(if stream == Stream::Stdout { 0 } else { 1 }, data),
            Sink::Stdio => {
                use std::io::Write;
                // A caller that closed its end just loses the output, as with a pipe.
                let _ = match stream {
                    Stream::Stdout => std::io::stdout().write_all(data),
                    Stream::Stderr => std::io::stderr().write_all(data),
                };
            }
        }
    }

    /// The front end's window size for `process`'s pty (None without a front end or a
    /// terminal).
    fn window_resize(&self, process: &str) -> Option<Request> {
        let Sink::Front { front, .. } = self else {
            return None;
        };
        let (rows, cols) = front.window_size()?;
        Some(Request::Resize {
            process: process.to_string(),
            rows,
            cols,
        })
    }
}

pub(super) fn block_signals(window_changes: bool) -> Result<SignalFd, ContainerError> {
    let mut mask = SigSet::empty();
    if window_changes {
        mask.add(Signal::SIGWINCH);
    }
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|e| ContainerError::Vm(format!("blocking signals: {e}")))?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| ContainerError::Vm(format!("signalfd: {e}")))
}

/// Create, start, relay output and signals until the workload's exit; meanwhile serve the
/// control socket (`exec`, `stats` from other capsa commands).
pub(super) fn converse(
    vm: &mut Booted,
    create: CreateRequest,
    interactive: bool,
    signals: &SignalFd,
    sink: &mut Sink,
    on_started: &mut impl FnMut(Result<(), &ContainerError>),
) -> Result<(i32, bool), VmError> {
    let process = create.id.clone();
    let tty = create.spec.process().as_ref().and_then(|p| p.terminal()) == Some(true);
    // Listening before `run -d` returns: a command right after it finds the socket (its
    // connection waits in the backlog until the loop below accepts it).
    let control = bind_control(&process)?;
    let agent = &mut vm.agent;
    let started = agent
        .call(Request::Create(Box::new(create)), REQUEST_TIMEOUT)
        .and_then(|_| agent.call(Request::Start, REQUEST_TIMEOUT))
        .map_err(|e| with_console(e, &vm.logs));
    // From the workload's start on, the engine is held to the container's CPU quota: the
    // boot and the container's set-up in the guest are capsa's work, and under TCG a small
    // quota would stretch them from seconds to minutes.
    let started = started.and_then(|_| match vm.jail.as_ref() {
        Some(jail) => jail.limit_cpu(true),
        None => Ok(()),
    });
    match &started {
        Ok(_) => on_started(Ok(())),
        Err(e) => on_started(Err(&ContainerError::Vm(e.to_string()))),
    }
    started?;
    let input = match sink {
        Sink::Front { input, .. } => input.take(),
        Sink::Log(_) | Sink::Stdio => None,
    };
    let resize = if tty {
        sink.window_resize(&process)
    } else {
        None
    };
    // With -i but no terminal (-d, start), the stdin stays open for `attach`.
    let stdin_open = input.is_some() || (interactive && matches!(sink, Sink::Log(_)));
    let mut relay = Relay {
        clients: Clients::new(&process, stdin_open)?,
        process,
        sink,
    };
    if let Some(resize) = resize {
        // The guest's pty starts at 80x24; with -t it takes this terminal's size.
        if let Some(exit) = relay.call(&mut vm.agent, resize)? {
            return Ok(exit);
        }
    }
    if !stdin_open {
        // Without -i the workload's stdin is empty, as in a container.
        let close = Request::CloseInput {
            process: relay.process.clone(),
        };
        if let Some(exit) = relay.call(&mut vm.agent, close)? {
            return Ok(exit);
        }
    }
    relay_until_exit(vm, &mut relay, &control, input, signals)
}

/// Relays the agent's events, the front end's input, signals and the control socket's
/// clients until the workload of `relay` exits (or the VM stops).
pub(super) fn relay_until_exit(
    vm: &mut Booted,
    relay: &mut Relay<'_, '_>,
    control: &std::os::unix::net::UnixListener,
    mut input: Option<Feed<Option<Vec<u8>>>>,
    signals: &SignalFd,
) -> Result<(i32, bool), VmError> {
    // The engine's end is a descriptor too: a VM that stops without a word is seen at once.
    let engine_exit = crate::linux::sys::pidfd_open(vm.engine.id())
        .map_err(|e| VmError::Io(format!("the engine's pidfd: {e}")))?;
    // Something was left for the next turn: look again without sleeping.
    let mut more = false;
    loop {
        if let Some(exit) = relay.queued(&mut vm.agent) {
            return Ok(exit);
        }
        let ready = wait(
            &[
                Some(signals.as_fd()),
                Some(vm.agent.as_fd()),
                Some(control.as_fd()),
                input.as_ref().map(Feed::bell),
                Some(relay.clients.requests.bell()),
                Some(engine_exit.as_fd()),
            ],
            more,
        )?;
        more = false;
        // Signals first: a window change typed before a command must reach the pty first.
        while let Ok(Some(sig)) = signals.read_signal() {
            let request = if sig.ssi_signo == libc::SIGWINCH as u32 {
                match relay.sink.window_resize(&relay.process) {
                    Some(r) => r,
                    None => continue,
                }
            } else {
                Request::Signal {
                    process: relay.process.clone(),
                    signal: sig.ssi_signo as i32,
                }
            };
            if let Some(exit) = relay.call(&mut vm.agent, request)? {
                return Ok(exit);
            }
        }
        if let Some(feed) = input.as_ref().filter(|_| ready[3]) {
            feed.hush();
        }
        let mut chunks = Vec::new();
        if let Some(feed) = &input {
            more |= feed.take(INPUT_PER_TURN, |c| {
                chunks.push(c);
                true
            }) == Taken::More;
        }
        for chunk in chunks {
            let request = match chunk {
                Some(data) => Request::Input {
                    process: relay.process.clone(),
                    data: super::protocol::Bytes(data),
                },
                None => {
                    input = None;
                    Request::CloseInput {
                        process: relay.process.clone(),
                    }
                }
            };
            if let Some(exit) = relay.call(&mut vm.agent, request)? {
                return Ok(exit);
            }
        }
        while let Ok((stream, _)) = control.accept() {
            if let Some(exit) = relay.serve(&mut vm.agent, stream) {
                return Ok(exit);
            }
        }
        if ready[4] {
            relay.clients.requests.hush();
        }
        let mut queued = Vec::new();
        more |= relay.clients.requests.take(CLIENT_QUEUE, |r| {
            queued.push(r);
            true
        }) == Taken::More;
        for request in queued {
            if matches!(&request, Request::CloseInput { process: p } if *p == relay.process) {
                relay.clients.stdin_open = false;
            }
            // An exec'd process that has gone just loses what was typed for it (a guest
            // that broke the protocol is found out by the next read).
            if let Ok(Some(exit)) = relay.call(&mut vm.agent, request) {
                return Ok(exit);
            }
        }
        // What the agent sent: those already read in a call first, then the socket's, at
        // most a turn's worth so that the others keep their turn.
        let mut heard = false;
        for _ in 0..EVENTS_PER_TURN {
            match vm.agent.next_event(Duration::ZERO) {
                Ok(Some(event)) => {
                    heard = true;
                    if let Some(exit) = relay.event(event) {
                        return Ok(exit);
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(with_console(e, &vm.logs)),
            }
        }
        more |= heard;
        if ready[5] && !heard {
            if let Ok(Some(status)) = vm.engine.try_wait() {
                return Err(VmError::EngineExited(format!(
                    "the VM stopped ({status}) before the workload exited: {}",
                    vm.logs.console_tail()
                )));
            }
        }
    }
}

/// Events passed on per turn of the relay loop, at most.
const EVENTS_PER_TURN: usize = 64;

/// Waits, without a timeout unless `now`, until one of `fds` (None: not watched) is
/// readable or hung up; which ones are.
fn wait(fds: &[Option<BorrowedFd>], now: bool) -> Result<Vec<bool>, VmError> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.map_or(-1, |fd| fd.as_raw_fd()),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        let timeout = if now { 0 } else { -1 };
        // SAFETY: `pfds` is a live array of pollfd of the length given.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
        if rc >= 0 {
            return Ok(pfds.iter().map(|p| p.revents != 0).collect());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(VmError::Io(format!("waiting in the VM's relay: {e}")));
        }
    }
}

/// At most this many chunks of this terminal's input go to the agent per turn of the relay
/// loop, so that output and other clients keep their turn.
pub(super) const INPUT_PER_TURN: usize = 16;

/// Where the guest's events go: the workload's to the sink and the attached clients, an
/// exec'd process's to the client waiting for it.
pub(super) struct Relay<'a, 'b> {
    pub(super) clients: Clients,
    /// The workload's process name.
    pub(super) process: String,
    pub(super) sink: &'a mut Sink<'b>,
}

impl Relay<'_, '_> {
    /// Passes `event` on; the workload's exit when it is that.
    pub(super) fn event(&mut self, event: Event) -> Option<(i32, bool)> {
        pass_on(&mut self.clients, self.sink, &self.process, event)
    }

    /// Sends `request` to the agent, passing on the events that come meanwhile as they
    /// come; the workload's exit if it was among them (before the answer's error, if any).
    pub(super) fn call(
        &mut self,
        agent: &mut AgentClient,
        request: Request,
    ) -> Result<Option<(i32, bool)>, VmError> {
        match self.ask(agent, request) {
            (_, Some(exit)) => Ok(Some(exit)),
            (answer, None) => answer.map(|_| None),
        }
    }

    /// Takes a client's request to the agent and gives it the answer; the workload's exit if
    /// it came meanwhile.
    pub(super) fn serve(
        &mut self,
        agent: &mut AgentClient,
        stream: UnixStream,
    ) -> Option<(i32, bool)> {
        let (client, request) = self.clients.take(stream)?;
        let (answer, exit) = self.ask(agent, request);
        self.clients.answer(client, answer);
        exit
    }

    /// The agent's answer to `request`, and the workload's exit if it came meanwhile.
    pub(super) fn ask(
        &mut self,
        agent: &mut AgentClient,
        request: Request,
    ) -> (Result<Response, VmError>, Option<(i32, bool)>) {
        let (clients, sink, process) = (&mut self.clients, &mut *self.sink, &self.process);
        let mut exit = None;
        let answer = agent.call_with(request, REQUEST_TIMEOUT, &mut |event| {
            if let Some(e) = pass_on(clients, sink, process, event) {
                exit.get_or_insert(e);
            }
        });
        (answer, exit)
    }

    /// Passes on the events the agent client queued while no relay listened.
    pub(super) fn queued(&mut self, agent: &mut AgentClient) -> Option<(i32, bool)> {
        let mut exit = None;
        while let Some(event) = agent.queued_event() {
            if let Some(e) = self.event(event) {
                exit.get_or_insert(e);
            }
        }
        exit
    }
}

/// One event to where it goes; the workload's exit when it is that.
pub(super) fn pass_on(
    clients: &mut Clients,
    sink: &mut Sink,
    process: &str,
    event: Event,
) -> Option<(i32, bool)> {
    if event.process() != process {
        clients.forward(event);
        return None;
    }
    clients.broadcast(&event);
    match event {
        Event::Output { stream, data, .. } => {
            sink.write(stream, &data.0);
            None
        }
        Event::Exited {
            code, oom_killed, ..
        } => Some((code, oom_killed)),
    }
}
