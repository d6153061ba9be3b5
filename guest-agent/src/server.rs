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
use crate::{channel, disks, guest};

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

/// Before SIGKILL reaches a process started through capsa-init (which cannot pass SIGKILL
/// on), kills the process groups of its children: the command it started leads its own, and
/// would otherwise be left running in the container (a healthcheck past its timeout).
fn kill_command_groups(pid: i32) {
    for child in children_of(pid).into_iter().filter(|c| *c > 1) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(-child), Signal::SIGKILL);
    }
}

/// The children of `pid`, from every process's /proc/N/stat (the guest kernel has no
/// /proc/N/task/N/children).
fn children_of(pid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|n| {
            std::fs::read_to_string(format!("/proc/{n}/stat"))
                .ok()
                .and_then(|stat| parent_in_stat(&stat))
                == Some(pid)
        })
        .collect()
}

/// The parent PID in a /proc/N/stat line: the field after the state, which follows the
/// command's closing parenthesis (the command itself may hold any character).
fn parent_in_stat(stat: &str) -> Option<i32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

impl Proc {
    fn drained(&self) -> bool {
        self.stdout.is_none() && self.stderr.is_none()
    }
}

struct Agent {
    chan: File,
    /// The VM's containers: one, or a pod's (its sandbox first, each with a root of its
    /// own unpacked on the pod's disk).
    workloads: Vec<Workload>,
    /// The container's root mounted without a workload (`MountRoot`, for `cp`).
    root: Option<std::path::PathBuf>,
    /// The overlay's upper directory of that root (`CopyOutLayer` with no workload).
    root_upper: Option<std::path::PathBuf>,
    procs: Vec<Proc>,
    /// The host froze the workload (`pause`): it stays frozen whatever copies do.
    paused: bool,
    /// Copy processes working in the running workload's root, which is frozen until the
    /// last of them ends (it cannot swap what they open, as with `cp` on a host).
    copies_in_root: Vec<String>,
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
        workloads: Vec::new(),
        root: None,
        root_upper: None,
        procs: Vec::new(),
        paused: false,
        copies_in_root: Vec::new(),
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
        if let Some(host_ns) = env.host_time_ns {
            guest::follow_host_clock(host_ns);
        }
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
        if let Some(w) = self.workloads.iter_mut().find(|w| w.id == process) {
            return Ok(&mut w.stdin);
        }
        match self.procs.iter_mut().find(|p| p.name == process) {
            Some(p) => Ok(&mut p.stdin),
            None => Err((ErrorKind::NotFound, format!("no process {process}"))),
        }
    }

    /// The VM's first container (the only one outside a pod).
    fn workload(&self) -> Result<&Workload, workload::Failure> {
        self.workloads
            .first()
            .ok_or((ErrorKind::NotFound, "no workload in this VM".to_string()))
    }

    /// Container `id` of this VM; an empty `id` names the first.
    fn workload_named(&self, id: &str) -> Result<&Workload, workload::Failure> {
        if id.is_empty() {
            return self.workload();
        }
        self.workloads
            .iter()
            .find(|w| w.id == id)
            .ok_or_else(|| (ErrorKind::NotFound, format!("no container {id} in this VM")))
    }

    /// Whether this VM holds a container or a root mounted for `cp`.
    fn occupied(&self) -> bool {
        !self.workloads.is_empty() || self.root.is_some()
    }

    fn dispatch(&mut self, req: Request) -> Result<Response, workload::Failure> {
        match req {
            Request::Hello => Ok(Response::Hello {
                agent: env!("CARGO_PKG_VERSION").into(),
                kernel: guest::kernel_release(),
            }),
            Request::Restored { entropy } => {
                if self.occupied() {
                    return Err((
                        ErrorKind::BadRequest,
                        "restored after the container's disks were mounted".into(),
                    ));
                }
                crate::restore::reseed_rng(&entropy.0)
                    .map_err(|e| (ErrorKind::Internal, format!("after the restore: {e}")))?;
                Ok(Response::Ok)
            }
            Request::MountRoot(c) => {
                if self.occupied() {
                    return Err((
                        ErrorKind::BadRequest,
                        "this VM's root is mounted already".into(),
                    ));
                }
                let (root, upper) = workload::mount_root(&c)?;
                self.root = Some(root);
                self.root_upper = Some(upper);
                Ok(Response::Ok)
            }
            Request::Create(c) => {
                // A pod's containers each have a root directory of their own; a VM of one
                // container takes no other.
                let joins_pod = c.root_dir.is_some()
                    && self.workloads.iter().all(|w| w.in_pod)
                    && self.root.is_none();
                if self.occupied() && !joins_pod {
                    return Err((
                        ErrorKind::BadRequest,
                        "a workload already exists in this VM".into(),
                    ));
                }
                if self.workloads.iter().any(|w| w.id == c.id) {
                    return Err((
                        ErrorKind::BadRequest,
                        format!("container {} exists in this VM", c.id),
                    ));
                }
                self.unused_name(&c.id)?;
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
                self.workloads.push(w);
                Ok(Response::Ok)
            }
            Request::Start => self.start(""),
            Request::StartContainer { id } => self.start(&id),
            Request::RemoveContainer { id } => self.remove(&id),
            Request::Unpack { process, dir } => {
                let dir = crate::pod::unpack_dir(&dir)?;
                self.start_copy_at(process, &dir, |root| {
                    crate::copy::copy_in(root, "/", true, true)
                })
            }
            Request::Exec(e) => {
                self.unused_name(&e.process)?;
                match self.workload_named(&e.container)?.exec(&e)? {
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
                if sig == Signal::SIGKILL {
                    kill_command_groups(pid);
                }
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
                keep_owners,
            } => self.start_copy(process, |root| {
                crate::copy::copy_in(root, &path, as_is, keep_owners)
            }),
            Request::CopyOutLayer { process, skipped } => {
                let upper = match (self.workloads.first(), &self.root_upper) {
                    (Some(w), _) => w.upper.clone(),
                    (None, Some(upper)) => upper.clone(),
                    (None, None) => {
                        return Err((ErrorKind::NotFound, "no workload in this VM".into()))
                    }
                };
                self.start_copy(process, |_| crate::copy::copy_layer(upper, skipped))
            }
            Request::Resize {
                process,
                rows,
                cols,
            } => {
                let tty = if let Some(w) = self.workloads.iter().find(|w| w.id == process) {
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
                // Thawed while a copy works in the root: it thaws when the copy ends.
                if frozen || self.copies_in_root.is_empty() {
                    self.workload()?
                        .cgroup
                        .set_frozen(frozen)
                        .map_err(|e| (ErrorKind::Isolation, e.to_string()))?;
                }
                self.paused = frozen;
                Ok(Response::Ok)
            }
            Request::Shutdown => {
                for w in &self.workloads {
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

    /// Releases container `id`'s init (an empty `id`: the first container's). An execve
    /// failure is its exit, with the message on its stderr.
    fn start(&mut self, id: &str) -> Result<Response, workload::Failure> {
        let w = match id {
            "" => self.workloads.first_mut(),
            id => self.workloads.iter_mut().find(|w| w.id == id),
        }
        .ok_or((ErrorKind::BadRequest, "start before create".to_string()))?;
        if let Some((code, msg)) = w.start()? {
            let name = w.id.clone();
            self.failed_to_exec(&name, code, &msg);
        }
        Ok(Response::Ok)
    }

    /// Removes pod container `id` (never the pod's first, whose end is the VM's): its
    /// processes killed with its cgroup, its root and its bind sources' copies deleted.
    fn remove(&mut self, id: &str) -> Result<Response, workload::Failure> {
        let at = self
            .workloads
            .iter()
            .position(|w| w.id == id && w.in_pod)
            .filter(|at| *at > 0)
            .ok_or_else(|| {
                (
                    ErrorKind::NotFound,
                    format!("no pod container {id} to remove"),
                )
            })?;
        let w = self.workloads.remove(at);
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(w.pid), Signal::SIGKILL);
        let _ = w.cgroup.destroy();
        self.procs.retain(|p| p.name != id);
        crate::pod::remove_roots(id);
        Ok(Response::Ok)
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
        let root = match (self.workloads.first(), &self.root) {
            (Some(w), _) => crate::copy::Root::Workload(w.pid),
            (None, Some(dir)) => crate::copy::Root::Mounted(dir),
            (None, None) => return Err((ErrorKind::NotFound, "no workload in this VM".into())),
        };
        let in_workload = matches!(root, crate::copy::Root::Workload(_));
        if in_workload && self.copies_in_root.is_empty() && !self.paused {
            self.workload()?
                .cgroup
                .set_frozen(true)
                .map_err(|e| (ErrorKind::Isolation, format!("freezing for the copy: {e}")))?;
        }
        let copy = match start(root) {
            Ok(copy) => copy,
            Err(e) => {
                self.thaw_after_copy(None);
                return Err((ErrorKind::Internal, e.to_string()));
            }
        };
        if in_workload {
            self.copies_in_root.push(name.clone());
        }
        self.follow_copy(name, copy);
        Ok(Response::Ok)
    }

    /// Starts a copy process in directory `dir` (a pod container's root being unpacked),
    /// followed as [`Agent::start_copy`]'s.
    fn start_copy_at(
        &mut self,
        name: String,
        dir: &std::path::Path,
        start: impl FnOnce(
            crate::copy::Root,
        ) -> Result<crate::copy::CopyProcess, crate::copy::CopyError>,
    ) -> Result<Response, workload::Failure> {
        self.unused_name(&name)?;
        let copy = start(crate::copy::Root::Mounted(dir))
            .map_err(|e| (ErrorKind::Internal, e.to_string()))?;
        self.follow_copy(name, copy);
        Ok(Response::Ok)
    }

    fn follow_copy(&mut self, name: String, copy: crate::copy::CopyProcess) {
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
    }

    /// Takes `ended` (a copy process that exited, if it was one in the workload's root) off
    /// the list; the workload thaws once none is left, unless the host paused it.
    fn thaw_after_copy(&mut self, ended: Option<&str>) {
        if let Some(name) = ended {
            self.copies_in_root.retain(|c| c != name);
        }
        if self.copies_in_root.is_empty() && !self.paused {
            if let Some(w) = self.workloads.first() {
                let _ = w.cgroup.set_frozen(false);
            }
        }
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
        if let Some(w) = self.workloads.first() {
            let c = w.cgroup.stats();
            s.cpu_ns = c.cpu_ns;
            s.cpu_user_ns = c.cpu_user_ns;
            s.cpu_kernel_ns = c.cpu_kernel_ns;
            s.memory_usage = c.memory_usage.saturating_sub(c.memory_inactive_file);
            s.memory_limit = c.memory_limit;
            s.pids = c.pids;
            (s.block_read, s.block_write) = disks::bytes_moved(std::path::Path::new("/sys/block"));
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
                .workloads
                .iter()
                .any(|w| w.pid == pid && w.cgroup.oom_killed());
            let mut ended = None;
            if let Some(p) = self
                .procs
                .iter_mut()
                .find(|p| p.pid == pid && p.exited.is_none())
            {
                p.exited = Some((code, oom, Instant::now()));
                ended = Some(p.name.clone());
            }
            if let Some(name) = ended.filter(|n| self.copies_in_root.contains(n)) {
                self.thaw_after_copy(Some(&name));
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_parent_is_read_past_a_command_holding_parentheses() {
        assert_eq!(super::parent_in_stat("41 (sleep) S 40 41 1 0"), Some(40));
        assert_eq!(super::parent_in_stat("7 (a) b) (c) R 3 7 7"), Some(3));
        assert_eq!(super::parent_in_stat("garbage"), None);
        let me = std::process::id() as i32;
        let child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(super::children_of(me).contains(&(child.id() as i32)));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = { child }.wait();
    }

    use super::*;
    use capsa_core::protocol::Envelope;
    use std::os::unix::net::UnixStream;

    /// An agent with no workload whose channel is one end of a socket pair; the other end
    /// is the host's.
    fn agent() -> (Agent, UnixStream) {
        let (ours, host) = UnixStream::pair().unwrap();
        let agent = Agent {
            chan: File::from(std::os::fd::OwnedFd::from(ours)),
            workloads: Vec::new(),
            root: None,
            root_upper: None,
            procs: Vec::new(),
            paused: false,
            copies_in_root: Vec::new(),
        };
        (agent, host)
    }

    /// Sends `req` as the host would and returns what the agent answered, and whether it
    /// keeps serving.
    fn ask(agent: &mut Agent, host: &mut UnixStream, id: u64, req: Request) -> (Envelope, bool) {
        protocol::write_frame(host, id, Message::Request(req)).unwrap();
        let more = agent.handle_request().unwrap();
        (protocol::read_frame(host).unwrap(), more)
    }

    /// The error an answer carries.
    fn error_of(env: Envelope) -> (ErrorKind, String) {
        match env.message {
            Message::Response(Response::Error { kind, message }) => (kind, message),
            other => panic!("not an error: {other:?}"),
        }
    }

    /// A followed process whose stdout is a pipe holding `output` (its writer closed).
    fn finished_proc(name: &str, output: &[u8], code: i32) -> Proc {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        File::from(w).write_all(output).unwrap();
        Proc {
            name: name.into(),
            pid: 0,
            stdout: Some(File::from(r)),
            stderr: None,
            stdin: None,
            tty: None,
            // Exited "now" for as long as the test runs: the grace time never ends on its own.
            exited: Some((code, false, Instant::now() + Duration::from_secs(3600))),
            reported: false,
        }
    }

    #[test]
    fn each_answer_carries_its_request_id_and_hello_names_the_agent() {
        let (mut agent, mut host) = agent();
        let (env, more) = ask(&mut agent, &mut host, 41, Request::Hello);
        assert!(more);
        assert_eq!(env.id, 41);
        match env.message {
            Message::Response(Response::Hello { agent, kernel }) => {
                assert_eq!(agent, env!("CARGO_PKG_VERSION"));
                assert!(!kernel.is_empty());
            }
            other => panic!("{other:?}"),
        }
        let (env, _) = ask(&mut agent, &mut host, 42, Request::Stats);
        assert_eq!(env.id, 42);
        match env.message {
            // No workload: the guest's memory only.
            Message::Response(Response::Stats(s)) => {
                assert!(s.guest_memory_total > 0);
                assert_eq!((s.cpu_ns, s.pids), (0, 0));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn what_is_not_a_request_or_not_valid_now_is_refused_by_kind() {
        let (mut agent, mut host) = agent();
        let event = Message::Event(Event::Exited {
            process: "x".into(),
            code: 0,
            oom_killed: false,
        });
        protocol::write_frame(&mut host, 7, event).unwrap();
        assert!(agent.handle_request().unwrap());
        let env = protocol::read_frame(&mut host).unwrap();
        assert_eq!(env.id, 7);
        assert_eq!(
            error_of(env),
            (ErrorKind::BadRequest, "expected a request".into())
        );
        let cases = [
            (Request::Start, ErrorKind::BadRequest, "start before create"),
            (Request::Top, ErrorKind::NotFound, "no workload in this VM"),
            (
                Request::Freeze { frozen: true },
                ErrorKind::NotFound,
                "no workload in this VM",
            ),
            (
                Request::CopyOut {
                    process: "cp1".into(),
                    path: "/etc".into(),
                },
                ErrorKind::NotFound,
                "no workload in this VM",
            ),
            (
                Request::Signal {
                    process: "ghost".into(),
                    signal: 9,
                },
                ErrorKind::NotFound,
                "no running process ghost",
            ),
            (
                Request::Input {
                    process: "ghost".into(),
                    data: Bytes(b"x".to_vec()),
                },
                ErrorKind::NotFound,
                "no process ghost",
            ),
            (
                Request::Attach { stdin: true },
                ErrorKind::BadRequest,
                "attach is served by the VM's monitor, not the agent",
            ),
        ];
        for (i, (req, kind, message)) in cases.into_iter().enumerate() {
            let (env, more) = ask(&mut agent, &mut host, i as u64 + 1, req);
            assert!(more);
            assert_eq!(error_of(env), (kind, message.to_string()));
        }
    }

    #[test]
    fn shutdown_is_answered_then_the_loop_ends() {
        let (mut agent, mut host) = agent();
        let (env, more) = ask(&mut agent, &mut host, 3, Request::Shutdown);
        assert_eq!(env.message, Message::Response(Response::Ok));
        assert!(!more);
    }

    #[test]
    fn a_host_of_another_version_or_an_oversized_frame_or_a_closed_channel_stops_serving() {
        let (mut agent, mut host) = agent();
        let other = serde_json::to_vec(&Envelope {
            version: protocol::PROTOCOL_VERSION + 1,
            id: 1,
            message: Message::Request(Request::Hello),
            host_time_ns: None,
        })
        .unwrap();
        host.write_all(&(other.len() as u32).to_be_bytes()).unwrap();
        host.write_all(&other).unwrap();
        assert!(matches!(
            agent.handle_request(),
            Err(ProtocolError::Version { .. })
        ));
        host.write_all(&u32::MAX.to_be_bytes()).unwrap();
        assert!(matches!(
            agent.handle_request(),
            Err(ProtocolError::TooLarge(_))
        ));
        drop(host);
        assert!(matches!(agent.handle_request(), Err(ProtocolError::Closed)));
    }

    #[test]
    fn output_is_forwarded_and_the_exit_reported_once_after_it() {
        let (mut agent, mut host) = agent();
        agent.procs.push(finished_proc("e1", b"hello", 3));
        // Output still unread: the exit waits for it.
        agent.report_exits().unwrap();
        agent.forward(0, Stream::Stdout).unwrap();
        let env = protocol::read_frame(&mut host).unwrap();
        assert_eq!(
            env.message,
            Message::Event(Event::Output {
                process: "e1".into(),
                stream: Stream::Stdout,
                data: Bytes(b"hello".to_vec()),
            })
        );
        agent.forward(0, Stream::Stdout).unwrap(); // end of file: drained
        agent.report_exits().unwrap();
        agent.report_exits().unwrap();
        let env = protocol::read_frame(&mut host).unwrap();
        assert_eq!(
            env.message,
            Message::Event(Event::Exited {
                process: "e1".into(),
                code: 3,
                oom_killed: false,
            })
        );
        // Reported once: the next frame is the answer to the next request.
        let (env, _) = ask(&mut agent, &mut host, 9, Request::Hello);
        assert_eq!(env.id, 9);
    }

    #[test]
    fn an_exec_that_failed_sends_its_message_on_stderr_and_its_code_as_the_exit() {
        let (mut agent, mut host) = agent();
        agent.procs.push(finished_proc("e2", b"", 0));
        agent.procs[0].exited = None;
        agent.failed_to_exec(
            "e2",
            127,
            "exec \"nope\": executable file not found in $PATH",
        );
        let env = protocol::read_frame(&mut host).unwrap();
        assert_eq!(
            env.message,
            Message::Event(Event::Output {
                process: "e2".into(),
                stream: Stream::Stderr,
                data: Bytes(b"exec \"nope\": executable file not found in $PATH\n".to_vec()),
            })
        );
        agent.report_exits().unwrap();
        let env = protocol::read_frame(&mut host).unwrap();
        assert!(matches!(
            env.message,
            Message::Event(Event::Exited { code: 127, .. })
        ));
        // Its name stays taken.
        assert_eq!(
            agent.unused_name("e2"),
            Err((ErrorKind::BadRequest, "process e2 exists".into()))
        );
        assert!(agent.unused_name("e3").is_ok());
    }
}
