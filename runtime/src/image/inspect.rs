//! What `image inspect`, `history` and `system df` show of images: Docker's field names,
//! and sizes both ways, logical (each image with all its layers, what `images` shows) and
//! on disk (every block counted once however many images share it).

use super::digest::Digest;
use super::store::familiar_name;
use super::{Image, ImageError, ImageStore};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// `image inspect`'s object for one image.
pub fn inspect(store: &ImageStore, image: &Image) -> Result<Value, ImageError> {
    let id = Digest::parse(&image.id).map_err(|e| ImageError::Corrupt {
        image: image.manifest_digest.clone(),
        what: "image index",
        reason: e.to_string(),
    })?;
    let raw: Value = serde_json::from_slice(&store.read_blob(&id)?).unwrap_or(Value::Null);
    let stored = store.images()?.into_iter().find(|i| i.id == image.id);
    let repo_digests = stored
        .as_ref()
        .map(|i| i.repo_digests.clone())
        .unwrap_or_default();
    let lower: Vec<String> = image
        .layer_dirs
        .iter()
        .rev()
        .map(|d| d.display().to_string())
        .collect();
    Ok(json!({
        "Id": image.id,
        "RepoTags": image.names.iter().map(|n| familiar_name(n)).collect::<Vec<_>>(),
        "RepoDigests": repo_digests
            .iter()
            .map(|d| super::reference::familiar(d))
            .collect::<Vec<_>>(),
        "Parent": stored.as_ref().and_then(|i| i.parent.clone()).unwrap_or_default(),
        // A committed image's own comment, else its first step's (an import's).
        "Comment": raw
            .get("comment")
            .or_else(|| raw.pointer("/history/0/comment"))
            .cloned()
            .unwrap_or(json!("")),
        "Created": raw.get("created").cloned().unwrap_or(Value::Null),
        "DockerVersion": "",
        "Author": raw.get("author").cloned().unwrap_or(json!("")),
        "Config": raw.get("config").cloned().unwrap_or(json!({})),
        "Architecture": raw.get("architecture").cloned().unwrap_or(json!("")),
        "Variant": raw.get("variant").cloned(),
        "Os": raw.get("os").cloned().unwrap_or(json!("")),
        "Size": image.size(),
        "GraphDriver": {
            "Name": "overlay",
            "Data": {"LowerDir": lower.join(":")},
        },
        "RootFS": {
            "Type": "layers",
            "Layers": image.config.rootfs().diff_ids(),
        },
        "Metadata": {
            "ManifestDigest": image.manifest_digest,
            "Added": stored.map(|i| i.added),
        },
    }))
}

/// One row of `history`: the build step and the size of the layer it made (0 for steps
/// that made none).
#[derive(Debug)]
pub struct HistoryRow {
    /// When the step ran (RFC 3339), if recorded.
    pub created: Option<String>,
    /// The instruction.
    pub created_by: String,
    /// Unpacked bytes of its layer.
    pub size: u64,
    /// The step's comment.
    pub comment: String,
}

/// The image's history, newest first (as `docker history` lists it). Images without a
/// history get one row per layer.
pub fn history(image: &Image) -> Vec<HistoryRow> {
    let mut layers = image.layer_dirs.iter();
    let mut rows: Vec<HistoryRow> = image
        .config
        .history()
        .iter()
        .flatten()
        .map(|h| {
            let empty = h.empty_layer().unwrap_or(false);
            let size = match (empty, layers.next()) {
                (false, Some(dir)) => crate::fsutil::disk_usage(dir),
                _ => 0,
            };
            HistoryRow {
                created: h.created().clone(),
                created_by: h.created_by().clone().unwrap_or_default(),
                size,
                comment: h.comment().clone().unwrap_or_default(),
            }
        })
        .collect();
    if rows.is_empty() {
        rows = image
            .layer_dirs
            .iter()
            .map(|d| HistoryRow {
                created: None,
                created_by: String::new(),
                size: crate::fsutil::disk_usage(d),
                comment: String::new(),
            })
            .collect();
    }
    rows.reverse();
    rows
}

/// Sizes of one image for `system df -v`.
#[derive(Debug)]
pub struct ImageUsage {
    /// The image.
    pub image: Image,
    /// All its layers, unpacked (what `images` shows).
    pub size: u64,
    /// The part in layers another image also uses.
    pub shared: u64,
}

/// The store's use of the disk, counted two ways.
#[derive(Debug)]
pub struct StoreUsage {
    /// Per image.
    pub images: Vec<ImageUsage>,
    /// Sum of every image's `size`: shared layers counted once per image.
    pub logical: u64,
    /// Blocks the unpacked layers really occupy, each layer and hard-linked file once.
    pub layers_on_disk: u64,
    /// Blocks the stored blobs (compressed layers, manifests, configs) occupy.
    pub blobs_on_disk: u64,
}

/// Measures the store (walks every layer once).
pub fn usage(store: &ImageStore) -> Result<StoreUsage, ImageError> {
    let mut images = Vec::new();
    let mut chains_seen = Vec::new();
    for stored in store.images()? {
        let image = store.resolve(&stored.id)?;
        chains_seen.push(image.chain_ids.clone());
        images.push(image);
    }
    let mut usages = Vec::new();
    for (i, image) in images.into_iter().enumerate() {
        let mut size = 0;
        let mut shared = 0;
        for (chain, dir) in chains_seen[i].iter().zip(&image.layer_dirs) {
            let bytes = crate::fsutil::disk_usage(dir);
            size += bytes;
            let others = chains_seen
                .iter()
                .enumerate()
                .any(|(j, c)| j != i && c.contains(chain));
            if others {
                shared += bytes;
            }
        }
        usages.push(ImageUsage {
            image,
            size,
            shared,
        });
    }
    let logical = usages.iter().map(|u| u.size).sum();
    let mut seen = HashSet::new();
    let layers_on_disk = blocks_used(&store.root().layers_dir(), &mut seen);
    let blobs_on_disk = blocks_used(&store.root().blobs_dir(), &mut seen);
    Ok(StoreUsage {
        images: usages,
        logical,
        layers_on_disk,
        blobs_on_disk,
    })
}

/// Bytes of disk blocks under `path`, each inode once.
fn blocks_used(path: &Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !seen.insert((meta.dev(), meta.ino())) {
        return 0;
    }
    let own = meta.blocks() * 512;
    if !meta.is_dir() {
        return own;
    }
    let children: u64 = std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| blocks_used(&e.path(), seen))
        .sum();
    own + children
}
