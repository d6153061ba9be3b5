//! A bundle's `config.json` as capsa-runc runs it: parsed with the failing field named,
//! every field the isolation core does not implement refused by name before anything is
//! created, then turned into the spec the core runs (absolute paths, the cgroup mount of
//! this host, the process's user as the core's annotations).

use super::RuntimeError;
use crate::linux::cgroups::{CgroupMode, CgroupPaths};
use crate::linux::namespaces::JOINABLE;
use crate::linux::process::init::USER_IDS_ANNOTATION;
use crate::linux::user::ExactIds;
use oci_spec::runtime::{LinuxNamespaceType, Mount, MountBuilder, Spec};
use std::path::{Path, PathBuf};

/// Annotations whose prefix belongs to capsa's own spec (the core reads them); a bundle
/// may not set them.
const CAPSA_PREFIX: &str = "io.capsa.";

/// Reads and parses `<bundle>/config.json`.
pub fn load(bundle: &Path) -> Result<Spec, RuntimeError> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|e| RuntimeError::Config {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let de = &mut serde_json::Deserializer::from_slice(&text);
    serde_path_to_error::deserialize(de).map_err(|e| RuntimeError::Config {
        path,
        reason: format!("{}: {}", e.path(), e.inner()),
    })
}

fn unsupported(field: impl Into<String>) -> RuntimeError {
    RuntimeError::Unsupported {
        field: field.into(),
        detail: String::new(),
    }
}

/// Whether a Linux security module is enabled on this host (a profile or label for it is
/// then refused; without it, ignored, as runc ignores them).
fn lsm_enabled(name: &str) -> bool {
    match name {
        "apparmor" => std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|v| v.trim() == "Y"),
        _ => Path::new("/sys/fs/selinux/enforce").exists(),
    }
}

/// Refuses, by name, every field of `spec` the core does not implement.
pub fn check_supported(spec: &Spec) -> Result<(), RuntimeError> {
    if spec.root().is_none() {
        return Err(unsupported("a config without root"));
    }
    if spec.domainname().as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(unsupported("domainname"));
    }
    if let Some(a) = spec.annotations() {
        let capsa_own = |k: &&String| {
            k.starts_with(CAPSA_PREFIX) && k.as_str() != super::vm::ISOLATION_ANNOTATION
        };
        if let Some(key) = a.keys().find(capsa_own) {
            return Err(unsupported(format!("annotation {key}")));
        }
    }
    check_process(spec)?;
    check_linux(spec)?;
    for m in spec.mounts().iter().flatten() {
        let options = m.options().clone().unwrap_or_default();
        if options.iter().any(|o| o == "idmap" || o == "ridmap") {
            return Err(unsupported(format!(
                "idmapped mounts (on {})",
                m.destination().display()
            )));
        }
    }
    Ok(())
}

fn check_process(spec: &Spec) -> Result<(), RuntimeError> {
    let Some(p) = spec.process() else {
        return Err(unsupported("a config without process"));
    };
    if p.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(unsupported("process.args empty"));
    }
    if p.apparmor_profile().as_ref().is_some_and(|s| !s.is_empty()) && lsm_enabled("apparmor") {
        return Err(unsupported("process.apparmorProfile"));
    }
    if p.selinux_label().as_ref().is_some_and(|s| !s.is_empty()) && lsm_enabled("selinux") {
        return Err(unsupported("process.selinuxLabel"));
    }
    if p.io_priority().is_some() {
        return Err(unsupported("process.ioPriority"));
    }
    if p.scheduler().is_some() {
        return Err(unsupported("process.scheduler"));
    }
    if p.exec_cpu_affinity().is_some() {
        return Err(unsupported("process.execCPUAffinity"));
    }
    Ok(())
}

