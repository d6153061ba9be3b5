//! The container's disks: the host names each virtio-blk disk by serial (the image's layers as
//! read-only erofs images, the writable layer as ext4); the agent finds them in sysfs and
//! mounts them under /run/capsa/<id>. The writable layer is checked here, in the guest, when
//! it was not unmounted cleanly: the host never parses a file system its guest wrote.

use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

/// The /dev node of the virtio-blk disk whose serial is `serial`.
pub fn by_serial(serial: &str) -> std::io::Result<PathBuf> {
    by_serial_in(Path::new("/sys/block"), serial)
}

/// [`by_serial`] over the block devices listed in `sys_block`.
fn by_serial_in(sys_block: &Path, serial: &str) -> std::io::Result<PathBuf> {
    for e in std::fs::read_dir(sys_block)?.flatten() {
        let s = std::fs::read_to_string(e.path().join("serial")).unwrap_or_default();
        if s.trim_end_matches(['\0', '\n']) == serial {
            return Ok(PathBuf::from("/dev").join(e.file_name()));
        }
    }
    Err(std::io::Error::other(format!(
        "no disk with serial {serial:?} (the host attached it, the guest does not see it)"
    )))
}

/// Bytes read from and written to the host's disks (those with a serial: every disk the
/// host attached is the workload's), from each one's `stat` (sectors of 512 bytes): what
/// `stats` shows as block I/O, the guest kernel having no io controller.
pub fn bytes_moved(sys_block: &Path) -> (u64, u64) {
    let Ok(entries) = std::fs::read_dir(sys_block) else {
        return (0, 0);
    };
    entries
        .flatten()
        .filter(|e| e.path().join("serial").exists())
        .map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let field = |i: usize| {
                stat.split_whitespace()
                    .nth(i)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
                    .saturating_mul(512)
            };
            (field(2), field(6))
        })
        .fold((0, 0), |a, b| {
            (a.0.saturating_add(b.0), a.1.saturating_add(b.1))
        })
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
    check_ext4(&by_serial(upper)?)?;
    mount_disk(upper, &disk, "ext4", MsFlags::MS_NODEV, None)?;
    let (up, work) = (disk.join("upper"), disk.join("work"));
    std::fs::create_dir_all(&up)?;
    std::fs::create_dir_all(&work)?;
    Ok((lower, up, work))
}

/// Mounts the pod's disk (ext4, serial `pod`: its containers' roots) at `target`,
/// checked first like every writable disk.
pub fn mount_pod_disk(target: &Path) -> std::io::Result<()> {
    check_ext4(&by_serial("pod")?)?;
    mount_disk("pod", target, "ext4", MsFlags::MS_NODEV, None)
}

/// Mounts the `-v` volumes' disks where the spec's bind mounts expect them. An ext4 disk
/// the host attached writable is checked first (a volume outlives the VMs that wrote it,
/// some killed mid-write); one attached read-only (`:ro`) is mounted read-only.
pub fn mount_volumes(volumes: &[capsa_core::protocol::GuestVolume]) -> std::io::Result<()> {
    for v in volumes {
        let mut flags = MsFlags::MS_NODEV;
        let dev = by_serial(&v.serial)?;
        if v.fstype == "erofs" || v.read_only || read_only_disk(&dev) {
            flags |= MsFlags::MS_RDONLY;
        } else if v.fstype == "ext4" {
            check_ext4(&dev)?;
        }
        mount_disk(&v.serial, Path::new(&v.path), &v.fstype, flags, None)?;
    }
    Ok(())
}

/// Whether the block device `dev` (`/dev/vdX`) was attached read-only.
fn read_only_disk(dev: &Path) -> bool {
    let Some(name) = dev.file_name() else {
        return false;
    };
    std::fs::read_to_string(Path::new("/sys/block").join(name).join("ro"))
        .is_ok_and(|ro| ro.trim() == "1")
}

/// ext4's superblock: 1024 bytes at offset 1024; its magic and state words.
const SUPERBLOCK: u64 = 1024;
const MAGIC_AT: usize = 0x38;
const STATE_AT: usize = 0x3a;
const EXT4_MAGIC: u16 = 0xef53;
/// s_state bits: unmounted cleanly; errors detected.
const VALID_FS: u16 = 0x1;
const ERROR_FS: u16 = 0x2;

