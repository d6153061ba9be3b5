//! cgroup v1: one directory per mounted hierarchy; controllers written file by file.

use super::{
    hugetlb_limits, io_err, read_file, read_keyed, read_pids, remove_dir_killing, wait_freezer,
    write_file, write_hugetlb, CgroupError, CgroupManager, CgroupPaths, CgroupStats, CGROUP_ROOT,
};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};
use std::path::{Path, PathBuf};

/// Controllers capsa places containers in (others, such as net_cls, are left alone).
const USED_CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "hugetlb",
];

/// Mounted v1 hierarchies capsa uses: (directory name under /sys/fs/cgroup, controllers).
pub fn mounted_hierarchies() -> Vec<(String, Vec<String>)> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut out = Vec::new();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[2] != "cgroup" {
            continue;
        }
        let Some(dir) = f[1].strip_prefix(&format!("{CGROUP_ROOT}/")) else {
            continue;
        };
        let controllers: Vec<String> = f[3]
            .split(',')
            .filter(|o| USED_CONTROLLERS.contains(o))
            .map(String::from)
            .collect();
        if !controllers.is_empty() && !dir.contains('/') {
            out.push((dir.to_string(), controllers));
        }
    }
    out
}

/// The v1 manager of one container.
pub struct V1Manager {
    paths: CgroupPaths,
}

impl V1Manager {
    /// A manager for recorded paths.
    pub fn new(paths: CgroupPaths) -> Self {
        V1Manager { paths }
    }

    /// The directory of the hierarchy that carries `controller`.
    fn dir(&self, controller: &str) -> Option<&PathBuf> {
        self.paths
            .dirs
            .iter()
            .find(|(h, _)| h.split(',').any(|c| c == controller))
            .map(|(_, d)| d)
    }

    fn require(&self, controller: &'static str) -> Result<&PathBuf, CgroupError> {
        self.dir(controller)
            .ok_or_else(|| CgroupError::MissingController {
                controller,
                why: format!("no v1 hierarchy for it under {CGROUP_ROOT}"),
            })
    }

    fn apply_memory(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let Some(m) = r.memory().as_ref() else {
            return Ok(());
        };
        if m.limit().is_none()
            && m.swap().is_none()
            && m.reservation().is_none()
            && m.swappiness().is_none()
            && m.disable_oom_killer() != Some(true)
        {
            return Ok(());
        }
        let dir = self.require("memory")?;
        let memsw = "memory.memsw.limit_in_bytes";
        match (m.limit(), m.swap()) {
            (Some(limit), Some(swap)) => {
                if !dir.join(memsw).exists() {
                    return Err(CgroupError::Unsupported {
                        what: "--memory-swap",
                        why: format!(
                            "{memsw} is missing: the kernel does not account swap (swapaccount=1)"
                        ),
                    });
                }
                // memsw must stay at least the limit at every step: raise it first when
                // growing, lower the limit first when shrinking.
                let current: i64 = read_file(dir, memsw)?.parse().unwrap_or(i64::MAX);
                let swap = if swap < 0 {
                    "-1".to_string()
                } else {
                    swap.to_string()
                };
                let grows = swap == "-1" || swap.parse::<i64>().unwrap_or(0) > current;
                if grows {
                    write_file(dir, memsw, &swap)?;
                    write_file(dir, "memory.limit_in_bytes", &limit.to_string())?;
                } else {
                    write_file(dir, "memory.limit_in_bytes", &limit.to_string())?;
                    write_file(dir, memsw, &swap)?;
                }
            }
            (Some(limit), None) => {
                write_file(dir, "memory.limit_in_bytes", &limit.to_string())?;
            }
            (None, Some(_)) => {
                return Err(CgroupError::Unsupported {
                    what: "--memory-swap",
                    why: "it needs a memory limit".into(),
                })
            }
            (None, None) => {}
        }
        if let Some(reservation) = m.reservation() {
            write_file(dir, "memory.soft_limit_in_bytes", &reservation.to_string())?;
        }
        if let Some(swappiness) = m.swappiness() {
            if swappiness > 100 {
                return Err(CgroupError::Unsupported {
                    what: "--memory-swappiness",
                    why: format!("{swappiness} is not in 0-100"),
                });
            }
            write_file(dir, "memory.swappiness", &swappiness.to_string())?;
        }
        if m.disable_oom_killer() == Some(true) {
            write_file(dir, "memory.oom_control", "1")?;
        }
        Ok(())
    }

