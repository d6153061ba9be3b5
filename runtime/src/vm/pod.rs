//! A pod's VM, as Kata runs pods: the pod's first container (CRI's sandbox, or a lone
//! container of `ctr run`) boots one VM, and every other container of the pod is created
//! in that same guest through its agent, each with a root of its own, sharing the guest's
//! network (the pod's, handed over by [`super::pod_net`]).
//!
//! The keeper ([`run_keeper`]) is the process that holds the VM: it boots it in its jail,
//! creates the first container, then serves the pod's control socket until that container
//! exits, and takes the VM down with it (every other container of the pod then ends: its
//! follower sees the socket close). Other containers and their execs are clients of the
//! socket ([`unpack`], [`create`], [`start`], [`signal`], [`exec`]), each followed by a
//! process of its own on the host ([`follow`]) whose exit status is the container's.
//!
//! A container's root and the host files its bind mounts name are copied into the guest
//! (a tar stream unpacked on the pod's disk) when it is created: the guest never reads
//! the host's file systems, and later changes on the host are not seen inside.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::agent::AgentClient;
use super::boot::{greet, start_engine, Booted, EngineLaunch, REQUEST_TIMEOUT};
use super::control_server::{bind_control, Clients};
use super::engine::Disk;
use super::launch::VmFiles;
use super::protocol::{
    self, Bytes, CreateRequest, Event, ExecRequest, GuestNetwork, Message, Request, Response,
    Stream, COPY_CHUNK,
};
use super::relay::{block_signals, relay_until_exit, Relay, Sink};
use super::{artifacts, disks, engine, pod_net, template, VmError};
use crate::linux::cgroups::CgroupPaths;
use crate::root::StateRoot;

/// The exit status a pod container reports when its VM stopped under it (as if killed).
pub const VM_GONE_STATUS: i32 = 137;

/// What booting a pod's VM takes.
pub struct PodLaunch<'a> {
    /// Where the guest kernel, the initramfs and the blank disk are kept.
    pub root: &'a StateRoot,
    /// The pod's name on the host: its first container's ID.
    pub id: String,
    /// What names its control socket ([`control_name`]): the runtime root and the ID, so
    /// pods of two callers with the same ID never share one.
    pub key: String,
    /// The VM's files: its logs, the pod's disk, the engine's record.
    pub dir: PathBuf,
    /// The engine's cgroup (the first container's).
    pub cgroup: CgroupPaths,
    /// The pod's network namespace (its eth0 goes to the guest); None: no network.
    pub netns: Option<PathBuf>,
    pub mem_mib: u64,
    pub vcpus: u32,
}

/// A host tree (or file) copied into the guest before a container is created: its root,
/// or the source of one of its bind mounts, unpacked under [`protocol::POD_ROOTS`]`/<dir>`.
#[derive(Debug, Clone)]
pub struct Upload {
    pub dir: String,
    pub source: PathBuf,
    /// The name the source takes inside `<dir>/rootfs` ("." for a tree's content).
    pub name: PathBuf,
}

/// The control socket's name (under [`super::control_server::SOCKET_DIR`]) of the pod
/// whose key is `key`: short, whatever the key's length (a Unix socket path holds 108
/// bytes). The pod's client functions take that key too.
pub fn control_name(key: &str) -> String {
    use sha2::Digest;
    format!(
        "pod-{}",
        &hex::encode(sha2::Sha256::digest(key.as_bytes()))[..32]
    )
}

