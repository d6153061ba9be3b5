//! The engine process: a VM's disks attached, its engine started in its jail with the
//! agent's socket, console and network, the agent's hello awaited; and the shut-down that
//! powers it off, waits for the engine and takes the jail down.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::agent::{guest_text, AgentClient};
use super::artifacts::GuestArtifacts;
use super::console::LogDrain;
use super::engine::{Disk, Engine, VmSpec};
use super::jail::{EngineProcess, Jail};
use super::protocol::{CreateRequest, Request, Response};
use super::{artifacts, disks, engine, template, VmError};
use super::{launch::*, layout::*};
use crate::container::state::{process_start_time, State, Status};
use crate::container::store::ContainerStore;
use crate::container::{id, network, ContainerError};
use crate::linux::cgroups::CgroupPaths;

/// The agent has this long to answer its first message (a TCG boot takes about 3 s).
pub(super) const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

pub(super) const KERNEL_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 quiet loglevel=4";
/// Under QEMU: microvm has no i8042, and the kernel's keyboard reset (`reboot=k`) polls its
/// absent status port about 1.3 s under TCG before it gives up; a triple fault (`reboot=t`)
/// resets at once, and `-no-reboot` makes the reset QEMU's exit. capsa-vmm keeps `reboot=k`:
/// its i8042 is its stop, and it reports a triple fault as a crash.
pub(super) const QEMU_KERNEL_CMDLINE: &str = "console=ttyS0 reboot=t panic=-1 quiet loglevel=4";

/// The disks: image layers top first as l0, l1, ... (the bottom ones merged into one when
/// there are more than the slots allow), the writable layer, the volumes v0, v1, ...
pub(super) fn attach_disks(
    store: &ContainerStore,
    image: &[PathBuf],
    files: &VmFiles,
    volumes: &[crate::container::options::Volume],
    create: &mut CreateRequest,
) -> Result<Vec<Disk>, VmError> {
    let mut disks = Vec::new();
    let layers = disks::image_disks(store.root(), image, disks::layer_budget(volumes.len()))?;
    for (i, path) in layers.into_iter().enumerate() {
        let serial = format!("l{i}");
        disks.push(Disk {
            path,
            serial: serial.clone(),
            read_only: true,
        });
        create.layers.push(serial);
    }
    disks::ensure_writable_disk(store.root(), &files.upper())?;
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

/// A booted VM: its jailed engine, the agent's connection, what keeps its disks to itself.
pub(super) struct Booted {
    pub engine: EngineProcess,
    pub agent: AgentClient,
    pub(super) logs: VmLogs,
    pub(super) jail: Option<Jail>,
    pub(super) record: PathBuf,
    pub(super) _disks: std::fs::File,
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
            let began = Instant::now();
            let _ = self.agent.call(Request::Shutdown, Duration::from_secs(5));
            tracing::debug!(
                ms = began.elapsed().as_secs_f64() * 1e3,
                "vm shutdown answered"
            );
            stop_engine(&mut self.engine);
            tracing::debug!(ms = began.elapsed().as_secs_f64() * 1e3, "vm engine ended");
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
pub(super) fn boot(
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
    // The template, with this VM's RAM: the template's shared memfd, or a copy of its RAM
    // (a template removed or rebuilt meanwhile: a cold boot).
    let template = restorable(store, engine, guest, launch, disk_list.len()).and_then(|t| {
        template::CloneRam::make(&t, &files.dir.join("ram"))
            .inspect_err(|e| tracing::info!(%e, "the VM template's RAM: cold boot"))
            .ok()
            .map(|ram| (t, ram))
    });
    let nic = match &state.endpoint {
        Some(e) => Some((engine::open_tap(&e.veth, template.is_none())?, e.mac)),
        None => None,
    };
    let (booted, restore, spawned) = start_engine(EngineLaunch {
        engine,
        guest,
        files: &files,
        vm_name: format!("{} ({})", state.name, id::short(&state.id)),
        disks: disk_list,
        template,
        nic,
        mem_mib: launch.mem_mib,
        vcpus: launch.vcpus,
        cpu: crate::container::monitor::cpu_limit_of(&launch.create.spec),
        cgroup: engine_cgroup(store, state)?,
        disks_lock: disks,
    })?;
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
    greet(booted, restore.as_ref(), spawned).map_err(Into::into)
}

/// What starting an engine takes, whoever's VM it is (a capsa container's, a pod's).
pub(super) struct EngineLaunch<'a> {
    pub(super) engine: &'a dyn Engine,
    pub(super) guest: &'a GuestArtifacts,
    /// Where its console and engine logs and its engine record go.
    pub(super) files: &'a VmFiles,
    /// How errors and logs name the VM.
    pub(super) vm_name: String,
    pub(super) disks: Vec<Disk>,
    /// The template it is restored from, with its RAM; None boots it cold.
    pub(super) template: Option<(template::Sound, template::CloneRam)>,
    /// The tap device and the guest's MAC.
    pub(super) nic: Option<(OwnedFd, [u8; 6])>,
    pub(super) mem_mib: u64,
    pub(super) vcpus: u32,
    /// The CPU quota the engine is held to once the workload starts.
    pub(super) cpu: Option<oci_spec::runtime::LinuxCpu>,
    /// The engine's cgroup.
    pub(super) cgroup: CgroupPaths,
    /// The held lock of the VM's disks.
    pub(super) disks_lock: std::fs::File,
}

/// Starts the engine in a jail of its own: its logs drained, its record written. The VM
/// has not answered yet ([`greet`] waits for it).
pub(super) fn start_engine(
    l: EngineLaunch,
) -> Result<(Booted, Option<template::Restore>, Instant), VmError> {
    let (agent, engine_end) =
        UnixStream::pair().map_err(|e| VmError::Io(format!("agent socket pair: {e}")))?;
    // The console and the engine's output go through pipes the monitor drains into logs of
    // bounded size: the guest may write its console without end, the host file stays small.
    let (console, console_end) = super::console::open(&l.files.console_log())?;
    let (engine_out, engine_out_end) = super::console::open(&l.files.engine_log())?;
    let vm = VmSpec {
        cmdline: if l.engine.qemu().is_some() {
            QEMU_KERNEL_CMDLINE
        } else {
            KERNEL_CMDLINE
        }
        .into(),
        mem_mib: l.mem_mib,
        vcpus: l.vcpus,
        disks: l.disks,
        agent: OwnedFd::from(engine_end),
        console: console_end,
        nic: l.nic,
    };
    let template_key = l.template.as_ref().map(|(t, _)| t.key.clone());
    let (mut cmd, restore) = match l.template.zip(l.engine.qemu()) {
        Some(((t, ram), qemu)) => {
            let shared_ram = ram.is_shared();
            tracing::info!(template = %t.key, shared_ram, "vm restored from template");
            let (cmd, restore) = template::restore_command(qemu, &t, vm, ram)?;
            (cmd, Some(restore))
        }
        None => (l.engine.command(vm)?, None),
    };
    let jail = Jail::prepare(
        l.cgroup,
        l.mem_mib + l.engine.overhead_mib(),
        l.cpu,
        cmd.kvm,
        &l.guest.kernel,
        &l.guest.initramfs,
    )?;
    if let Some(restore) = &restore {
        // A clone's own copy is for its engine's uid alone.
        if let Err(e) = restore.ram.give_to(jail.uid.uid) {
            jail.destroy();
            return Err(e);
        }
    } else {
        cmd.read_write.clear();
    }
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
            return Err(e);
        }
    };
    let logs = match VmLogs::drain(console, engine_out) {
        Ok(logs) => logs,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            jail.destroy();
            return Err(e);
        }
    };
    let record = EngineRecord {
        engine: l.engine.name().into(),
        pid: child.id(),
        pid_start_time: process_start_time(child.id()),
        uid: jail.uid.uid,
        cgroup: jail.cgroup.clone(),
        seccomp,
        template: template_key,
    };
    let _ = crate::fsutil::write_json_atomic(&l.files.engine_record(), &record);
    let booted = Booted {
        engine: child,
        agent: AgentClient::new(agent, &l.vm_name),
        logs,
        jail: Some(jail),
        record: l.files.engine_record(),
        _disks: l.disks_lock,
    };
    Ok((booted, restore, spawned))
}

