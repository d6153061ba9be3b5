//! The volumes folder: one directory per volume, its record, creation, listing and
//! removal. Every change is made under one lock (`locks/volumes.lock`), which is also held
//! by whoever reads which containers use a volume, so a volume in use is never removed.

use super::{name, VolumeError};
use crate::fsutil::FileLock;
use crate::root::{create_private_dir, StateRoot};
use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The record of a volume, `volume.json`.
const RECORD: &str = "volume.json";
/// The directory containers bind.
const DATA: &str = "_data";
/// The ext4 image a VM attaches.
const DISK: &str = "disk.ext4";
/// Mode of `_data`: the root of the mount inside a container, traversable by its users.
const DATA_MODE: u32 = 0o755;
/// Prefix of a volume folder being made or removed (never a valid name: it starts with `.`).
const SCRATCH_PREFIX: &str = ".";

/// Which containers use which volume: volume name -> `<id> (<name>)` of each container.
pub type Users = BTreeMap<String, Vec<String>>;

/// Where a volume's data lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `_data`, bound into containers.
    #[default]
    Directory,
    /// `disk.ext4`, attached to VMs (written by guests, never mounted on the host).
    Disk,
}

/// `volume.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// The volume's name.
    pub name: String,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// `--label` values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Made for one container (an image's VOLUME, a `-v /path` without a name).
    #[serde(default)]
    pub anonymous: bool,
    /// Where its data lives.
    #[serde(default)]
    pub kind: Kind,
}

/// One volume of the store.
#[derive(Debug, Clone)]
pub struct Volume {
    /// Its record.
    pub record: Record,
    /// Its folder, `volumes/<name>`.
    pub dir: PathBuf,
}

impl Volume {
    /// The directory containers bind.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join(DATA)
    }
    /// The volume as `docker volume inspect` and the API show it.
    pub fn docker_json(&self) -> serde_json::Value {
        let created = crate::timefmt::parse_rfc3339(&self.record.created_at)
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
            .unwrap_or_else(|| self.record.created_at.clone());
        let mut labels = serde_json::Map::new();
        for (k, val) in &self.record.labels {
            labels.insert(k.clone(), val.clone().into());
        }
        if self.record.anonymous {
            labels.insert("com.docker.volume.anonymous".into(), "".into());
        }
        serde_json::json!({
            "CreatedAt": created,
            "Driver": "local",
            "Labels": labels,
            "Mountpoint": self.mountpoint().display().to_string(),
            "Name": self.record.name,
            "Options": {},
            "Scope": "local",
        })
    }
    /// The disk image VMs attach.
    pub fn disk_path(&self) -> PathBuf {
        self.dir.join(DISK)
    }
    /// Where its data is (Docker's `Mountpoint`): `_data`, or the disk image of a VM volume.
    pub fn mountpoint(&self) -> PathBuf {
        match self.record.kind {
            Kind::Directory => self.data_dir(),
            Kind::Disk => self.disk_path(),
        }
    }
    /// Bytes it holds on the host: its files, or the blocks its (sparse) disk image uses.
    pub fn size(&self) -> u64 {
        match self.record.kind {
            Kind::Directory => crate::fsutil::disk_usage(&self.data_dir()),
            Kind::Disk => {
                std::fs::symlink_metadata(self.disk_path()).map_or(0, |m| m.blocks() * 512)
            }
        }
    }
    /// `_data` as a real directory: opened from the volume's folder with no symbolic link
    /// followed anywhere, so a `_data` replaced by a link to a host directory is refused
    /// instead of being bound into a container.
    pub fn check_data_dir(&self) -> Result<(), VolumeError> {
        let folder = crate::linux::inroot::Root::open(&self.dir)
            .map_err(|e| VolumeError::io(&self.dir, e))?;
        folder
            .real_dir(Path::new(DATA))
            .map(drop)
            .map_err(|e| VolumeError::Unusable {
                name: self.record.name.clone(),
                reason: format!(
                    "its data directory {} is not a plain directory: {e}",
                    self.data_dir().display()
                ),
            })
    }
}

/// The volumes of one state directory.
#[derive(Debug, Clone)]
pub struct VolumeStore {
    dir: PathBuf,
    lock: PathBuf,
    events: crate::events::Journal,
}

/// The store with its lock held: every change goes through here.
pub struct Locked {
    store: VolumeStore,
    _lock: FileLock,
}

impl VolumeStore {
    /// The volumes of `root`.
    pub fn new(root: &StateRoot) -> VolumeStore {
        VolumeStore {
            dir: root.volumes_dir(),
            lock: root.locks_dir().join("volumes.lock"),
            events: crate::events::Journal::of(root),
        }
    }

