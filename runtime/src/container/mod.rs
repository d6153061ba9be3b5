//! Containers: what the user asked for ([`options`]), the OCI spec made from it ([`spec`]),
//! the on-disk record ([`state`], [`store`]), what an isolation must provide ([`sandbox`]),
//! and the Linux process tree's implementation of it ([`process_tree`]) over the lifecycle
//! verbs, one file each ([`create`], [`start`], [`run`], [`wait`], [`delete`]), plus the
//! [`monitor`] that outlives the CLI for detached containers. This folder never names the
//! VM isolation: that one builds on the shared parts here (record, names, spec, network
//! plan, logs, restart policy) from `vm/`.

pub mod attach;
pub mod commit;
pub mod cp;
pub mod create;
pub mod delete;
pub mod diff;
pub mod exec;
pub mod fed_relay;
pub mod filter;
pub mod health;
pub mod id;
pub mod inspect;
pub mod kill;
pub mod logfile;
pub mod logfile_reader;
pub mod logs;
pub mod monitor;
pub mod network;
pub mod options;
pub mod pause;
pub mod process_tree;
pub mod prune;
pub mod relay;
pub mod rename;
pub mod restart;
pub mod run;
pub mod sandbox;
pub mod session;
pub mod spec;
pub mod start;
pub mod state;
pub mod stats;
pub mod stop;
pub mod store;
pub mod top;
pub mod tuning;
pub mod update;
pub mod userns;
pub mod volumes;
pub mod volumes_from;
pub mod wait;

pub use sandbox::{Isolation, Sandbox};
pub use state::{State, Status};
pub use store::ContainerStore;

/// Errors of the container verbs. Each names the container and the cause.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// No container has that name or ID (prefix).
    #[error("No such container: {0}")]
    NotFound(String),
    /// An ID prefix matches several containers.
    #[error("multiple containers match {0:?}: use more of the ID")]
    Ambiguous(String),
    /// The name is held by another container.
    #[error("the container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name")]
    NameInUse {
        /// The name.
        name: String,
        /// Its holder.
        id: String,
    },
    /// A flag value that cannot work.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A flag value that cannot work, with the typed reason of the module that refused it.
    #[error("invalid argument: {0}")]
    Invalid(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The verb does not apply in the container's state.
    #[error("container {id}: {reason}")]
    WrongState {
        /// Container ID.
        id: String,
        /// Why.
        reason: String,
    },
    /// The workload could not be executed (126) or found (127).
    #[error("{message}")]
    Exec {
        /// 126 or 127.
        code: i32,
        /// What failed.
        message: String,
    },
    /// Image errors.
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    /// Volume errors.
    #[error(transparent)]
    Volume(#[from] crate::volume::VolumeError),
    /// Isolation set-up failed.
    #[error("container {id}: {reason}")]
    Setup {
        /// Container ID.
        id: String,
        /// The cause, from the isolation core.
        reason: String,
    },
    /// The container's side of a `cp` failed.
    #[error("container {id}: {source}")]
    Copy {
        /// Container ID.
        id: String,
        /// The cause.
        #[source]
        source: cp::CopySideError,
    },
    /// The host's side of a `cp` (extracting into `dest`, or writing stdout) failed.
    #[error("invalid argument: cp to {dest}: {source}")]
    CopyTo {
        /// The destination on the host.
        dest: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The writable layer could not be captured for `commit`.
    #[error("container {id}: capturing its writable layer: {source}")]
    Commit {
        /// Container ID.
        id: String,
        /// The cause, naming the path.
        #[source]
        source: crate::image::layer_diff::LayerDiffError,
    },
    /// The VM isolation failed (engine, kernel, agent).
    #[error("vm isolation: {0}")]
    Vm(String),
    /// State files could not be read or written.
    #[error("container state {path}: {source}")]
    Io {
        /// The path concerned.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl ContainerError {
    /// A refused flag value, keeping the refusal's own error as the source.
    pub(crate) fn invalid(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        ContainerError::Invalid(Box::new(source))
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        ContainerError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
