//! Builds the OCI runtime spec (`config.json`) of a container from the image config and the
//! user's flags, with Docker's defaults: namespaces, mounts, masked paths, capabilities,
//! seccomp, devices and cgroup limits. Everything the isolation core does comes from here.

use super::options::{RunOptions, SeccompChoice, Volume};
use super::tuning::{DeviceMapping, Ulimit, DEFAULT_SHM_SIZE};
use super::ContainerError;
use crate::image::Image;
use crate::linux::cgroups::{CgroupMode, CgroupPaths};
use crate::linux::process::init::{
    DEFAULT_PATH, GROUP_ADD_ANNOTATION, INIT_ANNOTATION, USER_ANNOTATION,
};
use crate::linux::{capabilities, devices, seccomp};
use oci_spec::runtime::*;
use std::collections::HashMap;
use std::path::Path;

/// Docker's masked paths.
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
/// Docker's read-only paths.
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];
/// The tmpfs holding a cgroup v1 container's own cgroups.
pub(crate) const V1_CGROUP_TMPFS: &str = "/sys/fs/cgroup";
/// CFS period for `--cpus` (Docker's 100 ms).
const CPU_PERIOD_US: u64 = 100_000;
/// Docker's default open-files limit.
const NOFILE_LIMIT: u64 = 1_048_576;

/// What else the spec needs besides flags and image.
pub struct SpecContext<'a> {
    /// Container ID.
    pub id: &'a str,
    /// Where the root will be mounted.
    pub rootfs: &'a Path,
    /// The container's folder, holding hostname and hosts files to bind.
    pub dir: &'a Path,
    /// The host's cgroup mode (decides the /sys/fs/cgroup mount).
    pub cgroup_mode: Option<CgroupMode>,
    /// The container's own cgroup directories: on cgroup v1, each is bound read-only at
    /// /sys/fs/cgroup/<hierarchy> (on v2 a cgroup2 mount inside the container's cgroup
    /// namespace shows its own cgroup as the root).
    pub cgroup: Option<&'a CgroupPaths>,
    /// With `--userns=auto`: the first host ID of the container's range.
    pub userns_base: Option<u32>,
}

/// IDs in a user-namespaced container's range (uid and gid 0..65535 inside).
pub const USERNS_RANGE: u32 = 65_536;

fn err(e: impl std::fmt::Display) -> ContainerError {
    ContainerError::InvalidArgument(e.to_string())
}

/// Entrypoint and command as Docker combines them.
/// How many leading words of [`command_line`] are the entrypoint (the rest is the Cmd):
/// what `commit` needs to give the new image the container's own Entrypoint and Cmd.
pub fn entrypoint_len(opts: &RunOptions, image: &Image) -> usize {
    match &opts.entrypoint {
        Some(e) if e.is_empty() => 0,
        Some(_) => 1,
        None => image
            .config
            .config()
            .as_ref()
            .and_then(|c| c.entrypoint().as_ref())
            .map_or(0, Vec::len),
    }
}

pub fn command_line(opts: &RunOptions, image: &Image) -> Vec<String> {
    let cfg = image.config.config().as_ref();
    let image_entry = cfg.and_then(|c| c.entrypoint().clone()).unwrap_or_default();
    let image_cmd = cfg.and_then(|c| c.cmd().clone()).unwrap_or_default();
    let (entry, cmd) = match &opts.entrypoint {
        Some(e) if e.is_empty() => (vec![], opts.command.clone()),
        Some(e) => (vec![e.clone()], opts.command.clone()),
        None if opts.command.is_empty() => (image_entry, image_cmd),
        None => (image_entry, opts.command.clone()),
    };
    entry.into_iter().chain(cmd).collect()
}

