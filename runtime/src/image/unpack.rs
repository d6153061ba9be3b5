//! Unpacks one layer tarball into a directory that overlayfs can stack, without letting a
//! hostile archive write outside it.
//!
//! Guards: `..` components are refused; absolute paths are made relative (as Docker does);
//! the `tar` crate refuses parents that resolve outside through symlinks and hard links to
//! outside. Whiteouts become overlayfs whiteouts: `.wh.NAME` a 0:0 character device `NAME`,
//! `.wh..wh..opq` the `trusted.overlay.opaque=y` and `user.overlay.opaque=y` xattrs on its
//! directory (the second for overlays mounted in a user namespace). A whiteout that hides
//! no file name (`.wh.`, `.wh..`, `.wh...`) is refused; aufs's own `.wh..wh.*` bookkeeping
//! entries are skipped, as Docker skips them.

use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Prefix of a whiteout entry in an OCI/Docker layer.
const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the opaque-directory marker in an OCI/Docker layer.
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Prefix of aufs's metadata entries (hard-link directories and the like), never files.
const AUFS_META_PREFIX: &str = ".wh..wh.";

/// What a layer entry named `file_name` is, as far as whiteouts go.
#[derive(Debug, PartialEq, Eq)]
enum Whiteout<'a> {
    /// Not a whiteout: an ordinary entry.
    No,
    /// `.wh..wh..opq`: the directory hides what lower layers have in it.
    Opaque,
    /// `.wh.NAME`: NAME is deleted.
    Hides(&'a str),
    /// aufs bookkeeping (`.wh..wh.plnk` and the like): nothing to unpack.
    AufsMeta,
}

/// Classifies `file_name`; Err says why a whiteout hides no file.
fn whiteout_of(file_name: &str) -> Result<Whiteout<'_>, String> {
    if file_name == OPAQUE_MARKER {
        return Ok(Whiteout::Opaque);
    }
    if file_name.starts_with(AUFS_META_PREFIX) {
        return Ok(Whiteout::AufsMeta);
    }
    match file_name.strip_prefix(WHITEOUT_PREFIX) {
        None => Ok(Whiteout::No),
        Some("") => Err("whiteout names no file".into()),
        Some(name @ ("." | "..")) => {
            Err(format!("whiteout names {name:?}, which is not a file name"))
        }
        Some(name) => Ok(Whiteout::Hides(name)),
    }
}

/// Unpacks the tar stream `input` into `dest` (which must exist and be empty).
/// The error says which entry failed and why.
pub fn unpack_layer<R: Read>(input: R, dest: &Path) -> Result<(), String> {
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("malformed tar entry: {e}"))?;
        let raw = entry
            .path()
            .map_err(|e| format!("entry with unreadable path: {e}"))?
            .into_owned();
        let rel = sanitize(&raw)?;
        let Some(file_name) = rel.file_name().and_then(|n| n.to_str()) else {
            continue; // the archive's root directory itself
        };
        let fail = |e: &dyn std::error::Error| format!("{}: {}", raw.display(), error_chain(e));
        match whiteout_of(file_name).map_err(|why| format!("{}: {why}", raw.display()))? {
            Whiteout::No => {}
            Whiteout::AufsMeta => continue,
            Whiteout::Opaque => {
                let dir = dest.join(rel.parent().unwrap_or(Path::new("")));
                std::fs::create_dir_all(&dir).map_err(|e| fail(&e))?;
                // trusted.* for a root-mounted overlay, user.* for one mounted in a user
                // namespace (userxattr).
                xattr_set(&dir, "trusted.overlay.opaque", b"y").map_err(|e| fail(&e))?;
                xattr_set(&dir, "user.overlay.opaque", b"y").map_err(|e| fail(&e))?;
                continue;
            }
            Whiteout::Hides(hidden) => {
                let target = rel.with_file_name(hidden);
                make_node(dest, &target, SFlag::S_IFCHR, 0, 0).map_err(|e| fail(&e))?;
                continue;
            }
        }
        let kind = entry.header().entry_type();
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            let header = entry.header();
            let major = header.device_major().ok().flatten().unwrap_or(0);
            let minor = header.device_minor().ok().flatten().unwrap_or(0);
            let flag = match () {
                _ if kind.is_character_special() => SFlag::S_IFCHR,
                _ if kind.is_block_special() => SFlag::S_IFBLK,
                _ => SFlag::S_IFIFO,
            };
            let mode = header.mode().unwrap_or(0o600);
            make_node(dest, &rel, flag, major, minor).map_err(|e| fail(&e))?;
            let path = dest.join(&rel);
            let uid = header.uid().unwrap_or(0) as u32;
            let gid = header.gid().unwrap_or(0) as u32;
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(|e| fail(&e))?;
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .map_err(|e| fail(&e))?;
            continue;
        }
        let unpacked = entry.unpack_in(dest).map_err(|e| fail(&e))?;
        if !unpacked {
            return Err(format!("{}: path escapes the layer", raw.display()));
        }
    }
    Ok(())
}

