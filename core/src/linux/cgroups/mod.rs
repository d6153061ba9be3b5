//! cgroups behind one interface: v1 (legacy and hybrid hosts) and v2 (the unified hierarchy).
//!
//! A container's cgroup is placed at absolute paths decided once, at create time, and kept
//! in the container's state ([`CgroupPaths`]), so that later commands find it even when run
//! from another cgroup. A relative parent nests under the creating process's own cgroup,
//! so limits that enclose the caller also enclose its containers.

mod bpf;
pub mod device_filter;
pub mod sibling;
pub mod v1;
pub mod v2;

use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The cgroup limits a spec asks for (none: an empty set).
pub fn resources_of(spec: &oci_spec::runtime::Spec) -> LinuxResources {
    spec.linux()
        .as_ref()
        .and_then(|l| l.resources().clone())
        .unwrap_or_default()
}

/// Where cgroup file systems are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// statfs magic of cgroup2.
const CGROUP2_SUPER_MAGIC: i64 = 0x63677270;

/// How this host mounts cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupMode {
    /// Only the unified hierarchy (cgroup v2).
    Unified,
    /// v1 controllers plus an empty unified hierarchy (these machines).
    Hybrid,
    /// Only v1.
    Legacy,
}

impl CgroupMode {
    /// Detects the mode from what is mounted at /sys/fs/cgroup.
    pub fn detect() -> Option<CgroupMode> {
        if is_cgroup2(Path::new(CGROUP_ROOT)) {
            return Some(CgroupMode::Unified);
        }
        if !Path::new(CGROUP_ROOT).join("memory").exists()
            && !Path::new(CGROUP_ROOT).join("pids").exists()
        {
            return None;
        }
        if is_cgroup2(&Path::new(CGROUP_ROOT).join("unified")) {
            Some(CgroupMode::Hybrid)
        } else {
            Some(CgroupMode::Legacy)
        }
    }

    /// The cgroup version capsa drives in this mode.
    pub fn version(self) -> u8 {
        match self {
            CgroupMode::Unified => 2,
            CgroupMode::Hybrid | CgroupMode::Legacy => 1,
        }
    }

    /// "v2", "v1 (hybrid)", "v1".
    pub fn describe(self) -> &'static str {
        match self {
            CgroupMode::Unified => "v2 (unified)",
            CgroupMode::Hybrid => "v1 (hybrid: v1 controllers, empty cgroup2)",
            CgroupMode::Legacy => "v1 (legacy)",
        }
    }
}

fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 == CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// The absolute directories of one container's cgroup: for v1 one per hierarchy (keyed by
/// its mount directory name, e.g. `memory`, `cpu,cpuacct`), for v2 the single key `unified`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupPaths {
    /// Cgroup version these paths belong to.
    pub version: u8,
    /// Hierarchy -> absolute directory.
    pub dirs: BTreeMap<String, PathBuf>,
}

