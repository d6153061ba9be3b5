//! What the user asked for with `run`/`create` flags, parsed and checked before anything is
//! created: a flag value that cannot work is refused here with its name and the reason.

use super::ContainerError;
use crate::net::dns_name;
use std::path::{Path, PathBuf};

/// Which seccomp filter to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeccompChoice {
    /// capsa's default profile (Docker's).
    Default,
    /// No filter.
    Unconfined,
    /// A Docker-format profile file.
    File(PathBuf),
    /// A Docker-format profile given as its text (the Engine API's `SecurityOpt`, where
    /// the docker CLI sends the file's content).
    Inline(String),
}

/// What a `-v`/`--mount` mounts: a host path, or a volume of the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VolumeSource {
    /// The host path in [`Volume::host`] (`-v /host:/ctr`, `--mount type=bind`).
    #[default]
    Host,
    /// The named volume (made on first use, as Docker does).
    Named(String),
    /// A new anonymous volume (`-v /ctr`, `--mount type=volume` without a source, an
    /// image's `VOLUME`); `create` names it.
    Anonymous,
}

/// A `-v`/`--mount` mount of a host directory or of a volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Volume {
    /// Absolute host path (for a volume: its `_data`, or its disk in a VM; set at create).
    pub host: PathBuf,
    /// Absolute path in the container.
    pub container: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// `suid`: set-user-ID and file capabilities take effect on the mount. Off by default:
    /// container root may chmod 4755 files there, which must not make anyone root.
    #[serde(default)]
    pub suid: bool,
    /// `dev`: device nodes on the mount can be opened. Off by default, so a node container
    /// root makes there (mknod) opens nothing.
    #[serde(default)]
    pub dev: bool,
    /// `noexec`: nothing on the mount can be executed.
    #[serde(default)]
    pub no_exec: bool,
    /// Where it comes from: a host path or a volume.
    #[serde(default)]
    pub source: VolumeSource,
    /// `nocopy`: a new volume does not get the image's content at its path.
    #[serde(default)]
    pub no_copy: bool,
}

impl Volume {
    /// A mount at `container` of `source`, read-write, nosuid, nodev.
    pub fn new(source: VolumeSource, host: PathBuf, container: String) -> Volume {
        Volume {
            host,
            container,
            read_only: false,
            suid: false,
            dev: false,
            no_exec: false,
            source,
            no_copy: false,
        }
    }

    /// The named volume it mounts, if any.
    pub fn volume_name(&self) -> Option<&str> {
        match &self.source {
            VolumeSource::Named(n) => Some(n),
            _ => None,
        }
    }
}

