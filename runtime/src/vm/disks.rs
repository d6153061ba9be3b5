//! The VM's disks: one read-only erofs image per image layer, built once from the unpacked
//! layer and shared by every VM that uses the layer (an image with more layers than a VM
//! has disk slots for gets its bottom layers merged into one image, built once per chain
//! of layers), a sparse ext4 file per container for
//! its writable layer, and one disk per `-v` mount: for a host directory a copy of it
//! (erofs when read-only, ext4 when writable; what the workload writes stays in the VM's
//! copy), for a named or anonymous volume the volume's own ext4 image (`crate::volume`),
//! so what the workload writes there persists in the volume. The host makes these file
//! systems but never reads back one the guest wrote.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::VmError;
use crate::image::digest::ChainId;
use crate::root::StateRoot;

/// Size of a container's writable layer (sparse: only what the workload writes takes space).
pub const WRITABLE_SIZE: u64 = 4 << 30;

fn run(cmd: &mut Command, what: &str) -> Result<(), VmError> {
    let out = cmd.output().map_err(|e| {
        VmError::Tool(format!(
            "{what}: cannot run {:?}: {e} (install erofs-utils and e2fsprogs)",
            cmd.get_program()
        ))
    })?;
    if !out.status.success() {
        return Err(VmError::Tool(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The chain ID of the store's unpacked layer at `layer_dir` (`layers/<chain hex>/diff`),
/// which names its erofs image; anything else is refused.
fn chain_of(root: &StateRoot, layer_dir: &Path) -> Result<ChainId, VmError> {
    let chain = layer_dir
        .strip_prefix(root.layers_dir())
        .ok()
        .and_then(
            |rel| match rel.to_str()?.split('/').collect::<Vec<_>>()[..] {
                [hex, "diff"] => ChainId::from_hex(hex),
                _ => None,
            },
        );
    chain.ok_or_else(|| {
        VmError::Io(format!(
            "{}: not an unpacked layer of the image store",
            layer_dir.display()
        ))
    })
}

/// The erofs image of the unpacked layer at `layer_dir`, built under a lock if missing.
/// It lives beside the layer's tree (`layers/<chain id>/diff.erofs`): it belongs to the
/// layer, goes with it when the layer is removed, and counts in the store's disk use.
pub fn layer_image(root: &StateRoot, layer_dir: &Path) -> Result<PathBuf, VmError> {
    // Unpacked layers live at layers/<chain id>/diff: the chain id names the image.
    let key = chain_of(root, layer_dir)?.hex().to_string();
    let dir = root.layers_dir().join(&key);
    let image = dir.join("diff.erofs");
    if image.is_file() {
        return Ok(image);
    }
    let _lock = crate::fsutil::FileLock::acquire(&dir.join("diff.erofs.lock"))
        .map_err(|e| VmError::Io(e.to_string()))?;
    if image.is_file() {
        return Ok(image); // another capsa built it while we waited
    }
    let tmp = dir.join("diff.erofs.tmp");
    run(
        Command::new("mkfs.erofs")
            .arg("--quiet")
            .arg(&tmp)
            .arg(layer_dir),
        &format!("building the erofs image of layer {key}"),
    )?;
    std::fs::rename(&tmp, &image).map_err(|e| VmError::Io(format!("{}: {e}", image.display())))?;
    Ok(image)
}

/// How many disks a VM container's image layers may take: what a VM template's slots leave
/// beside the writable layer and the volumes, at least one.
pub fn layer_budget(volumes: usize) -> usize {
    super::template::SLOTS.saturating_sub(1 + volumes).max(1)
}

/// The read-only images of an image's layers (`layers`: unpacked, lowest first), top first,
/// at most `budget` of them: with more layers than that, the bottom ones are merged into
/// one image and the rest have their own.
pub fn image_disks(
    root: &StateRoot,
    layers: &[PathBuf],
    budget: usize,
) -> Result<Vec<PathBuf>, VmError> {
    let budget = budget.max(1);
    let merged = if layers.len() > budget {
        layers.len() - budget + 1
    } else {
        0
    };
    let mut images = Vec::new();
    for layer in layers[merged..].iter().rev() {
        images.push(layer_image(root, layer)?);
    }
    if merged > 0 {
        images.push(merged_image(root, &layers[..merged])?);
    }
    Ok(images)
}

/// One erofs image of `layers` (unpacked, lowest first, at least two) as one tree: built
/// from their overlay, so whiteouts and opaque directories are applied, not copied. It is
/// named by the top layer's chain ID, which names exactly this stack of layers, and lives
/// beside that layer (`layers/<chain id>/merged.erofs`), going with it.
fn merged_image(root: &StateRoot, layers: &[PathBuf]) -> Result<PathBuf, VmError> {
    let top = layers
        .last()
        .ok_or_else(|| VmError::Io("merging no layers".into()))?;
    let key = chain_of(root, top)?.hex().to_string();
    let dir = root.layers_dir().join(&key);
    let image = dir.join("merged.erofs");
    if image.is_file() {
        return Ok(image);
    }
    let _lock = crate::fsutil::FileLock::acquire(&dir.join("merged.erofs.lock"))
        .map_err(|e| VmError::Io(e.to_string()))?;
    if image.is_file() {
        return Ok(image);
    }
    let what = format!(
        "merging {} layers below {key} into one erofs image",
        layers.len()
    );
    let mut lower = Vec::new();
    for l in layers.iter().rev() {
        chain_of(root, l)?; // only the store's own layers
        lower.push(
            capsa_core::linux::mountapi::open_path(l)
                .map_err(|e| VmError::Io(format!("{what}: {}: {e}", l.display())))?,
        );
    }
    let merged = capsa_core::linux::mountapi::merged_layers(&lower)
        .map_err(|e| VmError::Io(format!("{what}: overlay of the layers: {e}")))?;
    let tmp = dir.join("merged.erofs.tmp");
    // mkfs.erofs resolves its source to a path, which a detached mount has none of: the
    // child attaches the overlay at `merged.mnt` in a mount namespace of its own, where
    // no one else sees it and which ends with the child.
    let at = dir.join("merged.mnt");
    std::fs::create_dir_all(&at).map_err(|e| VmError::Io(format!("{}: {e}", at.display())))?;
    let target = std::ffi::CString::new(at.as_os_str().as_encoded_bytes())
        .map_err(|_| VmError::Io(format!("{what}: a NUL in {}", at.display())))?;
    let mut mkfs = Command::new("mkfs.erofs");
    mkfs.arg("--quiet").arg(&tmp).arg(&at);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&merged);
    // SAFETY: between fork and exec the child makes only system calls, on memory made
    // before the fork (the target's C string): its own mount namespace, every mount in it
    // private, then the overlay moved onto the target.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut mkfs, move || {
            let empty = c"".as_ptr();
            let fail = || Err(std::io::Error::last_os_error());
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return fail();
            }
            let private = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                private,
                std::ptr::null(),
            ) != 0
            {
                return fail();
            }
            const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
            let moved = libc::syscall(
                libc::SYS_move_mount,
                fd,
                empty,
                libc::AT_FDCWD,
                target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            );
            if moved != 0 {
                return fail();
            }
            Ok(())
        });
    }
    let built = run(&mut mkfs, &what);
    let _ = std::fs::remove_dir(&at);
    if built.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    built?;
    std::fs::rename(&tmp, &image).map_err(|e| VmError::Io(format!("{}: {e}", image.display())))?;
    Ok(image)
}

