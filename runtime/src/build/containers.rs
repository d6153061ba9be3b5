//! The build's containers: a RUN step runs in a container made from the image so far
//! (this process its monitor, its output relayed to the build's events) and its writable
//! layer is captured as `commit` captures one; a COPY/ADD step places its files in a
//! created container's root and is captured the same way. Each container is removed
//! afterwards, whatever happened.

use super::place::Placement;
use super::{BuildError, BuildEvent};
use crate::container::commit::CommitRequest;
use crate::container::options::RunOptions;
use crate::container::session::{End, Front, Session, Stream};
use crate::container::ContainerStore;
use crate::image::commit::CommitOptions;
use crate::image::Image;
use serde_json::{Map, Value};
use std::io::Read;

/// What a RUN step's container is.
pub struct RunSpec {
    /// The argv: the shell and the command, or the exec form.
    pub argv: Vec<String>,
    /// The build's variables for the step (ARGs; the image's ENV comes with the image).
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub network: crate::net::NetworkMode,
    /// The bridge network joined: `bridge` or a user-defined network's name.
    pub network_name: String,
    pub add_hosts: Vec<(String, std::net::IpAddr)>,
    pub gateway_hosts: Vec<String>,
    pub shm_size: Option<u64>,
    pub cgroup_parent: Option<String>,
    pub isolation: crate::container::Isolation,
}

impl RunSpec {
    /// A container that is created and never started (its root is copied into or out of).
    fn idle(cgroup_parent: Option<String>) -> RunSpec {
        RunSpec {
            argv: vec!["/".into()],
            env: Vec::new(),
            workdir: None,
            user: None,
            network: crate::net::NetworkMode::None,
            network_name: "none".into(),
            add_hosts: Vec::new(),
            gateway_hosts: Vec::new(),
            shm_size: None,
            cgroup_parent,
            isolation: crate::container::Isolation::Container,
        }
    }
}

/// Options for a container of `image` running `argv`, Docker's defaults otherwise.
fn options(image: &Image, spec: &RunSpec) -> Result<RunOptions, BuildError> {
    let mut opts = RunOptions {
        name: None,
        env: spec.env.clone(),
        env_file_lines: Vec::new(),
        workdir: spec.workdir.clone().filter(|w| !w.is_empty()),
        user: spec.user.clone().filter(|u| !u.is_empty()),
        hostname: None,
        memory: None,
        cpus: None,
        pids_limit: None,
        read_only: false,
        volumes: Vec::new(),
        volumes_from: Vec::new(),
        volume_driver: None,
        tmpfs: Vec::new(),
        cap_add: Vec::new(),
        cap_drop: Vec::new(),
        seccomp: crate::container::options::SeccompChoice::Default,
        no_new_privileges: true,
        privileged: false,
        oom_score_adj: None,
        masked_paths: None,
        readonly_paths: None,
        cgroup_parent: spec.cgroup_parent.clone(),
        userns: false,
        uts_host: false,
        pid_host: false,
        restart_policy: Default::default(),
        stop_signal: None,
        stop_timeout: None,
        healthcheck: None,
        log_rotation: Default::default(),
        log_driver: Default::default(),
        interactive: false,
        stdin_once: false,
        tty: false,
        console_size: None,
        init: false,
        network: spec.network,
        network_name: spec.network_name.clone(),
        ip: None,
        mac: None,
        aliases: Vec::new(),
        link_local_ips: Vec::new(),
        endpoint_driver_opts: Default::default(),
        publish: Vec::new(),
        publish_all: false,
        expose: Vec::new(),
        dns: Vec::new(),
        add_hosts: spec.add_hosts.clone(),
        gateway_hosts: spec.gateway_hosts.clone(),
        tuning: crate::container::tuning::Tuning {
            shm_size: spec.shm_size,
            ..Default::default()
        },
        auto_remove: false,
        entrypoint: Some(String::new()),
        image: image.id.clone(),
        command: spec.argv.clone(),
        isolation: spec.isolation,
        vmm: None,
        labels: Default::default(),
        asked: Default::default(),
    };
    crate::container::options::check(&mut opts, &[])?;
    Ok(opts)
}

/// Removes the build container `id` when dropped (a failed step leaves none behind).
struct Removed<'a> {
    store: &'a ContainerStore,
    id: Option<String>,
}

impl Drop for Removed<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let _ = crate::api::remove_with_volumes(self.store, &id, true);
        }
    }
}

