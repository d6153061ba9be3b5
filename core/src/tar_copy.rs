//! `cp`'s tar streams, on both sides of the copy: a tree written as a stream whose top entry
//! takes a chosen name, and a stream extracted into a directory (inside a container or a
//! VM's guest, modes kept) or onto the host (set-user-ID and set-group-ID bits dropped).
//! The caller decides where this runs: in a child whose root is the container's.

use crate::tar_guard::HeaderGuard;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Writes `src` (a file or a directory tree, symlinks kept as links) as a tar stream whose
/// top entry is named `name`. The kernel's views mounted in a running container (/proc,
/// /sys, cgroups, devpts, mqueue...) are written as their directory alone, and sockets are
/// left out, as Docker's copy of a container's root file system has them: `cp CTR:/ -` is
/// the container's files, complete, not the kernel's state.
pub fn write_tar(src: &Path, name: &Path, out: impl Write) -> std::io::Result<()> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let meta = std::fs::symlink_metadata(src)?;
    if meta.is_dir() {
        append_tree(&mut b, src, name)?;
    } else {
        b.append_path_with_name(src, name)?;
    }
    b.into_inner()?.flush()
}

/// Appends the device node or fifo at `path` as `name`: its header alone (the tar crate's
/// own path for these does not take a name of ours).
fn append_node<W: Write>(b: &mut tar::Builder<W>, path: &Path, name: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::symlink_metadata(path)?;
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
    let kind = meta.file_type();
    header.set_entry_type(if kind.is_char_device() {
        tar::EntryType::Char
    } else if kind.is_block_device() {
        tar::EntryType::Block
    } else {
        tar::EntryType::Fifo
    });
    let dev = meta.rdev();
    header.set_device_major(libc::major(dev))?;
    header.set_device_minor(libc::minor(dev))?;
    header.set_size(0);
    b.append_data(&mut header, name, std::io::empty())
}

/// File systems whose contents are the kernel's state, never a container's files.
const KERNEL_VIEWS: [i64; 13] = [
    0x9fa0,      // proc
    0x6265_6572, // sysfs
    0x0027_e0eb, // cgroup
    0x6367_7270, // cgroup2
    0x1cd1,      // devpts
    0x1980_0202, // mqueue
    0x6462_6720, // debugfs
    0x7363_6673, // securityfs
    0x7472_6163, // tracefs
    0xcafe_4a11, // bpf
    0x6165_676c, // pstore
    0x6265_6570, // configfs
    0x4249_4e4d, // binfmt_misc
];

/// Whether the directory `dir` is the root or part of a kernel view.
fn is_kernel_view(dir: &Path) -> std::io::Result<bool> {
    let fs = nix::sys::statfs::statfs(dir).map_err(std::io::Error::from)?;
    Ok(KERNEL_VIEWS.contains(&(fs.filesystem_type().0 as i64)))
}

/// Appends directory `dir` as `name` and, unless it is a kernel view, what it holds
/// (in name order, so the stream is the same each time).
fn append_tree<W: Write>(b: &mut tar::Builder<W>, dir: &Path, name: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    // The copy of `/` (named `.`) has no top entry, only what it holds.
    if !name.as_os_str().is_empty() && name != Path::new(".") {
        b.append_path_with_name(dir, name)?;
    }
    if is_kernel_view(dir)? {
        return Ok(());
    }
    let mut entries = std::fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let kind = entry.file_type()?;
        let (path, inside) = (entry.path(), name.join(entry.file_name()));
        if kind.is_dir() {
            append_tree(b, &path, &inside)?;
        } else if kind.is_char_device() || kind.is_block_device() || kind.is_fifo() {
            append_node(b, &path, &inside)?;
        } else if !kind.is_socket() {
            b.append_path_with_name(&path, &inside)?;
        }
    }
    Ok(())
}

/// Mode bits dropped from what `cp` writes on the host: capsa extracts as root, so a
/// set-user-ID or set-group-ID file a workload made would be a root-owned one on the host
/// (Docker's client extracts as the calling user, whose files cannot carry root's bits).
const HOST_DROPPED_BITS: u32 = libc::S_ISUID | libc::S_ISGID;

