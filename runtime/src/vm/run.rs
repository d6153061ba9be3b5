//! One VM container in the foreground: laid out like a container (same record, same OCI spec),
//! its layers as erofs disks and a writable ext4 disk, the engine started, the agent asked to
//! create and start the workload; output relayed until the workload exits; then the VM shut
//! down and the exit recorded (or the container removed with `--rm`).

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::agent::{guest_text, AgentClient};
use super::artifacts::GuestArtifacts;
use super::console::LogDrain;
use super::engine::{Disk, Engine, VmSpec};
use super::jail::{EngineProcess, Jail};
use super::protocol::{
    CreateRequest, Event, GuestFile, GuestNetwork, GuestVolume, Message, Request, Response, Stream,
};
use super::{artifacts, disks, engine, VmError};
use crate::container::options::{RunOptions, Volume};
use crate::container::spec::{self, SpecContext};
use crate::container::state::{process_start_time, State, Status};
use crate::container::store::{ContainerDir, ContainerStore};
use crate::container::{id, network, ContainerError};
use crate::image::Image;
use crate::linux::cgroups::{self, CgroupMode, CgroupPaths};

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
}

/// Control sockets live here (root's only: 0700, sockets 0600): a Unix socket path must fit
/// in 108 bytes, which a container folder under a long state root does not.
pub const SOCKET_DIR: &str = "/run/capsa-vm";

