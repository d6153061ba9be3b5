//! `save` and `load`: image archives in both formats people exchange.
//!
//! `save` writes one tarball that is at once an OCI image layout (`oci-layout`,
//! `index.json`, `blobs/sha256/`) and a docker-archive (`manifest.json` pointing into the
//! same blobs), as Docker 25 and later write it, so `docker load`, `skopeo`, `umoci` and
//! capsa all read it. Blobs are written as stored: the digests in the manifests still hold.
//!
//! `load` reads either format (older docker-archives with `<id>/layer.tar` too). The archive
//! is first extracted into a private staging directory (tar is not seekable); every layer
//! then goes through [`super::layer::take_in`] and is checked against the config's diff
//! IDs (and, for OCI layouts, against its descriptor). Only when every image of the archive
//! has been read this way are its layers, blobs and names committed: a bad archive stores
//! nothing.

use super::digest::{chain_ids, hex_part, sha256_of};
use super::layer::{take_in, Compression, Expected, StagedLayer};
use super::manifest::{self, ManifestDoc, Platform};
use super::store::Staging;
use super::{ImageError, ImageStore, Reference};
use oci_spec::image::{Descriptor, ImageConfiguration};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

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
        let mut blobs = vec![image.manifest_digest.clone(), image.id.clone()];
        blobs.extend(manifest.layers().iter().map(|d| d.digest().to_string()));
        for digest in &blobs {
            if written.insert(digest.clone()) {
                append_blob(&mut tar, store, digest)?;
            }
        }
        let names: Vec<String> = match Reference::parse(w) {
            Ok(r) if image.names.contains(&r.full()) => vec![r.full()],
            _ => image.names.clone(),
        };
        let manifest_size = store.read_blob(&image.manifest_digest)?.len();
        let descriptor = |name: Option<&String>| {
            let mut d = json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": image.manifest_digest,
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
            "Config": blob_path(&image.id),
            "RepoTags": names.iter().map(|n| super::store::familiar_name(n)).collect::<Vec<_>>(),
            "Layers": manifest.layers().iter().map(|d| blob_path(d.digest().as_ref())).collect::<Vec<_>>(),
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

fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

fn append_blob<W: Write>(
    tar: &mut tar::Builder<W>,
    store: &ImageStore,
    digest: &str,
) -> Result<(), ImageError> {
    let path = store.blob_path(digest)?;
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

/// What `load` brought in: names (`busybox:latest`) or, for unnamed images, IDs.
#[derive(Debug, Default)]
pub struct Loaded {
    /// `Loaded image: NAME`.
    pub names: Vec<String>,
    /// `Loaded image ID: sha256:...`.
    pub ids: Vec<String>,
}

/// Loads every image of the archive `input` (`source` names it in errors).
///
/// All or nothing: every image is read and every new layer staged and checked first; only
/// then are layers, blobs and names committed. An archive that holds no image, or one bad
/// entry anywhere, leaves the store as it was.
pub fn load(store: &ImageStore, input: impl Read, source: &str) -> Result<Loaded, ImageError> {
    let bad = |reason: String| ImageError::Archive {
        archive: source.to_string(),
        reason,
    };
    let _gc = store.gc_shared()?;
    store.sweep_staging();
    let staging = store.staging()?;
    let tree = staging.path().join("archive");
    std::fs::create_dir(&tree).map_err(|e| ImageError::io(&tree, e))?;
    extract(input, &tree).map_err(bad)?;
    let dir = ArchiveDir { root: tree };
    let mut plan = Plan::default();
    if dir.exists("index.json") && !dir.exists("manifest.json") || dir.exists("oci-layout") {
        plan_oci(store, &dir, &mut plan).map_err(bad)?;
    } else if dir.exists("manifest.json") {
        plan_docker(store, &dir, &mut plan).map_err(bad)?;
    } else {
        return Err(bad(
            "neither an OCI layout (index.json) nor a docker-archive (manifest.json)".into(),
        ));
    }
    if plan.images.is_empty() {
        return Err(bad("the archive holds no image".into()));
    }
    plan.commit(store).map_err(bad)
}

/// Extracts the archive into `tree`, refusing entries that would land outside it.
fn extract(input: impl Read, tree: &Path) -> Result<(), String> {
    let unreadable = |e: std::io::Error| format!("not a readable tar archive: {e}");
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let path = entry.path().map_err(unreadable)?.into_owned();
        if path
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(format!(
                "entry {}: path leads outside the archive",
                path.display()
            ));
        }
        let inside = entry
            .unpack_in(tree)
            .map_err(|e| format!("entry {}: {e}", path.display()))?;
        if !inside {
            return Err(format!(
                "entry {}: path leads outside the archive",
                path.display()
            ));
        }
    }
    Ok(())
}

