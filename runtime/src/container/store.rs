//! The container store: `containers/<id>/` folders, their state files, and the name
//! reservations in `names/`. A name is taken by creating `names/<name>` with O_EXCL, so two
//! CLIs can never both get it.

use super::id;
use super::state::{Remnant, State};
use super::ContainerError;
use crate::fsutil::{write_replacing, FileLock};
use crate::root::{create_private_dir, set_mode, StateRoot, PRIVATE_DIR, PRIVATE_FILE};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// Files and folders of one container.
#[derive(Debug, Clone)]
pub struct ContainerDir {
    /// `containers/<id>`.
    pub dir: PathBuf,
}

impl ContainerDir {
    /// The OCI runtime spec.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    /// `state.json`.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    /// The lock serialising state changes.
    pub fn lock(&self) -> PathBuf {
        self.dir.join("lock")
    }
    /// overlayfs upper (the container's writable layer).
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    /// overlayfs work directory.
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    /// The root mount point (mounted only inside the container's mount namespace).
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    /// The start gate.
    pub fn exec_fifo(&self) -> PathBuf {
        self.dir.join("exec.fifo")
    }
    /// json-lines log of a detached container's output.
    pub fn log(&self) -> PathBuf {
        self.dir.join("ctr.log")
    }
    /// The overlay of this container over image layers `lower` (lowest first).
    pub fn overlay_layers(&self, lower: Vec<PathBuf>) -> crate::linux::rootfs::OverlayLayers {
        crate::linux::rootfs::OverlayLayers {
            lower,
            upper: self.upper(),
            work: self.work(),
            attach_dir: self.dir.join("lower"),
        }
    }

    /// Files bind-mounted into the container (/etc/hostname, /etc/hosts).
    pub fn etc_file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Makes a folder from before the store was private private: the folder itself, and
    /// its records, logs and sockets. The /etc files stay readable (the container's own
    /// non-root users read them through their bind mounts); the folders below keep theirs
    /// (the writable layer's root is the container's `/`).
    pub fn make_private(&self) -> std::io::Result<()> {
        use std::os::unix::fs::FileTypeExt;
        set_mode(&self.dir, PRIVATE_DIR)?;
        for entry in std::fs::read_dir(&self.dir)?.flatten() {
            let kind = entry.file_type()?;
            let name = entry.file_name();
            let etc = ETC_FILES
                .iter()
                .any(|f| name.as_encoded_bytes() == f.as_bytes());
            if (kind.is_file() && !etc) || kind.is_socket() {
                set_mode(&entry.path(), PRIVATE_FILE)?;
            }
        }
        Ok(())
    }
}

