//! One VM container in the foreground: laid out like a container (same record, same OCI spec),
//! its layers as erofs disks and a writable ext4 disk, the engine started, the agent asked to
//! create and start the workload; output relayed until the workload exits; then the VM shut
//! down and the exit recorded (or the container removed with `--rm`).

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::agent::AgentClient;
use super::artifacts::GuestArtifacts;
use super::engine::{AgentSocket, Disk, Engine, VmSpec};
use super::protocol::{
    CreateRequest, Event, GuestFile, GuestNetwork, GuestVolume, Message, Request, Response, Stream,
};
use super::{artifacts, disks, engine, VmError};
use crate::container::options::RunOptions;
use crate::container::spec::{self, SpecContext};
use crate::container::state::{process_start_time, State, Status};
use crate::container::store::{ContainerDir, ContainerStore};
use crate::container::{id, network, ContainerError};
use crate::image::Image;
use crate::linux::cgroups::CgroupMode;

/// The agent has this long to answer its first message (a TCG boot takes about 3 s).
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);
/// Guest memory beyond the workload's limit: the guest kernel and the agent.
const GUEST_OVERHEAD_MIB: u64 = 96;
pub const DEFAULT_GUEST_MIB: u64 = 256;
const KERNEL_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 quiet loglevel=4";

/// What `run --isolation vm` reports.
pub struct VmOutcome {
    pub id: String,
    pub exit_code: i32,
    pub engine: String,
    pub accelerator: String,
}

/// Files of the VM in the container's folder.
struct VmFiles {
    dir: PathBuf,
    id: String,
}

/// Agent sockets live here: a Unix socket path must fit in 108 bytes, which a container folder
/// under a long state root does not.
pub const SOCKET_DIR: &str = "/run/capsa-vm";

/// The agent socket of container `id` (removed by `rm` too: a killed monitor cannot).
pub fn socket_path(id: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{id}.sock"))
}

impl VmFiles {
    fn new(container: &ContainerDir) -> Self {
        let id = container
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self {
            dir: container.dir.join("vm"),
            id,
        }
    }
    fn socket(&self) -> PathBuf {
        socket_path(&self.id)
    }
    fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    fn engine_log(&self) -> PathBuf {
        self.dir.join("engine.log")
    }
    fn upper(&self) -> PathBuf {
        self.dir.join("upper.ext4")
    }
}

/// Flags that have no meaning in a VM yet are refused by name rather than ignored.
pub fn check_supported(opts: &RunOptions) -> Result<(), ContainerError> {
    let no = |flag: &str| {
        Err(ContainerError::InvalidArgument(format!(
            "{flag} is not available with --isolation vm yet"
        )))
    };
    if opts.network == crate::net::NetworkMode::Host {
        return no("--network host (a VM has its own kernel and network stack)");
    }
    if opts.userns {
        return no("--userns=auto");
    }
    if opts.restart_policy != crate::container::restart::RestartPolicy::No {
        return no("--restart");
    }
    for v in &opts.volumes {
        if v.host.exists() && !v.host.is_dir() {
            return Err(ContainerError::InvalidArgument(format!(
                "-v {}: a VM volume must be a directory (its copy becomes one of the VM's disks)",
                v.host.display()
            )));
        }
    }
    Ok(())
}

/// What both modes prepare before the VM starts: the engine and its reason, the guest's
/// kernel and initramfs, the container's record and the agent's create request.
struct Prepared {
    engine: Box<dyn Engine>,
    guest: GuestArtifacts,
    state: State,
    launch: Launch,
}

/// What booting a VM container needs beyond its record; `create` keeps it in the container's
/// vm/launch.json until `start`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Launch {
    mem_mib: u64,
    vcpus: u32,
    volumes: Vec<crate::container::options::Volume>,
    tty: bool,
    /// `--vmm`, chosen again at start.
    vmm: Option<String>,
    create: CreateRequest,
}

impl Launch {
    fn path(store: &ContainerStore, id: &str) -> PathBuf {
        VmFiles::new(&store.dir(id)).dir.join("launch.json")
    }
}

