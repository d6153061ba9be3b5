//! A VM container's launch record (`vm/launch.json`: guest memory, vCPUs, volumes, `-t`,
//! `-i`, `--vmm`, the agent's create request), kept from `create` for every boot, and the
//! VM's files in the container's folder.

use std::path::PathBuf;

use super::protocol::CreateRequest;
use crate::container::options::RunOptions;
use crate::container::store::{ContainerDir, ContainerStore};
use crate::container::ContainerError;

/// Guest memory beyond the workload's limit: the guest kernel and the agent.
pub(super) const GUEST_OVERHEAD_MIB: u64 = 96;

pub const DEFAULT_GUEST_MIB: u64 = 256;

/// Files of the VM in the container's folder.
pub(super) struct VmFiles {
    pub(super) dir: PathBuf,
}

impl VmFiles {
    pub(super) fn new(container: &ContainerDir) -> Self {
        Self {
            dir: container.dir.join("vm"),
        }
    }
    /// A VM's files in `dir` (a pod's VM, which no capsa container holds).
    pub(super) fn at(dir: PathBuf) -> Self {
        Self { dir }
    }
    pub(super) fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    pub(super) fn engine_log(&self) -> PathBuf {
        self.dir.join("engine.log")
    }
    pub(super) fn upper(&self) -> PathBuf {
        self.dir.join("upper.ext4")
    }
    /// Held by whoever runs an engine on the container's disks (its monitor, or `cp` with
    /// the VM stopped), so two engines never share them.
    pub(super) fn disks_lock(&self) -> PathBuf {
        self.dir.join("disks.lock")
    }
    /// The running engine's jail, for `inspect`.
    pub(super) fn engine_record(&self) -> PathBuf {
        self.dir.join("engine.json")
    }
}

/// What booting a VM container needs beyond its record; `create` keeps it in the container's
/// vm/launch.json until `start`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Launch {
    pub(crate) mem_mib: u64,
    pub(crate) vcpus: u32,
    pub(crate) volumes: Vec<crate::container::options::Volume>,
    pub(crate) tty: bool,
    /// `-i`: the workload's stdin stays open for `attach` when no terminal runs it.
    #[serde(default)]
    pub(crate) interactive: bool,
    /// `--vmm`, chosen again at start.
    pub(crate) vmm: Option<String>,
    pub(crate) create: CreateRequest,
}

impl Launch {
    pub(super) fn path(store: &ContainerStore, id: &str) -> PathBuf {
        VmFiles::new(&store.dir(id)).dir.join("launch.json")
    }

    pub(super) fn save(&self, store: &ContainerStore, id: &str) -> Result<(), ContainerError> {
        let path = Self::path(store, id);
        let json = serde_json::to_vec(self)
            .map_err(|e| ContainerError::io(&path, std::io::Error::other(e)))?;
        crate::fsutil::write_atomic(&path, &json).map_err(|e| ContainerError::io(&path, e))
    }

    pub(crate) fn load(store: &ContainerStore, id: &str) -> Result<Self, ContainerError> {
        let path = Self::path(store, id);
        std::fs::read(&path)
            .map_err(|e| ContainerError::io(&path, e))
            .and_then(|b| {
                serde_json::from_slice(&b)
                    .map_err(|e| ContainerError::io(&path, std::io::Error::other(e)))
            })
    }
}

pub(super) fn guest_memory_mib(opts: &RunOptions) -> u64 {
    guest_mib_for(opts.memory)
}

/// The guest memory of a VM container given `--memory` bytes (`capsa compare` builds the
/// template for it).
pub fn guest_mib_for(memory: Option<i64>) -> u64 {
    match memory {
        Some(limit) if limit > 0 => ((limit as u64) >> 20)
            .saturating_add(GUEST_OVERHEAD_MIB)
            .max(128),
        _ => DEFAULT_GUEST_MIB,
    }
}
