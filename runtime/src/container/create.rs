//! Creating a container: reserve its name, lay out its folder, write the spec, make the
//! cgroup, compile seccomp (cached), then clone the init, which waits at the start gate.
//! A failure at any step removes everything made so far.

use super::options::RunOptions;
use super::spec::{self, SpecContext};
use super::state::{process_start_time, State, Status};
use super::store::ContainerStore;
use super::{id, network, userns, ContainerError};
use crate::image::Image;
use crate::linux::cgroups::{self, CgroupManager, CgroupMode};
use crate::linux::process::{self, exec_fifo, InitConfig, InitStdio};
use crate::linux::rootfs::OverlayLayers;
use crate::linux::seccomp::compile;
use oci_spec::runtime::Spec;
use seccompiler::BpfProgram;
use std::os::fd::OwnedFd;

/// A container laid out on disk, ready for its init to be cloned.
pub struct Prepared {
    /// The recorded state (status `creating`).
    pub state: State,
    /// The OCI spec, as written to config.json.
    pub spec: Spec,
    /// The overlay's layers.
    pub layers: OverlayLayers,
    /// Compiled seccomp filters.
    pub seccomp: Vec<BpfProgram>,
    /// The cgroup, created and limited.
    pub cgroup: Box<dyn CgroupManager>,
}

/// Lays out a new container for `image` as `opts` describe it.
pub fn prepare(
    store: &ContainerStore,
    image: Image,
    opts: &RunOptions,
) -> Result<Prepared, ContainerError> {
    let id = id::new_id();
    let name = reserve(store, opts, &id)?;
    let result = lay_out(store, image, opts, &id, &name);
    if result.is_err() {
        discard(store, &id, &name, None);
    }
    result
}

fn reserve(store: &ContainerStore, opts: &RunOptions, id: &str) -> Result<String, ContainerError> {
    if let Some(name) = &opts.name {
        store.reserve_name(name, id)?;
        return Ok(name.clone());
    }
    // Generated names may collide; a few tries, then the ID-derived name.
    for _ in 0..8 {
        let name = id::random_name();
        if store.reserve_name(&name, id).is_ok() {
            return Ok(name);
        }
    }
    let name = format!("capsa_{}", id::short(id));
    store.reserve_name(&name, id)?;
    Ok(name)
}

