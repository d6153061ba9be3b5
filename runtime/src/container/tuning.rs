//! The flags that tune a workload beyond the basics, parsed and checked before anything is
//! created, as Docker checks them: `--group-add`, `--ulimit`, `--sysctl`, `--device`,
//! `--shm-size`, and the cgroup knobs `--cpu-shares`, `--cpuset-cpus`/`--cpuset-mems`,
//! `--memory-swap`, `--memory-reservation`, `--memory-swappiness`, `--oom-kill-disable`,
//! `--blkio-weight`.
//! Each refusal names the flag and the value.

use super::ContainerError;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What these flags asked for (all empty: nothing beyond the defaults).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tuning {
    /// `--group-add`: group names (resolved in the container's /etc/group at start) or IDs.
    pub group_add: Vec<String>,
    /// `--cpu-shares` (relative CPU weight, v1 `cpu.shares`; 0 = unset).
    pub cpu_shares: Option<u64>,
    /// `--cpuset-cpus` (`0-2,4`).
    pub cpuset_cpus: Option<String>,
    /// `--cpuset-mems`.
    pub cpuset_mems: Option<String>,
    /// `--memory-swap`: memory plus swap in bytes, -1 unlimited (needs `-m`).
    pub memory_swap: Option<i64>,
    /// `--memory-reservation`: the soft limit in bytes.
    pub memory_reservation: Option<i64>,
    /// `--memory-swappiness` (0..100; unset: the host's).
    pub memory_swappiness: Option<u64>,
    /// `--oom-kill-disable`.
    pub oom_kill_disable: bool,
    /// `--blkio-weight` (10..1000).
    pub blkio_weight: Option<u16>,
    /// `--ulimit`, in order (a later one for the same name wins).
    pub ulimits: Vec<Ulimit>,
    /// `--shm-size` in bytes (Docker's default is 64 MiB).
    pub shm_size: Option<u64>,
    /// `--sysctl KEY=VALUE` (namespaced keys only).
    pub sysctls: BTreeMap<String, String>,
    /// `--device`.
    pub devices: Vec<DeviceMapping>,
    /// `--device-cgroup-rule`: more devices the cgroup lets the container use (by number,
    /// no node made).
    pub cgroup_rules: Vec<CgroupRule>,
}

/// One `--device-cgroup-rule 'c 10:237 rw'`: type (`a`, `b`, `c`), major and minor (`*`:
/// every number), access (`r`, `w`, `m`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CgroupRule {
    pub typ: char,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    pub access: String,
}

impl CgroupRule {
    /// As given (`c 10:237 rw`).
    pub fn show(&self) -> String {
        let n = |x: Option<i64>| x.map_or("*".to_string(), |n| n.to_string());
        format!(
            "{} {}:{} {}",
            self.typ,
            n(self.major),
            n(self.minor),
            self.access
        )
    }
}

/// Parses `--device-cgroup-rule` as Docker does (`TYPE MAJOR:MINOR ACCESS`; see the unit
/// tests).
pub fn parse_cgroup_rule(value: &str) -> Result<CgroupRule, ContainerError> {
    let bad = |why: &str| {
        ContainerError::InvalidArgument(format!(
            "--device-cgroup-rule {value:?}: {why} (expected TYPE MAJOR:MINOR ACCESS, e.g. 'c 10:237 rw')"
        ))
    };
    let words: Vec<&str> = value.split(' ').collect();
    let [typ, numbers, access] = words[..] else {
        return Err(bad("three fields separated by single spaces"));
    };
    let typ = match typ {
        "a" | "b" | "c" => typ.chars().next().unwrap_or('a'),
        _ => return Err(bad("the type is a, b or c")),
    };
    let number = |n: &str| -> Result<Option<i64>, ContainerError> {
        match n {
            "*" => Ok(None),
            n if !n.is_empty() && n.len() <= 10 && n.bytes().all(|b| b.is_ascii_digit()) => {
                Ok(Some(n.parse().map_err(|_| bad("a number is too large"))?))
            }
            _ => Err(bad("major and minor are numbers or *")),
        }
    };
    let (major, minor) = numbers.split_once(':').ok_or_else(|| bad("MAJOR:MINOR"))?;
    let ok_access = !access.is_empty()
        && access.len() <= 3
        && access.chars().all(|c| matches!(c, 'r' | 'w' | 'm'));
    if !ok_access {
        return Err(bad("the access is made of r, w and m"));
    }
    Ok(CgroupRule {
        typ,
        major: number(major)?,
        minor: number(minor)?,
        access: access.to_string(),
    })
}

