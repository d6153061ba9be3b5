//! The monitor: the process that waits for a container's init, records its exit (code,
//! time, OOM kill), removes its cgroup, and for detached containers holds its output and
//! writes it to `ctr.log` (see [`logfile`]).
//! For a foreground `run` the CLI itself plays this part.

use super::create::{self, Prepared};
use super::state::Status;
use super::store::ContainerStore;
use super::ContainerError;
use super::{logfile, restart};
use crate::linux::cgroups::sibling::Sibling;
use crate::linux::cgroups::CgroupManager;
use crate::linux::process::stdio::{self, Pipes};
use crate::linux::process::InitStdio;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::SystemTime;

/// Waits for the init `pid` (our child) and returns its exit code as a shell reports it
/// (128 + signal when killed).
pub fn wait_child(pid: i32) -> i32 {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Err(nix::errno::Errno::EINTR) | Ok(_) => continue,
            Err(_) => return super::state::LOST_EXIT_CODE,
        }
    }
}

/// Records the exit of container `id` and removes its cgroup (after reading the OOM count).
/// Returns true if the container was removed meanwhile.
pub fn record_exit(
    store: &ContainerStore,
    id: &str,
    code: i32,
    cgroup: &dyn CgroupManager,
) -> Result<bool, ContainerError> {
    let oom = cgroup.oom_killed();
    let _ = cgroup.destroy();
    tracing::debug!(id, "cgroup removed");
    if let Ok(state) = store.load(id) {
        super::network::disconnect(store, &state);
    }
    let now = crate::timefmt::rfc3339(SystemTime::now());
    let updated = store.update(id, |s| {
        s.status = Status::Exited;
        // Restarting from this very update when the policy will run it again (as dockerd's
        // state goes straight to restarting): `rm` without -f never meets it as a plain
        // exited container in between (the restart loop decides again, after its wait).
        s.restarting = s
            .restart_policy
            .should_restart(code, s.restart_count, s.stopped_by_user);
        s.paused = false;
        s.exit_code = Some(code);
        s.oom_killed = oom;
        s.finished_at = Some(now);
        if s.started_at.is_none() {
            s.error
                .get_or_insert_with(|| "exited before it was started".into());
        }
    })?;
    if let Some(s) = &updated {
        let code = code.to_string();
        crate::events::container(store.root(), "die", s, &[("exitCode", &code)]);
    }
    for e in updated.iter().flat_map(|s| s.endpoints()) {
        super::network::refresh_hosts(store, &e.network);
    }
    Ok(updated.is_none())
}

/// Bytes read from the container's output at once: a pipe's whole default capacity, so a
/// burst is taken in one read and logged with one write (see [`logfile::Writer`]).
const READ_CHUNK: usize = 64 * 1024;