fn prepare(
    store: &ContainerStore,
    image: &Image,
    opts: &RunOptions,
    vmm: Option<&str>,
) -> Result<Prepared, ContainerError> {
    check_supported(opts)?;
    let (engine, reason) = engine::select(vmm)?;
    eprintln!("capsa: vm isolation: {reason}");
    let guest = artifacts::locate(store.root())?;
    let (state, create) = lay_out(store, image, opts)?;
    let launch = Launch {
        mem_mib: guest_memory_mib(opts),
        vcpus: opts.cpus.map(|c| c.ceil().max(1.0) as u32).unwrap_or(1),
        volumes: opts.volumes.clone(),
        tty: opts.tty,
        vmm: vmm.map(String::from),
        create,
    };
    Ok(Prepared {
        engine,
        guest,
        state,
        launch,
    })
}

/// Runs a VM container to its end; output goes to this process's stdout and stderr.
pub fn run_foreground(
    store: &ContainerStore,
    image: Image,
    opts: &RunOptions,
    vmm: Option<&str>,
) -> Result<VmOutcome, ContainerError> {
    let p = prepare(store, &image, opts, vmm)?;
    let id = p.state.id.clone();
    let (engine, accelerator) = (
        p.engine.name().to_string(),
        p.engine.accelerator().to_string(),
    );
    // With -it the keys go to the guest's pty as typed (its line discipline handles ctrl-c).
    let _raw = (opts.tty && opts.interactive).then(crate::linux::tty::RawMode::enter);
    let mut sink = Sink::Terminal(opts.interactive.then(stdin_relay));
    let result = boot_and_run(
        store,
        p.state,
        p.launch,
        p.engine.as_ref(),
        &p.guest,
        &mut sink,
        |_| {},
    );
    let exit_code = finish(store, &id, &result, opts.auto_remove)?;
    result?;
    Ok(VmOutcome {
        id,
        exit_code,
        engine,
        accelerator,
    })
}

/// Starts a VM container whose monitor (a forked capsa) relays its output to the container's
/// log; returns its ID once the workload has started.
pub fn run_detached(
    store: &ContainerStore,
    image: Image,
    opts: &RunOptions,
    vmm: Option<&str>,
) -> Result<String, ContainerError> {
    let p = prepare(store, &image, opts, vmm)?;
    let id = p.state.id.clone();
    spawn_monitor(store, p)?;
    Ok(id)
}

/// `create --isolation vm`: the container's record, spec and launch parameters, no VM yet.
pub fn create(
    store: &ContainerStore,
    image: Image,
    opts: &RunOptions,
    vmm: Option<&str>,
) -> Result<String, ContainerError> {
    let p = prepare(store, &image, opts, vmm)?;
    let id = p.state.id.clone();
    let saved = (|| {
        let path = Launch::path(store, &id);
        let json = serde_json::to_vec(&p.launch)
            .map_err(|e| ContainerError::io(&path, std::io::Error::other(e)))?;
        crate::fsutil::write_atomic(&path, &json).map_err(|e| ContainerError::io(&path, e))?;
        store.update(&id, |s| {
            s.status = Status::Created;
            s.monitor_pid = None;
            s.monitor_start_time = None;
        })
    })();
    if let Err(e) = saved {
        let _ = crate::container::delete::remove(store, &id, true);
        return Err(e);
    }
    Ok(id)
}

/// `start` of a created VM container: boots it under a detached monitor, as `run -d` does.
pub fn start(store: &ContainerStore, id: &str) -> Result<(), ContainerError> {
    let state = store.observe(id)?;
    match state.status {
        Status::Created => {}
        Status::Running => return Ok(()),
        _ => {
            return Err(ContainerError::WrongState {
                id: crate::container::id::short(id).to_string(),
                reason: "starting a stopped VM container again is not available yet; run a new one"
                    .into(),
            })
        }
    }
    let path = Launch::path(store, id);
    let launch: Launch = std::fs::read(&path)
        .map_err(|e| ContainerError::io(&path, e))
        .and_then(|b| {
            serde_json::from_slice(&b)
                .map_err(|e| ContainerError::io(&path, std::io::Error::other(e)))
        })?;
    let (engine, reason) = engine::select(launch.vmm.as_deref())?;
    eprintln!("capsa: vm isolation: {reason}");
    let guest = artifacts::locate(store.root())?;
    spawn_monitor(
        store,
        Prepared {
            engine,
            guest,
            state,
            launch,
        },
    )
}

