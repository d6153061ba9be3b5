//! One VM container from create to exit: laid out ([`super::layout`]), booted
//! ([`super::boot`]), its workload created, started and relayed ([`super::relay`]) in the
//! foreground or under a detached monitor ([`super::monitor`]); then the VM shut down and
//! the exit recorded (or the container removed with `--rm`).

use std::time::SystemTime;

use super::artifacts::GuestArtifacts;
pub use super::boot::{engine_record, EngineRecord};
use super::engine::Engine;
pub use super::launch::{guest_mib_for, DEFAULT_GUEST_MIB};
use super::{artifacts, engine, template};
use super::{boot::*, launch::*, layout::*, monitor::*, relay::*};
use crate::container::options::RunOptions;
use crate::container::sandbox::{Notice, Notify, RunOutcome};
use crate::container::session::Front;
use crate::container::state::{process_start_time, State, Status};
use crate::container::store::ContainerStore;
use crate::container::{network, ContainerError};
use crate::image::Image;

/// What both modes prepare before the VM starts: the engine and its reason, the guest's
/// kernel and initramfs, the container's record and the agent's create request.
pub(super) struct Prepared {
    pub(super) engine: Box<dyn Engine>,
    pub(super) guest: GuestArtifacts,
    pub(super) state: State,
    pub(super) launch: Launch,
}

