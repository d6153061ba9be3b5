//! The agent's loop: requests from the host, the output of every process it started (the
//! workload and `exec`s), child exits. One thread, poll(2) over the host channel, the
//! processes' stdout and stderr, and a signalfd for SIGCHLD (PID 1 reaps every orphan).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use capsa_core::protocol::{
    self, Bytes, ErrorKind, Event, GuestStats, Message, ProtocolError, Request, Response, Stream,
};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

use crate::workload::{self, Workload};
use crate::{channel, guest};

/// How long output may still arrive after a process's exit (from its orphans) before the exit
/// is reported.
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

/// A process whose output and exit the host hears about.
struct Proc {
    name: String,
    pid: i32,
    stdout: Option<File>,
    stderr: Option<File>,
    /// An exec'd process's stdin (`-i`) and pty master (`-t`); the init's are the workload's.
    stdin: Option<File>,
    tty: Option<std::os::fd::OwnedFd>,
    /// (code, OOM-killed, when), once reaped.
    exited: Option<(i32, bool, Instant)>,
    reported: bool,
}

impl Proc {
    fn drained(&self) -> bool {
        self.stdout.is_none() && self.stderr.is_none()
    }
}

struct Agent {
    chan: File,
    workload: Option<Workload>,
    /// The container's root mounted without a workload (`MountRoot`, for `cp`).
    root: Option<std::path::PathBuf>,
    procs: Vec<Proc>,
}

/// Why the agent stopped serving the host.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The host's port never appeared.
    #[error(transparent)]
    NoPort(std::io::Error),
    /// The host's port could not be opened.
    #[error("open {}: {source}", path.display())]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// SIGCHLD could not be blocked and read through a signalfd.
    #[error(transparent)]
    Signals(nix::errno::Errno),
    /// The host closed the channel.
    #[error("the host closed the agent channel")]
    Closed,
    /// The channel failed, or the host broke the protocol.
    #[error(transparent)]
    Protocol(ProtocolError),
}

/// Serves the host until it asks to shut down.
pub fn run() -> Result<(), ServeError> {
    let path = channel::find_port(Duration::from_secs(30)).map_err(ServeError::NoPort)?;
    let chan = channel::open(&path).map_err(|source| ServeError::Open {
        path: path.clone(),
        source,
    })?;
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.thread_block().map_err(ServeError::Signals)?;
    let sigfd = SignalFd::with_flags(&mask, nix::sys::signalfd::SfdFlags::SFD_NONBLOCK)
        .map_err(ServeError::Signals)?;
    let mut agent = Agent {
        chan,
        workload: None,
        root: None,
        procs: Vec::new(),
    };
    loop {
        match agent.turn(&sigfd) {
            Ok(true) => continue,
            Ok(false) => return Ok(()),
            Err(ProtocolError::Closed) => return Err(ServeError::Closed),
            Err(e) => return Err(ServeError::Protocol(e)),
        }
    }
}

/// What a poll entry stands for.
enum Source {
    Channel,
    Signals,
    Output(usize, Stream),
}

impl Agent {
    /// One poll round; false once the host asked to shut down.
    fn turn(&mut self, sigfd: &SignalFd) -> Result<bool, ProtocolError> {
        let ready = self.wait(sigfd)?;
        for (source, flags) in ready {
            match source {
                Source::Channel if flags.contains(PollFlags::POLLIN) => {
                    if !self.handle_request()? {
                        return Ok(false);
                    }
                }
                // The host is not connected (yet): the port reports hang-up until it is.
                Source::Channel => std::thread::sleep(Duration::from_millis(20)),
                Source::Signals => {
                    while let Ok(Some(_)) = sigfd.read_signal() {}
                    self.reap();
                }
                Source::Output(i, stream) => self.forward(i, stream)?,
            }
        }
        self.report_exits()
    }

