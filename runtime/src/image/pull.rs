//! `capsa pull`: manifest (through an index for the wanted platform), config, then every
//! missing layer streamed from the registry through [`super::layer::take_in`], up to three
//! at a time. Each blob's size and digest and each layer's diff ID are checked before it is
//! committed; the image is named only once all of it is in the store.
//!
//! Layers shared between images are fetched once: a layer already unpacked is skipped, and
//! two pulls wanting the same layer at the same time serialise on a lock per layer. Pulls
//! hold the store's garbage-collection lock shared, so `image prune` never removes a layer
//! that a pull has committed but not yet named.

use super::digest::{chain_ids, diff_ids_of, ChainId, Digest};
use super::layer::{take_in, Compression, Expected, Limited};
use super::manifest::{self, ManifestDoc, Platform};
use super::registry::{Registry, RegistryError, RegistrySettings};
use super::{ImageError, ImageStore, Reference};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest};
use std::collections::VecDeque;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

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
    let image = reference.full();
    let fail = |reason: String| ImageError::Pull {
        image: image.clone(),
        reason,
    };
    let registry =
        Registry::connect(&reference.domain, settings, None).map_err(|e| fail(e.to_string()))?;
    let wanted = reference
        .digest
        .clone()
        .or_else(|| reference.tag.clone())
        .unwrap_or_else(|| super::reference::DEFAULT_TAG.into());
    let top = registry
        .manifest(&reference.path, &wanted)
        .map_err(|e| fail(describe(e)))?;
    if let Some(d) = &reference.digest {
        if top.digest.as_str() != d {
            return Err(fail(format!(
                "the registry sent a manifest with digest {}, not {d}",
                top.digest
            )));
        }
    }
    let (manifest_bytes, manifest_digest) =
        match manifest::parse(&top.bytes, &top.media_type).map_err(|e| fail(e.to_string()))? {
            ManifestDoc::Image(_) => (top.bytes.clone(), top.digest.clone()),
            ManifestDoc::Index(index) => {
                let desc = manifest::select(&index, platform).map_err(|e| fail(e.to_string()))?;
                let digest = Digest::of_descriptor(desc)
                    .map_err(|e| fail(format!("index {}: manifest digest: {e}", top.digest)))?;
                let one = registry
                    .manifest(&reference.path, digest.as_str())
                    .map_err(|e| fail(describe(e)))?;
                check_blob(&one.bytes, desc, &digest, "manifest").map_err(&fail)?;
                (one.bytes, digest)
            }
        };
    let manifest = match manifest::parse(&manifest_bytes, "")
        .map_err(|e| fail(format!("manifest {manifest_digest}: {e}")))?
    {
        ManifestDoc::Image(m) => m,
        ManifestDoc::Index(_) => return Err(fail("an index inside an index".into())),
    };
    let config_digest = Digest::of_descriptor(manifest.config())
        .map_err(|e| fail(format!("manifest {manifest_digest}: config.digest: {e}")))?;
    let layer_digests = manifest
        .layers()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            Digest::of_descriptor(d).map_err(|e| {
                fail(format!(
                    "manifest {manifest_digest}: layers[{i}].digest: {e}"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let config_bytes = fetch_small(
        &registry,
        &reference.path,
        manifest.config(),
        &config_digest,
    )
    .map_err(|e| fail(format!("config {config_digest}: {e}")))?;
    let config: ImageConfiguration = super::json::parse(&config_bytes)
        .map_err(|e| fail(format!("config {config_digest}: {e}")))?;
    let diff_ids =
        diff_ids_of(&config).map_err(|e| fail(format!("config {config_digest}: {e}")))?;
    if diff_ids.len() != manifest.layers().len() {
        return Err(fail(format!(
            "the manifest lists {} layers but the config {} diff IDs",
            manifest.layers().len(),
            diff_ids.len()
        )));
    }

    let _gc = store.gc_shared()?;
    store.sweep_staging();
    let jobs = missing_layers(store, &manifest, layer_digests, &diff_ids, progress)?;
    let downloaded = !jobs.is_empty() || !store.has_blob(&manifest_digest);
    fetch_layers(store, &registry, &reference.path, jobs, progress).map_err(|(layer, e)| {
        ImageError::Pull {
            image: image.clone(),
            reason: format!("layer {layer}: {e}"),
        }
    })?;
    let config_digest = store.put_blob(&config_bytes)?;
    store.put_blob(&manifest_bytes)?;
    let repo_digest = format!("{}@{}", reference.repository(), top.digest);
    let name = reference.tag.is_some().then_some(reference);
    store.add_image(&manifest_digest, &config_digest, name, Some(&repo_digest))?;
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
) -> Result<(), (String, String)> {
    let queue = Mutex::new(VecDeque::from(jobs));
    let failed: Mutex<Option<(String, String)>> = Mutex::new(None);
    let abort = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL_LAYERS {
            s.spawn(|| loop {
                if abort.load(Ordering::Relaxed) {
                    return;
                }
                let Some(job) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else {
                    return;
                };
                if let Err(e) = fetch_layer(store, registry, repo, &job, progress, &abort) {
                    let mut slot = failed.lock().unwrap_or_else(|p| p.into_inner());
                    if slot.is_none() && !abort.swap(true, Ordering::Relaxed) {
                        *slot = Some((job.digest.to_string(), e));
                    }
                    return;
                }
            });
        }
    });
    match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(f) => Err(f),
        None => Ok(()),
    }
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
) -> Result<(), String> {
    let digest = &job.digest;
    let short = short_id(digest.as_str());
    let compression =
        Compression::of_media_type(job.desc.media_type().as_ref()).map_err(|e| e.to_string())?;
    let _lock = store.layer_lock(&job.chain_id).map_err(|e| e.to_string())?;
    if store.has_layer(&job.chain_id) && store.has_blob(digest) {
        progress.layer(&short, LayerEvent::Complete);
        return Ok(());
    }
    let staging = store.staging().map_err(|e| e.to_string())?;
    let size = job.desc.size();
    let body = registry.blob(repo, digest.as_str()).map_err(describe)?;
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
        ImageError::LayerIntake { source, .. } => source.to_string(),
        other => other.to_string(),
    })?;
    progress.layer(&short, LayerEvent::Verifying);
    if staged.diff_id != *job.diff_id {
        return Err(format!(
            "diff ID mismatch: the layer unpacks to {}, the config says {}",
            staged.diff_id, job.diff_id
        ));
    }
    staged
        .commit(store, &job.chain_id)
        .map_err(|e| e.to_string())?;
    progress.layer(&short, LayerEvent::Complete);
    Ok(())
}

