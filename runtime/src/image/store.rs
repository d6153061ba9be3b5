//! The content-addressed image store: blobs by sha256, unpacked layers by chain ID, and an
//! index from names to manifests. Every change to the index is made under a lock and written
//! atomically, so concurrent CLIs never lose each other's images.

use super::digest::{chain_ids, diff_ids_of, ChainId, Digest};
use super::{reference, ImageError, Reference};
use crate::fsutil::{write_json_atomic, FileLock};
use crate::root::StateRoot;
use oci_spec::image::{ImageConfiguration, ImageManifest};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What the index records of one image (keyed by manifest digest).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Digest of the config blob: the image ID, as Docker defines it.
    pub config: String,
    /// Fully qualified names that point at this image.
    #[serde(default)]
    pub names: Vec<String>,
    /// When the image entered this store (RFC 3339).
    pub added: String,
    /// `repository@digest` of what was pulled (the index for multi-platform images).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repo_digests: Vec<String>,
    /// The image this one was made from here (`commit`), as Docker's local `Parent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// `images.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    images: BTreeMap<String, ImageRecord>,
}

/// One image as users see it: its ID (the config digest) with every manifest the index
/// holds for it and all their names. An image that arrived under two manifests (imported,
/// then pulled after another tool pushed it; or loaded from two kinds of archive) is still
/// one image, as in Docker: its layers are the same, unpacked once by chain ID.
#[derive(Debug, Clone)]
pub struct StoredImage {
    /// `sha256:<hex>` of the config blob.
    pub id: String,
    /// The manifests recorded for it, in index order.
    pub manifests: Vec<String>,
    /// Every name that points at it, over all its manifests.
    pub names: Vec<String>,
    /// Every `repository@digest` it was pulled as.
    pub repo_digests: Vec<String>,
    /// When it first entered this store (RFC 3339).
    pub added: String,
    /// The image it was made from here (`commit`), if any.
    pub parent: Option<String>,
}

/// The IDs of the images that are intermediate, as Docker's `images` hides them without
/// `-a`: untagged, and the recorded parent of another image (a build's steps).
pub fn intermediate(images: &[StoredImage]) -> std::collections::BTreeSet<String> {
    let parents: std::collections::BTreeSet<&str> =
        images.iter().filter_map(|i| i.parent.as_deref()).collect();
    images
        .iter()
        .filter(|i| i.names.is_empty() && parents.contains(i.id.as_str()))
        .map(|i| i.id.clone())
        .collect()
}

/// An image resolved from the store, with everything `run` needs.
#[derive(Debug, Clone)]
pub struct Image {
    /// `sha256:<hex>` of the config blob.
    pub id: String,
    /// `sha256:<hex>` of the manifest blob.
    pub manifest_digest: String,
    /// Every name of the image (over all its manifests).
    pub names: Vec<String>,
    /// The parsed image config (Env, Cmd, Entrypoint, WorkingDir, User...).
    pub config: ImageConfiguration,
    /// Unpacked layer directories, lowest first.
    pub layer_dirs: Vec<PathBuf>,
    /// The chain ID of each of `layer_dirs`.
    pub chain_ids: Vec<ChainId>,
}

impl Image {
    /// Bytes its unpacked layers hold (shared layers counted in full).
    pub fn size(&self) -> u64 {
        self.layer_dirs
            .iter()
            .map(|d| crate::fsutil::disk_usage(d))
            .sum()
    }
}

/// Handle on the store inside a [`StateRoot`].
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: StateRoot,
}

impl ImageStore {
    /// The store of `root`.
    pub fn new(root: &StateRoot) -> ImageStore {
        ImageStore { root: root.clone() }
    }