/// Waits for the agent's hello (a restored VM's state loaded first); a VM that does not
/// answer is shut down.
pub(super) fn greet(
    mut booted: Booted,
    restore: Option<&template::Restore>,
    spawned: Instant,
) -> Result<Booted, VmError> {
    let hello = match restore {
        Some(restore) => greet_restored(&mut booted, restore, spawned),
        None => booted.agent.call(Request::Hello, BOOT_TIMEOUT),
    };
    match hello {
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
            Err(VmError::Agent(format!("{} to hello", other.kind())))
        }
        Err(e) => {
            let e = explained(e, &mut booted);
            booted.shut_down();
            Err(e)
        }
    }
}

/// A restored VM's first words: its template's state loaded (its RAM mapped: see
/// [`template::Restore::load`]), the agent's hello, then `Restored`. A
/// failed load ends the engine: nothing of it is used.
fn greet_restored(
    booted: &mut Booted,
    restore: &template::Restore,
    spawned: Instant,
) -> Result<Response, VmError> {
    let ms = || spawned.elapsed().as_secs_f64() * 1000.0;
    let loaded = restore.load(booted.engine.id());
    if let Err(e) = loaded {
        // An engine that quit by itself refused the template's state (QEMU says why in
        // its log): no later VM is restored from it; the next one builds it again.
        let refused = exits_by_itself(&mut booted.engine, Duration::from_secs(2))
            .is_some_and(|status| status.code().is_some_and(|c| c != 0));
        let _ = booted.engine.kill();
        let _ = booted.engine.wait();
        let discarded = if refused {
            restore.discard()
        } else {
            String::new()
        };
        return Err(VmError::EngineExited(format!(
            "restoring VM template {}: {e}; engine: {}{discarded}",
            restore.key(),
            booted.logs.engine_tail()
        )));
    }
    tracing::debug!(ms = ms(), "vm template state loaded");
    let hello = booted.agent.call(Request::Hello, BOOT_TIMEOUT)?;
    tracing::debug!(ms = ms(), "vm agent hello");
    let restored = template::Restore::restored_request()?;
    match booted.agent.call(restored, REQUEST_TIMEOUT)? {
        Response::Ok => Ok(hello),
        other => Err(VmError::Agent(format!("{} to restored", other.kind()))),
    }
}