/// Whether `name` is a full container ID (64 lower-case hex digits), the only names of
/// container folders.
fn is_full_id(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The files of a container's folder that are bind-mounted into it as /etc/NAME.
pub const ETC_FILES: [&str; 3] = ["hostname", "hosts", "resolv.conf"];

/// Handle on `containers/` and `names/` of a state root.
#[derive(Debug, Clone)]
pub struct ContainerStore {
    root: StateRoot,
}

impl ContainerStore {
    /// The store of `root`.
    pub fn new(root: &StateRoot) -> Self {
        ContainerStore { root: root.clone() }
    }

    /// The state root.
    pub fn root(&self) -> &StateRoot {
        &self.root
    }

    /// The folder of container `id`.
    pub fn dir(&self, id: &str) -> ContainerDir {
        ContainerDir {
            dir: self.root.containers_dir().join(id),
        }
    }

    /// Makes the folder of a new container `id`, private to root.
    pub fn create_dir(&self, id: &str) -> Result<ContainerDir, ContainerError> {
        let dir = self.dir(id);
        create_private_dir(&dir.dir).map_err(|e| ContainerError::io(&dir.dir, e))?;
        Ok(dir)
    }

    /// Makes every container's folder private (a store from before that rule); only real
    /// folders named by a container ID, never what a symlink points at.
    pub fn make_private(&self) -> std::io::Result<()> {
        for id in self.ids() {
            let dir = self.dir(&id);
            if std::fs::symlink_metadata(&dir.dir).is_ok_and(|m| m.is_dir()) {
                dir.make_private()?;
            }
        }
        Ok(())
    }

    /// Takes `name` for `id` atomically.
    pub fn reserve_name(&self, name: &str, id: &str) -> Result<(), ContainerError> {
        if !id::valid_name(name) {
            return Err(ContainerError::InvalidArgument(format!(
                "invalid container name {name:?}: a name is 2 to 128 characters matching [a-zA-Z0-9][a-zA-Z0-9_.-]+"
            )));
        }
        // Other members of its networks resolve it by name through their hosts files.
        crate::net::dns_name::check(name).map_err(|source| {
            ContainerError::invalid(crate::net::dns_name::InvalidName {
                what: format!("invalid container name {name:?}"),
                source,
            })
        })?;
        let path = self.root.names_dir().join(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PRIVATE_FILE)
            .open(&path)
        {
            Ok(mut f) => f
                .write_all(id.as_bytes())
                .map_err(|e| ContainerError::io(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                Err(ContainerError::NameInUse {
                    name: name.to_string(),
                    id: holder,
                })
            }
            Err(e) => Err(ContainerError::io(&path, e)),
        }
    }

    /// Releases `name` (only if `id` holds it).
    pub fn release_name(&self, name: &str, id: &str) {
        let path = self.root.names_dir().join(name);
        if std::fs::read_to_string(&path).is_ok_and(|holder| holder == id) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Takes the container's lock.
    pub fn lock(&self, id: &str) -> Result<FileLock, ContainerError> {
        let path = self.dir(id).lock();
        FileLock::acquire(&path).map_err(|e| ContainerError::io(&path, e))
    }

    /// Reads the recorded state.
    pub fn load(&self, id: &str) -> Result<State, ContainerError> {
        let path = self.dir(id).state();
        let data = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ContainerError::NotFound(id.to_string()),
            _ => ContainerError::io(&path, e),
        })?;
        serde_json::from_slice(&data)
            .map_err(|e| ContainerError::io(&path, std::io::Error::other(e)))
    }

    /// The state as it is now (see [`State::observed`]). When the processes contradict the
    /// record (it says running or creating, they are gone), the record is read once more:
    /// the monitor or creator writes its last word *before* it exits, so it may have done
    /// so between the first read and the liveness check.
    pub fn observe(&self, id: &str) -> Result<State, ContainerError> {
        let recorded = self.load(id)?;
        let seen = recorded.observed();
        if seen.status == recorded.status {
            return Ok(seen);
        }
        Ok(self.load(id)?.observed())
    }

    /// Writes the state atomically (not durably: see [`write_replacing`]).
    pub fn save(&self, state: &State) -> Result<(), ContainerError> {
        let path = self.dir(&state.id).state();
        let data = serde_json::to_vec(state)
            .map_err(|e| ContainerError::io(&path, std::io::Error::other(e)))?;
        write_replacing(&path, &data, false).map_err(|e| ContainerError::io(&path, e))
    }

    /// Applies `change` to the recorded state under the container's lock. Returns None when
    /// the container was removed meanwhile (nothing to record).
    pub fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut State),
    ) -> Result<Option<State>, ContainerError> {
        let _lock = match self.lock(id) {
            Ok(l) => l,
            Err(_) if !self.dir(id).dir.is_dir() => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut state = match self.load(id) {
            Ok(s) => s,
            Err(ContainerError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        change(&mut state);
        self.save(&state)?;
        Ok(Some(state))
    }

    /// IDs of every container.
    pub fn ids(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.root.containers_dir()) else {
            return vec![];
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| is_full_id(n))
            .collect()
    }

    /// Every container's observed state, newest first. A container whose record is there
    /// but does not parse is listed too, as a dead stand-in ([`State::unreadable`]); one
    /// without a record yet (being created) is not.
    pub fn list(&self) -> Vec<State> {
        let mut all: Vec<State> = self
            .ids()
            .iter()
            .filter_map(|id| match self.observe(id) {
                Ok(s) => Some(s),
                Err(_) => self.unreadable_stand_in(id),
            })
            .collect();
        all.sort_by(|a, b| b.created.cmp(&a.created));
        all
    }

    /// Why the record of `id` cannot be read: Some when state.json exists and does not
    /// parse (torn by a power loss, or from another version); None when it parses or is
    /// not written yet.
    pub fn unreadable_record(&self, id: &str) -> Option<String> {
        let data = std::fs::read(self.dir(id).state()).ok()?;
        let err = serde_json::from_slice::<State>(&data).err()?;
        Some(if data.is_empty() {
            "the file is empty".to_string()
        } else {
            err.to_string()
        })
    }

    /// What can still be read of the unreadable record of `id`; its name from `names/`
    /// when the record does not give it.
    pub fn remnant(&self, id: &str) -> Remnant {
        let data = std::fs::read(self.dir(id).state()).unwrap_or_default();
        let mut remnant = Remnant::parse(&data);
        if remnant.name.is_none() {
            remnant.name = self.names_of(id).into_iter().next();
        }
        remnant
    }

    /// The names reserved for `id` in `names/` (read one by one: only for records that
    /// cannot say it themselves).
    pub fn names_of(&self, id: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.root.names_dir()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| std::fs::read(e.path()).is_ok_and(|holder| holder == id.as_bytes()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    }

    fn unreadable_stand_in(&self, id: &str) -> Option<State> {
        let cause = self.unreadable_record(id)?;
        let created = std::fs::metadata(self.dir(id).dir)
            .and_then(|m| m.modified())
            .map(crate::timefmt::rfc3339)
            .unwrap_or_default();
        Some(State::unreadable(id, cause, self.remnant(id), created))
    }

    /// Finds a container by name, full ID or unique ID prefix.
    pub fn resolve(&self, wanted: &str) -> Result<String, ContainerError> {
        let wanted = wanted.strip_prefix('/').unwrap_or(wanted);
        if !wanted.is_empty() && !wanted.contains('/') && wanted != "." && wanted != ".." {
            if let Ok(id) = std::fs::read_to_string(self.root.names_dir().join(wanted)) {
                // A name record holds a full ID; anything else must never become a path.
                if is_full_id(&id) && self.dir(&id).dir.is_dir() {
                    return Ok(id);
                }
            }
        }
        if wanted.is_empty() || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ContainerError::NotFound(wanted.to_string()));
        }
        let hits: Vec<String> = self
            .ids()
            .into_iter()
            .filter(|id| id.starts_with(wanted))
            .collect();
        match hits.len() {
            0 => Err(ContainerError::NotFound(wanted.to_string())),
            1 => Ok(hits.into_iter().next().expect("one hit")),
            _ => Err(ContainerError::Ambiguous(wanted.to_string())),
        }
    }
}