    /// Path of a blob by digest (`blobs/sha256/<hex>`).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.blobs_dir().join(digest.hex())
    }

    /// Directory of an unpacked layer (`layers/<chain hex>/`); its tree is in `diff/`.
    pub fn layer_dir(&self, chain_id: &ChainId) -> PathBuf {
        self.root.layers_dir().join(chain_id.hex())
    }

    /// Reads a blob whole (manifests and configs are small).
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(digest);
        std::fs::read(&path).map_err(|e| ImageError::io(&path, e))
    }

    /// Records a manifest in the index, and points `name` (if any) at it, moving the name
    /// away from any image that had it.
    pub fn add_image(
        &self,
        manifest_digest: &Digest,
        config_digest: &Digest,
        name: Option<&Reference>,
        repo_digest: Option<&str>,
    ) -> Result<(), ImageError> {
        self.update_index(|index| {
            if let Some(name) = name {
                for rec in index.images.values_mut() {
                    rec.names.retain(|n| *n != name.full());
                }
            }
            let rec = index
                .images
                .entry(manifest_digest.to_string())
                .or_insert_with(|| ImageRecord {
                    config: config_digest.to_string(),
                    names: vec![],
                    added: crate::timefmt::rfc3339(SystemTime::now()),
                    repo_digests: vec![],
                    parent: None,
                });
            if let Some(name) = name {
                rec.names.push(name.full());
            }
            if let Some(d) = repo_digest {
                if !rec.repo_digests.iter().any(|r| r == d) {
                    rec.repo_digests.push(d.to_string());
                }
            }
        })
    }

    /// Records that the image of `manifest_digest` was made here from image `parent` (an
    /// ID), as `commit` does.
    pub fn set_parent(&self, manifest_digest: &Digest, parent: &str) -> Result<(), ImageError> {
        self.update_index(|index| {
            if let Some(rec) = index.images.get_mut(&manifest_digest.to_string()) {
                rec.parent = Some(parent.to_string());
            }
        })
    }

    /// Every manifest in the index, as (manifest digest, record).
    pub fn list(&self) -> Result<Vec<(String, ImageRecord)>, ImageError> {
        Ok(self.read_index()?.images.into_iter().collect())
    }

    /// Every image in the store, one per ID however many manifests it has.
    pub fn images(&self) -> Result<Vec<StoredImage>, ImageError> {
        Ok(self.read_index()?.by_id())
    }

    /// Resolves a name (`busybox`, `busybox:1`), a full or short image ID, or `sha256:<id>`.
    /// `sha256:<hex>` and a bare 64-hex string are IDs and only IDs, as Docker reads them:
    /// a name that looks like one (loaded before such names were refused) never takes over
    /// the string an operator uses to pin an image. A short bare hex string is a name first.
    pub fn resolve(&self, wanted: &str) -> Result<Image, ImageError> {
        let index = self.read_index()?;
        if reference::image_id_form(wanted).is_some() {
            let found = find_by_id(&index, wanted)?
                .ok_or_else(|| ImageError::NotFound(wanted.to_string()))?;
            return self.load_by_id(&index, &found);
        }
        let parsed = Reference::parse(wanted);
        let by_name = parsed.as_ref().ok().and_then(|r| {
            let full = r.full();
            index
                .images
                .iter()
                .find(|(_, rec)| rec.names.contains(&full))
        });
        if let Some((manifest_digest, rec)) = by_name {
            return self.load(&index, manifest_digest, &rec.config);
        }
        match (find_by_id(&index, wanted)?, parsed) {
            (Some(found), _) => self.load_by_id(&index, &found),
            (None, Err(e)) => Err(e),
            (None, Ok(_)) => Err(ImageError::NotFound(wanted.to_string())),
        }
    }

    /// Loads an image found by ID through its first manifest: every manifest of one config
    /// names the same layers (the config lists their diff IDs).
    fn load_by_id(&self, index: &Index, found: &StoredImage) -> Result<Image, ImageError> {
        let manifest_digest = found
            .manifests
            .first()
            .ok_or_else(|| ImageError::NotFound(found.id.clone()))?;
        self.load(index, manifest_digest, &found.id)
    }

    fn load(&self, index: &Index, manifest_digest: &str, id: &str) -> Result<Image, ImageError> {
        let corrupt = |what, e: &dyn std::fmt::Display| ImageError::Corrupt {
            image: manifest_digest.to_string(),
            what,
            reason: e.to_string(),
        };
        let manifest_id = Digest::parse(manifest_digest).map_err(|e| corrupt("image index", &e))?;
        let config_id = Digest::parse(id).map_err(|e| corrupt("image index", &e))?;
        let manifest: ImageManifest = super::json::parse(&self.read_blob(&manifest_id)?)
            .map_err(|e| corrupt("manifest", &e))?;
        let config: ImageConfiguration =
            super::json::parse(&self.read_blob(&config_id)?).map_err(|e| corrupt("config", &e))?;
        let diff_ids = diff_ids_of(&config).map_err(|e| corrupt("config", &e))?;
        if diff_ids.len() != manifest.layers().len() {
            return Err(corrupt(
                "config",
                &"diff_ids and manifest layers differ in count",
            ));
        }
        let chain_ids = chain_ids(&diff_ids);
        let mut layer_dirs = Vec::with_capacity(diff_ids.len());
        for chain in &chain_ids {
            let dir = self.layer_dir(chain).join("diff");
            if !dir.is_dir() {
                return Err(corrupt(
                    "layer store",
                    &format!("layer {chain} is not unpacked"),
                ));
            }
            layer_dirs.push(dir);
        }
        Ok(Image {
            id: id.to_string(),
            manifest_digest: manifest_digest.to_string(),
            names: index.names_of(id),
            config,
            layer_dirs,
            chain_ids,
        })
    }

    fn read_index(&self) -> Result<Index, ImageError> {
        let path = self.root.images_index();
        match std::fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data).map_err(|e| ImageError::Corrupt {
                image: path.display().to_string(),
                what: "image index",
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(ImageError::io(&path, e)),
        }
    }

    /// Changes the index's images under its lock (rmi, prune).
    pub fn change_index(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, ImageRecord>),
    ) -> Result<(), ImageError> {
        self.update_index(|index| change(&mut index.images))
    }

    /// The state root this store lives in.
    pub fn root(&self) -> &StateRoot {
        &self.root
    }

    /// The parsed manifest of a resolved image.
    pub fn manifest_of(&self, image: &Image) -> Result<ImageManifest, ImageError> {
        self.manifest(&image.manifest_digest)
    }

    /// The parsed manifest stored under `manifest_digest`.
    pub fn manifest(&self, manifest_digest: &str) -> Result<ImageManifest, ImageError> {
        let corrupt = |reason: String| ImageError::Corrupt {
            image: manifest_digest.to_string(),
            what: "manifest",
            reason,
        };
        let digest = Digest::parse(manifest_digest).map_err(|e| corrupt(e.to_string()))?;
        super::json::parse(&self.read_blob(&digest)?).map_err(|e| corrupt(e.to_string()))
    }

    fn update_index(&self, change: impl FnOnce(&mut Index)) -> Result<(), ImageError> {
        let lock_path = self.root.images_lock();
        let _lock = FileLock::acquire(&lock_path).map_err(|e| ImageError::io(&lock_path, e))?;
        let mut index = self.read_index()?;
        change(&mut index);
        let path = self.root.images_index();
        write_json_atomic(&path, &index).map_err(|e| ImageError::io(&path, e))
    }

    /// Where in-progress imports stage their files.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.tmp_dir()
    }

    /// Whether the blob `digest` is stored.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Whether the layer `chain_id` is unpacked.
    pub fn has_layer(&self, chain_id: &ChainId) -> bool {
        self.layer_dir(chain_id).join("diff").is_dir()
    }

    /// Stores a small blob (manifest, config) and returns its digest.
    pub fn put_blob(&self, data: &[u8]) -> Result<Digest, ImageError> {
        let digest = Digest::of(data);
        let dest = self.blob_path(&digest);
        if dest.is_file() {
            return Ok(digest);
        }
        let staging = self.staging()?;
        let tmp = staging.path().join("blob");
        crate::fsutil::write_replacing(&tmp, data, true).map_err(|e| ImageError::io(&tmp, e))?;
        self.commit_staged(&tmp, &dest)?;
        Ok(digest)
    }

    /// A private staging directory in `tmp/`, removed when dropped. Its `.lock` is held for
    /// its life, so [`sweep_staging`](Self::sweep_staging) can tell a live one from the
    /// leftovers of a killed process. The directory is made under a `creating-` name and
    /// renamed to `staging-` only once its lock is held: a sweeper never sees a live
    /// staging directory unlocked.
    pub fn staging(&self) -> Result<Staging, ImageError> {
        let tmp = self.tmp_dir();
        let creating = tempfile::Builder::new()
            .prefix("creating-")
            .tempdir_in(&tmp)
            .map_err(|e| ImageError::io(&tmp, e))?;
        // The lock file appears under its real name only once it is locked.
        let fresh = creating.path().join(".lock.new");
        let lock = FileLock::acquire(&fresh).map_err(|e| ImageError::io(&fresh, e))?;
        let lock_path = creating.path().join(".lock");
        std::fs::rename(&fresh, &lock_path).map_err(|e| ImageError::io(&lock_path, e))?;
        let name = creating
            .path()
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        let dir = tmp.join(name.replacen("creating-", "staging-", 1));
        std::fs::rename(creating.path(), &dir).map_err(|e| ImageError::io(&dir, e))?;
        // The TempDir now names nothing; the Staging owns the renamed directory.
        let _ = creating.keep();
        Ok(Staging { dir, _lock: lock })
    }

    /// Removes staging directories whose owner died (their lock is free), and
    /// directories of writers killed while creating one.
    pub fn sweep_staging(&self) {
        let Ok(entries) = std::fs::read_dir(self.tmp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            // A `.lock` that is free: its holder died.
            let abandoned = || FileLock::try_existing(&path.join(".lock")).is_some();
            // A writer between creating the directory and renaming its locked `.lock.new`
            // to `.lock` holds `.lock.new` locked, except in the microseconds before it is
            // created and locked: ten seconds on, a directory whose `.lock.new` is missing or
            // free belongs to a dead writer.
            let orphaned_new = || {
                let new = path.join(".lock.new");
                let held = new.exists() && FileLock::try_existing(&new).is_none();
                let old_enough = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() >= 10));
                !held && old_enough
            };
            let stale = || {
                // A directory renamed aside to be removed; an hour old, its remover died.
                entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 3600))
            };
            let goes = match name.split('-').next() {
                Some("staging") => abandoned(),
                Some("creating") => abandoned() || orphaned_new(),
                Some("removing") => stale(),
                _ => false,
            };
            if goes {
                let _ = remove_any(&path);
            }
        }
    }

    /// The lock serialising work on one layer, so two pulls fetch it once.
    pub fn layer_lock(&self, chain_id: &ChainId) -> Result<FileLock, ImageError> {
        let path = self
            .root
            .locks_dir()
            .join(format!("layer-{}", chain_id.hex()));
        FileLock::acquire(&path).map_err(|e| ImageError::io(&path, e))
    }

    /// A shared hold on the garbage-collection lock: writers that commit content before
    /// naming it (pull, load) hold it so that a collection never takes their content.
    pub fn gc_shared(&self) -> Result<FileLock, ImageError> {
        let path = self.gc_lock_path();
        FileLock::acquire_shared(&path).map_err(|e| ImageError::io(&path, e))
    }

    fn gc_lock_path(&self) -> PathBuf {
        self.root.locks_dir().join("gc")
    }

    /// Moves a staged file or tree into its content-addressed place; if another writer got
    /// there first, the staged copy is dropped (same digest, same content).
    pub fn commit_staged(&self, staged: &Path, dest: &Path) -> Result<(), ImageError> {
        if dest.exists() {
            let _ = remove_any(staged);
            return Ok(());
        }
        match std::fs::rename(staged, dest) {
            Ok(()) => Ok(()),
            Err(_) if dest.exists() => {
                let _ = remove_any(staged);
                Ok(())
            }
            Err(e) => Err(ImageError::io(dest, e)),
        }
    }
}

