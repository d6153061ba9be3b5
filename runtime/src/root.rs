//! The state directory (`--root`, `CAPSA_ROOT`, default `/var/lib/capsa`) and the paths in it.
//!
//! One struct owns the layout so that no other module builds a path by hand.
//!
//! The state directory is private to root ([`PRIVATE_DIR`]): image layers and containers'
//! writable layers hold whatever images and workloads put there (setuid-root binaries,
//! files with capabilities, device nodes) and containers' records hold their `-e` values,
//! so no other user may as much as traverse into it (Docker's CVE-2021-41091). A store made
//! before this rule is made private the first time it is opened; afterwards that check is
//! one `stat`.
//!
//! Before anything is read or written in it, the directory and every folder above it must
//! be root's alone ([`check_only_root_controls`]): a store another user can rename or
//! refill would hand that user the records root acts on (a `config.json` that bind-mounts
//! `/`). A path that is not a store is never changed: a directory that holds other files
//! and no capsa store (`--root /etc`, `--root .`) is refused, as is a file.

use crate::fsutil::{check_only_root_controls, InsecurePath};
use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Default state directory, as Docker uses /var/lib/docker.
pub const DEFAULT_ROOT: &str = "/var/lib/capsa";
/// Mode of the state directory and of the folders capsa makes in it.
pub const PRIVATE_DIR: u32 = 0o700;
/// Mode of records, logs and sockets in it.
pub const PRIVATE_FILE: u32 = 0o600;
/// Mode bits that give other users (group or others) any access.
const SHARED_BITS: u32 = 0o077;

/// Every name capsa gives an entry directly in the state directory (see the accessors
/// below, and `vm`, `bench`, `networks`, the lock files of the network and user-namespace
/// pools). Only these are ever made private, and a directory holding anything else is a
/// store only when it has [`STORE_CORE`].
const OWN_ENTRIES: [&str; 20] = [
    "events",
    "blobs",
    "layers",
    "containers",
    "names",
    "cache",
    "tmp",
    "locks",
    "kernel",
    "certs.d",
    "vm",
    "bench",
    "networks",
    "volumes",
    "images.json",
    "images.lock",
    "auth.json",
    "daemon.json",
    "network.lock",
    "userns.lock",
];

/// The folders every capsa store has had from the first version: a directory with these is
/// a store even if it holds other entries (a file system's `lost+found`, say).
const STORE_CORE: [&str; 3] = ["blobs", "layers", "containers"];

