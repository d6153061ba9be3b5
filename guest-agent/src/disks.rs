//! The container's disks: the host names each virtio-blk disk by serial (the image's layers as
//! read-only erofs images, the writable layer as ext4); the agent finds them in sysfs and
//! mounts them under /run/capsa/<id>.

use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

/// The /dev node of the virtio-blk disk whose serial is `serial`.
pub fn by_serial(serial: &str) -> std::io::Result<PathBuf> {
    for e in std::fs::read_dir("/sys/block")?.flatten() {
        let s = std::fs::read_to_string(e.path().join("serial")).unwrap_or_default();
        if s.trim_end_matches(['\0', '\n']) == serial {
            return Ok(PathBuf::from("/dev").join(e.file_name()));
        }
    }
    Err(std::io::Error::other(format!(
        "no disk with serial {serial:?} (the host attached it, the guest does not see it)"
    )))
}

fn mount_disk(
    serial: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> std::io::Result<()> {
    let dev = by_serial(serial)?;
    std::fs::create_dir_all(target)?;
    mount(Some(&dev), target, Some(fstype), flags, data).map_err(|e| {
        std::io::Error::other(format!(
            "mount {} ({fstype}, serial {serial}) on {}: {e}",
            dev.display(),
            target.display()
        ))
    })
}

/// Mounts the layers read-only (lowest first in the result, as overlay wants them) and the
/// writable disk; returns (lower dirs, upper dir, work dir).
pub fn mount_layers(
    dir: &Path,
    layers: &[String],
    upper: &str,
) -> std::io::Result<(Vec<PathBuf>, PathBuf, PathBuf)> {
    let mut lower = Vec::new();
    for (i, serial) in layers.iter().enumerate() {
        let target = dir.join("layers").join(i.to_string());
        mount_disk(
            serial,
            &target,
            "erofs",
            MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
            None,
        )?;
        lower.push(target);
    }
    lower.reverse();
    let disk = dir.join("upper-disk");
    mount_disk(upper, &disk, "ext4", MsFlags::MS_NODEV, None)?;
    let (up, work) = (disk.join("upper"), disk.join("work"));
    std::fs::create_dir_all(&up)?;
    std::fs::create_dir_all(&work)?;
    Ok((lower, up, work))
}

/// Mounts the `-v` volumes' disks where the spec's bind mounts expect them.
pub fn mount_volumes(volumes: &[capsa::vm::protocol::GuestVolume]) -> std::io::Result<()> {
    for v in volumes {
        let mut flags = MsFlags::MS_NODEV;
        if v.fstype == "erofs" {
            flags |= MsFlags::MS_RDONLY;
        }
        mount_disk(&v.serial, Path::new(&v.path), &v.fstype, flags, None)?;
    }
    Ok(())
}
