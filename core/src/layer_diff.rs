//! An overlay's writable layer (its upper directory) written as a layer tar in the form
//! OCI and Docker images carry: overlayfs's whiteouts (character devices 0:0) become
//! `.wh.NAME` entries, an opaque directory (`trusted.overlay.opaque=y`, or `user.` for an
//! overlay mounted in a user namespace) gets a `.wh..wh..opq` entry after its own, hard
//! links within the layer are kept as links, sockets are left out. `commit` makes an
//! image layer of a container's changes with it, and a Dockerfile build can make one of a
//! step's; in the engine (the host's upper directory) or in a VM's guest alike, which is
//! why it lives here.
//!
//! The tree is walked by descriptor and nothing is followed: every name is opened with
//! `O_NOFOLLOW` relative to its directory, and a file is read only once its descriptor is
//! checked to be the regular file its entry describes, so a workload swapping a directory
//! for a symlink while the layer is read gets its symlink written, never the host path.
//! The order is by name at every level, so the same tree gives the same bytes.
//!
//! An upper directory that relies on overlayfs features a layer cannot express (a renamed
//! directory's `redirect`, a `metacopy` file whose data is below) is refused by name.

use std::collections::{BTreeSet, HashMap};
use std::ffi::{CStr, CString, OsStr};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The prefix of a whiteout entry.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The entry marking an opaque directory.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// What to leave out of the layer and how to write owners.
#[derive(Debug, Clone, Default)]
pub struct LayerOptions {
    /// Paths (relative to the upper directory, as `proc` or `etc/hosts`) left out with
    /// everything below them: the mount points capsa made, not the workload.
    pub skipped: BTreeSet<PathBuf>,
    /// A user namespace's mapping: host IDs `[base, base + len)` are written as
    /// `ID - base` (the owners the container saw).
    pub id_shift: Option<(u32, u32)>,
}

/// Why the layer could not be written; each names the path concerned.
#[derive(Debug, thiserror::Error)]
pub enum LayerDiffError {
    /// An entry could not be read.
    #[error("{}: {source}", .path.display())]
    Read {
        /// The path in the layer.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The layer uses an overlayfs feature a layer tar cannot express.
    #[error("{}: the writable layer holds an overlayfs {feature}, which a layer cannot carry", .path.display())]
    Unsupported {
        /// The path in the layer.
        path: PathBuf,
        /// `redirect` or `metacopy`.
        feature: &'static str,
    },
    /// The tar stream could not be written.
    #[error("writing the layer: {0}")]
    Write(#[source] std::io::Error),
}

/// What was written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Entries in the stream (0: the layer is empty).
    pub entries: u64,
}

/// Writes the upper directory `upper` as a layer tar to `out`.
pub fn write_layer(
    upper: &Path,
    options: &LayerOptions,
    out: impl Write,
) -> Result<Written, LayerDiffError> {
    let read_err = |source| LayerDiffError::Read {
        path: upper.to_path_buf(),
        source,
    };
    let top = open_dir(None, upper.as_os_str().as_bytes()).map_err(read_err)?;
    let mut walk = Walk {
        options,
        builder: tar::Builder::new(out),
        links: HashMap::new(),
        pending: Vec::new(),
        written: Written::default(),
    };
    walk.dir(top.as_fd(), Path::new(""))?;
    walk.builder
        .into_inner()
        .and_then(|mut w| w.flush())
        .map_err(LayerDiffError::Write)?;
    Ok(walk.written)
}

struct Walk<'a, W: Write> {
    options: &'a LayerOptions,
    builder: tar::Builder<W>,
    /// (device, inode) of each multiply-linked file written, and its name.
    links: HashMap<(u64, u64), PathBuf>,
    /// Directories holding skipped paths, not written yet (see [`Walk::dir_entry`]).
    pending: Vec<(PathBuf, tar::Header)>,
    written: Written,
}