/// Runs `spec` over `image` and captures its changes as a new image (history entry
/// `created_by`); its ID. A non-zero exit is [`BuildError::RunFailed`].
pub fn run_step(
    store: &ContainerStore,
    image: Image,
    spec: &RunSpec,
    config: &Map<String, Value>,
    created_by: &str,
    step: &str,
    on: &mut dyn FnMut(BuildEvent),
) -> Result<String, BuildError> {
    if image.layer_dirs.is_empty() {
        return Err(BuildError::Step {
            step: step.to_string(),
            reason: "the image has no files yet (FROM scratch): nothing to run".into(),
        });
    }
    let opts = options(&image, spec)?;
    let mut front = Relay { on };
    let outcome = crate::api::run_foreground(store, image, &opts, &mut |_| {}, &mut front)?;
    let _removed = Removed {
        store,
        id: Some(outcome.id.clone()),
    };
    if let Some(reason) = outcome.exec_error {
        return Err(BuildError::Step {
            step: step.to_string(),
            reason,
        });
    }
    if outcome.exit_code != 0 {
        // Docker names the command as it ran, its argv joined (`/bin/sh -c exit 1`):
        // clients match that text.
        return Err(BuildError::RunFailed {
            command: spec.argv.join(" "),
            code: outcome.exit_code,
        });
    }
    commit(store, &outcome.id, created_by, config)
}

/// Places `stream` in a created container of `image` as `placement` says and captures
/// the change as a new image; its ID.
pub fn copy_step(
    store: &ContainerStore,
    image: Image,
    mut stream: std::fs::File,
    placement: &Placement,
    config: &Map<String, Value>,
    created_by: &str,
    cgroup_parent: Option<String>,
) -> Result<String, BuildError> {
    let spec = RunSpec::idle(cgroup_parent);
    let opts = options(&image, &spec)?;
    let id = crate::api::create(store, image, &opts, &mut |_| {})?;
    let _removed = Removed {
        store,
        id: Some(id.clone()),
    };
    let state = store.observe(&id)?;
    let placement = placement.clone();
    crate::container::cp::feed_into_root(
        store,
        &state,
        move |mut pipe| std::io::copy(&mut stream, &mut pipe).map(|_| ()),
        move |pipe| super::place::place(pipe, &placement),
    )?;
    commit(store, &id, created_by, config)
}

/// A tar stream of `path` in a created container of `image` (COPY --from).
pub fn copy_out(
    store: &ContainerStore,
    image: Image,
    path: &str,
    out: &mut (dyn std::io::Write + Send),
    cgroup_parent: Option<String>,
) -> Result<(), BuildError> {
    let spec = RunSpec::idle(cgroup_parent);
    let opts = options(&image, &spec)?;
    let id = crate::api::create(store, image, &opts, &mut |_| {})?;
    let _removed = Removed {
        store,
        id: Some(id.clone()),
    };
    let dest = crate::container::cp::CopyDest::Tar(out);
    crate::api::copy_out(store, &id, std::path::Path::new(path), dest, false)?;
    Ok(())
}

/// Captures container `id`'s changes with `config` as the new image's config.
fn commit(
    store: &ContainerStore,
    id: &str,
    created_by: &str,
    config: &Map<String, Value>,
) -> Result<String, BuildError> {
    let request = CommitRequest {
        pause: false,
        image: CommitOptions {
            created_by: created_by.to_string(),
            whole_config: Some(config.clone()),
            ..CommitOptions::default()
        },
    };
    Ok(crate::api::commit(store, id, request)?)
}

/// The build's front end of a RUN step: the workload's output as events, no input.
struct Relay<'a> {
    on: &'a mut dyn FnMut(BuildEvent),
}

impl Front for Relay<'_> {
    fn relay(&mut self, session: &mut dyn Session) -> End {
        loop {
            let mut pfds = session.interests();
            // SAFETY: `pfds` is a live array of pollfd of the length given.
            if unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) } < 0 {
                continue;
            }
            let on = &mut self.on;
            let mut out = |stream: Stream, data: &[u8]| {
                on(BuildEvent::Output(stream, data.to_vec()));
                true
            };
            if let Some(end) = session.on_ready(&pfds, &mut out) {
                return end;
            }
        }
    }

    fn output(&mut self, stream: Stream, data: &[u8]) {
        (self.on)(BuildEvent::Output(stream, data.to_vec()));
    }

    fn input(&mut self) -> Box<dyn Read + Send> {
        Box::new(std::io::empty())
    }

    fn window_size(&self) -> Option<(u16, u16)> {
        None
    }
}
