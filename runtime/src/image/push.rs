//! `capsa push`: an image (or every tag of a repository) to its registry, exactly as stored.
//!
//! The store keeps every layer's compressed blob as it was pulled, loaded or imported
//! (`blobs/sha256/`, beside the unpacked tree), and the manifest's own bytes. A push sends
//! those bytes unchanged, so the registry gets the manifest digest the image has here and a
//! pull back is bit-identical. Recompressing at push time could not promise that: gzip
//! output depends on the compressor and its settings, and another tool's layers would come
//! out with new digests.
//!
//! Per blob: `HEAD` (the repository has it: skipped), else a cross-repository mount when
//! the store knows the image came from another repository of the same registry (a registry
//! that declines answers with an upload session, which is then used), else an upload
//! session fed in chunks read from disk (memory stays flat in layer size). Layers go up to
//! [`PARALLEL_UPLOADS`] at a time, then the config, then the manifest under its tag with
//! the media type it has (OCI or Docker schema 2). Only once the registry has accepted the
//! manifest is the tag reported pushed; the push is then recorded as a repo digest.

use super::digest::{diff_ids_of, Digest};
use super::manifest::{self, ManifestDoc};
use super::registry::auth::Credentials;
use super::registry::upload::{Mount, Upload};
use super::registry::{Registry, RegistryError, RegistrySettings};
use super::{ImageError, ImageStore, Reference};
use crate::events::Kind;
use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// Layers uploaded at once (Docker's default `max-concurrent-uploads`).
pub const PARALLEL_UPLOADS: usize = 5;
/// Bytes sent per `PATCH`: larger layers go up in several.
const CHUNK: u64 = 32 * 1024 * 1024;
/// Bytes between two progress reports of one layer.
const PROGRESS_STEP: u64 = 256 * 1024;
/// The manifest media type when a manifest does not name its own (OCI allows that).
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// What happens to one layer, reported as it happens (Docker's push states).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushEvent {
    /// The layer is being looked at.
    Preparing,
    /// Queued behind other uploads.
    Waiting,
    /// Bytes sent so far.
    Pushing {
        /// Sent.
        done: u64,
        /// The blob's size.
        total: u64,
    },
    /// Uploaded and accepted.
    Pushed,
    /// The repository had it: nothing sent.
    AlreadyExists,
    /// Linked by the registry from another repository (named): nothing sent.
    MountedFrom(String),
}

/// Receives push progress; the CLI draws it, the API streams it as JSON lines.
pub trait PushProgress: Sync {
    /// A layer (by the short form of its diff ID, as Docker shows it) changed state.
    fn layer(&self, short_id: &str, event: PushEvent);
}

/// One tag pushed.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The name pushed (`registry/repo:tag`).
    pub reference: Reference,
    /// The manifest's digest: the same here and in the registry.
    pub digest: Digest,
    /// The manifest's size in bytes.
    pub size: u64,
}

/// The names `push` sends for what the user wrote: `NAME[:TAG]` (tag `latest` when none),
/// or with `all_tags` every tag the store has of NAME's repository. A name the store does
/// not have is [`ImageError::NotFound`].
pub fn targets(
    store: &ImageStore,
    wanted: &str,
    all_tags: bool,
) -> Result<Vec<Reference>, ImageError> {
    let bad = |reason| ImageError::InvalidReference {
        reference: wanted.to_string(),
        reason,
    };
    if wanted.contains('@') {
        return Err(bad("push takes NAME[:TAG]; a digest names no tag to push"));
    }
    let reference = Reference::parse(wanted)?;
    if !all_tags {
        let full = reference.full();
        if !store
            .list()?
            .iter()
            .any(|(_, rec)| rec.names.contains(&full))
        {
            return Err(ImageError::NotFound(reference.familiar()));
        }
        return Ok(vec![reference]);
    }
    let last = wanted.rsplit('/').next().unwrap_or(wanted);
    if last.contains(':') {
        return Err(bad("a tag cannot be given with --all-tags"));
    }
    let repository = reference.repository();
    let mut tags: Vec<Reference> = store
        .list()?
        .into_iter()
        .flat_map(|(_, rec)| rec.names)
        .filter_map(|n| Reference::parse(&n).ok())
        .filter(|r| r.repository() == repository && r.tag.is_some())
        .collect();
    tags.sort_by(|a, b| a.tag.cmp(&b.tag));
    tags.dedup();
    if tags.is_empty() {
        return Err(ImageError::NotFound(reference.familiar_repository()));
    }
    Ok(tags)
}