/// Forks the VM's monitor and waits until it reports the workload started (or why not).
fn spawn_monitor(store: &ContainerStore, p: Prepared) -> Result<(), ContainerError> {
    let dir = store.dir(&p.state.id).dir;
    let answer = crate::container::monitor::fork_monitor(&dir, |report| {
        let code = monitor(store, p, std::fs::File::from(report));
        std::process::exit(code);
    })?;
    match answer.as_str() {
        "ok" => Ok(()),
        "" => Err(ContainerError::Vm(
            "the VM's monitor died while starting it".into(),
        )),
        reason => Err(ContainerError::Vm(reason.to_string())),
    }
}

/// The detached VM's monitor: boots, reports "ok" (or the error) to the waiting CLI, relays
/// output to the log until the workload exits, records the exit.
fn monitor(store: &ContainerStore, p: Prepared, mut report: std::fs::File) -> i32 {
    let id = p.state.id.clone();
    let (rotation, auto_remove) = (p.state.log_rotation, p.state.auto_remove);
    let log = crate::container::logfile::Writer::open(&store.dir(&id).log(), rotation);
    let mut sink = match log {
        Ok(w) => Sink::Log(w),
        Err(e) => {
            let _ = writeln!(
                report,
                "container log {}: {e}",
                store.dir(&id).log().display()
            );
            return 125;
        }
    };
    let mut report = Some(report);
    let result = boot_and_run(
        store,
        p.state,
        p.launch,
        p.engine.as_ref(),
        &p.guest,
        &mut sink,
        |r| {
            if let Some(mut w) = report.take() {
                let _ = match r {
                    Ok(()) => writeln!(w, "ok"),
                    Err(e) => writeln!(w, "{e}"),
                };
            }
        },
    );
    if let Sink::Log(w) = &mut sink {
        w.flush(0);
        w.flush(1);
    }
    finish(store, &id, &result, auto_remove).unwrap_or(125)
}

/// Records the exit (or the failure) and removes the container with `--rm`.
fn finish(
    store: &ContainerStore,
    id: &str,
    result: &Result<(i32, bool), ContainerError>,
    auto_remove: bool,
) -> Result<i32, ContainerError> {
    let (exit_code, oom) = match result {
        Ok(r) => *r,
        Err(_) => (125, false),
    };
    let _ = store.update(id, |s| {
        s.status = Status::Exited;
        s.pid = None;
        s.exit_code = Some(exit_code);
        s.oom_killed = oom;
        s.finished_at = Some(crate::timefmt::rfc3339(SystemTime::now()));
        s.error = result.as_ref().err().map(|e| e.to_string());
    });
    let _ = std::fs::remove_file(VmFiles::new(&store.dir(id)).socket());
    let _ = std::fs::remove_file(super::control::path(id));
    if let Ok(state) = store.load(id) {
        network::disconnect(store, &state);
    }
    if auto_remove {
        crate::container::delete::remove(store, id, true)?;
    }
    Ok(exit_code)
}

/// Where the workload's output goes: this terminal, or the container's json-file log.
enum Sink {
    /// With `-i`, what this terminal's stdin delivers (None at its end).
    Terminal(Option<std::sync::mpsc::Receiver<Option<Vec<u8>>>>),
    Log(crate::container::logfile::Writer),
}