/// The container's configuration as the user gave it.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `--name`.
    pub name: Option<String>,
    /// `-e`, in order (`K=V`, or `K` to take the caller's value).
    pub env: Vec<String>,
    /// `--env-file` contents, already read.
    pub env_file_lines: Vec<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-u`.
    pub user: Option<String>,
    /// `--hostname`.
    pub hostname: Option<String>,
    /// `-m`, bytes.
    pub memory: Option<i64>,
    /// `--cpus`.
    pub cpus: Option<f64>,
    /// `--pids-limit`.
    pub pids_limit: Option<i64>,
    /// `--read-only`.
    pub read_only: bool,
    /// `-v`.
    pub volumes: Vec<Volume>,
    /// `--volumes-from CONTAINER[:ro|:rw]`: another container's mounts (see
    /// [`super::volumes_from`]).
    pub volumes_from: Vec<String>,
    /// `--volume-driver` / `HostConfig.VolumeDriver` other than `local`: recorded, and a
    /// volume this container would make is refused (capsa has no volume plugins).
    pub volume_driver: Option<String>,
    /// `--tmpfs PATH[:OPTIONS]`.
    pub tmpfs: Vec<(String, String)>,
    /// `--cap-add`.
    pub cap_add: Vec<String>,
    /// `--cap-drop`.
    pub cap_drop: Vec<String>,
    /// `--security-opt seccomp=`.
    pub seccomp: SeccompChoice,
    /// `--security-opt no-new-privileges=` (capsa defaults to true).
    pub no_new_privileges: bool,
    /// `--privileged`.
    pub privileged: bool,
    /// `--oom-score-adj` (-1000 to 1000): the workload's OOM-killer preference.
    pub oom_score_adj: Option<i32>,
    /// The API's `HostConfig.MaskedPaths` (or `--security-opt systempaths=unconfined`:
    /// none): replaces Docker's list when given.
    pub masked_paths: Option<Vec<String>>,
    /// The API's `HostConfig.ReadonlyPaths`, likewise.
    pub readonly_paths: Option<Vec<String>>,
    /// `--cgroup-parent`.
    pub cgroup_parent: Option<String>,
    /// `--userns=auto`: a user namespace with a private range of host IDs.
    pub userns: bool,
    /// `--uts host`: the host's UTS namespace (its hostname) instead of the container's own.
    pub uts_host: bool,
    /// `--pid host`: the host's PID namespace (the workload sees and may signal the host's
    /// processes, as with Docker); the container's other processes are killed when its
    /// init exits, since no namespace ends with it.
    pub pid_host: bool,
    /// `--restart`.
    pub restart_policy: super::restart::RestartPolicy,
    /// `--stop-signal`, as a number.
    pub stop_signal: Option<i32>,
    /// `--stop-timeout`, seconds.
    pub stop_timeout: Option<u64>,
    /// `--health-*`, `--no-healthcheck` or the API's `Config.Healthcheck`: over the image's.
    pub healthcheck: Option<super::health::Healthcheck>,
    /// `--log-opt`, parsed.
    pub log_rotation: super::logfile::Rotation,
    /// `--log-driver`.
    pub log_driver: super::logfile::Driver,
    /// `-i`.
    pub interactive: bool,
    /// The API's `StdinOnce` (`docker run -i` in the foreground): the first attached
    /// client's end of input closes the container's stdin.
    pub stdin_once: bool,
    /// `-t`: a pseudo-terminal.
    pub tty: bool,
    /// The terminal's first size (rows, columns): the client's window, known when it
    /// creates the container (`HostConfig.ConsoleSize`), so that no resize can come late.
    pub console_size: Option<(u16, u16)>,
    /// `--init`: a reaping PID 1 in front of the workload.
    pub init: bool,
    /// `--network`: the mode.
    pub network: crate::net::NetworkMode,
    /// `--network`: the bridge network's name (`bridge` by default).
    pub network_name: String,
    /// `--ip`.
    pub ip: Option<std::net::Ipv4Addr>,
    /// `--mac-address`.
    pub mac: Option<[u8; 6]>,
    /// `--network-alias`.
    pub aliases: Vec<String>,
    /// `--link-local-ip` / `IPAMConfig.LinkLocalIPs`: extra 169.254.0.0/16 addresses of the
    /// first network's interface.
    pub link_local_ips: Vec<std::net::Ipv4Addr>,
    /// The API's `EndpointSettings.DriverOpts` of the first network: recorded and shown,
    /// as Docker's bridge driver keeps the options it does not use.
    pub endpoint_driver_opts: std::collections::BTreeMap<String, String>,
    /// `-p`; a host port of 0 gets a free one at create.
    pub publish: Vec<crate::net::ports::PortMapping>,
    /// `-P`: publish every port the image exposes on a free host port.
    pub publish_all: bool,
    /// `--expose`: container ports exposed beyond the image's (published by `-P`).
    pub expose: Vec<crate::net::ports::PortMapping>,
    /// `--dns` servers (replace the host's in resolv.conf).
    pub dns: Vec<std::net::IpAddr>,
    /// `--add-host NAME:IP` lines for /etc/hosts.
    pub add_hosts: Vec<(String, std::net::IpAddr)>,
    /// `--add-host NAME:host-gateway`: names given the default bridge's gateway address
    /// (added to `add_hosts` when the container is laid out).
    pub gateway_hosts: Vec<String>,
    /// `--group-add`, `--ulimit`, `--sysctl`, `--device`, `--shm-size` and the cgroup knobs.
    pub tuning: super::tuning::Tuning,
    /// `--rm`.
    pub auto_remove: bool,
    /// `--entrypoint`.
    pub entrypoint: Option<String>,
    /// The image as named.
    pub image: String,
    /// Arguments after the image.
    pub command: Vec<String>,
    /// `--isolation`: recorded in the container's state, it chooses its sandbox for life.
    pub isolation: super::sandbox::Isolation,
    /// `--vmm` (with `--isolation vm`): the hypervisor engine, else chosen for the host.
    pub vmm: Option<String>,
    /// `--label`: the container's own labels (over its image's).
    pub labels: std::collections::BTreeMap<String, String>,
    /// What is kept only to be shown as given (env names without a value, the isolation
    /// as written); `init` and `tmpfs` are taken from the fields above.
    pub asked: super::state::Asked,
}

/// The checks every front end makes once it has filled `opts` (the CLI from its flags,
/// the Engine API from its JSON), before anything is created: `--security-opt` values
/// applied, then tmpfs paths, host name, process fields, cgroup parent, capability names
/// and the seccomp profile checked.
pub fn check(opts: &mut RunOptions, security_opts: &[String]) -> Result<(), ContainerError> {
    let bad = |m: String| Err(ContainerError::InvalidArgument(m));
    if opts.restart_policy != super::restart::RestartPolicy::No && opts.auto_remove {
        return bad("Conflicting options: --restart and --rm".into());
    }
    for (path, options) in &opts.tmpfs {
        if !path.starts_with('/') {
            return bad(format!("--tmpfs {path:?}: the path must be absolute"));
        }
        check_tmpfs_options(path, options)?;
    }
    if let Some(h) = &opts.hostname {
        check_hostname(h)?;
    }
    check_process_fields(opts)?;
    opts.tuning
        .check(opts.memory, opts.network == crate::net::NetworkMode::Host)?;
    if opts.userns && !opts.tuning.devices.is_empty() {
        return bad("--device cannot be combined with --userns=auto".into());
    }
    opts.asked.ulimits = opts.tuning.ulimits.clone();
    opts.asked.devices = opts.tuning.devices.clone();
    opts.asked.device_cgroup_rules = opts.tuning.cgroup_rules.iter().map(|r| r.show()).collect();
    if let Some(parent) = &opts.cgroup_parent {
        check_cgroup_parent(parent)?;
    }
    for (field, list) in [
        ("MaskedPaths", &opts.masked_paths),
        ("ReadonlyPaths", &opts.readonly_paths),
    ] {
        for path in list.iter().flatten() {
            if !path.starts_with('/') || path.contains('\0') {
                return bad(format!("{field} {path:?}: an absolute path"));
            }
        }
    }
    for so in security_opts {
        apply_security_opt(opts, so)?;
    }
    // Capability names are checked now, before anything is created.
    crate::linux::capabilities::effective_set(&opts.cap_add, &opts.cap_drop)
        .map_err(|e| ContainerError::InvalidArgument(e.to_string()))?;
    let profile = match &opts.seccomp {
        SeccompChoice::File(p) => Some((read_profile(p)?, p.display().to_string())),
        SeccompChoice::Inline(text) => Some((text.clone(), "the given profile".to_string())),
        _ => None,
    };
    if let Some((text, name)) = profile {
        crate::linux::seccomp::profile::resolve(&text, &name, &[])
            .map_err(|e| ContainerError::InvalidArgument(e.to_string()))?;
    }
    Ok(())
}

/// What a `--tmpfs` (or the API's `HostConfig.Tmpfs`) may say, as Docker takes it: the
/// mount flags a tmpfs has and tmpfs's own data. Anything else (`bind`, `rbind`, a
/// propagation) would turn the tmpfs into something else, and is refused by name.
fn check_tmpfs_options(path: &str, options: &str) -> Result<(), ContainerError> {
    const FLAGS: &[&str] = &[
        "ro",
        "rw",
        "suid",
        "nosuid",
        "dev",
        "nodev",
        "exec",
        "noexec",
        "atime",
        "noatime",
        "diratime",
        "nodiratime",
        "relatime",
        "norelatime",
        "strictatime",
        "nostrictatime",
    ];
    const DATA: &[&str] = &[
        "size",
        "mode",
        "uid",
        "gid",
        "nr_inodes",
        "nr_blocks",
        "huge",
    ];
    for word in options.split(',').filter(|w| !w.is_empty()) {
        let known = match word.split_once('=') {
            Some((key, value)) => DATA.contains(&key) && !value.is_empty(),
            None => FLAGS.contains(&word),
        };
        if !known {
            return Err(ContainerError::InvalidArgument(format!(
                "--tmpfs {path}:{options}: {word:?} is not a tmpfs option (flags: {}; data: \
                 {}=VALUE)",
                FLAGS.join(", "),
                DATA.join("=, ")
            )));
        }
    }
    Ok(())
}

/// The largest seccomp profile read from a file (Docker's default profile is about 20 KiB).
const MAX_PROFILE: u64 = 1 << 20;

/// A `--security-opt seccomp=FILE` profile's text, read to a bound.
fn read_profile(path: &Path) -> Result<String, ContainerError> {
    use std::io::Read;
    let fail = |why: String| {
        ContainerError::InvalidArgument(format!("seccomp profile {}: {why}", path.display()))
    };
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    if !file.metadata().map_err(|e| fail(e.to_string()))?.is_file() {
        return Err(fail("not a regular file".into()));
    }
    let mut text = String::new();
    file.take(MAX_PROFILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| fail(e.to_string()))?;
    if text.len() as u64 > MAX_PROFILE {
        return Err(fail(format!("larger than {MAX_PROFILE} bytes")));
    }
    Ok(text)
}

/// Parses `--add-host NAME:IP` (IPv6 addresses keep their colons: the name ends at the
/// first one). NAME must be a DNS name: it becomes a line of /etc/hosts.
pub fn parse_add_host(value: &str) -> Result<(String, std::net::IpAddr), ContainerError> {
    let bad = || ContainerError::InvalidArgument(format!("--add-host {value:?}: expected NAME:IP"));
    let (name, ip) = value.split_once(':').ok_or_else(bad)?;
    let ip = ip.trim_matches(['[', ']']).parse().map_err(|_| bad())?;
    dns_name::check(name).map_err(|source| {
        ContainerError::invalid(dns_name::InvalidName {
            what: format!("--add-host {value:?}: invalid host name"),
            source,
        })
    })?;
    Ok((name.to_string(), ip))
}

/// The name of `--add-host NAME:host-gateway` (Docker's special value: the address of the
/// default bridge's gateway, the host as the container reaches it), or None for another
/// value.
pub fn gateway_host(value: &str) -> Result<Option<String>, ContainerError> {
    let Some(name) = value.strip_suffix(":host-gateway") else {
        return Ok(None);
    };
    dns_name::check(name).map_err(|source| {
        ContainerError::invalid(dns_name::InvalidName {
            what: format!("--add-host {value:?}: invalid host name"),
            source,
        })
    })?;
    Ok(Some(name.to_string()))
}

/// Longest host name the kernel's UTS namespace holds (HOST_NAME_MAX).
const MAX_HOSTNAME_LEN: usize = 64;

/// Checks `--hostname`: a DNS name the kernel can hold, since it also goes into the hosts
/// files of the container's networks.
pub fn check_hostname(hostname: &str) -> Result<(), ContainerError> {
    let bad = |why: String| {
        ContainerError::InvalidArgument(format!(
            "--hostname {hostname:?}: invalid host name: {why}"
        ))
    };
    if hostname.len() > MAX_HOSTNAME_LEN {
        return Err(bad(format!(
            "{} bytes long; a host name has at most {MAX_HOSTNAME_LEN}",
            hostname.len()
        )));
    }
    dns_name::check(hostname).map_err(|source| {
        ContainerError::invalid(dns_name::InvalidName {
            what: format!("--hostname {hostname:?}: invalid host name"),
            source,
        })
    })
}

/// Longest working directory a process can have (PATH_MAX, its NUL included).
const MAX_WORKDIR_LEN: usize = 4095;

/// Checks the process fields whose size the kernel bounds (`-u`, `-w`) before anything is
/// created: too long, they can name no user and no directory, and the init's error about
/// them would not fit its message to the parent.
pub fn check_process_fields(opts: &RunOptions) -> Result<(), ContainerError> {
    use crate::linux::user;
    if let Some(u) = &opts.user {
        user::check_name_lengths(u).map_err(|why| {
            ContainerError::InvalidArgument(format!("-u {}: {why}", user::quote_start(u)))
        })?;
    }
    if let Some(w) = opts
        .workdir
        .as_deref()
        .filter(|w| w.len() > MAX_WORKDIR_LEN)
    {
        return Err(ContainerError::InvalidArgument(format!(
            "-w {}: {} bytes long; a path has at most {MAX_WORKDIR_LEN}",
            user::quote_start(w),
            w.len()
        )));
    }
    Ok(())
}

/// Checks `--cgroup-parent`: a path below the cgroup hierarchies (absolute from their
/// root, or relative to the caller's cgroup) that cannot leave them (no `..`) nor carry a
/// control character (NUL, newline).
pub fn check_cgroup_parent(value: &str) -> Result<(), ContainerError> {
    crate::linux::cgroups::check_relative_path(std::path::Path::new(value)).map_err(|_| {
        let why = if value.bytes().any(|b| b.is_ascii_control()) {
            "a control character (NUL, newline) is not allowed"
        } else {
            "a `..` component would leave the cgroup hierarchy"
        };
        ContainerError::InvalidArgument(format!("--cgroup-parent {value:?}: {why}"))
    })
}

/// Parses a Docker memory size (`512`, `64k`, `64m`, `1g`, `1.5g`; units b k m g).
pub fn parse_memory(flag: &str, value: &str) -> Result<i64, ContainerError> {
    let bad = |why: &str| ContainerError::InvalidArgument(format!("{flag} {value:?}: {why}"));
    let v = value.trim().to_ascii_lowercase();
    let (num, mult) = match v.trim_end_matches('b').chars().last() {
        Some('k') => (&v[..v.find('k').unwrap_or(0)], 1i64 << 10),
        Some('m') => (&v[..v.find('m').unwrap_or(0)], 1 << 20),
        Some('g') => (&v[..v.find('g').unwrap_or(0)], 1 << 30),
        Some(c) if c.is_ascii_digit() => (v.trim_end_matches('b'), 1),
        _ => return Err(bad("expected a number with an optional unit b, k, m or g")),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| bad("expected a number with an optional unit b, k, m or g"))?;
    if !n.is_finite() || n <= 0.0 {
        return Err(bad("must be positive"));
    }
    let bytes = n * mult as f64;
    if bytes > i64::MAX as f64 {
        return Err(bad("too large"));
    }
    let bytes = bytes as i64;
    // The kernel's own minimum makes smaller limits kill the init before it starts.
    const MIN: i64 = 6 << 20;
    if bytes < MIN {
        return Err(bad("minimum memory limit allowed is 6MB"));
    }
    Ok(bytes)
}

/// Parses `--cpus` (positive, at most the number of CPUs here).
pub fn parse_cpus(value: &str) -> Result<f64, ContainerError> {
    let n: f64 = value
        .trim()
        .parse()
        .map_err(|_| ContainerError::InvalidArgument(format!("--cpus {value:?}: not a number")))?;
    let online = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    if !n.is_finite() || n <= 0.0 {
        return Err(ContainerError::InvalidArgument(format!(
            "--cpus {value:?}: must be positive"
        )));
    }
    if n > online {
        return Err(ContainerError::InvalidArgument(format!(
            "--cpus {value:?}: range of CPUs is from 0.01 to {online}.00, as there are only {online} CPUs available"
        )));
    }
    Ok(n)
}

/// Parses `--oom-score-adj`: -1000 to 1000, as the kernel takes it.
pub fn parse_oom_score_adj(value: &str) -> Result<i32, ContainerError> {
    value
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|n| (-1000..=1000).contains(n))
        .ok_or_else(|| {
            ContainerError::InvalidArgument(format!(
                "--oom-score-adj {value:?}: an integer from -1000 to 1000"
            ))
        })
}

/// Parses `--pids-limit` (-1 or 0: unlimited).
pub fn parse_pids_limit(value: &str) -> Result<i64, ContainerError> {
    let n: i64 = value.trim().parse().map_err(|_| {
        ContainerError::InvalidArgument(format!("--pids-limit {value:?}: not an integer"))
    })?;
    if n < -1 {
        return Err(ContainerError::InvalidArgument(format!(
            "--pids-limit {value:?}: must be -1 (unlimited) or positive"
        )));
    }
    Ok(n)
}

/// What `-v` accepts after the container path, comma-separated (Docker's and Podman's names).
const VOLUME_OPTIONS: &str =
    "ro, rw, suid, nosuid, dev, nodev, exec, noexec, nocopy, private, rprivate";

/// Parses `-v [SOURCE:]CTR[:OPTIONS]`: SOURCE an absolute host path (a bind) or a volume
/// name (made on first use); no SOURCE makes an anonymous volume. OPTIONS is a
/// comma-separated list of [`VOLUME_OPTIONS`] (default `rw,nosuid,nodev,exec`).
pub fn parse_volume(value: &str) -> Result<Volume, ContainerError> {
    let bad = |why: &str| ContainerError::InvalidArgument(format!("-v {value:?}: {why}"));
    let parts: Vec<&str> = value.split(':').collect();
    let (source, ctr, options) = match parts.as_slice() {
        [c] => ("", *c, ""),
        [h, c] if !c.starts_with('/') && h.starts_with('/') => ("", *h, *c),
        [h, c] => (*h, *c, ""),
        [h, c, o] => (*h, *c, *o),
        _ => return Err(bad("expected [SOURCE:]CONTAINER[:OPTIONS]")),
    };
    if !ctr.starts_with('/') || ctr == "/" {
        return Err(bad("the container path must be absolute and not /"));
    }
    let mut volume = match source {
        "" => Volume::new(VolumeSource::Anonymous, PathBuf::new(), ctr.to_string()),
        h if h.starts_with('/') => {
            Volume::new(VolumeSource::Host, PathBuf::from(h), ctr.to_string())
        }
        name => {
            crate::volume::name::check(name).map_err(|why| bad(&why.to_string()))?;
            Volume::new(
                VolumeSource::Named(name.into()),
                PathBuf::new(),
                ctr.to_string(),
            )
        }
    };
    // Each pair is one setting: naming both sides of it is a contradiction.
    let mut seen: Vec<&str> = Vec::new();
    for option in options.split(',').filter(|o| !o.is_empty()) {
        let (setting, field, on) = match option {
            "ro" | "rw" => ("ro/rw", &mut volume.read_only, option == "ro"),
            "suid" | "nosuid" => ("suid/nosuid", &mut volume.suid, option == "suid"),
            "dev" | "nodev" => ("dev/nodev", &mut volume.dev, option == "dev"),
            "exec" | "noexec" => ("exec/noexec", &mut volume.no_exec, option == "noexec"),
            "nocopy" if volume.source != VolumeSource::Host => {
                ("nocopy", &mut volume.no_copy, true)
            }
            "nocopy" => return Err(bad("nocopy applies to volumes, not to a host path")),
            "z" | "Z" => {
                return Err(bad(
                    "SELinux relabelling (z, Z) is not supported: capsa sets no SELinux labels",
                ))
            }
            // What every bind is: a private copy of the host's mount tree.
            "private" | "rprivate" => continue,
            "shared" | "rshared" | "slave" | "rslave" => {
                return Err(bad(&format!(
                    "bind propagation {option:?} is not supported: capsa's binds are private copies of the host's mounts (rprivate)"
                )))
            }
            other => {
                return Err(bad(&format!(
                    "unknown option {other:?} (one of {VOLUME_OPTIONS})"
                )))
            }
        };
        if seen.contains(&setting) && *field != on {
            return Err(bad(&format!("{setting} given both ways")));
        }
        seen.push(setting);
        *field = on;
    }
    Ok(volume)
}

/// What one `--mount` adds: a bind or volume mount, or a tmpfs (path, options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountFlag {
    /// `type=bind` or `type=volume`.
    Volume(Volume),
    /// `type=tmpfs`: the path and its mount options.
    Tmpfs(String, String),
}

/// Parses `--mount` as Docker does: comma-separated `key=value` fields (`type=`,
/// `source=`/`src=`, `target=`/`dst=`/`destination=`, `readonly`/`ro`, `volume-nocopy`,
/// `bind-propagation=`, `tmpfs-size=`, `tmpfs-mode=`). A bind's source must exist.
pub fn parse_mount<'a>(value: &'a str) -> Result<MountFlag, ContainerError> {
    let bad = |why: &str| ContainerError::InvalidArgument(format!("--mount {value:?}: {why}"));
    let mut kind = "volume";
    let (mut source, mut target) = (None::<&str>, None::<&str>);
    let (mut read_only, mut no_copy) = (false, false);
    let mut tmpfs_options = Vec::new();
    let mut bind_only = Vec::new();
    let mut volume_only = Vec::new();
    let mut tmpfs_only = Vec::new();
    for field in value.split(',') {
        let (key, val) = match field.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (field.trim(), None),
        };
        let need = |v: Option<&'a str>| {
            v.filter(|v| !v.is_empty())
                .ok_or_else(|| bad(&format!("{key} needs a value")))
        };
        let flag = |v: Option<&str>| match v {
            None | Some("1") | Some("true") => Ok(true),
            Some("0") | Some("false") => Ok(false),
            Some(other) => Err(bad(&format!("{key}={other}: expected true or false"))),
        };
        match key {
            "type" => kind = need(val)?,
            "source" | "src" => source = Some(need(val)?),
            "target" | "dst" | "destination" => target = Some(need(val)?),
            "readonly" | "ro" => read_only = flag(val)?,
            "consistency" => {} // macOS only; Docker ignores it on Linux
            "bind-propagation" => {
                bind_only.push(key);
                match need(val)? {
                    "private" | "rprivate" => {}
                    other => return Err(bad(&format!(
                        "bind-propagation={other} is not supported: capsa's binds are private (nothing mounted on either side reaches the other)"
                    ))),
                }
            }
            "volume-nocopy" => {
                volume_only.push(key);
                no_copy = flag(val)?;
            }
            "volume-driver" => {
                volume_only.push(key);
                if need(val)? != "local" {
                    return Err(bad("only the local volume driver exists"));
                }
            }
            "volume-opt" | "volume-subpath" | "bind-nonrecursive" | "bind-recursive" => {
                return Err(bad(&format!("{key} is not supported")))
            }
            "volume-label" => volume_only.push(key),
            "tmpfs-size" => {
                tmpfs_only.push(key);
                let bytes =
                    parse_size(need(val)?).map_err(|why| bad(&format!("tmpfs-size: {why}")))?;
                tmpfs_options.push(format!("size={bytes}"));
            }
            "tmpfs-mode" => {
                tmpfs_only.push(key);
                let mode = need(val)?;
                if u32::from_str_radix(mode, 8).is_err() {
                    return Err(bad(&format!("tmpfs-mode={mode}: expected an octal mode")));
                }
                tmpfs_options.push(format!("mode={mode}"));
            }
            "" => return Err(bad("an empty field")),
            other => return Err(bad(&format!("unexpected key '{other}'"))),
        }
    }
    let target = target.ok_or_else(|| bad("target is required"))?;
    if !target.starts_with('/') || target == "/" || target.contains(':') {
        return Err(bad(
            "the target must be an absolute path, not /, without ':'",
        ));
    }
    let misplaced = |keys: &[&str], wanted: &str| match keys.first() {
        Some(k) if kind != wanted => Err(bad(&format!("{k} applies to type={wanted} only"))),
        _ => Ok(()),
    };
    misplaced(&bind_only, "bind")?;
    misplaced(&volume_only, "volume")?;
    misplaced(&tmpfs_only, "tmpfs")?;
    let mut volume = match (kind, source) {
        ("bind", Some(src)) => {
            if !src.starts_with('/') {
                return Err(bad("a bind's source must be an absolute host path"));
            }
            if std::fs::symlink_metadata(src).is_err() {
                return Err(bad(&format!("bind source path does not exist: {src}")));
            }
            Volume::new(VolumeSource::Host, PathBuf::from(src), target.into())
        }
        ("bind", None) => return Err(bad("source is required for a bind mount")),
        ("volume", Some(name)) => {
            crate::volume::name::check(name).map_err(|why| bad(&why.to_string()))?;
            Volume::new(
                VolumeSource::Named(name.into()),
                PathBuf::new(),
                target.into(),
            )
        }
        ("volume", None) => Volume::new(VolumeSource::Anonymous, PathBuf::new(), target.into()),
        ("tmpfs", None) if !read_only => {
            return Ok(MountFlag::Tmpfs(target.into(), tmpfs_options.join(",")))
        }
        ("tmpfs", _) => return Err(bad("a tmpfs has no source and is not read-only")),
        (other, _) => {
            return Err(bad(&format!(
                "type={other}: expected bind, volume or tmpfs"
            )))
        }
    };
    volume.read_only = read_only;
    volume.no_copy = no_copy;
    Ok(MountFlag::Volume(volume))
}

/// A `tmpfs-size` that is not a positive size; holds the value given.
#[derive(Debug, thiserror::Error)]
#[error("{0:?}: expected a positive size (k, m, g)")]
pub(crate) struct BadSize(String);

/// A size as `tmpfs-size` takes it: bytes, or with a unit k, m, g (powers of 1024).
pub(crate) fn parse_size(value: &str) -> Result<u64, BadSize> {
    let v = value.to_ascii_lowercase();
    let (num, mult) = match v.trim_end_matches('b').chars().last() {
        Some('k') => (v.trim_end_matches('b').trim_end_matches('k'), 1u64 << 10),
        Some('m') => (v.trim_end_matches('b').trim_end_matches('m'), 1 << 20),
        Some('g') => (v.trim_end_matches('b').trim_end_matches('g'), 1 << 30),
        _ => (v.trim_end_matches('b'), 1),
    };
    num.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| BadSize(value.to_string()))
}

/// Parses one `--security-opt`; returns what it changes.
pub fn apply_security_opt(opts: &mut RunOptions, value: &str) -> Result<(), ContainerError> {
    let bad =
        |why: &str| ContainerError::InvalidArgument(format!("--security-opt {value:?}: {why}"));
    // Docker takes a bare `no-new-privileges` for `=true`.
    let value_or_bare = if value == "no-new-privileges" {
        "no-new-privileges=true"
    } else {
        value
    };
    let (key, val) = value_or_bare.split_once(['=', ':']).ok_or_else(|| {
        bad("expected seccomp=unconfined|PROFILE.json or no-new-privileges=true|false")
    })?;
    match key {
        "seccomp" if val == "unconfined" => opts.seccomp = SeccompChoice::Unconfined,
        // A profile's text (JSON) rather than its path: what the docker CLI sends dockerd.
        "seccomp" if val.trim_start().starts_with('{') => {
            opts.seccomp = SeccompChoice::Inline(val.to_string())
        }
        "seccomp" => opts.seccomp = SeccompChoice::File(PathBuf::from(val)),
        // Docker's way to unmask /proc and /sys paths (no MaskedPaths, no ReadonlyPaths).
        "systempaths" if val == "unconfined" => {
            opts.masked_paths = Some(Vec::new());
            opts.readonly_paths = Some(Vec::new());
        }
        "no-new-privileges" => {
            opts.no_new_privileges = match val {
                "" | "true" => true,
                "false" => false,
                _ => return Err(bad("expected true or false")),
            }
        }
        _ => {
            return Err(bad(
                "supported: seccomp=..., no-new-privileges=..., systempaths=unconfined",
            ))
        }
    }
    Ok(())
}

/// Lines of an env file: `K=V` or `K` (taken from the caller), comments and blanks skipped.
pub fn read_env_file(path: &str) -> Result<Vec<String>, ContainerError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ContainerError::InvalidArgument(format!("--env-file {path}: {e}")))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse_like_docker() {
        assert_eq!(parse_memory("-m", "64m").unwrap(), 64 << 20);
        assert_eq!(parse_memory("-m", "1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("-m", "1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_memory("-m", "8192k").unwrap(), 8 << 20);
        assert_eq!(parse_memory("-m", "67108864").unwrap(), 64 << 20);
        assert_eq!(parse_memory("-m", "64mb").unwrap(), 64 << 20);
        for bad in ["-64m", "0", "lots", "1x", "", "1k"] {
            assert!(parse_memory("-m", bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn volumes_parse_as_binds_named_or_anonymous() {
        let v = parse_volume("/srv/data:/data:ro").unwrap();
        assert!(v.read_only);
        assert_eq!(v.container, "/data");
        assert_eq!(v.source, VolumeSource::Host);
        let v = parse_volume("data:/data:ro,nocopy").unwrap();
        assert_eq!(v.source, VolumeSource::Named("data".into()));
        assert!(v.read_only && v.no_copy);
        assert_eq!(
            parse_volume("/data").unwrap().source,
            VolumeSource::Anonymous
        );
        assert!(parse_volume("/data:ro").unwrap().read_only);
        for bad in [
            "/a:rel",
            "/a:/b:rx",
            "../x:/d",
            "a/b:/d",
            "..:/d",
            "x:/d",
            "/a:/b:nocopy",
            "d:/",
        ] {
            assert!(parse_volume(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn mount_flags_parse_as_docker_writes_them() {
        let MountFlag::Volume(v) = parse_mount("type=volume,src=data,dst=/d,readonly").unwrap()
        else {
            panic!("not a volume")
        };
        assert_eq!(v.source, VolumeSource::Named("data".into()));
        assert!(v.read_only && v.container == "/d");
        let MountFlag::Volume(v) = parse_mount("target=/d,volume-nocopy").unwrap() else {
            panic!("not a volume")
        };
        assert_eq!(v.source, VolumeSource::Anonymous);
        assert!(v.no_copy && !v.read_only);
        let MountFlag::Volume(v) =
            parse_mount("type=bind,source=/tmp,destination=/t,ro=true,bind-propagation=rprivate")
                .unwrap()
        else {
            panic!("not a bind")
        };
        assert_eq!(
            (v.host.as_path(), v.read_only),
            (std::path::Path::new("/tmp"), true)
        );
        assert_eq!(
            parse_mount("type=tmpfs,dst=/scratch,tmpfs-size=64m,tmpfs-mode=1770").unwrap(),
            MountFlag::Tmpfs("/scratch".into(), format!("size={},mode=1770", 64 << 20))
        );
        for bad in [
            "type=bind,dst=/d",
            "type=bind,src=/nonexistent-capsa,dst=/d",
            "type=volume,src=../x,dst=/d",
            "type=volume,src=a/b,dst=/d",
            "type=volume,src=data",
            "type=nfs,dst=/d",
            "type=volume,dst=/d,bogus=1",
            "type=volume,dst=/d,tmpfs-size=1m",
            "type=bind,src=/tmp,dst=/d,bind-propagation=shared",
            "type=volume,src=v,dst=/d,volume-opt=type=nfs",
            "type=volume,dst=relative",
            "type=tmpfs,dst=/t,tmpfs-size=lots",
            "type=volume,dst=/d,readonly=maybe",
            "type=volume,,dst=/d",
        ] {
            assert!(parse_mount(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn volumes_are_nosuid_and_nodev_unless_asked() {
        let v = parse_volume("/srv/data:/data").unwrap();
        assert!(!v.read_only && !v.suid && !v.dev && !v.no_exec);
        let v = parse_volume("/srv/data:/data:suid,dev").unwrap();
        assert!(!v.read_only && v.suid && v.dev);
        let v = parse_volume("/srv/data:/data:ro,noexec,nosuid").unwrap();
        assert!(v.read_only && !v.suid && v.no_exec);
        for bad in [
            "/a:/b:suid,nosuid",
            "/a:/b:ro,rw",
            "/a:/b:z",
            "/a:/b:rshared",
        ] {
            assert!(parse_volume(bad).is_err(), "{bad} accepted");
        }
        assert!(parse_volume("/a:/b:ro,ro").is_ok());
    }

    #[test]
    fn cgroup_parents_that_leave_the_hierarchy_are_refused() {
        for bad in ["/../../../../tmp/x", "..", "a/../..", "/a\nb", "/a\0b"] {
            assert!(check_cgroup_parent(bad).is_err(), "{bad:?}");
        }
        for good in ["/capsa-test", "mine/sub", "/a..b"] {
            assert!(check_cgroup_parent(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn cpus_and_pids_are_checked() {
        assert!(parse_cpus("0.5").is_ok());
        assert!(parse_cpus("-1").is_err());
        assert!(parse_cpus("10000").is_err());
        assert_eq!(parse_pids_limit("-1").unwrap(), -1);
        assert!(parse_pids_limit("-5").is_err());
    }
}