/// The extracted archive; every path read from it is checked to stay inside.
struct ArchiveDir {
    root: PathBuf,
}

impl ArchiveDir {
    fn exists(&self, rel: &str) -> bool {
        self.path(rel).is_ok_and(|p| p.is_file())
    }

    fn path(&self, rel: &str) -> Result<PathBuf, String> {
        let joined = self.root.join(rel.trim_start_matches('/'));
        let real = joined.canonicalize().map_err(|e| format!("{rel}: {e}"))?;
        let root = self.root.canonicalize().map_err(|e| e.to_string())?;
        if !real.starts_with(&root) {
            return Err(format!("{rel}: points outside the archive"));
        }
        Ok(real)
    }

    fn read(&self, rel: &str) -> Result<Vec<u8>, String> {
        std::fs::read(self.path(rel)?).map_err(|e| format!("{rel}: {e}"))
    }

    fn open(&self, rel: &str) -> Result<std::fs::File, String> {
        std::fs::File::open(self.path(rel)?).map_err(|e| format!("{rel}: {e}"))
    }

    fn blob(&self, digest: &str) -> Result<String, String> {
        hex_part(digest)
            .map(|h| format!("blobs/sha256/{h}"))
            .ok_or_else(|| format!("digest {digest:?} is not sha256:<64 hex>"))
    }
}

/// One image of the archive, read and checked, not yet stored.
struct PlannedImage {
    config_bytes: Vec<u8>,
    id: String,
    manifest_bytes: Vec<u8>,
    manifest_digest: String,
    /// The names it gets; none: it is loaded by ID.
    names: Vec<Reference>,
}

/// A new layer, unpacked and checked in its staging directory.
struct PendingLayer {
    chain: String,
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
    fn has_staged(&self, chain: &str) -> bool {
        self.layers.iter().any(|l| l.chain == chain)
    }

    /// Stores the staged layers, the blobs, then the names.
    fn commit(self, store: &ImageStore) -> Result<Loaded, String> {
        for pending in self.layers {
            let _lock = store
                .layer_lock(&pending.chain)
                .map_err(|e| e.to_string())?;
            pending
                .layer
                .commit(store, &pending.chain)
                .map_err(|e| e.to_string())?;
        }
        let mut loaded = Loaded::default();
        for image in self.images {
            store
                .put_blob(&image.config_bytes)
                .map_err(|e| e.to_string())?;
            store
                .put_blob(&image.manifest_bytes)
                .map_err(|e| e.to_string())?;
            if image.names.is_empty() {
                store
                    .add_image(&image.manifest_digest, &image.id, None, None)
                    .map_err(|e| e.to_string())?;
                loaded.ids.push(image.id.clone());
            }
            for name in &image.names {
                store
                    .add_image(&image.manifest_digest, &image.id, Some(name), None)
                    .map_err(|e| e.to_string())?;
                loaded.names.push(super::store::familiar_name(&name.full()));
            }
        }
        Ok(loaded)
    }
}