pub(super) fn prepare(
    store: &ContainerStore,
    image: &Image,
    opts: &RunOptions,
    notify: Notify,
) -> Result<Prepared, ContainerError> {
    check_supported(opts)?;
    let vmm = opts.vmm.as_deref();
    let (engine, reason) = engine::select(vmm)?;
    notify(Notice::EngineChosen(reason));
    let guest = artifacts::locate(store.root())?;
    let mem_mib = guest_memory_mib(opts);
    let vcpus = opts.cpus.map(|c| c.ceil().max(1.0) as u32).unwrap_or(1);
    let disks = disk_count(image, opts, engine.as_ref())?;
    if disks > template::SLOTS && engine.qemu().is_some() && template::enabled() {
        notify(Notice::VmTemplate(format!(
            "this VM has {disks} disks, a template has {} slots: it boots cold",
            template::SLOTS
        )));
    } else {
        ensure_template(store, engine.as_ref(), &guest, mem_mib, vcpus, &mut *notify);
    }
    let (state, create, volumes) = lay_out(store, image, opts)?;
    let launch = Launch {
        mem_mib,
        vcpus,
        volumes,
        tty: opts.tty,
        interactive: opts.interactive,
        vmm: opts.vmm.clone(),
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

/// The VM's disks: the image's layers (the bottom ones merged when they are more than the
/// slots left: [`super::disks::layer_budget`]), the writable layer, the volumes. More than
/// the engine's machine takes is refused before anything is made.
fn disk_count(
    image: &Image,
    opts: &RunOptions,
    engine: &dyn Engine,
) -> Result<usize, ContainerError> {
    let volumes = opts.volumes.len();
    let layers = image
        .layer_dirs
        .len()
        .min(super::disks::layer_budget(volumes));
    let disks = layers + 1 + volumes;
    let nic = opts.network != crate::net::NetworkMode::None;
    let max = engine.max_disks(nic);
    if disks > max {
        return Err(ContainerError::InvalidArgument(format!(
            "{volumes} volumes are too many for a VM: with the image and its writable layer \
             that is {disks} disks, and a {} VM{} takes at most {max} (at most {} volumes)",
            engine.name(),
            if nic { " with a network" } else { "" },
            max.saturating_sub(2)
        )));
    }
    Ok(disks)
}

/// Builds the VM template the boot will restore from when it is missing or stale (said
/// once, when built); if it cannot be built, says why: the VM boots cold.
fn ensure_template(
    store: &ContainerStore,
    engine: &dyn Engine,
    guest: &GuestArtifacts,
    mem_mib: u64,
    vcpus: u32,
    notify: Notify,
) {
    let Some(qemu) = engine.qemu().filter(|_| template::enabled()) else {
        return;
    };
    match template::ensure(store.root(), qemu, guest, mem_mib, vcpus) {
        Ok(template::Ensured::Ready(_)) => {}
        Ok(template::Ensured::Built(t, why)) => notify(Notice::VmTemplate(format!(
            "built {} for {mem_mib} MiB, {vcpus} vCPU (the previous: {why})",
            t.key
        ))),
        Err(e) => notify(Notice::VmTemplate(format!("{e}; this VM boots cold"))),
    }
}

/// Runs a VM container to its end; its output goes to `front`, and with `-i` its input
/// comes from there.
pub fn run_foreground(
    store: &ContainerStore,
    image: Image,
    opts: &RunOptions,
    notify: Notify,
    front: &mut dyn Front,
) -> Result<RunOutcome, ContainerError> {
    let p = prepare(store, &image, opts, notify)?;
    let id = p.state.id.clone();
    // Before the input thread: the prober is forked from a single-threaded process.
    crate::container::health::watch_vm(store, &p.state);
    let input = match opts
        .interactive
        .then(|| stdin_relay(front.input()))
        .transpose()
    {
        Ok(input) => input,
        Err(e) => {
            let _ = crate::container::delete::remove(store, &id, true);
            return Err(ContainerError::Vm(format!("reading stdin: {e}")));
        }
    };
    let mut sink = Sink::Front { input, front };
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
    Ok(RunOutcome {
        id,
        exit_code,
        exec_error: None,
    })
}

/// Starts a VM container whose monitor (a forked capsa) relays its output to the container's
/// log; returns its ID once the workload has started.
pub fn run_detached(
    store: &ContainerStore,
    image: Image,
    opts: &RunOptions,
    notify: Notify,
) -> Result<String, ContainerError> {
    let p = prepare(store, &image, opts, notify)?;
    let id = p.state.id.clone();
    spawn_monitor(store, p)?;
    Ok(id)
}

/// `create --isolation vm`: the container's record, spec and launch parameters, no VM yet.
pub fn create(
    store: &ContainerStore,
    image: Image,
    opts: &RunOptions,
    notify: Notify,
) -> Result<String, ContainerError> {
    let p = prepare(store, &image, opts, notify)?;
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
pub fn start(store: &ContainerStore, id: &str, notify: Notify) -> Result<(), ContainerError> {
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
    notify(Notice::EngineChosen(reason));
    let guest = artifacts::locate(store.root())?;
    let (mem_mib, vcpus) = (launch.mem_mib, launch.vcpus);
    ensure_template(store, engine.as_ref(), &guest, mem_mib, vcpus, &mut *notify);
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

#[allow(clippy::too_many_arguments)]
pub(super) fn boot_and_run(
    store: &ContainerStore,
    state: State,
    launch: Launch,
    engine: &dyn Engine,
    guest: &GuestArtifacts,
    sink: &mut Sink<'_>,
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
        let signals = block_signals(launch.tty && matches!(sink, Sink::Front { .. }))?;
        let booted = boot(store, &state, &launch, &mut create, engine, guest, disks)?;
        // The process signals reach is this one (the VM's monitor): `stop` and `kill` signal
        // it and it forwards to the workload; SIGKILL ends it and, by PDEATHSIG, the engine.
        let me = std::process::id() as i32;
        let started = store.update(&state.id, |s| {
            s.status = Status::Running;
            s.restarting = false;
            s.pid = Some(me);
            s.pid_start_time = process_start_time(me);
            s.monitor_pid = Some(me);
            s.monitor_start_time = process_start_time(me);
            s.started_at = Some(crate::timefmt::rfc3339(SystemTime::now()));
            s.health = s
                .healthcheck
                .as_ref()
                .and_then(|h| h.command())
                .map(|_| crate::container::health::Health::starting());
        })?;
        if let Some(s) = &started {
            crate::events::container(store.root(), "start", s, &[]);
        }
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

/// Records the exit (or the failure) and removes the container with `--rm`.
pub(super) fn finish(
    store: &ContainerStore,
    id: &str,
    result: &Result<(i32, bool), ContainerError>,
    auto_remove: bool,
) -> Result<i32, ContainerError> {
    let (exit_code, oom) = match result {
        Ok(r) => *r,
        Err(_) => (125, false),
    };
    let updated = store.update(id, |s| {
        s.status = Status::Exited;
        // As a container's exit: restarting from this update when the policy will run it
        // again (see container::monitor::record_exit).
        s.restarting =
            s.restart_policy
                .should_restart(exit_code, s.restart_count, s.stopped_by_user);
        s.pid = None;
        s.exit_code = Some(exit_code);
        s.oom_killed = oom;
        s.finished_at = Some(crate::timefmt::rfc3339(SystemTime::now()));
        s.error = result.as_ref().err().map(|e| e.to_string());
    });
    if let Ok(Some(s)) = &updated {
        let code = exit_code.to_string();
        crate::events::container(store.root(), "die", s, &[("exitCode", &code)]);
    }
    let _ = std::fs::remove_file(super::control::path(id));
    if let Ok(state) = store.load(id) {
        network::disconnect(store, &state);
    }
    if auto_remove {
        crate::container::delete::remove(store, id, true)?;
    }
    Ok(exit_code)
}
