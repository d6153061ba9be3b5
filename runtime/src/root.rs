//! The state directory (`--root`, `CAPSA_ROOT`, default `/var/lib/capsa`) and the paths in it.
//!
//! One struct owns the layout so that no other module builds a path by hand.

use std::io;
use std::path::{Path, PathBuf};

/// Default state directory, as Docker uses /var/lib/docker.
pub const DEFAULT_ROOT: &str = "/var/lib/capsa";

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
        for sub in [
            root.blobs_dir(),
            root.layers_dir(),
            root.containers_dir(),
            root.names_dir(),
            root.cache_dir(),
            root.tmp_dir(),
            root.locks_dir(),
        ] {
            std::fs::create_dir_all(&sub)?;
        }
        Ok(root)
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
