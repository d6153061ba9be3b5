//! The server's memory of each container's spec mounts, for `GET /containers/json`: a
//! row needs the mounts of the container's `config.json` (20 KiB, most of it the seccomp
//! profile), which seldom changes. Each file is parsed again only when its identity,
//! size or modification time changed, so a list of many containers costs a `stat` per
//! row instead of a read and a parse.

use serde_json::Value;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What tells one version of a file from another.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

/// Parsed spec mounts by `config.json` path.
#[derive(Default)]
pub struct Cache {
    entries: Mutex<HashMap<PathBuf, (Stamp, Value)>>,
}

impl Cache {
    /// `{"mounts": [...]}` of the spec at `path` (Null when it cannot be read).
    pub fn mounts(&self, path: &Path) -> Value {
        let Ok(meta) = std::fs::metadata(path) else {
            return Value::Null;
        };
        let stamp = Stamp::of(&meta);
        if let Some((seen, value)) = self.lock().get(path) {
            if *seen == stamp {
                return value.clone();
            }
        }
        let value = read(path);
        // A file replaced while it was read is stamped with what was seen before the
        // read: the next list reads it again.
        self.lock()
            .insert(path.to_path_buf(), (stamp, value.clone()));
        value
    }

    /// Forgets the specs of containers that are gone (`keep` says which paths remain).
    pub fn retain(&self, keep: impl Fn(&Path) -> bool) {
        self.lock().retain(|p, _| keep(p));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, (Stamp, Value)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads only the spec's mounts: the rest is skipped by the parser, not built into values.
fn read(path: &Path) -> Value {
    #[derive(serde::Deserialize)]
    struct SpecMounts {
        #[serde(default)]
        mounts: Value,
    }
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<SpecMounts>(&b).ok())
        .map_or(Value::Null, |m| serde_json::json!({ "mounts": m.mounts }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_spec_is_read_again_and_an_unchanged_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"mounts":[{"destination":"/a"}],"other":1}"#).unwrap();
        let cache = Cache::default();
        assert_eq!(cache.mounts(&path)["mounts"][0]["destination"], "/a");
        // Replaced by a rename, as state files are: a new inode, so read again.
        let next = dir.path().join("next.json");
        std::fs::write(&next, r#"{"mounts":[{"destination":"/b"}]}"#).unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(cache.mounts(&path)["mounts"][0]["destination"], "/b");
        cache.retain(|_| false);
        assert!(cache.lock().is_empty());
        std::fs::remove_file(&path).unwrap();
        assert!(cache.mounts(&path).is_null());
    }
}
