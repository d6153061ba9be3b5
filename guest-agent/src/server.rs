//! The agent's loop: requests from the host, the workload's output, child exits. One thread,
//! poll(2) over the host channel, the workload's stdout and stderr, and a signalfd for SIGCHLD
//! (PID 1 reaps every orphan in the guest).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use capsa::vm::protocol::{
    self, Bytes, ErrorKind, Event, GuestStats, Message, ProtocolError, Request, Response, Stream,
};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

use crate::workload::{self, Workload};
use crate::{channel, guest};

/// How long output may still arrive after the workload's exit (from its orphans) before the
/// exit is reported.
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

struct Agent {
    chan: File,
    workload: Option<Workload>,
    /// The workload's exit, once reaped: (code, oom), and when.
    exited: Option<(i32, bool, Instant)>,
    reported: bool,
}

pub fn run() -> Result<(), String> {
    let path = channel::find_port(Duration::from_secs(30)).map_err(|e| e.to_string())?;
    let chan = channel::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.thread_block().map_err(|e| e.to_string())?;
    let sigfd = SignalFd::with_flags(&mask, nix::sys::signalfd::SfdFlags::SFD_NONBLOCK)
        .map_err(|e| e.to_string())?;
    let mut agent = Agent {
        chan,
        workload: None,
        exited: None,
        reported: false,
    };
    loop {
        match agent.turn(&sigfd) {
            Ok(true) => continue,
            Ok(false) => return Ok(()),
            Err(ProtocolError::Closed) => return Err("the host closed the agent channel".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

impl Agent {
    /// One poll round; false once the host asked to shut down.
    fn turn(&mut self, sigfd: &SignalFd) -> Result<bool, ProtocolError> {
        let chan = self.chan.try_clone()?;
        let out = self
            .workload
            .as_ref()
            .and_then(|w| w.stdout.as_ref().map(|f| f.try_clone()));
        let err = self
            .workload
            .as_ref()
            .and_then(|w| w.stderr.as_ref().map(|f| f.try_clone()));
        let (out, err) = (out.transpose()?, err.transpose()?);
        let mut fds = vec![
            PollFd::new(chan.as_fd(), PollFlags::POLLIN),
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
        ];
        let stream_fd = |f: &Option<File>| f.as_ref().map(|f| f.as_raw_fd());
        let (out_fd, err_fd) = (stream_fd(&out), stream_fd(&err));
        for f in [&out, &err].into_iter().flatten() {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
        }
        let timeout = if self.exited.is_some() && !self.reported {
            50u16
        } else {
            1000
        };
        poll(&mut fds, PollTimeout::from(timeout)).map_err(|e| ProtocolError::Io(e.into()))?;
        let ready: Vec<(i32, PollFlags)> = fds
            .iter()
            .map(|p| (raw(p.as_fd()), p.revents().unwrap_or(PollFlags::empty())))
            .collect();
        drop(fds);
        for (fd, flags) in ready {
            if flags.is_empty() {
                continue;
            }
            if fd == chan.as_raw_fd() {
                if flags.contains(PollFlags::POLLIN) {
                    if !self.handle_request()? {
                        return Ok(false);
                    }
                } else {
                    // The host is not connected (yet): the port reports hang-up until it is.
                    std::thread::sleep(Duration::from_millis(20));
                }
            } else if fd == sigfd.as_raw_fd() {
                while let Ok(Some(_)) = sigfd.read_signal() {}
                self.reap();
            } else if Some(fd) == out_fd {
                self.forward(Stream::Stdout)?;
            } else if Some(fd) == err_fd {
                self.forward(Stream::Stderr)?;
            }
        }
        self.report_exit()?;
        Ok(true)
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

    fn dispatch(&mut self, req: Request) -> Result<Response, workload::Failure> {
        match req {
            Request::Hello => Ok(Response::Hello {
                agent: env!("CARGO_PKG_VERSION").into(),
                kernel: guest::kernel_release(),
            }),
            Request::Create(c) => {
                if self.workload.is_some() {
                    return Err((
                        ErrorKind::BadRequest,
                        "a workload already exists in this VM".into(),
                    ));
                }
                self.workload = Some(workload::create(*c)?);
                Ok(Response::Ok)
            }
            Request::Start => {
                let w = self
                    .workload
                    .as_mut()
                    .ok_or((ErrorKind::BadRequest, "start before create".to_string()))?;
                if let Some((code, msg)) = w.start()? {
                    // execve failed: the message is the workload's stderr, the code its exit.
                    let _ = w.stderr.take();
                    let data = Bytes(format!("{msg}\n").into_bytes());
                    let process = w.id.clone();
                    self.send(
                        0,
                        Message::Event(Event::Output {
                            process,
                            stream: Stream::Stderr,
                            data,
                        }),
                    )
                    .map_err(|e| (ErrorKind::Internal, e.to_string()))?;
                    self.exited = Some((code, false, Instant::now()));
                }
                Ok(Response::Ok)
            }
            Request::Signal { signal, .. } => {
                self.workload
                    .as_ref()
                    .ok_or((ErrorKind::NotFound, "no workload".to_string()))?
                    .signal(signal)?;
                Ok(Response::Ok)
            }
            Request::Input { data, .. } => {
                let w = self
                    .workload
                    .as_mut()
                    .ok_or((ErrorKind::NotFound, "no workload".to_string()))?;
                if let Some(stdin) = w.stdin.as_mut() {
                    // A workload that closed its stdin just loses the input, as through a pipe.
                    let _ = stdin.write_all(&data.0);
                }
                Ok(Response::Ok)
            }
            Request::CloseInput { .. } => {
                if let Some(w) = self.workload.as_mut() {
                    w.stdin = None;
                }
                Ok(Response::Ok)
            }
            Request::Stats => Ok(Response::Stats(self.stats())),
            Request::Shutdown => {
                if let Some(w) = &self.workload {
                    let _ = w.cgroup.destroy();
                }
                Ok(Response::Ok)
            }
        }
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

    /// Sends what the workload wrote; at EOF the stream is closed.
    fn forward(&mut self, stream: Stream) -> Result<(), ProtocolError> {
        let Some(w) = self.workload.as_mut() else {
            return Ok(());
        };
        let slot = match stream {
            Stream::Stdout => &mut w.stdout,
            Stream::Stderr => &mut w.stderr,
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
        let process = w.id.clone();
        self.send(
            0,
            Message::Event(Event::Output {
                process,
                stream,
                data: Bytes(buf),
            }),
        )
    }

    /// Reaps every exited child; the workload's init's status is kept for the report.
    fn reap(&mut self) {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(s) => s,
            };
            let (pid, code) = match status {
                WaitStatus::Exited(pid, code) => (pid.as_raw(), code),
                WaitStatus::Signaled(pid, sig, _) => (pid.as_raw(), 128 + sig as i32),
                _ => continue,
            };
            if let Some(w) = &self.workload {
                if w.pid == pid && self.exited.is_none() {
                    self.exited = Some((code, w.cgroup.oom_killed(), Instant::now()));
                }
            }
        }
    }

    /// Reports the exit once the output is drained (both streams at EOF) or after a grace time.
    fn report_exit(&mut self) -> Result<(), ProtocolError> {
        let Some((code, oom, at)) = self.exited else {
            return Ok(());
        };
        if self.reported {
            return Ok(());
        }
        let drained = self
            .workload
            .as_ref()
            .is_none_or(|w| w.stdout.is_none() && w.stderr.is_none());
        if !drained && at.elapsed() < OUTPUT_GRACE {
            return Ok(());
        }
        self.reported = true;
        let process = self
            .workload
            .as_ref()
            .map(|w| w.id.clone())
            .unwrap_or_default();
        self.send(
            0,
            Message::Event(Event::Exited {
                process,
                code,
                oom_killed: oom,
            }),
        )
    }
}

fn raw(fd: BorrowedFd<'_>) -> i32 {
    fd.as_raw_fd()
}