/// Pushes `target` (a name in the store) to its registry, with `credentials` instead of
/// the stored ones when given (the API's `X-Registry-Auth`). Callers push each of
/// [`targets`] in turn; a failure leaves the tags pushed before it pushed.
pub fn push(
    store: &ImageStore,
    target: &Reference,
    settings: &RegistrySettings,
    credentials: Option<Credentials>,
    progress: &dyn PushProgress,
) -> Result<Pushed, ImageError> {
    let _gc = store.gc_shared()?;
    let image = target.full();
    let local = LocalImage::find(store, target)?;
    let fail = |source: PushError| ImageError::PushFailed {
        image: image.clone(),
        source: Box::new(source),
    };
    let registry = Registry::connect(&target.domain, settings, credentials)
        .map_err(|e| fail(PushError::Connect(e)))?;
    let pushed = push_one(store, &registry, target, &local, progress).map_err(fail)?;
    let repo_digest = format!("{}@{}", target.repository(), pushed.digest);
    store.add_image(
        &local.manifest_digest,
        &local.config,
        None,
        Some(&repo_digest),
    )?;
    let familiar = target.familiar();
    crate::events::emit(
        store.root(),
        Kind::Image,
        "push",
        &familiar,
        &[("name", &familiar)],
    );
    Ok(pushed)
}

/// One blob of the image, as stored.
#[derive(Debug, Clone)]
struct Blob {
    digest: Digest,
    size: u64,
    path: PathBuf,
    /// What progress calls it (layers only).
    short_id: String,
}

/// What the store holds of the image a name points at.
struct LocalImage {
    manifest_digest: Digest,
    manifest_bytes: Vec<u8>,
    media_type: String,
    config: Digest,
    config_blob: Blob,
    layers: Vec<Blob>,
}