impl<W: Write> Walk<'_, W> {
    /// Writes what directory `dir` (at `path` in the layer) holds.
    fn dir(&mut self, dir: BorrowedFd, path: &Path) -> Result<(), LayerDiffError> {
        let names = entries(dir).map_err(|source| LayerDiffError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        for name in names {
            let child = path.join(OsStr::from_bytes(name.to_bytes()));
            if self.options.skipped.contains(&child) {
                continue;
            }
            let st = match nix::sys::stat::fstatat(
                Some(dir.as_raw_fd()),
                name.as_c_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(st) => st,
                Err(nix::errno::Errno::ENOENT) => continue, // gone meanwhile
                Err(e) => return Err(read_error(&child, e.into())),
            };
            self.entry(dir, &name, &st, &child)?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        dir: BorrowedFd,
        name: &CStr,
        st: &libc::stat,
        path: &Path,
    ) -> Result<(), LayerDiffError> {
        let kind = st.st_mode & libc::S_IFMT;
        let mut header = self.header(st);
        match kind {
            libc::S_IFCHR if st.st_rdev == 0 => {
                let file = OsStr::from_bytes(name.to_bytes()).to_string_lossy();
                let whiteout = path.with_file_name(format!("{WHITEOUT_PREFIX}{file}"));
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o600);
                self.append(&mut header, &whiteout, std::io::empty())
            }
            libc::S_IFDIR => {
                let sub = open_dir(Some(dir), name.to_bytes()).map_err(|e| read_error(path, e))?;
                if has_xattr(
                    sub.as_fd(),
                    &["trusted.overlay.redirect", "user.overlay.redirect"],
                ) {
                    return Err(LayerDiffError::Unsupported {
                        path: path.to_path_buf(),
                        feature: "redirect",
                    });
                }
                header.set_entry_type(tar::EntryType::Directory);
                self.dir_entry(sub.as_fd(), st, header, path)
            }
            libc::S_IFREG => self.file(dir, name, st, header, path),
            libc::S_IFLNK => {
                let target = nix::fcntl::readlinkat(Some(dir.as_raw_fd()), name)
                    .map_err(|e| read_error(path, e.into()))?;
                header.set_entry_type(tar::EntryType::Symlink);
                self.flush_pending()?;
                self.written.entries += 1;
                self.builder
                    .append_link(&mut header, path, &target)
                    .map_err(LayerDiffError::Write)
            }
            libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
                header.set_entry_type(match kind {
                    libc::S_IFCHR => tar::EntryType::Char,
                    libc::S_IFBLK => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                });
                let write = |e| LayerDiffError::Write(e);
                header
                    .set_device_major(libc::major(st.st_rdev))
                    .map_err(write)?;
                header
                    .set_device_minor(libc::minor(st.st_rdev))
                    .map_err(write)?;
                self.append(&mut header, path, std::io::empty())
            }
            _ => Ok(()), // sockets: a process's, never content
        }
    }

    /// A directory and what it holds. One that holds a skipped path (`etc` for
    /// `etc/hosts`) is written only once something below it is: overlayfs copies it up
    /// for capsa's mount point alone, which is no change of the workload's (a change of
    /// that directory's own mode alone is then not seen).
    fn dir_entry(
        &mut self,
        sub: BorrowedFd,
        st: &libc::stat,
        mut header: tar::Header,
        path: &Path,
    ) -> Result<(), LayerDiffError> {
        let opaque = is_opaque(sub);
        let holds_skipped = self
            .options
            .skipped
            .iter()
            .any(|s| s.starts_with(path) && s != path);
        if holds_skipped && !opaque {
            self.pending.push((path.to_path_buf(), header));
            self.dir(sub, path)?;
            // Still there: nothing below it was written.
            if self.pending.last().is_some_and(|(p, _)| p == path) {
                self.pending.pop();
            }
            return Ok(());
        }
        self.append(&mut header, path, std::io::empty())?;
        if opaque {
            let mut marker = self.header(st);
            marker.set_entry_type(tar::EntryType::Regular);
            marker.set_mode(st.st_mode & 0o777);
            self.append(&mut marker, &path.join(OPAQUE_MARKER), std::io::empty())?;
        }
        self.dir(sub, path)
    }

    /// Writes the directories waiting for an entry below them, outermost first.
    fn flush_pending(&mut self) -> Result<(), LayerDiffError> {
        for (path, mut header) in std::mem::take(&mut self.pending) {
            self.written.entries += 1;
            self.builder
                .append_data(&mut header, &path, std::io::empty())
                .map_err(LayerDiffError::Write)?;
        }
        Ok(())
    }

    /// A regular file: its content, or a link to the first name of a file linked twice.
    fn file(
        &mut self,
        dir: BorrowedFd,
        name: &CStr,
        st: &libc::stat,
        mut header: tar::Header,
        path: &Path,
    ) -> Result<(), LayerDiffError> {
        if st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key).cloned() {
                header.set_entry_type(tar::EntryType::Link);
                header.set_size(0);
                self.flush_pending()?;
                self.written.entries += 1;
                return self
                    .builder
                    .append_link(&mut header, path, &first)
                    .map_err(LayerDiffError::Write);
            }
            self.links.insert(key, path.to_path_buf());
        }
        let file = open_regular(dir, name, st).map_err(|e| read_error(path, e))?;
        if has_xattr(
            file.as_fd(),
            &["trusted.overlay.metacopy", "user.overlay.metacopy"],
        ) {
            return Err(LayerDiffError::Unsupported {
                path: path.to_path_buf(),
                feature: "metacopy",
            });
        }
        header.set_entry_type(tar::EntryType::Regular);
        let size = st.st_size.max(0) as u64;
        // Exactly the size the header says, even if the file changes while it is read
        // (commit --pause=false): cut short, or padded with zeros.
        let content = std::fs::File::from(file)
            .take(size)
            .chain(std::io::repeat(0))
            .take(size);
        self.append(&mut header, path, content)
    }

    fn append(
        &mut self,
        header: &mut tar::Header,
        path: &Path,
        data: impl Read,
    ) -> Result<(), LayerDiffError> {
        self.flush_pending()?;
        self.written.entries += 1;
        self.builder
            .append_data(header, path, data)
            .map_err(LayerDiffError::Write)
    }

    /// A header with `st`'s mode, owners (shifted back out of a user namespace), size 0
    /// and mtime.
    fn header(&self, st: &libc::stat) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(self.shift(st.st_uid).into());
        h.set_gid(self.shift(st.st_gid).into());
        h.set_mtime(st.st_mtime.max(0) as u64);
        h.set_size(if st.st_mode & libc::S_IFMT == libc::S_IFREG {
            st.st_size.max(0) as u64
        } else {
            0
        });
        h
    }

    fn shift(&self, id: u32) -> u32 {
        match self.options.id_shift {
            Some((base, len)) if id >= base && id - base < len => id - base,
            _ => id,
        }
    }
}

