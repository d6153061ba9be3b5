//! `save` and `load`: image archives in both formats people exchange.
//!
//! `save` writes one tarball that is at once an OCI image layout (`oci-layout`,
//! `index.json`, `blobs/sha256/`) and a docker-archive (`manifest.json` pointing into the
//! same blobs), as Docker 25 and later write it, so `docker load`, `skopeo`, `umoci` and
//! capsa all read it. Blobs are written as stored: the digests in the manifests still hold.
//!
//! `load` reads either format (older docker-archives with `<id>/layer.tar` too), plain or
//! compressed with gzip or zstd as `docker load` accepts it. The archive is first extracted
//! into a private staging directory (tar is not seekable); every digest and diff ID it
//! names is parsed as `sha256:<64 hex>` before anything else; every new layer then goes
//! through [`super::layer::take_in`] and is checked against the config's diff IDs (and, for
//! OCI layouts, against its descriptor). A layer already in the store is reused only under
//! the chain ID those diff IDs give, and only once the archive's own blob for it has been
//! checked to be that layer. Only when every image of the archive has been read this way
//! are its layers, blobs and names committed: a bad archive stores nothing.

use super::digest::{chain_ids, diff_ids_of, ChainId, Digest};
use super::layer::{diff_id_of, take_in, Compression, Expected, StagedLayer};
use super::manifest::{self, ManifestDoc, Platform};
use super::store::Staging;
use super::tar_guard::HeaderGuard;
use super::unpack::error_chain;
use super::{ImageError, ImageStore, Reference};
use oci_spec::image::{Descriptor, ImageConfiguration};
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

/// Most bytes of one JSON file of an archive (`manifest.json`, `index.json`, a manifest, a
/// config): these are read whole, and real ones are a few KiB.
const MAX_JSON: u64 = 4 << 20;

/// The annotation containerd and Docker use for an image's full name in `index.json`.
const NAME_ANNOTATION: &str = "io.containerd.image.name";
/// The OCI annotation for a reference (often a bare tag).
const REF_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Writes the archive of `wanted` images (names or IDs) to `out`.
pub fn save(store: &ImageStore, wanted: &[String], out: impl Write) -> Result<(), ImageError> {
    let mut tar = tar::Builder::new(out);
    let mut written = std::collections::BTreeSet::new();
    let mut index_entries = Vec::new();
    let mut docker_entries = Vec::new();
    for w in wanted {
        let image = store.resolve(w)?;
        let manifest = store.manifest_of(&image)?;
        let corrupt = |e: super::digest::BadDigest| ImageError::Corrupt {
            image: image.manifest_digest.clone(),
            what: "manifest",
            reason: e.to_string(),
        };
        let manifest_digest = Digest::parse(&image.manifest_digest).map_err(corrupt)?;
        let config_digest = Digest::parse(&image.id).map_err(corrupt)?;
        let layer_digests = manifest
            .layers()
            .iter()
            .map(Digest::of_descriptor)
            .collect::<Result<Vec<_>, _>>()
            .map_err(corrupt)?;
        let mut blobs = vec![manifest_digest.clone(), config_digest.clone()];
        blobs.extend(layer_digests.iter().cloned());
        for digest in &blobs {
            if written.insert(digest.clone()) {
                append_blob(&mut tar, store, digest)?;
            }
        }
        let names = names_saved(w, &image.names);
        let manifest_size = store.read_blob(&manifest_digest)?.len();
        let descriptor = |name: Option<&String>| {
            let mut d = json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest.as_str(),
                "size": manifest_size,
            });
            if let Some(n) = name {
                let tag = Reference::parse(n)
                    .ok()
                    .and_then(|r| r.tag)
                    .unwrap_or_default();
                d["annotations"] = json!({NAME_ANNOTATION: n, REF_ANNOTATION: tag});
            }
            d
        };
        if names.is_empty() {
            index_entries.push(descriptor(None));
        }
        for n in &names {
            index_entries.push(descriptor(Some(n)));
        }
        docker_entries.push(json!({
            "Config": blob_path(&config_digest),
            "RepoTags": names.iter().map(|n| super::store::familiar_name(n)).collect::<Vec<_>>(),
            "Layers": layer_digests.iter().map(blob_path).collect::<Vec<_>>(),
        }));
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": index_entries,
    });
    let io = |e: std::io::Error| ImageError::io(Path::new("archive"), e);
    append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io)?;
    append_bytes(
        &mut tar,
        "index.json",
        &serde_json::to_vec(&index).unwrap_or_default(),
    )
    .map_err(io)?;
    append_bytes(
        &mut tar,
        "manifest.json",
        &serde_json::to_vec(&docker_entries).unwrap_or_default(),
    )
    .map_err(io)?;
    tar.into_inner().and_then(|mut w| w.flush()).map_err(io)
}