/// Copies the container's stdout and stderr pipes into the log until both close (the
/// container's last process is gone). A read that fills the buffer is followed by another
/// at once: a pipe read returns what the pipe holds, so only a short read means it is
/// drained and the next wait belongs to poll.
fn relay(out: OwnedFd, err: OwnedFd, log: &mut logfile::Writer) {
    // Non-blocking reads (the read ends are the monitor's own file descriptions): the read
    // after a full one must not wait on one stream while the other fills.
    for fd in [&out, &err] {
        let _ = nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
    }
    let mut open = [Some(out), Some(err)];
    let mut buf = vec![0u8; READ_CHUNK];
    while open.iter().any(Option::is_some) {
        // A closed stream stays in the set as -1, which poll skips.
        let mut pfds = open.each_ref().map(|fd| libc::pollfd {
            fd: fd.as_ref().map_or(-1, |fd| fd.as_raw_fd()),
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: `pfds` is a live array of pollfd of the length given.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
        if rc < 0 {
            continue; // EINTR
        }
        for (stream, p) in pfds.iter().enumerate() {
            if p.fd < 0 || p.revents == 0 {
                continue;
            }
            loop {
                match nix::unistd::read(p.fd, &mut buf) {
                    Ok(0) | Err(nix::errno::Errno::EBADF) => {
                        log.flush(stream);
                        open[stream] = None;
                        break;
                    }
                    Ok(n) => {
                        log.write(stream, &buf[..n]);
                        if n < buf.len() {
                            break;
                        }
                    }
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => break, // EAGAIN: drained
                }
            }
        }
    }
}

/// Body of a detached container's monitor: clone the init with its output on pipes, tell
/// the CLI (through `report`) whether creation worked, then log output until the
/// container ends and record its exit. Never returns.
pub fn run_detached(store: &ContainerStore, mut prepared: Prepared, report: OwnedFd) -> ! {
    let code = match monitor(store, &mut prepared, report) {
        Ok(()) => 0,
        Err(e) => {
            // The monitor has no terminal: its last words go beside the container's log.
            let _ = crate::fsutil::write_private(
                &store.dir(&prepared.state.id).dir.join("monitor.err"),
                e.to_string().as_bytes(),
            );
            1
        }
    };
    // SAFETY: ends the forked monitor without unwinding into the CLI's frames.
    unsafe { libc::_exit(code) }
}

fn monitor(
    store: &ContainerStore,
    prepared: &mut Prepared,
    report: OwnedFd,
) -> Result<(), ContainerError> {
    let id = prepared.state.id.clone();
    let mut report = Some(report);
    let last = restart::supervise(store, &id, |again| {
        if let Some(state) = again {
            // Still "restarting" until the new init exists (spawn_init clears it).
            *prepared = restart::prepare_again(store, &state)?;
        }
        let code = run_once(store, prepared, report.take())?;
        let removed = record_exit(store, &id, code, prepared.cgroup.as_ref())?;
        Ok::<_, ContainerError>((!removed).then_some(code))
    })?;
    if last.is_some() && store.load(&id)?.auto_remove {
        let _ = super::delete::remove(store, &id, true);
    }
    Ok(())
}

/// Whether the spec gives the container its own PID namespace (not `--pid host`).
fn has_own_pid_namespace(spec: &oci_spec::runtime::Spec) -> bool {
    crate::linux::namespaces::has(spec, oci_spec::runtime::LinuxNamespaceType::Pid)
}

/// With the host's PID namespace, nothing ends the container's other processes with its
/// init, as the end of a PID namespace does: a thread waits for the init's exit and then
/// kills what is left in the container's cgroup (frozen first, so that nothing forks
/// away meanwhile). Their output pipes then close and the relay ends.
fn end_with_init(pid: i32, cgroup: &crate::linux::cgroups::CgroupPaths) {
    let Ok(pidfd) = crate::linux::sys::pidfd_open(pid) else {
        return;
    };
    let cgroup = cgroup.clone();
    std::thread::spawn(move || {
        let mut p = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `p` is one live pollfd; the pidfd is readable once the init has exited.
        while unsafe { libc::poll(&mut p, 1, -1) } < 0 {}
        let cgroup = crate::linux::cgroups::manager(&cgroup);
        let _ = cgroup.set_frozen(true);
        for left in cgroup.pids() {
            // SAFETY: kill(2) with integers; these are the container's own processes.
            unsafe { libc::kill(left, libc::SIGKILL) };
        }
        let _ = cgroup.set_frozen(false);
    });
}

/// Clones the init with its output on pipes and logs that output until the container's
/// last process is gone; returns the exit code. The first time, `report` tells the CLI that
/// creation worked (the CLI then starts it); a restart is started here.
fn run_once(
    store: &ContainerStore,
    prepared: &mut Prepared,
    report: Option<OwnedFd>,
) -> Result<i32, ContainerError> {
    let id = prepared.state.id.clone();
    let dir = store.dir(&id);
    let io_err = |e: std::io::Error| ContainerError::io(&dir.dir, e);
    let mut log = logfile::Writer::for_driver(
        prepared.state.log_driver,
        &dir.log(),
        prepared.state.log_rotation,
    )
    .map_err(|e| ContainerError::io(&dir.log(), e))?;
    let terminal = prepared
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let output = if terminal {
        let size = prepared
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.console_size())
            .map(|b| (b.height(), b.width()));
        Output::terminal(&dir.dir, size).map_err(io_err)?
    } else if prepared.state.open_stdin {
        Output::fed_pipes(&dir.dir, prepared.state.stdin_once).map_err(io_err)?
    } else if prepared.state.log_driver == logfile::Driver::None {
        // Kept nowhere: the output reaches the clients attached to its socket.
        Output::attached_pipes(&dir.dir).map_err(io_err)?
    } else {
        Output::pipes().map_err(io_err)?
    };
    // The monitor's own cgroup first, its limit once the container exists (creating it is
    // the CLI's wait, not the workload's work).
    let mut bounded = None;
    let spawned = match enter_monitor_cgroup(&prepared.state.cgroup) {
        Ok(cgroup) => {
            bounded = cgroup;
            create::spawn_init(store, prepared, output.stdio())
        }
        Err(e) => {
            create::undo_spawn(store, prepared);
            Err(ContainerError::Setup {
                id: super::id::short(&id).to_string(),
                reason: format!("the monitor's cgroup: {e}"),
            })
        }
    };
    if spawned.is_err() {
        // Gone before the CLI hears of the failure: nothing of the container is left then.
        if let Some(cgroup) = bounded.take() {
            cgroup.leave();
        }
    }
    match report {
        Some(report) => {
            // One line: the init holds a copy of this pipe until it execs, so the CLI cannot
            // wait for end-of-file.
            // The waiting CLI names the container itself.
            let message = match &spawned {
                Ok(_) => "ok\n".to_string(),
                Err(ContainerError::Setup { reason, .. }) => {
                    format!("{}\n", reason.replace('\n', " "))
                }
                Err(e) => format!("{}\n", e.to_string().replace('\n', " ")),
            };
            let _ = nix::unistd::write(&report, message.as_bytes());
        }
        None if spawned.is_ok() => {
            // An exec failure shows in the exit code, recorded like any other.
            let _ = super::start::start(store, &id);
        }
        None => {}
    }
    let (pid, terminal) = spawned?;
    if let Some(cgroup) = &bounded {
        if let Err(e) = cgroup.limit(&monitor_resources(&prepared.spec)) {
            // Fail closed: no output is relayed by a monitor outside the container's limit.
            // SAFETY: kill(2) on our own child; no memory is shared.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = wait_child(pid);
            if let Some(cgroup) = bounded.take() {
                cgroup.leave();
            }
            return Err(ContainerError::Setup {
                id: super::id::short(&id).to_string(),
                reason: format!("the monitor's cgroup: {e}"),
            });
        }
    }
    if !has_own_pid_namespace(&prepared.spec) {
        end_with_init(pid, &prepared.state.cgroup);
    }
    output.relay(terminal, &mut log);
    let _ = std::fs::remove_file(dir.dir.join("attach.sock"));
    let code = wait_child(pid);
    // Recording the exit (and `--rm`) happen outside: the cgroup goes with the run.
    if let Some(cgroup) = bounded {
        cgroup.leave();
    }
    Ok(code)
}

/// Suffix of a monitor's cgroup, beside its container's: `<parent>/<id>-monitor`.
pub const MONITOR_CGROUP_SUFFIX: &str = "-monitor";

/// The CPU quota (and period) of the container's `spec`, None when it has none.
pub fn cpu_limit_of(spec: &oci_spec::runtime::Spec) -> Option<oci_spec::runtime::LinuxCpu> {
    let cpu = spec
        .linux()
        .as_ref()?
        .resources()
        .as_ref()?
        .cpu()
        .as_ref()?;
    let quota = cpu.quota().filter(|q| *q > 0)?;
    let mut limit = oci_spec::runtime::LinuxCpuBuilder::default().quota(quota);
    if let Some(period) = cpu.period() {
        limit = limit.period(period);
    }
    limit.build().ok()
}

/// The limits of a monitor's cgroup: the container's CPU quota ([`cpu_limit_of`]), none
/// when it has none. Logging a container's output costs its monitor CPU in proportion to
/// what the workload writes; bounded like the workload, a flood of output throttles the
/// monitor, and through the full pipe the workload, instead of burning host CPU outside
/// every limit the container was given.
pub fn monitor_resources(spec: &oci_spec::runtime::Spec) -> oci_spec::runtime::LinuxResources {
    let mut resources = oci_spec::runtime::LinuxResources::default();
    resources.set_cpu(cpu_limit_of(spec));
    resources
}

/// Moves this process (a monitor) into its cgroup beside the container's `cgroup`, without
/// limits yet (see [`Sibling::limit`] and [`monitor_resources`]). None when the container
/// has no cgroup recorded.
pub fn enter_monitor_cgroup(
    cgroup: &crate::linux::cgroups::CgroupPaths,
) -> Result<Option<Sibling>, crate::linux::cgroups::CgroupError> {
    Sibling::enter(cgroup, MONITOR_CGROUP_SUFFIX, &Default::default())
}

/// Removes the monitor's cgroup of the container whose cgroup is `cgroup`, killing a
/// monitor still in it (`rm -f`); a monitor removing its own container leaves and removes
/// it itself.
pub fn remove_monitor_cgroup(
    cgroup: &crate::linux::cgroups::CgroupPaths,
) -> Result<(), crate::linux::cgroups::CgroupError> {
    crate::linux::cgroups::sibling::remove(cgroup, MONITOR_CGROUP_SUFFIX)
}

/// Where a container's output goes: two pipes (its stdin empty, or with `-i` a pipe fed
/// from the attach socket), or a pty and its attach socket.
enum Output {
    Pipes(Pipes),
    FedPipes {
        pipes: Pipes,
        listener: std::os::unix::net::UnixListener,
        stdin_once: bool,
    },
    /// A terminal the init opens on the container's devpts, its master handed back.
    Terminal {
        rows: u16,
        cols: u16,
        listener: std::os::unix::net::UnixListener,
    },
}

impl Output {
    fn pipes() -> std::io::Result<Output> {
        Ok(Output::Pipes(Pipes::new(
            stdio::Input::Closed,
            stdio::Output::Separate,
        )?))
    }

    /// Pipes with a stdin the attach socket's clients feed (`-i` without a terminal),
    /// the socket made before the init so that no output is missed.
    fn fed_pipes(dir: &std::path::Path, stdin_once: bool) -> std::io::Result<Output> {
        let pipes = Pipes::new(stdio::Input::Fed, stdio::Output::Separate)?;
        let listener = super::attach::listen(dir)?;
        Ok(Output::FedPipes {
            pipes,
            listener,
            stdin_once,
        })
    }

    /// Pipes whose output goes to the attach socket's clients, stdin closed (`--log-driver
    /// none` without `-i`: no log to follow).
    fn attached_pipes(dir: &std::path::Path) -> std::io::Result<Output> {
        let pipes = Pipes::new(stdio::Input::Closed, stdio::Output::Separate)?;
        let listener = super::attach::listen(dir)?;
        Ok(Output::FedPipes {
            pipes,
            listener,
            stdin_once: false,
        })
    }

    /// A terminal (of the spec's console size, else 80x24, until a client says otherwise)
    /// and the attach socket, made before the init so that no output is missed.
    fn terminal(dir: &std::path::Path, size: Option<(u64, u64)>) -> std::io::Result<Output> {
        let fit =
            |n: u64, default: u16| u16::try_from(n).ok().filter(|n| *n > 0).unwrap_or(default);
        let (rows, cols) = size.map_or((24, 80), |(h, w)| (fit(h, 24), fit(w, 80)));
        let listener = super::attach::listen(dir)?;
        Ok(Output::Terminal {
            rows,
            cols,
            listener,
        })
    }

    fn stdio(&self) -> InitStdio<'_> {
        match self {
            Output::Pipes(pipes) | Output::FedPipes { pipes, .. } => {
                InitStdio::Streams(pipes.stdio())
            }
            Output::Terminal { rows, cols, .. } => InitStdio::Terminal {
                rows: *rows,
                cols: *cols,
            },
        }
    }

    /// Relays until the container's last process has closed its side; `terminal` is the
    /// master the init sent with a terminal.
    fn relay(self, terminal: Option<OwnedFd>, log: &mut logfile::Writer) {
        match self {
            Output::Pipes(pipes) => {
                let ours = pipes.into_ours();
                if let (Some(out), Some(err)) = (ours.stdout, ours.stderr) {
                    relay(out, err, log);
                }
            }
            Output::FedPipes {
                pipes,
                listener,
                stdin_once,
            } => {
                let ours = pipes.into_ours();
                if let (Some(out), Some(err)) = (ours.stdout, ours.stderr) {
                    super::fed_relay::relay(out, err, ours.stdin, listener, stdin_once, log);
                }
            }
            Output::Terminal { listener, .. } => {
                if let Some(master) = terminal {
                    relay_terminal(master, listener, log);
                }
            }
        }
    }
}