/// Reads stdin on a thread of its own (a blocking read cannot share the relay loop).
fn stdin_relay() -> std::sync::mpsc::Receiver<Option<Vec<u8>>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Signals are for the relay loop's signalfd, not this thread.
        let _ = SigSet::all().thread_block();
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match std::io::Read::read(&mut stdin, &mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Ok(0) | Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
                Ok(n) => {
                    if tx.send(Some(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

impl Sink {
    fn write(&mut self, stream: Stream, data: &[u8]) {
        match self {
            Sink::Terminal(_) => {
                let mut out: Box<dyn Write> = if stream == Stream::Stdout {
                    Box::new(std::io::stdout())
                } else {
                    Box::new(std::io::stderr())
                };
                let _ = out.write_all(data);
                let _ = out.flush();
            }
            Sink::Log(w) => w.write(if stream == Stream::Stdout { 0 } else { 1 }, data),
        }
    }
}

/// The container's record, spec and disks; returns its state and what the agent will be asked.
fn lay_out(
    store: &ContainerStore,
    image: &Image,
    opts: &RunOptions,
) -> Result<(State, CreateRequest), ContainerError> {
    let id = id::new_id();
    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| format!("capsa_{}", id::short(&id)));
    store.reserve_name(&name, &id)?;
    let result = lay_out_named(store, image, opts, &id, &name);
    if result.is_err() {
        store.release_name(&name, &id);
        let _ = std::fs::remove_dir_all(store.dir(&id).dir);
    }
    result
}

fn lay_out_named(
    store: &ContainerStore,
    image: &Image,
    opts: &RunOptions,
    id: &str,
    name: &str,
) -> Result<(State, CreateRequest), ContainerError> {
    let dir = store.dir(id);
    let files = VmFiles::new(&dir);
    std::fs::create_dir_all(&files.dir).map_err(|e| ContainerError::io(&files.dir, e))?;
    let ctx = SpecContext {
        id,
        rootfs: &dir.rootfs(),
        dir: &dir.dir,
        cgroup_mode: Some(CgroupMode::Unified),
        userns_base: None,
    };
    for v in &opts.volumes {
        // Docker creates a missing host directory for -v.
        std::fs::create_dir_all(&v.host).map_err(|e| {
            ContainerError::InvalidArgument(format!("-v {}: {e}", v.host.display()))
        })?;
    }
    let mut spec = spec::build(opts, image, &ctx)?;
    share_guest_network(&mut spec);
    let volumes = volumes_from_disks(&mut spec, &opts.volumes);
    let hostname = spec.hostname().clone().unwrap_or_default();
    // Held, as for a container, until the state records the address.
    let (endpoint, _net_lock) = network::plan(store, opts, image, id)?;
    network::write_etc_files(&dir, &hostname, opts, endpoint.as_ref())?;
    let config = serde_json::to_vec_pretty(&spec)
        .map_err(|e| ContainerError::io(&dir.config(), std::io::Error::other(e)))?;
    std::fs::write(dir.config(), config).map_err(|e| ContainerError::io(&dir.config(), e))?;
    let mut guest_files = Vec::new();
    for (file, path) in [
        ("hostname", "/etc/hostname"),
        ("hosts", "/etc/hosts"),
        ("resolv.conf", "/etc/resolv.conf"),
    ] {
        if let Ok(content) = std::fs::read_to_string(dir.etc_file(file)) {
            guest_files.push(GuestFile {
                path: path.into(),
                content,
            });
        }
    }
    let state = State::creating(id, name, opts, image, &spec, "vm", endpoint.clone());
    store.save(&state)?;
    let network = endpoint.as_ref().map(|e| GuestNetwork {
        address: e.ip,
        prefix: e.prefix,
        gateway: e.gateway,
    });
    let create = CreateRequest {
        id: id.to_string(),
        spec,
        layers: Vec::new(),
        upper: "upper".into(),
        files: guest_files,
        network,
        volumes,
    };
    Ok((state, create))
}

/// Where the agent mounts `-v` volume `i` in the guest.
fn guest_volume_path(i: usize) -> String {
    format!("/run/capsa/volumes/{i}")
}

/// A VM cannot bind-mount host paths: each volume becomes a disk (serial `v<i>`) that the
/// agent mounts at a guest path, and the spec's bind mount takes it from there.
fn volumes_from_disks(
    spec: &mut oci_spec::runtime::Spec,
    volumes: &[crate::container::options::Volume],
) -> Vec<GuestVolume> {
    let mut guest = Vec::new();
    for (i, v) in volumes.iter().enumerate() {
        let path = guest_volume_path(i);
        if let Some(mounts) = spec.mounts_mut() {
            for m in mounts.iter_mut().filter(|m| {
                m.destination() == Path::new(&v.container)
                    && m.source().as_deref() == Some(v.host.as_path())
            }) {
                m.set_source(Some(PathBuf::from(&path)));
            }
        }
        guest.push(GuestVolume {
            serial: format!("v{i}"),
            fstype: if v.read_only { "erofs" } else { "ext4" }.into(),
            path,
        });
    }
    guest
}

/// The workload uses the guest's own network stack (its eth0 is the container's): the VM is
/// the network boundary, as a Kata pod's VM is, so no network namespace is made inside.
fn share_guest_network(spec: &mut oci_spec::runtime::Spec) {
    if let Some(linux) = spec.linux_mut() {
        if let Some(ns) = linux.namespaces_mut() {
            ns.retain(|n| n.typ() != oci_spec::runtime::LinuxNamespaceType::Network);
        }
    }
}

/// The disks: image layers top first as l0, l1, ..., the writable layer, the volumes v0, v1, ...
fn attach_disks(
    store: &ContainerStore,
    image: &[PathBuf],
    files: &VmFiles,
    volumes: &[crate::container::options::Volume],
    create: &mut CreateRequest,
) -> Result<Vec<Disk>, VmError> {
    let mut disks = Vec::new();
    for (i, layer) in image.iter().rev().enumerate() {
        let serial = format!("l{i}");
        disks.push(Disk {
            path: disks::layer_image(store.root(), layer)?,
            serial: serial.clone(),
            read_only: true,
        });
        create.layers.push(serial);
    }
    disks::writable_disk(&files.upper())?;
    disks.push(Disk {
        path: files.upper(),
        serial: create.upper.clone(),
        read_only: false,
    });
    for (i, v) in volumes.iter().enumerate() {
        let path = files.dir.join(format!("volume-{i}.img"));
        disks::volume_image(&v.host, &path, v.read_only)?;
        disks.push(Disk {
            path,
            serial: format!("v{i}"),
            read_only: v.read_only,
        });
    }
    Ok(disks)
}

fn guest_memory_mib(opts: &RunOptions) -> u64 {
    match opts.memory {
        Some(limit) if limit > 0 => ((limit as u64) >> 20)
            .saturating_add(GUEST_OVERHEAD_MIB)
            .max(128),
        _ => DEFAULT_GUEST_MIB,
    }
}

#[allow(clippy::too_many_arguments)]
fn boot_and_run(
    store: &ContainerStore,
    state: State,
    launch: Launch,
    engine: &dyn Engine,
    guest: &GuestArtifacts,
    sink: &mut Sink,
    mut on_started: impl FnMut(Result<(), &ContainerError>),
) -> Result<(i32, bool), ContainerError> {
    let mut create = launch.create;
    let result = (|| {
        let dir = store.dir(&state.id);
        let files = VmFiles::new(&dir);
        let image = crate::image::ImageStore::new(store.root()).resolve(&state.image_id)?;
        let disks = attach_disks(
            store,
            &image.layer_dirs,
            &files,
            &launch.volumes,
            &mut create,
        )?;
        let vm = VmSpec {
            kernel: guest.kernel.clone(),
            initramfs: guest.initramfs.clone(),
            cmdline: KERNEL_CMDLINE.into(),
            mem_mib: launch.mem_mib,
            vcpus: launch.vcpus,
            disks,
            agent_socket: files.socket(),
            console_log: files.console_log(),
            nic: state.endpoint.as_ref().map(|e| (e.veth.clone(), e.mac)),
        };
        // SIGWINCH matters only to a foreground -t run, whose terminal this is.
        let signals = block_signals(launch.tty && matches!(sink, Sink::Terminal(_)))?;
        let (mut child, agent) = start_engine(engine, &vm, &files)?;
        if let Some(endpoint) = &state.endpoint {
            let plugged = network::bridge_config(store, &endpoint.network).and_then(|c| {
                crate::net::attach_tap(&c, endpoint, Duration::from_secs(10))
                    .map_err(|e| ContainerError::Vm(e.to_string()))
            });
            if let Err(e) = plugged {
                stop_engine(&mut child);
                return Err(e);
            }
        }
        // The process signals reach is this one (the VM's monitor): `stop` and `kill` signal
        // it and it forwards to the workload; SIGKILL ends it and, by PDEATHSIG, the engine.
        let me = std::process::id() as i32;
        store.update(&state.id, |s| {
            s.status = Status::Running;
            s.pid = Some(me);
            s.pid_start_time = process_start_time(me);
            s.monitor_pid = Some(me);
            s.monitor_start_time = process_start_time(me);
            s.started_at = Some(crate::timefmt::rfc3339(SystemTime::now()));
        })?;
        Ok::<_, ContainerError>((child, agent, signals, files))
    })();
    let (mut child, mut agent, signals, files) = match result {
        Ok(r) => r,
        Err(e) => {
            on_started(Err(&e));
            return Err(e);
        }
    };
    let result = converse(
        &mut agent,
        &mut child,
        create,
        &signals,
        &files,
        sink,
        &mut on_started,
    );
    let _ = agent.call(Request::Shutdown, Duration::from_secs(5));
    stop_engine(&mut child);
    result.map_err(ContainerError::from)
}

fn block_signals(window_changes: bool) -> Result<SignalFd, ContainerError> {
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

/// This terminal's window size for `process`'s pty (None when stdout is not a terminal).
fn window_resize(process: &str) -> Option<Request> {
    let (rows, cols) = crate::linux::sys::window_size(libc::STDOUT_FILENO).ok()?;
    Some(Request::Resize {
        process: process.to_string(),
        rows,
        cols,
    })
}

/// Starts the engine and connects to its agent socket (whichever side listens).
fn start_engine(
    engine: &dyn Engine,
    vm: &VmSpec,
    files: &VmFiles,
) -> Result<(Child, AgentClient), VmError> {
    let _ = std::fs::create_dir_all(SOCKET_DIR);
    let _ = std::fs::remove_file(&vm.agent_socket);
    let listener = match engine.agent_socket() {
        AgentSocket::CapsaListens => Some(
            UnixListener::bind(&vm.agent_socket)
                .map_err(|e| VmError::Io(format!("{}: {e}", vm.agent_socket.display())))?,
        ),
        AgentSocket::EngineListens => None,
    };
    let log = std::fs::File::create(files.engine_log())
        .map_err(|e| VmError::Io(format!("{}: {e}", files.engine_log().display())))?;
    let log2 = log.try_clone().map_err(|e| VmError::Io(e.to_string()))?;
    let spawned = Instant::now();
    let mut cmd = engine.command(vm);
    // Its own process group: a Ctrl-C at the terminal reaches capsa, which stops the VM.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    // SAFETY: prctl in the forked child before exec touches no shared state; it makes the
    // engine die with its monitor, so a killed monitor never leaves a VM behind.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
    let mut child = cmd
        .spawn()
        .map_err(|e| VmError::NoEngine(format!("cannot start {}: {e}", engine.name())))?;
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let stream = loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(VmError::EngineExited(format!(
                "{} exited with {status}: {}",
                engine.name(),
                tail(&files.engine_log())
            )));
        }
        if Instant::now() > deadline {
            stop_engine(&mut child);
            return Err(VmError::AgentTimeout(BOOT_TIMEOUT));
        }
        let connected = match &listener {
            Some(l) => {
                if super::agent::wait_readable(l.as_raw_fd(), Duration::from_millis(50))? {
                    l.accept().ok().map(|(s, _)| s)
                } else {
                    None
                }
            }
            None => {
                std::thread::sleep(Duration::from_millis(20));
                UnixStream::connect(&vm.agent_socket).ok()
            }
        };
        if let Some(s) = connected {
            break s;
        }
    };
    let mut agent = AgentClient::new(stream);
    match agent.call(Request::Hello, BOOT_TIMEOUT) {
        Ok(Response::Hello {
            agent: version,
            kernel,
        }) => {
            // The figure `bench/vm.py` reads: engine start to agent ready.
            tracing::info!(ms = spawned.elapsed().as_secs_f64() * 1000.0, agent = %version, kernel = %kernel, "vm agent ready");
            Ok((child, agent))
        }
        Ok(other) => {
            stop_engine(&mut child);
            Err(VmError::Agent(format!(
                "unexpected answer to hello: {other:?}"
            )))
        }
        Err(e) => {
            stop_engine(&mut child);
            Err(with_console(e, &files.console_log()))
        }
    }
}

/// Create, start, relay output and signals until the workload's exit; meanwhile serve the
/// control socket (`exec`, `stats` from other capsa commands).
fn converse(
    agent: &mut AgentClient,
    child: &mut Child,
    create: CreateRequest,
    signals: &SignalFd,
    files: &VmFiles,
    sink: &mut Sink,
    on_started: &mut impl FnMut(Result<(), &ContainerError>),
) -> Result<(i32, bool), VmError> {
    let process = create.id.clone();
    let tty = create.spec.process().as_ref().and_then(|p| p.terminal()) == Some(true);
    let started = agent
        .call(Request::Create(Box::new(create)), REQUEST_TIMEOUT)
        .and_then(|_| agent.call(Request::Start, REQUEST_TIMEOUT));
    match &started {
        Ok(_) => on_started(Ok(())),
        Err(e) => on_started(Err(&ContainerError::Vm(e.to_string()))),
    }
    started?;
    let mut input = match sink {
        Sink::Terminal(input) => input.take(),
        Sink::Log(_) => None,
    };
    if let (true, Sink::Terminal(_), Some(resize)) = (tty, &sink, window_resize(&process)) {
        // The guest's pty starts at 80x24; with -t it takes this terminal's size.
        agent.call(resize, REQUEST_TIMEOUT)?;
    }
    if input.is_none() {
        // Without -i the workload's stdin is empty, as in a container.
        agent.call(
            Request::CloseInput {
                process: process.clone(),
            },
            REQUEST_TIMEOUT,
        )?;
    }
    let control = bind_control(&process)?;
    let mut clients = Clients::default();
    loop {
        // Signals first: a window change typed before a command must reach the pty first.
        while let Ok(Some(sig)) = signals.read_signal() {
            let request = if sig.ssi_signo == libc::SIGWINCH as u32 {
                match window_resize(&process) {
                    Some(r) => r,
                    None => continue,
                }
            } else {
                Request::Signal {
                    process: process.clone(),
                    signal: sig.ssi_signo as i32,
                }
            };
            agent.call(request, REQUEST_TIMEOUT)?;
        }
        while let Some(Ok(chunk)) = input.as_ref().map(|rx| rx.try_recv()) {
            let request = match chunk {
                Some(data) => Request::Input {
                    process: process.clone(),
                    data: super::protocol::Bytes(data),
                },
                None => {
                    input = None;
                    Request::CloseInput {
                        process: process.clone(),
                    }
                }
            };
            agent.call(request, REQUEST_TIMEOUT)?;
        }
        while let Ok((stream, _)) = control.accept() {
            clients.serve(agent, stream);
        }
        while let Ok(request) = clients.requests.try_recv() {
            // An exec'd process that has gone just loses what was typed for it.
            let _ = agent.call(request, REQUEST_TIMEOUT);
        }
        let wait = if input.is_some() || !clients.waiting.is_empty() {
            20
        } else {
            200
        };
        match agent.next_event(Duration::from_millis(wait)) {
            Ok(Some(Event::Output {
                process: p,
                stream,
                data,
            })) if p == process => sink.write(stream, &data.0),
            Ok(Some(Event::Exited {
                process: p,
                code,
                oom_killed,
            })) if p == process => return Ok((code, oom_killed)),
            Ok(Some(other)) => clients.forward(other),
            Ok(None) => {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(VmError::EngineExited(format!(
                        "the VM stopped ({status}) before the workload exited: {}",
                        tail(&files.console_log())
                    )));
                }
            }
            Err(e) => return Err(with_console(e, &files.console_log())),
        }
    }
}

fn bind_control(id: &str) -> Result<UnixListener, VmError> {
    let path = super::control::path(id);
    let _ = std::fs::remove_file(&path);
    let l =
        UnixListener::bind(&path).map_err(|e| VmError::Io(format!("{}: {e}", path.display())))?;
    l.set_nonblocking(true)
        .map_err(|e| VmError::Io(e.to_string()))?;
    Ok(l)
}

/// The control socket's clients that wait for an `exec`'s output, by process name, and what
/// the interactive ones send (input, window sizes), read on a thread per client.
struct Clients {
    waiting: std::collections::HashMap<String, UnixStream>,
    next: u64,
    from_clients: std::sync::mpsc::Sender<Request>,
    requests: std::sync::mpsc::Receiver<Request>,
}

impl Default for Clients {
    fn default() -> Self {
        let (from_clients, requests) = std::sync::mpsc::channel();
        Clients {
            waiting: Default::default(),
            next: 0,
            from_clients,
            requests,
        }
    }
}

/// Reads an `exec -i`/`-t` client's frames until it goes, naming its process in each.
fn read_client_input(
    mut stream: UnixStream,
    process: String,
    to: std::sync::mpsc::Sender<Request>,
) {
    let _ = stream.set_read_timeout(None);
    while let Ok(env) = super::protocol::read_frame(&mut stream) {
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
            _ => continue,
        };
        if to.send(request).is_err() {
            return;
        }
    }
}