    fn apply_cpu(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let Some(cpu) = r.cpu().as_ref() else {
            return Ok(());
        };
        if cpu.shares().is_some() || cpu.period().is_some() || cpu.quota().is_some() {
            let dir = self.require("cpu")?;
            if let Some(shares) = cpu.shares() {
                write_file(dir, "cpu.shares", &shares.to_string())?;
            }
            if let Some(period) = cpu.period() {
                write_file(dir, "cpu.cfs_period_us", &period.to_string())?;
            }
            if let Some(quota) = cpu.quota() {
                write_file(dir, "cpu.cfs_quota_us", &quota.to_string())?;
            }
        }
        if cpu.cpus().is_some() || cpu.mems().is_some() {
            let dir = self.require("cpuset")?;
            if let Some(cpus) = cpu.cpus() {
                write_file(dir, "cpuset.cpus", cpus)?;
            }
            if let Some(mems) = cpu.mems() {
                write_file(dir, "cpuset.mems", mems)?;
            }
        }
        Ok(())
    }

    /// The spec's hugepageLimits: hugetlb.SIZE.limit_in_bytes (and its rsvd twin).
    fn apply_hugetlb(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let limits = hugetlb_limits(r)?;
        if limits.is_empty() {
            return Ok(());
        }
        let dir = self.require("hugetlb")?;
        for (size, limit) in limits {
            write_hugetlb(dir, &size, "limit_in_bytes", &limit.to_string())?;
        }
        Ok(())
    }

    /// `--blkio-weight`: blkio.weight (CFQ), or blkio.bfq.weight where BFQ schedules.
    fn apply_blkio(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let Some(weight) = r.block_io().as_ref().and_then(|b| b.weight()) else {
            return Ok(());
        };
        let dir = self.require("blkio")?;
        let file = ["blkio.weight", "blkio.bfq.weight"]
            .into_iter()
            .find(|f| dir.join(f).exists())
            .ok_or_else(|| CgroupError::Unsupported {
                what: "--blkio-weight",
                why: "the blkio controller has no weight file (blkio.weight, blkio.bfq.weight): no block I/O scheduler here that weighs cgroups (CFQ or BFQ)".into(),
            })?;
        write_file(dir, file, &weight.to_string())
    }

    fn apply_pids(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let Some(pids) = r.pids().as_ref() else {
            return Ok(());
        };
        let dir = self.require("pids")?;
        let value = if pids.limit() > 0 {
            pids.limit().to_string()
        } else {
            "max".into()
        };
        write_file(dir, "pids.max", &value)
    }

    /// The devices controller: deny everything, then allow the spec's list, in order.
    fn apply_devices(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let Some(rules) = r.devices().as_ref() else {
            return Ok(());
        };
        let Some(dir) = self.dir("devices") else {
            return Ok(());
        };
        for rule in rules {
            let file = if rule.allow() {
                "devices.allow"
            } else {
                "devices.deny"
            };
            if let Some(line) = device_rule(rule) {
                write_file(dir, file, &line)?;
            }
        }
        Ok(())
    }
}

/// `c 1:3 rwm` for one rule; `a` for "all devices"; None for a FIFO's rule, which no
/// device matches (v1 has no such type; writing `a` for it would reset the whole list).
fn device_rule(rule: &LinuxDeviceCgroup) -> Option<String> {
    let kind = match rule.typ() {
        // `u` (unbuffered) is a character device.
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => "c",
        Some(LinuxDeviceType::B) => "b",
        Some(LinuxDeviceType::P) => return None,
        None | Some(LinuxDeviceType::A) => "a",
    };
    if kind == "a" && rule.major().is_none() && rule.minor().is_none() {
        return Some("a".into());
    }
    let num = |n: Option<i64>| n.map_or("*".to_string(), |n| n.to_string());
    let access = rule.access().clone().unwrap_or_else(|| "rwm".into());
    Some(format!(
        "{kind} {}:{} {access}",
        num(rule.major()),
        num(rule.minor())
    ))
}

/// Creates `dir` and its missing ancestors. In the cpuset hierarchy every level on the way
/// gets its parent's cpus and mems if it has none yet (an empty cpuset refuses tasks), also
/// when another CLI created the directory a moment ago and has not filled it in yet.
fn create_dir(dir: &Path, hierarchy: &str) -> Result<(), CgroupError> {
    if !dir.is_dir() {
        if let Some(parent) = dir.parent() {
            create_dir(parent, hierarchy)?;
        }
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(dir)(e)),
        }
    }
    if hierarchy.split(',').any(|c| c == "cpuset") {
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if read_file(dir, file)?.is_empty() {
                let parent = dir.parent().unwrap_or(dir);
                create_dir(parent, hierarchy)?; // fills the parent first if it is empty too
                write_file(dir, file, &read_file(parent, file)?)?;
            }
        }
    }
    Ok(())
}