/// The environment: image Env, then `--env-file`, then `-e`; PATH and HOSTNAME defaulted.
fn environment(opts: &RunOptions, image: &Image, hostname: &str) -> Vec<String> {
    let mut env: Vec<String> = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.env().clone())
        .unwrap_or_default();
    let mut set = |entry: &str| {
        let (key, value) = match entry.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            // `-e NAME` passes the caller's value, and nothing if it has none (Docker).
            None => match std::env::var(entry) {
                Ok(v) => (entry.to_string(), v),
                Err(_) => return,
            },
        };
        env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
        env.push(format!("{key}={value}"));
    };
    for e in opts.env_file_lines.iter().chain(opts.env.iter()) {
        set(e);
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    if opts.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        env.insert(1.min(env.len()), format!("HOSTNAME={hostname}"));
    }
    env
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .expect("all fields set")
}

/// cgroup v1 as Docker shows it: a tmpfs at /sys/fs/cgroup (made read-only with the rest of
/// [`READONLY_PATHS`] once these are in it) holding, for each hierarchy the container is in,
/// a bind mount of the container's own cgroup directory, read-only (`sys_mode`), nosuid,
/// nodev, noexec. Only the container's own directory is reachable: never a hierarchy's root,
/// where release_agent is, nor a sibling's.
pub(crate) fn v1_cgroup_mounts(cgroup: &CgroupPaths, sys_mode: &str) -> Vec<Mount> {
    let mut list = vec![mount(
        V1_CGROUP_TMPFS,
        "tmpfs",
        "tmpfs",
        &["nosuid", "noexec", "nodev", "mode=755", "size=64k"],
    )];
    for (hierarchy, dir) in &cgroup.dirs {
        list.push(mount(
            &format!("{V1_CGROUP_TMPFS}/{hierarchy}"),
            "bind",
            &dir.display().to_string(),
            &["bind", "nosuid", "noexec", "nodev", sys_mode],
        ));
    }
    list
}

fn mounts(opts: &RunOptions, ctx: &SpecContext) -> Vec<Mount> {
    let sys_mode = if opts.privileged { "rw" } else { "ro" };
    let mut list = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &[
                "nosuid",
                "noexec",
                "nodev",
                "mode=1777",
                &format!("size={}", opts.tuning.shm_size.unwrap_or(DEFAULT_SHM_SIZE)),
            ],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_mode],
        ),
    ];
    match ctx.cgroup_mode {
        Some(CgroupMode::Unified) => list.push(mount(
            "/sys/fs/cgroup",
            "cgroup2",
            "cgroup2",
            &["nosuid", "noexec", "nodev", "relatime", sys_mode],
        )),
        Some(CgroupMode::Hybrid | CgroupMode::Legacy) => list.extend(
            ctx.cgroup
                .map(|c| v1_cgroup_mounts(c, sys_mode))
                .unwrap_or_default(),
        ),
        None => {}
    }
    let mut user = Vec::new();
    for name in ["hostname", "hosts", "resolv.conf"] {
        let src = ctx.dir.join(name).display().to_string();
        user.push(mount(
            &format!("/etc/{name}"),
            "bind",
            &src,
            &["rbind", "rprivate"],
        ));
    }
    for (path, extra) in &opts.tmpfs {
        let mut o = vec!["nosuid", "nodev", "noexec"];
        o.extend(extra.split(',').filter(|s| !s.is_empty()));
        user.push(mount(path, "tmpfs", "tmpfs", &o));
    }
    for v in &opts.volumes {
        user.push(mount(
            &v.container,
            "bind",
            &v.host.display().to_string(),
            &volume_options(v),
        ));
    }
    // Shallow destinations first, as Docker sorts them: a volume at /etc goes below the
    // /etc/hosts bind rather than hiding it.
    user.sort_by_key(|m| m.destination().components().count());
    list.extend(user);
    list
}

/// A `-v` bind's mount options: nosuid and nodev unless the volume asks for `suid`/`dev`.
/// The bind shows a host directory, and what the workload leaves there (a setuid-root copy
/// of a shell, a device node it made) stays there: inside, no such file may take effect.
fn volume_options(v: &Volume) -> Vec<&'static str> {
    let mut o = vec!["rbind", "rprivate", if v.read_only { "ro" } else { "rw" }];
    if !v.suid {
        o.push("nosuid");
    }
    if !v.dev {
        o.push("nodev");
    }
    if v.no_exec {
        o.push("noexec");
    }
    o
}

