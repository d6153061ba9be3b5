//! What the parent hands the container's init: prepared before the clone, read by both
//! sides ([`spawn`](super::spawn) and [`init`](super::init)).

use super::stdio::Stdio;
use crate::linux::cgroups::CgroupManager;
use crate::linux::rootfs::OverlayLayers;
use oci_spec::runtime::Spec;
use seccompiler::BpfProgram;
use std::os::fd::OwnedFd;
use std::path::Path;

/// The init's standard streams.
#[derive(Debug, Clone, Copy)]
pub enum InitStdio<'a> {
    /// Streams made for it by the parent (pipes).
    Streams(Stdio<'a>),
    /// A terminal of `rows` x `cols` the init opens on the container's own devpts once it
    /// is mounted: the slave (/dev/pts/N inside) becomes its stdin, stdout, stderr,
    /// controlling terminal and /dev/console; the master goes to the parent with `Ready`
    /// ([`Spawned::terminal`](super::spawn::Spawned)).
    Terminal { rows: u16, cols: u16 },
}

/// Everything the init needs, prepared by the parent before the clone (so the child does
/// no work that could be shared, such as compiling seccomp).
pub struct InitConfig<'a> {
    /// The OCI runtime spec.
    pub spec: &'a Spec,
    /// The layers to stack as the root; None when the spec's root path is a directory
    /// already prepared (an OCI bundle's `rootfs`, run through `capsa-runc`), which is then
    /// bound onto itself inside the init's mount namespace.
    pub layers: Option<&'a OverlayLayers>,
    /// The start gate.
    pub exec_fifo: &'a Path,
    /// The workload's stdio.
    pub stdio: InitStdio<'a>,
    /// Compiled seccomp filters, installed in order (empty: none).
    pub seccomp: Vec<BpfProgram>,
    /// The container's cgroup, already created with its limits.
    pub cgroup: &'a dyn CgroupManager,
    /// The sealed [`capsa_init`](super::capsa_init) program the workload starts through;
    /// needed when the spec asks for `--init` (see [`wants_init`](super::init::wants_init)), unused otherwise.
    pub init_program: Option<&'a OwnedFd>,
    /// Descriptors 3 to 3+N-1 of the caller that the workload keeps (runc's
    /// `--preserve-fds N`, systemd's socket activation through conmon); every other one
    /// above stderr is closed at its exec.
    pub preserve_fds: u32,
    /// The state document the spec's `createContainer` and `startContainer` hooks get
    /// (the init fills in its PID and the status); None where the spec has no such hooks.
    pub hook_state: Option<&'a serde_json::Value>,
    /// Hooks of the runtime's namespaces that run while the init waits with its mounts made
    /// and its root not yet pivoted into (`prestart`, `createRuntime`), called in the parent
    /// with the init's PID; an error stops the container. None: the init does not wait.
    pub runtime_hooks: Option<&'a dyn Fn(i32) -> Result<(), String>>,
}