fn check_linux(spec: &Spec) -> Result<(), RuntimeError> {
    let Some(l) = spec.linux() else {
        return Err(unsupported("a config without linux"));
    };
    let set = |o: bool, name: &str| if o { Err(unsupported(name)) } else { Ok(()) };
    set(l.intel_rdt().is_some(), "linux.intelRdt")?;
    set(l.personality().is_some(), "linux.personality")?;
    set(l.time_offsets().is_some(), "linux.timeOffsets")?;
    set(l.memory_policy().is_some(), "linux.memoryPolicy")?;
    set(
        l.net_devices().as_ref().is_some_and(|d| !d.is_empty()),
        "linux.netDevices",
    )?;
    set(
        l.mount_label().as_ref().is_some_and(|s| !s.is_empty()) && lsm_enabled("selinux"),
        "linux.mountLabel",
    )?;
    match l.rootfs_propagation().as_deref() {
        None | Some("") => {}
        Some(p) if crate::linux::rootfs::propagation(p).is_some() => {}
        Some(other) => return Err(unsupported(format!("linux.rootfsPropagation {other:?}"))),
    }
    // The root is assembled and pivoted into inside the init's mount namespace, its own
    // or one it joins: without one, that would be the caller's.
    let mount_namespaces: Vec<_> = l
        .namespaces()
        .iter()
        .flatten()
        .filter(|ns| ns.typ() == LinuxNamespaceType::Mount)
        .collect();
    if mount_namespaces.is_empty() {
        return Err(RuntimeError::Unsupported {
            field: "a config without a mount namespace".into(),
            detail: " (linux.namespaces must list type mount: the root is assembled and \
                     pivoted into there, which in the runtime's own namespace would change \
                     the host's mount table)"
                .into(),
        });
    }
    for path in mount_namespaces.iter().filter_map(|ns| ns.path().as_ref()) {
        check_joined_mount_namespace(path)?;
    }
    for ns in l.namespaces().iter().flatten() {
        match ns.typ() {
            LinuxNamespaceType::User if ns.path().is_some() => {
                return Err(unsupported("joining a user namespace by path"));
            }
            LinuxNamespaceType::Time => return Err(unsupported("the time namespace")),
            t if ns.path().is_some() && !JOINABLE.contains(&t) && t != LinuxNamespaceType::Pid => {
                return Err(unsupported(format!("joining a {t:?} namespace by path")));
            }
            _ => {}
        }
    }
    check_user_namespace(l)?;
    if let Some(s) = l.seccomp() {
        set(
            s.flags().as_ref().is_some_and(|f| !f.is_empty()),
            "linux.seccomp.flags",
        )?;
        set(s.listener_path().is_some(), "linux.seccomp.listenerPath")?;
    }
    if let Some(r) = l.resources() {
        check_resources(r, "linux.resources")?;
    }
    Ok(())
}

/// A mount namespace joined by path must not be the runtime's own: the init pivots into
/// the container's root there, which would move the root of every host process that
/// shares it (the caller's shell, its service manager).
fn check_joined_mount_namespace(path: &Path) -> Result<(), RuntimeError> {
    use std::os::unix::fs::MetadataExt;
    let joined = std::fs::metadata(path).map_err(|e| RuntimeError::Config {
        path: path.to_path_buf(),
        reason: format!("the mount namespace to join: {e}"),
    })?;
    let own = std::fs::metadata("/proc/self/ns/mnt")
        .map_err(RuntimeError::io("reading the runtime's mount namespace"))?;
    // PID 1's too: a runtime started in a namespace of its own would otherwise take the
    // host's for a stranger's.
    let host = std::fs::metadata("/proc/1/ns/mnt").ok();
    let same = |m: &std::fs::Metadata| (joined.dev(), joined.ino()) == (m.dev(), m.ino());
    if same(&own) || host.as_ref().is_some_and(same) {
        return Err(RuntimeError::Unsupported {
            field: format!("joining the mount namespace {}", path.display()),
            detail: ": it is the runtime's own or the host's, where pivoting into the \
                     container's root would move the host's processes with it"
                .into(),
        });
    }
    Ok(())
}

/// The host uid and gid that the user namespace's root maps to (None without a user
/// namespace, or when 0 is not mapped).
pub fn root_ids(l: &oci_spec::runtime::Linux) -> Option<(u32, u32)> {
    let host_of_zero = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps.iter()
            .flatten()
            .find_map(|m| (m.container_id() == 0 && m.size() > 0).then_some(m.host_id()))
    };
    Some((
        host_of_zero(l.uid_mappings())?,
        host_of_zero(l.gid_mappings())?,
    ))
}

