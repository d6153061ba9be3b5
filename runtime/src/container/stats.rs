//! `stats`: what each running container uses, with Docker's figures: CPU % over an interval
//! (container CPU time over host CPU time, times the CPUs online), memory as usage minus
//! inactive page cache against the limit, network and block I/O, processes.

use super::sandbox::Counters;
use super::state::State;
use super::store::ContainerStore;
use crate::linux::cgroups::{self, CgroupStats};
use std::time::Duration;

/// One row of `stats`.
#[derive(Debug, Clone)]
pub struct Usage {
    /// Container ID.
    pub id: String,
    /// Name.
    pub name: String,
    /// CPU %, where 100 is one CPU.
    pub cpu_percent: f64,
    /// Memory used (usage minus inactive_file), bytes.
    pub memory: u64,
    /// The limit (the host's memory when unlimited), bytes.
    pub memory_limit: u64,
    /// Bytes received and sent on the container's interfaces (loopback excluded).
    pub net: (u64, u64),
    /// Bytes read and written on block devices.
    pub block: (u64, u64),
    /// Processes.
    pub pids: u64,
}

/// Total CPU time of the host, nanoseconds, from /proc/stat (as Docker's system usage).
pub fn host_cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    // SAFETY: sysconf takes an integer and returns one.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1_000_000_000 / hz
}

/// Bytes received and sent on the interfaces of `pid`'s network namespace, loopback excluded.
fn net_bytes(pid: i32) -> (u64, u64) {
    let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    dev.lines()
        .skip(2)
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.trim() != "lo")
        .map(|(_, v)| {
            let f: Vec<u64> = v
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (
                f.first().copied().unwrap_or(0),
                f.get(8).copied().unwrap_or(0),
            )
        })
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// A process tree's counters: its cgroup's, and its network namespace's interfaces.
pub fn host_counters(s: &State) -> Counters {
    Counters {
        cgroup: cgroups::manager(&s.cgroup).stats(),
        net: s.pid.map(net_bytes).unwrap_or_default(),
    }
}

/// The host's memory, bytes (a container's limit when it has none).
pub fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Samples `containers` twice, `interval` apart, with `read` (each one's isolation's
/// counters), and returns their usage.
pub fn sample(
    containers: &[State],
    interval: Duration,
    read: &dyn Fn(&State) -> Counters,
) -> Vec<Usage> {
    let first: Vec<CgroupStats> = containers.iter().map(|s| read(s).cgroup).collect();
    let host_first = host_cpu_ns();
    std::thread::sleep(interval);
    let host_delta = host_cpu_ns().saturating_sub(host_first);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    let total_memory = host_memory();
    containers
        .iter()
        .zip(first)
        .map(|(s, before)| {
            let Counters { cgroup: now, net } = read(s);
            let cpu_delta = now.cpu_ns.saturating_sub(before.cpu_ns);
            let cpu_percent = if host_delta > 0 {
                cpu_delta as f64 / host_delta as f64 * cpus * 100.0
            } else {
                0.0
            };
            Usage {
                id: s.id.clone(),
                name: s.name.clone(),
                cpu_percent,
                memory: now.memory_usage.saturating_sub(now.memory_inactive_file),
                memory_limit: now
                    .memory_limit
                    .unwrap_or(total_memory)
                    .min(total_memory.max(1)),
                net,
                block: (now.block_read, now.block_write),
                pids: now.pids,
            }
        })
        .collect()
}

/// The running containers named (all running ones when `names` is empty).
pub fn targets(store: &ContainerStore, all: bool) -> Vec<State> {
    store
        .list()
        .into_iter()
        .filter(|s| all || s.init_alive())
        .collect()
}