impl Clients {
    /// Reads a client's one request and relays it to the agent.
    fn serve(&mut self, agent: &mut AgentClient, mut stream: UnixStream) {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let Ok(env) = super::protocol::read_frame(&mut stream) else {
            return;
        };
        let mut talks = false;
        let (request, name) = match env.message {
            Message::Request(Request::Exec(mut e)) => {
                self.next += 1;
                e.process = format!("exec-{}", self.next);
                talks = e.interactive || e.tty;
                let name = e.process.clone();
                (Request::Exec(e), Some(name))
            }
            Message::Request(
                r @ (Request::Stats
                | Request::Top
                | Request::Freeze { .. }
                | Request::CopyOut { .. }
                | Request::CopyIn { .. }),
            ) => (r, None),
            _ => {
                let error = Response::Error {
                    kind: super::protocol::ErrorKind::BadRequest,
                    message: "only exec, stats, top, freeze and copies are served here".into(),
                };
                let _ = super::protocol::write_frame(&mut stream, env.id, Message::Response(error));
                return;
            }
        };
        let response = agent
            .call(request, REQUEST_TIMEOUT)
            .unwrap_or_else(|e| Response::Error {
                kind: super::protocol::ErrorKind::Internal,
                message: e.to_string(),
            });
        let ok = !matches!(response, Response::Error { .. });
        if super::protocol::write_frame(&mut stream, env.id, Message::Response(response)).is_ok()
            && ok
        {
            if let Some(name) = name {
                if let (true, Ok(reader)) = (talks, stream.try_clone()) {
                    let to = self.from_clients.clone();
                    let process = name.clone();
                    std::thread::spawn(move || read_client_input(reader, process, to));
                }
                self.waiting.insert(name, stream);
            }
        }
    }

    /// An event of an `exec`'d process goes to the client waiting for it.
    fn forward(&mut self, event: Event) {
        let (name, last) = match &event {
            Event::Output { process, .. } => (process.clone(), false),
            Event::Exited { process, .. } => (process.clone(), true),
        };
        let gone = match self.waiting.get_mut(&name) {
            Some(s) => super::protocol::write_frame(s, 0, Message::Event(event)).is_err(),
            None => false,
        };
        if last || gone {
            self.waiting.remove(&name);
        }
    }
}

/// Waits for the engine to end after the agent's power-off; kills it if it does not.
fn stop_engine(child: &mut Child) {
    let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn with_console(e: VmError, console: &Path) -> VmError {
    match e {
        VmError::AgentGone | VmError::AgentTimeout(_) => {
            VmError::EngineExited(format!("{e}; guest console: {}", tail(console)))
        }
        other => other,
    }
}

/// The last lines of a log, for error messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    if lines.is_empty() {
        return format!("({} is empty)", path.display());
    }
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}
