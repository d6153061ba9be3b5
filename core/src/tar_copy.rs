//! `cp`'s tar streams, on both sides of the copy: a tree written as a stream whose top entry
//! takes a chosen name, and a stream extracted into a directory (inside a container or a
//! VM's guest, modes kept) or onto the host (set-user-ID and set-group-ID bits dropped).
//! The caller decides where this runs: in a child whose root is the container's.

use crate::tar_guard::HeaderGuard;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, ResolveFlag};
use nix::sys::stat::{Mode, SFlag};
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Writes `src` (a file or a directory tree, symlinks kept as links) as a tar stream whose
/// top entry is named `name`. The kernel's views mounted in a running container (/proc,
/// /sys, cgroups, devpts, mqueue...) are written as their directory alone, and sockets are
/// left out, as Docker's copy of a container's root file system has them: `cp CTR:/ -` is
/// the container's files, complete, not the kernel's state.
///
/// The tree is walked by descriptor: each directory opened without following a link, each
/// entry reached from its directory's descriptor by one name. A directory swapped for a
/// symlink while the copy runs (by a workload, or by another pod writing a host directory
/// a pod binds) is written as that link, never followed.
pub fn write_tar(src: &Path, name: &Path, out: impl Write) -> std::io::Result<()> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let meta = std::fs::symlink_metadata(src)?;
    if meta.is_dir() {
        let dir = nix::fcntl::open(
            src,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        // SAFETY: open returned a new descriptor that nothing else owns.
        append_tree(&mut b, unsafe { OwnedFd::from_raw_fd(dir) }, name)?;
    } else {
        append_leaf(&mut b, src, name)?;
    }
    b.into_inner()?.flush()
}

/// Appends the non-directory at `path` as `name`. It is first opened as a path only
/// (`O_PATH`, which runs no device's open): a device node, FIFO or socket is written as its
/// header alone, never opened (a copier is host root, outside the container's device
/// cgroup: opening a node the workload made, a watchdog's say, would act on the host's
/// device; a FIFO would hold the copy forever). A regular file is then opened without
/// following a link or blocking, and must be the same file; a symlink is written as a link.
fn append_leaf<W: Write>(b: &mut tar::Builder<W>, path: &Path, name: &Path) -> std::io::Result<()> {
    let (parent, entry) = match (path.parent(), path.file_name()) {
        (Some(p), Some(e)) => (
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            },
            e,
        ),
        _ => {
            return Err(std::io::Error::other(format!(
                "{}: no file name",
                path.display()
            )))
        }
    };
    let dir = nix::fcntl::open(
        parent,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    let dir = unsafe { OwnedFd::from_raw_fd(dir) };
    match leaf_kind(dir.as_fd(), entry)? {
        Leaf::Gone => Ok(()),
        Leaf::Link => b.append_path_with_name(path, name),
        Leaf::Node(meta) => append_node_with(b, &meta, name),
        Leaf::File(meta) => append_file_at(b, dir.as_fd(), entry, &meta, name),
    }
}

/// What a leaf is, seen through an `O_PATH` descriptor (nothing of it opened).
enum Leaf {
    Gone,
    Link,
    Node(std::fs::Metadata),
    File(std::fs::Metadata),
}

fn leaf_kind(dir: BorrowedFd, entry: &OsStr) -> std::io::Result<Leaf> {
    let opened = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        entry,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    );
    let fd = match opened {
        Err(Errno::ENOENT) => return Ok(Leaf::Gone),
        Err(e) => return Err(e.into()),
        // SAFETY: openat returned a new descriptor that nothing else owns.
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
    };
    let meta = std::fs::File::from(fd).metadata()?;
    Ok(if meta.file_type().is_symlink() {
        Leaf::Link
    } else if meta.is_file() {
        Leaf::File(meta)
    } else {
        Leaf::Node(meta)
    })
}

/// Opens the regular file `entry` of `dir` for reading (not following a link, not
/// blocking) and appends it if it is still the file `seen` described; a node swapped in
/// meanwhile is written as its header alone, a file swapped or removed is left out.
fn append_file_at<W: Write>(
    b: &mut tar::Builder<W>,
    dir: BorrowedFd,
    entry: &OsStr,
    seen: &std::fs::Metadata,
    name: &Path,
) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let opened = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        entry,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    );
    let fd = match opened {
        // Swapped for a link or removed since it was seen: left out.
        Err(Errno::ELOOP | Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
        // SAFETY: openat returned a new descriptor that nothing else owns.
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
    };
    let file = std::fs::File::from(fd);
    let meta = file.metadata()?;
    if (meta.dev(), meta.ino()) != (seen.dev(), seen.ino()) {
        return Ok(()); // another file since it was seen: left out
    }
    append_opened(b, OwnedFd::from(file), name)
}