fn read_error(path: &Path, source: std::io::Error) -> LayerDiffError {
    LayerDiffError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// The names in directory `dir` (not `.` and `..`), sorted.
fn entries(dir: BorrowedFd) -> std::io::Result<Vec<CString>> {
    let fd = open_dir(Some(dir), b".")?;
    let mut d = nix::dir::Dir::from_fd(std::os::fd::IntoRawFd::into_raw_fd(fd))?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let name = entry?.file_name().to_owned();
        if name.as_bytes() != b"." && name.as_bytes() != b".." {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Opens the directory `name` (in `at`, or a host path), refusing a symlink.
fn open_dir(at: Option<BorrowedFd>, name: &[u8]) -> std::io::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    openat(at, name, flags)
}

/// Opens the regular file `name` in `dir` for reading: never a link, never a fifo's
/// blocking open; the descriptor must be the file `st` describes.
fn open_regular(dir: BorrowedFd, name: &CStr, st: &libc::stat) -> std::io::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let fd = openat(Some(dir), name.to_bytes(), flags)?;
    let now = nix::sys::stat::fstat(fd.as_raw_fd())?;
    if now.st_mode & libc::S_IFMT != libc::S_IFREG
        || (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino)
    {
        return Err(std::io::Error::other("replaced while the layer was read"));
    }
    Ok(fd)
}

fn openat(
    at: Option<BorrowedFd>,
    name: &[u8],
    flags: nix::fcntl::OFlag,
) -> std::io::Result<OwnedFd> {
    let name = CString::new(name).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let fd = nix::fcntl::openat(
        at.map(|d| d.as_raw_fd()),
        name.as_c_str(),
        flags,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether `fd` carries any of the extended attributes `keys`.
fn has_xattr(fd: BorrowedFd, keys: &[&str]) -> bool {
    keys.iter().any(|key| xattr_byte(fd, key).is_some())
}

/// The first byte of the extended attribute `key` of `fd`, if it has one.
fn xattr_byte(fd: BorrowedFd, key: &str) -> Option<u8> {
    let key = CString::new(key).ok()?;
    let mut value = [0u8; 1];
    // SAFETY: fgetxattr writes at most 1 byte into `value`, a live buffer; a longer value
    // fails with ERANGE, which still says the attribute is there.
    let n = unsafe { libc::fgetxattr(fd.as_raw_fd(), key.as_ptr(), value.as_mut_ptr().cast(), 1) };
    match n {
        1 => Some(value[0]),
        _ if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ERANGE) => {
            Some(0)
        }
        0 => Some(0),
        _ => None,
    }
}

/// Whether directory `dir` is opaque (it hides the lower layers' entries).
fn is_opaque(dir: BorrowedFd) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|key| xattr_byte(dir, key) == Some(b'y'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn names_and_kinds(stream: &[u8]) -> Vec<(String, tar::EntryType, u64)> {
        let mut a = tar::Archive::new(stream);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.entry_type(),
                    h.uid().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn whiteouts_opaque_dirs_links_and_skipped_paths_take_the_layer_form() {
        let up = tempfile::tempdir().unwrap();
        let p = up.path();
        std::fs::create_dir_all(p.join("etc/opaque")).unwrap();
        std::fs::write(p.join("etc/new"), "x").unwrap();
        std::fs::hard_link(p.join("etc/new"), p.join("etc/again")).unwrap();
        symlink("/etc/passwd", p.join("etc/link")).unwrap();
        std::fs::create_dir(p.join("proc")).unwrap();
        std::fs::write(p.join("etc/hosts"), "").unwrap();
        nix::sys::stat::mknod(
            &p.join("etc/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        let opaque = CString::new(p.join("etc/opaque").as_os_str().as_bytes()).unwrap();
        // SAFETY: both strings are live NUL-terminated buffers; the value is 1 byte.
        let rc = unsafe {
            libc::setxattr(
                opaque.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                b"y".as_ptr().cast(),
                1,
                0,
            )
        };
        assert_eq!(rc, 0, "setxattr: {}", std::io::Error::last_os_error());
        let options = LayerOptions {
            skipped: ["proc", "etc/hosts"].iter().map(PathBuf::from).collect(),
            id_shift: None,
        };
        let mut out = Vec::new();
        let written = write_layer(p, &options, &mut out).unwrap();
        let got = names_and_kinds(&out);
        let want: Vec<(&str, tar::EntryType)> = vec![
            ("etc", tar::EntryType::Directory),
            ("etc/again", tar::EntryType::Regular),
            ("etc/.wh.gone", tar::EntryType::Regular),
            ("etc/link", tar::EntryType::Symlink),
            ("etc/new", tar::EntryType::Link),
            ("etc/opaque", tar::EntryType::Directory),
            ("etc/opaque/.wh..wh..opq", tar::EntryType::Regular),
        ];
        let got_short: Vec<(String, tar::EntryType)> =
            got.iter().map(|(n, k, _)| (n.clone(), *k)).collect();
        let want: Vec<(String, tar::EntryType)> =
            want.into_iter().map(|(n, k)| (n.to_string(), k)).collect();
        assert_eq!(got_short, want);
        assert_eq!(written.entries, want.len() as u64);
    }

    #[test]
    fn owners_shift_back_out_of_a_user_namespace_and_an_empty_layer_says_so() {
        let up = tempfile::tempdir().unwrap();
        std::fs::write(up.path().join("f"), "x").unwrap();
        std::os::unix::fs::chown(up.path().join("f"), Some(100_005), Some(100_007)).unwrap();
        let options = LayerOptions {
            skipped: BTreeSet::new(),
            id_shift: Some((100_000, 65_536)),
        };
        let mut out = Vec::new();
        write_layer(up.path(), &options, &mut out).unwrap();
        let mut a = tar::Archive::new(&out[..]);
        let e = a.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(
            (e.header().uid().unwrap(), e.header().gid().unwrap()),
            (5, 7)
        );
        let empty = tempfile::tempdir().unwrap();
        let written = write_layer(empty.path(), &options, std::io::sink()).unwrap();
        assert_eq!(written.entries, 0);
        // A directory copied up for a skipped mount point alone is no change; with a file
        // of the workload's beside it, it is written before that file.
        std::fs::create_dir(empty.path().join("etc")).unwrap();
        std::fs::write(empty.path().join("etc/hosts"), "").unwrap();
        let options = LayerOptions {
            skipped: [PathBuf::from("etc/hosts")].into_iter().collect(),
            id_shift: None,
        };
        let written = write_layer(empty.path(), &options, std::io::sink()).unwrap();
        assert_eq!(written.entries, 0);
        std::fs::write(empty.path().join("etc/motd"), "hi").unwrap();
        let mut out = Vec::new();
        write_layer(empty.path(), &options, &mut out).unwrap();
        let names: Vec<String> = names_and_kinds(&out)
            .into_iter()
            .map(|(n, _, _)| n)
            .collect();
        assert_eq!(names, ["etc", "etc/motd"]);
    }

    #[test]
    fn a_symlinked_upper_directory_is_refused() {
        let up = tempfile::tempdir().unwrap();
        symlink("/etc", up.path().join("l")).unwrap();
        let err = write_layer(
            &up.path().join("l"),
            &LayerOptions::default(),
            std::io::sink(),
        )
        .unwrap_err();
        assert!(matches!(err, LayerDiffError::Read { .. }), "{err:?}");
    }
}