    fn wait(&self, sigfd: &SignalFd) -> Result<Vec<(Source, PollFlags)>, ProtocolError> {
        let mut sources = vec![Source::Channel, Source::Signals];
        let mut fds = vec![
            PollFd::new(self.chan.as_fd(), PollFlags::POLLIN),
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
        ];
        for (i, p) in self.procs.iter().enumerate() {
            for (f, stream) in [(&p.stdout, Stream::Stdout), (&p.stderr, Stream::Stderr)] {
                if let Some(f) = f {
                    fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                    sources.push(Source::Output(i, stream));
                }
            }
        }
        let pending = self.procs.iter().any(|p| p.exited.is_some() && !p.reported);
        poll(
            &mut fds,
            PollTimeout::from(if pending { 50u16 } else { 1000 }),
        )
        .map_err(|e| ProtocolError::Io(e.into()))?;
        let flags: Vec<PollFlags> = fds
            .iter()
            .map(|p| p.revents().unwrap_or(PollFlags::empty()))
            .collect();
        Ok(sources
            .into_iter()
            .zip(flags)
            .filter(|(_, f)| !f.is_empty())
            .collect())
    }

    fn send(&mut self, id: u64, message: Message) -> Result<(), ProtocolError> {
        protocol::write_frame(&mut self.chan, id, message)
    }

    fn handle_request(&mut self) -> Result<bool, ProtocolError> {
        let env = protocol::read_frame(&mut self.chan)?;
        let Message::Request(req) = env.message else {
            return self
                .answer(
                    env.id,
                    Err((ErrorKind::BadRequest, "expected a request".into())),
                )
                .map(|_| true);
        };
        let shutdown = matches!(req, Request::Shutdown);
        let result = self.dispatch(req);
        self.answer(env.id, result)?;
        Ok(!shutdown)
    }

    fn answer(
        &mut self,
        id: u64,
        result: Result<Response, workload::Failure>,
    ) -> Result<(), ProtocolError> {
        let response = result.unwrap_or_else(|(kind, message)| Response::Error { kind, message });
        self.send(id, Message::Response(response))
    }

    /// The stdin of `process`: an exec'd process's, else the workload's.
    fn stdin_of(&mut self, process: &str) -> Result<&mut Option<File>, workload::Failure> {
        let init = self.workload.as_ref().is_some_and(|w| w.id == process);
        if !init {
            return match self.procs.iter_mut().find(|p| p.name == process) {
                Some(p) => Ok(&mut p.stdin),
                None => Err((ErrorKind::NotFound, format!("no process {process}"))),
            };
        }
        let w = self
            .workload
            .as_mut()
            .ok_or((ErrorKind::NotFound, "no workload".to_string()))?;
        Ok(&mut w.stdin)
    }

    fn workload(&self) -> Result<&Workload, workload::Failure> {
        self.workload
            .as_ref()
            .ok_or((ErrorKind::NotFound, "no workload in this VM".to_string()))
    }