/// Docker's /dev/shm size when `--shm-size` is not given.
pub const DEFAULT_SHM_SIZE: u64 = 64 << 20;

/// One `--ulimit NAME=SOFT[:HARD]`; -1 (stored as `u64::MAX`) is unlimited.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ulimit {
    /// Docker's name (`nofile`, `nproc`, ...).
    pub name: String,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// The rlimit names Docker accepts, with the OCI type each becomes.
const ULIMIT_NAMES: &[(&str, &str)] = &[
    ("core", "RLIMIT_CORE"),
    ("cpu", "RLIMIT_CPU"),
    ("data", "RLIMIT_DATA"),
    ("fsize", "RLIMIT_FSIZE"),
    ("locks", "RLIMIT_LOCKS"),
    ("memlock", "RLIMIT_MEMLOCK"),
    ("msgqueue", "RLIMIT_MSGQUEUE"),
    ("nice", "RLIMIT_NICE"),
    ("nofile", "RLIMIT_NOFILE"),
    ("nproc", "RLIMIT_NPROC"),
    ("rss", "RLIMIT_RSS"),
    ("rtprio", "RLIMIT_RTPRIO"),
    ("rttime", "RLIMIT_RTTIME"),
    ("sigpending", "RLIMIT_SIGPENDING"),
    ("stack", "RLIMIT_STACK"),
];

impl Ulimit {
    /// The OCI rlimit type name (`RLIMIT_NOFILE`).
    pub fn oci_type(&self) -> &'static str {
        ULIMIT_NAMES
            .iter()
            .find(|(n, _)| *n == self.name)
            .map(|(_, t)| *t)
            .unwrap_or("RLIMIT_NOFILE")
    }

    /// Docker's name for OCI type `typ` (`RLIMIT_NOFILE` -> `nofile`).
    pub fn name_of(typ: &str) -> Option<&'static str> {
        ULIMIT_NAMES
            .iter()
            .find(|(_, t)| *t == typ)
            .map(|(n, _)| *n)
    }
}

/// Parses `--ulimit NAME=SOFT[:HARD]` (HARD defaults to SOFT; -1 is unlimited).
pub fn parse_ulimit(value: &str) -> Result<Ulimit, ContainerError> {
    let bad = |why: String| ContainerError::InvalidArgument(format!("--ulimit {value:?}: {why}"));
    let (name, limits) = value
        .split_once('=')
        .ok_or_else(|| bad("expected NAME=SOFT[:HARD]".into()))?;
    if !ULIMIT_NAMES.iter().any(|(n, _)| *n == name) {
        let names: Vec<&str> = ULIMIT_NAMES.iter().map(|(n, _)| *n).collect();
        return Err(bad(format!(
            "invalid ulimit type: {name} (one of {})",
            names.join(", ")
        )));
    }
    let number = |s: &str| -> Result<u64, ContainerError> {
        match s.trim() {
            "-1" | "unlimited" => Ok(u64::MAX),
            n => n.parse::<u64>().map_err(|_| {
                bad(format!(
                    "{n:?} is not a limit (a number, or -1 for unlimited)"
                ))
            }),
        }
    };
    let (soft, hard) = match limits.split_once(':') {
        Some((s, h)) => (number(s)?, number(h)?),
        None => {
            let n = number(limits)?;
            (n, n)
        }
    };
    if soft > hard {
        return Err(bad(format!(
            "ulimit soft limit must be less than or equal to hard limit: {} > {}",
            show_limit(soft),
            show_limit(hard)
        )));
    }
    Ok(Ulimit {
        name: name.to_string(),
        soft,
        hard,
    })
}

/// A limit as Docker shows it (-1 for unlimited).
pub fn show_limit(n: u64) -> i64 {
    if n == u64::MAX {
        -1
    } else {
        n.min(i64::MAX as u64) as i64
    }
}

/// The sysctls Docker allows one by one: the IPC namespace's.
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Which namespace a sysctl belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SysctlNamespace {
    /// `net.*`: the network namespace's.
    Network,
    /// `kernel.shm*`, `kernel.msg*`, `kernel.sem`, `fs.mqueue.*`: the IPC namespace's.
    Ipc,
}

