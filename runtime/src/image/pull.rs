//! `capsa pull`: manifest (through an index for the wanted platform), config, then every
//! missing layer streamed from the registry through [`super::layer::take_in`], up to three
//! at a time. Each blob's size and digest and each layer's diff ID are checked before it is
//! committed; the image is named only once all of it is in the store.
//!
//! Layers shared between images are fetched once: a layer already unpacked is skipped, and
//! two pulls wanting the same layer at the same time serialise on a lock per layer. Pulls
//! hold the store's garbage-collection lock shared, so `image prune` never removes a layer
//! that a pull has committed but not yet named.

use super::digest::{chain_ids, diff_ids_of, BadDigest, ChainId, Digest};
use super::layer::{take_in, Compression, Expected, LayerError, Limited};
use super::manifest::{self, ManifestDoc, ManifestError, Platform};
use super::registry::{Registry, RegistryError, RegistrySettings};
use super::{ImageError, ImageStore, Reference};
use crate::events::Kind;
use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};

/// Layers fetched at once (Docker's default).
const PARALLEL_LAYERS: usize = 3;
/// Bytes between two progress reports of one layer.
const PROGRESS_STEP: u64 = 256 * 1024;

/// What happens to one layer, reported as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerEvent {
    /// The layer is in the store already.
    AlreadyExists,
    /// Queued for download.
    Waiting,
    /// Bytes received of the blob so far.
    Downloading {
        /// Received.
        done: u64,
        /// The descriptor's size.
        total: u64,
    },
    /// All bytes are in; digests are being compared.
    Verifying,
    /// Verified and committed.
    Complete,
}

/// Receives pull progress; the CLI draws it (bars on a terminal, lines otherwise).
pub trait PullProgress: Sync {
    /// A layer (by the short form of its blob digest) changed state.
    fn layer(&self, short_id: &str, event: LayerEvent);
}

/// What a pull made.
#[derive(Debug)]
pub struct Pulled {
    /// The image ID (config digest).
    pub id: String,
    /// Digest of what the tag points at in the registry (the index for multi-platform).
    pub repo_digest: String,
    /// False when every layer and the manifest were already here.
    pub downloaded: bool,
}

/// A layer to fetch.
struct LayerJob<'a> {
    desc: &'a Descriptor,
    digest: Digest,
    diff_id: &'a Digest,
    chain_id: ChainId,
}

/// Pulls `reference` for `platform` into `store`.
pub fn pull(
    store: &ImageStore,
    reference: &Reference,
    platform: &Platform,
    settings: &RegistrySettings,
    progress: &dyn PullProgress,
) -> Result<Pulled, ImageError> {
    pull_as(store, reference, platform, settings, None, progress)
}