impl CgroupManager for V1Manager {
    fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        for (hierarchy, dir) in &self.paths.dirs {
            create_dir(dir, hierarchy)?;
        }
        self.apply_memory(resources)?;
        self.apply_cpu(resources)?;
        self.apply_blkio(resources)?;
        self.apply_pids(resources)?;
        self.apply_hugetlb(resources)?;
        self.apply_devices(resources)
    }

    fn add_task(&self, pid: i32) -> Result<(), CgroupError> {
        for dir in self.paths.dirs.values() {
            write_file(dir, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    fn join_self(&self) -> Result<(), CgroupError> {
        for dir in self.paths.dirs.values() {
            write_file(dir, "tasks", "0")?;
        }
        Ok(())
    }

    fn pids(&self) -> Vec<i32> {
        self.paths
            .dirs
            .values()
            .next()
            .map(|d| read_pids(d))
            .unwrap_or_default()
    }

    fn oom_killed(&self) -> bool {
        self.dir("memory")
            .map(|d| read_keyed(d, "memory.oom_control").get("oom_kill").copied() > Some(0))
            .unwrap_or(false)
    }

    fn stats(&self) -> CgroupStats {
        let num = |ctl: &str, file: &str| {
            self.dir(ctl)
                .and_then(|d| read_file(d, file).ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let mem = self
            .dir("memory")
            .map(|d| read_keyed(d, "memory.stat"))
            .unwrap_or_default();
        // v1 reports "no limit" as a huge page-aligned number.
        let limit = num("memory", "memory.limit_in_bytes");
        let (mut read, mut write) = (0, 0);
        if let Some(d) = self.dir("blkio") {
            for line in read_file(d, "blkio.throttle.io_service_bytes")
                .unwrap_or_default()
                .lines()
            {
                let f: Vec<&str> = line.split_whitespace().collect();
                if let [_, op, v] = f[..] {
                    let v: u64 = v.parse().unwrap_or(0);
                    match op {
                        "Read" => read += v,
                        "Write" => write += v,
                        _ => {}
                    }
                }
            }
        }
        // cpuacct.stat counts USER_HZ ticks, 100 a second on Linux (sysconf(_SC_CLK_TCK)).
        let ticks = self
            .dir("cpuacct")
            .map(|d| read_keyed(d, "cpuacct.stat"))
            .unwrap_or_default();
        let tick_ns = |k: &str| ticks.get(k).copied().unwrap_or(0) * 10_000_000;
        CgroupStats {
            cpu_ns: num("cpuacct", "cpuacct.usage"),
            cpu_user_ns: tick_ns("user"),
            cpu_kernel_ns: tick_ns("system"),
            memory_usage: num("memory", "memory.usage_in_bytes"),
            memory_inactive_file: mem.get("total_inactive_file").copied().unwrap_or(0),
            memory_limit: (limit > 0 && limit < (1 << 62)).then_some(limit),
            block_read: read,
            block_write: write,
            pids: num("pids", "pids.current"),
        }
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        let dir = self.require("freezer")?;
        let want = if frozen { "FROZEN" } else { "THAWED" };
        write_file(dir, "freezer.state", want)?;
        wait_freezer(&dir.join("freezer.state"), || {
            read_file(dir, "freezer.state").is_ok_and(|s| s == want)
        })
    }

    fn destroy(&self) -> Result<(), CgroupError> {
        // A frozen task cannot die: thaw first (a missing freezer is fine).
        if let Some(dir) = self.dir("freezer") {
            let _ = write_file(dir, "freezer.state", "THAWED");
        }
        let mut first_err = None;
        for dir in self.paths.dirs.values() {
            if let Err(e) = remove_dir_killing(dir) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    #[test]
    fn device_rules_render_as_the_kernel_reads_them() {
        let all = LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .unwrap();
        assert_eq!(device_rule(&all).unwrap(), "a");
        let null = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(1)
            .minor(3)
            .access("rwm")
            .build()
            .unwrap();
        assert_eq!(device_rule(&null).unwrap(), "c 1:3 rwm");
        let pts = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(136)
            .access("rwm")
            .build()
            .unwrap();
        assert_eq!(device_rule(&pts).unwrap(), "c 136:* rwm");
        // Neither an unbuffered char device nor a FIFO may turn into `a` (the whole list).
        let unbuffered = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::U)
            .major(4)
            .minor(64)
            .access("rw")
            .build()
            .unwrap();
        assert_eq!(device_rule(&unbuffered).unwrap(), "c 4:64 rw");
        let fifo = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::P)
            .build()
            .unwrap();
        assert_eq!(device_rule(&fifo), None);
    }
}