/// An error and its causes on one line (the tar crate wraps the I/O error that matters).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Makes an archive path relative and refuses `..`.
fn sanitize(path: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                return Err(format!("{}: path contains '..'", path.display()));
            }
        }
    }
    Ok(out)
}

/// Creates a device node or fifo at `dest/rel`, creating parents and replacing what was there.
/// The parent is resolved inside `dest` (no symlinked parents).
fn make_node(dest: &Path, rel: &Path, kind: SFlag, major: u32, minor: u32) -> std::io::Result<()> {
    let parent = dest.join(rel.parent().unwrap_or(Path::new("")));
    std::fs::create_dir_all(&parent)?;
    let canon_dest = dest.canonicalize()?;
    if !parent.canonicalize()?.starts_with(&canon_dest) {
        return Err(std::io::Error::other("parent directory escapes the layer"));
    }
    let path = dest.join(rel);
    if std::fs::symlink_metadata(&path).is_ok() {
        super::store::remove_any(&path)?;
    }
    let dev = makedev(major.into(), minor.into());
    mknod(&path, kind, Mode::from_bits_truncate(0o600), dev).map_err(std::io::Error::from)
}

fn xattr_set(path: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let n = std::ffi::CString::new(name)?;
    // SAFETY: both strings are NUL-terminated and outlive the call; the value pointer and
    // length describe a live slice.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1);
            h.set_entry_type(tar::EntryType::Regular);
            // set_path refuses '..', so write the name bytes directly as an attacker would.
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn parent_components_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("layer");
        std::fs::create_dir(&dest).unwrap();
        let tar = tar_with(&[("../evil", b"x")]);
        let err = unpack_layer(&tar[..], &dest).unwrap_err();
        assert!(err.contains(".."), "{err}");
        assert!(!dir.path().join("evil").exists());
    }

    #[test]
    fn absolute_paths_land_inside() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_with(&[("/etc/hostname", b"x")]);
        unpack_layer(&tar[..], dir.path()).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("etc/hostname")).unwrap(),
            b"x"
        );
    }

    #[test]
    fn symlinked_parent_cannot_lead_outside() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "link", outside.path()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, "link/pwned", &b"x"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        assert!(unpack_layer(&tar[..], dir.path()).is_err());
        assert!(!outside.path().join("pwned").exists());
    }

    #[test]
    fn hard_links_cannot_point_outside() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"host").unwrap();
        let dest = dir.path().join("layer");
        std::fs::create_dir(&dest).unwrap();
        for target in [
            outside.path().join("secret").display().to_string(),
            "../../../../../../../..".to_string()
                + &outside.path().join("secret").display().to_string(),
        ] {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Link);
            h.set_size(0);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1);
            let name = &mut h.as_old_mut().name;
            name[..4].copy_from_slice(b"leak");
            let link = &mut h.as_old_mut().linkname;
            link[..target.len()].copy_from_slice(target.as_bytes());
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
            let tar = b.into_inner().unwrap();
            let _ = unpack_layer(&tar[..], &dest);
            // Whatever happened, no link into the host file exists in the layer.
            let leaked = std::fs::read(dest.join("leak")).unwrap_or_default();
            assert_ne!(leaked, b"host", "a hard link reached {target}");
        }
    }

    #[test]
    fn whiteouts_that_hide_no_file_are_named() {
        for name in [".wh...", "d/.wh...", ".wh.", ".wh..", "d/.wh."] {
            let dir = tempfile::tempdir().unwrap();
            let tar = tar_with(&[(name, b"")]);
            let err = unpack_layer(&tar[..], dir.path()).unwrap_err();
            assert!(err.starts_with(name), "{name}: {err}");
            assert!(err.contains("whiteout"), "{name}: {err}");
        }
        assert_eq!(whiteout_of(".wh..wh.plnk"), Ok(Whiteout::AufsMeta));
        assert_eq!(whiteout_of(".wh..wh..opq"), Ok(Whiteout::Opaque));
        assert_eq!(whiteout_of(".wh.a"), Ok(Whiteout::Hides("a")));
        assert_eq!(whiteout_of("a.wh."), Ok(Whiteout::No));
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_with(&[("etc/.wh.passwd", b"")]);
        unpack_layer(&tar[..], dir.path()).unwrap();
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let meta = std::fs::symlink_metadata(dir.path().join("etc/passwd")).unwrap();
        assert!(meta.file_type().is_char_device());
        assert_eq!(meta.rdev(), 0);
    }
}
