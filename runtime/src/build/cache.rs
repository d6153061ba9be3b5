//! The layer cache, keyed as Docker's legacy builder and buildah `--layers` key theirs:
//! the parent image's ID, the instruction with its arguments expanded, and for COPY/ADD a
//! checksum of the sources' names, modes, sizes, link targets and contents (not times).
//! A key names the image the step made; the images are the store's own (untagged,
//! each with its parent recorded), so `image prune` reclaims them and an entry whose
//! image is gone is a miss.

use crate::fsutil::{write_json_atomic, FileLock};
use crate::image::{ImageError, ImageStore};
use crate::root::StateRoot;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// `<root>/cache/build.json`: key -> image ID.
pub struct Cache {
    path: PathBuf,
    lock: PathBuf,
}

impl Cache {
    pub fn new(root: &StateRoot) -> Cache {
        Cache {
            path: root.cache_dir().join("build.json"),
            lock: root.locks_dir().join("build-cache"),
        }
    }

    /// The key of a step: its parts, each ended by a NUL.
    pub fn key(parts: &[&str]) -> String {
        let mut sum = Sha256::new();
        for p in parts {
            sum.update(p.as_bytes());
            sum.update([0]);
        }
        hex::encode(sum.finalize())
    }

    fn read(&self) -> BTreeMap<String, String> {
        std::fs::read(&self.path)
            .ok()
            .and_then(|d| serde_json::from_slice(&d).ok())
            .unwrap_or_default()
    }

    /// The image a step made before, if recorded.
    pub fn get(&self, key: &str) -> Option<String> {
        self.read().remove(key)
    }

    /// Records that `key` made `image`; entries whose image `exists` denies are dropped.
    pub fn put(
        &self,
        key: &str,
        image: &str,
        exists: impl Fn(&str) -> bool,
    ) -> std::io::Result<()> {
        let _lock = FileLock::acquire(&self.lock)?;
        let mut entries = self.read();
        entries.retain(|_, id| exists(id));
        entries.insert(key.to_string(), image.to_string());
        std::fs::create_dir_all(self.path.parent().expect("a file under cache/"))?;
        write_json_atomic(&self.path, &entries)
    }

    /// `builder prune`: forgets every entry and removes the images they name that have no
    /// name and no container (`in_use`); the IDs removed and the bytes freed.
    pub fn prune(
        &self,
        store: &ImageStore,
        in_use: &BTreeSet<String>,
    ) -> Result<(Vec<String>, u64), ImageError> {
        let _lock = FileLock::acquire(&self.lock).map_err(|e| ImageError::io(&self.lock, e))?;
        let cached: BTreeSet<String> = self.read().into_values().collect();
        let mut removed = BTreeSet::new();
        store.change_index(|images| {
            let named: BTreeSet<String> = images
                .values()
                .filter(|r| !r.names.is_empty())
                .map(|r| r.config.clone())
                .collect();
            images.retain(|_, rec| {
                let goes = cached.contains(&rec.config)
                    && !named.contains(&rec.config)
                    && !in_use.contains(&rec.config);
                if goes {
                    removed.insert(rec.config.clone());
                }
                !goes
            });
        })?;
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(ImageError::io(&self.path, e))
            }
            _ => {}
        }
        let freed = crate::image::remove::collect_garbage(store)?;
        Ok((removed.into_iter().collect(), freed))
    }
}