/// Where a blob lives inside an archive: `blobs/sha256/<hex>`.
fn blob_path(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

fn append_blob<W: Write>(
    tar: &mut tar::Builder<W>,
    store: &ImageStore,
    digest: &Digest,
) -> Result<(), ImageError> {
    let path = store.blob_path(digest);
    let mut file = std::fs::File::open(&path).map_err(|e| ImageError::io(&path, e))?;
    let len = file.metadata().map_err(|e| ImageError::io(&path, e))?.len();
    let mut h = entry_header(len);
    tar.append_data(&mut h, blob_path(digest), &mut file)
        .map_err(|e| ImageError::io(&path, e))
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    data: &[u8],
) -> std::io::Result<()> {
    let mut h = entry_header(data.len() as u64);
    tar.append_data(&mut h, name, data)
}

/// A plain file entry with fixed metadata, so the same images save to the same bytes.
fn entry_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

/// The names an archive records for `wanted` (of an image named `names`), as Docker's
/// save chooses them: `repo:tag` only that tag, a bare `repo` every tag of it this image
/// has, an ID (full or short) none, so that its load says `Loaded image ID:`.
fn names_saved(wanted: &str, names: &[String]) -> Vec<String> {
    let Ok(r) = Reference::parse(wanted) else {
        return Vec::new();
    };
    let after_slash = &wanted[wanted.rfind('/').map_or(0, |i| i + 1)..];
    if after_slash.contains(':') || wanted.contains('@') {
        return names.iter().filter(|n| **n == r.full()).cloned().collect();
    }
    let repository = r.repository();
    names
        .iter()
        .filter(|n| Reference::parse(n).is_ok_and(|m| m.repository() == repository))
        .cloned()
        .collect()
}

/// What `load` brought in: names (`busybox:latest`) or, for unnamed images, IDs.
#[derive(Debug, Default)]
pub struct Loaded {
    /// `Loaded image: NAME`.
    pub names: Vec<String>,
    /// `Loaded image ID: sha256:...`.
    pub ids: Vec<String>,
}

/// Why an archive could not be loaded; each names the entry, blob or file concerned.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The stream is not a tar archive (or breaks off).
    #[error("not a readable tar archive: {}", error_chain(.0))]
    Unreadable(#[source] std::io::Error),
    /// An entry whose path leads outside the archive.
    #[error("entry {}: path leads outside the archive", .0.display())]
    Outside(PathBuf),
    /// A sparse file (GNU or PAX sparse): its holes would unpack to any size, from a few
    /// bytes of archive. Docker writes none.
    #[error("entry {}: a sparse file (image archives hold none)", .0.display())]
    Sparse(PathBuf),
    /// A JSON file of the archive larger than this reader takes.
    #[error("{what}: {size} bytes, more than the {limit} bytes a JSON file of an image archive may hold")]
    TooLarge {
        /// The file, or the blob and the descriptor that names it.
        what: String,
        /// Its size (as stored, or as its descriptor says).
        size: u64,
        /// The most taken.
        limit: u64,
    },
    /// A hard link to a file outside the archive.
    #[error("entry {}: a hard link to {}, a file outside the archive", .path.display(), .target.display())]
    HardLink {
        /// The entry.
        path: PathBuf,
        /// Its target.
        target: PathBuf,
    },
    /// An entry could not be extracted.
    #[error("entry {}: {}", .path.display(), error_chain(.source))]
    Entry {
        /// The entry.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A path of the archive that resolves outside it.
    #[error("{0}: points outside the archive")]
    Escapes(String),
    /// The extracted tree could not be read.
    #[error("{0}")]
    Tree(#[source] std::io::Error),
    /// Neither layout.
    #[error("neither an OCI layout (index.json) nor a docker-archive (manifest.json)")]
    Neither,
    /// No image in it.
    #[error("the archive holds no image")]
    Empty,
    /// `index.json` lists nothing.
    #[error("index.json lists no manifests")]
    NoManifests,
    /// `manifest.json` lists nothing.
    #[error("manifest.json lists no images")]
    NoImages,
    /// A manifest digest that names an index where an image manifest must be.
    #[error("{0}: an index inside an index")]
    NestedIndex(Digest),
    /// Config and layers disagree in number.
    #[error("{layers} layers but the {label} lists {diff_ids} diff IDs")]
    LayerCount {
        /// Layers given.
        layers: usize,
        /// The config.
        label: String,
        /// Diff IDs listed.
        diff_ids: usize,
    },
    /// A layer that unpacks to another diff ID than its config says.
    #[error("layer {path}: unpacks to {got}, the {label} says {want}")]
    DiffId {
        /// The layer's path in the archive.
        path: String,
        /// What it unpacks to.
        got: Digest,
        /// The config.
        label: String,
        /// What the config says.
        want: Digest,
    },
    /// A blob that does not match its descriptor.
    #[error("blob {0}: content does not match its descriptor")]
    BlobMismatch(Digest),
    /// `what` (a file, a manifest, a config) is wrong for the reason `source` gives.
    #[error("{what}: {source}")]
    At {
        /// What is concerned.
        what: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A manifest, layer or store error that names its subject itself.
    #[error("{0}")]
    Cause(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Maps an error about `what`.
fn at<E: std::error::Error + Send + Sync + 'static>(
    what: impl Into<String>,
) -> impl FnOnce(E) -> ArchiveError {
    let what = what.into();
    move |e| ArchiveError::At {
        what,
        source: Box::new(e),
    }
}

/// Maps an error that names its subject itself.
fn cause<E: std::error::Error + Send + Sync + 'static>(e: E) -> ArchiveError {
    ArchiveError::Cause(Box::new(e))
}

/// Loads every image of the archive `input` (`source` names it in errors).
///
/// All or nothing: every image is read and every new layer staged and checked first; only
/// then are layers, blobs and names committed. An archive that holds no image, or one bad
/// entry anywhere, leaves the store as it was.
pub fn load(store: &ImageStore, input: impl Read, source: &str) -> Result<Loaded, ImageError> {
    let bad = |e: ArchiveError| ImageError::Archive {
        archive: source.to_string(),
        source: Box::new(e),
    };
    let _gc = store.gc_shared()?;
    store.sweep_staging();
    let staging = store.staging()?;
    let tree = staging.path().join("archive");
    std::fs::create_dir(&tree).map_err(|e| ImageError::io(&tree, e))?;
    let mut input = BufReader::new(input);
    let compression = Compression::sniff(
        input
            .fill_buf()
            .map_err(|e| bad(at("reading the archive")(e)))?,
    );
    let plain = super::layer::decompress(input, compression).map_err(|e| bad(cause(e)))?;
    extract(plain, &tree).map_err(bad)?;
    let dir = ArchiveDir { root: tree };
    let mut plan = Plan::default();
    if dir.exists("index.json") && !dir.exists("manifest.json") || dir.exists("oci-layout") {
        plan_oci(store, &dir, &mut plan).map_err(bad)?;
    } else if dir.exists("manifest.json") {
        plan_docker(store, &dir, &mut plan).map_err(bad)?;
    } else {
        return Err(bad(ArchiveError::Neither));
    }
    if plan.images.is_empty() {
        return Err(bad(ArchiveError::Empty));
    }
    plan.commit(store).map_err(bad)
}

/// Extracts the archive into `tree`, refusing entries that would land outside it (by
/// their path, or as hard links to a file outside).
fn extract(input: impl Read, tree: &Path) -> Result<(), ArchiveError> {
    let unreadable = ArchiveError::Unreadable;
    let leaves = |p: &Path| p.is_absolute() || p.components().any(|c| c == Component::ParentDir);
    let mut archive = tar::Archive::new(HeaderGuard::new(input));
    for entry in archive.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let path = entry.path().map_err(unreadable)?.into_owned();
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(ArchiveError::Outside(path));
        }
        if is_sparse(&mut entry) {
            return Err(ArchiveError::Sparse(path));
        }
        if entry.header().entry_type().is_hard_link() {
            let target = entry.link_name().map_err(unreadable)?.unwrap_or_default();
            if leaves(&target) {
                return Err(ArchiveError::HardLink {
                    path,
                    target: target.into_owned(),
                });
            }
        }
        let inside = entry
            .unpack_in(tree)
            .map_err(|source| ArchiveError::Entry {
                path: path.clone(),
                source,
            })?;
        if !inside {
            return Err(ArchiveError::Outside(path));
        }
    }
    Ok(())
}

/// Whether `entry` is a sparse file: GNU's sparse type, or a PAX header with GNU's sparse
/// records (which the `tar` crate would unpack with its map as data).
pub(crate) fn is_sparse<R: Read>(entry: &mut tar::Entry<R>) -> bool {
    if entry.header().entry_type().is_gnu_sparse() {
        return true;
    }
    let Ok(Some(pax)) = entry.pax_extensions() else {
        return false;
    };
    pax.flatten()
        .any(|e| e.key_bytes().starts_with(b"GNU.sparse."))
}

/// The extracted archive; every path read from it is checked to stay inside.
struct ArchiveDir {
    root: PathBuf,
}

impl ArchiveDir {
    fn exists(&self, rel: &str) -> bool {
        self.path(rel).is_ok_and(|p| p.is_file())
    }

    fn path(&self, rel: &str) -> Result<PathBuf, ArchiveError> {
        let joined = self.root.join(rel.trim_start_matches('/'));
        let real = joined.canonicalize().map_err(at(rel))?;
        let root = self.root.canonicalize().map_err(ArchiveError::Tree)?;
        if !real.starts_with(&root) {
            return Err(ArchiveError::Escapes(rel.into()));
        }
        Ok(real)
    }

    /// A JSON file of the archive, read whole: refused past [`MAX_JSON`] bytes.
    fn read(&self, rel: &str) -> Result<Vec<u8>, ArchiveError> {
        let file = self.open(rel)?;
        let size = file.metadata().map_err(at(rel))?.len();
        let too_large = |size| ArchiveError::TooLarge {
            what: rel.to_string(),
            size,
            limit: MAX_JSON,
        };
        if size > MAX_JSON {
            return Err(too_large(size));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        file.take(MAX_JSON + 1)
            .read_to_end(&mut bytes)
            .map_err(at(rel))?;
        if bytes.len() as u64 > MAX_JSON {
            return Err(too_large(bytes.len() as u64));
        }
        Ok(bytes)
    }

    /// The size of the file at `rel`.
    fn size(&self, rel: &str) -> Result<u64, ArchiveError> {
        let file = self.open(rel)?;
        Ok(file.metadata().map_err(at(rel))?.len())
    }

    fn open(&self, rel: &str) -> Result<std::fs::File, ArchiveError> {
        std::fs::File::open(self.path(rel)?).map_err(at(rel))
    }
}

/// One image of the archive, read and checked, not yet stored.
struct PlannedImage {
    config_bytes: Vec<u8>,
    id: Digest,
    manifest_bytes: Vec<u8>,
    manifest_digest: Digest,
    /// The names it gets; none: it is loaded by ID.
    names: Vec<Reference>,
}

/// A new layer, unpacked and checked in its staging directory.
struct PendingLayer {
    chain: ChainId,
    layer: StagedLayer,
    _staging: Staging,
}

/// Everything an archive brings, staged: committed together once all of it has been read.
#[derive(Default)]
struct Plan {
    images: Vec<PlannedImage>,
    layers: Vec<PendingLayer>,
}

impl Plan {
    fn has_layer(&self, chain: &ChainId) -> bool {
        self.layers.iter().any(|l| l.chain == *chain)
    }

    fn has_blob(&self, digest: &Digest) -> bool {
        self.layers.iter().any(|l| l.layer.blob_digest == *digest)
    }

    /// Stores the staged layers, the blobs, then the names.
    fn commit(self, store: &ImageStore) -> Result<Loaded, ArchiveError> {
        for pending in self.layers {
            let _lock = store.layer_lock(&pending.chain).map_err(cause)?;
            pending.layer.commit(store, &pending.chain).map_err(cause)?;
        }
        let mut loaded = Loaded::default();
        for image in self.images {
            store.put_blob(&image.config_bytes).map_err(cause)?;
            store.put_blob(&image.manifest_bytes).map_err(cause)?;
            if image.names.is_empty() {
                store
                    .add_image(&image.manifest_digest, &image.id, None, None)
                    .map_err(cause)?;
                loaded.ids.push(image.id.to_string());
            }
            for name in &image.names {
                store
                    .add_image(&image.manifest_digest, &image.id, Some(name), None)
                    .map_err(cause)?;
                loaded.names.push(super::store::familiar_name(&name.full()));
            }
            let id = image.id.to_string();
            let first = image
                .names
                .first()
                .map(|n| super::store::familiar_name(&n.full()));
            let attributes: Vec<(&str, &str)> =
                first.iter().map(|n| ("name", n.as_str())).collect();
            crate::events::emit(
                store.root(),
                crate::events::Kind::Image,
                "load",
                &id,
                &attributes,
            );
        }
        Ok(loaded)
    }
}

/// A layer blob of the archive: where it is, and what it must be.
struct LayerBlob {
    /// Its path in the archive.
    path: String,
    digest: Digest,
    size: u64,
    compression: Compression,
}

/// `index.json` of an OCI layout.
#[derive(serde::Deserialize)]
struct OciIndex {
    manifests: Vec<Descriptor>,
}

/// An OCI image layout: `index.json` -> manifests (or nested indexes, resolved for this
/// machine's platform) -> config and layer blobs, all checked against their descriptors.
fn plan_oci(store: &ImageStore, dir: &ArchiveDir, plan: &mut Plan) -> Result<(), ArchiveError> {
    let index: OciIndex = super::json::parse(&dir.read("index.json")?).map_err(at("index.json"))?;
    if index.manifests.is_empty() {
        return Err(ArchiveError::NoManifests);
    }
    for (i, entry) in index.manifests.iter().enumerate() {
        let what = format!("index.json manifests[{i}]");
        let (bytes, digest) = checked_blob(dir, entry, &what)?;
        let (manifest_bytes, manifest_digest) =
            match manifest::parse(&bytes, "").map_err(at(format!("manifest {digest}")))? {
                ManifestDoc::Image(_) => (bytes, digest),
                ManifestDoc::Index(inner) => {
                    let d = manifest::select(&inner, &Platform::host())
                        .map_err(cause)?
                        .clone();
                    checked_blob(dir, &d, &format!("index {digest}"))?
                }
            };
        let ManifestDoc::Image(m) = manifest::parse(&manifest_bytes, "")
            .map_err(at(format!("manifest {manifest_digest}")))?
        else {
            return Err(ArchiveError::NestedIndex(manifest_digest));
        };
        let (config_bytes, config_digest) = checked_blob(
            dir,
            m.config(),
            &format!("manifest {manifest_digest} config"),
        )?;
        let layers = m
            .layers()
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let digest = Digest::of_descriptor(d).map_err(at(format!(
                    "manifest {manifest_digest}: layers[{i}].digest"
                )))?;
                Ok(LayerBlob {
                    path: format!("blobs/sha256/{}", digest.hex()),
                    compression: Compression::of_media_type(d.media_type().as_ref())
                        .map_err(cause)?,
                    size: d.size(),
                    digest,
                })
            })
            .collect::<Result<Vec<_>, ArchiveError>>()?;
        let id = stage_image(
            store,
            dir,
            &config_bytes,
            &format!("config {config_digest}"),
            &layers,
            plan,
        )?;
        let annotations = entry.annotations().clone().unwrap_or_default();
        let name = annotations
            .get(NAME_ANNOTATION)
            .or_else(|| annotations.get(REF_ANNOTATION))
            // Normalised as Docker's containerd image store does: a bare `app` names
            // `app:latest`, as `docker load` tags it.
            .and_then(|n| Reference::parse(n).ok());
        plan.images.push(PlannedImage {
            config_bytes,
            id,
            manifest_bytes,
            manifest_digest,
            names: name.into_iter().collect(),
        });
    }
    Ok(())
}

/// A docker-archive: `manifest.json` -> config file and layer tarballs (any compression).
/// Its manifest is rebuilt in OCI form from the layers as they are stored.
fn plan_docker(store: &ImageStore, dir: &ArchiveDir, plan: &mut Plan) -> Result<(), ArchiveError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        #[serde(default)]
        repo_tags: Option<Vec<String>>,
        layers: Vec<String>,
    }
    let entries: Vec<Entry> =
        super::json::parse(&dir.read("manifest.json")?).map_err(at("manifest.json"))?;
    if entries.is_empty() {
        return Err(ArchiveError::NoImages);
    }
    for entry in entries {
        let names = entry
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| Reference::parse(t).map_err(at("manifest.json")))
            .collect::<Result<Vec<_>, _>>()?;
        let config_bytes = dir.read(&entry.config)?;
        let layers = entry
            .layers
            .iter()
            .map(|l| stored_blob_of(dir, l))
            .collect::<Result<Vec<_>, _>>()?;
        let id = stage_image(
            store,
            dir,
            &config_bytes,
            &format!("config {}", entry.config),
            &layers,
            plan,
        )?;
        let config_desc = json!({
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": id.as_str(),
            "size": config_bytes.len(),
        });
        let layer_descs: Vec<_> = layers
            .iter()
            .map(|l| {
                json!({
                    "mediaType": l.compression.oci_media_type(),
                    "digest": l.digest.as_str(),
                    "size": l.size,
                })
            })
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc,
            "layers": layer_descs,
        });
        let manifest_bytes = serde_json::to_vec(&manifest).unwrap_or_default();
        plan.images.push(PlannedImage {
            manifest_digest: Digest::of(&manifest_bytes),
            config_bytes,
            id,
            manifest_bytes,
            names,
        });
    }
    Ok(())
}