/// A user namespace needs both ID maps, and maps need the namespace.
fn check_user_namespace(l: &oci_spec::runtime::Linux) -> Result<(), RuntimeError> {
    let userns = l
        .namespaces()
        .iter()
        .flatten()
        .any(|ns| ns.typ() == LinuxNamespaceType::User);
    let mapped = |m: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        m.as_ref().is_some_and(|m| !m.is_empty())
    };
    match (userns, mapped(l.uid_mappings()), mapped(l.gid_mappings())) {
        (true, true, true) if root_ids(l).is_none() => Err(RuntimeError::Unsupported {
            field: "a user namespace that does not map uid and gid 0".into(),
            detail: " (the init sets the container up as the namespace's root)".into(),
        }),
        (true, true, true) | (false, false, false) => Ok(()),
        (true, _, _) => Err(RuntimeError::Unsupported {
            field: "a user namespace without uidMappings and gidMappings".into(),
            detail: String::new(),
        }),
        (false, _, _) => Err(RuntimeError::Unsupported {
            field: "linux.uidMappings/gidMappings without a user namespace".into(),
            detail: String::new(),
        }),
    }
}

/// Refuses, by name, the limits capsa's cgroup managers do not apply (`prefix` names where
/// they are: the config's `linux.resources`, or `update`'s file).
pub fn check_resources(
    r: &oci_spec::runtime::LinuxResources,
    prefix: &str,
) -> Result<(), RuntimeError> {
    let mut unapplied: Vec<&str> = Vec::new();
    let mut note = |set: bool, name: &'static str| {
        if set {
            unapplied.push(name);
        }
    };
    note(r.network().is_some(), "network");
    note(r.rdma().as_ref().is_some_and(|h| !h.is_empty()), "rdma");
    note(
        r.unified().as_ref().is_some_and(|h| !h.is_empty()),
        "unified",
    );
    if let Some(m) = r.memory() {
        note(m.kernel().is_some(), "memory.kernel");
        note(m.kernel_tcp().is_some(), "memory.kernelTCP");
        note(m.use_hierarchy().is_some(), "memory.useHierarchy");
        note(
            m.check_before_update().is_some(),
            "memory.checkBeforeUpdate",
        );
    }
    if let Some(c) = r.cpu() {
        note(c.idle().is_some(), "cpu.idle");
        note(c.burst().is_some(), "cpu.burst");
        note(c.realtime_runtime().is_some(), "cpu.realtimeRuntime");
        note(c.realtime_period().is_some(), "cpu.realtimePeriod");
    }
    if let Some(b) = r.block_io() {
        let some = |l: &Option<Vec<oci_spec::runtime::LinuxThrottleDevice>>| {
            l.as_ref().is_some_and(|l| !l.is_empty())
        };
        note(b.leaf_weight().is_some(), "blockIO.leafWeight");
        note(
            b.weight_device().as_ref().is_some_and(|l| !l.is_empty()),
            "blockIO.weightDevice",
        );
        note(
            some(b.throttle_read_bps_device()),
            "blockIO.throttleReadBpsDevice",
        );
        note(
            some(b.throttle_write_bps_device()),
            "blockIO.throttleWriteBpsDevice",
        );
        note(
            some(b.throttle_read_iops_device()),
            "blockIO.throttleReadIOPSDevice",
        );
        note(
            some(b.throttle_write_iops_device()),
            "blockIO.throttleWriteIOPSDevice",
        );
    }
    match unapplied.first() {
        Some(name) => Err(unsupported(format!("{prefix}.{name}"))),
        None => Ok(()),
    }
}

/// The bundle's root file system as an absolute path.
pub fn rootfs(spec: &Spec, bundle: &Path) -> PathBuf {
    let path = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_else(|| "rootfs".into());
    bundle.join(path)
}

