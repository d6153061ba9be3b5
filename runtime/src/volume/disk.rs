//! A volume as a VM's disk: an ext4 image file in the volume's folder, made on the host
//! from the volume's directory (the one time the host writes it), then written only by the
//! guest that attaches it. The host never mounts or parses it again: the guest agent
//! checks it with e2fsck when it was left unclean.
//!
//! One running VM at a time: two guest kernels mounting one ext4 file system would corrupt
//! it. The process that runs a VM holds an exclusive `flock` on the image for as long as
//! it lives ([`hold`]).

use super::VolumeError;
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Size of a volume's file system (sparse: only what is written takes space on the host).
pub const DISK_SIZE: u64 = 8 << 30;

/// Makes `image`, a sparse ext4 file system holding a copy of the directory `source`
/// (owners, modes and links kept). It keeps a journal: a volume's data outlives a VM
/// killed while writing it.
pub fn format(source: &Path, image: &Path) -> Result<(), VolumeError> {
    let file = File::create(image).map_err(|e| VolumeError::io(image, e))?;
    file.set_len(DISK_SIZE)
        .map_err(|e| VolumeError::io(image, e))?;
    drop(file);
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-m", "0", "-E"])
        .arg("lazy_itable_init=1,lazy_journal_init=1,nodiscard")
        .arg("-d")
        .arg(source)
        .arg(image)
        .output();
    let failed = match out {
        Ok(o) if o.status.success() => return drop_lost_and_found(image),
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
        Err(e) => format!("cannot run mkfs.ext4: {e} (install e2fsprogs)"),
    };
    let _ = std::fs::remove_file(image);
    Err(VolumeError::io(image, format!("making the disk: {failed}")))
}

/// Removes the `lost+found` directory mkfs made: a volume's root holds what its users put
/// there, as a container's `_data` does (programs such as initdb refuse a directory that is
/// not empty). e2fsck makes it again when it needs it.
fn drop_lost_and_found(image: &Path) -> Result<(), VolumeError> {
    let out = Command::new("debugfs")
        .args(["-w", "-R", "rmdir lost+found"])
        .arg(image)
        .output()
        .map_err(|e| {
            VolumeError::io(
                image,
                format!("cannot run debugfs: {e} (install e2fsprogs)"),
            )
        })?;
    if out.status.success() {
        return Ok(());
    }
    let _ = std::fs::remove_file(image);
    Err(VolumeError::io(
        image,
        format!("debugfs: {}", String::from_utf8_lossy(&out.stderr).trim()),
    ))
}

/// Disks this process holds, by path (kept open until it exits).
static HELD: Mutex<Option<HashMap<PathBuf, File>>> = Mutex::new(None);

/// Holds the disk image at `path` for a VM this process runs, until the process ends;
/// refused when another process holds it (another VM runs with it). Holding it again is a
/// no-op (a restarted VM). The image must be a regular file reached without a symlink.
pub fn hold(volume: &str, path: &Path) -> Result<(), VolumeError> {
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    let held = held.get_or_insert_with(HashMap::new);
    if held.contains_key(path) {
        return Ok(());
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| VolumeError::io(path, e))?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(VolumeError::io(path, "not a regular file"));
    }
    // SAFETY: flock on a descriptor we own; no memory is shared with the kernel.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(VolumeError::Unusable {
            name: volume.to_string(),
            reason: "its disk is attached to another running VM (a VM volume is one VM's disk at a time)".into(),
        });
    }
    held.insert(path.to_path_buf(), file);
    Ok(())
}