/// A fresh writable layer: a sparse copy of the state root's blank one (its few MiB of
/// metadata; formatting each time ran mkfs.ext4, about 90 ms of a VM's start).
fn writable_disk(root: &StateRoot, path: &Path) -> Result<(), VmError> {
    let blank = blank_writable_disk(root)?;
    let io = |p: &Path, e: std::io::Error| VmError::Io(format!("{}: {e}", p.display()));
    let src = std::fs::File::open(&blank).map_err(|e| io(&blank, e))?;
    let _ = std::fs::remove_file(path);
    let copied = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(path)
        .and_then(|dst| super::sparse::copy(&src, &dst));
    copied.map_err(|e| {
        let _ = std::fs::remove_file(path);
        io(path, e)
    })
}

/// `<root>/vm/blank-upper.ext4`, formatted once (to a temporary name, then renamed, so a
/// concurrent start never copies half of one). Every VM's copy is its own afterwards.
fn blank_writable_disk(root: &StateRoot) -> Result<PathBuf, VmError> {
    let dir = root.dir().join("vm");
    let path = dir.join(format!("blank-upper-{}g.ext4", WRITABLE_SIZE >> 30));
    if path.is_file() {
        return Ok(path);
    }
    let io = |p: &Path, e: std::io::Error| VmError::Io(format!("{}: {e}", p.display()));
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let tmp = dir.join(format!(".blank-upper.{}", std::process::id()));
    let made =
        format_writable(&tmp).and_then(|()| std::fs::rename(&tmp, &path).map_err(|e| io(&path, e)));
    if made.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    made.map(|()| path)
}