/// The spec the core runs: the root and bind sources absolute (relative ones are the
/// bundle's), a `cgroup` mount made this host's (v2: a cgroup2 mount in the container's
/// cgroup namespace; v1: the container's own cgroup directories, as capsa's containers
/// get them), and `process.user` as the core's exact-IDs annotation.
pub fn for_core(
    spec: &Spec,
    bundle: &Path,
    mode: CgroupMode,
    cgroup: &CgroupPaths,
) -> Result<Spec, RuntimeError> {
    let mut core = spec.clone();
    if let Some(root) = core.root_mut() {
        root.set_path(rootfs(spec, bundle));
    }
    let mut mounts = Vec::new();
    let mut readonly_cgroup_tmpfs = false;
    for m in spec.mounts().iter().flatten() {
        if m.typ().as_deref() == Some("cgroup") {
            let ro = m.options().iter().flatten().any(|o| o == "ro");
            readonly_cgroup_tmpfs |= ro && mode != CgroupMode::Unified;
            mounts.extend(cgroup_mounts(m, mode, cgroup, ro)?);
            continue;
        }
        let mut m = m.clone();
        let is_bind = m
            .options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind");
        if let Some(src) = m.source().clone().filter(|s| is_bind && s.is_relative()) {
            m.set_source(Some(bundle.join(src)));
        }
        mounts.push(m);
    }
    core.set_mounts(Some(mounts));
    if let Some(linux) = core.linux_mut() {
        add_default_devices(linux);
        if readonly_cgroup_tmpfs {
            let mut ro = linux.readonly_paths().clone().unwrap_or_default();
            ro.push(crate::container::spec::V1_CGROUP_TMPFS.to_string());
            linux.set_readonly_paths(Some(ro));
        }
    }
    if let Some(p) = core.process_mut() {
        ambient_within_inheritable(p);
    }
    let user = spec
        .process()
        .as_ref()
        .map(|p| p.user().clone())
        .unwrap_or_default();
    let mut annotations = core.annotations().clone().unwrap_or_default();
    annotations.insert(
        USER_IDS_ANNOTATION.to_string(),
        exact_ids(&user).to_annotation(),
    );
    core.set_annotations(Some(annotations));
    Ok(core)
}

/// An OCI `process.user` as the IDs the core takes as they are.
pub fn exact_ids(user: &oci_spec::runtime::User) -> ExactIds {
    ExactIds {
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
    }
}

/// Keeps only the ambient capabilities that are also inheritable: the kernel raises no
/// other (runc's own `spec` lists ambient ones without inheritable ones; runc and crun
/// skip them too).
fn ambient_within_inheritable(p: &mut oci_spec::runtime::Process) {
    let Some(mut caps) = p.capabilities().clone() else {
        return;
    };
    let inheritable = caps.inheritable().clone().unwrap_or_default();
    if let Some(ambient) = caps.ambient().clone() {
        let kept: oci_spec::runtime::Capabilities =
            ambient.intersection(&inheritable).copied().collect();
        caps.set_ambient(Some(kept));
    }
    p.set_capabilities(Some(caps));
}

/// The devices every container gets whatever the config lists, as runc adds them: the
/// nodes (null, zero, full, random, urandom, tty) where the config has none at that path,
/// and after the config's cgroup rules, the rules allowing them (and mknod).
fn add_default_devices(linux: &mut oci_spec::runtime::Linux) {
    let mut devices = linux.devices().clone().unwrap_or_default();
    for d in crate::linux::devices::default_devices() {
        if !devices.iter().any(|have| have.path() == d.path()) {
            devices.push(d);
        }
    }
    linux.set_devices(Some(devices));
    let mut resources = linux.resources().clone().unwrap_or_default();
    let mut rules = resources.devices().clone().unwrap_or_default();
    // The first default rule denies everything: it would undo the config's own allows.
    rules.extend(
        crate::linux::devices::default_cgroup_rules(false)
            .into_iter()
            .skip(1),
    );
    resources.set_devices(Some(rules));
    linux.set_resources(Some(resources));
}

/// What stands for a bundle's `cgroup` mount on this host.
fn cgroup_mounts(
    m: &Mount,
    mode: CgroupMode,
    cgroup: &CgroupPaths,
    ro: bool,
) -> Result<Vec<Mount>, RuntimeError> {
    if mode == CgroupMode::Unified {
        let options = m.options().clone().unwrap_or_default();
        let built = MountBuilder::default()
            .destination(m.destination().clone())
            .typ("cgroup2")
            .source("cgroup2")
            .options(options)
            .build()
            .map_err(|e| RuntimeError::Setup(format!("cgroup mount: {e}")))?;
        return Ok(vec![built]);
    }
    if m.destination() != Path::new(crate::container::spec::V1_CGROUP_TMPFS) {
        return Err(unsupported(format!(
            "a cgroup mount at {} (only at {})",
            m.destination().display(),
            crate::container::spec::V1_CGROUP_TMPFS
        )));
    }
    Ok(crate::container::spec::v1_cgroup_mounts(
        cgroup,
        if ro { "ro" } else { "rw" },
    ))
}