impl LocalImage {
    /// The image `target` names (by name only: an ID prefix is not a place to push to).
    fn find(store: &ImageStore, target: &Reference) -> Result<LocalImage, ImageError> {
        let full = target.full();
        let (manifest_digest, rec) = store
            .list()?
            .into_iter()
            .find(|(_, rec)| rec.names.contains(&full))
            .ok_or_else(|| ImageError::NotFound(target.familiar()))?;
        let corrupt = |what, reason: String| ImageError::Corrupt {
            image: manifest_digest.clone(),
            what,
            reason,
        };
        let digest =
            Digest::parse(&manifest_digest).map_err(|e| corrupt("index", e.to_string()))?;
        let manifest_bytes = store.read_blob(&digest)?;
        if Digest::of(&manifest_bytes) != digest {
            return Err(corrupt(
                "manifest",
                "its blob no longer has its digest".into(),
            ));
        }
        let manifest = match manifest::parse(&manifest_bytes, "") {
            Ok(ManifestDoc::Image(m)) => m,
            Ok(ManifestDoc::Index(_)) => return Err(corrupt("manifest", "an index".into())),
            Err(e) => return Err(corrupt("manifest", e.to_string())),
        };
        let media_type = manifest
            .media_type()
            .as_ref()
            .map_or_else(|| OCI_MANIFEST.to_string(), |m| m.to_string());
        let config = Digest::parse(&rec.config).map_err(|e| corrupt("index", e.to_string()))?;
        let parsed = super::json::parse(&store.read_blob(&config)?)
            .map_err(|e| corrupt("config", e.to_string()))?;
        let diff_ids = diff_ids_of(&parsed).map_err(|e| corrupt("config", e.to_string()))?;
        let blob = |desc: &oci_spec::image::Descriptor, short: Option<&Digest>| {
            let digest =
                Digest::of_descriptor(desc).map_err(|e| corrupt("manifest", e.to_string()))?;
            let short_id = super::pull::short_id(short.unwrap_or(&digest).as_str());
            Ok::<_, ImageError>(Blob {
                path: store.blob_path(&digest),
                digest,
                size: desc.size(),
                short_id,
            })
        };
        let layers = manifest
            .layers()
            .iter()
            .enumerate()
            .map(|(i, desc)| blob(desc, diff_ids.get(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let config_blob = blob(manifest.config(), None)?;
        if config_blob.digest != config {
            return Err(corrupt(
                "manifest",
                format!(
                    "its config is {}, the index says {config}",
                    config_blob.digest
                ),
            ));
        }
        Ok(LocalImage {
            manifest_digest: digest,
            manifest_bytes,
            media_type,
            config,
            config_blob,
            layers,
        })
    }
}

/// Layers, config, manifest of one tag.
fn push_one(
    store: &ImageStore,
    registry: &Registry,
    target: &Reference,
    local: &LocalImage,
    progress: &dyn PushProgress,
) -> Result<Pushed, PushError> {
    let repo = target.path.as_str();
    let mounts = mount_sources(store, target);
    for (i, layer) in local.layers.iter().enumerate() {
        progress.layer(&layer.short_id, PushEvent::Preparing);
        if i >= PARALLEL_UPLOADS {
            progress.layer(&layer.short_id, PushEvent::Waiting);
        }
    }
    push_layers(registry, repo, &local.layers, &mounts, progress)?;
    let config = &local.config_blob;
    let quiet = |_: u64| {};
    push_blob(
        registry,
        repo,
        config,
        None,
        &quiet,
        &AtomicBool::new(false),
    )
    .map_err(|e| PushError::Blob {
        what: "config",
        digest: config.digest.clone(),
        source: Box::new(e),
    })?;
    let tag = target
        .tag
        .as_deref()
        .unwrap_or(super::reference::DEFAULT_TAG);
    let stored = registry
        .put_manifest(repo, tag, &local.media_type, &local.manifest_bytes)
        .map_err(PushError::Registry)?;
    if let Some(got) = stored.filter(|d| *d != local.manifest_digest.as_str()) {
        return Err(PushError::WrongDigest {
            got,
            want: local.manifest_digest.clone(),
        });
    }
    Ok(Pushed {
        reference: target.clone(),
        digest: local.manifest_digest.clone(),
        size: local.manifest_bytes.len() as u64,
    })
}

/// Where the registry may mount each blob from: other repositories of the same registry
/// that images holding the blob were pulled from or pushed to.
fn mount_sources(store: &ImageStore, target: &Reference) -> HashMap<Digest, String> {
    let mut sources = HashMap::new();
    for (manifest_digest, rec) in store.list().unwrap_or_default() {
        let from = rec
            .repo_digests
            .iter()
            .filter_map(|d| Reference::parse(d).ok())
            .find(|r| r.domain == target.domain && r.path != target.path);
        let (Some(from), Ok(manifest)) = (from, store.manifest(&manifest_digest)) else {
            continue;
        };
        for desc in manifest.layers() {
            if let Ok(digest) = Digest::of_descriptor(desc) {
                sources.entry(digest).or_insert_with(|| from.path.clone());
            }
        }
    }
    sources
}

/// Pushes `layers` on up to [`PARALLEL_UPLOADS`] threads; the first failure stops the
/// others and is returned naming its layer.
fn push_layers(
    registry: &Registry,
    repo: &str,
    layers: &[Blob],
    mounts: &HashMap<Digest, String>,
    progress: &dyn PushProgress,
) -> Result<(), PushError> {
    let jobs: Vec<&Blob> = layers.iter().collect();
    super::parallel::until_first_failure(jobs, PARALLEL_UPLOADS, |layer, abort| {
        let report = |done| {
            let total = layer.size;
            progress.layer(&layer.short_id, PushEvent::Pushing { done, total });
        };
        let from = mounts.get(&layer.digest).map(String::as_str);
        let outcome = push_blob(registry, repo, layer, from, &report, abort)?;
        progress.layer(&layer.short_id, outcome);
        Ok(())
    })
    .map_err(|(layer, e)| PushError::Blob {
        what: "layer",
        digest: layer.digest.clone(),
        source: Box::new(e),
    })
}

/// One blob: skipped when the repository has it, mounted from `from` when the registry
/// agrees, uploaded otherwise. Returns what happened.
fn push_blob(
    registry: &Registry,
    repo: &str,
    blob: &Blob,
    from: Option<&str>,
    report: &(dyn Fn(u64) + Sync),
    abort: &AtomicBool,
) -> Result<PushEvent, PushError> {
    let digest = blob.digest.as_str();
    if registry
        .blob_exists(repo, digest)
        .map_err(PushError::Registry)?
    {
        return Ok(PushEvent::AlreadyExists);
    }
    let upload = match from {
        Some(from) => match registry
            .mount_blob(repo, digest, from)
            .map_err(PushError::Registry)?
        {
            Mount::Mounted => return Ok(PushEvent::MountedFrom(from.to_string())),
            Mount::Upload(session) => session,
        },
        None => registry.start_upload(repo).map_err(PushError::Registry)?,
    };
    upload_blob(registry, repo, blob, upload, report, abort)?;
    Ok(PushEvent::Pushed)
}

/// Streams the stored blob into `upload` in chunks of [`CHUNK`] bytes, then closes it.
fn upload_blob(
    registry: &Registry,
    repo: &str,
    blob: &Blob,
    mut upload: Upload,
    report: &(dyn Fn(u64) + Sync),
    abort: &AtomicBool,
) -> Result<(), PushError> {
    let open = |e: std::io::Error| PushError::StoredBlob {
        path: blob.path.clone(),
        source: e,
    };
    let file = std::fs::File::open(&blob.path).map_err(open)?;
    let stored = file.metadata().map_err(open)?.len();
    if stored != blob.size {
        return Err(PushError::StoredSize {
            size: stored,
            want: blob.size,
        });
    }
    let mut reader = Counting {
        inner: BufReader::with_capacity(256 * 1024, file),
        done: 0,
        next_report: 0,
        report,
        abort,
    };
    let what = format!(
        "upload of blob {} to {}/{repo}",
        blob.digest,
        registry.host()
    );
    while upload.offset() < blob.size {
        let len = CHUNK.min(blob.size - upload.offset());
        registry
            .upload_chunk(repo, &mut upload, &mut reader, len, &what)
            .map_err(PushError::Registry)?;
    }
    registry
        .finish_upload(repo, upload, blob.digest.as_str(), &what)
        .map_err(PushError::Registry)
}

/// Counts bytes for progress reports, and stops the stream when another layer failed.
struct Counting<'a, R> {
    inner: R,
    done: u64,
    next_report: u64,
    report: &'a (dyn Fn(u64) + Sync),
    abort: &'a AtomicBool,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.abort.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("cancelled: another layer failed"));
        }
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.done >= self.next_report {
            self.next_report = self.done + PROGRESS_STEP;
            (self.report)(self.done);
        }
        Ok(n)
    }
}

