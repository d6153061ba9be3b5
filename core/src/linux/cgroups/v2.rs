//! cgroup v2: one directory in the unified hierarchy; controllers enabled in each ancestor's
//! `cgroup.subtree_control` on the way down; the device rules enforced by an eBPF program
//! attached to the directory ([`super::device_filter`]).

use super::device_filter::DeviceFilter;
use super::{
    bpf, io_err, read_file, read_keyed, read_pids, remove_dir_killing, wait_freezer, write_file,
    CgroupError, CgroupManager, CgroupPaths, CgroupStats, CGROUP_ROOT,
};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The v2 manager of one container.
pub struct V2Manager {
    /// Where the cgroup2 file system holding `dir` is mounted.
    mount: PathBuf,
    dir: PathBuf,
}

/// The cgroup2 mount point that contains `dir` (the longest matching one).
pub(super) fn mount_of(dir: &Path) -> PathBuf {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
        })
        .filter(|m| dir.starts_with(m))
        .max_by_key(|m| m.as_os_str().len())
        .unwrap_or_else(|| PathBuf::from(CGROUP_ROOT))
}

impl V2Manager {
    /// A manager for recorded paths (key `unified`).
    pub fn new(paths: CgroupPaths) -> Self {
        let dir = paths
            .dirs
            .get("unified")
            .cloned()
            .unwrap_or_else(|| PathBuf::from(CGROUP_ROOT));
        V2Manager {
            mount: mount_of(&dir),
            dir,
        }
    }

    /// Creates the directory chain, enabling `wanted` controllers in every new ancestor, and
    /// the [`COUNTING`] ones where the ancestor offers them.
    fn create(&self, wanted: &[&'static str]) -> Result<(), CgroupError> {
        let rel = self.dir.strip_prefix(&self.mount).unwrap_or(&self.dir);
        let mut current = self.mount.clone();
        for part in rel.components() {
            let available = read_file(&current, "cgroup.controllers").unwrap_or_default();
            for c in COUNTING.iter().filter(|c| !wanted.contains(c)) {
                if available.split_whitespace().any(|a| a == *c) {
                    let _ = write_file(&current, "cgroup.subtree_control", &format!("+{c}"));
                }
            }
            for c in wanted {
                if !available.split_whitespace().any(|a| a == *c) {
                    return Err(CgroupError::MissingController {
                        controller: c,
                        why: format!("not in {}/cgroup.controllers", current.display()),
                    });
                }
                // Ancestors that hold processes cannot delegate (EBUSY); the check on the
                // child's cgroup.controllers below catches what this leaves missing.
                let _ = write_file(&current, "cgroup.subtree_control", &format!("+{c}"));
            }
            current.push(part);
            match std::fs::create_dir(&current) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(&current)(e)),
            }
        }
        let enabled = read_file(&self.dir, "cgroup.controllers").unwrap_or_default();
        for c in wanted {
            if !enabled.split_whitespace().any(|a| a == *c) {
                return Err(CgroupError::MissingController {
                    controller: c,
                    why: format!("not delegated to {}", self.dir.display()),
                });
            }
        }
        Ok(())
    }
}

/// Makes the device programs attached to `dir` those of `rules`: the new program is attached
/// before the ones a previous apply left are detached, so no moment is less strict than
/// either. `None` (no `devices` section) attaches nothing, as v1 writes nothing. Runs before
/// any process is in the cgroup: `apply` precedes the init's clone into it.
///
/// The program is attached with BPF_F_ALLOW_MULTI: programs of ancestors attached the same
/// way still run, and one attached in a descendant (by a privileged container in its own
/// cgroup) runs beside it and cannot replace it. The cgroup holds the only reference once
/// our descriptor is closed; removing the cgroup frees the program.
fn apply_devices(dir: &Path, rules: Option<&[LinuxDeviceCgroup]>) -> Result<(), CgroupError> {
    let Some(rules) = rules else {
        return Ok(());
    };
    let filter = DeviceFilter::new(rules)?;
    let fail =
        |op: &'static str, source: std::io::Error, detail: String| CgroupError::DeviceProgram {
            path: dir.to_path_buf(),
            op,
            source,
            detail,
        };
    let cgroup: OwnedFd = std::fs::File::open(dir).map_err(io_err(dir))?.into();
    if filter.allows_everything() {
        // Nothing to attach; a kernel without cgroup BPF cannot hold an old program either.
        for id in bpf::attached_device_programs(cgroup.as_fd()).unwrap_or_default() {
            bpf::detach_device_program(cgroup.as_fd(), id)
                .map_err(|e| fail("BPF_PROG_DETACH", e, String::new()))?;
        }
        return Ok(());
    }
    let program = bpf::load_device_program(&filter.program(), "capsa_devices").map_err(|e| {
        let detail = if e.log.is_empty() {
            "; the kernel needs CONFIG_BPF_SYSCALL and CONFIG_CGROUP_BPF".to_string()
        } else {
            format!("; verifier: {}", e.log.lines().last().unwrap_or_default())
        };
        fail("BPF_PROG_LOAD", e.source, detail)
    })?;
    let old = bpf::attached_device_programs(cgroup.as_fd())
        .map_err(|e| fail("BPF_PROG_QUERY", e, String::new()))?;
    bpf::attach_device_program(cgroup.as_fd(), program.as_fd())
        .map_err(|e| fail("BPF_PROG_ATTACH", e, String::new()))?;
    for id in old {
        bpf::detach_device_program(cgroup.as_fd(), id)
            .map_err(|e| fail("BPF_PROG_DETACH", e, String::new()))?;
    }
    Ok(())
}