/// A staging directory with its liveness lock (see [`ImageStore::staging`]).
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    _lock: FileLock,
}

impl Staging {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Whatever was committed has been renamed out; the rest is scratch.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes a file or a directory tree.
pub fn remove_any(path: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(path)?.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}

impl Index {
    /// The index's manifests grouped by image ID, in index order.
    fn by_id(&self) -> Vec<StoredImage> {
        let mut images: Vec<StoredImage> = Vec::new();
        for (manifest_digest, rec) in &self.images {
            let at = match images.iter().position(|i| i.id == rec.config) {
                Some(at) => at,
                None => {
                    images.push(StoredImage {
                        id: rec.config.clone(),
                        manifests: vec![],
                        names: vec![],
                        repo_digests: vec![],
                        added: rec.added.clone(),
                        parent: None,
                    });
                    images.len() - 1
                }
            };
            let image = &mut images[at];
            image.manifests.push(manifest_digest.clone());
            extend_unique(&mut image.names, &rec.names);
            extend_unique(&mut image.repo_digests, &rec.repo_digests);
            if image.parent.is_none() {
                image.parent = rec.parent.clone();
            }
            // RFC 3339 times of one format compare as text.
            if rec.added < image.added {
                image.added = rec.added.clone();
            }
        }
        images
    }