    fn dispatch(&mut self, req: Request) -> Result<Response, workload::Failure> {
        match req {
            Request::Hello => Ok(Response::Hello {
                agent: env!("CARGO_PKG_VERSION").into(),
                kernel: guest::kernel_release(),
            }),
            Request::MountRoot(c) => {
                if self.workload.is_some() || self.root.is_some() {
                    return Err((
                        ErrorKind::BadRequest,
                        "this VM's root is mounted already".into(),
                    ));
                }
                self.root = Some(workload::mount_root(&c)?);
                Ok(Response::Ok)
            }
            Request::Create(c) => {
                if self.workload.is_some() || self.root.is_some() {
                    return Err((
                        ErrorKind::BadRequest,
                        "a workload already exists in this VM".into(),
                    ));
                }
                let mut w = workload::create(*c)?;
                self.procs.push(Proc {
                    name: w.id.clone(),
                    pid: w.pid,
                    stdout: w.stdout.take(),
                    stderr: w.stderr.take(),
                    stdin: None,
                    tty: None,
                    exited: None,
                    reported: false,
                });
                self.workload = Some(w);
                Ok(Response::Ok)
            }
            Request::Start => {
                let w = self
                    .workload
                    .as_mut()
                    .ok_or((ErrorKind::BadRequest, "start before create".to_string()))?;
                if let Some((code, msg)) = w.start()? {
                    let name = w.id.clone();
                    self.failed_to_exec(&name, code, &msg);
                }
                Ok(Response::Ok)
            }
            Request::Exec(e) => {
                self.unused_name(&e.process)?;
                match self.workload()?.exec(&e)? {
                    Ok(p) => self.procs.push(Proc {
                        name: e.process.clone(),
                        pid: p.pid,
                        stdout: Some(p.stdout),
                        stderr: p.stderr,
                        stdin: p.stdin,
                        tty: p.tty,
                        exited: None,
                        reported: false,
                    }),
                    Err((code, msg)) => {
                        self.procs.push(Proc {
                            name: e.process.clone(),
                            pid: 0,
                            stdout: None,
                            stderr: None,
                            stdin: None,
                            tty: None,
                            exited: None,
                            reported: false,
                        });
                        self.failed_to_exec(&e.process, code, &msg);
                    }
                }
                Ok(Response::Ok)
            }
            Request::Signal { process, signal } => {
                let pid = self
                    .procs
                    .iter()
                    .find(|p| p.name == process && p.exited.is_none())
                    .map(|p| p.pid);
                let pid = pid
                    .filter(|p| *p > 0)
                    .ok_or((ErrorKind::NotFound, format!("no running process {process}")))?;
                let sig = Signal::try_from(signal)
                    .map_err(|_| (ErrorKind::BadRequest, format!("no signal {signal}")))?;
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
                    .map_err(|e| (ErrorKind::NotFound, e.to_string()))?;
                Ok(Response::Ok)
            }
            Request::Input { process, data } => {
                if let Some(stdin) = self.stdin_of(&process)? {
                    // A process that closed its stdin just loses the input, as through a pipe.
                    let _ = stdin.write_all(&data.0);
                }
                Ok(Response::Ok)
            }
            Request::CloseInput { process } => {
                *self.stdin_of(&process)? = None;
                Ok(Response::Ok)
            }
            Request::Stats => Ok(Response::Stats(self.stats())),
            Request::Top => Ok(Response::Top(crate::top::rows(
                &self.workload()?.cgroup.pids(),
            ))),
            Request::CopyOut { process, path } => {
                self.start_copy(process, |root| crate::copy::copy_out(root, &path))
            }
            Request::CopyIn {
                process,
                path,
                as_is,
            } => self.start_copy(process, |root| crate::copy::copy_in(root, &path, as_is)),
            Request::Resize {
                process,
                rows,
                cols,
            } => {
                let w = self.workload()?;
                let tty = if w.id == process {
                    w.tty.as_ref()
                } else {
                    self.procs
                        .iter()
                        .find(|p| p.name == process)
                        .and_then(|p| p.tty.as_ref())
                };
                if let Some(tty) = tty {
                    capsa_core::linux::sys::set_window_size(tty.as_raw_fd(), rows, cols)
                        .map_err(|e| (ErrorKind::Internal, format!("window size: {e}")))?;
                }
                Ok(Response::Ok)
            }
            Request::Freeze { frozen } => {
                self.workload()?
                    .cgroup
                    .set_frozen(frozen)
                    .map_err(|e| (ErrorKind::Isolation, e.to_string()))?;
                Ok(Response::Ok)
            }
            Request::Shutdown => {
                if let Some(w) = &self.workload {
                    let _ = w.cgroup.destroy();
                }
                Ok(Response::Ok)
            }
            Request::Attach { .. } => Err((
                ErrorKind::BadRequest,
                "attach is served by the VM's monitor, not the agent".into(),
            )),
        }
    }

    /// A process name the host has not used yet in this VM.
    fn unused_name(&self, name: &str) -> Result<(), workload::Failure> {
        if self.procs.iter().any(|p| p.name == name) {
            return Err((ErrorKind::BadRequest, format!("process {name} exists")));
        }
        Ok(())
    }