/// How `engine` ended, if it ends within `limit` without being killed.
fn exits_by_itself(
    engine: &mut super::jail::EngineProcess,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match engine.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// The template this VM starts from, if templates are on, the engine is QEMU, the
/// container's disks fit the template's slots and the template is sound; else it boots cold.
fn restorable(
    store: &ContainerStore,
    engine: &dyn Engine,
    guest: &GuestArtifacts,
    launch: &Launch,
    disks: usize,
) -> Option<template::Sound> {
    let qemu = engine.qemu().filter(|_| template::enabled())?;
    if disks > template::SLOTS {
        tracing::info!(disks, "more disks than a VM template has slots: cold boot");
        return None;
    }
    template::usable(store.root(), qemu, guest, launch.mem_mib, launch.vcpus)
        .inspect_err(|why| tracing::info!(%why, "no VM template: cold boot"))
        .ok()
}

/// Boots stopped (or created) container `id`'s VM for a copy alone: jailed as always, its
/// agent mounts the container's root without creating the workload. Refused while another
/// engine has its disks (the VM is starting).
pub(super) fn boot_without_workload(
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
pub(super) fn engine_cgroup(
    store: &ContainerStore,
    state: &State,
) -> Result<CgroupPaths, ContainerError> {
    if !state.cgroup.dirs.is_empty() {
        return Ok(state.cgroup.clone());
    }
    let paths = host_cgroup(None, &state.id)?;
    store.update(&state.id, |s| s.cgroup = paths.clone())?;
    Ok(paths)
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
    /// The VM template it was restored from (none: booted cold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

/// The record of container `id`'s engine while it runs (None when it does not).
pub fn engine_record(store: &ContainerStore, id: &str) -> Option<EngineRecord> {
    let path = VmFiles::new(&store.dir(id)).engine_record();
    let record: EngineRecord = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    (process_start_time(record.pid) == record.pid_start_time).then_some(record)
}

/// Waits for the engine to end after the agent's power-off; kills it if it does not.
pub(super) fn stop_engine(child: &mut EngineProcess) {
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
pub(super) struct VmLogs {
    pub(super) console: LogDrain,
    pub(super) engine: LogDrain,
}

/// How long an error message waits for what a stopping engine wrote last.
pub(super) const LOG_SETTLE: Duration = Duration::from_millis(500);

impl VmLogs {
    pub(super) fn drain(
        console: super::console::LogPipe,
        engine: super::console::LogPipe,
    ) -> Result<VmLogs, VmError> {
        Ok(VmLogs {
            console: console.drain()?,
            engine: engine.drain()?,
        })
    }

    /// Waits (bounded) until both logs hold all the engine wrote: it has gone.
    pub(super) fn settle(&self) {
        self.console.settle(SHUTDOWN_TIMEOUT);
        self.engine.settle(SHUTDOWN_TIMEOUT);
    }

    /// The console's last lines, once what a stopping engine wrote last is in.
    pub(super) fn console_tail(&self) -> String {
        self.console.settle(LOG_SETTLE);
        self.console.tail()
    }

    pub(super) fn engine_tail(&self) -> String {
        self.engine.settle(LOG_SETTLE);
        self.engine.tail()
    }
}

/// An error met while the VM runs, with what explains it: the guest's console and the
/// engine's log when the agent went silent.
pub(super) fn with_console(e: VmError, logs: &VmLogs) -> VmError {
    match e {
        VmError::AgentGone | VmError::AgentTimeout(_) => VmError::EngineExited(format!(
            "{e}; guest console: {}; engine: {}",
            logs.console_tail(),
            logs.engine_tail()
        )),
        other => other,
    }
}

/// [`with_console`], and for any other error of a VM whose engine has exited, the
/// engine's last words: they are why (QEMU refusing a kernel or a device state says so
/// in its log, while the agent's connection only breaks).
fn explained(e: VmError, booted: &mut Booted) -> VmError {
    // The agent's connection breaks as the engine exits: give the exit a moment.
    let gone = exits_by_itself(&mut booted.engine, Duration::from_secs(1)).is_some();
    match with_console(e, &booted.logs) {
        VmError::EngineExited(text) => VmError::EngineExited(text),
        other if gone => {
            VmError::EngineExited(format!("{other}; engine: {}", booted.logs.engine_tail()))
        }
        other => other,
    }
}
