//! The guest layout of a new VM container: laid out like a container (the same record, name,
//! OCI spec and network plan, from the container folder's shared code), then adapted to a
//! guest: the workload shares the guest's network stack, `-v` volumes become disks the agent
//! mounts, /etc files travel in the create request.

use std::path::{Path, PathBuf};

use super::launch::*;
use super::protocol::{CreateRequest, GuestFile, GuestNetwork, GuestVolume};
use crate::container::options::{RunOptions, Volume};
use crate::container::sandbox::Isolation;
use crate::container::spec::{self, SpecContext};
use crate::container::state::State;
use crate::container::store::ContainerStore;
use crate::container::{id, network, ContainerError};
use crate::image::Image;
use crate::linux::cgroups::{self, CgroupMode, CgroupPaths};

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
    if opts.uts_host {
        return no("--uts host (a VM has its own kernel)");
    }
    if opts.pid_host {
        return no("--pid host (a VM has its own kernel)");
    }
    if !opts.link_local_ips.is_empty() {
        return no("--link-local-ip (the agent sets the guest's one address)");
    }
    let t = &opts.tuning;
    if let Some(d) = t.devices.first() {
        return Err(ContainerError::InvalidArgument(format!(
            "--device {} is not available with --isolation vm: the guest's kernel has none of the host's devices",
            d.host.display()
        )));
    }
    if let Some(r) = t.cgroup_rules.first() {
        return Err(ContainerError::InvalidArgument(format!(
            "--device-cgroup-rule {:?} is not available with --isolation vm: the guest's kernel has none of the host's devices",
            r.show()
        )));
    }
    if t.oom_kill_disable {
        return no("--oom-kill-disable (the guest's cgroup v2 has no switch for the OOM killer)");
    }
    if t.memory_swappiness.is_some() {
        return no("--memory-swappiness (the guest's cgroup v2 has no per-cgroup swappiness)");
    }
    if t.blkio_weight.is_some() {
        return no("--blkio-weight (the guest's kernel weighs no block I/O)");
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

/// The container's record, spec and disks; returns its state and what the agent will be asked.
pub(super) fn lay_out(
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

pub(super) fn lay_out_named(
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
        cgroup: None,
        userns_base: None,
    };
    let (opts, claim) = crate::container::volumes::claim(store, opts, image, true)?;
    let opts = network::with_gateway_hosts(store, opts)?;
    let opts: &RunOptions = &opts;
    let mut spec = spec::build(opts, image, &ctx)?;
    if opts.network != crate::net::NetworkMode::None {
        share_guest_network(&mut spec);
    }
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
    let mut state = State::creating(
        id,
        name,
        opts,
        image,
        &spec,
        Isolation::Vm,
        endpoint.clone(),
    );
    // The engine's cgroup, placed as a container's would be.
    state.cgroup = host_cgroup(opts.cgroup_parent.as_deref(), id)?;
    state.healthcheck =
        crate::container::health::configured(store.root(), image, opts.healthcheck.as_ref())?;
    store.save(&state)?;
    crate::events::container(store.root(), "create", &state, &[]);
    claim.keep();
    let network = endpoint.as_ref().map(|e| GuestNetwork {
        address: e.ip,
        prefix: e.prefix,
        gateway: e.gateway,
        mac: Some(e.mac),
    });
    let create = CreateRequest {
        id: id.to_string(),
        spec,
        layers: Vec::new(),
        upper: "upper".into(),
        files: guest_files,
        network,
        volumes,
        root_dir: None,
    };
    Ok((state, create, opts.volumes.clone()))
}

/// Where the agent mounts `-v` volume `i` in the guest.
pub(super) fn guest_volume_path(i: usize) -> String {
    format!("/run/capsa/volumes/{i}")
}

/// A VM cannot bind-mount host paths: each volume becomes a disk (serial `v<i>`) that the
/// agent mounts at a guest path, and the spec's bind mount takes it from there.
pub(super) fn volumes_from_disks(
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
            read_only: v.read_only,
        });
    }
    guest
}

/// The workload uses the guest's own network stack (its eth0 is the container's): the VM is
/// the network boundary, as a Kata pod's VM is, so no network namespace is made inside.
/// Not for `--network none`: that workload keeps a namespace of its own with only loopback,
/// so whatever NIC the guest has (a template's, on an unconnected port) is not its.
pub(super) fn share_guest_network(spec: &mut oci_spec::runtime::Spec) {
    if let Some(linux) = spec.linux_mut() {
        if let Some(ns) = linux.namespaces_mut() {
            ns.retain(|n| n.typ() != oci_spec::runtime::LinuxNamespaceType::Network);
        }
    }
}

/// Where a VM container's engine goes on this host: as a container's cgroup would.
pub(super) fn host_cgroup(parent: Option<&str>, id: &str) -> Result<CgroupPaths, ContainerError> {
    let mode = CgroupMode::detect().ok_or_else(|| {
        ContainerError::Vm("the engine's jail needs a cgroup file system at /sys/fs/cgroup".into())
    })?;
    cgroups::resolve_paths(mode, parent, id).map_err(|e| ContainerError::Vm(e.to_string()))
}