/// [`append_leaf`] for the entry `entry` of directory `dir`.
fn append_leaf_at<W: Write>(
    b: &mut tar::Builder<W>,
    dir: BorrowedFd,
    entry: &OsStr,
    name: &Path,
) -> std::io::Result<()> {
    match leaf_kind(dir, entry)? {
        // Swapped for a link or removed since it was listed: left out.
        Leaf::Gone | Leaf::Link => Ok(()),
        Leaf::Node(meta) => append_node_with(b, &meta, name),
        Leaf::File(meta) => append_file_at(b, dir, entry, &meta, name),
    }
}

/// Appends the opened non-directory `fd` as `name`: a regular file's data, anything else
/// (a FIFO or device swapped in) as its header alone, never read.
fn append_opened<W: Write>(
    b: &mut tar::Builder<W>,
    fd: OwnedFd,
    name: &Path,
) -> std::io::Result<()> {
    let file = std::fs::File::from(fd);
    let meta = file.metadata()?;
    if !meta.is_file() {
        return append_node_with(b, &meta, name);
    }
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(meta.len());
    // Exactly the size the header announces, even if the file grows meanwhile.
    b.append_data(&mut header, name, file.take(meta.len()))
}

/// Appends a node (device, FIFO; anything not a regular file or directory) of metadata
/// `meta` as `name`: its header alone.
fn append_node_with<W: Write>(
    b: &mut tar::Builder<W>,
    meta: &std::fs::Metadata,
    name: &Path,
) -> std::io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
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
fn is_kernel_view(dir: BorrowedFd) -> std::io::Result<bool> {
    let fs = nix::sys::statfs::fstatfs(dir).map_err(std::io::Error::from)?;
    Ok(KERNEL_VIEWS.contains(&(fs.filesystem_type().0 as i64)))
}

/// A header for an entry of kind `kind` from its status.
fn header_of(st: &nix::sys::stat::FileStat, kind: tar::EntryType) -> std::io::Result<tar::Header> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(u64::from(st.st_uid));
    h.set_gid(u64::from(st.st_gid));
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(0);
    if kind == tar::EntryType::Char || kind == tar::EntryType::Block {
        h.set_device_major(libc::major(st.st_rdev))?;
        h.set_device_minor(libc::minor(st.st_rdev))?;
    }
    Ok(h)
}

/// Appends directory `dir` (an open descriptor) as `name` and, unless it is a kernel view,
/// what it holds, each entry reached from `dir` by its name without following it.
fn append_tree<W: Write>(
    b: &mut tar::Builder<W>,
    dir: OwnedFd,
    name: &Path,
) -> std::io::Result<()> {
    let st = nix::sys::stat::fstat(dir.as_raw_fd())?;
    // The copy of `/` (named `.`) has no top entry, only what it holds.
    if !name.as_os_str().is_empty() && name != Path::new(".") {
        let mut h = header_of(&st, tar::EntryType::Directory)?;
        b.append_data(&mut h, name, std::io::empty())?;
    }
    if is_kernel_view(dir.as_fd())? {
        return Ok(());
    }
    let listing = nix::dir::Dir::from_fd(nix::unistd::dup(dir.as_raw_fd())?)?;
    let mut names: Vec<std::ffi::OsString> = listing
        .into_iter()
        .filter_map(|e| e.ok())
        .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
        .filter(|n| n != "." && n != "..")
        .collect();
    names.sort();
    for entry in names {
        let inside = name.join(&entry);
        let st = match nix::sys::stat::fstatat(
            Some(dir.as_raw_fd()),
            entry.as_os_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue, // gone since it was listed
            Err(e) => return Err(e.into()),
        };
        match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFDIR => match nix::fcntl::openat(
                Some(dir.as_raw_fd()),
                entry.as_os_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                // SAFETY: openat returned a new descriptor that nothing else owns.
                Ok(child) => append_tree(b, unsafe { OwnedFd::from_raw_fd(child) }, &inside)?,
                // Swapped for a link or a file since its status was read: not followed.
                Err(Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT) => continue,
                Err(e) => return Err(e.into()),
            },
            SFlag::S_IFLNK => {
                let target = nix::fcntl::readlinkat(Some(dir.as_raw_fd()), entry.as_os_str())?;
                let mut h = header_of(&st, tar::EntryType::Symlink)?;
                b.append_link(&mut h, &inside, Path::new(&target))?;
            }
            SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO => {
                let kind = match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
                    SFlag::S_IFCHR => tar::EntryType::Char,
                    SFlag::S_IFBLK => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                };
                let mut h = header_of(&st, kind)?;
                b.append_data(&mut h, &inside, std::io::empty())?;
            }
            SFlag::S_IFSOCK => {}
            _ => append_leaf_at(b, dir.as_fd(), &entry, &inside)?,
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
    /// An entry lies outside the name the copy asked for (a stream a guest forged).
    #[error("{}: not under {}, the name the copy asked for", path.display(), top.display())]
    Foreign { path: PathBuf, top: PathBuf },
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
    extract_masked(input, dest, as_is, 0, keep_owners, None)
}