/// The controllers whose counters `stats` reads (memory.current, pids.current, io.stat),
/// enabled for every cgroup, limited or not, as runc enables what its parent offers: without
/// them an unlimited workload's memory and processes read 0. (cpu.stat's usage needs none.)
const COUNTING: [&str; 3] = ["memory", "pids", "io"];

/// The controllers `resources` needs.
fn wanted_controllers(r: &LinuxResources) -> Vec<&'static str> {
    let mut out = Vec::new();
    if r.memory()
        .as_ref()
        .is_some_and(|m| m.limit().is_some() || m.reservation().is_some() || m.swap().is_some())
    {
        out.push("memory");
    }
    if r.cpu()
        .as_ref()
        .is_some_and(|c| c.cpus().is_some() || c.mems().is_some())
    {
        out.push("cpuset");
    }
    if r.block_io().as_ref().and_then(|b| b.weight()).is_some() {
        out.push("io");
    }
    if r.cpu()
        .as_ref()
        .is_some_and(|c| c.quota().is_some() || c.shares().is_some())
    {
        out.push("cpu");
    }
    if r.pids().is_some() {
        out.push("pids");
    }
    if r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()) {
        out.push("hugetlb");
    }
    out
}

/// The memory settings: limit (memory.max), swap (memory.swap.max counts swap alone where
/// v1's memsw counted memory and swap together; a kernel without swap has no such file, and
/// then no swap to limit), reservation (memory.low). v2 has no switch for the OOM killer.
fn apply_memory(dir: &Path, m: &oci_spec::runtime::LinuxMemory) -> Result<(), CgroupError> {
    if m.disable_oom_killer() == Some(true) {
        return Err(CgroupError::Unsupported {
            what: "--oom-kill-disable",
            why: "cgroup v2 has no switch for the OOM killer".into(),
        });
    }
    if m.swappiness().is_some() {
        return Err(CgroupError::Unsupported {
            what: "--memory-swappiness",
            why: "cgroup v2 has no per-cgroup swappiness".into(),
        });
    }
    if let Some(limit) = m.limit() {
        write_file(dir, "memory.max", &limit.to_string())?;
        if let Some(swap) = m.swap() {
            let swap_only = if swap < 0 {
                "max".to_string()
            } else {
                (swap - limit).max(0).to_string()
            };
            if dir.join("memory.swap.max").exists() {
                write_file(dir, "memory.swap.max", &swap_only)?;
            }
        }
    }
    if let Some(reservation) = m.reservation() {
        write_file(dir, "memory.low", &reservation.to_string())?;
    }
    Ok(())
}

/// `--blkio-weight` (10..1000): io.bfq.weight takes it as it is where BFQ schedules;
/// io.weight (1..10000) gets it scaled, as runc converts it.
fn apply_io_weight(dir: &Path, weight: u16) -> Result<(), CgroupError> {
    if dir.join("io.bfq.weight").exists() {
        return write_file(dir, "io.bfq.weight", &weight.to_string());
    }
    write_file(
        dir,
        "io.weight",
        &format!("default {}", blkio_to_io_weight(weight)),
    )
}

/// cgroup v1 blkio.weight (10..1000) to v2 io.weight (1..10000).
fn blkio_to_io_weight(weight: u16) -> u64 {
    let w = u64::from(weight.clamp(10, 1000));
    1 + (w - 10) * 9999 / 990
}

/// cgroup v1 cpu.shares (2..262144) to v2 cpu.weight (1..10000), as runc converts it.
fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
}

