//! What an isolation must provide: the [`Sandbox`] trait, in the shape of containerd's shim
//! Task API (create, start, exec, signal, wait, stats, top, pause, copies, attach, cleanup),
//! where `exec` and `attach` return a [`Session`] (typed output, an input and resize handle)
//! that the front end relays,
//! and the typed [`Isolation`] a container records once, when it is created.
//!
//! Two implementations live side by side: the Linux process tree
//! ([`super::process_tree::ProcessTree`]: namespaces, cgroups and overlayfs on this kernel)
//! and the microVM (`vm::sandbox::MicroVm`: the same OCI spec run by a guest agent). What
//! both share stays in this folder and is used by both: the record ([`super::state`],
//! [`super::store`]), names ([`super::id`]), the spec ([`super::spec`]), the network plan
//! ([`super::network`]), logs ([`super::logfile`]) and the restart policy
//! ([`super::restart`]). The choice of implementation for a recorded isolation is made
//! above both (`crate::api`), so this folder never names the VM's. A third isolation is one
//! more variant here and one more implementation of the trait.

use super::exec::ExecOptions;
use super::options::RunOptions;
use super::session::{Front, Session};
use super::state::State;
use super::store::ContainerStore;
use super::ContainerError;
use crate::image::Image;
use crate::linux::cgroups::CgroupStats;
use crate::linux::process::exec_fifo::ExecOutcome;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How a container is isolated; recorded in its state.json as `"container"` or `"vm"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Namespaces, cgroups, overlayfs and seccomp on this kernel.
    #[default]
    Container,
    /// A microVM whose guest agent runs the workload through the same isolation core.
    Vm,
}

impl Isolation {
    /// Every isolation, in the order `info` lists them.
    pub const ALL: [Isolation; 2] = [Isolation::Container, Isolation::Vm];

    /// The name users type (`--isolation`) and `inspect` shows.
    pub fn name(self) -> &'static str {
        match self {
            Isolation::Container => "container",
            Isolation::Vm => "vm",
        }
    }

    /// Whether the workload's processes are host processes, the recorded `pid` its init.
    /// Otherwise (a VM) the recorded `pid` is its monitor's: the process `stop` and `kill`
    /// signal, which passes signals on to the workload, and whose end ends the workload.
    pub fn workload_on_host(self) -> bool {
        match self {
            Isolation::Container => true,
            Isolation::Vm => false,
        }
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a sandbox tells its caller while it works; the front end renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The hypervisor engine chosen for a VM, and why (`qemu (tcg): no vmx/svm ...`).
    EngineChosen(String),
    /// The VM template was built now (why: missing, stale, damaged), or could not be and
    /// the VM boots cold (why).
    VmTemplate(String),
}

/// Where notices go.
pub type Notify<'a> = &'a mut dyn FnMut(Notice);

/// What a foreground run ended with.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The container's ID.
    pub id: String,
    /// The workload's exit code (126/127 when it could not be executed).
    pub exit_code: i32,
    /// Why it could not be executed, if so.
    pub exec_error: Option<String>,
}

/// How a foreground run with a terminal (`run -t`) is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminalRun {
    /// A monitor holds the terminal: the caller creates the container, attaches to it
    /// ([`Sandbox::attach`]) and starts it.
    Attach,
    /// [`Sandbox::run_foreground`] relays the terminal itself.
    InRun,
}

/// An attached caller's way to the workload's streams.
pub enum Attached {
    /// A session with a monitor that relays them (its `finish`: the workload's exit code
    /// once recorded).
    Session(Box<dyn Session>),
    /// Output is followed in the container's log, from `seen` on.
    Log {
        /// The log's end when the caller attached: what it held then is not seen again.
        seen: super::logfile_reader::Cursor,
    },
}

/// A container's counters for `stats`.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// CPU, memory, block I/O and processes.
    pub cgroup: CgroupStats,
    /// Bytes received and sent on its network interfaces (loopback excluded).
    pub net: (u64, u64),
}

/// What an isolation provides. Every method takes the container store: the record, names,
/// spec and network plan are the shared code both isolations use.
pub trait Sandbox: Sync {
    /// The isolation this implements.
    fn isolation(&self) -> Isolation;

    /// `create`: lays the container out (record, name, spec, network plan, disks or cgroup)
    /// and makes it `created`, not started; returns its ID.
    fn create(
        &self,
        store: &ContainerStore,
        image: Image,
        opts: &RunOptions,
        notify: Notify,
    ) -> Result<String, ContainerError>;

    /// `run -d`: creates and starts the container under a detached monitor; its ID, and how
    /// the workload's execve went.
    fn run_detached(
        &self,
        store: &ContainerStore,
        image: Image,
        opts: &RunOptions,
        notify: Notify,
    ) -> Result<(String, ExecOutcome), ContainerError> {
        let id = self.create(store, image, opts, notify)?;
        let outcome = self.start(store, &id, &mut |_| {})?;
        Ok((id, outcome))
    }

    /// `run` in the foreground: this process is the container's monitor; the workload's
    /// streams go through `front` (a session it relays, or output handed to it) until the
    /// workload exits.
    fn run_foreground(
        &self,
        store: &ContainerStore,
        image: Image,
        opts: &RunOptions,
        notify: Notify,
        front: &mut dyn Front,
    ) -> Result<RunOutcome, ContainerError>;

    /// How [`Sandbox::run_foreground`] serves `-t`.
    fn terminal_run(&self) -> TerminalRun;

    /// `start`: starts a created container, or a stopped one again (its writable layer
    /// kept), as `docker start` does.
    fn start(
        &self,
        store: &ContainerStore,
        id: &str,
        notify: Notify,
    ) -> Result<ExecOutcome, ContainerError>;

    /// Makes a stopped container ready for [`Sandbox::attach`] before [`Sandbox::start`]
    /// (`start -ai`); false when this isolation has nothing to prepare.
    fn prepare_start(&self, store: &ContainerStore, id: &str) -> Result<bool, ContainerError>;

    /// `exec`: runs another command in the running container; the session with its
    /// streams, whose `finish` is its exit code (None with `-d`: nobody relays).
    fn exec(
        &self,
        store: &ContainerStore,
        id: &str,
        opts: &ExecOptions,
    ) -> Result<Option<Box<dyn Session>>, ContainerError>;

    /// `kill`: sends `signal` to the workload (through its monitor in a VM).
    fn signal(&self, store: &ContainerStore, id: &str, signal: i32) -> Result<(), ContainerError> {
        super::kill::kill(store, id, signal)
    }

    /// `wait`: blocks until the container has exited; its final state.
    fn wait(&self, store: &ContainerStore, id: &str) -> Result<State, ContainerError> {
        super::wait::wait_exit(store, id)
    }

    /// `stats`: the container's counters now.
    fn counters(&self, state: &State) -> Counters;

    /// `top`: the container's processes, a header first (`ps_args`: options for `ps`).
    fn top(&self, state: &State, ps_args: &[String]) -> Result<Vec<String>, ContainerError>;

    /// `pause` / `unpause`: freezes or thaws every process of the workload.
    fn freeze(&self, state: &State, frozen: bool) -> Result<(), ContainerError>;

    /// `cp CONTAINER:SRC DEST`: `src` inside to `dest` on the host (`-`: a tar stream on
    /// stdout).
    fn copy_out(
        &self,
        store: &ContainerStore,
        state: &State,
        src: &Path,
        dest: super::cp::CopyDest,
        keep_owners: bool,
    ) -> Result<(), ContainerError>;

    /// `commit`: the writable layer as an image layer tar (`crate::image::layer_diff`)
    /// into `out`, without `skipped` (the spec's mount points, relative to the root).
    fn write_layer(
        &self,
        store: &ContainerStore,
        state: &State,
        skipped: &[String],
        out: &mut dyn std::io::Write,
    ) -> Result<(), ContainerError>;

    /// `cp SRC CONTAINER:DEST`: `src` on the host (`-`: a tar stream on stdin) to `dest`
    /// inside.
    fn copy_in(
        &self,
        store: &ContainerStore,
        state: &State,
        src: super::cp::CopySource,
        dest: &Path,
        keep_owners: bool,
    ) -> Result<(), ContainerError>;

    /// `attach`: the running workload's streams, with `stdin` this caller's input (the
    /// front end relays the session; with a terminal its detach keys leave it running).
    fn attach(
        &self,
        store: &ContainerStore,
        state: &State,
        stdin: bool,
    ) -> Result<Attached, ContainerError>;

    /// What `inspect` adds for this isolation (a VM's engine and its jail), by key.
    fn inspect_extra(
        &self,
        store: &ContainerStore,
        id: &str,
    ) -> Option<(&'static str, serde_json::Value)>;

    /// Removes what this isolation keeps outside the container's folder once the container
    /// is gone (nothing when there is nothing).
    fn cleanup(&self, id: &str);
}

/// Whether container `id` has a terminal (`-t`), from its spec.
pub fn has_terminal(store: &ContainerStore, id: &str) -> bool {
    std::fs::read(store.dir(id).config())
        .ok()
        .and_then(|b| serde_json::from_slice::<oci_spec::runtime::Spec>(&b).ok())
        .and_then(|s| s.process().as_ref().and_then(|p| p.terminal()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_keeps_the_names_it_always_had() {
        // state.json written before the enum held these strings: they must read back.
        let vm: Isolation = serde_json::from_str("\"vm\"").unwrap();
        let container: Isolation = serde_json::from_str("\"container\"").unwrap();
        assert_eq!((vm, container), (Isolation::Vm, Isolation::Container));
        assert_eq!(serde_json::to_string(&Isolation::Vm).unwrap(), "\"vm\"");
        assert_eq!(
            serde_json::to_string(&Isolation::Container).unwrap(),
            "\"container\""
        );
        assert!(serde_json::from_str::<Isolation>("\"VM\"").is_err());
        for i in Isolation::ALL {
            assert_eq!(
                serde_json::to_string(&i).unwrap(),
                format!("\"{}\"", i.name())
            );
        }
    }
}