/// Parses `--sysctl KEY=VALUE`: only keys a container's own namespaces hold (as Docker's
/// allowlist), written with dots; anything else would change the host's kernel.
pub fn parse_sysctl(value: &str) -> Result<(String, String, SysctlNamespace), ContainerError> {
    let bad = |why: String| ContainerError::InvalidArgument(format!("--sysctl {value:?}: {why}"));
    let (key, val) = value
        .split_once('=')
        .ok_or_else(|| bad("expected KEY=VALUE".into()))?;
    let well_formed = !key.is_empty()
        && key.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if !well_formed {
        return Err(bad(format!(
            "invalid sysctl key {key:?}: dot-separated names of letters, digits, _ and -"
        )));
    }
    if val.bytes().any(|b| b.is_ascii_control()) {
        return Err(bad("the value holds a control character".into()));
    }
    let namespace = if key.starts_with("net.") {
        SysctlNamespace::Network
    } else if IPC_SYSCTLS.contains(&key) || key.starts_with("fs.mqueue.") {
        SysctlNamespace::Ipc
    } else {
        return Err(bad(format!(
            "sysctl '{key}' is not allowed: it is not namespaced (only net.*, fs.mqueue.*, kernel.msg*, kernel.sem, kernel.shm* are)"
        )));
    };
    Ok((key.to_string(), val.to_string(), namespace))
}

/// One `--device HOST[:CTR][:PERMISSIONS]`, with what the host's node is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceMapping {
    /// The host's device node, as given.
    pub host: PathBuf,
    /// Where it appears in the container.
    pub container: String,
    /// `r`, `w`, `m` in any combination.
    pub access: String,
    /// Block (`true`) or character device.
    pub block: bool,
    /// Device numbers.
    pub major: i64,
    /// Device numbers.
    pub minor: i64,
    /// The host node's permission bits, owner and group, kept in the container.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// Parses `--device HOST[:CTR][:rwm]` and reads the host's node: a path that is missing or
/// not a character or block device is refused, naming it.
pub fn parse_device(value: &str) -> Result<DeviceMapping, ContainerError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let bad = |why: String| ContainerError::InvalidArgument(format!("--device {value:?}: {why}"));
    let is_access = |s: &str| !s.is_empty() && s.len() <= 3 && s.chars().all(|c| "rwm".contains(c));
    let parts: Vec<&str> = value.split(':').collect();
    let (host, container, access) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, a] if is_access(a) => (*h, *h, *a),
        [h, c] => (*h, *c, "rwm"),
        [h, c, a] if is_access(a) => (*h, *c, *a),
        [_, _, a] => return Err(bad(format!("invalid device mode: {a} (r, w, m)"))),
        _ => return Err(bad("expected HOST[:CONTAINER][:PERMISSIONS]".into())),
    };
    for (what, path) in [("host", host), ("container", container)] {
        if !path.starts_with('/') {
            return Err(bad(format!("the {what} path {path:?} must be absolute")));
        }
        if path.bytes().any(|b| b.is_ascii_control()) || path.split('/').any(|p| p == "..") {
            return Err(bad(format!(
                "the {what} path {path:?} holds `..` or a control character"
            )));
        }
    }
    if container == "/dev" || !container.starts_with("/dev/") {
        return Err(bad(format!(
            "the container path {container:?} must be below /dev"
        )));
    }
    let meta = std::fs::metadata(host).map_err(|e| {
        bad(format!(
            "error gathering device information while adding custom device {host:?}: {e}"
        ))
    })?;
    let kind = meta.file_type();
    if !kind.is_char_device() && !kind.is_block_device() {
        return Err(bad(format!(
            "error gathering device information while adding custom device {host:?}: not a device node"
        )));
    }
    let rdev = meta.rdev();
    Ok(DeviceMapping {
        host: PathBuf::from(host),
        container: container.to_string(),
        access: access.to_string(),
        block: kind.is_block_device(),
        major: nix::sys::stat::major(rdev) as i64,
        minor: nix::sys::stat::minor(rdev) as i64,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

/// Parses `--shm-size` (bytes, or with a unit k, m, g).
pub fn parse_shm_size(value: &str) -> Result<u64, ContainerError> {
    super::options::parse_size(value)
        .map_err(|e| ContainerError::InvalidArgument(format!("--shm-size {e}")))
}

/// Parses `--group-add`: a group name or ID (no `:`, `,` or control character: it travels
/// in the spec and is resolved in the container's /etc/group at start).
pub fn parse_group(value: &str) -> Result<String, ContainerError> {
    let ok = !value.is_empty()
        && value.len() <= 256
        && !value
            .bytes()
            .any(|b| b.is_ascii_control() || b == b':' || b == b',');
    if !ok {
        return Err(ContainerError::InvalidArgument(format!(
            "--group-add {value:?}: expected a group name or ID"
        )));
    }
    Ok(value.to_string())
}

/// Parses `--cpu-shares` (0 leaves the default; otherwise 2..262144, the kernel's range).
pub fn parse_cpu_shares(value: i64) -> Result<Option<u64>, ContainerError> {
    match value {
        0 => Ok(None),
        2..=262_144 => Ok(Some(value as u64)),
        _ => Err(ContainerError::InvalidArgument(format!(
            "--cpu-shares {value}: the range is 2 to 262144 (0 for the default)"
        ))),
    }
}

/// Parses `--blkio-weight` (0 leaves the default; otherwise 10..1000).
/// `--memory-swappiness` as Docker takes it: -1 (the default) leaves the host's, else 0 to
/// 100.
pub fn parse_swappiness(value: i64) -> Result<Option<u64>, ContainerError> {
    match value {
        -1 => Ok(None),
        0..=100 => Ok(Some(value as u64)),
        _ => Err(ContainerError::InvalidArgument(format!(
            "--memory-swappiness {value}: Invalid value: {value}, valid memory swappiness range is 0-100"
        ))),
    }
}

pub fn parse_blkio_weight(value: i64) -> Result<Option<u16>, ContainerError> {
    match value {
        0 => Ok(None),
        10..=1000 => Ok(Some(value as u16)),
        _ => Err(ContainerError::InvalidArgument(format!(
            "--blkio-weight {value}: Range of blkio weight is from 10 to 1000"
        ))),
    }
}

/// The CPUs or memory nodes of a cpuset list (`0-2,4`), or why it is not one.
fn cpuset_members(list: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in list.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let n = part.parse::<u32>().ok()?;
                (n, n)
            }
        };
        if a > b || b - a > 4096 {
            return None;
        }
        out.extend(a..=b);
    }
    Some(out)
}