/// Why a state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// It, or a folder above it, could be changed by another user than root.
    #[error(transparent)]
    Insecure(#[from] InsecurePath),
    /// It exists and is not a directory.
    #[error("{} is not a directory", .0.display())]
    NotDirectory(PathBuf),
    /// It is a directory holding other things and no capsa store.
    #[error("{} holds {entry:?} and no capsa store; refusing to make a store there (name an empty or new directory)", path.display())]
    NotAStore {
        /// The directory.
        path: PathBuf,
        /// One entry that is not capsa's.
        entry: String,
    },
    /// A file-system operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RootError + '_ {
    move |source| RootError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The on-disk layout described in DESIGN.md.
#[derive(Debug, Clone)]
pub struct StateRoot {
    dir: PathBuf,
}

impl StateRoot {
    /// Opens (creating if needed) the state directory at `dir`, after checking that only
    /// root controls it and that it is (or can become) a capsa store. The path is resolved
    /// once (symlinks and `..`), and the resolved one is used from then on.
    pub fn open(dir: &Path) -> Result<StateRoot, RootError> {
        let dir = real_path(dir)?;
        check_only_root_controls(&dir)?;
        let root = StateRoot { dir };
        match std::fs::symlink_metadata(&root.dir) {
            Ok(meta) if !meta.is_dir() => return Err(RootError::NotDirectory(root.dir)),
            Ok(meta) => {
                root.check_is_store()?;
                if meta.permissions().mode() & SHARED_BITS != 0 {
                    root.make_private().map_err(io_err(&root.dir))?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = root.dir.parent() {
                    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
                }
                create_private_dir(&root.dir).map_err(io_err(&root.dir))?;
                // Another user may have raced a folder of their own into a sticky /tmp
                // between the check and the creation: it is all there now, so check again.
                check_only_root_controls(&root.dir)?;
                root.check_is_store()?;
            }
            Err(e) => return Err(io_err(&root.dir)(e)),
        }
        for sub in root.folders() {
            create_private_dir(&sub).map_err(io_err(&sub))?;
        }
        Ok(root)
    }

    /// Refuses a directory that holds something other than capsa's own entries and no
    /// store. One `stat` per core folder on an existing store; the directory is listed
    /// only when one is missing (a new, empty or half-made store).
    fn check_is_store(&self) -> Result<(), RootError> {
        let is_dir =
            |name: &str| std::fs::symlink_metadata(self.dir.join(name)).is_ok_and(|m| m.is_dir());
        if STORE_CORE.iter().all(|name| is_dir(name)) {
            return Ok(());
        }
        let entries = std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))?;
        for entry in entries {
            let entry = entry.map_err(io_err(&self.dir))?;
            let name = entry.file_name();
            if !is_own_entry(&name) {
                return Err(RootError::NotAStore {
                    path: self.dir.clone(),
                    entry: name.to_string_lossy().into_owned(),
                });
            }
        }
        Ok(())
    }

    /// The folders every store has.
    fn folders(&self) -> [PathBuf; 7] {
        [
            self.blobs_dir(),
            self.layers_dir(),
            self.containers_dir(),
            self.names_dir(),
            self.cache_dir(),
            self.tmp_dir(),
            self.locks_dir(),
        ]
    }

    /// Takes a store made with shared modes private: the state directory and capsa's own
    /// entries in it (nothing else it holds), then each container's folder and records.
    /// Trees that containers see (layers' and containers' file systems, their /etc files)
    /// keep their modes: the folders above them already close every path in.
    fn make_private(&self) -> io::Result<()> {
        set_mode(&self.dir, PRIVATE_DIR)?;
        for name in OWN_ENTRIES {
            let path = self.dir.join(name);
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => set_mode(&path, PRIVATE_DIR)?,
                Ok(meta) if meta.is_file() => set_mode(&path, PRIVATE_FILE)?,
                _ => {}
            }
        }
        set_mode(&self.blobs_dir(), PRIVATE_DIR)?;
        crate::container::store::ContainerStore::new(self).make_private()
    }

    /// The state directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Content-addressed blobs: `blobs/sha256/<hex>`.
    pub fn blobs_dir(&self) -> PathBuf {
        self.dir.join("blobs/sha256")
    }
    /// Unpacked layer trees: `layers/<chain-id hex>/`.
    pub fn layers_dir(&self) -> PathBuf {
        self.dir.join("layers")
    }
    /// The image index: name:tag -> manifest digest.
    pub fn images_index(&self) -> PathBuf {
        self.dir.join("images.json")
    }
    /// Lock serialising changes to the image index.
    pub fn images_lock(&self) -> PathBuf {
        self.dir.join("images.lock")
    }
    /// One folder per container: `containers/<id>/`.
    pub fn containers_dir(&self) -> PathBuf {
        self.dir.join("containers")
    }
    /// Name reservations: `names/<name>` holds the container ID; created with O_EXCL.
    pub fn names_dir(&self) -> PathBuf {
        self.dir.join("names")
    }
    /// Derived data that can be rebuilt (compiled seccomp filters).
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }
    /// Compiled seccomp filters, by content hash.
    pub fn seccomp_cache(&self) -> PathBuf {
        self.cache_dir().join("seccomp")
    }
    /// Scratch space for in-progress imports; on the same file system so renames are atomic.
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }
    /// Lock files: one per layer being fetched, and the one garbage collection takes.
    pub fn locks_dir(&self) -> PathBuf {
        self.dir.join("locks")
    }
    /// Registry credentials written by `capsa login` (0600, Docker's `auths` shape).
    pub fn auth_file(&self) -> PathBuf {
        self.dir.join("auth.json")
    }
    /// Extra CA certificates per registry: `certs.d/<host[:port]>/*.crt`.
    pub fn certs_dir(&self) -> PathBuf {
        self.dir.join("certs.d")
    }
    /// Engine settings in Docker's `daemon.json` shape (`insecure-registries`).
    pub fn daemon_config(&self) -> PathBuf {
        self.dir.join("daemon.json")
    }
    /// Named and anonymous volumes: `volumes/<name>/` (see `crate::volume`).
    pub fn volumes_dir(&self) -> PathBuf {
        self.dir.join("volumes")
    }
    /// The event journal (see `crate::events`).
    pub fn events_dir(&self) -> PathBuf {
        self.dir.join("events")
    }
    /// Where a built guest kernel lives (the VM issue builds it).
    pub fn kernel_dir(&self) -> PathBuf {
        self.dir.join("kernel")
    }
}

/// Makes `path` (if missing) with mode [`PRIVATE_DIR`], and its missing parents too.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(path)
}

/// Sets the mode of `path` when it differs (a missing path is left alone).
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Ok(()),
        Ok(meta) if meta.permissions().mode() & 0o7777 != mode => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether `name` is an entry capsa makes in the state directory: one of [`OWN_ENTRIES`],
/// or the temporary file of an atomic write of one (`.images.json.tmp.<pid>`).
fn is_own_entry(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    if OWN_ENTRIES.contains(&name) {
        return true;
    }
    name.strip_prefix('.')
        .and_then(|rest| rest.rsplit_once(".tmp."))
        .is_some_and(|(base, pid)| {
            OWN_ENTRIES.contains(&base)
                && !pid.is_empty()
                && pid.bytes().all(|b| b.is_ascii_digit())
        })
}

/// `dir` made absolute with every symlink and `..` resolved; folders still missing at its
/// end are kept as named (they must be plain names).
fn real_path(dir: &Path) -> Result<PathBuf, RootError> {
    let abs = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        let cwd = std::env::current_dir().map_err(io_err(dir))?;
        cwd.join(dir)
    };
    resolve_existing(&abs).map_err(io_err(&abs))
}

fn resolve_existing(path: &Path) -> io::Result<PathBuf> {
    match path.canonicalize() {
        Ok(real) => Ok(real),
        Err(e) if e.kind() == io::ErrorKind::NotFound => match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) => Ok(resolve_existing(parent)?.join(name)),
            _ => Err(e),
        },
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_entries_and_their_temporary_files_are_recognised() {
        for name in [
            "containers",
            "images.json",
            ".images.json.tmp.4242",
            "userns.lock",
        ] {
            assert!(is_own_entry(OsStr::new(name)), "{name}");
        }
        for name in [
            "passwd",
            ".images.json.tmp.",
            ".bashrc",
            "lost+found",
            ".x.tmp.1",
        ] {
            assert!(!is_own_entry(OsStr::new(name)), "{name}");
        }
    }

    #[test]
    fn missing_folders_are_resolved_below_the_real_path_of_what_exists() {
        let tmp = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(tmp.path(), tmp.path().join("link")).unwrap();
        let real = tmp.path().canonicalize().unwrap();
        assert_eq!(
            real_path(&tmp.path().join("link/a/b")).unwrap(),
            real.join("a/b")
        );
    }
}
