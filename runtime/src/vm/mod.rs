//! The VM isolation's host side: the same image and OCI spec as a container, run inside a
//! microVM by a guest agent.
//! - [`protocol`]: the host <-> agent messages (the guest agent uses the same module);
//! - [`artifacts`]: the guest kernel and the agent's initramfs;
//! - [`disks`]: erofs images of the layers (cached), the writable ext4 disk;
//! - [`engine`]: the hypervisor engines (capsa-vmm, QEMU) and the automatic choice;
//! - [`jail`]: the engine's jail (its own uid, namespaces, root, cgroup; no capabilities);
//! - [`agent`]: the agent client (the guest's messages as hostile input, bounded);
//! - [`console`]: the guest's console and the engine's output, drained into logs of bounded size;
//! - [`sandbox`]: the microVM's implementation of the container folder's `Sandbox` trait;
//! - [`run`]: one VM container from create to exit, over `launch` (the launch record),
//!   `layout` (the guest layout), `boot` (disks, the engine process, shut-down), `relay`
//!   (the agent conversation in one poll), `control_server` (the control socket's clients)
//!   and `monitor` (the detached monitor and its restarts);
//! - [`control`]: other commands' way in to a running VM (`exec`, `stats`) through its monitor;
//! - [`template`]: VM templates (QEMU): a guest booted once, its state saved, each VM
//!   container restored from it, over `qmp` (QEMU's monitor);
//! - [`pod`]: a pod's VM (capsa-runc's VM isolation): one guest for every container of a
//!   pod, held by a keeper process, its network the pod's (`pod_net`);
//! - [`stopped`]: `cp` with a stopped VM, booted without its workload for the copy alone.

pub mod agent;
pub mod artifacts;
mod boot;
pub mod console;
pub mod control;
mod control_server;
pub mod cpio;
pub mod disks;
pub mod engine;
mod feed;
pub mod jail;
mod launch;
mod layout;
mod monitor;
pub mod pod;
mod pod_net;
pub mod probe;
pub mod ram_holder;
pub use capsa_core::protocol;
mod qmp;
mod relay;
pub mod run;
pub mod sandbox;
mod sparse;
pub mod stopped;
pub mod template;

use std::time::Duration;

/// Errors of the VM isolation, each naming what failed and why.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("no guest kernel ({0}): build it with kernel-config/build.sh and set CAPSA_KERNEL to the path it prints")]
    NoKernel(String),
    #[error("no guest agent ({0}): build it with scripts/build-agent.sh, or set CAPSA_AGENT")]
    NoAgent(String),
    #[error("no hypervisor engine: {0}")]
    NoEngine(String),
    #[error("the engine's jail: {0}")]
    Jail(String),
    #[error("{0}")]
    Tool(String),
    #[error("{0}")]
    Io(String),
    #[error("guest agent: {0}")]
    Agent(String),
    #[error("the guest agent did not answer within {0:?}")]
    AgentTimeout(Duration),
    #[error("the guest agent's connection closed (the VM stopped)")]
    AgentGone,
    /// The guest sent what no agent sends (it is hostile, or its kernel is): its VM is
    /// stopped without asking it.
    #[error("VM {vm}: its guest broke the agent protocol: {cause}; the VM was stopped")]
    GuestViolation { vm: String, cause: String },
    #[error("the VM stopped before its agent answered: {0}")]
    EngineExited(String),
}

impl From<VmError> for crate::container::ContainerError {
    fn from(e: VmError) -> Self {
        crate::container::ContainerError::Vm(e.to_string())
    }
}
