//! What the probe sees of itself: the layers it runs under as the kernel reports them
//! (/proc/self/status), the kernel it runs on (boot_id: a VM's guest has its own) and its
//! namespaces. The harness gathers the same on the host to compare.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Namespace kinds compared with the host's.
pub const NAMESPACES: [&str; 7] = ["mnt", "pid", "net", "uts", "ipc", "user", "cgroup"];

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Context {
    /// Effective uid.
    pub uid: u32,
    /// Effective capabilities, hex as /proc shows them.
    pub cap_eff: String,
    /// Bounding set, hex.
    pub cap_bnd: String,
    /// 0 none, 1 strict, 2 filter.
    pub seccomp: u32,
    /// How many filters are stacked (kernels >= 5.9 report it).
    pub seccomp_filters: Option<u32>,
    pub no_new_privs: bool,
    /// /proc/sys/kernel/random/boot_id: the same only on the same kernel.
    pub boot_id: String,
    /// uname -r.
    pub kernel: String,
    /// kind -> `kind:[inode]`.
    pub namespaces: BTreeMap<String, String>,
}

impl Context {
    /// The calling process's view.
    pub fn gather() -> Context {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        };
        let namespaces = NAMESPACES
            .iter()
            .filter_map(|k| {
                let link = std::fs::read_link(format!("/proc/self/ns/{k}")).ok()?;
                Some((k.to_string(), link.to_string_lossy().into_owned()))
            })
            .collect();
        Context {
            uid: field("Uid")
                .and_then(|u| u.split_whitespace().nth(1)?.parse().ok())
                .unwrap_or(u32::MAX),
            cap_eff: field("CapEff").unwrap_or_default(),
            cap_bnd: field("CapBnd").unwrap_or_default(),
            seccomp: field("Seccomp").and_then(|s| s.parse().ok()).unwrap_or(0),
            seccomp_filters: field("Seccomp_filters").and_then(|s| s.parse().ok()),
            no_new_privs: field("NoNewPrivs").as_deref() == Some("1"),
            boot_id: crate::sys::read_line("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
            kernel: crate::sys::read_line("/proc/sys/kernel/osrelease").unwrap_or_default(),
            namespaces,
        }
    }

    /// Whether this process shares namespace `kind` with `other`.
    pub fn shares(&self, other: &Context, kind: &str) -> bool {
        match (self.namespaces.get(kind), other.namespaces.get(kind)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }

    /// Whether both run on the same kernel (same boot).
    pub fn same_kernel(&self, other: &Context) -> bool {
        !self.boot_id.is_empty() && self.boot_id == other.boot_id
    }

    /// Whether `cap` (a capability number) is in the effective set.
    pub fn has_cap(&self, cap: u32) -> bool {
        u64::from_str_radix(&self.cap_eff, 16)
            .map(|set| set & (1u64 << cap) != 0)
            .unwrap_or(false)
    }
}