impl CgroupManager for V2Manager {
    fn apply(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        // Page sizes are checked before anything is made.
        let hugetlb = super::hugetlb_limits(r)?;
        self.create(&wanted_controllers(r))?;
        let dir = &self.dir;
        apply_devices(dir, r.devices().as_deref())?;
        if let Some(m) = r.memory() {
            apply_memory(dir, m)?;
        }
        if let Some(cpu) = r.cpu() {
            if let Some(quota) = cpu.quota() {
                let period = cpu.period().unwrap_or(100_000);
                let q = if quota > 0 {
                    quota.to_string()
                } else {
                    "max".into()
                };
                write_file(dir, "cpu.max", &format!("{q} {period}"))?;
            }
            if let Some(shares) = cpu.shares() {
                write_file(dir, "cpu.weight", &shares_to_weight(shares).to_string())?;
            }
            if let Some(cpus) = cpu.cpus() {
                write_file(dir, "cpuset.cpus", cpus)?;
            }
            if let Some(mems) = cpu.mems() {
                write_file(dir, "cpuset.mems", mems)?;
            }
        }
        if let Some(weight) = r.block_io().as_ref().and_then(|b| b.weight()) {
            apply_io_weight(dir, weight)?;
        }
        if let Some(pids) = r.pids() {
            let v = if pids.limit() > 0 {
                pids.limit().to_string()
            } else {
                "max".into()
            };
            write_file(dir, "pids.max", &v)?;
        }
        for (size, limit) in hugetlb {
            super::write_hugetlb(dir, &size, "max", &limit.to_string())?;
        }
        Ok(())
    }

    fn add_task(&self, pid: i32) -> Result<(), CgroupError> {
        write_file(&self.dir, "cgroup.procs", &pid.to_string())
    }

    fn join_self(&self) -> Result<(), CgroupError> {
        write_file(&self.dir, "cgroup.procs", "0")
    }

    fn clone_target(&self) -> Option<std::os::fd::OwnedFd> {
        std::fs::File::open(&self.dir).ok().map(Into::into)
    }

    fn pids(&self) -> Vec<i32> {
        read_pids(&self.dir)
    }

    fn oom_killed(&self) -> bool {
        read_keyed(&self.dir, "memory.events")
            .get("oom_kill")
            .copied()
            > Some(0)
    }