/// Whether the ext4 superblock says the file system was unmounted cleanly with no error.
pub fn clean_ext4(superblock: &[u8]) -> bool {
    let word = |at: usize| {
        superblock
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    matches!(
        (word(MAGIC_AT), word(STATE_AT)),
        (Some(EXT4_MAGIC), Some(state)) if state & VALID_FS != 0 && state & ERROR_FS == 0
    )
}

/// Checks (and repairs, unattended) the ext4 file system on `dev` with e2fsck unless its
/// superblock says it is clean: a VM killed with the disk mounted leaves it unclean, and
/// without a journal only e2fsck makes it safe to mount again.
pub fn check_ext4(dev: &Path) -> std::io::Result<()> {
    let mut superblock = vec![0u8; 1024];
    let mut f = std::fs::File::open(dev)?;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(SUPERBLOCK))?;
    std::io::Read::read_exact(&mut f, &mut superblock)?;
    drop(f);
    if clean_ext4(&superblock) {
        return Ok(());
    }
    let damaged = |why: String| {
        std::io::Error::other(format!(
            "the disk {} (writable layer or volume) was not unmounted cleanly and {why}",
            dev.display()
        ))
    };
    let e2fsck = crate::guest::e2fsck().ok_or_else(|| {
        damaged("this guest has no e2fsck (install e2fsck-static on the host)".into())
    })?;
    let out = std::process::Command::new(e2fsck)
        .arg("-y")
        .arg(dev)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| damaged(format!("e2fsck cannot run: {e}")))?;
    // 0: clean, 1 and 2: errors corrected; anything else leaves it unusable.
    match out.status.code() {
        Some(0..=2) => Ok(()),
        _ => {
            let text = String::from_utf8_lossy(&out.stdout);
            let last: Vec<&str> = text.lines().rev().take(3).collect();
            Err(damaged(format!(
                "e2fsck cannot repair it ({}): {}",
                out.status,
                last.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_is_found_by_its_whole_serial_padding_aside() {
        let sys = tempfile::tempdir().unwrap();
        for (dev, serial) in [("vda", "layer-0\0\0\0\n"), ("vdb", "upper\n")] {
            std::fs::create_dir(sys.path().join(dev)).unwrap();
            std::fs::write(sys.path().join(dev).join("serial"), serial).unwrap();
        }
        std::fs::create_dir(sys.path().join("loop0")).unwrap(); // no serial file
        assert_eq!(
            by_serial_in(sys.path(), "layer-0").unwrap(),
            Path::new("/dev/vda")
        );
        assert_eq!(
            by_serial_in(sys.path(), "upper").unwrap(),
            Path::new("/dev/vdb")
        );
        // A prefix of a serial names no disk, and the error says which serial is missing.
        let err = by_serial_in(sys.path(), "layer").unwrap_err();
        assert!(
            err.to_string().contains("no disk with serial \"layer\""),
            "{err}"
        );
    }

    #[test]
    fn block_bytes_are_the_sum_of_the_hosts_disks_sectors() {
        let sys = tempfile::tempdir().unwrap();
        let disks = [
            ("vda", Some("l0"), "  10 0  8 0 0 0 0 0 0 0 0"),
            ("vdb", Some("upper"), "4 0 2 0 3 0 16 0 0 0 0"),
            ("ram0", None, "1 0 1000 0 1 0 1000 0 0 0 0"),
        ];
        for (dev, serial, stat) in disks {
            let d = sys.path().join(dev);
            std::fs::create_dir(&d).unwrap();
            if let Some(serial) = serial {
                std::fs::write(d.join("serial"), serial).unwrap();
            }
            std::fs::write(d.join("stat"), stat).unwrap();
        }
        assert_eq!(bytes_moved(sys.path()), (10 * 512, 16 * 512));
        assert_eq!(bytes_moved(&sys.path().join("none")), (0, 0));
    }

    #[test]
    fn only_a_clean_error_free_ext4_superblock_is_clean() {
        let mut sb = vec![0u8; 1024];
        assert!(!clean_ext4(&sb), "no magic");
        sb[MAGIC_AT..MAGIC_AT + 2].copy_from_slice(&EXT4_MAGIC.to_le_bytes());
        assert!(!clean_ext4(&sb), "mounted (not valid)");
        sb[STATE_AT] = VALID_FS as u8;
        assert!(clean_ext4(&sb));
        sb[STATE_AT] = (VALID_FS | ERROR_FS) as u8;
        assert!(!clean_ext4(&sb), "errors recorded");
        assert!(!clean_ext4(&sb[..10]), "too short");
    }
}
