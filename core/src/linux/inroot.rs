//! Paths inside a tree that an image or a container controls (a container's root, a layer
//! being unpacked), resolved by the kernel as if that tree were `/`.
//!
//! Every host-side operation on such a tree goes through [`Root`]: openat2(2) with
//! `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS` resolves the path (absolute symlinks and `..`
//! stay inside the tree, as they will once the container runs; /proc's magic links, which
//! lead anywhere, are refused), and the operation is done on the descriptor it returned, or
//! on that descriptor's directory and one final name with the `*at(2)` call that does not
//! follow that name. No path is resolved by the kernel twice, so nothing swapped in between
//! two calls can redirect the second one.
//!
//! A dangling symlink met while creating a path is followed as the kernel would follow it
//! (its target is created, inside the tree), so `/etc/resolv.conf -> ../run/x` gets its
//! mount point at `/run/x` as in runc.

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{Mode, SFlag};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// How every path is resolved: inside the tree, never through a magic link.
const IN_ROOT: ResolveFlag = ResolveFlag::RESOLVE_IN_ROOT.union(ResolveFlag::RESOLVE_NO_MAGICLINKS);

/// Symlinks followed by hand while creating a path through dangling links (the kernel's
/// own limit for one lookup).
const MAX_LINKS: usize = 40;

/// Times openat2 is retried when it reports a concurrent rename or mount (EAGAIN).
const MAX_RETRIES: usize = 16;

/// Mode of the directories created on the way to a path.
const DIR_MODE: u32 = 0o755;

/// Mode of an empty file made as a mount point.
const FILE_MODE: u32 = 0o644;

/// What a path to create must end in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory (made with its parents).
    Dir,
    /// Any non-directory; an empty regular file when missing (a mount point for a file).
    File,
}

/// A directory whose paths resolve inside it.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
}

/// A directory inside a [`Root`], reached by in-root resolution: operations on its entries
/// take one final name and never follow it.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

/// One openat2(2) call, retried while the kernel reports a concurrent rename or mount.
fn openat2(
    dir: BorrowedFd,
    path: &Path,
    flags: OFlag,
    resolve: ResolveFlag,
) -> io::Result<OwnedFd> {
    openat2_errno(dir, path, flags, resolve).map_err(explain)
}