/// One attached client of a terminal.
struct Client {
    stream: std::os::unix::net::UnixStream,
    frames: capsa_core::protocol::FrameReader,
}

/// Copies the pty's output to the log and every attached client, and clients' input and
/// window sizes to the pty, until the container's processes have all closed the terminal.
///
/// Clients waiting to be accepted are taken before the pty is read: `run -t` and
/// `start -a` connect before the init is released, so the first output of the workload
/// always finds them attached.
fn relay_terminal(
    master: OwnedFd,
    listener: std::os::unix::net::UnixListener,
    log: &mut logfile::Writer,
) {
    let _ = listener.set_nonblocking(true);
    let mut clients: Vec<Client> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut pfds = vec![
            libc::pollfd {
                fd: master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        pfds.extend(clients.iter().map(|c| libc::pollfd {
            fd: c.stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }));
        // SAFETY: `pfds` is a live array of pollfd of the length given.
        if unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) } < 0 {
            continue; // EINTR
        }
        let ready: Vec<bool> = pfds[2..].iter().map(|p| p.revents != 0).collect();
        let mut keep = vec![true; clients.len()];
        for (i, c) in clients.iter_mut().enumerate().filter(|(i, _)| ready[*i]) {
            keep[i] = serve_client_frames(c, &master);
        }
        let mut k = keep.into_iter();
        clients.retain(|_| k.next().unwrap_or(true));
        if pfds[1].revents != 0 {
            accept_clients(&listener, &mut clients);
        }
        if pfds[0].revents != 0 && !copy_terminal_output(&master, &mut buf, log, &mut clients) {
            break; // EIO: no process holds the terminal any more
        }
    }
    log.flush(0);
}