fn resources(opts: &RunOptions) -> Result<LinuxResources, ContainerError> {
    let t = &opts.tuning;
    let mut device_rules = devices::default_cgroup_rules(opts.privileged);
    if !opts.privileged {
        device_rules.extend(t.devices.iter().map(|d| {
            let typ = if d.block {
                LinuxDeviceType::B
            } else {
                LinuxDeviceType::C
            };
            devices::rule(true, typ, Some(d.major), Some(d.minor), &d.access)
        }));
        device_rules.extend(t.cgroup_rules.iter().map(|r| {
            let typ = match r.typ {
                'b' => LinuxDeviceType::B,
                'c' => LinuxDeviceType::C,
                _ => LinuxDeviceType::A,
            };
            devices::rule(true, typ, r.major, r.minor, &r.access)
        }));
    }
    let mut r = LinuxResourcesBuilder::default().devices(device_rules);
    // A swap limit counts memory and swap together: it goes with a memory limit only.
    let swap = t.memory_swap.filter(|_| opts.memory.is_some());
    let memory = opts.memory.is_some()
        || t.memory_reservation.is_some()
        || t.memory_swappiness.is_some()
        || t.oom_kill_disable;
    if memory {
        let mut m = LinuxMemoryBuilder::default();
        if let Some(limit) = opts.memory {
            m = m.limit(limit);
        }
        if let Some(swap) = swap {
            m = m.swap(swap);
        }
        if let Some(reservation) = t.memory_reservation {
            m = m.reservation(reservation);
        }
        if let Some(swappiness) = t.memory_swappiness {
            m = m.swappiness(swappiness);
        }
        if t.oom_kill_disable {
            m = m.disable_oom_killer(true);
        }
        r = r.memory(m.build().map_err(err)?);
    }
    let cpu = opts.cpus.is_some()
        || t.cpu_shares.is_some()
        || t.cpuset_cpus.is_some()
        || t.cpuset_mems.is_some();
    if cpu {
        let mut b = LinuxCpuBuilder::default();
        if let Some(c) = opts.cpus {
            let quota = (c * CPU_PERIOD_US as f64).round() as i64;
            b = b.quota(quota).period(CPU_PERIOD_US);
        }
        if let Some(shares) = t.cpu_shares {
            b = b.shares(shares);
        }
        if let Some(cpus) = &t.cpuset_cpus {
            b = b.cpus(cpus.clone());
        }
        if let Some(mems) = &t.cpuset_mems {
            b = b.mems(mems.clone());
        }
        r = r.cpu(b.build().map_err(err)?);
    }
    if let Some(w) = t.blkio_weight {
        r = r.block_io(
            LinuxBlockIoBuilder::default()
                .weight(w)
                .build()
                .map_err(err)?,
        );
    }
    if let Some(p) = opts.pids_limit {
        let limit = if p <= 0 { -1 } else { p };
        r = r.pids(
            LinuxPidsBuilder::default()
                .limit(limit)
                .build()
                .map_err(err)?,
        );
    }
    r.build().map_err(err)
}

/// The process's rlimits: Docker's open-files default, then each `--ulimit` (a later one
/// for the same name replaces an earlier one).
fn rlimits(nofile: PosixRlimit, ulimits: &[Ulimit]) -> Result<Vec<PosixRlimit>, ContainerError> {
    let mut list = vec![nofile];
    for u in ulimits {
        let typ: PosixRlimitType = u.oci_type().parse().map_err(err)?;
        list.retain(|l| l.typ() != typ);
        list.push(
            PosixRlimitBuilder::default()
                .typ(typ)
                .soft(u.soft)
                .hard(u.hard)
                .build()
                .map_err(err)?,
        );
    }
    Ok(list)
}

/// The `--device` nodes to make in the container's /dev, with the host node's numbers,
/// mode and owner.
fn device_nodes(mappings: &[DeviceMapping]) -> Result<Vec<LinuxDevice>, ContainerError> {
    mappings
        .iter()
        .map(|d| {
            LinuxDeviceBuilder::default()
                .path(&d.container)
                .typ(if d.block {
                    LinuxDeviceType::B
                } else {
                    LinuxDeviceType::C
                })
                .major(d.major)
                .minor(d.minor)
                .file_mode(d.mode)
                .uid(d.uid)
                .gid(d.gid)
                .build()
                .map_err(err)
        })
        .collect()
}

