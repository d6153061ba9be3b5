//! Images: references, the content-addressed store, the registry client and `pull`, layer
//! intake and unpacking, `import`, `push`, and the archives of `save`/`load`.

pub mod archive;
pub mod commit;
pub mod digest;
pub mod import;
pub mod inspect;
pub mod json;
pub mod layer;
pub mod manifest;
mod parallel;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registry;
pub mod remove;
pub mod store;
pub use capsa_core::layer_diff;
pub use capsa_core::tar_guard;
pub mod unpack;

use crate::printable::escape_controls as printable;
pub use reference::Reference;
pub use store::{Image, ImageStore};

/// Errors of the image store and its verbs; each names the image or file concerned. Text
/// that came from an image, archive or registry is shown with control characters escaped.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The user wrote a reference that does not parse.
    #[error("invalid reference format: {reference:?}: {reason}")]
    InvalidReference {
        /// What the user wrote.
        reference: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// The change would break a container or is ambiguous (Docker's "conflict").
    #[error("conflict: {}", printable(.0))]
    Conflict(String),
    /// No image of that name or ID is in the store.
    #[error("no such image: {}", printable(.0))]
    NotFound(String),
    /// A layer tarball could not be read, checked or unpacked.
    #[error("layer {}: {}", printable(.layer), printable(&.source.to_string()))]
    Layer {
        /// What layer (file name or digest).
        layer: String,
        /// The cause.
        #[source]
        source: layer::LayerError,
    },
    /// Fetching an image from a registry failed.
    #[error("pull {}: {}", printable(.image), printable(.reason))]
    Pull {
        /// The fully qualified reference.
        image: String,
        /// What went wrong, naming the manifest, config or layer.
        reason: String,
    },
    /// Fetching an image from a registry failed, with the typed cause.
    #[error("pull {}: {}", printable(.image), printable(&.source.to_string()))]
    PullFailed {
        /// The fully qualified reference.
        image: String,
        /// What went wrong, naming the manifest, config or layer.
        #[source]
        source: Box<pull::PullError>,
    },
    /// Sending an image to a registry failed.
    #[error("push {}: {}", printable(.image), printable(&.source.to_string()))]
    PushFailed {
        /// The fully qualified reference.
        image: String,
        /// What went wrong, naming the blob or manifest.
        #[source]
        source: Box<push::PushError>,
    },
    /// An archive given to `load` is malformed or does not match its own manifests.
    #[error("load {}: {}", printable(.archive), printable(&.source.to_string()))]
    Archive {
        /// The file (or `-`).
        archive: String,
        /// The cause, naming the entry.
        #[source]
        source: Box<archive::ArchiveError>,
    },
    /// A `--change` instruction that `import` and `commit` do not understand.
    #[error(
        "invalid --change {0:?}: expected CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR or STOPSIGNAL (with a signal)"
    )]
    BadChange(String),
    /// A stored manifest or config does not parse.
    #[error("image {}: corrupt {what}: {}", printable(.image), printable(.reason))]
    Corrupt {
        /// Which image.
        image: String,
        /// Manifest, config, index.
        what: &'static str,
        /// The parse error.
        reason: String,
    },
    /// The store's files could not be read or written.
    #[error("image store {}: {source}", printable(.path))]
    Io {
        /// The path concerned.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl ImageError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> ImageError {
        ImageError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