/// Accepts every client waiting on the (non-blocking) attach socket.
fn accept_clients(listener: &std::os::unix::net::UnixListener, clients: &mut Vec<Client>) {
    while let Ok((stream, _)) = listener.accept() {
        let _ = stream.set_nonblocking(false);
        clients.push(Client {
            stream,
            frames: super::session::client_frames(),
        });
    }
}

/// Reads what the pty holds into the log and to every client (dropping those that no
/// longer read). False once no process holds the terminal.
fn copy_terminal_output(
    master: &OwnedFd,
    buf: &mut [u8],
    log: &mut logfile::Writer,
    clients: &mut Vec<Client>,
) -> bool {
    use std::io::Write;
    match nix::unistd::read(master.as_raw_fd(), buf) {
        Ok(n) if n > 0 => {
            log.write(0, &buf[..n]);
            let frame = super::session::output_frame(&buf[..n]);
            clients.retain_mut(|c| c.stream.write_all(&frame).is_ok());
            true
        }
        Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => true,
        _ => false,
    }
}

/// Applies the frames a client sent (input, window size). False when the client is gone
/// or spoke out of turn.
fn serve_client_frames(c: &mut Client, master: &OwnedFd) -> bool {
    use super::session::{client_frame, ClientFrame};
    if c.frames.fill(&mut c.stream).is_err() {
        return false;
    }
    while let Some(envelope) = c.frames.next_frame().transpose() {
        match client_frame(envelope) {
            Ok(ClientFrame::Input(data)) => {
                let _ = nix::unistd::write(master, &data);
            }
            Ok(ClientFrame::Resize(rows, cols)) => {
                let _ = crate::linux::sys::set_window_size(master.as_raw_fd(), rows, cols);
            }
            Ok(ClientFrame::CloseInput) | Ok(ClientFrame::Ignored) => {}
            Err(_) => return false,
        }
    }
    true
}

