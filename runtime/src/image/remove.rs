//! `rmi`, `tag`, `image prune`, and the garbage collection behind them: after a change to
//! the index, every blob and unpacked layer that no image in the index refers to is
//! removed. Collection takes the store's GC lock exclusively, so it never races a pull or a
//! load that has committed layers it has not named yet.
//!
//! An image is its ID (the config digest): the manifests that share it are removed
//! together. Which containers use which image is the caller's to say ([`ImageUse`]): the
//! image store does not read the container store.
//!
//! An image still used by a container is never collected: `rmi -f` of such an image takes
//! its names away and leaves it `<none>` (Docker deletes the record and keeps the layers
//! under the container; keeping the record is what lets `start` find its layers again).

use super::digest::Digest;
use super::store::remove_any;
use super::{ImageError, ImageStore, Reference};
use crate::events::Kind;
use crate::fsutil::FileLock;
use std::collections::BTreeSet;

/// What `rmi` did, line by line as Docker prints it.
#[derive(Debug, PartialEq, Eq)]
pub enum Removal {
    /// A name was taken off an image.
    Untagged(String),
    /// An image left the store.
    Deleted(String),
}

/// A container's hold on an image.
#[derive(Debug, Clone)]
pub struct ImageUse {
    /// The container's ID.
    pub container: String,
    /// The ID of the image it was created from.
    pub image: String,
    /// Whether it runs: the image of a running container cannot be deleted even by force.
    pub running: bool,
}

fn conflict(reason: String) -> ImageError {
    ImageError::Conflict(reason)
}

fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..12.min(hex.len())]
}

/// `rmi [-f] IMAGE`: untags a name, and deletes the image once no name and no container
/// is left; by ID, deletes it (with `force`, even when several names point at it). `uses`
/// are the containers of the store, each with its image.
pub fn remove_image(
    store: &ImageStore,
    uses: &[ImageUse],
    wanted: &str,
    force: bool,
) -> Result<Vec<Removal>, ImageError> {
    let image = store.resolve(wanted)?;
    let by_name = Reference::parse(wanted)
        .ok()
        .map(|r| r.full())
        .filter(|full| image.names.contains(full));
    let users: Vec<&ImageUse> = uses.iter().filter(|u| u.image == image.id).collect();
    let mut done = Vec::new();
    let untag: Vec<String> = match &by_name {
        Some(name) => {
            let last = image.names.len() == 1;
            if let Some(user) = users.first().filter(|_| last && !force) {
                return Err(conflict(format!(
                    "unable to remove repository reference {wanted:?} (must force) - container {} is using its referenced image {}",
                    short(&user.container),
                    short(&image.id)
                )));
            }
            vec![name.clone()]
        }
        None => {
            if let Some(user) = users.iter().find(|u| u.running) {
                return Err(conflict(format!(
                    "unable to delete {} (cannot be forced) - image is being used by running container {}",
                    short(&image.id),
                    short(&user.container)
                )));
            }
            if let Some(user) = users.first().filter(|_| !force) {
                return Err(conflict(format!(
                    "unable to delete {} (must be forced) - image is being used by stopped container {}",
                    short(&image.id),
                    short(&user.container)
                )));
            }
            if image.names.len() > 1 && !force {
                return Err(conflict(format!(
                    "unable to delete {} (must be forced) - image is referenced in multiple repositories",
                    short(&image.id)
                )));
            }
            image.names.clone()
        }
    };
    let in_use = !users.is_empty();
    let mut deleted = false;
    store.change_index(|images| {
        for rec in images.values_mut().filter(|rec| rec.config == image.id) {
            rec.names.retain(|n| !untag.contains(n));
        }
        let named = images
            .values()
            .any(|rec| rec.config == image.id && !rec.names.is_empty());
        if !named && !in_use {
            images.retain(|_, rec| rec.config != image.id);
            deleted = true;
        }
    })?;
    for n in untag {
        done.push(Removal::Untagged(super::store::familiar_name(&n)));
    }
    if deleted {
        done.push(Removal::Deleted(image.id.clone()));
    }
    record(store, &done, &image.id);
    if deleted {
        collect_garbage(store)?;
    }
    Ok(done)
}

/// `tag SOURCE TARGET`: one more name for an image.
pub fn tag(store: &ImageStore, source: &str, target: &str) -> Result<(), ImageError> {
    let image = store.resolve(source)?;
    let target = Reference::parse(target)?;
    if target.digest.is_some() {
        return Err(ImageError::InvalidReference {
            reference: target.full(),
            reason: "a tag cannot carry a digest",
        });
    }
    let corrupt = |e: super::digest::BadDigest| ImageError::Corrupt {
        image: image.manifest_digest.clone(),
        what: "image index",
        reason: e.to_string(),
    };
    let manifest = Digest::parse(&image.manifest_digest).map_err(corrupt)?;
    let config = Digest::parse(&image.id).map_err(corrupt)?;
    store.add_image(&manifest, &config, Some(&target), None)?;
    let name = super::store::familiar_name(&target.full());
    crate::events::emit(
        store.root(),
        Kind::Image,
        "tag",
        &image.id,
        &[("name", &name)],
    );
    Ok(())
}