/// Errors of cgroup set-up, naming the file and the cause.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No usable cgroup file system is mounted.
    #[error("no cgroup file system mounted at {CGROUP_ROOT}")]
    NotMounted,
    /// A cgroup file could not be read, written or created.
    #[error("cgroup {path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A device rule of the spec cannot be enforced as written.
    #[error(transparent)]
    BadDeviceRule(#[from] device_filter::BadDeviceRule),
    /// The device allowlist program could not be loaded into or attached to the cgroup.
    #[error("cgroup {path}: device allowlist: {op}: {source}{detail}")]
    DeviceProgram {
        /// The cgroup directory.
        path: PathBuf,
        /// The bpf(2) command that failed.
        op: &'static str,
        /// The cause.
        source: std::io::Error,
        /// What the kernel's verifier or configuration adds (empty, or starts with "; ").
        detail: String,
    },
    /// A cgroup path would leave the cgroup file system (a `..` in `--cgroup-parent`).
    #[error("cgroup path {}: {why}", path.display())]
    OutsideHierarchy {
        /// The path as it would have been joined.
        path: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A setting was asked for that this cgroup version or kernel cannot apply.
    #[error("{what} cannot be applied here: {why}")]
    Unsupported {
        /// The setting (as the flag names it).
        what: &'static str,
        /// Why.
        why: String,
    },
    /// A limit was asked for whose controller this host does not offer.
    #[error("cgroup controller {controller:?} is not available ({why})")]
    MissingController {
        /// The controller's name.
        controller: &'static str,
        /// Where it was looked for.
        why: String,
    },
}

/// Where the kernel lists the huge page sizes it offers (`hugepages-2048kB`, ...).
const HUGEPAGES: &str = "/sys/kernel/mm/hugepages";

/// The spec's hugetlb limits as (page size as the cgroup files name it, bytes): "2MB",
/// "1GB". Each size must be one this kernel offers; the spec names them as the cgroup
/// files do, as runc takes them.
pub(crate) fn hugetlb_limits(r: &LinuxResources) -> Result<Vec<(String, u64)>, CgroupError> {
    let Some(limits) = r.hugepage_limits().as_ref().filter(|l| !l.is_empty()) else {
        return Ok(Vec::new());
    };
    let offered = offered_huge_page_sizes();
    limits
        .iter()
        .map(|l| {
            let size = l.page_size();
            if !offered.iter().any(|o| o == size) {
                return Err(CgroupError::Unsupported {
                    what: "hugepageLimits",
                    why: format!(
                        "page size {size:?} is not one this kernel offers ({})",
                        if offered.is_empty() {
                            "none".to_string()
                        } else {
                            offered.join(", ")
                        }
                    ),
                });
            }
            let limit = u64::try_from(l.limit()).map_err(|_| CgroupError::Unsupported {
                what: "hugepageLimits",
                why: format!("the limit of {size} is {}, below 0", l.limit()),
            })?;
            Ok((size.clone(), limit))
        })
        .collect()
}

/// The huge page sizes of this kernel, named as the hugetlb cgroup files name them: the
/// largest unit that divides the size, "2MB" for 2048 kB, "1GB" for 1048576 kB.
pub(crate) fn offered_huge_page_sizes() -> Vec<String> {
    let mut sizes: Vec<u64> = std::fs::read_dir(HUGEPAGES)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    name.strip_prefix("hugepages-")?
                        .strip_suffix("kB")?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    sizes.sort_unstable();
    sizes.into_iter().map(huge_page_size_name).collect()
}

fn huge_page_size_name(kib: u64) -> String {
    match kib {
        k if k >= 1 << 20 && k % (1 << 20) == 0 => format!("{}GB", k >> 20),
        k if k >= 1 << 10 && k % (1 << 10) == 0 => format!("{}MB", k >> 10),
        k => format!("{k}KB"),
    }
}

/// Writes one hugetlb limit: `{prefix}.{size}.{file}`, and the reservation counterpart
/// (`.rsvd.`) where the kernel has it, as runc does, so that pages reserved by mmap but
/// not yet faulted count against the same limit.
pub(crate) fn write_hugetlb(
    dir: &Path,
    size: &str,
    file: &str,
    value: &str,
) -> Result<(), CgroupError> {
    write_file(dir, &format!("hugetlb.{size}.{file}"), value)?;
    let reserved = format!("hugetlb.{size}.rsvd.{file}");
    if dir.join(&reserved).exists() {
        write_file(dir, &reserved, value)?;
    }
    Ok(())
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes one cgroup control file.
pub(crate) fn write_file(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(io_err(&path))
}

/// Reads one cgroup control file, trimmed.
pub(crate) fn read_file(dir: &Path, file: &str) -> Result<String, CgroupError> {
    let path = dir.join(file);
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(io_err(&path))
}

/// Reads `key value` lines (memory.stat, memory.events) into a map.
pub(crate) fn read_keyed(dir: &Path, file: &str) -> BTreeMap<String, u64> {
    read_file(dir, file)
        .map(|s| {
            s.lines()
                .filter_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    Some((k.to_string(), v.trim().parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Counters of one cgroup, as `stats` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// CPU time used, nanoseconds.
    pub cpu_ns: u64,
    /// Of which in user mode and in the kernel, nanoseconds (cgroup v1 counts them in
    /// clock ticks, so they are coarser than `cpu_ns`).
    pub cpu_user_ns: u64,
    pub cpu_kernel_ns: u64,
    /// Memory charged, bytes.
    pub memory_usage: u64,
    /// Page cache that can be dropped at once (not counted by Docker's MEM USAGE).
    pub memory_inactive_file: u64,
    /// The memory limit (None: unlimited).
    pub memory_limit: Option<u64>,
    /// Bytes read from block devices.
    pub block_read: u64,
    /// Bytes written to block devices.
    pub block_write: u64,
    /// Processes in the cgroup.
    pub pids: u64,
}

/// What every cgroup implementation offers the engine.
pub trait CgroupManager {
    /// Creates the cgroup directories and applies `resources`.
    fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError>;
    /// Moves process `pid` into the cgroup.
    fn add_task(&self, pid: i32) -> Result<(), CgroupError>;
    /// Moves the calling thread (the single-threaded init) into the cgroup. Moving oneself
    /// thread by thread skips the kernel's global threadgroup lock, and with it an RCU grace
    /// period that costs milliseconds per container when a parent moves a child.
    fn join_self(&self) -> Result<(), CgroupError>;
    /// A directory descriptor to clone a process straight into (cgroup v2's
    /// CLONE_INTO_CGROUP), saving the attach; None where the version has no such thing.
    fn clone_target(&self) -> Option<std::os::fd::OwnedFd> {
        None
    }
    /// The PIDs in the cgroup (host PID namespace).
    fn pids(&self) -> Vec<i32>;
    /// Whether the kernel's OOM killer killed a process of this cgroup.
    fn oom_killed(&self) -> bool;
    /// Current counters.
    fn stats(&self) -> CgroupStats;
    /// Freezes (`true`) or thaws every process of the cgroup; returns once the kernel says
    /// it is done.
    fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError>;
    /// Kills what is left and removes the cgroup directories. Missing directories are fine.
    fn destroy(&self) -> Result<(), CgroupError>;
}

/// The manager for recorded `paths`.
pub fn manager(paths: &CgroupPaths) -> Box<dyn CgroupManager> {
    if paths.version == 2 {
        Box::new(v2::V2Manager::new(paths.clone()))
    } else {
        Box::new(v1::V1Manager::new(paths.clone()))
    }
}

/// Decides the absolute cgroup directories for a container on this host. `parent` is
/// `--cgroup-parent`: absolute from the hierarchy's root, or relative to the caller's own
/// cgroup; `None` means `capsa` under the caller's own cgroup.
pub fn resolve_paths(
    mode: CgroupMode,
    parent: Option<&str>,
    id: &str,
) -> Result<CgroupPaths, CgroupError> {
    if let Some(parent) = parent {
        check_relative_path(Path::new(parent))?;
    }
    let own = own_cgroups();
    let place = |own_path: &str| -> PathBuf {
        let parent = parent.unwrap_or("capsa");
        let base = if parent.starts_with('/') {
            PathBuf::from(parent)
        } else {
            Path::new(own_path).join(parent)
        };
        base.join(id)
    };
    let mut dirs = BTreeMap::new();
    match mode {
        CgroupMode::Unified => {
            let rel = place(own.get("").map(String::as_str).unwrap_or("/"));
            dirs.insert(
                "unified".to_string(),
                join_abs(Path::new(CGROUP_ROOT), &rel)?,
            );
        }
        CgroupMode::Hybrid | CgroupMode::Legacy => {
            for (hierarchy, controllers) in v1::mounted_hierarchies() {
                let own_path = controllers
                    .iter()
                    .find_map(|c| own.get(c.as_str()))
                    .map(String::as_str)
                    .unwrap_or("/");
                let rel = place(own_path);
                dirs.insert(
                    hierarchy.clone(),
                    join_abs(&Path::new(CGROUP_ROOT).join(&hierarchy), &rel)?,
                );
            }
            if dirs.is_empty() {
                return Err(CgroupError::NotMounted);
            }
        }
    }
    Ok(CgroupPaths {
        version: mode.version(),
        dirs,
    })
}

/// `rel` (absolute from the hierarchy's root, or not) below the hierarchy mounted at
/// `base`; refused when the result would not stay below `base`.
fn join_abs(base: &Path, rel: &Path) -> Result<PathBuf, CgroupError> {
    check_relative_path(rel)?;
    let joined = base.join(rel.strip_prefix("/").unwrap_or(rel));
    if !joined.starts_with(base) || joined == base {
        return Err(CgroupError::OutsideHierarchy {
            path: joined,
            why: "not below the cgroup hierarchy's root",
        });
    }
    Ok(joined)
}

/// Refuses a cgroup path with a `..` component or a control character (NUL, newline):
/// joined below a hierarchy's mount it would name a directory elsewhere, or a different
/// path than the one recorded.
pub fn check_relative_path(path: &Path) -> Result<(), CgroupError> {
    let bad = |why| {
        Err(CgroupError::OutsideHierarchy {
            path: path.to_path_buf(),
            why,
        })
    };
    if path
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .any(|b| b.is_ascii_control())
    {
        return bad("it holds a control character");
    }
    if path
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return bad("a `..` component would leave the cgroup hierarchy");
    }
    Ok(())
}

/// Checks recorded cgroup `paths` (read back from a container's record) before they are
/// acted on: each one a directory strictly below its hierarchy's mount (`/sys/fs/cgroup`
/// for v2, `/sys/fs/cgroup/<hierarchy>` for v1), without `..`.
pub fn check_recorded(paths: &CgroupPaths) -> Result<(), CgroupError> {
    // Components of a hierarchy's mount point: `/`, sys, fs, cgroup (and v1's hierarchy).
    let mount_depth = if paths.version == 2 { 4 } else { 5 };
    for dir in paths.dirs.values() {
        check_relative_path(dir)?;
        if !dir.starts_with(CGROUP_ROOT) || dir.components().count() <= mount_depth {
            return Err(CgroupError::OutsideHierarchy {
                path: dir.clone(),
                why: "not below a cgroup hierarchy's root",
            });
        }
    }
    Ok(())
}

/// This process's cgroup per controller from /proc/self/cgroup; v2's entry has key "".
fn own_cgroups() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => continue,
        };
        if controllers.is_empty() {
            map.insert(String::new(), path.to_string());
        }
        for c in controllers.split(',').filter(|c| !c.is_empty()) {
            map.insert(c.to_string(), path.to_string());
        }
    }
    map
}

/// Removes a cgroup directory, first killing what is in it; waits (bounded) for the kernel
/// to finish reaping, since rmdir fails with EBUSY while any task is still exiting.
pub(crate) fn remove_dir_killing(dir: &Path) -> Result<(), CgroupError> {
    const ATTEMPTS: u32 = 200;
    for attempt in 0..ATTEMPTS {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt + 1 < ATTEMPTS => {
                for pid in read_pids(dir) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => return Err(io_err(dir)(e)),
        }
    }
    unreachable!("the last attempt returns")
}

/// Waits (bounded) until `done` holds, re-reading a freezer file: the kernel freezes tasks
/// asynchronously.
pub(crate) fn wait_freezer(what: &Path, mut done: impl FnMut() -> bool) -> Result<(), CgroupError> {
    for _ in 0..1000 {
        if done() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Err(io_err(what)(std::io::Error::other(
        "the freezer did not settle within 2 s",
    )))
}

/// PIDs listed in `cgroup.procs` of `dir`.
pub(crate) fn read_pids(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_page_sizes_are_named_as_the_hugetlb_files_name_them() {
        assert_eq!(huge_page_size_name(2048), "2MB");
        assert_eq!(huge_page_size_name(1 << 20), "1GB");
        assert_eq!(huge_page_size_name(64), "64KB");
        assert_eq!(huge_page_size_name(32 << 10), "32MB");
    }

    #[test]
    fn parents_that_leave_the_hierarchy_are_refused() {
        for bad in ["/../../tmp/x", "a/../../b", "/ok/..", "/a\nb", "/a\0b"] {
            assert!(check_relative_path(Path::new(bad)).is_err(), "{bad:?}");
        }
        for good in ["/capsa", "rel/x", "/a..b/c", "/."] {
            assert!(check_relative_path(Path::new(good)).is_ok(), "{good:?}");
        }
        let base = Path::new("/sys/fs/cgroup/memory");
        assert_eq!(
            join_abs(base, Path::new("/p/id")).unwrap(),
            base.join("p/id")
        );
        assert!(join_abs(base, Path::new("/../../../tmp")).is_err());
        assert!(join_abs(base, Path::new("/")).is_err());
    }

    #[test]
    fn recorded_paths_must_lie_below_a_hierarchy() {
        let mut paths = CgroupPaths {
            version: 1,
            dirs: BTreeMap::new(),
        };
        paths
            .dirs
            .insert("memory".into(), "/sys/fs/cgroup/memory/p/id".into());
        assert!(check_recorded(&paths).is_ok());
        for bad in [
            "/tmp/x/y/z/w",
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup/memory/../../x",
        ] {
            paths.dirs.insert("memory".into(), bad.into());
            assert!(check_recorded(&paths).is_err(), "{bad}");
        }
    }
}
