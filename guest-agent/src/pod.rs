//! A pod's VM (CRI's sandbox and the pod's other containers in one guest, as Kata runs
//! them): each container's root is a directory of its own on the pod's disk, filled from
//! the host's bundle by `Unpack` before its `Create` names it.

use std::path::{Path, PathBuf};

use capsa_core::protocol::{ErrorKind, POD_ROOTS};

use crate::workload::Failure;

/// Whether `name` can name a directory under [`POD_ROOTS`]: one path component the host
/// chose (a container ID), never `.`, `..` or a path.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-+".contains(&b))
}

/// The pod's disk mounted at [`POD_ROOTS`] (once: later calls find it there).
fn ensure_pod_disk() -> Result<(), Failure> {
    let roots = Path::new(POD_ROOTS);
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| m.lines().any(|l| l.split(' ').nth(4) == Some(POD_ROOTS)))
        .unwrap_or(false);
    if mounted {
        return Ok(());
    }
    crate::disks::mount_pod_disk(roots).map_err(|e| (ErrorKind::Storage, e.to_string()))
}

/// Container `name`'s folder on the pod's disk.
pub fn folder(name: &str) -> Result<PathBuf, Failure> {
    if !valid_name(name) {
        return Err((
            ErrorKind::BadRequest,
            format!("{name:?} cannot name a pod container's root"),
        ));
    }
    Ok(Path::new(POD_ROOTS).join(name))
}

/// The empty root directory `name` to unpack into: the pod's disk mounted, the folder
/// made. A name already unpacked is refused: its container may be running on it.
pub fn unpack_dir(name: &str) -> Result<PathBuf, Failure> {
    let folder = folder(name)?;
    ensure_pod_disk()?;
    match std::fs::create_dir(&folder) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err((
                ErrorKind::BadRequest,
                format!("pod container {name} has a root already"),
            ))
        }
        Err(e) => return Err((ErrorKind::Storage, format!("{}: {e}", folder.display()))),
    }
    let rootfs = folder.join("rootfs");
    std::fs::create_dir(&rootfs).map_err(|e| (ErrorKind::Storage, e.to_string()))?;
    Ok(rootfs)
}

/// Deletes container `name`'s root and the copies of its bind sources (`name.m<N>`).
pub fn remove_roots(name: &str) {
    if !valid_name(name) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(POD_ROOTS) else {
        return;
    };
    let prefix = format!("{name}.m");
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n == name
            || n.strip_prefix(&prefix)
                .is_some_and(|i| i.bytes().all(|b| b.is_ascii_digit()))
        {
            // std's removal opens each level without following links.
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_plain_component_names_a_pod_root() {
        for good in ["abc", "0f3e9a", "pod_1.main-2+x"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "/abs",
            "../up",
            "a b",
            &"x".repeat(129),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
            assert!(folder(bad).is_err(), "{bad:?}");
        }
    }
}