/// Checks the config (`label` names it) and every layer against its diff ID, staging each
/// layer the store (and the plan) lacks; returns the image ID.
///
/// A layer already unpacked is reused only under the chain ID computed from the config's
/// parsed diff IDs, and only after the archive's blob for it is checked to decompress to
/// that diff ID: the store's copy is then that very layer.
fn stage_image(
    store: &ImageStore,
    dir: &ArchiveDir,
    config_bytes: &[u8],
    label: &str,
    layers: &[LayerBlob],
    plan: &mut Plan,
) -> Result<Digest, ArchiveError> {
    let config: ImageConfiguration = super::json::parse(config_bytes).map_err(at(label))?;
    let diff_ids = diff_ids_of(&config).map_err(at(label))?;
    if diff_ids.len() != layers.len() {
        return Err(ArchiveError::LayerCount {
            layers: layers.len(),
            label: label.into(),
            diff_ids: diff_ids.len(),
        });
    }
    for ((blob, diff_id), chain) in layers.iter().zip(&diff_ids).zip(chain_ids(&diff_ids)) {
        let expected = Expected {
            digest: blob.digest.clone(),
            size: blob.size,
        };
        let path = &blob.path;
        let mismatch = |got: &Digest| ArchiveError::DiffId {
            path: path.clone(),
            got: got.clone(),
            label: label.into(),
            want: diff_id.clone(),
        };
        // A blob of another size than its descriptor says is not read, let alone hashed.
        if dir.size(path)? != blob.size {
            return Err(ArchiveError::BlobMismatch(blob.digest.clone()));
        }
        let layer_known = store.has_layer(&chain) || plan.has_layer(&chain);
        let blob_known = store.has_blob(&blob.digest) || plan.has_blob(&blob.digest);
        if layer_known && blob_known {
            let got = diff_id_of(dir.open(path)?, blob.compression, &expected)
                .map_err(at(format!("layer {path}")))?;
            if got != *diff_id {
                return Err(mismatch(&got));
            }
            continue;
        }
        let staging = store.staging().map_err(cause)?;
        let layer = take_in(
            dir.open(path)?,
            staging.path(),
            Some(blob.compression),
            path,
            Some(&expected),
        )
        .map_err(cause)?;
        if layer.diff_id != *diff_id {
            return Err(mismatch(&layer.diff_id));
        }
        plan.layers.push(PendingLayer {
            chain,
            layer,
            _staging: staging,
        });
    }
    Ok(Digest::of(config_bytes))
}