/// Parses `--cpuset-cpus`/`--cpuset-mems` (`flag`): a list such as `0-2,4`, each member
/// present in `available` (this machine's online list, when known).
pub fn parse_cpuset(
    flag: &str,
    value: &str,
    available: Option<&str>,
) -> Result<String, ContainerError> {
    let bad = |why: String| ContainerError::InvalidArgument(format!("{flag} {value:?}: {why}"));
    let members = cpuset_members(value)
        .ok_or_else(|| bad("invalid value: expected a list such as 0-2,4".into()))?;
    if let Some(online) = available.and_then(cpuset_members) {
        if let Some(missing) = members.iter().find(|m| !online.contains(m)) {
            return Err(bad(format!(
                "Requested {} are not available - requested {missing}, available: {}",
                if flag.ends_with("cpus") {
                    "CPUs"
                } else {
                    "memory nodes"
                },
                available.unwrap_or_default()
            )));
        }
    }
    Ok(value.to_string())
}

/// This machine's online CPUs or memory nodes (`cpu` or `node`), as the kernel lists them.
pub fn online(kind: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/devices/system/{kind}/online"))
        .ok()
        .map(|s| s.trim().to_string())
}

impl Tuning {
    /// The checks that relate these flags to each other and to `-m` (`memory`), and to the
    /// namespaces the container gets (`host_network`), as Docker makes them.
    pub fn check(&self, memory: Option<i64>, host_network: bool) -> Result<(), ContainerError> {
        let bad = |m: &str| Err(ContainerError::InvalidArgument(m.to_string()));
        if let Some(swap) = self.memory_swap {
            match memory {
                // Unlimited swap without a memory limit is what a container has anyway.
                None if swap == -1 => {}
                None => {
                    return bad("--memory-swap: You should always set the Memory limit when using Memoryswap limit, see usage")
                }
                Some(m) if swap != -1 && swap < m => {
                    return bad("--memory-swap: Minimum memoryswap limit should be larger than memory limit, see usage")
                }
                _ => {}
            }
        }
        if let (Some(r), Some(m)) = (self.memory_reservation, memory) {
            if r > m {
                return bad("--memory-reservation: Minimum memory limit can not be less than memory reservation limit, see usage");
            }
        }
        if host_network {
            if let Some(key) = self.sysctls.keys().find(|k| k.starts_with("net.")) {
                return bad(&format!(
                    "--sysctl {key}: not allowed in the host's network namespace (--network host)"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn device_cgroup_rules_parse_as_dockers() {
        let r = parse_cgroup_rule("c 10:237 rw").unwrap();
        assert_eq!(
            (r.typ, r.major, r.minor, r.access.as_str()),
            ('c', Some(10), Some(237), "rw")
        );
        let any = parse_cgroup_rule("a *:* rwm").unwrap();
        assert_eq!((any.major, any.minor), (None, None));
        assert_eq!(any.show(), "a *:* rwm");
        for bad in [
            "c 10:237", "x 1:2 r", "c 1:2 rx", "c a:2 r", "c 1-2 r", "c  1:2 r", "",
        ] {
            assert!(parse_cgroup_rule(bad).is_err(), "{bad:?}");
        }
    }
    use super::*;

    #[test]
    fn ulimits_parse_as_docker_writes_them() {
        let u = parse_ulimit("nofile=1024:2048").unwrap();
        assert_eq!(
            (u.soft, u.hard, u.oci_type()),
            (1024, 2048, "RLIMIT_NOFILE")
        );
        let u = parse_ulimit("nproc=64").unwrap();
        assert_eq!((u.soft, u.hard), (64, 64));
        assert_eq!(parse_ulimit("core=-1").unwrap().hard, u64::MAX);
        for bad in [
            "nofile",
            "bogus=1",
            "nofile=2048:1024",
            "nofile=x",
            "nofile=1:-1:2",
        ] {
            assert!(parse_ulimit(bad).is_err(), "{bad} accepted");
        }
        let e = parse_ulimit("nofile=20:10").unwrap_err().to_string();
        assert!(e.contains("20 > 10"), "{e}");
    }

    #[test]
    fn only_namespaced_sysctls_pass() {
        for good in [
            "net.ipv4.ip_forward=1",
            "net.core.somaxconn=1024",
            "kernel.shmmax=1000000",
            "kernel.sem=250 32000 32 128",
            "fs.mqueue.msg_max=20",
        ] {
            assert!(parse_sysctl(good).is_ok(), "{good} refused");
        }
        for bad in [
            "kernel.hostname=x",
            "kernel.panic=1",
            "vm.overcommit_memory=1",
            "fs.file-max=1",
            "net..x=1",
            "net.ipv4/../../x=1",
            "net.x",
            "net.a=b\nc",
        ] {
            assert!(parse_sysctl(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn devices_must_exist_and_be_nodes() {
        let d = parse_device("/dev/null:/dev/mynull:r").unwrap();
        assert_eq!((d.major, d.minor, d.block), (1, 3, false));
        assert_eq!(
            (d.container.as_str(), d.access.as_str()),
            ("/dev/mynull", "r")
        );
        let d = parse_device("/dev/zero:rw").unwrap();
        assert_eq!(
            (d.container.as_str(), d.access.as_str()),
            ("/dev/zero", "rw")
        );
        for bad in [
            "/dev/capsa-no-such-device",
            "/etc/passwd",
            "dev/null",
            "/dev/null:/etc/null",
            "/dev/null:/dev/../etc/x",
            "/dev/null:/dev/x:rwx",
        ] {
            assert!(parse_device(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn cpusets_and_weights_are_checked() {
        assert!(parse_cpuset("--cpuset-cpus", "0-1,3", None).is_ok());
        assert!(parse_cpuset("--cpuset-cpus", "0", Some("0-1")).is_ok());
        assert!(parse_cpuset("--cpuset-cpus", "5", Some("0-1")).is_err());
        for bad in ["", "a", "1-0", "0,,1", "-1"] {
            assert!(parse_cpuset("--cpuset-cpus", bad, None).is_err(), "{bad}");
        }
        assert_eq!(parse_cpu_shares(512).unwrap(), Some(512));
        assert!(parse_cpu_shares(1).is_err() && parse_cpu_shares(-5).is_err());
        assert_eq!(parse_blkio_weight(0).unwrap(), None);
        assert!(parse_blkio_weight(5).is_err() && parse_blkio_weight(1001).is_err());
    }

    #[test]
    fn swap_and_reservation_relate_to_the_memory_limit() {
        let t = Tuning {
            memory_swap: Some(128 << 20),
            ..Default::default()
        };
        assert!(t.check(None, false).is_err());
        assert!(t.check(Some(256 << 20), false).is_err());
        assert!(t.check(Some(64 << 20), false).is_ok());
        let unlimited = Tuning {
            memory_swap: Some(-1),
            ..Default::default()
        };
        assert!(unlimited.check(None, false).is_ok());
        let t = Tuning {
            memory_reservation: Some(128 << 20),
            ..Default::default()
        };
        assert!(t.check(Some(64 << 20), false).is_err());
        assert!(t.check(None, false).is_ok());
    }
}
