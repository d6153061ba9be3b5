//! Images: references, the content-addressed store, layer unpacking and `import`.
//!
//! The registry client (`pull`), `save`/`load` and the rest of the image verbs belong to the
//! images issue; this folder holds what `run` needs: a store that names an image and yields
//! its config and the layer directories to stack.

pub mod digest;
pub mod import;
pub mod reference;
pub mod store;
pub mod unpack;

pub use reference::Reference;
pub use store::{Image, ImageStore};

/// Errors of the image store and its verbs; each names the image or file concerned.
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
    /// No image of that name or ID is in the store.
    #[error("no such image: {0}")]
    NotFound(String),
    /// A layer tarball could not be read or unpacked.
    #[error("layer {layer}: {reason}")]
    Layer {
        /// What layer (file name or digest).
        layer: String,
        /// The cause.
        reason: String,
    },
    /// A `--change` instruction that `import` does not understand.
    #[error(
        "invalid --change {0:?}: expected CMD, ENTRYPOINT, ENV, WORKDIR, USER, EXPOSE or LABEL"
    )]
    BadChange(String),
    /// A stored manifest or config does not parse.
    #[error("image {image}: corrupt {what}: {reason}")]
    Corrupt {
        /// Which image.
        image: String,
        /// Manifest, config, index.
        what: &'static str,
        /// The parse error.
        reason: String,
    },
    /// The store's files could not be read or written.
    #[error("image store {path}: {source}")]
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