/// `create` for a detached container: forks the monitor, which outlives this CLI, and
/// returns once the init is created (or with the reason it could not be).
pub fn create_detached(
    store: &ContainerStore,
    prepared: Prepared,
) -> Result<String, ContainerError> {
    let id = prepared.state.id.clone();
    let dir = store.dir(&id).dir;
    let (name, cgroup) = (prepared.state.name.clone(), prepared.state.cgroup.clone());
    let volumes = prepared.state.volumes.clone();
    let answer = fork_monitor(&dir, |report| {
        run_detached(store, prepared, report);
    })
    .inspect_err(|_| {
        let cgroup = crate::linux::cgroups::manager(&cgroup);
        create::discard(store, &id, &name, Some(cgroup.as_ref()));
        let _ = super::volumes::remove_anonymous(store, &volumes);
    })?;
    match answer.as_str() {
        "ok" => Ok(id),
        "" => Err(ContainerError::Setup {
            id,
            reason: "the monitor died during creation".into(),
        }),
        reason => Err(ContainerError::Setup {
            id,
            reason: reason.to_string(),
        }),
    }
}

/// Descriptors of the front end that a monitor it forks must not keep (a fork keeps
/// every descriptor, close-on-exec or not): those the CLI inherited from its caller (a
/// pipe of a shell's or a CI harness's, held by a monitor for the container's life,
/// would keep its reader from ever seeing its end), and `capsa serve`'s engine worker's
/// job socket (the server would wait on it for the container's life).
static FRONT_END_FDS: std::sync::Mutex<Vec<std::os::fd::RawFd>> = std::sync::Mutex::new(Vec::new());