    /// Takes the volumes' lock (blocking) for a change, or for reading which are in use.
    pub fn lock(&self) -> Result<Locked, VolumeError> {
        let lock = FileLock::acquire(&self.lock).map_err(|e| VolumeError::io(&self.lock, e))?;
        Ok(Locked {
            store: self.clone(),
            _lock: lock,
        })
    }

    /// The volume `name`.
    pub fn get(&self, name: &str) -> Result<Volume, VolumeError> {
        if name::check(name).is_err() {
            return Err(VolumeError::NotFound(name.to_string()));
        }
        let dir = self.dir.join(name);
        let bytes = match std::fs::read(dir.join(RECORD)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(VolumeError::NotFound(name.to_string()))
            }
            Err(e) => return Err(VolumeError::io(&dir.join(RECORD), e)),
        };
        let record: Record =
            serde_json::from_slice(&bytes).map_err(|e| VolumeError::io(&dir.join(RECORD), e))?;
        if record.name != name {
            return Err(VolumeError::io(
                &dir.join(RECORD),
                "the record names another volume",
            ));
        }
        Ok(Volume { record, dir })
    }

    /// Every volume, by name.
    pub fn list(&self) -> Vec<Volume> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut all: Vec<Volume> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(String::from))
            .filter(|n| !n.starts_with(SCRATCH_PREFIX))
            .filter_map(|n| self.get(&n).ok())
            .collect();
        all.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        all
    }
}