/// [`pull`] with `credentials` instead of the stored ones (the API's `X-Registry-Auth`).
pub fn pull_as(
    store: &ImageStore,
    reference: &Reference,
    platform: &Platform,
    settings: &RegistrySettings,
    credentials: Option<super::registry::auth::Credentials>,
    progress: &dyn PullProgress,
) -> Result<Pulled, ImageError> {
    let image = reference.full();
    let fail = |source: PullError| ImageError::PullFailed {
        image: image.clone(),
        source: Box::new(source),
    };
    let registry = Registry::connect(&reference.domain, settings, credentials)
        .map_err(|e| fail(PullError::Connect(e)))?;
    let wanted = reference
        .digest
        .clone()
        .or_else(|| reference.tag.clone())
        .unwrap_or_else(|| super::reference::DEFAULT_TAG.into());
    let top = registry
        .manifest(&reference.path, &wanted)
        .map_err(|e| fail(PullError::Registry(e)))?;
    if let Some(d) = &reference.digest {
        if top.digest.as_str() != d {
            return Err(fail(PullError::WrongManifest {
                got: top.digest.to_string(),
                want: d.clone(),
            }));
        }
    }
    let (manifest_bytes, manifest_digest) = match manifest::parse(&top.bytes, &top.media_type)
        .map_err(|e| fail(PullError::Manifest(e)))?
    {
        ManifestDoc::Image(_) => (top.bytes.clone(), top.digest.clone()),
        ManifestDoc::Index(index) => {
            let desc =
                manifest::select(&index, platform).map_err(|e| fail(PullError::Manifest(e)))?;
            let digest = Digest::of_descriptor(desc).map_err(|source| {
                fail(PullError::IndexEntry {
                    index: top.digest.to_string(),
                    source,
                })
            })?;
            let one = registry
                .manifest(&reference.path, digest.as_str())
                .map_err(|e| fail(PullError::Registry(e)))?;
            check_blob(&one.bytes, desc, &digest, "manifest").map_err(&fail)?;
            (one.bytes, digest)
        }
    };
    let in_manifest = |field: String, source: BadDigest| {
        fail(PullError::ManifestField {
            manifest: manifest_digest.clone(),
            field,
            source,
        })
    };
    let manifest = match manifest::parse(&manifest_bytes, "").map_err(|source| {
        fail(PullError::InManifest {
            manifest: manifest_digest.clone(),
            source,
        })
    })? {
        ManifestDoc::Image(m) => m,
        ManifestDoc::Index(_) => return Err(fail(PullError::Nested)),
    };
    let config_digest = Digest::of_descriptor(manifest.config())
        .map_err(|e| in_manifest("config.digest".into(), e))?;
    let layer_digests = manifest
        .layers()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            Digest::of_descriptor(d).map_err(|e| in_manifest(format!("layers[{i}].digest"), e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let in_config = |source: Box<dyn std::error::Error + Send + Sync>| {
        fail(PullError::Config {
            config: config_digest.clone(),
            source,
        })
    };
    let config_bytes = fetch_small(
        &registry,
        &reference.path,
        manifest.config(),
        &config_digest,
    )
    .map_err(|e| in_config(Box::new(e)))?;
    let config: ImageConfiguration =
        super::json::parse(&config_bytes).map_err(|e| in_config(Box::new(e)))?;
    let diff_ids = diff_ids_of(&config).map_err(|e| in_config(Box::new(e)))?;
    if diff_ids.len() != manifest.layers().len() {
        return Err(fail(PullError::LayerCount {
            layers: manifest.layers().len(),
            diff_ids: diff_ids.len(),
        }));
    }

    let _gc = store.gc_shared()?;
    store.sweep_staging();
    let jobs = missing_layers(store, &manifest, layer_digests, &diff_ids, progress)?;
    let downloaded = !jobs.is_empty() || !store.has_blob(&manifest_digest);
    fetch_layers(store, &registry, &reference.path, jobs, progress).map_err(|(layer, e)| {
        fail(PullError::Layer {
            layer,
            source: Box::new(e),
        })
    })?;
    let config_digest = store.put_blob(&config_bytes)?;
    store.put_blob(&manifest_bytes)?;
    let repo_digest = format!("{}@{}", reference.repository(), top.digest);
    let name = reference.tag.is_some().then_some(reference);
    store.add_image(&manifest_digest, &config_digest, name, Some(&repo_digest))?;
    let familiar = super::store::familiar_name(&reference.full());
    crate::events::emit(
        store.root(),
        Kind::Image,
        "pull",
        &familiar,
        &[("name", &familiar)],
    );
    Ok(Pulled {
        id: config_digest.to_string(),
        repo_digest,
        downloaded,
    })
}

/// The layers not yet in the store, reporting the others as already there.
fn missing_layers<'a>(
    store: &ImageStore,
    manifest: &'a ImageManifest,
    digests: Vec<Digest>,
    diff_ids: &'a [Digest],
    progress: &dyn PullProgress,
) -> Result<Vec<LayerJob<'a>>, ImageError> {
    let mut jobs = Vec::new();
    for (((desc, digest), diff_id), chain_id) in manifest
        .layers()
        .iter()
        .zip(digests)
        .zip(diff_ids)
        .zip(chain_ids(diff_ids))
    {
        let short = short_id(digest.as_str());
        if store.has_layer(&chain_id) && store.has_blob(&digest) {
            progress.layer(&short, LayerEvent::AlreadyExists);
            continue;
        }
        progress.layer(&short, LayerEvent::Waiting);
        jobs.push(LayerJob {
            desc,
            digest,
            diff_id,
            chain_id,
        });
    }
    Ok(jobs)
}

