//! Volumes: directories in the store that outlive the containers using them, Docker's
//! `local` driver. A volume is `<root>/volumes/<name>/` (private to root, like the rest of
//! the store) holding its record `volume.json` and its data:
//!
//! - `_data/`, a directory that containers bind-mount (the volume's `Mountpoint`), or
//! - `disk.ext4`, an ext4 image file a VM attaches as a virtio-blk disk and its guest agent
//!   mounts. A VM cannot bind a host directory, and the host never mounts a file system a
//!   guest wrote, so a volume a VM uses is a disk from then on: its `_data` is copied into
//!   the image once, when a VM first uses it, and containers can no longer mount it. The
//!   two are never shared live.
//!
//! This module knows nothing of containers: whoever removes or prunes volumes passes in
//! which ones are in use ([`Users`]), read under the same lock ([`VolumeStore::lock`]).

pub mod disk;
pub mod name;
pub mod populate;
pub mod store;

pub use store::{Kind, Locked, Record, Users, Volume, VolumeStore};

/// Errors of the volume store. Each names the volume and the cause.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A name Docker's local driver would refuse.
    #[error("create {name}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it cannot name a volume.
        #[source]
        reason: name::NameError,
    },
    /// No volume has that name.
    #[error("get {0}: no such volume")]
    NotFound(String),
    /// Containers still use it (running or stopped).
    #[error("remove {name}: volume is in use - [{}]", .users.join(", "))]
    InUse {
        /// The volume.
        name: String,
        /// The containers using it, as `<id> (<name>)`.
        users: Vec<String>,
    },
    /// It cannot be used the way it is asked to be.
    #[error("volume {name}: {reason}")]
    Unusable {
        /// The volume.
        name: String,
        /// Why.
        reason: String,
    },
    /// The image's content could not be copied into the new volume.
    #[error("volume {name}: copying the image's {path} into it: {source}")]
    FirstCopy {
        /// The volume.
        name: String,
        /// The path in the image.
        path: String,
        #[source]
        source: populate::CopyError,
    },
    /// A file-system operation or a tool failed.
    #[error("volume {path}: {reason}")]
    Io {
        /// The path concerned.
        path: String,
        /// The cause.
        reason: String,
    },
}

impl VolumeError {
    pub(crate) fn io(path: &std::path::Path, e: impl std::fmt::Display) -> VolumeError {
        VolumeError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    }
}