/// Extracts a tar stream that came out of a container at `dest` on the host, as `cp` does:
/// into `dest` when it is a directory, else as `dest` itself: the stream's top entry takes
/// `dest`'s name (extracted into a temporary sibling, then renamed, so tar's own checks
/// keep every entry inside). Set-user-ID and set-group-ID bits are dropped, also with
/// `keep_owners` (`cp -a`: entries take the uid and gid the stream names).
///
/// `top` is the name the stream was asked for ([`top_name`] of the source): an entry
/// outside it is refused, so a stream forged in a VM's guest cannot write beside it in
/// `dest` (`~/.ssh` when copying into a home directory).
pub fn extract_on_host(
    input: impl Read,
    dest: &Path,
    keep_owners: bool,
    top: &Path,
) -> Result<(), ExtractError> {
    extract_masked(
        input,
        dest,
        false,
        HOST_DROPPED_BITS,
        keep_owners,
        Some(top),
    )
}

/// [`extract`] with the mode bits in `mask` cleared from every entry (`as_is`: a `-`
/// stream goes into `dest` as it is).
fn extract_masked(
    input: impl Read,
    dest: &Path,
    as_is: bool,
    mask: u32,
    keep_owners: bool,
    top: Option<&Path>,
) -> Result<(), ExtractError> {
    let how = Placing { mask, keep_owners };
    if as_is || dest.is_dir() {
        return unpack_beneath(input, dest, &how, top);
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
    unpack_beneath(input, tmp.path(), &how, top)?;
    let top = std::fs::read_dir(tmp.path())?
        .flatten()
        .next()
        .ok_or(ExtractError::Empty)?;
    std::fs::rename(top.path(), dest).map_err(write_error(dest))
}

/// How entries are placed: mode bits dropped, and whether the stream's owners are kept.
struct Placing {
    mask: u32,
    keep_owners: bool,
}

/// How every entry's directory is reached below the destination: never through a
/// symlink (nor /proc's magic links), never above it.
const BENEATH: ResolveFlag = ResolveFlag::RESOLVE_BENEATH
    .union(ResolveFlag::RESOLVE_NO_SYMLINKS)
    .union(ResolveFlag::RESOLVE_NO_MAGICLINKS);

/// Extracts `input` below the directory `dest`, which others may be writing meanwhile (a
/// running workload, a container sharing a volume). `dest` is opened once; each entry's
/// directory is then resolved beneath it by the kernel without following any symlink, and
/// the entry is made there with the `*at` call that does not follow its name, its owner,
/// mode and time set through its own descriptor. A directory swapped for a symlink makes
/// the entry fail: it can never redirect it, nor a `chmod`, anywhere else. With `top`,
/// every entry must lie under that name (a stream from a VM's guest is not trusted to).
fn unpack_beneath(
    input: impl Read,
    dest: &Path,
    how: &Placing,
    top: Option<&Path>,
) -> Result<(), ExtractError> {
    let root = nix::fcntl::open(
        dest,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ExtractError::Write {
        path: dest.to_path_buf(),
        source: e.into(),
    })?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    let root = unsafe { OwnedFd::from_raw_fd(root) };
    let mut archive = tar::Archive::new(HeaderGuard::new(input));
    for entry in archive.entries()? {
        let mut entry = entry.map_err(ExtractError::Malformed)?;
        let raw = entry.path()?.into_owned();
        let rel = relative(&raw)?;
        if let Some(top) = top.filter(|t| *t != Path::new(".")) {
            if rel.components().next().map(|c| c.as_os_str()) != Some(top.as_os_str()) {
                return Err(ExtractError::Foreign {
                    path: raw,
                    top: top.to_path_buf(),
                });
            }
        }
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            continue; // the stream's own root (`./`): the destination is not changed
        };
        let dir = beneath_dir(root.as_fd(), parent).map_err(write_error(&raw))?;
        place(&mut entry, root.as_fd(), dir.as_fd(), name, how).map_err(write_error(&raw))?;
    }
    Ok(())
}