/// Boots the pod's VM, creates its first container (`first`, with its uploads), says so
/// through `on_created` (the container waits for [`start`]), then serves the pod until that
/// container exits; returns its exit status. Whatever fails before `on_created` is given to
/// it; later, the VM's end is the status [`VM_GONE_STATUS`].
pub fn run_keeper(
    l: PodLaunch,
    mut first: CreateRequest,
    uploads: &[Upload],
    on_created: impl FnOnce(Result<(), VmError>),
) -> i32 {
    let signals = match block_signals(false) {
        Ok(s) => s,
        Err(e) => {
            on_created(Err(VmError::Io(e.to_string())));
            return 1;
        }
    };
    let (mut vm, network) = match boot_pod(&l) {
        Ok(booted) => booted,
        Err(e) => {
            on_created(Err(e));
            return 1;
        }
    };
    first.network = network;
    let handed_eth0 = first.network.is_some();
    let prepared = bind_control(&control_name(&l.key)).and_then(|control| {
        for (i, up) in uploads.iter().enumerate() {
            unpack_direct(&mut vm.agent, &format!("unpack-first-{i}"), up)?;
        }
        let id = first.id.clone();
        vm.agent
            .call(Request::Create(Box::new(first)), REQUEST_TIMEOUT)?;
        // Its stdin is not relayed: empty, as a sandbox's is.
        vm.agent
            .call(Request::CloseInput { process: id }, REQUEST_TIMEOUT)?;
        Ok(control)
    });
    let control = match prepared {
        Ok(control) => control,
        Err(e) => {
            vm.shut_down();
            if handed_eth0 {
                pod_net::release_eth0();
            }
            let _ = std::fs::remove_file(super::control::path(&control_name(&l.key)));
            on_created(Err(e));
            return 1;
        }
    };
    on_created(Ok(()));
    let exit = match Clients::for_pod(&l.id) {
        Ok(clients) => {
            let mut sink = Sink::Stdio;
            let mut relay = Relay {
                clients,
                process: l.id.clone(),
                sink: &mut sink,
            };
            relay_until_exit(&mut vm, &mut relay, &control, None, &signals)
        }
        Err(e) => Err(e),
    };
    vm.shut_down();
    if handed_eth0 {
        pod_net::release_eth0();
    }
    let _ = std::fs::remove_file(super::control::path(&control_name(&l.key)));
    let _ = std::fs::remove_dir_all(&l.dir);
    match exit {
        Ok((code, _)) => code,
        Err(e) => {
            tracing::warn!(pod = %l.id, %e, "the pod's VM stopped");
            VM_GONE_STATUS
        }
    }
}

/// Removes what a keeper killed before its end left of pod `key` on the host: its control
/// socket (its jail's cgroup is the record's, removed with it).
pub fn forget(key: &str) {
    let _ = std::fs::remove_file(super::control::path(&control_name(key)));
}

/// The VM template a pod's VM is restored from (built by the first pod that needs it, as
/// `capsa run` builds it), with this VM's RAM; None boots cold: templates off, no QEMU, or
/// a template that cannot be had (why goes to the log).
fn template_for(
    l: &PodLaunch,
    engine: &dyn engine::Engine,
    guest: &artifacts::GuestArtifacts,
    dir: &Path,
) -> Option<(template::Sound, template::CloneRam)> {
    let qemu = engine.qemu().filter(|_| template::enabled())?;
    if let Err(e) = template::ensure(l.root, qemu, guest, l.mem_mib, l.vcpus) {
        tracing::info!(%e, "no VM template for the pod: cold boot");
        return None;
    }
    let sound = template::usable(l.root, qemu, guest, l.mem_mib, l.vcpus)
        .inspect_err(|why| tracing::info!(%why, "no VM template for the pod: cold boot"))
        .ok()?;
    let ram = template::CloneRam::make(&sound, &dir.join("ram"))
        .inspect_err(|e| tracing::info!(%e, "the VM template's RAM: cold boot"))
        .ok()?;
    Some((sound, ram))
}