    fn stats(&self) -> CgroupStats {
        let num = |file: &str| {
            read_file(&self.dir, file)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
        };
        let (mut read, mut write) = (0, 0);
        for line in read_file(&self.dir, "io.stat").unwrap_or_default().lines() {
            for kv in line.split_whitespace().skip(1) {
                match kv.split_once('=') {
                    Some(("rbytes", v)) => read += v.parse::<u64>().unwrap_or(0),
                    Some(("wbytes", v)) => write += v.parse::<u64>().unwrap_or(0),
                    _ => {}
                }
            }
        }
        let cpu = read_keyed(&self.dir, "cpu.stat");
        let usec = |k: &str| cpu.get(k).copied().unwrap_or(0) * 1000;
        CgroupStats {
            cpu_ns: usec("usage_usec"),
            cpu_user_ns: usec("user_usec"),
            cpu_kernel_ns: usec("system_usec"),
            memory_usage: num("memory.current").unwrap_or(0),
            memory_inactive_file: read_keyed(&self.dir, "memory.stat")
                .get("inactive_file")
                .copied()
                .unwrap_or(0),
            memory_limit: num("memory.max"),
            block_read: read,
            block_write: write,
            pids: num("pids.current").unwrap_or(0),
        }
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        write_file(&self.dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
        let want = if frozen { 1 } else { 0 };
        wait_freezer(&self.dir.join("cgroup.events"), || {
            read_keyed(&self.dir, "cgroup.events").get("frozen") == Some(&want)
        })
    }

    fn destroy(&self) -> Result<(), CgroupError> {
        if self.dir.join("cgroup.kill").exists() {
            let _ = write_file(&self.dir, "cgroup.kill", "1");
        }
        remove_dir_killing(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxMemoryBuilder, LinuxResourcesBuilder};

    /// A cgroup2 mount to test on: the unified hierarchy of a hybrid host, or the root of a
    /// v2 host. Tests that need one say so and return when there is none (or no root).
    fn cgroup2_mount() -> Option<PathBuf> {
        let m = mount_of(Path::new("/sys/fs/cgroup/unified/x"));
        let ok = m.join("cgroup.procs").exists() && nix::unistd::geteuid().is_root();
        if !ok {
            eprintln!("skipped: no writable cgroup2 mount here");
        }
        ok.then_some(m)
    }

    fn manager_under(mount: &Path, name: &str) -> V2Manager {
        let mut dirs = std::collections::BTreeMap::new();
        dirs.insert("unified".to_string(), mount.join(name).join("ctr"));
        V2Manager::new(CgroupPaths { version: 2, dirs })
    }

    #[test]
    fn creates_joins_and_removes_a_cgroup() {
        let Some(mount) = cgroup2_mount() else { return };
        let name = format!("capsa-unit-{}", std::process::id());
        let m = manager_under(&mount, &name);
        m.apply(&LinuxResources::default()).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        m.add_task(child.id() as i32).unwrap();
        assert_eq!(m.pids(), vec![child.id() as i32]);
        m.destroy().unwrap(); // kills what is inside, then removes the directory
        assert!(
            child.wait().unwrap().code().is_none(),
            "the task was not killed"
        );
        assert!(!m.dir.exists());
        std::fs::remove_dir(mount.join(&name)).unwrap();
    }

    #[test]
    fn a_limit_without_its_controller_is_a_named_error() {
        let Some(mount) = cgroup2_mount() else { return };
        if read_file(&mount, "cgroup.controllers")
            .unwrap_or_default()
            .contains("memory")
        {
            return; // a full v2 host: the controller exists, nothing to refuse
        }
        let name = format!("capsa-unit-mem-{}", std::process::id());
        let m = manager_under(&mount, &name);
        let r = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64i64 << 20)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let err = m.apply(&r).unwrap_err().to_string();
        assert!(err.contains("memory"), "{err}");
        let _ = std::fs::remove_dir(mount.join(&name).join("ctr"));
        let _ = std::fs::remove_dir(mount.join(&name));
    }

    /// Runs `script` in a shell placed in cgroup `m` before it opens anything.
    fn sh_in(m: &V2Manager, script: &str) -> String {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new("sh")
            .args(["-c", &format!("read go; {script}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        m.add_task(child.id() as i32).unwrap();
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
    }

    #[test]
    fn device_rules_are_enforced_and_replaced_on_reapply() {
        use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType};
        let Some(mount) = cgroup2_mount() else { return };
        let name = format!("capsa-unit-dev-{}", std::process::id());
        let m = manager_under(&mount, &name);
        let rule = |allow: bool, typ, major: Option<i64>, minor: Option<i64>| {
            let mut b = LinuxDeviceCgroupBuilder::default()
                .allow(allow)
                .typ(typ)
                .access("rwm");
            if let (Some(major), Some(minor)) = (major, minor) {
                b = b.major(major).minor(minor);
            }
            b.build().unwrap()
        };
        // Deny all, then allow /dev/zero (1:5) only: /dev/null (1:3) must not open.
        let rules = vec![
            rule(false, LinuxDeviceType::A, None, None),
            rule(true, LinuxDeviceType::C, Some(1), Some(5)),
        ];
        let only_zero = LinuxResourcesBuilder::default()
            .devices(rules)
            .build()
            .unwrap();
        // No redirection to /dev/null in the script: that is a device open too.
        let script = "head -c 1 /dev/zero | wc -c | grep -q 1 && echo zero; \
                      cat /dev/null && echo null; true";
        m.apply(&only_zero).unwrap();
        let cgroup: OwnedFd = std::fs::File::open(&m.dir).unwrap().into();
        assert_eq!(
            bpf::attached_device_programs(cgroup.as_fd()).unwrap().len(),
            1
        );
        assert_eq!(sh_in(&m, script), "zero\n");
        // Applying again replaces the program instead of stacking a second one.
        m.apply(&only_zero).unwrap();
        assert_eq!(
            bpf::attached_device_programs(cgroup.as_fd()).unwrap().len(),
            1
        );
        // Rules that allow everything leave no program.
        let all = LinuxResourcesBuilder::default()
            .devices(vec![rule(true, LinuxDeviceType::A, None, None)])
            .build()
            .unwrap();
        m.apply(&all).unwrap();
        assert!(bpf::attached_device_programs(cgroup.as_fd())
            .unwrap()
            .is_empty());
        assert_eq!(sh_in(&m, script), "zero\nnull\n");
        drop(cgroup);
        m.destroy().unwrap();
        std::fs::remove_dir(mount.join(&name)).unwrap();
    }

    #[test]
    fn shares_convert_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
    }

    #[test]
    fn blkio_weights_scale_to_io_weights() {
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(1000), 10_000);
        assert_eq!(blkio_to_io_weight(500), 4950);
    }
}