/// Formats a new sparse ext4 file at `path` for a writable layer.
fn format_writable(path: &Path) -> Result<(), VmError> {
    let f =
        std::fs::File::create(path).map_err(|e| VmError::Io(format!("{}: {e}", path.display())))?;
    f.set_len(WRITABLE_SIZE)
        .map_err(|e| VmError::Io(format!("{}: {e}", path.display())))?;
    drop(f);
    // No journal and lazy inode tables: mounting and the first writes cost least this way,
    // and the disk lives only as long as the container.
    run(
        Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-m",
                "0",
                "-O",
                "^has_journal",
                "-E",
                "lazy_itable_init=1,nodiscard",
            ])
            .arg(path),
        "formatting the writable layer",
    )
}

/// The container's writable layer: made at its first boot, kept after that, so a container
/// started again keeps what its workload wrote and what `cp` put there. A kept disk is the
/// guest's to check (the agent runs e2fsck in the guest when it was not unmounted
/// cleanly): the host never parses a file system the guest wrote.
pub fn ensure_writable_disk(root: &StateRoot, path: &Path) -> Result<(), VmError> {
    if path.exists() {
        Ok(())
    } else {
        writable_disk(root, path)
    }
}

/// A disk holding a copy of the host directory `source` for a `-v` volume: erofs when the
/// volume is read-only, else a sparse ext4 file with room to grow.
pub fn volume_image(source: &Path, image: &Path, read_only: bool) -> Result<(), VmError> {
    if !source.is_dir() {
        return Err(VmError::Tool(format!(
            "volume {}: a VM volume must be a directory (its copy becomes a disk)",
            source.display()
        )));
    }
    let what = format!("copying volume {} into a disk", source.display());
    if read_only {
        return run(
            Command::new("mkfs.erofs")
                .arg("--quiet")
                .arg(image)
                .arg(source),
            &what,
        );
    }
    let f = std::fs::File::create(image)
        .map_err(|e| VmError::Io(format!("{}: {e}", image.display())))?;
    f.set_len(WRITABLE_SIZE)
        .map_err(|e| VmError::Io(format!("{}: {e}", image.display())))?;
    drop(f);
    run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0", "-O", "^has_journal", "-d"])
            .arg(source)
            .arg(image),
        &what,
    )
}

/// The disk image of volume `name` at `image` (`container::volumes` made it), held by
/// this process for as long as it runs the VM: one running VM per volume disk.
pub fn volume_disk(name: &str, image: &Path) -> Result<PathBuf, VmError> {
    crate::volume::disk::hold(name, image).map_err(|e| VmError::Io(e.to_string()))?;
    Ok(image.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_store_layer_directory_names_an_erofs_image() {
        let dir = tempfile::tempdir().unwrap();
        let root = StateRoot::open(&dir.path().join("root")).unwrap();
        let hex = "a".repeat(64);
        let good = root.layers_dir().join(&hex).join("diff");
        assert_eq!(chain_of(&root, &good).unwrap().hex(), hex);
        for bad in [
            root.layers_dir().join(&hex).join("diff/x/diff"),
            root.layers_dir().join("../../x/diff"),
            root.layers_dir().join(format!("{hex}/../{hex}/diff")),
            root.layers_dir().join(hex.to_uppercase()).join("diff"),
            PathBuf::from("/tmp/x/diff"),
        ] {
            assert!(chain_of(&root, &bad).is_err(), "{}", bad.display());
        }
    }
}