/// [`openat2`] with the kernel's error as it is (for callers that word it themselves).
pub(crate) fn openat2_errno(
    dir: BorrowedFd,
    path: &Path,
    flags: OFlag,
    resolve: ResolveFlag,
) -> Result<OwnedFd, Errno> {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(resolve);
    let mut tries = 0;
    loop {
        match nix::fcntl::openat2(dir.as_raw_fd(), path, how) {
            // SAFETY: openat2 returned a new descriptor that nothing else owns.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
            Err(Errno::EAGAIN) if tries < MAX_RETRIES => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// ELOOP from an in-root lookup also means "refused a magic link": say both.
fn explain(e: Errno) -> io::Error {
    match e {
        Errno::ELOOP => io::Error::other(
            "too many levels of symbolic links, or a symbolic link through /proc (refused)",
        ),
        e => e.into(),
    }
}

/// The components of `path` taken from the root: names and `..`; `/` and `.` vanish.
fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn joined(parts: &[OsString]) -> PathBuf {
    parts.iter().collect()
}

/// `/proc/self/fd/N`: how a path-only system call reaches exactly the file behind `fd`.
pub fn fd_path(fd: BorrowedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Whether `fd` is a directory.
pub fn is_dir(fd: BorrowedFd) -> io::Result<bool> {
    let st = nix::sys::stat::fstat(fd.as_raw_fd())?;
    Ok(SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
}

impl Root {
    /// The directory at `path`, a host path the caller trusts (the container's folder).
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        // SAFETY: open returned a new descriptor that nothing else owns.
        Ok(Root {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// A root from a directory descriptor (a mount made from descriptors).
    pub fn from_fd(fd: OwnedFd) -> Root {
        Root { fd }
    }

    /// Resolves `path` (symlinks followed inside the root) to an `O_PATH` descriptor.
    pub fn resolve(&self, path: &Path) -> io::Result<OwnedFd> {
        openat2(self.fd.as_fd(), path, OFlag::O_PATH, IN_ROOT)
    }

    /// Resolves `path` to a directory reached without any symlink at all (where a symlink
    /// is refused, as for the /proc and /sys mount points); missing, it is created.
    pub fn real_dir(&self, path: &Path) -> io::Result<Dir> {
        let strict = IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS;
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        let open = || openat2_errno(self.fd.as_fd(), path, flags, strict);
        let fd = match open() {
            Err(Errno::ENOENT) => {
                self.mkdir_all(path)?;
                open()
            }
            other => other,
        };
        match fd {
            Ok(fd) => Ok(Dir { fd }),
            Err(Errno::ELOOP) => Err(io::Error::other(
                "a symbolic link is on the way (refused: only a real directory will do)",
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens the regular file at `path` for reading (a FIFO or device there is refused,
    /// without blocking on it).
    pub fn open_regular(&self, path: &Path) -> io::Result<std::fs::File> {
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let file = std::fs::File::from(openat2(self.fd.as_fd(), path, flags, IN_ROOT)?);
        if !file.metadata()?.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        Ok(file)
    }

    /// `mkdir -p` inside the root.
    pub fn mkdir_all(&self, path: &Path) -> io::Result<Dir> {
        let fd = self.create(components(path), Kind::Dir)?;
        Ok(Dir { fd })
    }

    /// Resolves `path`, creating what is missing: directories, and for [`Kind::File`] the
    /// last component as an empty file. Returns an `O_PATH` descriptor to mount onto.
    pub fn mount_point(&self, path: &Path, kind: Kind) -> io::Result<OwnedFd> {
        self.create(components(path), kind)
    }

    /// The directory that holds `path` (created if missing) and `path`'s last name, which
    /// the caller creates, replaces or removes without following it.
    pub fn parent(&self, path: &Path) -> io::Result<(Dir, OsString)> {
        let mut parts = components(path);
        match parts.pop() {
            Some(name) if name != ".." => {
                let fd = self.create(parts, Kind::Dir)?;
                Ok((Dir { fd }, name))
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the path names no entry",
            )),
        }
    }

    fn open_kind(&self, parts: &[OsString], kind: Kind) -> io::Result<OwnedFd> {
        let flags = match kind {
            Kind::Dir => OFlag::O_PATH | OFlag::O_DIRECTORY,
            Kind::File => OFlag::O_PATH,
        };
        openat2(self.fd.as_fd(), &joined(parts), flags, IN_ROOT)
    }

    /// The first component of `parts` that does not resolve (missing, or a dangling
    /// symlink), with the directory holding it; None when every one resolves.
    fn first_missing(&self, parts: &[OsString]) -> io::Result<Option<(usize, Option<OwnedFd>)>> {
        let mut parent = None;
        for i in 0..parts.len() {
            match openat2(
                self.fd.as_fd(),
                &joined(&parts[..=i]),
                OFlag::O_PATH,
                IN_ROOT,
            ) {
                Ok(fd) => parent = Some(fd),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Some((i, parent))),
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// The loop behind [`Root::mkdir_all`] and [`Root::mount_point`]: resolve; when a
    /// component is missing, create it in the directory that resolution reached and start
    /// again; when it is a dangling symlink, splice its target into the path.
    fn create(&self, mut parts: Vec<OsString>, kind: Kind) -> io::Result<OwnedFd> {
        let mut links = 0;
        // Each round creates one component or follows one link: bounded by both.
        for _ in 0..(MAX_LINKS + parts.len() + 2) * 2 {
            match self.open_kind(&parts, kind) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                done => return done,
            }
            let Some((i, parent)) = self.first_missing(&parts)? else {
                continue; // it appeared meanwhile
            };
            let dir = parent.as_ref().map_or(self.fd.as_fd(), |p| p.as_fd());
            let name = parts[i].as_os_str();
            let made = if i + 1 == parts.len() && kind == Kind::File {
                nix::sys::stat::mknodat(
                    Some(dir.as_raw_fd()),
                    name,
                    SFlag::S_IFREG,
                    Mode::from_bits_truncate(FILE_MODE),
                    0,
                )
            } else {
                nix::sys::stat::mkdirat(
                    Some(dir.as_raw_fd()),
                    name,
                    Mode::from_bits_truncate(DIR_MODE),
                )
            };
            match made {
                Ok(()) => {}
                Err(Errno::EEXIST) => {
                    // A dangling symlink (the name exists, its target does not).
                    let target = nix::fcntl::readlinkat(Some(dir.as_raw_fd()), name)
                        .map_err(|_| io::Error::from(Errno::EEXIST))?;
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(explain(Errno::ELOOP));
                    }
                    let target = Path::new(&target);
                    let mut spliced = if target.is_absolute() {
                        Vec::new()
                    } else {
                        parts[..i].to_vec()
                    };
                    spliced.extend(components(target));
                    spliced.extend_from_slice(&parts[i + 1..]);
                    parts = spliced;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(explain(Errno::ELOOP))
    }
}

impl AsFd for Root {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Dir {
    /// Makes the node `name` (a device, FIFO or empty file) with exactly `mode` and, when
    /// given, that owner, replacing a non-directory already there.
    pub fn mknod(
        &self,
        name: &OsStr,
        kind: SFlag,
        mode: u32,
        dev: u64,
        owner: Option<(u32, u32)>,
    ) -> io::Result<()> {
        self.unlink(name)?;
        let dir = Some(self.fd.as_raw_fd());
        nix::sys::stat::mknodat(
            dir,
            name,
            kind,
            Mode::from_bits_truncate(mode & 0o7777),
            dev,
        )?;
        let node = openat2(
            self.fd.as_fd(),
            Path::new(name),
            OFlag::O_PATH | OFlag::O_NOFOLLOW,
            ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS,
        )?;
        if let Some((uid, gid)) = owner {
            nix::unistd::fchownat(
                Some(node.as_raw_fd()),
                "",
                Some(uid.into()),
                Some(gid.into()),
                AtFlags::AT_EMPTY_PATH,
            )?;
        }
        // mknod applied the umask (and chown may clear set-id bits): set the mode asked for,
        // on the node itself (there is no fchmod for an O_PATH descriptor).
        nix::sys::stat::fchmodat(
            None,
            &fd_path(node.as_fd()),
            Mode::from_bits_truncate(mode & 0o7777),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )?;
        Ok(())
    }

    /// Makes the symlink `name -> target` unless something is already there.
    pub fn symlink(&self, name: &OsStr, target: &Path) -> io::Result<()> {
        match nix::unistd::symlinkat(target, Some(self.fd.as_raw_fd()), name) {
            Ok(()) | Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the non-directory `name`, if there is one.
    pub fn unlink(&self, name: &OsStr) -> io::Result<()> {
        match nix::unistd::unlinkat(
            Some(self.fd.as_raw_fd()),
            name,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes `name` whatever it is; a directory with everything under it (walked by
    /// descriptor: std's removal opens each level with O_NOFOLLOW).
    pub fn remove_all(&self, name: &OsStr) -> io::Result<()> {
        match self.unlink(name) {
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
                std::fs::remove_dir_all(fd_path(self.fd.as_fd()).join(name))
            }
            other => other,
        }
    }

    /// Sets the extended attribute `key` on this directory.
    pub fn set_xattr(&self, key: &str, value: &[u8]) -> io::Result<()> {
        let dir = openat2(
            self.fd.as_fd(),
            Path::new("."),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            ResolveFlag::RESOLVE_BENEATH,
        )?;
        let key = std::ffi::CString::new(key)?;
        // SAFETY: a live descriptor, a NUL-terminated name and a slice's pointer and length.
        let rc = unsafe {
            libc::fsetxattr(
                dir.as_raw_fd(),
                key.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<Dir> for OwnedFd {
    fn from(dir: Dir) -> OwnedFd {
        dir.fd
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};

    /// A root and, beside it, an "outside" directory an escape would reach.
    struct Fixture {
        _tmp: tempfile::TempDir,
        root_path: PathBuf,
        outside: PathBuf,
        root: Root,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root_path = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root_path.join("etc")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("passwd"), "host").unwrap();
        let root = Root::open(&root_path).unwrap();
        Fixture {
            _tmp: tmp,
            root_path,
            outside,
            root,
        }
    }

    fn outside_names(f: &Fixture) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&f.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn absolute_and_relative_symlinks_resolve_inside() {
        let f = fixture();
        std::fs::write(f.root_path.join("etc/passwd"), "inside").unwrap();
        symlink(&f.outside, f.root_path.join("abs")).unwrap();
        symlink("../../../../../../../../etc", f.root_path.join("rel")).unwrap();
        symlink("/etc", f.root_path.join("etc-abs")).unwrap();
        for path in ["/etc-abs/passwd", "rel/passwd", "/../../etc/passwd"] {
            let file = f.root.open_regular(Path::new(path)).unwrap();
            assert_eq!(std::io::read_to_string(file).unwrap(), "inside", "{path}");
        }
        // The host path of `outside` does not exist inside the root.
        let err = f.root.open_regular(Path::new("/abs/passwd")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn creation_through_dangling_symlinks_stays_inside() {
        let f = fixture();
        let outside = f.outside.display().to_string();
        symlink(&outside, f.root_path.join("dev")).unwrap();
        symlink(format!("../../../../..{outside}"), f.root_path.join("shm")).unwrap();
        f.root.mkdir_all(Path::new("/dev/pts")).unwrap();
        f.root.mount_point(Path::new("/shm/x"), Kind::File).unwrap();
        let (dir, name) = f.root.parent(Path::new("/dev/null")).unwrap();
        dir.mknod(
            &name,
            SFlag::S_IFCHR,
            0o666,
            nix::sys::stat::makedev(1, 3),
            Some((0, 0)),
        )
        .unwrap();
        dir.symlink(OsStr::new("fd"), Path::new("/proc/self/fd"))
            .unwrap();
        assert_eq!(outside_names(&f), vec!["passwd"]);
        let inside = f.root_path.join(outside.trim_start_matches('/'));
        assert!(inside.join("pts").is_dir());
        assert!(inside.join("x").is_file());
        let null = std::fs::symlink_metadata(inside.join("null")).unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!(null.permissions().mode() & 0o7777, 0o666);
        assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    }

    #[test]
    fn dangling_relative_links_resolve_from_their_directory() {
        let f = fixture();
        std::fs::create_dir(f.root_path.join("run")).unwrap();
        symlink(
            "../run/systemd/resolve/stub.conf",
            f.root_path.join("etc/resolv.conf"),
        )
        .unwrap();
        f.root
            .mount_point(Path::new("/etc/resolv.conf"), Kind::File)
            .unwrap();
        assert!(f.root_path.join("run/systemd/resolve/stub.conf").is_file());
    }

    #[test]
    fn parent_components_stop_at_the_root() {
        let f = fixture();
        f.root.mkdir_all(Path::new("/../../../made")).unwrap();
        assert!(f.root_path.join("made").is_dir());
        assert!(!f.root_path.parent().unwrap().join("made").exists());
    }

    #[test]
    fn symlink_loops_end_with_an_error() {
        let f = fixture();
        symlink("/loop", f.root_path.join("loop")).unwrap();
        symlink("b", f.root_path.join("a")).unwrap();
        symlink("a/x", f.root_path.join("b")).unwrap();
        assert!(f.root.resolve(Path::new("/loop/x")).is_err());
        assert!(f.root.mkdir_all(Path::new("/loop/x")).is_err());
        assert!(f.root.mkdir_all(Path::new("/a/y")).is_err());
        assert_eq!(outside_names(&f), vec!["passwd"]);
    }

    #[test]
    fn magic_links_are_refused() {
        let f = fixture();
        // Seen from a root that holds a procfs (here the host's own), /proc/self/root and
        // /proc/self/cwd are magic links that lead anywhere: refused, whatever the operation.
        let proc_root = Root::open(Path::new("/")).unwrap();
        let via = format!("/proc/self/root{}/passwd", f.outside.display());
        let err = proc_root.open_regular(Path::new(&via)).unwrap_err();
        assert!(err.to_string().contains("/proc"), "{err}");
        let made = format!("{via}/../made");
        assert!(proc_root.mkdir_all(Path::new(&made)).is_err());
        let node = format!("/proc/self/root{}/null", f.outside.display());
        assert!(proc_root.parent(Path::new(&node)).is_err());
        let point = format!("/proc/self/cwd{}/point", f.outside.display());
        assert!(proc_root
            .mount_point(Path::new(&point), Kind::File)
            .is_err());
        assert_eq!(outside_names(&f), vec!["passwd"]);
    }

    #[test]
    fn real_dir_refuses_symlinks() {
        let f = fixture();
        symlink("/etc", f.root_path.join("proc")).unwrap();
        assert!(f.root.real_dir(Path::new("/proc")).is_err());
        f.root.real_dir(Path::new("/sys")).unwrap();
        assert!(f.root_path.join("sys").is_dir());
    }

    #[test]
    fn open_regular_does_not_block_on_a_fifo() {
        let f = fixture();
        nix::unistd::mkfifo(
            &f.root_path.join("etc/group"),
            Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        assert!(f.root.open_regular(Path::new("/etc/group")).is_err());
    }

    #[test]
    fn remove_all_does_not_follow_symlinks() {
        let f = fixture();
        std::fs::create_dir_all(f.root_path.join("d/sub")).unwrap();
        symlink(&f.outside, f.root_path.join("d/sub/out")).unwrap();
        let (dir, name) = f.root.parent(Path::new("/d")).unwrap();
        dir.remove_all(&name).unwrap();
        assert!(!f.root_path.join("d").exists());
        assert_eq!(outside_names(&f), vec!["passwd"]);
    }
}
