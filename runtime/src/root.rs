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

/// The on-disk layout described in DESIGN.md.
#[derive(Debug, Clone)]
pub struct StateRoot {
    dir: PathBuf,
}

impl StateRoot {
    /// Opens (creating if needed) the state directory at `dir`.
    pub fn open(dir: &Path) -> io::Result<StateRoot> {
        let dir = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            std::env::current_dir()?.join(dir)
        };
        let root = StateRoot { dir };
        match std::fs::metadata(&root.dir) {
            Ok(meta) if meta.permissions().mode() & SHARED_BITS != 0 => root.make_private()?,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = root.dir.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                create_private_dir(&root.dir)?;
            }
            Err(e) => return Err(e),
        }
        for sub in root.folders() {
            create_private_dir(&sub)?;
        }
        Ok(root)
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

    /// Takes a store made with shared modes private: the state directory and its folders
    /// (and what sits directly in them), then each container's folder and records. Trees
    /// that containers see (layers' and containers' file systems, their /etc files) keep
    /// their modes: the folders above them already close every path in.
    fn make_private(&self) -> io::Result<()> {
        set_mode(&self.dir, PRIVATE_DIR)?;
        let entries = std::fs::read_dir(&self.dir)?;
        for entry in entries.flatten() {
            let kind = entry.file_type()?;
            if kind.is_dir() {
                set_mode(&entry.path(), PRIVATE_DIR)?;
            } else if kind.is_file() {
                set_mode(&entry.path(), PRIVATE_FILE)?;
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