/// Fetches `jobs` on up to [`PARALLEL_LAYERS`] threads; the first failure stops the rest
/// and is returned with the layer it concerns.
fn fetch_layers(
    store: &ImageStore,
    registry: &Registry,
    repo: &str,
    jobs: Vec<LayerJob<'_>>,
    progress: &dyn PullProgress,
) -> Result<(), (String, PullError)> {
    super::parallel::until_first_failure(jobs, PARALLEL_LAYERS, |job, abort| {
        fetch_layer(store, registry, repo, job, progress, abort)
    })
    .map_err(|(job, e)| (job.digest.to_string(), e))
}

/// One layer: lock it, skip it if another pull finished it meanwhile, else stream, verify
/// and commit it.
fn fetch_layer(
    store: &ImageStore,
    registry: &Registry,
    repo: &str,
    job: &LayerJob<'_>,
    progress: &dyn PullProgress,
    abort: &AtomicBool,
) -> Result<(), PullError> {
    let digest = &job.digest;
    let short = short_id(digest.as_str());
    let compression =
        Compression::of_media_type(job.desc.media_type().as_ref()).map_err(PullError::Intake)?;
    let _lock = store
        .layer_lock(&job.chain_id)
        .map_err(|e| PullError::Store(Box::new(e)))?;
    if store.has_layer(&job.chain_id) && store.has_blob(digest) {
        progress.layer(&short, LayerEvent::Complete);
        return Ok(());
    }
    let staging = store.staging().map_err(|e| PullError::Store(Box::new(e)))?;
    let size = job.desc.size();
    let body = registry
        .blob(repo, digest.as_str())
        .map_err(PullError::Registry)?;
    let counted = Counting {
        inner: Limited::new(body, size, &format!("blob {digest}")),
        done: 0,
        next_report: 0,
        total: size,
        short: &short,
        progress,
        abort,
    };
    let expected = Expected {
        digest: digest.clone(),
        size,
    };
    let staged = take_in(
        counted,
        staging.path(),
        Some(compression),
        digest.as_str(),
        Some(&expected),
    )
    .map_err(|e| match e {
        ImageError::Layer { source, .. } => PullError::Intake(source),
        other => PullError::Store(Box::new(other)),
    })?;
    progress.layer(&short, LayerEvent::Verifying);
    if staged.diff_id != *job.diff_id {
        return Err(PullError::DiffId {
            got: staged.diff_id.clone(),
            want: job.diff_id.clone(),
        });
    }
    staged
        .commit(store, &job.chain_id)
        .map_err(|e| PullError::Store(Box::new(e)))?;
    progress.layer(&short, LayerEvent::Complete);
    Ok(())
}

/// Fetches a small blob (a config) and checks it against its descriptor.
fn fetch_small(
    registry: &Registry,
    repo: &str,
    desc: &Descriptor,
    digest: &Digest,
) -> Result<Vec<u8>, PullError> {
    const CONFIG_LIMIT: u64 = 8 * 1024 * 1024;
    if desc.size() > CONFIG_LIMIT {
        return Err(PullError::TooLarge(desc.size()));
    }
    let body = registry
        .blob(repo, digest.as_str())
        .map_err(PullError::Registry)?;
    let mut bytes = Vec::new();
    Limited::new(body, desc.size(), &format!("blob {digest}"))
        .read_to_end(&mut bytes)
        .map_err(PullError::Read)?;
    check_blob(&bytes, desc, digest, "blob")?;
    Ok(bytes)
}

/// Size and digest of `bytes` against `desc` (whose digest is `want`).
fn check_blob(
    bytes: &[u8],
    desc: &Descriptor,
    want: &Digest,
    what: &'static str,
) -> Result<(), PullError> {
    if bytes.len() as u64 != desc.size() {
        return Err(PullError::Size {
            what,
            digest: want.clone(),
            got: bytes.len() as u64,
            want: desc.size(),
        });
    }
    let got = Digest::of(bytes);
    if got != *want {
        return Err(PullError::Digest {
            what,
            digest: want.clone(),
            got,
        });
    }
    Ok(())
}

