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

use super::tar_guard::HeaderGuard;
use crate::linux::inroot::Root;
use nix::sys::stat::{makedev, SFlag};
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Prefix of a whiteout entry in an OCI/Docker layer.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Name of the opaque-directory marker in an OCI/Docker layer.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Prefix of aufs's metadata entries (hard-link directories and the like), never files.
const AUFS_META_PREFIX: &[u8] = b".wh..wh.";

/// Why a whiteout entry hides no file.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WhiteoutError {
    /// `.wh.` alone.
    #[error("whiteout names no file")]
    NoFile,
    /// `.wh..` or `.wh...`.
    #[error("whiteout names {0:?}, which is not a file name")]
    NotAFileName(std::ffi::OsString),
}

/// Why a layer could not be unpacked; each names the entry concerned.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The stream is not a tar archive.
    #[error("not a tar archive: {0}")]
    NotTar(#[source] std::io::Error),
    /// The destination could not be opened.
    #[error("{path}: {source}")]
    Destination {
        /// The destination.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An entry's header is malformed (the tar crate wraps the I/O error that matters).
    #[error("malformed tar entry: {}", error_chain(.0))]
    Entry(#[source] std::io::Error),
    /// An entry's path cannot be read.
    #[error("entry with unreadable path: {0}")]
    EntryPath(#[source] std::io::Error),
    /// An entry's path has a `..` component.
    #[error("{}: path contains '..'", .0.display())]
    Parent(PathBuf),
    /// A whiteout that hides no file.
    #[error("{}: {source}", .path.display())]
    Whiteout {
        /// The entry.
        path: PathBuf,
        /// Why.
        #[source]
        source: WhiteoutError,
    },
    /// An entry could not be written.
    #[error("{}: {}", .path.display(), error_chain(.source))]
    Write {
        /// The entry.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An entry's path leads outside the layer.
    #[error("{}: path escapes the layer", .0.display())]
    Escapes(PathBuf),
}

/// What a layer entry named `file_name` is, as far as whiteouts go.
#[derive(Debug, PartialEq, Eq)]
enum Whiteout<'a> {
    /// Not a whiteout: an ordinary entry.
    No,
    /// `.wh..wh..opq`: the directory hides what lower layers have in it.
    Opaque,
    /// `.wh.NAME`: NAME is deleted.
    Hides(&'a OsStr),
    /// aufs bookkeeping (`.wh..wh.plnk` and the like): nothing to unpack.
    AufsMeta,
}

/// Classifies `file_name` (any bytes: names need not be UTF-8); Err says why a whiteout
/// hides no file.
fn whiteout_of(file_name: &OsStr) -> Result<Whiteout<'_>, WhiteoutError> {
    let bytes = file_name.as_bytes();
    if bytes == OPAQUE_MARKER {
        return Ok(Whiteout::Opaque);
    }
    if bytes.starts_with(AUFS_META_PREFIX) {
        return Ok(Whiteout::AufsMeta);
    }
    match bytes.strip_prefix(WHITEOUT_PREFIX) {
        None => Ok(Whiteout::No),
        Some(b"") => Err(WhiteoutError::NoFile),
        Some(name @ (b"." | b"..")) => Err(WhiteoutError::NotAFileName(
            OsStr::from_bytes(name).to_os_string(),
        )),
        Some(name) => Ok(Whiteout::Hides(OsStr::from_bytes(name))),
    }
}

/// Unpacks the tar stream `input` into `dest` (which must exist and be empty).
/// Names are kept as the bytes they are (UTF-8 or not). The error says which entry failed
/// and why.
pub fn unpack_layer<R: Read>(input: R, dest: &Path) -> Result<(), UnpackError> {
    let mut archive = tar::Archive::new(HeaderGuard::new(input));
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    let entries = archive.entries().map_err(UnpackError::NotTar)?;
    // What the tar crate does not make (whiteouts, nodes) is made through in-root lookups:
    // a symlink unpacked earlier cannot lead those writes out of the layer.
    let root = Root::open(dest).map_err(|source| UnpackError::Destination {
        path: dest.display().to_string(),
        source,
    })?;
    for entry in entries {
        let mut entry = entry.map_err(UnpackError::Entry)?;
        let raw = entry.path().map_err(UnpackError::EntryPath)?.into_owned();
        let rel = sanitize(&raw)?;
        let Some(file_name) = rel.file_name() else {
            continue; // the archive's root directory itself (`./`)
        };
        let fail = |source: std::io::Error| UnpackError::Write {
            path: raw.clone(),
            source,
        };
        match whiteout_of(file_name).map_err(|source| UnpackError::Whiteout {
            path: raw.clone(),
            source,
        })? {
            Whiteout::No => {}
            Whiteout::AufsMeta => continue,
            Whiteout::Opaque => {
                let dir = root
                    .mkdir_all(rel.parent().unwrap_or(Path::new("")))
                    .map_err(fail)?;
                // trusted.* for a root-mounted overlay, user.* for one mounted in a user
                // namespace (userxattr).
                dir.set_xattr("trusted.overlay.opaque", b"y")
                    .map_err(fail)?;
                dir.set_xattr("user.overlay.opaque", b"y").map_err(fail)?;
                continue;
            }
            Whiteout::Hides(hidden) => {
                let target = rel.with_file_name(hidden);
                make_node(&root, &target, SFlag::S_IFCHR, 0o600, 0, 0, (0, 0)).map_err(fail)?;
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
            let uid = header.uid().unwrap_or(0) as u32;
            let gid = header.gid().unwrap_or(0) as u32;
            make_node(&root, &rel, flag, mode, major, minor, (uid, gid)).map_err(fail)?;
            continue;
        }
        let unpacked = entry.unpack_in(dest).map_err(fail)?;
        if !unpacked {
            return Err(UnpackError::Escapes(raw));
        }
    }
    Ok(())
}

/// An error and its causes on one line (the tar crate wraps the I/O error that matters).
pub fn error_chain(e: &dyn std::error::Error) -> String {
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
fn sanitize(path: &Path) -> Result<PathBuf, UnpackError> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                return Err(UnpackError::Parent(path.to_path_buf()));
            }
        }
    }
    Ok(out)
}

/// Creates a device node or fifo at `rel` inside the layer, creating parents and replacing
/// what was there. Every step is resolved inside the layer's root.
fn make_node(
    root: &Root,
    rel: &Path,
    kind: SFlag,
    mode: u32,
    major: u32,
    minor: u32,
    owner: (u32, u32),
) -> std::io::Result<()> {
    let (dir, name) = root.parent(rel)?;
    dir.remove_all(&name)?;
    dir.mknod(
        &name,
        kind,
        mode,
        makedev(major.into(), minor.into()),
        Some(owner),
    )
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
        let err = unpack_layer(&tar[..], &dest).unwrap_err().to_string();
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
            let err = unpack_layer(&tar[..], dir.path()).unwrap_err().to_string();
            assert!(err.starts_with(name), "{name}: {err}");
            assert!(err.contains("whiteout"), "{name}: {err}");
        }
        let w = |s: &str| whiteout_of(OsStr::new(s)).map(|w| format!("{w:?}"));
        assert_eq!(w(".wh..wh.plnk"), Ok("AufsMeta".into()));
        assert_eq!(w(".wh..wh..opq"), Ok("Opaque".into()));
        assert_eq!(w(".wh.a"), Ok(r#"Hides("a")"#.into()));
        assert_eq!(w("a.wh."), Ok("No".into()));
    }

    #[test]
    fn names_that_are_not_utf8_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        for name in [&b"caf\xe9"[..], b"d\xff/", b"d\xff/.wh.gone\xfe"] {
            let mut h = tar::Header::new_gnu();
            let dir_entry = name.ends_with(b"/");
            h.set_entry_type(if dir_entry {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            });
            h.set_size(0);
            h.set_mode(0o755);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1);
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
        }
        let tar = b.into_inner().unwrap();
        unpack_layer(&tar[..], dir.path()).unwrap();
        assert!(dir.path().join(OsStr::from_bytes(b"caf\xe9")).is_file());
        let hidden = dir.path().join(OsStr::from_bytes(b"d\xff/gone\xfe"));
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::symlink_metadata(hidden)
            .unwrap()
            .file_type()
            .is_char_device());
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

    /// A layer whose symlink points outside, then a whiteout, an opaque marker and a device
    /// node under that symlink: each lands inside the layer (where the symlink resolves
    /// when the layer is the root) or fails; nothing is made outside.
    #[test]
    fn markers_and_nodes_under_a_symlink_stay_inside() {
        let header = |kind: tar::EntryType, mode: u32| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(0);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1);
            h
        };
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let dest = dir.path().join("layer");
        std::fs::create_dir(&dest).unwrap();
        let out = outside.path().display().to_string();
        for link in [out.clone(), format!("../../../../../../..{out}")] {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = header(tar::EntryType::Symlink, 0o777);
            let _ = std::fs::remove_file(dest.join("link"));
            b.append_link(&mut h, "link", &link).unwrap();
            for name in ["link/a/.wh..wh..opq", "link/b/.wh.gone"] {
                let mut h = header(tar::EntryType::Regular, 0o644);
                b.append_data(&mut h, name, &[][..]).unwrap();
            }
            let mut h = header(tar::EntryType::Char, 0o666);
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
            b.append_data(&mut h, "link/c/null", &[][..]).unwrap();
            let tar = b.into_inner().unwrap();
            let _ = unpack_layer(&tar[..], &dest);
            let left: Vec<_> = std::fs::read_dir(outside.path()).unwrap().collect();
            assert!(left.is_empty(), "written outside through {link}: {left:?}");
        }
        let inside = dest.join(out.trim_start_matches('/'));
        assert!(inside.join("a").is_dir());
        assert!(inside.join("c/null").exists());
    }
}