/// Fetches a small blob (a config) and checks it against its descriptor.
fn fetch_small(
    registry: &Registry,
    repo: &str,
    desc: &Descriptor,
    digest: &Digest,
) -> Result<Vec<u8>, String> {
    const CONFIG_LIMIT: u64 = 8 * 1024 * 1024;
    if desc.size() > CONFIG_LIMIT {
        return Err(format!("{} bytes is too large for a config", desc.size()));
    }
    let body = registry.blob(repo, digest.as_str()).map_err(describe)?;
    let mut bytes = Vec::new();
    Limited::new(body, desc.size(), &format!("blob {digest}"))
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    check_blob(&bytes, desc, digest, "blob")?;
    Ok(bytes)
}

/// Size and digest of `bytes` against `desc` (whose digest is `want`).
fn check_blob(bytes: &[u8], desc: &Descriptor, want: &Digest, what: &str) -> Result<(), String> {
    if bytes.len() as u64 != desc.size() {
        return Err(format!(
            "{what} {want}: {} bytes received, {} expected",
            bytes.len(),
            desc.size()
        ));
    }
    let got = Digest::of(bytes);
    if got != *want {
        return Err(format!("{what} {want}: digest mismatch (received {got})"));
    }
    Ok(())
}

/// Registry errors in the words a user needs: 401 and 404 get their usual meaning.
fn describe(e: RegistryError) -> String {
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