    /// Every name of the image `id`, over all its manifests.
    fn names_of(&self, id: &str) -> Vec<String> {
        let mut names = Vec::new();
        for rec in self.images.values().filter(|rec| rec.config == id) {
            extend_unique(&mut names, &rec.names);
        }
        names
    }
}

fn extend_unique(into: &mut Vec<String>, from: &[String]) {
    for item in from {
        if !into.contains(item) {
            into.push(item.clone());
        }
    }
}

/// The image whose ID is or starts with `wanted` (`sha256:` optional). Manifests that share
/// a config are one image, so only two different IDs make a prefix ambiguous.
fn find_by_id(index: &Index, wanted: &str) -> Result<Option<StoredImage>, ImageError> {
    let hex = wanted.strip_prefix("sha256:").unwrap_or(wanted);
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let mut hits = index.by_id().into_iter().filter(|image| {
        image
            .id
            .strip_prefix("sha256:")
            .is_some_and(|id| id.starts_with(hex))
    });
    let first = hits.next();
    if hits.next().is_some() {
        return Err(ImageError::InvalidReference {
            reference: wanted.to_string(),
            reason: "ambiguous image ID prefix",
        });
    }
    Ok(first)
}

/// A stored name as Docker prints it: `busybox:latest`, `localhost:5000/app:1`.
pub fn familiar_name(full: &str) -> String {
    let (repo, tag) = display_name(full);
    format!("{repo}:{tag}")
}

/// The names of an image as `docker images` shows them: (`busybox`, `latest`).
pub fn display_name(full: &str) -> (String, String) {
    match Reference::parse(full) {
        Ok(r) => (
            reference::familiar(&r.repository()),
            r.tag.unwrap_or_else(|| "<none>".into()),
        ),
        Err(_) => (full.to_string(), "<none>".into()),
    }
}