/// An archive path made relative (a leading `/` and `.` dropped); `..` is refused.
fn relative(path: &Path) -> Result<PathBuf, ExtractError> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                return Err(ExtractError::LeavesDestination(path.to_path_buf()))
            }
            _ => {}
        }
    }
    Ok(out)
}

fn openat2(dir: BorrowedFd, path: &Path, flags: OFlag) -> std::io::Result<OwnedFd> {
    crate::linux::inroot::openat2_errno(dir, path, flags, BENEATH).map_err(|e| match e {
        Errno::ELOOP => std::io::Error::other(
            "a directory on the way is a symbolic link (a copy never follows one)",
        ),
        e => e.into(),
    })
}

/// The directory `path` below `root` (made with its missing parents, 0755), reached
/// without following a symlink.
fn beneath_dir(root: BorrowedFd, path: &Path) -> std::io::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
    let mut dir = openat2(root, Path::new("."), flags)?;
    for part in path.components() {
        let name = part.as_os_str();
        let made =
            nix::sys::stat::mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(0o755));
        match made {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
        dir = openat2(dir.as_fd(), Path::new(name), flags)?;
    }
    Ok(dir)
}

/// What is at `name` in `dir` (not following it), if anything.
fn kind_at(dir: BorrowedFd, name: &OsStr) -> std::io::Result<Option<SFlag>> {
    match nix::sys::stat::fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Makes room for a non-directory at `name`: what is there goes, unless it is a directory.
fn clear_for_file(dir: BorrowedFd, name: &OsStr) -> std::io::Result<()> {
    match kind_at(dir, name)? {
        None => Ok(()),
        Some(SFlag::S_IFDIR) => Err(std::io::Error::other(
            "a directory is there (a copy does not replace a directory with a file)",
        )),
        Some(_) => nix::unistd::unlinkat(
            Some(dir.as_raw_fd()),
            name,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )
        .map_err(Into::into),
    }
}

/// Places one entry as `name` in `dir` (`root`: the destination, for hard links' targets).
fn place<R: Read>(
    entry: &mut tar::Entry<R>,
    root: BorrowedFd,
    dir: BorrowedFd,
    name: &OsStr,
    how: &Placing,
) -> std::io::Result<()> {
    let header = entry.header();
    let kind = header.entry_type();
    let mode = (header.mode()? & 0o7777) & !how.mask;
    let owner = match how.keep_owners {
        true => Some((header.uid()? as u32, header.gid()? as u32)),
        false => None,
    };
    let mtime = header.mtime().unwrap_or(0) as i64;
    let fd = match kind {
        tar::EntryType::Directory => {
            let made = nix::sys::stat::mkdirat(
                Some(dir.as_raw_fd()),
                name,
                Mode::from_bits_truncate(0o700),
            );
            match made {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
            openat2(dir, Path::new(name), OFlag::O_RDONLY | OFlag::O_DIRECTORY)?
        }
        tar::EntryType::Symlink => {
            let target = entry
                .link_name()?
                .ok_or_else(|| std::io::Error::other("a symbolic link without a target"))?;
            clear_for_file(dir, name)?;
            nix::unistd::symlinkat(target.as_ref(), Some(dir.as_raw_fd()), name)?;
            if let Some((uid, gid)) = owner {
                nix::unistd::fchownat(
                    Some(dir.as_raw_fd()),
                    name,
                    Some(uid.into()),
                    Some(gid.into()),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )?;
            }
            return Ok(());
        }
        tar::EntryType::Link => {
            let target = entry
                .link_name()?
                .ok_or_else(|| std::io::Error::other("a hard link without a target"))?;
            let target = relative(&target).map_err(|_| {
                std::io::Error::other("a hard link's target leaves the destination")
            })?;
            let (Some(tdir), Some(tname)) = (target.parent(), target.file_name()) else {
                return Err(std::io::Error::other(
                    "a hard link to the destination itself",
                ));
            };
            let tdir = openat2(root, tdir, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
            clear_for_file(dir, name)?;
            nix::unistd::linkat(
                Some(tdir.as_raw_fd()),
                tname,
                Some(dir.as_raw_fd()),
                name,
                AtFlags::empty(),
            )?;
            return Ok(());
        }
        tar::EntryType::Fifo => {
            clear_for_file(dir, name)?;
            nix::sys::stat::mknodat(
                Some(dir.as_raw_fd()),
                name,
                SFlag::S_IFIFO,
                Mode::from_bits_truncate(0o600),
                0,
            )?;
            // Opened for reading without blocking: a descriptor to set its metadata through.
            openat2(dir, Path::new(name), OFlag::O_RDONLY | OFlag::O_NONBLOCK)?
        }
        // Device nodes become empty files: a copy never makes a device.
        _ => {
            clear_for_file(dir, name)?;
            let flags = OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_EXCL
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC;
            let file = nix::fcntl::openat(
                Some(dir.as_raw_fd()),
                name,
                flags,
                Mode::from_bits_truncate(0o600),
            )?;
            // SAFETY: openat returned a new descriptor that nothing else owns.
            let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(file) });
            if !kind.is_character_special() && !kind.is_block_special() {
                std::io::copy(entry, &mut file)?;
            }
            OwnedFd::from(file)
        }
    };
    set_metadata(fd.as_fd(), owner, mode, mtime)
}

/// Owner, then mode (a chown clears set-ID bits), then times, all through `fd` (no path:
/// the copy may run chrooted where no /proc is mounted).
fn set_metadata(
    fd: BorrowedFd,
    owner: Option<(u32, u32)>,
    mode: u32,
    mtime: i64,
) -> std::io::Result<()> {
    if let Some((uid, gid)) = owner {
        nix::unistd::fchown(fd.as_raw_fd(), Some(uid.into()), Some(gid.into()))?;
    }
    nix::sys::stat::fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(mode))?;
    let when = nix::sys::time::TimeSpec::new(mtime, 0);
    nix::sys::stat::futimens(fd.as_raw_fd(), &when, &when)?;
    Ok(())
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

    /// A thread that swaps `a` and `b` (renameat2 RENAME_EXCHANGE) over and over until
    /// dropped: what a writer racing a copy does.
    struct Swapper {
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Swapper {
        fn start(a: PathBuf, b: PathBuf) -> Swapper {
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let running = stop.clone();
            let thread = std::thread::spawn(move || {
                while !running.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = nix::fcntl::renameat2(
                        None,
                        &a,
                        None,
                        &b,
                        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                    );
                }
            });
            Swapper {
                stop,
                thread: Some(thread),
            }
        }
    }

    impl Drop for Swapper {
        fn drop(&mut self) {
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
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
            Path::new("top"),
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

    /// A stream of `dir/` (mode 0777) holding `dir/file.txt`.
    fn stream_of_open_dir() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o777);
        dir.set_size(0);
        b.append_data(&mut dir, "dir", std::io::empty()).unwrap();
        let mut file = tar::Header::new_gnu();
        file.set_mode(0o644);
        file.set_size(2);
        b.append_data(&mut file, "dir/file.txt", &b"hi"[..])
            .unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_while_extracting_redirects_nothing() {
        // What a workload racing `cp` does: the directory the copy writes into is swapped,
        // over and over, with a symlink to a directory it must not touch.
        let top = tempfile::tempdir().unwrap();
        let dest = top.path().join("dest");
        let protected = top.path().join("bin");
        std::fs::create_dir_all(dest.join("dir")).unwrap();
        std::fs::create_dir(&protected).unwrap();
        std::fs::set_permissions(&protected, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("../bin", dest.join("swap")).unwrap();
        let racer = Swapper::start(dest.join("dir"), dest.join("swap"));
        let mut redirected = None;
        for round in 0..4000 {
            let _ = extract(&stream_of_open_dir()[..], &dest, true, false);
            if mode(&protected) != 0o755 || protected.join("file.txt").exists() {
                redirected = Some(round);
                break;
            }
        }
        drop(racer);
        assert_eq!(redirected, None, "the copy was led into the link's target");
    }

    /// A device node the workload made (here /dev/null's numbers) is copied out as its
    /// header, never opened: the copier is host root outside the container's device cgroup,
    /// and a device's open can act on the host (a watchdog's arms it).
    #[test]
    fn device_nodes_copied_out_are_never_opened() {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let top = tempfile::tempdir().unwrap();
        let src = top.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let node = src.join("node");
        nix::sys::stat::mknod(
            &node,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        let watch = Inotify::init(InitFlags::IN_NONBLOCK).unwrap();
        watch.add_watch(&node, AddWatchFlags::IN_OPEN).unwrap();
        for (path, name) in [(&src, "src"), (&node, "node")] {
            let mut out = Vec::new();
            write_tar(path, Path::new(name), &mut out).unwrap();
            let mut archive = tar::Archive::new(&out[..]);
            let kinds: Vec<tar::EntryType> = archive
                .entries()
                .unwrap()
                .map(|e| e.unwrap().header().entry_type())
                .collect();
            assert!(kinds.contains(&tar::EntryType::Char), "{kinds:?}");
        }
        assert!(watch.read_events().is_err(), "the device node was opened");
    }

    #[test]
    fn a_fifo_swapped_in_for_a_file_being_copied_out_never_holds_the_copy() {
        // What a workload racing `cp` out does: the file it lists is swapped, over and
        // over, with a FIFO that nobody writes.
        let top = tempfile::tempdir().unwrap();
        let src = top.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("f"), "data").unwrap();
        nix::unistd::mkfifo(&top.path().join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        let racer = Swapper::start(top.path().join("src/f"), top.path().join("fifo"));
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for _ in 0..3000 {
                let _ = write_tar(&src, Path::new("src"), std::io::sink());
            }
            let _ = done.send(());
        });
        // Bounded: a copy held by the FIFO never ends (the thread is left behind).
        let ended = finished.recv_timeout(std::time::Duration::from_secs(60));
        drop(racer);
        assert!(ended.is_ok(), "a copy blocked on the FIFO");
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_while_copying_out_is_never_followed() {
        // Another writer of the copied tree (a pod sharing a host directory that a pod
        // binds) swaps a directory in it, over and over, with a link to a secret's folder.
        let top = tempfile::tempdir().unwrap();
        let src = top.path().join("src");
        std::fs::create_dir_all(src.join("dir")).unwrap();
        std::fs::write(src.join("dir/plain"), "shared").unwrap();
        let secret = top.path().join("secret");
        std::fs::create_dir(&secret).unwrap();
        std::fs::write(secret.join("key"), "host only").unwrap();
        std::os::unix::fs::symlink(&secret, src.join("swap")).unwrap();
        let racer = Swapper::start(src.join("dir"), src.join("swap"));
        let mut leaked = None;
        for round in 0..3000 {
            let mut out = Vec::new();
            let _ = write_tar(&src, Path::new("src"), &mut out);
            if out.windows(9).any(|w| w == b"host only") {
                leaked = Some(round);
                break;
            }
        }
        drop(racer);
        assert_eq!(leaked, None, "the copy read through the link");
    }

    #[test]
    fn an_existing_file_is_replaced_not_written_through() {
        // A symlink where the copy's file goes is replaced by the file: its target keeps
        // its content.
        let top = tempfile::tempdir().unwrap();
        let dest = top.path().join("dest");
        std::fs::create_dir_all(dest.join("dir")).unwrap();
        let target = top.path().join("secret");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, dest.join("dir/file.txt")).unwrap();
        extract(&stream_of_open_dir()[..], &dest, true, false).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(
            std::fs::read_to_string(dest.join("dir/file.txt")).unwrap(),
            "hi"
        );
        assert_eq!(mode(&dest.join("dir")), 0o777);
    }

    #[test]
    fn a_copy_out_takes_only_entries_under_the_name_it_asked_for() {
        // A guest that forges the stream of `cp vm:/out ~/` cannot write ~/.ssh.
        let home = tempfile::tempdir().unwrap();
        let err = extract_on_host(
            &stream_of_open_dir()[..],
            home.path(),
            false,
            Path::new("out"),
        )
        .unwrap_err();
        assert!(matches!(err, ExtractError::Foreign { .. }), "{err:?}");
        assert!(!home.path().join("dir").exists());
        extract_on_host(
            &stream_of_open_dir()[..],
            home.path(),
            false,
            Path::new("dir"),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(home.path().join("dir/file.txt")).unwrap(),
            "hi"
        );
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
        let err = extract_on_host(
            &stream_with_special_bits()[..],
            &missing,
            false,
            Path::new("top"),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: no such directory",
                dir.path().join("missing").display()
            )
        );
        let empty = tar::Builder::new(Vec::new()).into_inner().unwrap();
        let err = extract_on_host(&empty[..], &dir.path().join("out"), false, Path::new("top"))
            .unwrap_err();
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