/// Why a tar stream could not be extracted; each names the entry or directory concerned.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The stream could not be read.
    #[error(transparent)]
    Read(#[from] std::io::Error),
    /// A header is not a tar header, or the guard refused it.
    #[error("malformed tar stream: {0}")]
    Malformed(#[source] std::io::Error),
    /// An entry could not be written, or a directory the extraction uses cannot be.
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An entry's path would leave the destination (`..`, or through a symlink).
    #[error("{}: path leaves the destination", .0.display())]
    LeavesDestination(PathBuf),
    /// The destination's parent directory does not exist.
    #[error("{}: no such directory", .0.display())]
    NoDirectory(PathBuf),
    /// The stream held no entry to place as the destination.
    #[error("the copy is empty")]
    Empty,
}

/// The error of writing at `path`.
fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> ExtractError + '_ {
    move |source| ExtractError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Extracts a tar stream at `dest` inside a container (or a VM's guest): modes are kept,
/// set-user-ID and set-group-ID bits too (what a container holds is its own business).
/// Entries belong to the extracting user (the container's root), or with `keep_owners`
/// (`cp -a`) to the uid and gid the stream names, as Docker's. See [`extract_on_host`]
/// for the placement rules.
pub fn extract(
    input: impl Read,
    dest: &Path,
    as_is: bool,
    keep_owners: bool,
) -> Result<(), ExtractError> {
    extract_masked(input, dest, as_is, 0, keep_owners)
}

/// Extracts a tar stream that came out of a container at `dest` on the host, as `cp` does:
/// into `dest` when it is a directory, else as `dest` itself: the stream's top entry takes
/// `dest`'s name (extracted into a temporary sibling, then renamed, so tar's own checks
/// keep every entry inside). Set-user-ID and set-group-ID bits are dropped, also with
/// `keep_owners` (`cp -a`: entries take the uid and gid the stream names).
pub fn extract_on_host(
    input: impl Read,
    dest: &Path,
    keep_owners: bool,
) -> Result<(), ExtractError> {
    extract_masked(input, dest, false, HOST_DROPPED_BITS, keep_owners)
}

/// [`extract`] with the mode bits in `mask` cleared from every entry (`as_is`: a `-`
/// stream goes into `dest` as it is).
fn extract_masked(
    input: impl Read,
    dest: &Path,
    as_is: bool,
    mask: u32,
    keep_owners: bool,
) -> Result<(), ExtractError> {
    let unpack = |dir: &Path| -> Result<(), ExtractError> {
        // Oversized long-name and PAX headers are refused before tar buffers them.
        let mut archive = tar::Archive::new(HeaderGuard::new(input));
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(keep_owners);
        archive.set_mask(mask);
        archive.set_preserve_mtime(true);
        archive.set_overwrite(true);
        for entry in archive.entries()? {
            let mut entry = entry.map_err(ExtractError::Malformed)?;
            let path = entry.path()?.into_owned();
            if !entry.unpack_in(dir).map_err(write_error(&path))? {
                return Err(ExtractError::LeavesDestination(path));
            }
        }
        Ok(())
    };
    if as_is || dest.is_dir() {
        return unpack(dest);
    }
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(ExtractError::NoDirectory(parent.to_path_buf()));
    }
    let tmp = tempfile::Builder::new()
        .prefix(".capsa-cp-")
        .tempdir_in(parent)
        .map_err(write_error(parent))?;
    unpack(tmp.path())?;
    let top = std::fs::read_dir(tmp.path())?
        .flatten()
        .next()
        .ok_or(ExtractError::Empty)?;
    std::fs::rename(top.path(), dest).map_err(write_error(dest))
}

/// The name the copied tree gets: the source's last component (`/` copies as `.`).
pub fn top_name(src: &Path) -> PathBuf {
    src.file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A stream holding `top/` (set-group-ID) and `top/tool` (set-user-ID).
    fn stream_with_special_bits() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o2755);
        dir.set_size(0);
        b.append_data(&mut dir, "top", std::io::empty()).unwrap();
        let mut file = tar::Header::new_gnu();
        file.set_mode(0o4755);
        file.set_size(2);
        b.append_data(&mut file, "top/tool", &b"#!"[..]).unwrap();
        b.into_inner().unwrap()
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn copies_to_the_host_lose_setuid_and_setgid_and_copies_inside_keep_them() {
        let host = tempfile::tempdir().unwrap();
        extract_on_host(
            &stream_with_special_bits()[..],
            &host.path().join("out"),
            false,
        )
        .unwrap();
        assert_eq!(mode(&host.path().join("out")), 0o755);
        assert_eq!(mode(&host.path().join("out/tool")), 0o755);
        let inside = tempfile::tempdir().unwrap();
        extract(&stream_with_special_bits()[..], inside.path(), true, false).unwrap();
        assert_eq!(mode(&inside.path().join("top")), 0o2755);
        assert_eq!(mode(&inside.path().join("top/tool")), 0o4755);
    }

    /// A stream with one file entry named `name` as given (the builder refuses `..`, so the
    /// header's name field is written directly).
    fn stream_with_raw_name(name: &str) -> Vec<u8> {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_mode(0o644);
        header.set_size(2);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        let mut out = header.as_bytes().to_vec();
        out.extend_from_slice(b"hi");
        out.resize(1024, 0);
        out.extend_from_slice(&[0; 1024]);
        out
    }

    #[test]
    fn an_entry_climbing_out_is_refused_and_nothing_lands_outside() {
        let top = tempfile::tempdir().unwrap();
        let dest = top.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let err = extract(&stream_with_raw_name("../escaped")[..], &dest, true, false).unwrap_err();
        assert!(
            matches!(&err, ExtractError::LeavesDestination(p) if p == Path::new("../escaped")),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "../escaped: path leaves the destination");
        assert!(!top.path().join("escaped").exists());
    }

    #[test]
    fn a_destination_under_no_directory_an_empty_stream_and_garbage_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing/out");
        let err = extract_on_host(&stream_with_special_bits()[..], &missing, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: no such directory",
                dir.path().join("missing").display()
            )
        );
        let empty = tar::Builder::new(Vec::new()).into_inner().unwrap();
        let err = extract_on_host(&empty[..], &dir.path().join("out"), false).unwrap_err();
        assert!(matches!(err, ExtractError::Empty), "{err:?}");
        assert!(!dir.path().join("out").exists());
        let err = extract(&[0x41u8; 1024][..], dir.path(), true, false).unwrap_err();
        assert!(matches!(err, ExtractError::Malformed(_)), "{err:?}");
        assert!(
            err.to_string().starts_with("malformed tar stream: "),
            "{err}"
        );
        // The cause is kept for whoever walks the chain.
        assert!(std::error::Error::source(&err).is_some());
    }
}

#[cfg(test)]
mod root_copy_tests {
    #[test]
    fn a_root_copy_names_entries_inside_dot() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), "x").unwrap();
        let mut out = Vec::new();
        super::write_tar(dir.path(), std::path::Path::new("."), &mut out).unwrap();
        let mut a = tar::Archive::new(&out[..]);
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["etc", "etc/passwd"]);
    }
}