/// Why a pull failed; each names the manifest, config or layer concerned.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The registry could not be reached.
    #[error("{0}")]
    Connect(#[source] RegistryError),
    /// The registry refused or failed a request.
    #[error("{}", describe(.0))]
    Registry(#[source] RegistryError),
    /// A pull by digest answered with another manifest.
    #[error("the registry sent a manifest with digest {got}, not {want}")]
    WrongManifest {
        /// The digest received.
        got: String,
        /// The digest asked for.
        want: String,
    },
    /// The top manifest or index is not one capsa can use.
    #[error("{0}")]
    Manifest(#[source] ManifestError),
    /// An index entry's digest is not a digest.
    #[error("index {index}: manifest digest: {source}")]
    IndexEntry {
        /// The index.
        index: String,
        /// What is wrong.
        #[source]
        source: BadDigest,
    },
    /// The platform's manifest does not parse.
    #[error("manifest {manifest}: {source}")]
    InManifest {
        /// Its digest.
        manifest: Digest,
        /// What is wrong.
        #[source]
        source: ManifestError,
    },
    /// A digest field of the manifest is not a digest.
    #[error("manifest {manifest}: {field}: {source}")]
    ManifestField {
        /// The manifest's digest.
        manifest: Digest,
        /// `config.digest`, `layers[N].digest`.
        field: String,
        /// What is wrong.
        #[source]
        source: BadDigest,
    },
    /// An index inside an index.
    #[error("an index inside an index")]
    Nested,
    /// The config could not be fetched or does not parse.
    #[error("config {config}: {source}")]
    Config {
        /// Its digest.
        config: Digest,
        /// What is wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Manifest and config disagree on the number of layers.
    #[error("the manifest lists {layers} layers but the config {diff_ids} diff IDs")]
    LayerCount {
        /// Layers in the manifest.
        layers: usize,
        /// Diff IDs in the config.
        diff_ids: usize,
    },
    /// One layer failed.
    #[error("layer {layer}: {source}")]
    Layer {
        /// Its digest.
        layer: String,
        /// What failed.
        #[source]
        source: Box<PullError>,
    },
    /// A config larger than capsa accepts.
    #[error("{0} bytes is too large for a config")]
    TooLarge(u64),
    /// Reading a small blob failed.
    #[error("{0}")]
    Read(#[source] std::io::Error),
    /// A small blob has another size than its descriptor.
    #[error("{what} {digest}: {got} bytes received, {want} expected")]
    Size {
        /// `manifest` or `blob`.
        what: &'static str,
        /// Its digest.
        digest: Digest,
        /// Bytes received.
        got: u64,
        /// Bytes expected.
        want: u64,
    },
    /// A small blob has another digest than its descriptor.
    #[error("{what} {digest}: digest mismatch (received {got})")]
    Digest {
        /// `manifest` or `blob`.
        what: &'static str,
        /// The digest expected.
        digest: Digest,
        /// The digest received.
        got: Digest,
    },
    /// A layer blob could not be taken in.
    #[error("{0}")]
    Intake(#[source] LayerError),
    /// The layer unpacked to another diff ID than the config says.
    #[error("diff ID mismatch: the layer unpacks to {got}, the config says {want}")]
    DiffId {
        /// What it unpacked to.
        got: Digest,
        /// What the config says.
        want: Digest,
    },
    /// The store failed.
    #[error("{0}")]
    Store(#[source] Box<ImageError>),
}

/// Registry errors in the words a user needs: 401 and 404 get their usual meaning.
fn describe(e: &RegistryError) -> String {
    match e.status() {
        Some(401) => format!("{e} (authentication required: capsa login)"),
        Some(404) if e.to_string().starts_with("manifest") => {
            format!("{e} (not found: does the repository or tag exist?)")
        }
        _ => e.to_string(),
    }
}

/// The 12 hex characters Docker shows for a layer.
pub fn short_id(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.chars().take(12).collect()
}

/// Counts bytes for progress reports, and stops the stream when another layer failed.
struct Counting<'a, R> {
    inner: R,
    done: u64,
    next_report: u64,
    total: u64,
    short: &'a str,
    progress: &'a dyn PullProgress,
    abort: &'a AtomicBool,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.abort.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("cancelled: another layer failed"));
        }
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.done >= self.next_report || n == 0 {
            self.next_report = self.done + PROGRESS_STEP;
            self.progress.layer(
                self.short,
                LayerEvent::Downloading {
                    done: self.done,
                    total: self.total,
                },
            );
        }
        Ok(n)
    }
}