fn lay_out(
    store: &ContainerStore,
    image: Image,
    opts: &RunOptions,
    id: &str,
    name: &str,
) -> Result<Prepared, ContainerError> {
    // Private to root: the writable layer below will hold what the workload makes there.
    let dir = store.create_dir(id)?;
    for d in [dir.upper(), dir.work(), dir.rootfs()] {
        std::fs::create_dir_all(&d).map_err(|e| ContainerError::io(&d, e))?;
    }
    let (opts, volumes) = super::volumes::claim(store, opts, &image, false)?;
    let opts = network::with_gateway_hosts(store, opts)?;
    let opts: &RunOptions = &opts;
    if opts.userns && opts.privileged {
        return Err(ContainerError::InvalidArgument(
            "--privileged and --userns=auto cannot be combined".into(),
        ));
    }
    // Recorded host-wide from here until `rm` (or `discard`) gives it back.
    let userns_base = opts
        .userns
        .then(|| allocate_userns(store, id))
        .transpose()?;
    let cgroup_mode = CgroupMode::detect();
    let mode = cgroup_mode.ok_or_else(|| setup_err(id, cgroups::CgroupError::NotMounted))?;
    let cgroup_paths = cgroups::resolve_paths(mode, opts.cgroup_parent.as_deref(), id)
        .map_err(|e| setup_err(id, e))?;
    let ctx = SpecContext {
        id,
        rootfs: &dir.rootfs(),
        dir: &dir.dir,
        cgroup_mode,
        cgroup: Some(&cgroup_paths),
        userns_base,
    };
    let spec = spec::build(opts, &image, &ctx)?;
    let hostname = spec.hostname().clone().unwrap_or_default();
    // Held, like the user-namespace range, until the state records the address.
    let (endpoint, _net_lock) = network::plan(store, opts, &image, id)?;
    network::write_etc_files(&dir, &hostname, opts, endpoint.as_ref())?;
    let config = serde_json::to_vec_pretty(&spec)
        .map_err(|e| ContainerError::io(&dir.config(), std::io::Error::other(e)))?;
    // A fresh folder: a torn config.json can only belong to a container still `creating`,
    // which `ps` shows as dead and `rm` removes. Private: it holds the `-e` values.
    crate::fsutil::write_private(&dir.config(), &config)
        .map_err(|e| ContainerError::io(&dir.config(), e))?;

    tracing::debug!(id, "spec written");
    let seccomp =
        compile::for_spec(&spec, &store.root().seccomp_cache()).map_err(|e| setup_err(id, e))?;
    tracing::debug!(id, "seccomp ready");
    exec_fifo::create(&dir.exec_fifo()).map_err(|e| ContainerError::io(&dir.exec_fifo(), e))?;
    let mut state = State::creating(
        id,
        name,
        opts,
        &image,
        &spec,
        super::sandbox::Isolation::Container,
        endpoint,
    );
    state.cgroup = cgroup_paths;
    state.userns_base = userns_base;
    state.healthcheck = super::health::configured(store.root(), &image, opts.healthcheck.as_ref())?;
    if userns_base.is_some() {
        for n in 0..image.layer_dirs.len() {
            let d = dir.dir.join("lower").join(n.to_string());
            std::fs::create_dir_all(&d).map_err(|e| ContainerError::io(&d, e))?;
        }
    }
    if let Some(base) = userns_base {
        // What the namespace's root must own: its writable layer, its /etc files, the gate.
        let owner = Some(nix::unistd::Uid::from_raw(base));
        let group = Some(nix::unistd::Gid::from_raw(base));
        for p in [
            dir.upper(),
            dir.work(),
            dir.exec_fifo(),
            dir.etc_file("hostname"),
            dir.etc_file("hosts"),
        ] {
            nix::unistd::chown(&p, owner, group).map_err(|e| ContainerError::io(&p, e.into()))?;
        }
    }
    store.save(&state)?;
    crate::events::container(store.root(), "create", &state, &[]);
    volumes.keep();
    let cgroup = cgroups::manager(&state.cgroup);
    let resources = super::spec::resources_of(&spec);
    if let Err(e) = cgroup.apply(&resources) {
        let _ = cgroup.destroy();
        return Err(setup_err(id, e));
    }
    tracing::debug!(id, "cgroup ready");
    Ok(Prepared {
        state,
        spec,
        layers: dir.overlay_layers(image.layer_dirs),
        seccomp,
        cgroup,
    })
}

fn setup_err(id: &str, e: impl std::fmt::Display) -> ContainerError {
    ContainerError::Setup {
        id: id::short(id).to_string(),
        reason: e.to_string(),
    }
}

/// Clones the init with `stdio`; on success the container is `created`, its init waiting at
/// the start gate. `monitor` is the process that will wait for it. Returns the init's PID
/// and, with a terminal, the pty master it opened on the container's devpts.
pub fn spawn_init(
    store: &ContainerStore,
    prepared: &mut Prepared,
    stdio: InitStdio<'_>,
) -> Result<(i32, Option<OwnedFd>), ContainerError> {
    let id = prepared.state.id.clone();
    let dir = store.dir(&id);
    let init_program = if process::init::wants_init(&prepared.spec) {
        match process::capsa_init::load_host() {
            Ok(p) => Some(p),
            Err(e) => {
                undo_spawn(store, prepared);
                return Err(setup_err(&id, e));
            }
        }
    } else {
        None
    };
    let cfg = InitConfig {
        spec: &prepared.spec,
        layers: Some(&prepared.layers),
        exec_fifo: &dir.exec_fifo(),
        stdio,
        seccomp: std::mem::take(&mut prepared.seccomp),
        cgroup: prepared.cgroup.as_ref(),
        init_program: init_program.as_ref(),
        preserve_fds: 0,
        hook_state: None,
        runtime_hooks: None,
    };
    let (pid, terminal) = match process::spawn(&cfg) {
        Ok(s) => (s.pid, s.terminal),
        Err(e) => {
            undo_spawn(store, prepared);
            return Err(setup_err(&id, e));
        }
    };
    let connected = network::connect(store, &prepared.state, pid)
        .and_then(|()| network_sysctls(&prepared.spec, pid, &id));
    if let Err(e) = connected {
        // The init waits at the start gate: it has run nothing of the workload.
        // SAFETY: kill(2) and waitpid(2) on our own child; no memory is shared.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        network::disconnect(store, &prepared.state);
        undo_spawn(store, prepared);
        return Err(e);
    }
    tracing::debug!(id, pid, "init ready");
    let me = std::process::id() as i32;
    let start_time = process_start_time(pid);
    let updated = store.update(&id, |s| {
        s.status = Status::Created;
        // A restart stays `restarting` until the new run starts (start clears it): `rm`
        // without -f never meets it as a plain created container in between.
        s.pid = Some(pid);
        s.pid_start_time = start_time;
        s.monitor_pid = Some(me);
        s.monitor_start_time = process_start_time(me);
    })?;
    if let Some(s) = updated {
        prepared.state = s;
    }
    for e in prepared.state.endpoints() {
        network::refresh_hosts(store, &e.network);
    }
    Ok((pid, terminal))
}