impl Locked {
    /// The volume `name`, made (empty) if missing; the flag says whether it was made now.
    /// `None` makes an anonymous volume. An existing volume is returned as it is, as
    /// `docker volume create` does.
    pub fn create(
        &self,
        wanted: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> Result<(Volume, bool), VolumeError> {
        let (name, anonymous) = match wanted {
            Some(n) => {
                name::check(n).map_err(|reason| VolumeError::InvalidName {
                    name: n.to_string(),
                    reason,
                })?;
                (n.to_string(), false)
            }
            None => (name::anonymous(), true),
        };
        match self.store.get(&name) {
            Ok(v) => return Ok((v, false)),
            Err(VolumeError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        create_private_dir(&self.store.dir).map_err(|e| VolumeError::io(&self.store.dir, e))?;
        // Made aside and renamed into place: a volume is whole or absent.
        let scratch = self
            .store
            .dir
            .join(format!("{SCRATCH_PREFIX}new-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        let made = (|| -> std::io::Result<Record> {
            create_private_dir(&scratch)?;
            std::fs::DirBuilder::new()
                .mode(DATA_MODE)
                .create(scratch.join(DATA))?;
            let record = Record {
                name: name.clone(),
                created_at: crate::timefmt::rfc3339(std::time::SystemTime::now()),
                labels: labels.clone(),
                anonymous,
                kind: Kind::Directory,
            };
            crate::fsutil::write_json_atomic(&scratch.join(RECORD), &record)?;
            std::fs::rename(&scratch, self.store.dir.join(&name))?;
            Ok(record)
        })();
        match made {
            Ok(record) => {
                self.event("create", &name);
                Ok((
                    Volume {
                        record,
                        dir: self.store.dir.join(&name),
                    },
                    true,
                ))
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&scratch);
                Err(VolumeError::io(&self.store.dir.join(&name), e))
            }
        }
    }

    /// The volume `name` (see [`VolumeStore::get`]).
    pub fn get(&self, name: &str) -> Result<Volume, VolumeError> {
        self.store.get(name)
    }

    /// Removes volume `name` unless a container uses it (`users`, read under this lock).
    pub fn remove(&self, name: &str, users: &Users) -> Result<(), VolumeError> {
        let volume = self.store.get(name)?;
        if let Some(holders) = users.get(name).filter(|h| !h.is_empty()) {
            return Err(VolumeError::InUse {
                name: name.to_string(),
                users: holders.clone(),
            });
        }
        self.delete(&volume)?;
        self.event("destroy", name);
        Ok(())
    }

    fn event(&self, action: &str, name: &str) {
        let event = crate::events::Event::now(
            crate::events::Kind::Volume,
            action,
            name,
            &[("driver", "local")],
        );
        self.store.events.append(&event);
    }

    /// Removes the unused volumes: anonymous ones, or every one with `all`. Returns each
    /// removed volume's name and the bytes it held.
    pub fn prune(&self, all: bool, users: &Users) -> Vec<(String, u64)> {
        self.store
            .list()
            .into_iter()
            .filter(|v| all || v.record.anonymous)
            .filter(|v| users.get(&v.record.name).is_none_or(Vec::is_empty))
            .filter_map(|v| {
                let size = v.size();
                self.delete(&v).ok()?;
                self.event("destroy", &v.record.name);
                Some((v.record.name.clone(), size))
            })
            .collect()
    }

    /// Makes directory volume `volume` a VM's disk: an ext4 image holding a copy of
    /// `_data`, which goes (its copy is the volume's data from now on).
    pub fn make_disk(&self, volume: &mut Volume) -> Result<(), VolumeError> {
        if volume.record.kind == Kind::Disk {
            return Ok(());
        }
        volume.check_data_dir()?;
        let tmp = volume.dir.join(format!("{DISK}.tmp"));
        super::disk::format(&volume.data_dir(), &tmp)?;
        std::fs::rename(&tmp, volume.disk_path())
            .map_err(|e| VolumeError::io(&volume.disk_path(), e))?;
        volume.record.kind = Kind::Disk;
        let record = volume.dir.join(RECORD);
        crate::fsutil::write_json_atomic(&record, &volume.record)
            .map_err(|e| VolumeError::io(&record, e))?;
        let _ = std::fs::remove_dir_all(volume.data_dir());
        Ok(())
    }

    /// Deletes a volume's folder: renamed aside first, so it is gone at once.
    fn delete(&self, volume: &Volume) -> Result<(), VolumeError> {
        let doomed = self
            .store
            .dir
            .join(format!("{SCRATCH_PREFIX}removing-{}", volume.record.name));
        std::fs::rename(&volume.dir, &doomed).map_err(|e| VolumeError::io(&volume.dir, e))?;
        std::fs::remove_dir_all(&doomed).map_err(|e| VolumeError::io(&doomed, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, VolumeStore) {
        let dir = tempfile::tempdir().unwrap();
        let root = StateRoot::open(&dir.path().join("root")).unwrap();
        (dir, VolumeStore::new(&root))
    }

    #[test]
    fn a_volume_is_made_once_and_removed_unless_in_use() {
        let (_d, store) = store();
        let locked = store.lock().unwrap();
        let (v, made) = locked.create(Some("data"), &BTreeMap::new()).unwrap();
        assert!(made && v.data_dir().is_dir() && !v.record.anonymous);
        let (_, again) = locked.create(Some("data"), &BTreeMap::new()).unwrap();
        assert!(!again, "an existing volume is returned, not made anew");
        let users = Users::from([("data".to_string(), vec!["abc (web)".to_string()])]);
        let err = locked.remove("data", &users).unwrap_err().to_string();
        assert!(err.contains("in use") && err.contains("web"), "{err}");
        locked.remove("data", &Users::new()).unwrap();
        assert!(matches!(store.get("data"), Err(VolumeError::NotFound(_))));
        assert!(store.list().is_empty());
    }

    #[test]
    fn prune_takes_unused_anonymous_volumes_and_with_all_named_ones() {
        let (_d, store) = store();
        let locked = store.lock().unwrap();
        let (anon, _) = locked.create(None, &BTreeMap::new()).unwrap();
        let (used, _) = locked.create(None, &BTreeMap::new()).unwrap();
        locked.create(Some("named"), &BTreeMap::new()).unwrap();
        let users = Users::from([(used.record.name.clone(), vec!["c".to_string()])]);
        let pruned: Vec<String> = locked
            .prune(false, &users)
            .into_iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(pruned, vec![anon.record.name.clone()]);
        let pruned: Vec<String> = locked
            .prune(true, &users)
            .into_iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(pruned, vec!["named".to_string()]);
        assert_eq!(store.list().len(), 1);
    }

    #[test]
    fn names_that_are_paths_make_nothing() {
        let (_d, store) = store();
        let locked = store.lock().unwrap();
        for bad in ["../x", "a/b", "..", "/etc"] {
            assert!(locked.create(Some(bad), &BTreeMap::new()).is_err(), "{bad}");
        }
        assert!(!store.dir.exists() || std::fs::read_dir(&store.dir).unwrap().next().is_none());
    }

    #[test]
    fn a_data_directory_replaced_by_a_symlink_is_refused() {
        let (_d, store) = store();
        let locked = store.lock().unwrap();
        let (v, _) = locked.create(Some("data"), &BTreeMap::new()).unwrap();
        v.check_data_dir().unwrap();
        let host = tempfile::tempdir().unwrap();
        std::fs::remove_dir(v.data_dir()).unwrap();
        std::os::unix::fs::symlink(host.path(), v.data_dir()).unwrap();
        assert!(v.check_data_dir().is_err());
    }
}
