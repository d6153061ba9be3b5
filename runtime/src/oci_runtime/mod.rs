//! `capsa-runc`: capsa as an OCI runtime with runc's command layout, for containerd's runc
//! v2 shim and for podman's conmon. It runs a bundle's `config.json` through the same
//! isolation core as `capsa run` ([`crate::linux`]), without capsa's store, images or
//! monitor: the caller owns the root file system, the stdio and the exit status.
//!
//! runc's contract, which differs from capsa's own containers: `create` clones the init
//! (waiting at the start gate) as a child of itself and exits, so the init becomes a child
//! of the caller's subreaper (the shim, conmon), which reaps it and reads its exit status
//! as the container's; `start` opens the gate. Nothing watches the container in between.
//!
//! - [`bundle`]: config.json read, unsupported fields refused by name, the core's spec;
//! - [`state`]: the record under `--root`, the status, runc's `state` document;
//! - [`lifecycle`]: create, start, kill, delete, pause, resume, update, ps;
//! - [`exec`]: another process in a running container;
//! - [`events`]: cgroup counters and OOM kills as runc's event objects;
//! - [`console`]: a pty whose master goes to the caller's console socket;
//! - [`hooks`]: the OCI hooks that run in the runtime's namespaces;
//! - [`features`]: the `features` document;
//! - [`vm`]: the VM isolation (`capsa-vm`): a pod's containers in one microVM.

pub mod bundle;
pub mod console;
pub mod events;
pub mod exec;
pub mod features;
pub mod hooks;
pub mod lifecycle;
pub mod state;
pub mod vm;

use std::path::PathBuf;

/// Where state goes without `--root`.
pub const DEFAULT_ROOT: &str = "/run/capsa-runc";

/// Why a runtime command failed; the text is the one line the caller logs.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The bundle's config.json is missing or does not parse.
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
    /// The config asks for something capsa-runc does not implement.
    #[error("config.json: {field} is not supported by capsa-runc{detail}")]
    Unsupported { field: String, detail: String },
    /// The container ID is not usable.
    #[error("invalid container id {0:?}: use letters, digits, '_', '+', '-' and '.' (not first)")]
    BadId(String),
    /// A container of that ID exists already.
    #[error("container with id {0} exists already")]
    IdInUse(String),
    /// No container of that ID.
    #[error("container {0} does not exist")]
    NotFound(String),
    /// The verb does not apply in the container's current status.
    #[error("container {id} is {status}: {what}")]
    WrongState {
        id: String,
        status: &'static str,
        what: &'static str,
    },
    /// A file or system call failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Setting the container up failed (the init's set-up, cgroups, seccomp).
    #[error("{0}")]
    Setup(String),
    /// The workload could not be executed (126 not executable, 127 not found).
    #[error("{message}")]
    Exec { code: i32, message: String },
    /// A flag or argument has no meaning here.
    #[error("{0}")]
    Usage(String),
}

impl RuntimeError {
    /// An I/O error of the step `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
        move |source| RuntimeError::Io {
            what: what.into(),
            source,
        }
    }
}