impl VmFiles {
    fn new(container: &ContainerDir) -> Self {
        Self {
            dir: container.dir.join("vm"),
        }
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
    /// Held by whoever runs an engine on the container's disks (its monitor, or `cp` with
    /// the VM stopped), so two engines never share them.
    fn disks_lock(&self) -> PathBuf {
        self.dir.join("disks.lock")
    }
    /// The running engine's jail, for `inspect`.
    fn engine_record(&self) -> PathBuf {
        self.dir.join("engine.json")
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
pub(crate) struct Launch {
    pub(crate) mem_mib: u64,
    pub(crate) vcpus: u32,
    pub(crate) volumes: Vec<crate::container::options::Volume>,
    pub(crate) tty: bool,
    /// `-i`: the workload's stdin stays open for `attach` when no terminal runs it.
    #[serde(default)]
    pub(crate) interactive: bool,
    /// `--vmm`, chosen again at start.
    pub(crate) vmm: Option<String>,
    pub(crate) create: CreateRequest,
}

impl Launch {
    fn path(store: &ContainerStore, id: &str) -> PathBuf {
        VmFiles::new(&store.dir(id)).dir.join("launch.json")
    }

    fn save(&self, store: &ContainerStore, id: &str) -> Result<(), ContainerError> {
        let path = Self::path(store, id);
        let json = serde_json::to_vec(self)
            .map_err(|e| ContainerError::io(&path, std::io::Error::other(e)))?;
        crate::fsutil::write_atomic(&path, &json).map_err(|e| ContainerError::io(&path, e))
    }

    pub(crate) fn load(store: &ContainerStore, id: &str) -> Result<Self, ContainerError> {
        let path = Self::path(store, id);
        std::fs::read(&path)
            .map_err(|e| ContainerError::io(&path, e))
            .and_then(|b| {
                serde_json::from_slice(&b)
                    .map_err(|e| ContainerError::io(&path, std::io::Error::other(e)))
            })
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
    let (state, create, volumes) = lay_out(store, image, opts)?;
    let launch = Launch {
        mem_mib: guest_memory_mib(opts),
        vcpus: opts.cpus.map(|c| c.ceil().max(1.0) as u32).unwrap_or(1),
        volumes,
        tty: opts.tty,
        interactive: opts.interactive,
        vmm: vmm.map(String::from),
        create,
    };
    // Kept for `start` (of a created container, or of a stopped one again).
    if let Err(e) = launch.save(store, &state.id) {
        let _ = crate::container::delete::remove(store, &state.id, true);
        return Err(e);
    }
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
    let saved = store.update(&id, |s| {
        s.status = Status::Created;
        s.monitor_pid = None;
        s.monitor_start_time = None;
    });
    if let Err(e) = saved {
        let _ = crate::container::delete::remove(store, &id, true);
        return Err(e);
    }
    Ok(id)
}

/// `start` of a VM container: boots it under a detached monitor, as `run -d` does. A stopped
/// one boots again with the command it was created with and its writable layer kept, as
/// `docker start` does.
pub fn start(store: &ContainerStore, id: &str) -> Result<(), ContainerError> {
    let mut state = store.observe(id)?;
    match state.status {
        Status::Created => {}
        Status::Running => return Ok(()),
        // Its monitor boots it again by itself.
        Status::Exited if state.restarting => return Ok(()),
        Status::Exited | Status::Dead => {
            network::ports_still_free(store, &state)?;
            store.update(id, State::forget_last_run)?;
            state = store.observe(id)?;
        }
        _ => {
            return Err(ContainerError::WrongState {
                id: crate::container::id::short(id).to_string(),
                reason: format!("cannot start a container that is {}", state.status_word()),
            })
        }
    }
    let launch = Launch::load(store, id)?;
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
        // Its own cgroup beside the engine's, with the VM's CPU quota (its log relay is work
        // the guest's output makes).
        let mut report = std::fs::File::from(report);
        let cgroup = match monitor_cgroup(&p) {
            Ok(c) => c,
            Err(e) => {
                let _ = writeln!(report, "the monitor's cgroup: {e}");
                std::process::exit(125);
            }
        };
        let code = monitor(store, p, report);
        if let Some(c) = cgroup {
            c.leave();
        }
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

/// Moves the VM's monitor into its cgroup beside the engine's, limited to the container's
/// CPU quota.
fn monitor_cgroup(
    p: &Prepared,
) -> Result<Option<crate::linux::cgroups::sibling::Sibling>, cgroups::CgroupError> {
    use crate::container::monitor::{enter_monitor_cgroup, monitor_resources};
    let Some(cgroup) = enter_monitor_cgroup(&p.state.cgroup)? else {
        return Ok(None);
    };
    if let Err(e) = cgroup.limit(&monitor_resources(&p.launch.create.spec)) {
        cgroup.leave();
        return Err(e);
    }
    Ok(Some(cgroup))
}

/// The detached VM's monitor: boots, reports "ok" (or the error) to the waiting CLI, relays
/// output to the log until the workload exits, records the exit, and boots the VM again
/// while its `--restart` policy says so (with Docker's back-off).
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
    let mut state = p.state;
    let mut delay = Duration::ZERO;
    loop {
        let started = Instant::now();
        let result = boot_and_run(
            store,
            state,
            p.launch.clone(),
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
        let code = finish(store, &id, &result, auto_remove).unwrap_or(125);
        match restart_after(store, &id, code, &mut delay, started.elapsed()) {
            Some(next) => state = next,
            None => return code,
        }
    }
}

/// Whether the `--restart` policy boots the VM again after an exit with `code`: waits out
/// the back-off (unless the user stops or removes the container meanwhile) and returns the
/// state to boot with.
fn restart_after(
    store: &ContainerStore,
    id: &str,
    code: i32,
    delay: &mut Duration,
    ran_for: Duration,
) -> Option<State> {
    use crate::container::restart;
    let state = store.load(id).ok()?;
    if !state
        .restart_policy
        .should_restart(code, state.restart_count, state.stopped_by_user)
    {
        if state.restarting {
            let _ = store.update(id, |s| s.restarting = false);
        }
        return None;
    }
    *delay = restart::backoff(*delay, ran_for);
    store.update(id, |s| s.restarting = true).ok()?;
    let deadline = Instant::now() + *delay;
    while Instant::now() < deadline {
        match store.load(id) {
            Ok(s) if !s.stopped_by_user => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = store.update(id, |s| s.restarting = false);
                return None;
            }
        }
    }
    store
        .update(id, |s| {
            // Still "restarting" until the VM runs again (boot_and_run clears it).
            s.restart_count += 1;
            s.exit_code = None;
            s.finished_at = None;
            s.error = None;
            s.oom_killed = false;
        })
        .ok()?
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

/// Reads stdin on a thread of its own (a blocking read cannot share the relay loop). At most
/// [`STDIN_CHUNKS`] chunks wait in the channel: a guest that takes its input slowly makes
/// this thread wait, not the monitor's memory grow with everything stdin holds.
fn stdin_relay() -> std::sync::mpsc::Receiver<Option<Vec<u8>>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(STDIN_CHUNKS);
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

/// Chunks of stdin (64 KiB each) read ahead of the guest, at most.
const STDIN_CHUNKS: usize = 4;

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

/// The container's record, spec and disks; returns its state, what the agent will be asked
/// and its mounts (volumes given their disks).
fn lay_out(
    store: &ContainerStore,
    image: &Image,
    opts: &RunOptions,
) -> Result<(State, CreateRequest, Vec<Volume>), ContainerError> {
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
) -> Result<(State, CreateRequest, Vec<Volume>), ContainerError> {
    let dir = store.create_dir(id)?;
    let files = VmFiles::new(&dir);
    std::fs::create_dir_all(&files.dir).map_err(|e| ContainerError::io(&files.dir, e))?;
    let ctx = SpecContext {
        id,
        rootfs: &dir.rootfs(),
        dir: &dir.dir,
        cgroup_mode: Some(CgroupMode::Unified),
        userns_base: None,
    };
    let (opts, claim) = crate::container::volumes::claim(store, opts, image, true)?;
    let opts: &RunOptions = &opts;
    let mut spec = spec::build(opts, image, &ctx)?;
    share_guest_network(&mut spec);
    let volumes = volumes_from_disks(&mut spec, &opts.volumes);
    let hostname = spec.hostname().clone().unwrap_or_default();
    // Held, as for a container, until the state records the address.
    let (endpoint, _net_lock) = network::plan(store, opts, image, id)?;
    network::write_etc_files(&dir, &hostname, opts, endpoint.as_ref())?;
    let config = serde_json::to_vec_pretty(&spec)
        .map_err(|e| ContainerError::io(&dir.config(), std::io::Error::other(e)))?;
    crate::fsutil::write_private(&dir.config(), &config)
        .map_err(|e| ContainerError::io(&dir.config(), e))?;
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
    let mut state = State::creating(id, name, opts, image, &spec, "vm", endpoint.clone());
    // The engine's cgroup, placed as a container's would be.
    state.cgroup = host_cgroup(opts.cgroup_parent.as_deref(), id)?;
    store.save(&state)?;
    claim.keep();
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
    Ok((state, create, opts.volumes.clone()))
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
            // A volume is ext4 (attached read-only for `:ro`); a host directory's copy is
            // erofs when read-only.
            fstype: if v.read_only && v.volume_name().is_none() {
                "erofs"
            } else {
                "ext4"
            }
            .into(),
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
    disks::ensure_writable_disk(&files.upper())?;
    disks.push(Disk {
        path: files.upper(),
        serial: create.upper.clone(),
        read_only: false,
    });
    for (i, v) in volumes.iter().enumerate() {
        let path = match v.volume_name() {
            // A volume is its own disk image, held by this VM while it runs.
            Some(name) => disks::volume_disk(name, &v.host)?,
            None => {
                let path = files.dir.join(format!("volume-{i}.img"));
                disks::volume_image(&v.host, &path, v.read_only)?;
                path
            }
        };
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
    let mut create = launch.create.clone();
    let result = (|| {
        let files = VmFiles::new(&store.dir(&state.id));
        // Waits for a `cp` that booted the stopped VM to be done with its disks.
        let disks = super::jail::lock_file(&files.disks_lock(), true)
            .map_err(|e| ContainerError::io(&files.disks_lock(), e))?
            .ok_or_else(|| ContainerError::Vm("the disks' lock was not taken".into()))?;
        // SIGWINCH matters only to a foreground -t run, whose terminal this is.
        let signals = block_signals(launch.tty && matches!(sink, Sink::Terminal(_)))?;
        let booted = boot(store, &state, &launch, &mut create, engine, guest, disks)?;
        // The process signals reach is this one (the VM's monitor): `stop` and `kill` signal
        // it and it forwards to the workload; SIGKILL ends it and, by PDEATHSIG, the engine.
        let me = std::process::id() as i32;
        store.update(&state.id, |s| {
            s.status = Status::Running;
            s.restarting = false;
            s.pid = Some(me);
            s.pid_start_time = process_start_time(me);
            s.monitor_pid = Some(me);
            s.monitor_start_time = process_start_time(me);
            s.started_at = Some(crate::timefmt::rfc3339(SystemTime::now()));
        })?;
        Ok::<_, ContainerError>((booted, signals))
    })();
    let (mut booted, signals) = match result {
        Ok(r) => r,
        Err(e) => {
            on_started(Err(&e));
            return Err(e);
        }
    };
    let result = converse(
        &mut booted,
        create,
        launch.interactive,
        &signals,
        sink,
        &mut on_started,
    );
    booted.shut_down();
    result.map_err(ContainerError::from)
}

/// A booted VM: its jailed engine, the agent's connection, what keeps its disks to itself.
pub(crate) struct Booted {
    pub engine: EngineProcess,
    pub agent: AgentClient,
    logs: VmLogs,
    jail: Option<Jail>,
    record: PathBuf,
    _disks: std::fs::File,
}

impl Booted {
    /// Asks the agent to power off, waits for the engine (killing it if it lingers) and
    /// removes its jail. A guest that broke the protocol is not asked: its engine is killed.
    pub fn shut_down(mut self) {
        if let Some(jail) = &self.jail {
            let _ = jail.limit_cpu(false);
        }
        if self.agent.violated() {
            let _ = self.engine.kill();
            let _ = self.engine.wait();
        } else {
            let _ = self.agent.call(Request::Shutdown, Duration::from_secs(5));
            stop_engine(&mut self.engine);
        }
        // The engine has gone: the logs take the last of what it wrote.
        self.logs.settle();
        let _ = std::fs::remove_file(&self.record);
        if let Some(jail) = self.jail.take() {
            jail.destroy();
        }
    }
}

/// Starts the VM of container `state` in its jail, with its disks and network, and waits
/// for its agent's hello. `disks` is the held lock of the container's disks.
pub(crate) fn boot(
    store: &ContainerStore,
    state: &State,
    launch: &Launch,
    create: &mut CreateRequest,
    engine: &dyn Engine,
    guest: &GuestArtifacts,
    disks: std::fs::File,
) -> Result<Booted, ContainerError> {
    let files = VmFiles::new(&store.dir(&state.id));
    let image = crate::image::ImageStore::new(store.root()).resolve(&state.image_id)?;
    let disk_list = attach_disks(store, &image.layer_dirs, &files, &launch.volumes, create)?;
    let (agent, engine_end) =
        UnixStream::pair().map_err(|e| VmError::Io(format!("agent socket pair: {e}")))?;
    let nic = match &state.endpoint {
        Some(e) => Some((engine::open_tap(&e.veth)?, e.mac)),
        None => None,
    };
    // The console and the engine's output go through pipes the monitor drains into logs of
    // bounded size: the guest may write its console without end, the host file stays small.
    let (console, console_end) = super::console::open(&files.console_log())?;
    let (engine_out, engine_out_end) = super::console::open(&files.engine_log())?;
    let vm = VmSpec {
        cmdline: KERNEL_CMDLINE.into(),
        mem_mib: launch.mem_mib,
        vcpus: launch.vcpus,
        disks: disk_list,
        agent: OwnedFd::from(engine_end),
        console: console_end,
        nic,
    };
    let cmd = engine.command(vm)?;
    let jail = Jail::prepare(
        engine_cgroup(store, state)?,
        launch.mem_mib + engine.overhead_mib(),
        crate::container::monitor::cpu_limit_of(&launch.create.spec),
        cmd.kvm,
        &guest.kernel,
        &guest.initramfs,
    )?;
    let seccomp = cmd.seccomp.clone();
    let log = std::fs::File::from(engine_out_end);
    let spawned = Instant::now();
    let spawn = jail.spawn(cmd, &log);
    // The engine holds its end now; this one would keep the drain from ever ending.
    drop(log);
    let mut child = match spawn {
        Ok(c) => c,
        Err(e) => {
            jail.destroy();
            return Err(e.into());
        }
    };
    let logs = match VmLogs::drain(console, engine_out) {
        Ok(logs) => logs,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            jail.destroy();
            return Err(e.into());
        }
    };
    let record = EngineRecord {
        engine: engine.name().into(),
        pid: child.id(),
        pid_start_time: process_start_time(child.id()),
        uid: jail.uid.uid,
        cgroup: jail.cgroup.clone(),
        seccomp,
    };
    let _ = crate::fsutil::write_json_atomic(&files.engine_record(), &record);
    let vm_name = format!("{} ({})", state.name, id::short(&state.id));
    let mut booted = Booted {
        engine: child,
        agent: AgentClient::new(agent, &vm_name),
        logs,
        jail: Some(jail),
        record: files.engine_record(),
        _disks: disks,
    };
    if let Some(endpoint) = &state.endpoint {
        let plugged = network::bridge_config(store, &endpoint.network).and_then(|c| {
            crate::net::attach_tap(&c, endpoint, Duration::from_secs(10))
                .map_err(|e| ContainerError::Vm(e.to_string()))
        });
        if let Err(e) = plugged {
            booted.shut_down();
            return Err(e);
        }
    }
    match booted.agent.call(Request::Hello, BOOT_TIMEOUT) {
        Ok(Response::Hello {
            agent: version,
            kernel,
        }) => {
            // The figure `bench/vm.py` reads: engine start to agent ready.
            let (version, kernel) = (guest_text(&version), guest_text(&kernel));
            tracing::info!(ms = spawned.elapsed().as_secs_f64() * 1000.0, agent = %version, kernel = %kernel, "vm agent ready");
            Ok(booted)
        }
        Ok(other) => {
            booted.shut_down();
            Err(VmError::Agent(format!("{} to hello", other.kind())).into())
        }
        Err(e) => {
            let e = with_console(e, &booted.logs);
            booted.shut_down();
            Err(e.into())
        }
    }
}

/// Boots stopped (or created) container `id`'s VM for a copy alone: jailed as always, its
/// agent mounts the container's root without creating the workload. Refused while another
/// engine has its disks (the VM is starting).
pub(crate) fn boot_without_workload(
    store: &ContainerStore,
    id: &str,
) -> Result<Booted, ContainerError> {
    let files = VmFiles::new(&store.dir(id));
    let busy = || ContainerError::WrongState {
        id: id::short(id).to_string(),
        reason: "its VM is starting; copy when it runs".into(),
    };
    let disks = super::jail::try_lock(&files.disks_lock())
        .map_err(|e| ContainerError::io(&files.disks_lock(), e))?
        .ok_or_else(busy)?;
    // Under the lock: a monitor that booted meanwhile holds the disks until it is done.
    let state = store.observe(id)?;
    if state.status == Status::Running || state.restarting {
        return Err(busy());
    }
    let launch = Launch::load(store, id)?;
    let (engine, _) = engine::select(launch.vmm.as_deref())?;
    let guest = artifacts::locate(store.root())?;
    let mut create = launch.create.clone();
    let mut booted = boot(
        store,
        &state,
        &launch,
        &mut create,
        engine.as_ref(),
        &guest,
        disks,
    )?;
    if let Err(e) = booted
        .agent
        .call(Request::MountRoot(Box::new(create)), REQUEST_TIMEOUT)
    {
        booted.shut_down();
        return Err(e.into());
    }
    Ok(booted)
}

/// The engine's cgroup: the container's recorded one, or for a container recorded before
/// engines had one, its place under capsa's own cgroup (recorded now, for `rm`).
fn engine_cgroup(store: &ContainerStore, state: &State) -> Result<CgroupPaths, ContainerError> {
    if !state.cgroup.dirs.is_empty() {
        return Ok(state.cgroup.clone());
    }
    let paths = host_cgroup(None, &state.id)?;
    store.update(&state.id, |s| s.cgroup = paths.clone())?;
    Ok(paths)
}

/// Where a VM container's engine goes on this host: as a container's cgroup would.
fn host_cgroup(parent: Option<&str>, id: &str) -> Result<CgroupPaths, ContainerError> {
    let mode = CgroupMode::detect().ok_or_else(|| {
        ContainerError::Vm("the engine's jail needs a cgroup file system at /sys/fs/cgroup".into())
    })?;
    cgroups::resolve_paths(mode, parent, id).map_err(|e| ContainerError::Vm(e.to_string()))
}

/// What `inspect` reads of a running VM's engine (the container's vm/engine.json).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EngineRecord {
    pub engine: String,
    pub pid: i32,
    pub pid_start_time: Option<u64>,
    pub uid: u32,
    pub cgroup: CgroupPaths,
    /// The seccomp policy the engine installs.
    pub seccomp: String,
}

/// The record of container `id`'s engine while it runs (None when it does not).
pub fn engine_record(store: &ContainerStore, id: &str) -> Option<EngineRecord> {
    let path = VmFiles::new(&store.dir(id)).engine_record();
    let record: EngineRecord = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    (process_start_time(record.pid) == record.pid_start_time).then_some(record)
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

/// Create, start, relay output and signals until the workload's exit; meanwhile serve the
/// control socket (`exec`, `stats` from other capsa commands).
fn converse(
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
    let mut input = match sink {
        Sink::Terminal(input) => input.take(),
        Sink::Log(_) => None,
    };
    let resize = match (tty, &sink) {
        (true, Sink::Terminal(_)) => window_resize(&process),
        _ => None,
    };
    // With -i but no terminal (-d, start), the stdin stays open for `attach`.
    let stdin_open = input.is_some() || (interactive && matches!(sink, Sink::Log(_)));
    let mut relay = Relay {
        clients: Clients::new(&process, stdin_open),
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
    loop {
        if let Some(exit) = relay.queued(&mut vm.agent) {
            return Ok(exit);
        }
        // Signals first: a window change typed before a command must reach the pty first.
        while let Ok(Some(sig)) = signals.read_signal() {
            let request = if sig.ssi_signo == libc::SIGWINCH as u32 {
                match window_resize(&relay.process) {
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
        for _ in 0..INPUT_PER_TURN {
            let Some(Ok(chunk)) = input.as_ref().map(|rx| rx.try_recv()) else {
                break;
            };
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
        let queued: Vec<Request> = relay
            .clients
            .requests
            .try_iter()
            .take(CLIENT_QUEUE)
            .collect();
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
        let wait = if input.is_some() || relay.clients.any() {
            20
        } else {
            200
        };
        match vm.agent.next_event(Duration::from_millis(wait)) {
            Ok(Some(event)) => {
                if let Some(exit) = relay.event(event) {
                    return Ok(exit);
                }
            }
            Ok(None) => {
                if let Ok(Some(status)) = vm.engine.try_wait() {
                    return Err(VmError::EngineExited(format!(
                        "the VM stopped ({status}) before the workload exited: {}",
                        vm.logs.console_tail()
                    )));
                }
            }
            Err(e) => return Err(with_console(e, &vm.logs)),
        }
    }
}

/// At most this many chunks of this terminal's input go to the agent per turn of the relay
/// loop, so that output and other clients keep their turn.
const INPUT_PER_TURN: usize = 16;

/// Where the guest's events go: the workload's to the sink and the attached clients, an
/// exec'd process's to the client waiting for it.
struct Relay<'a> {
    clients: Clients,
    /// The workload's process name.
    process: String,
    sink: &'a mut Sink,
}

impl Relay<'_> {
    /// Passes `event` on; the workload's exit when it is that.
    fn event(&mut self, event: Event) -> Option<(i32, bool)> {
        pass_on(&mut self.clients, self.sink, &self.process, event)
    }

    /// Sends `request` to the agent, passing on the events that come meanwhile as they
    /// come; the workload's exit if it was among them (before the answer's error, if any).
    fn call(
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
    fn serve(&mut self, agent: &mut AgentClient, stream: UnixStream) -> Option<(i32, bool)> {
        let (client, request) = self.clients.take(stream)?;
        let (answer, exit) = self.ask(agent, request);
        self.clients.answer(client, answer);
        exit
    }

    /// The agent's answer to `request`, and the workload's exit if it came meanwhile.
    fn ask(
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
    fn queued(&mut self, agent: &mut AgentClient) -> Option<(i32, bool)> {
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
fn pass_on(
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

fn bind_control(id: &str) -> Result<UnixListener, VmError> {
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
struct Clients {
    waiting: std::collections::HashMap<String, UnixStream>,
    attached: Vec<UnixStream>,
    /// The workload's process name, which attached clients' input is for.
    workload: String,
    /// Whether the workload's stdin is open (`-i`), so that an attached client may write.
    stdin_open: bool,
    next: u64,
    /// Bounded: a client sending faster than the agent takes it (a large `cp` in) waits
    /// in its socket instead of filling the monitor's memory.
    from_clients: std::sync::mpsc::SyncSender<Request>,
    requests: std::sync::mpsc::Receiver<Request>,
}

/// Requests from clients queued in the monitor, at most; and relayed per turn of its loop, at
/// most, so that the workload's output keeps flowing during a large `cp` in.
const CLIENT_QUEUE: usize = 16;

/// The largest frame of input a client may send (a `cp` in chunk, base64 and all): with
/// [`CLIENT_QUEUE`], what clients' input may hold of the monitor's memory.
const CLIENT_INPUT_FRAME: usize = 2 * super::protocol::COPY_CHUNK;

/// Clients served at once (waiting for an exec's output, or attached), at most: each holds a
/// socket and, when it sends input, a thread.
const MAX_CLIENTS: usize = 64;

/// A client that does not take its output for this long is dropped, not waited for.
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A client's request on its way to the agent: what its answer goes with.
struct ClientRequest {
    stream: UnixStream,
    /// The id of the client's request, which its answer carries.
    id: u64,
    /// The process started for the client, whose output it waits for.
    name: Option<String>,
    /// The client sends input for that process.
    talks: bool,
}

/// Answers a client's request with an error of the monitor's own.
fn refuse(stream: &mut UnixStream, id: u64, message: String) {
    let error = Response::Error {
        kind: super::protocol::ErrorKind::BadRequest,
        message,
    };
    let _ = super::protocol::write_frame(stream, id, Message::Response(error));
}

/// Reads an `exec -i`/`-t` client's frames until it goes, naming its process in each.
fn read_client_input(
    mut stream: UnixStream,
    process: String,
    to: std::sync::mpsc::SyncSender<Request>,
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
            _ => continue,
        };
        if to.send(request).is_err() {
            return;
        }
    }
}

impl Clients {
    fn new(workload: &str, stdin_open: bool) -> Self {
        let (from_clients, requests) = std::sync::mpsc::sync_channel(CLIENT_QUEUE);
        Clients {
            waiting: Default::default(),
            attached: Vec::new(),
            workload: workload.to_string(),
            stdin_open,
            next: 0,
            from_clients,
            requests,
        }
    }

    /// A name for a process started for a client (`exec-3`, `copy-4`).
    fn new_name(&mut self, kind: &str) -> String {
        self.next += 1;
        format!("{kind}-{}", self.next)
    }

    /// Whether any client waits for output or may send input.
    fn any(&self) -> bool {
        !self.waiting.is_empty() || !self.attached.is_empty()
    }

    /// Whether [`MAX_CLIENTS`] are served, once those that hung up are let go.
    fn full(&mut self) -> bool {
        self.waiting.retain(|_, s| !hung_up(s));
        self.attached.retain(|s| !hung_up(s));
        self.waiting.len() + self.attached.len() >= MAX_CLIENTS
    }

    /// Reads a client's one request: what to ask the agent for it, or None when it was
    /// answered here (an attach, a refusal).
    fn take(&mut self, mut stream: UnixStream) -> Option<(ClientRequest, Request)> {
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
                    | Request::CopyIn { .. }
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
            Message::Request(Request::CopyIn { path, as_is, .. }) => {
                let process = self.new_name("copy");
                talks = true; // the archive arrives as the client's input
                (
                    Request::CopyIn {
                        process: process.clone(),
                        path,
                        as_is,
                    },
                    Some(process),
                )
            }
            Message::Request(r @ (Request::Stats | Request::Top | Request::Freeze { .. })) => {
                (r, None)
            }
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

    /// Gives the client the agent's answer; one whose process now runs waits for its output
    /// (and sends its input).
    fn answer(&mut self, client: ClientRequest, answer: Result<Response, VmError>) {
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
                    std::thread::spawn(move || read_client_input(reader, process, to));
                }
                self.waiting.insert(name, stream);
            }
        }
    }

    /// Takes an `attach` client: from now on it gets the workload's output and exit, and its
    /// input goes to the workload while its stdin is open.
    fn attach(&mut self, mut stream: UnixStream, id: u64, stdin: bool) {
        let ok = Message::Response(Response::Ok);
        if super::protocol::write_frame(&mut stream, id, ok).is_err() {
            return;
        }
        if stdin && self.stdin_open {
            if let Ok(reader) = stream.try_clone() {
                let (to, process) = (self.from_clients.clone(), self.workload.clone());
                std::thread::spawn(move || read_client_input(reader, process, to));
            }
        }
        self.attached.push(stream);
    }

    /// An event of the workload goes to every attached client; one that has gone is dropped.
    fn broadcast(&mut self, event: &Event) {
        self.attached.retain_mut(|s| {
            super::protocol::write_frame(s, 0, Message::Event(event.clone())).is_ok()
        });
    }

    /// An event of an `exec`'d process goes to the client waiting for it.
    fn forward(&mut self, event: Event) {
        let (name, last) = (
            event.process().to_string(),
            matches!(event, Event::Exited { .. }),
        );
        let gone = match self.waiting.get_mut(&name) {
            Some(s) => super::protocol::write_frame(s, 0, Message::Event(event)).is_err(),
            None => false,
        };
        if last || gone {
            self.waiting.remove(&name);
        }
    }
}

/// Whether the client at the other end of `stream` has closed it.
fn hung_up(stream: &UnixStream) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::empty())];
    poll(&mut fds, PollTimeout::ZERO).is_ok()
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR))
}

/// Waits for the engine to end after the agent's power-off; kills it if it does not.
fn stop_engine(child: &mut EngineProcess) {
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

/// The guest's console and the engine's output of a running VM, drained into their logs.
pub(crate) struct VmLogs {
    console: LogDrain,
    engine: LogDrain,
}

/// How long an error message waits for what a stopping engine wrote last.
const LOG_SETTLE: Duration = Duration::from_millis(500);

impl VmLogs {
    fn drain(
        console: super::console::LogPipe,
        engine: super::console::LogPipe,
    ) -> Result<VmLogs, VmError> {
        Ok(VmLogs {
            console: console.drain()?,
            engine: engine.drain()?,
        })
    }

    /// Waits (bounded) until both logs hold all the engine wrote: it has gone.
    fn settle(&self) {
        self.console.settle(SHUTDOWN_TIMEOUT);
        self.engine.settle(SHUTDOWN_TIMEOUT);
    }

    /// The console's last lines, once what a stopping engine wrote last is in.
    fn console_tail(&self) -> String {
        self.console.settle(LOG_SETTLE);
        self.console.tail()
    }

    fn engine_tail(&self) -> String {
        self.engine.settle(LOG_SETTLE);
        self.engine.tail()
    }
}

fn with_console(e: VmError, logs: &VmLogs) -> VmError {
    match e {
        VmError::AgentGone | VmError::AgentTimeout(_) => VmError::EngineExited(format!(
            "{e}; guest console: {}; engine: {}",
            logs.console_tail(),
            logs.engine_tail()
        )),
        other => other,
    }
}