/// Records removals in the event journal: `untag` of each name, `delete` of the image.
fn record(store: &ImageStore, done: &[Removal], id: &str) {
    for r in done {
        let (action, name) = match r {
            Removal::Untagged(n) => ("untag", n.as_str()),
            Removal::Deleted(d) => ("delete", d.as_str()),
        };
        let id = if matches!(r, Removal::Deleted(_)) {
            name
        } else {
            id
        };
        crate::events::emit(store.root(), Kind::Image, action, id, &[("name", name)]);
    }
}

/// `image prune [-a]`: removes images without a name (all unused ones with `all`) whose
/// ID is not in `in_use`; returns what it removed and the bytes freed on disk.
pub fn prune(
    store: &ImageStore,
    in_use: &BTreeSet<String>,
    all: bool,
) -> Result<(Vec<Removal>, u64), ImageError> {
    let mut removed = Vec::new();
    store.change_index(|images| {
        let mut going = BTreeSet::new();
        for rec in images.values() {
            if going.contains(&rec.config) || in_use.contains(&rec.config) {
                continue;
            }
            let named = images
                .values()
                .any(|other| other.config == rec.config && !other.names.is_empty());
            if all || !named {
                going.insert(rec.config.clone());
            }
        }
        for id in &going {
            for rec in images.values().filter(|rec| rec.config == *id) {
                for n in &rec.names {
                    removed.push(Removal::Untagged(super::store::familiar_name(n)));
                }
            }
            removed.push(Removal::Deleted(id.clone()));
        }
        images.retain(|_, rec| !going.contains(&rec.config));
    })?;
    for r in &removed {
        if let Removal::Deleted(id) = r {
            record(store, std::slice::from_ref(r), id);
        }
    }
    let freed = collect_garbage(store)?;
    Ok((removed, freed))
}

/// Removes every blob and layer no image in the index refers to; returns bytes freed.
/// Staging directories of dead writers go too.
pub fn collect_garbage(store: &ImageStore) -> Result<u64, ImageError> {
    let lock_path = store.root().locks_dir().join("gc");
    let _exclusive = FileLock::acquire(&lock_path).map_err(|e| ImageError::io(&lock_path, e))?;
    store.sweep_staging();
    let mut keep_blobs = BTreeSet::new();
    let mut keep_layers = BTreeSet::new();
    for (manifest_digest, rec) in store.list()? {
        keep_blobs.insert(hex(&manifest_digest));
        keep_blobs.insert(hex(&rec.config));
        // An image whose manifest or config cannot be read keeps what it names; its layers
        // can't be told apart, so collection stops rather than guess. Each manifest keeps
        // its own layer blobs (two manifests of one image may compress them differently).
        let image = store.resolve(&rec.config)?;
        for desc in store.manifest(&manifest_digest)?.layers() {
            keep_blobs.insert(hex(desc.digest().as_ref()));
        }
        for chain in &image.chain_ids {
            keep_layers.insert(chain.hex().to_string());
        }
    }
    let mut freed = 0;
    freed += remove_unlisted(&store.root().blobs_dir(), &keep_blobs, store)?;
    freed += remove_unlisted(&store.root().layers_dir(), &keep_layers, store)?;
    for entry in std::fs::read_dir(store.root().locks_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(h) = name.strip_prefix("layer-") {
            if !keep_layers.contains(h) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(freed)
}

fn hex(digest: &str) -> String {
    digest.strip_prefix("sha256:").unwrap_or(digest).to_string()
}

/// Removes the entries of `dir` not in `keep`; each goes by a rename into `tmp/` first so
/// that nobody ever sees half of it.
fn remove_unlisted(
    dir: &std::path::Path,
    keep: &BTreeSet<String>,
    store: &ImageStore,
) -> Result<u64, ImageError> {
    let mut freed = 0;
    let entries = std::fs::read_dir(dir).map_err(|e| ImageError::io(dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if keep.contains(&name) {
            continue;
        }
        let path = entry.path();
        freed += crate::fsutil::disk_usage(&path);
        let doomed = store.tmp_dir().join(format!("removing-{name}"));
        std::fs::rename(&path, &doomed).map_err(|e| ImageError::io(&path, e))?;
        remove_any(&doomed).map_err(|e| ImageError::io(&doomed, e))?;
    }
    Ok(freed)
}