/// The VM booted in its jail (restored from the VM template when there is one) with the
/// pod's disk and, when the pod has a network, its eth0 (whose configuration the first
/// container's create carries to the guest).
fn boot_pod(l: &PodLaunch) -> Result<(Booted, Option<GuestNetwork>), VmError> {
    let (engine, _) = engine::select(None)?;
    let guest = artifacts::locate(l.root)?;
    // Root's alone, the pods' folder and this pod's: the pod's disk holds its containers'
    // roots and the copies of their volumes (secrets among them). The state's folder
    // itself is the operator's choice, left as it is.
    for dir in l
        .dir
        .ancestors()
        .take(2)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        super::jail::private_dir(dir)?;
    }
    let files = VmFiles::at(l.dir.clone());
    let disk = files.dir.join("pod.ext4");
    disks::ensure_writable_disk(l.root, &disk)?;
    let lock = super::jail::try_lock(&files.disks_lock())
        .map_err(|e| VmError::Io(format!("{}: {e}", files.disks_lock().display())))?
        .ok_or_else(|| VmError::Io(format!("pod {}: its VM runs already", l.id)))?;
    let template = template_for(l, engine.as_ref(), &guest, &files.dir);
    let nic = match &l.netns {
        Some(path) => {
            pod_net::enter(path)?;
            // A restored engine keeps the template's device, which has no vnet header.
            pod_net::take_over_eth0(template.is_none())?
        }
        None => None,
    };
    let network = nic.as_ref().map(|n| n.guest.clone());
    let booted = start_engine(EngineLaunch {
        engine: engine.as_ref(),
        guest: &guest,
        files: &files,
        vm_name: format!("pod {}", crate::container::id::short(&l.id)),
        disks: vec![Disk {
            path: disk,
            serial: "pod".into(),
            read_only: false,
        }],
        template,
        nic: nic.map(|n| (n.tap, n.mac)),
        mem_mib: l.mem_mib,
        vcpus: l.vcpus,
        cpu: None,
        cgroup: l.cgroup.clone(),
        disks_lock: lock,
    })
    .and_then(|(booted, restore, spawned)| greet(booted, restore.as_ref(), spawned));
    match booted {
        Ok(booted) => Ok((booted, network)),
        Err(e) => {
            if network.is_some() {
                pod_net::release_eth0();
            }
            Err(e)
        }
    }
}

/// Unpacks `up` through the keeper's own agent connection.
fn unpack_direct(agent: &mut AgentClient, process: &str, up: &Upload) -> Result<(), VmError> {
    agent.call(
        Request::Unpack {
            process: process.to_string(),
            dir: up.dir.clone(),
        },
        REQUEST_TIMEOUT,
    )?;
    let mut input = AgentInput { agent, process };
    let written = capsa_core::tar_copy::write_tar(&up.source, &up.name, &mut input);
    let closed = agent.call(
        Request::CloseInput {
            process: process.to_string(),
        },
        REQUEST_TIMEOUT,
    );
    written.map_err(|e| VmError::Io(format!("reading {}: {e}", up.source.display())))?;
    closed?;
    let mut why = Vec::new();
    loop {
        match agent.next_event(REQUEST_TIMEOUT)? {
            Some(Event::Output {
                process: p, data, ..
            }) if p == process => super::control::keep_reason(&mut why, &data.0),
            Some(Event::Exited {
                process: p, code, ..
            }) if p == process => {
                return unpacked(up, code, &why);
            }
            Some(_) => {}
            None => return Err(VmError::AgentTimeout(REQUEST_TIMEOUT)),
        }
    }
}

fn unpacked(up: &Upload, code: i32, why: &[u8]) -> Result<(), VmError> {
    if code == 0 {
        return Ok(());
    }
    Err(VmError::Agent(format!(
        "copying {} into the pod's VM: {}",
        up.source.display(),
        super::agent::guest_text(String::from_utf8_lossy(why).trim())
    )))
}

/// A tar stream written as `Input` to a process of the agent's.
struct AgentInput<'a> {
    agent: &'a mut AgentClient,
    process: &'a str,
}

impl Write for AgentInput<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(COPY_CHUNK);
        let input = Request::Input {
            process: self.process.to_string(),
            data: Bytes(buf[..n].to_vec()),
        };
        self.agent
            .call(input, REQUEST_TIMEOUT)
            .map_err(std::io::Error::other)?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A connection to pod `pod`'s keeper.
fn connect(pod: &str) -> Result<UnixStream, VmError> {
    let path = super::control::path(&control_name(pod));
    UnixStream::connect(&path)
        .map_err(|e| VmError::Io(format!("pod {pod}: its VM is not running ({e})")))
}