    /// Starts a copy process (given the root it works in: the workload's, or the one mounted
    /// for `cp` alone) and follows it like an exec'd one: its output and exit go to the host
    /// under `name`.
    fn start_copy(
        &mut self,
        name: String,
        start: impl FnOnce(
            crate::copy::Root,
        ) -> Result<crate::copy::CopyProcess, crate::copy::CopyError>,
    ) -> Result<Response, workload::Failure> {
        self.unused_name(&name)?;
        let root = match (&self.workload, &self.root) {
            (Some(w), _) => crate::copy::Root::Workload(w.pid),
            (None, Some(dir)) => crate::copy::Root::Mounted(dir),
            (None, None) => return Err((ErrorKind::NotFound, "no workload in this VM".into())),
        };
        let copy = start(root).map_err(|e| (ErrorKind::Internal, e.to_string()))?;
        self.procs.push(Proc {
            name,
            pid: copy.pid,
            stdout: Some(copy.stdout),
            stderr: Some(copy.stderr),
            stdin: copy.stdin,
            tty: None,
            exited: None,
            reported: false,
        });
        Ok(Response::Ok)
    }

    /// An execve that failed: its message on stderr, its code as the exit.
    fn failed_to_exec(&mut self, name: &str, code: i32, msg: &str) {
        if let Some(p) = self.procs.iter_mut().find(|p| p.name == name) {
            p.stdout = None;
            p.stderr = None;
            p.exited = Some((code, false, Instant::now()));
        }
        let data = Bytes(format!("{msg}\n").into_bytes());
        let _ = self.send(
            0,
            Message::Event(Event::Output {
                process: name.to_string(),
                stream: Stream::Stderr,
                data,
            }),
        );
    }

    fn stats(&self) -> GuestStats {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |name: &str| {
            meminfo
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        let mut s = GuestStats {
            guest_memory_total: field("MemTotal:"),
            guest_memory_available: field("MemAvailable:"),
            ..Default::default()
        };
        if let Some(w) = &self.workload {
            let c = w.cgroup.stats();
            s.cpu_ns = c.cpu_ns;
            s.memory_usage = c.memory_usage.saturating_sub(c.memory_inactive_file);
            s.memory_limit = c.memory_limit;
            s.pids = c.pids;
        }
        s
    }

    /// Sends what process `i` wrote on `stream`; at EOF the stream is closed.
    fn forward(&mut self, i: usize, stream: Stream) -> Result<(), ProtocolError> {
        let Some(p) = self.procs.get_mut(i) else {
            return Ok(());
        };
        let slot = match stream {
            Stream::Stdout => &mut p.stdout,
            Stream::Stderr => &mut p.stderr,
        };
        let Some(f) = slot.as_mut() else {
            return Ok(());
        };
        let mut buf = vec![0u8; 64 << 10];
        let n = match f.read(&mut buf) {
            Ok(0) | Err(_) => {
                *slot = None;
                return Ok(());
            }
            Ok(n) => n,
        };
        buf.truncate(n);
        let process = p.name.clone();
        self.send(
            0,
            Message::Event(Event::Output {
                process,
                stream,
                data: Bytes(buf),
            }),
        )
    }

    /// Reaps every exited child, keeping the status of the processes the host follows.
    fn reap(&mut self) {
        loop {
            let (pid, code) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid.as_raw(), 128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            let oom = self
                .workload
                .as_ref()
                .is_some_and(|w| w.pid == pid && w.cgroup.oom_killed());
            if let Some(p) = self
                .procs
                .iter_mut()
                .find(|p| p.pid == pid && p.exited.is_none())
            {
                p.exited = Some((code, oom, Instant::now()));
            }
        }
    }

    /// Reports each exit once its output is drained (or after a grace time).
    fn report_exits(&mut self) -> Result<bool, ProtocolError> {
        let due: Vec<(String, i32, bool)> = self
            .procs
            .iter_mut()
            .filter(|p| !p.reported)
            .filter_map(|p| {
                let (code, oom, at) = p.exited?;
                if !p.drained() && at.elapsed() < OUTPUT_GRACE {
                    return None;
                }
                p.reported = true;
                p.stdout = None;
                p.stderr = None;
                Some((p.name.clone(), code, oom))
            })
            .collect();
        for (process, code, oom_killed) in due {
            self.send(
                0,
                Message::Event(Event::Exited {
                    process,
                    code,
                    oom_killed,
                }),
            )?;
        }
        Ok(true)
    }
}