/// Adds descriptors that forked monitors close (before any fork).
pub fn close_in_monitors(fds: impl IntoIterator<Item = std::os::fd::RawFd>) {
    let mut list = FRONT_END_FDS.lock().unwrap_or_else(|e| e.into_inner());
    list.extend(fds);
}

/// The descriptors above stderr this process was started with (call it first thing):
/// its caller's, which no monitor needs.
pub fn inherited_descriptors() -> Vec<std::os::fd::RawFd> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    // The listing's own descriptor is among the entries and is closed by the time the
    // list is used; closing it again in a monitor would close whatever took its number.
    let listing: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    listing
        .into_iter()
        .filter(|fd| nix::fcntl::fcntl(*fd, nix::fcntl::FcntlArg::F_GETFD).is_ok())
        .collect()
}

/// In a forked monitor: closes the front end's descriptors, once (the list is emptied, so
/// a process a monitor forks in turn, such as a healthcheck's prober, does not close
/// whatever has taken those numbers since).
fn close_front_end_fds() {
    let mut list = FRONT_END_FDS.lock().unwrap_or_else(|e| e.into_inner());
    for fd in list.drain(..) {
        // SAFETY: closes a descriptor this process inherited and never uses.
        unsafe { libc::close(fd) };
    }
}

/// Forks a monitor (its own session, stdio on /dev/null, its command line `capsa monitor
/// <short id>`) that runs `body` with the write end
/// of a report pipe and exits; returns the first line the monitor reported ("ok" or the
/// reason it failed; empty if it died first).
pub fn fork_monitor(
    dir: &std::path::Path,
    body: impl FnOnce(OwnedFd),
) -> Result<String, ContainerError> {
    let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| ContainerError::io(dir, e.into()))?;
    // SAFETY: the child runs Rust code after fork, so the caller must be one thread: the
    // CLI is, and `capsa serve` forks monitors only from its single-threaded engine
    // workers (serve/workers.rs), never from the server's own threads.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            // A client or CLI that goes away must cost the monitor a write, not its life.
            crate::linux::sys::set_broken_pipe_kills(false);
            drop(report_r);
            close_front_end_fds();
            if let Err(e) = hide_command_line(dir) {
                // Fail closed: a monitor that shows the CLI's -e values to every user for
                // the container's life is worse than no container.
                let why = format!("the monitor cannot replace its command line: {e}\n");
                let _ = nix::unistd::write(&report_w, why.as_bytes());
                // SAFETY: ends the forked child without running the CLI's exit handlers.
                unsafe { libc::_exit(1) }
            }
            let _ = nix::unistd::setsid();
            leave_the_caller();
            detach_stdio();
            crate::linux::sys::release_free_heap();
            body(report_w);
            std::process::exit(0);
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            // The first child leaves at once (see `leave_the_caller`): reaped here.
            let _ = waitpid(child, None);
        }
        Err(e) => return Err(ContainerError::io(dir, e.into())),
    }
    drop(report_w);
    let mut answer = String::new();
    let _ = std::io::BufRead::read_line(
        &mut std::io::BufReader::new(std::fs::File::from(report_r)),
        &mut answer,
    );
    Ok(answer.trim_end().to_string())
}

/// Forks once more and ends the first child, so that the monitor is nobody's child but
/// init's (or the nearest subreaper's): a long-lived caller such as `capsa serve` would
/// otherwise gather a zombie per container that exits, and could not reap them without
/// taking exit statuses its other waits need.
fn leave_the_caller() {
    // SAFETY: as in `fork_monitor`; the first child only calls _exit.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {}
        // SAFETY: ends the first child without running any exit handler.
        Ok(nix::unistd::ForkResult::Parent { .. }) => unsafe { libc::_exit(0) },
        // No second process: this one carries on as the monitor, still the caller's child.
        Err(_) => {}
    }
}

/// Replaces the argv the monitor inherited from the CLI (every local user can read it in
/// /proc/PID/cmdline, `-e` values included) with `capsa monitor <short id>`, the container
/// named by its folder `dir`.
fn hide_command_line(dir: &std::path::Path) -> std::io::Result<()> {
    let id = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    crate::linux::sys::replace_cmdline(&["capsa", "monitor", super::id::short(id)])
}

/// Points the monitor's own stdio at /dev/null so it holds no terminal of the CLI's.
pub fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
}