/// Sends `request` on a new connection to pod `pod`'s keeper; the connection, once the
/// agent said yes (it then carries the events of the process the request started).
fn ask(pod: &str, request: Request) -> Result<UnixStream, VmError> {
    let mut stream = connect(pod)?;
    // Bounded: a keeper that cannot answer (its loop held) fails the command, not hangs it.
    let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
    let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
    protocol::write_frame(&mut stream, 1, Message::Request(request))
        .map_err(|e| VmError::Io(format!("pod {pod}: {e}")))?;
    match protocol::read_frame(&mut stream)
        .map_err(|e| VmError::Io(format!("pod {pod}: {e}")))?
        .message
    {
        Message::Response(Response::Error { message, .. }) => Err(VmError::Agent(message)),
        Message::Response(_) => {
            // From here on it carries a process's events, for as long as it runs.
            let _ = stream.set_read_timeout(None);
            Ok(stream)
        }
        other => Err(VmError::Agent(format!("{} as an answer", other.kind()))),
    }
}

/// Copies `up` into pod `pod`'s guest.
pub fn unpack(pod: &str, up: &Upload) -> Result<(), VmError> {
    let request = Request::Unpack {
        process: String::new(),
        dir: up.dir.clone(),
    };
    let mut stream = ask(pod, request)?;
    let mut input = FrameInput {
        stream: stream.try_clone().map_err(|e| VmError::Io(e.to_string()))?,
    };
    let written = capsa_core::tar_copy::write_tar(&up.source, &up.name, &mut input);
    let close = Request::CloseInput {
        process: String::new(),
    };
    let _ = protocol::write_frame(&mut stream, 0, Message::Request(close));
    written.map_err(|e| VmError::Io(format!("reading {}: {e}", up.source.display())))?;
    let mut why = Vec::new();
    loop {
        match protocol::read_frame(&mut stream)
            .map_err(|e| VmError::Io(format!("pod {pod}: {e}")))?
            .message
        {
            Message::Event(Event::Output { data, .. }) => {
                super::control::keep_reason(&mut why, &data.0)
            }
            Message::Event(Event::Exited { code, .. }) => return unpacked(up, code, &why),
            other => return Err(VmError::Agent(format!("{} during a copy", other.kind()))),
        }
    }
}

/// A tar stream written as the client's `Input` frames (the keeper names the process).
struct FrameInput {
    stream: UnixStream,
}

impl Write for FrameInput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(COPY_CHUNK);
        let input = Request::Input {
            process: String::new(),
            data: Bytes(buf[..n].to_vec()),
        };
        protocol::write_frame(&mut self.stream, 0, Message::Request(input))
            .map_err(std::io::Error::other)?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Creates a container (its root unpacked already) in pod `pod`'s guest; the connection
/// then carries its output and exit.
pub fn create(pod: &str, request: CreateRequest) -> Result<UnixStream, VmError> {
    ask(pod, Request::Create(Box::new(request)))
}

/// Starts container `id` of pod `pod`.
pub fn start(pod: &str, id: &str) -> Result<(), VmError> {
    ask(pod, Request::StartContainer { id: id.to_string() }).map(drop)
}

/// Removes container `id` from pod `pod`'s guest.
pub fn remove(pod: &str, id: &str) -> Result<(), VmError> {
    ask(pod, Request::RemoveContainer { id: id.to_string() }).map(drop)
}

/// Signals the init of container `id` of pod `pod`.
pub fn signal(pod: &str, id: &str, signal: i32) -> Result<(), VmError> {
    let request = Request::Signal {
        process: id.to_string(),
        signal,
    };
    ask(pod, request).map(drop)
}

/// Starts `request`'s process in pod `pod`'s guest; the connection then carries its output
/// and exit.
pub fn exec(pod: &str, request: ExecRequest) -> Result<UnixStream, VmError> {
    ask(pod, Request::Exec(Box::new(request)))
}

/// Where a follower relays its process's streams: this process's own stdio (pipes a
/// caller handed down), or the slave of a host pty whose master went to the caller's
/// console socket (the process then has a pty in the guest, whose size follows this one).
pub enum FollowerIo {
    Stdio(Option<std::fs::File>),
    Terminal(std::os::fd::OwnedFd),
}