/// Why a push failed; each names the blob or manifest concerned.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The root's registry settings (`daemon.json`) cannot be read.
    #[error("{0}")]
    Settings(#[source] super::registry::SettingsError),
    /// The registry could not be reached.
    #[error("{0}")]
    Connect(#[source] RegistryError),
    /// The registry refused or failed a request (its status and message).
    #[error("{}", describe(.0))]
    Registry(#[source] RegistryError),
    /// One blob failed.
    #[error("{what} {digest}: {source}")]
    Blob {
        /// `layer` or `config`.
        what: &'static str,
        /// Its digest.
        digest: Digest,
        /// What failed.
        #[source]
        source: Box<PushError>,
    },
    /// The stored blob cannot be read.
    #[error("the store's copy {}: {source}", .path.display())]
    StoredBlob {
        /// Its file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The stored blob has another size than the manifest says.
    #[error("the store's copy has {size} bytes, the manifest says {want}")]
    StoredSize {
        /// Bytes on disk.
        size: u64,
        /// Bytes the descriptor says.
        want: u64,
    },
    /// The registry stored the manifest under another digest than it has here.
    #[error("the registry stored the manifest as {got}, not {want}")]
    WrongDigest {
        /// What the registry said.
        got: String,
        /// The local digest.
        want: Digest,
    },
}

/// Registry errors in the words a user needs.
fn describe(e: &RegistryError) -> String {
    match e.status() {
        Some(401) => format!("{e} (authentication required: capsa login)"),
        Some(403) => format!("{e} (denied: the credentials may not push here)"),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_refusals_name_status_and_message() {
        let e = PushError::Registry(RegistryError::Status {
            what: "blob sha256:ab of r/x".into(),
            status: 401,
            reason: "UNAUTHORIZED: authentication required".into(),
        })
        .to_string();
        assert!(
            e.contains("401 UNAUTHORIZED: authentication required"),
            "{e}"
        );
        assert!(e.contains("capsa login"), "{e}");
    }
}