fn seccomp_section(
    opts: &RunOptions,
    caps: &[String],
) -> Result<Option<LinuxSeccomp>, ContainerError> {
    if opts.privileged {
        return Ok(None);
    }
    let (text, name) = match &opts.seccomp {
        SeccompChoice::Unconfined => return Ok(None),
        SeccompChoice::Default => (seccomp::DEFAULT_PROFILE.to_string(), "default".to_string()),
        SeccompChoice::File(p) => (
            std::fs::read_to_string(p)
                .map_err(|e| err(format!("seccomp profile {}: {e}", p.display())))?,
            p.display().to_string(),
        ),
        SeccompChoice::Inline(text) => (text.clone(), "the given profile".to_string()),
    };
    seccomp::profile::resolve(&text, &name, caps)
        .map(Some)
        .map_err(err)
}

pub use crate::linux::cgroups::resources_of;

/// Builds the spec. Fails, naming the flag, on what cannot work.
pub fn build(opts: &RunOptions, image: &Image, ctx: &SpecContext) -> Result<Spec, ContainerError> {
    if opts.uts_host && opts.hostname.is_some() {
        return Err(ContainerError::InvalidArgument(
            "conflicting options: --hostname and --uts host".into(),
        ));
    }
    // In the host's UTS namespace the name the workload sees is the host's.
    let hostname = match opts.uts_host {
        true => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
        false => opts
            .hostname
            .clone()
            .unwrap_or_else(|| super::id::short(ctx.id).to_string()),
    };
    let args = command_line(opts, image);
    if args.is_empty() {
        return Err(ContainerError::InvalidArgument(
            "no command specified: the image has no Cmd or Entrypoint; give one after the image"
                .into(),
        ));
    }
    let image_cfg = image.config.config().as_ref();
    let image_cwd = image_cfg
        .and_then(|c| c.working_dir().clone())
        .filter(|w| !w.is_empty());
    let cwd = opts
        .workdir
        .clone()
        .or(image_cwd)
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        // Name what set it: the flag, or the image's config (whose text is quoted escaped).
        let source = match opts.workdir {
            Some(_) => "-w",
            None => "the image's config WorkingDir",
        };
        return Err(err(format!(
            "{source} {cwd:?}: the working directory must be an absolute path"
        )));
    }
    let user = opts
        .user
        .clone()
        .or_else(|| image_cfg.and_then(|c| c.user().clone()))
        .unwrap_or_default();
    if user.chars().any(char::is_control) {
        let source = match opts.user {
            Some(_) => "-u",
            None => "the image's config User",
        };
        return Err(err(format!(
            "{source} \"{}\": a user or group name holds no control characters",
            crate::printable::escape_controls(&user)
        )));
    }
    let cap_names = if opts.privileged {
        capabilities::all_caps()
    } else {
        capabilities::effective_set(&opts.cap_add, &opts.cap_drop).map_err(err)?
    };
    let caps = capabilities::to_oci(&cap_names);
    let caps = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .permitted(caps.clone())
        .effective(caps)
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()
        .map_err(err)?;
    // Without CAP_SYS_RESOURCE a hard limit cannot rise; stay within the caller's own.
    let nofile_limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard.min(NOFILE_LIMIT))
        .unwrap_or(NOFILE_LIMIT);
    let nofile = PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .soft(nofile_limit)
        .hard(nofile_limit)
        .build()
        .map_err(err)?;
    let rlimits = rlimits(nofile, &opts.tuning.ulimits)?;
    let mut process = ProcessBuilder::default();
    if let Some(adj) = opts.oom_score_adj {
        process = process.oom_score_adj(adj);
    }
    if let (true, Some((rows, cols))) = (opts.tty, opts.console_size) {
        process = process.console_size(
            oci_spec::runtime::BoxBuilder::default()
                .height(u64::from(rows))
                .width(u64::from(cols))
                .build()
                .map_err(err)?,
        );
    }
    let process = process
        .terminal(opts.tty)
        .args(args)
        .env(environment(opts, image, &hostname))
        .cwd(cwd)
        .capabilities(caps)
        .rlimits(rlimits)
        .no_new_privileges(opts.no_new_privileges && !opts.privileged)
        .user(
            UserBuilder::default()
                .uid(0u32)
                .gid(0u32)
                .build()
                .map_err(err)?,
        )
        .build()
        .map_err(err)?;
    let mut namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Cgroup,
    ];
    if opts.network == crate::net::NetworkMode::Host {
        namespaces.retain(|t| *t != LinuxNamespaceType::Network);
    }
    if opts.uts_host {
        namespaces.retain(|t| *t != LinuxNamespaceType::Uts);
    }
    if opts.pid_host {
        if ctx.userns_base.is_some() {
            // Its /proc could not be mounted: the host's PID namespace is not its user
            // namespace's.
            return Err(ContainerError::InvalidArgument(
                "conflicting options: --pid host and --userns auto".into(),
            ));
        }
        namespaces.retain(|t| *t != LinuxNamespaceType::Pid);
    }
    if ctx.userns_base.is_some() {
        namespaces.push(LinuxNamespaceType::User);
    }
    let namespaces = namespaces
        .into_iter()
        .map(|t| {
            LinuxNamespaceBuilder::default()
                .typ(t)
                .build()
                .expect("type set")
        })
        .collect::<Vec<_>>();
    let strings = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources(opts)?)
        .devices(if opts.privileged {
            devices::host_devices()
        } else {
            let mut list = devices::default_devices();
            list.extend(device_nodes(&opts.tuning.devices)?);
            list
        })
        .sysctl(
            opts.tuning
                .sysctls
                .clone()
                .into_iter()
                .collect::<HashMap<_, _>>(),
        )
        .cgroups_path(ctx.id);
    if let Some(base) = ctx.userns_base {
        let map = vec![LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(base)
            .size(USERNS_RANGE)
            .build()
            .map_err(err)?];
        linux = linux.uid_mappings(map.clone()).gid_mappings(map);
    }
    // Set either way: oci-spec's builder otherwise fills in its own default lists, and
    // `--privileged` must see /proc and /sys unmasked and writable, as with Docker.
    // The API's MaskedPaths/ReadonlyPaths (or systempaths=unconfined) replace the lists.
    let given = |list: &Option<Vec<String>>, default: &[&'static str]| -> Vec<String> {
        match list {
            Some(l) => l.clone(),
            None if opts.privileged => Vec::new(),
            None => strings(default),
        }
    };
    let masked = given(&opts.masked_paths, MASKED_PATHS);
    let mut readonly = given(&opts.readonly_paths, READONLY_PATHS);
    let v1 = matches!(
        ctx.cgroup_mode,
        Some(CgroupMode::Hybrid | CgroupMode::Legacy)
    );
    if v1 && ctx.cgroup.is_some() && !opts.privileged {
        readonly.push(V1_CGROUP_TMPFS.to_string());
    }
    linux = linux.masked_paths(masked).readonly_paths(readonly);
    if let Some(s) = seccomp_section(opts, &cap_names)? {
        linux = linux.seccomp(s);
    }
    let mut annotations = HashMap::new();
    annotations.insert(USER_ANNOTATION.to_string(), user);
    if opts.init {
        annotations.insert(INIT_ANNOTATION.to_string(), "true".to_string());
    }
    if !opts.tuning.group_add.is_empty() {
        annotations.insert(
            GROUP_ADD_ANNOTATION.to_string(),
            opts.tuning.group_add.join("\n"),
        );
    }
    SpecBuilder::default()
        .version("1.0.2")
        .hostname(hostname)
        .root(
            RootBuilder::default()
                .path(ctx.rootfs)
                .readonly(opts.read_only)
                .build()
                .map_err(err)?,
        )
        .process(process)
        .mounts(mounts(opts, ctx))
        .linux(linux.build().map_err(err)?)
        .annotations(annotations)
        .build()
        .map_err(err)
}