/// Follows a pod container or exec on `stream` until it exits: its output and input
/// through `io`. Returns its exit status, or [`VM_GONE_STATUS`] when the pod's VM went
/// away first.
pub fn follow(stream: UnixStream, io: FollowerIo) -> i32 {
    match io {
        FollowerIo::Stdio(stdin) => {
            forward_signals(&stream, None);
            relay(stream, stdin, None)
        }
        FollowerIo::Terminal(slave) => {
            let terminal = std::fs::File::from(slave);
            // The stdio this follower inherited is the caller's capture of the runtime
            // command's output (the process's streams are the terminal): held here, the
            // caller would wait for its end forever.
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                for fd in (0..3).filter(|fd| *fd != terminal.as_raw_fd()) {
                    let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
                }
            }
            // The slave is this follower's controlling terminal: the caller's resize of
            // the master comes as SIGWINCH, and its size goes to the guest's pty.
            let _ = nix::unistd::setsid();
            // SAFETY: TIOCSCTTY on an open terminal descriptor, no pointer argument.
            unsafe { libc::ioctl(terminal.as_raw_fd(), libc::TIOCSCTTY, 0) };
            let sizes = terminal.try_clone().ok();
            forward_signals(&stream, sizes);
            if let Some(size) = window_size(&terminal) {
                let mut to = stream.try_clone().ok();
                if let Some(to) = to.as_mut() {
                    let _ = protocol::write_frame(to, 0, Message::Request(size));
                }
            }
            relay(stream, terminal.try_clone().ok(), Some(terminal))
        }
    }
}

/// The terminal's window size as the guest's `Resize`.
fn window_size(terminal: &std::fs::File) -> Option<Request> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct it is given.
    let rc = unsafe { libc::ioctl(terminal.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_row > 0 && size.ws_col > 0).then(|| Request::Resize {
        process: String::new(),
        rows: size.ws_row,
        cols: size.ws_col,
    })
}

/// The follower's relay: `stdin` to the process, its output to this process's stdout and
/// stderr, or with a `terminal` to it.
fn relay(
    mut stream: UnixStream,
    stdin: Option<std::fs::File>,
    mut terminal: Option<std::fs::File>,
) -> i32 {
    if let (Some(mut stdin), Ok(mut to)) = (stdin, stream.try_clone()) {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; COPY_CHUNK];
            loop {
                let request = match stdin.read(&mut buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Ok(0) | Err(_) => Request::CloseInput {
                        process: String::new(),
                    },
                    Ok(n) => Request::Input {
                        process: String::new(),
                        data: Bytes(buf[..n].to_vec()),
                    },
                };
                let last = matches!(request, Request::CloseInput { .. });
                if protocol::write_frame(&mut to, 0, Message::Request(request)).is_err() || last {
                    return;
                }
            }
        });
    }
    loop {
        match protocol::read_frame(&mut stream).map(|e| e.message) {
            Ok(Message::Event(Event::Output {
                stream: s, data, ..
            })) => {
                // A caller that closed its end just loses the output, as with a pipe.
                let _ = match (s, terminal.as_mut()) {
                    (_, Some(t)) => t.write_all(&data.0),
                    (Stream::Stdout, None) => std::io::stdout().write_all(&data.0),
                    (Stream::Stderr, None) => std::io::stderr().write_all(&data.0),
                };
            }
            Ok(Message::Event(Event::Exited { code, .. })) => return code,
            Ok(_) => {}
            Err(_) => return VM_GONE_STATUS,
        }
    }
}

/// The signals a follower passes on to its process in the guest (a shim's `kill` of the
/// follower's PID), on a thread of its own; with a `terminal`, its size at each SIGWINCH.
fn forward_signals(stream: &UnixStream, terminal: Option<std::fs::File>) {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ] {
        set.add(s);
    }
    let Ok(mut to) = stream.try_clone() else {
        return;
    };
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        while let Ok(signal) = set.wait() {
            let request = match (signal, &terminal) {
                (Signal::SIGWINCH, Some(t)) => match window_size(t) {
                    Some(size) => size,
                    None => continue,
                },
                (Signal::SIGWINCH, None) => continue,
                _ => Request::Signal {
                    process: String::new(),
                    signal: signal as i32,
                },
            };
            if protocol::write_frame(&mut to, 0, Message::Request(request)).is_err() {
                return;
            }
        }
    });
}

/// Whether `path` is a file the pod copies as such (not a tree).
pub fn is_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| !m.is_dir())
}
