//! Host memory of an instance: the PSS of each of its host processes (smaps_rollup: shared
//! pages are divided among their sharers, so summing over instances does not count a page
//! twice), its cgroup's charge, and for a VM the guest memory the VMM has actually touched.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessMemory {
    pub pid: i32,
    pub command: String,
    pub pss_kib: u64,
}

/// A `kB` field of a /proc smaps-style file.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// PSS of one process, or None if it is gone.
pub fn pss_kib(pid: i32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    kib_field(&rollup, "Pss")
}

fn command(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_string())
        .unwrap_or_default()
}

fn parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `roots` and every live descendant of them.
pub fn process_tree(roots: &[i32]) -> Vec<i32> {
    let all: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter_map(|p| Some((p, parent(p)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut tree: Vec<i32> = roots
        .iter()
        .copied()
        .filter(|p| all.iter().any(|(q, _)| q == p))
        .collect();
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        for (child, _) in all.iter().filter(|(_, pp)| *pp == p) {
            if !tree.contains(child) {
                tree.push(*child);
            }
        }
        i += 1;
    }
    tree
}

/// PSS of each process of `pids` still alive.
pub fn processes(pids: &[i32]) -> Vec<ProcessMemory> {
    pids.iter()
        .filter_map(|&pid| {
            Some(ProcessMemory {
                pid,
                command: command(pid),
                pss_kib: pss_kib(pid)?,
            })
        })
        .collect()
}

/// Resident size of a VMM's guest RAM: the largest mapping of the process at least as big as
/// the guest's memory (QEMU and capsa-vmm map guest RAM as one anonymous region).
pub fn guest_touched_kib(vmm_pid: i32, guest_mib: u64) -> Option<u64> {
    let smaps = std::fs::read_to_string(format!("/proc/{vmm_pid}/smaps")).ok()?;
    let mut best: Option<(u64, u64)> = None;
    let mut size = 0;
    for line in smaps.lines() {
        if let Some(v) = kib_field(line, "Size") {
            size = v;
        } else if let Some(rss) = kib_field(line, "Rss") {
            if size >= guest_mib * 1024 && best.is_none_or(|(s, _)| size > s) {
                best = Some((size, rss));
            }
        }
    }
    best.map(|(_, rss)| rss)
}

/// MemAvailable of this machine, KiB.
pub fn available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| kib_field(&m, "MemAvailable"))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_and_its_children_are_found_with_their_pss() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let me = std::process::id() as i32;
        let tree = process_tree(&[me]);
        assert_eq!(tree[0], me);
        assert!(tree.contains(&(child.id() as i32)));
        let mem = processes(&tree);
        assert!(mem.iter().all(|p| p.pss_kib > 0));
        assert!(mem.iter().any(|p| p.command == "sleep"));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(process_tree(&[999_999_999]).is_empty());
        assert!(available_kib() > 0);
    }
}
