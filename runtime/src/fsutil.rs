//! Small file-system helpers shared by the stores: atomic writes, advisory locks, and the
//! check that only root controls a path.
//! Everything they create is private to its owner (records, caches and lock files live
//! in the private state directory, or are locks in /run that no one else may hold).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of every file these helpers create.
const PRIVATE_FILE: u32 = crate::root::PRIVATE_FILE;

/// Creates (or truncates) `path` with mode 0600 and writes `data`: a record only root reads.
pub fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE)
        .open(path)?
        .write_all(data)
}

/// Atomic replacement lives with the seccomp cache that also needs it, in `capsa-core`.
pub use capsa_core::fsutil::{write_atomic, write_replacing};

/// Serialises `value` as pretty JSON and writes it atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let data = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    write_atomic(path, &data)
}

/// An exclusive `flock` held until dropped. Used so that concurrent CLIs serialise their
/// changes to one container or to the image index.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Blocks until the lock on `path` (created if missing) is held.
    pub fn acquire(path: &Path) -> io::Result<FileLock> {
        FileLock::acquire_mode(path, libc::LOCK_EX)
    }

    /// Blocks until a shared hold on `path` is had: many shared holders, or one exclusive.
    pub fn acquire_shared(path: &Path) -> io::Result<FileLock> {
        FileLock::acquire_mode(path, libc::LOCK_SH)
    }

    /// [`acquire`](Self::acquire) for a lock file outside the private state directory
    /// (in /run): anyone who can open a lock file can hold it (flock needs no write
    /// access), so one left readable by an older capsa is made private first.
    pub fn acquire_outside_root(path: &Path) -> io::Result<FileLock> {
        if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(PRIVATE_FILE))?;
        }
        FileLock::acquire(path)
    }

    fn acquire_mode(path: &Path, mode: libc::c_int) -> io::Result<FileLock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(PRIVATE_FILE)
            .open(path)?;
        // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
        let rc = unsafe { libc::flock(file.as_raw_fd(), mode) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(FileLock { _file: file })
    }
}

impl FileLock {
    /// Takes the lock on the existing file `path` if nobody holds it; None when the file
    /// is missing or the lock is held.
    pub fn try_existing(path: &Path) -> Option<FileLock> {
        let file = OpenOptions::new().read(true).write(true).open(path).ok()?;
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        (rc == 0).then_some(FileLock { _file: file })
    }
}

/// Total size in bytes of the regular files under `path` (not following symlinks).
/// The walk goes by descriptor with O_NOFOLLOW at every level: a running container may swap
/// a directory of its writable layer for a symlink to a host path while this walks it.
pub fn disk_usage(path: &Path) -> u64 {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match nix::dir::Dir::open(path, flags, nix::sys::stat::Mode::empty()) {
        Ok(dir) => usage_in(dir),
        Err(_) => std::fs::symlink_metadata(path).map_or(0, |m| m.len()),
    }
}

fn usage_in(mut dir: nix::dir::Dir) -> u64 {
    use nix::fcntl::{AtFlags, OFlag};
    let fd = dir.as_raw_fd();
    let names: Vec<std::ffi::CString> = dir
        .iter()
        .flatten()
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect();
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    names
        .iter()
        .map(|name| {
            let Ok(st) =
                nix::sys::stat::fstatat(Some(fd), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            else {
                return 0;
            };
            if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                return st.st_size as u64;
            }
            nix::dir::Dir::openat(
                Some(fd),
                name.as_c_str(),
                flags,
                nix::sys::stat::Mode::empty(),
            )
            .map_or(0, usage_in)
        })
        .sum()
}

/// Why another user than root could change what a path holds.
#[derive(Debug, thiserror::Error)]
pub enum InsecurePath {
    /// A folder on the path could not be examined.
    #[error("{}: {source}", path.display())]
    Io {
        /// The folder.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A folder on the path belongs to another user, who could rename or replace what is in it.
    #[error("{} is owned by uid {uid}, not by root: that user could replace what it holds", path.display())]
    ForeignOwner {
        /// The folder.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// A folder on the path is writable by group or others (without the sticky bit that
    /// would keep root's entries root's).
    #[error("{} is writable by other users (mode {mode:04o}): they could replace what it holds", path.display())]
    Writable {
        /// The folder.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
}

/// Checks that only root (or the calling user) controls `dir` and every folder above it,
/// as sshd's StrictModes checks a user's key files: each existing one owned by root or
/// the caller and not writable by group or others. A world-writable folder with the
/// sticky bit (such as /tmp) is fine above `dir`: there nobody but its owner may rename
/// or remove an entry, and the next folder down must be root's own. `dir` must be
/// absolute and free of symlinks (canonical); folders still missing at its end are
/// skipped (the caller makes them, as root).
pub fn check_only_root_controls(dir: &Path) -> Result<(), InsecurePath> {
    let me = nix::unistd::geteuid().as_raw();
    let chain: Vec<&Path> = dir.ancestors().collect();
    for path in chain.into_iter().rev() {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(InsecurePath::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        if meta.uid() != 0 && meta.uid() != me {
            return Err(InsecurePath::ForeignOwner {
                path: path.to_path_buf(),
                uid: meta.uid(),
            });
        }
        let mode = meta.mode() & 0o7777;
        let sticky_above = mode & libc::S_ISVTX != 0 && path != dir;
        if mode & 0o022 != 0 && !sticky_above {
            return Err(InsecurePath::Writable {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    Ok(())
}