/// Writes the spec's `net.` sysctls in the init's network namespace once its interfaces
/// exist (the init wrote those it could; one naming eth0 needs eth0 there first).
fn network_sysctls(spec: &Spec, pid: i32, id: &str) -> Result<(), ContainerError> {
    let own_network =
        crate::linux::namespaces::has(spec, oci_spec::runtime::LinuxNamespaceType::Network);
    let sysctls = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref());
    for (key, value) in sysctls.into_iter().flatten() {
        // The init refused any other shape of key already.
        if !own_network || !key.starts_with("net.") || key.contains('/') {
            continue;
        }
        crate::net::write_sysctl_in(pid, &key.replace('.', "/"), value)
            .map_err(|e| setup_err(id, format!("sysctl {key}: {e}")))?;
    }
    Ok(())
}

/// Takes back a failed spawn: a container being created goes entirely, with the anonymous
/// volumes made for it (each may hold a copy of the image's data: a run refused again and
/// again must not fill the disk); one being started again keeps its record and files (only
/// its new cgroup goes), so a failed `start` never loses a container.
pub(crate) fn undo_spawn(store: &ContainerStore, prepared: &Prepared) {
    if prepared.state.status == Status::Creating {
        discard(
            store,
            &prepared.state.id,
            &prepared.state.name,
            Some(prepared.cgroup.as_ref()),
        );
        let _ = super::volumes::remove_anonymous(store, &prepared.state.volumes);
    } else {
        let _ = prepared.cgroup.destroy();
    }
}

/// Reserves a host-wide ID range for container `id` (see [`super::userns`]). Ranges that
/// containers of this store recorded before the registry existed are recorded first, so
/// no new container is given one of them.
fn allocate_userns(store: &ContainerStore, id: &str) -> Result<u32, ContainerError> {
    let root = store.root().dir().to_path_buf();
    let holder = |id: &str| userns::Holder {
        root: root.clone(),
        id: id.to_string(),
    };
    let predating: Vec<(u32, userns::Holder)> = store
        .ids()
        .iter()
        .filter(|other| *other != id)
        .filter_map(|other| store.load(other).ok())
        .filter_map(|s| Some((s.userns_base?, holder(&s.id))))
        .collect();
    userns::Registry::host()
        .reserve(&holder(id), &predating)
        .map_err(|e| setup_err(id, e))
}

/// Gives back the user-namespace range of container `id` of `store` (`base` when known).
pub fn release_userns(store: &ContainerStore, id: &str, base: Option<u32>) {
    let holder = userns::Holder {
        root: store.root().dir().to_path_buf(),
        id: id.to_string(),
    };
    if let Err(e) = userns::Registry::host().release(&holder, base) {
        // The record then stays until an allocation finds the container gone.
        tracing::warn!(id, "{e}");
    }
}

/// Removes what a failed creation made: cgroup, name, user-namespace range, folder.
pub fn discard(store: &ContainerStore, id: &str, name: &str, cgroup: Option<&dyn CgroupManager>) {
    if let Some(c) = cgroup {
        let _ = c.destroy();
    }
    store.release_name(name, id);
    release_userns(store, id, None);
    let _ = std::fs::remove_dir_all(store.dir(id).dir);
}