/// Digest, size and compression of a docker-archive layer file as it is now stored.
fn stored_blob_of(dir: &ArchiveDir, path: &str) -> Result<LayerBlob, ArchiveError> {
    let mut file = BufReader::new(dir.open(path)?);
    let head = file.fill_buf().map_err(at(path))?;
    let compression = Compression::sniff(head);
    let hashing = super::digest::HashingReader::new(file);
    let (digest, size) = hashing.finish().map_err(at(path))?;
    Ok(LayerBlob {
        path: path.to_string(),
        digest,
        size,
        compression,
    })
}

/// A small blob of the layout (`what` names where its descriptor is), checked against its
/// descriptor; returns it with its digest.
fn checked_blob(
    dir: &ArchiveDir,
    desc: &Descriptor,
    what: &str,
) -> Result<(Vec<u8>, Digest), ArchiveError> {
    let digest = Digest::of_descriptor(desc).map_err(at(format!("{what}: digest")))?;
    if desc.size() > MAX_JSON {
        return Err(ArchiveError::TooLarge {
            what: format!("{what}: blob {digest}"),
            size: desc.size(),
            limit: MAX_JSON,
        });
    }
    let path = format!("blobs/sha256/{}", digest.hex());
    if dir.size(&path)? != desc.size() {
        return Err(ArchiveError::BlobMismatch(digest));
    }
    let bytes = dir.read(&path)?;
    if bytes.len() as u64 != desc.size() || Digest::of(&bytes) != digest {
        return Err(ArchiveError::BlobMismatch(digest));
    }
    Ok((bytes, digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GNU sparse entry `name` of `real` bytes: a hole, then `data` at its end.
    fn sparse_entry(name: &str, real: u64, data: &[u8]) -> Vec<u8> {
        let octal = |n: u64, width: usize| format!("{n:0w$o}\0", w = width - 1).into_bytes();
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(&octal(0o644, 8));
        h[108..116].copy_from_slice(&octal(0, 8));
        h[116..124].copy_from_slice(&octal(0, 8));
        h[124..136].copy_from_slice(&octal(data.len() as u64, 12));
        h[136..148].copy_from_slice(&octal(0, 12));
        h[156] = b'S';
        h[257..265].copy_from_slice(b"ustar  \0");
        h[386..398].copy_from_slice(&octal(real - data.len() as u64, 12));
        h[398..410].copy_from_slice(&octal(data.len() as u64, 12));
        h[483..495].copy_from_slice(&octal(real, 12));
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let mut out = h.to_vec();
        out.extend_from_slice(data);
        out.resize(1024, 0);
        out.extend_from_slice(&[0; 1024]);
        out
    }

    /// A plain tar of one file.
    fn plain_entry(name: &str, data: &[u8]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        tar.append_data(&mut entry_header(data.len() as u64), name, data)
            .unwrap();
        tar.into_inner().unwrap()
    }

    fn load_error(archive: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let root = crate::root::StateRoot::open(&dir.path().join("root")).unwrap();
        let store = ImageStore::new(&root);
        let err = load(&store, archive, "test.tar").unwrap_err();
        err.to_string()
    }

    /// A 2 KB archive whose `manifest.json` is a 1 GiB sparse file is refused by name
    /// before anything reads it (it was unpacked, then read whole into memory).
    #[test]
    fn a_sparse_entry_is_refused_by_name() {
        let archive = sparse_entry("manifest.json", 1 << 30, b"[]");
        assert_eq!(archive.len(), 2048);
        let err = load_error(&archive);
        assert!(err.contains("entry manifest.json: a sparse file"), "{err}");
    }

    #[test]
    fn a_json_file_past_the_bound_is_refused_by_name() {
        let mut manifest = vec![b' '; MAX_JSON as usize];
        manifest.extend_from_slice(b"[]");
        let err = load_error(&plain_entry("manifest.json", &manifest));
        assert!(
            err.contains("manifest.json: 4194306 bytes, more than the 4194304"),
            "{err}"
        );
        // Within the bound it is read (and found empty).
        let err = load_error(&plain_entry("manifest.json", &manifest[2..]));
        assert!(err.contains("manifest.json lists no images"), "{err}");
    }

    fn names() -> Vec<String> {
        [
            "docker.io/library/alpine:3.10",
            "docker.io/library/alpine:latest",
            "docker.io/library/busybox:latest",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn a_tag_saves_that_tag_a_repository_its_tags_an_id_none() {
        assert_eq!(
            names_saved("alpine:3.10", &names()),
            ["docker.io/library/alpine:3.10"]
        );
        assert_eq!(
            names_saved("alpine", &names()),
            [
                "docker.io/library/alpine:3.10",
                "docker.io/library/alpine:latest"
            ]
        );
        assert!(names_saved(&format!("sha256:{}", "ab".repeat(32)), &names()).is_empty());
        assert!(names_saved("df7e1e51dea9", &names()).is_empty());
    }
}