/// An OCI image layout: `index.json` -> manifests (or nested indexes, resolved for this
/// machine's platform) -> config and layer blobs, all checked against their descriptors.
fn plan_oci(store: &ImageStore, dir: &ArchiveDir, plan: &mut Plan) -> Result<(), String> {
    let index: Value =
        serde_json::from_slice(&dir.read("index.json")?).map_err(|e| format!("index.json: {e}"))?;
    let entries: Vec<Descriptor> = serde_json::from_value(index["manifests"].clone())
        .map_err(|e| format!("index.json manifests: {e}"))?;
    if entries.is_empty() {
        return Err("index.json lists no manifests".into());
    }
    for entry in &entries {
        let bytes = checked_blob(dir, entry)?;
        let (manifest_bytes, manifest_digest) = match manifest::parse(&bytes, "")? {
            ManifestDoc::Image(_) => (bytes, entry.digest().to_string()),
            ManifestDoc::Index(inner) => {
                let d = manifest::select(&inner, &Platform::host())?.clone();
                (checked_blob(dir, &d)?, d.digest().to_string())
            }
        };
        let ManifestDoc::Image(m) = manifest::parse(&manifest_bytes, "")? else {
            return Err(format!("{manifest_digest}: an index inside an index"));
        };
        let config_bytes = checked_blob(dir, m.config())?;
        let layers: Vec<(String, Option<Descriptor>)> = m
            .layers()
            .iter()
            .map(|d| Ok((dir.blob(d.digest().as_ref())?, Some(d.clone()))))
            .collect::<Result<_, String>>()?;
        let id = stage_image(store, dir, &config_bytes, &layers, plan)?;
        let annotations = entry.annotations().clone().unwrap_or_default();
        let name = annotations
            .get(NAME_ANNOTATION)
            .or_else(|| annotations.get(REF_ANNOTATION))
            .and_then(|n| Reference::parse(n).ok().filter(|_| n.contains([':', '/'])));
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
fn plan_docker(store: &ImageStore, dir: &ArchiveDir, plan: &mut Plan) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        #[serde(default)]
        repo_tags: Option<Vec<String>>,
        layers: Vec<String>,
    }
    let entries: Vec<Entry> = serde_json::from_slice(&dir.read("manifest.json")?)
        .map_err(|e| format!("manifest.json: {e}"))?;
    if entries.is_empty() {
        return Err("manifest.json lists no images".into());
    }
    for entry in entries {
        let names = entry
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| Reference::parse(t).map_err(|e| format!("manifest.json: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let config_bytes = dir.read(&entry.config)?;
        let layers: Vec<(String, Option<Descriptor>)> =
            entry.layers.iter().map(|l| (l.clone(), None)).collect();
        let id = stage_image(store, dir, &config_bytes, &layers, plan)?;
        let config_desc = json!({
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": id,
            "size": config_bytes.len(),
        });
        let mut layer_descs = Vec::new();
        for l in &entry.layers {
            let (digest, size, compression) = stored_blob_of(dir, l)?;
            layer_descs.push(json!({
                "mediaType": compression.oci_media_type(),
                "digest": digest,
                "size": size,
            }));
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc,
            "layers": layer_descs,
        });
        let manifest_bytes = serde_json::to_vec(&manifest).unwrap_or_default();
        plan.images.push(PlannedImage {
            manifest_digest: sha256_of(&manifest_bytes),
            config_bytes,
            id,
            manifest_bytes,
            names,
        });
    }
    Ok(())
}

/// Stages every layer the store (and the plan) lacks, checking diff IDs against the
/// config; returns the image ID.
fn stage_image(
    store: &ImageStore,
    dir: &ArchiveDir,
    config_bytes: &[u8],
    layers: &[(String, Option<Descriptor>)],
    plan: &mut Plan,
) -> Result<String, String> {
    let config = ImageConfiguration::from_reader(config_bytes)
        .map_err(|e| format!("malformed config: {e}"))?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != layers.len() {
        return Err(format!(
            "{} layers but the config lists {} diff IDs",
            layers.len(),
            diff_ids.len()
        ));
    }
    for (((path, desc), diff_id), chain) in layers.iter().zip(diff_ids).zip(chain_ids(diff_ids)) {
        let declared = match desc {
            Some(d) => Some(Compression::of_media_type(d.media_type().as_ref())?),
            None => None,
        };
        let blob_known = desc
            .as_ref()
            .is_some_and(|d| store.has_blob(d.digest().as_ref()));
        if store.has_layer(&chain) && blob_known || plan.has_staged(&chain) {
            continue;
        }
        let staging = store.staging().map_err(|e| e.to_string())?;
        let expected = desc.as_ref().map(|d| Expected {
            digest: d.digest().to_string(),
            size: d.size(),
        });
        let layer = take_in(
            dir.open(path)?,
            staging.path(),
            declared,
            path,
            expected.as_ref(),
        )
        .map_err(|e| e.to_string())?;
        if layer.diff_id != *diff_id {
            return Err(format!(
                "layer {path}: unpacks to {}, the config says {diff_id}",
                layer.diff_id
            ));
        }
        plan.layers.push(PendingLayer {
            chain,
            layer,
            _staging: staging,
        });
    }
    Ok(sha256_of(config_bytes))
}

/// Digest, size and compression of a docker-archive layer file as it is now stored.
fn stored_blob_of(dir: &ArchiveDir, path: &str) -> Result<(String, u64, Compression), String> {
    let mut file = dir.open(path)?;
    let mut head = [0u8; 4];
    let n = file.read(&mut head).map_err(|e| format!("{path}: {e}"))?;
    let compression = Compression::sniff(&head[..n]);
    let mut hashing = super::digest::HashingReader::new(dir.open(path)?);
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(|e| format!("{path}: {e}"))?;
    let (digest, size) = hashing.finish().map_err(|e| format!("{path}: {e}"))?;
    Ok((digest, size, compression))
}

/// A small blob of the layout, checked against its descriptor.
fn checked_blob(dir: &ArchiveDir, desc: &Descriptor) -> Result<Vec<u8>, String> {
    let digest = desc.digest().to_string();
    let bytes = dir.read(&dir.blob(&digest)?)?;
    if bytes.len() as u64 != desc.size() || sha256_of(&bytes) != digest {
        return Err(format!(
            "blob {digest}: content does not match its descriptor"
        ));
    }
    Ok(bytes)
}
