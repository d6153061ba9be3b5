//! The build context: a directory (the CLI's) or a tar stream unpacked into a private
//! temporary one (`-`, the API's body). Nothing outside it is ever read: every file is
//! opened by descriptor beneath the context's root (`openat2` with `RESOLVE_BENEATH`), a
//! source path's `..` cannot climb above the root, a symbolic link given as a source is
//! followed only while it stays inside (one that leads out is refused), and links met
//! inside a copied directory are copied as links, never followed.

use super::ignore::{clean, is_glob, to_regex, Ignore};
use super::BuildError;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What kind of entry a context path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
}

/// One context, its files listed once (`.dockerignore` applied).
pub struct Context {
    root: OwnedFd,
    entries: BTreeMap<String, Kind>,
    _unpacked: Option<tempfile::TempDir>,
}

/// One source of a COPY/ADD, as found in the context.
#[derive(Debug, Clone)]
pub struct Item {
    /// Its path in the context (`/`-separated, relative; empty for the context itself).
    pub path: String,
    /// Whether it is a directory (its contents are copied, not itself).
    pub dir: bool,
}

impl Context {
    /// The context at directory `dir`.
    pub fn open(dir: &Path) -> Result<Context, BuildError> {
        Self::at(dir, None)
    }

    /// A tar stream (plain or gzip-compressed) unpacked under `tmp_parent` first.
    pub fn from_tar(input: impl Read, tmp_parent: &Path) -> Result<Context, BuildError> {
        let io = |e| BuildError::Context(format!("{}: {e}", tmp_parent.display()));
        let dir = tempfile::Builder::new()
            .prefix("build-context-")
            .tempdir_in(tmp_parent)
            .map_err(io)?;
        let mut input = std::io::BufReader::new(input);
        let gzip = std::io::BufRead::fill_buf(&mut input)
            .map(|b| b.starts_with(&[0x1f, 0x8b]))
            .map_err(|e| BuildError::Context(format!("reading the context: {e}")))?;
        let reader: Box<dyn Read> = match gzip {
            true => Box::new(flate2::read::GzDecoder::new(input)),
            false => Box::new(input),
        };
        let reader = Padded {
            inner: reader,
            read: 0,
            zeros: None,
        };
        let mut archive = tar::Archive::new(crate::image::tar_guard::HeaderGuard::new(reader));
        archive.set_preserve_permissions(true);
        archive.set_preserve_mtime(true);
        let bad = |e: std::io::Error| BuildError::Context(format!("the context's tar: {e}"));
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            // A sparse file's holes unpack to any size from a few bytes of request, and a
            // COPY would then write them whole into a layer: docker's clients send none.
            if crate::image::archive::is_sparse(&mut entry) {
                let path = entry.path().map(|p| p.display().to_string());
                return Err(BuildError::Context(format!(
                    "the context's tar: {} is a sparse file (refused)",
                    path.unwrap_or_default()
                )));
            }
            // Devices and FIFOs are no build input.
            if !matches!(
                entry.header().entry_type(),
                tar::EntryType::Regular
                    | tar::EntryType::Directory
                    | tar::EntryType::Symlink
                    | tar::EntryType::Link
            ) {
                continue;
            }
            if !entry.unpack_in(dir.path()).map_err(bad)? {
                let path = entry.path().map(|p| p.display().to_string());
                return Err(BuildError::Context(format!(
                    "the context's tar: {} leaves the context (refused)",
                    path.unwrap_or_default()
                )));
            }
        }
        let path = dir.path().to_path_buf();
        Self::at(&path, Some(dir))
    }

    fn at(dir: &Path, unpacked: Option<tempfile::TempDir>) -> Result<Context, BuildError> {
        let io = |e: std::io::Error| BuildError::Context(format!("{}: {e}", dir.display()));
        let fd = nix::fcntl::open(
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| io(e.into()))?;
        // SAFETY: `open` returned a new descriptor that nothing else owns.
        let root = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut ctx = Context {
            root,
            entries: BTreeMap::new(),
            _unpacked: unpacked,
        };
        let ignore = match ctx.read_small(".dockerignore") {
            Ok(Some(text)) => Ignore::parse(&String::from_utf8_lossy(&text))?,
            Ok(None) => Ignore::default(),
            Err(e) => return Err(e),
        };
        // Listed through /proc/self/fd/N of the root: the walk starts at the very
        // directory opened above, and never follows a link.
        let base = PathBuf::from(format!("/proc/self/fd/{}", ctx.root.as_raw_fd()));
        let mut pending = vec![String::new()];
        while let Some(dir) = pending.pop() {
            let at = base.join(&dir);
            let list = std::fs::read_dir(&at)
                .map_err(|e| BuildError::Context(format!("{}: {e}", display(&dir))))?;
            for entry in list {
                let entry =
                    entry.map_err(|e| BuildError::Context(format!("{}: {e}", display(&dir))))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let rel = match dir.is_empty() {
                    true => name,
                    false => format!("{dir}/{name}"),
                };
                let t = entry
                    .file_type()
                    .map_err(|e| BuildError::Context(format!("{rel}: {e}")))?;
                let ignored = ignore.ignores(&rel);
                let kind = if t.is_dir() {
                    // An ignored directory is listed only when a `!` pattern may take
                    // back something in it (a node_modules is never walked).
                    if !ignored || ignore.has_exceptions() {
                        pending.push(rel.clone());
                    }
                    Kind::Dir
                } else if t.is_symlink() {
                    Kind::Symlink
                } else if t.is_file() {
                    Kind::File
                } else {
                    continue;
                };
                if !ignored {
                    ctx.entries.insert(rel, kind);
                }
            }
        }
        Ok(ctx)
    }

    /// A small file of the context (the Dockerfile, `.dockerignore`), None when absent.
    pub fn read_small(&self, path: &str) -> Result<Option<Vec<u8>>, BuildError> {
        let rel = clean(path);
        match self.open_beneath(&rel, OFlag::O_RDONLY, true) {
            Ok(fd) => {
                let mut data = Vec::new();
                std::fs::File::from(fd)
                    .take(16 << 20)
                    .read_to_end(&mut data)
                    .map_err(|e| BuildError::Context(format!("{path}: {e}")))?;
                Ok(Some(data))
            }
            Err(nix::errno::Errno::ENOENT) => Ok(None),
            Err(e) => Err(escape_or(path, e)),
        }
    }

    /// Opens `rel` beneath the root; `follow`: symbolic links followed while they stay
    /// inside (else none is followed at all).
    fn open_beneath(&self, rel: &str, flags: OFlag, follow: bool) -> nix::Result<OwnedFd> {
        let mut resolve = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS;
        if !follow {
            resolve |= ResolveFlag::RESOLVE_NO_SYMLINKS;
        }
        let rel = if rel.is_empty() { "." } else { rel };
        // openat2 refuses O_PATH with flags beyond these.
        let extra = match flags.contains(OFlag::O_PATH) {
            true => OFlag::O_CLOEXEC,
            false => OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
        };
        let how = OpenHow::new().flags(flags | extra).resolve(resolve);
        let fd = nix::fcntl::openat2(self.root.as_raw_fd(), rel, how)?;
        // SAFETY: openat2 returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The items `sources` name: globs matched against the listed paths, literal paths
    /// resolved beneath the root (a link as a source is followed while it stays inside).
    pub fn select(&self, sources: &[String]) -> Result<Vec<Item>, BuildError> {
        let mut items = Vec::new();
        for source in sources {
            let rel = clean(source);
            if is_glob(&rel) {
                let regex = regex::Regex::new(&to_regex(&rel))
                    .map_err(|e| BuildError::Source(format!("{source}: {e}")))?;
                let found: Vec<Item> = self
                    .entries
                    .iter()
                    .filter(|(p, _)| regex.is_match(p))
                    .map(|(p, k)| self.item(source, p, *k))
                    .collect::<Result<_, _>>()?;
                if found.is_empty() {
                    return Err(BuildError::Source(format!(
                        "{source}: no source files were specified"
                    )));
                }
                items.extend(found);
                continue;
            }
            match self.entries.get(&rel) {
                Some(kind) => items.push(self.item(source, &rel, *kind)?),
                None if rel.is_empty() => items.push(Item {
                    path: String::new(),
                    dir: true,
                }),
                None => {
                    return Err(BuildError::Source(format!(
                        "{source}: no such file or directory in the build context"
                    )))
                }
            }
        }
        Ok(items)
    }

    /// The item at listed path `rel`: a link is resolved, beneath the root.
    fn item(&self, source: &str, rel: &str, kind: Kind) -> Result<Item, BuildError> {
        let kind = match kind {
            Kind::Symlink => {
                let fd = self
                    .open_beneath(rel, OFlag::O_PATH, true)
                    .map_err(|e| escape_or(source, e))?;
                let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                    .map_err(|e| BuildError::Source(format!("{source}: {e}")))?;
                let top = std::fs::read_link(format!("/proc/self/fd/{}", self.root.as_raw_fd()))
                    .map_err(|e| BuildError::Source(format!("{source}: {e}")))?;
                let inner = real.strip_prefix(&top).map_err(|_| {
                    BuildError::Source(format!(
                        "{source}: the symbolic link leads outside the build context (refused)"
                    ))
                })?;
                let inner = inner.to_string_lossy().into_owned();
                return match self.entries.get(&inner) {
                    Some(Kind::Dir) => Ok(Item {
                        path: inner,
                        dir: true,
                    }),
                    Some(Kind::File) => Ok(Item {
                        path: inner,
                        dir: false,
                    }),
                    _ => Err(BuildError::Source(format!(
                        "{source}: no such file or directory in the build context"
                    ))),
                };
            }
            k => k,
        };
        Ok(Item {
            path: rel.to_string(),
            dir: kind == Kind::Dir,
        })
    }

    /// Writes `items` as a tar stream into `out`: a file under its own name, a
    /// directory's contents under theirs, owned by 0:0 as Docker's COPY makes them (the
    /// placement in the image sets `--chown`/`--chmod`). Returns a checksum of names,
    /// kinds, modes, sizes, link targets and contents (not times), for the cache.
    pub fn write_tar(&self, items: &[Item], out: impl Write) -> Result<String, BuildError> {
        let mut tar = tar::Builder::new(out);
        tar.follow_symlinks(false);
        let mut sum = Sha256::new();
        for item in items {
            if !item.dir {
                let name = item.path.rsplit('/').next().unwrap_or(&item.path);
                self.append(&mut tar, &mut sum, &item.path, name, Kind::File)?;
                continue;
            }
            let prefix = match item.path.is_empty() {
                true => String::new(),
                false => format!("{}/", item.path),
            };
            for (path, kind) in self.entries.range(prefix.clone()..) {
                let Some(name) = path.strip_prefix(&prefix) else {
                    break;
                };
                if name.is_empty() {
                    continue;
                }
                self.append(&mut tar, &mut sum, path, name, *kind)?;
            }
        }
        tar.finish()
            .map_err(|e| BuildError::Context(format!("writing the layer: {e}")))?;
        Ok(hex::encode(sum.finalize()))
    }

    fn append<W: Write>(
        &self,
        tar: &mut tar::Builder<W>,
        sum: &mut Sha256,
        path: &str,
        name: &str,
        kind: Kind,
    ) -> Result<(), BuildError> {
        let fail = |e: std::io::Error| BuildError::Source(format!("{path}: {e}"));
        let flags = match kind {
            Kind::File => OFlag::O_RDONLY,
            Kind::Dir => OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Kind::Symlink => OFlag::O_PATH | OFlag::O_NOFOLLOW,
        };
        let fd = self
            .open_beneath(path, flags, false)
            .map_err(|e| escape_or(path, e))?;
        let file = std::fs::File::from(fd);
        let meta = match kind {
            Kind::Symlink => nix::sys::stat::fstat(file.as_raw_fd())
                .map_err(|e| fail(e.into()))
                .map(|st| (st.st_mode, st.st_mtime, 0u64))?,
            _ => {
                let m = file.metadata().map_err(fail)?;
                (m.mode(), m.mtime(), m.len())
            }
        };
        let mut header = tar::Header::new_gnu();
        header.set_mode(meta.0 & 0o7777);
        header.set_mtime(meta.1.max(0) as u64);
        header.set_uid(0);
        header.set_gid(0);
        sum.update(format!("{name}\0{kind:?}\0{:o}\0{}\0", meta.0 & 0o7777, meta.2).as_bytes());
        match kind {
            Kind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                tar.append_data(&mut header, format!("{name}/"), std::io::empty())
                    .map_err(fail)?;
            }
            Kind::Symlink => {
                let fd_path = format!("/proc/self/fd/{}", file.as_raw_fd());
                // readlink on an O_PATH|O_NOFOLLOW descriptor of the link reads the link.
                let target = nix::fcntl::readlinkat(Some(file.as_raw_fd()), "")
                    .or_else(|_| nix::fcntl::readlinkat(None, fd_path.as_str()))
                    .map_err(|e| fail(e.into()))?;
                // Ended by a NUL (which no target holds): without it, a target ran into the
                // next entry's name, and two contexts (`a -> xy` + `z`, `a -> x` + `yz`)
                // shared one cache key.
                sum.update(target.as_encoded_bytes());
                sum.update(b"\0");
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                tar.append_link(&mut header, name, Path::new(&target))
                    .map_err(fail)?;
            }
            Kind::File => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(meta.2);
                let hashing = Hashing {
                    inner: file.take(meta.2),
                    sum,
                };
                tar.append_data(&mut header, name, hashing).map_err(fail)?;
            }
        }
        Ok(())
    }
}

impl Context {
    /// Whether the file at `path` is a tar archive, plain or gzip- or zstd-compressed (ADD
    /// unpacks those).
    pub fn is_archive(&self, path: &str) -> bool {
        let Ok(fd) = self.open_beneath(path, OFlag::O_RDONLY, false) else {
            return false;
        };
        let mut head = Vec::new();
        if std::fs::File::from(fd)
            .take(512)
            .read_to_end(&mut head)
            .is_err()
        {
            return false;
        }
        head.starts_with(&[0x1f, 0x8b])
            || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
            || head.get(257..262) == Some(b"ustar")
    }

    /// ADD of a local archive: its entries, decompressed, into `out` (names as the
    /// archive has them, owners kept); the checksum of the archive's bytes.
    pub fn write_archive(&self, path: &str, out: impl Write) -> Result<String, BuildError> {
        let fail = |e: std::io::Error| BuildError::Source(format!("{path}: {e}"));
        let fd = self
            .open_beneath(path, OFlag::O_RDONLY, false)
            .map_err(|e| escape_or(path, e))?;
        let mut sum = Sha256::new();
        let mut input = std::io::BufReader::new(Hashing {
            inner: std::fs::File::from(fd),
            sum: &mut sum,
        });
        let head = std::io::BufRead::fill_buf(&mut input)
            .map_err(fail)?
            .to_vec();
        let reader: Box<dyn Read + '_> = if head.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::GzDecoder::new(input))
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(fail)?)
        } else {
            Box::new(input)
        };
        let mut archive = tar::Archive::new(crate::image::tar_guard::HeaderGuard::new(reader));
        let mut tar = tar::Builder::new(out);
        for entry in archive.entries().map_err(fail)? {
            let mut entry = entry.map_err(fail)?;
            let name = entry.path().map_err(fail)?.into_owned();
            let mut header = entry.header().clone();
            // Fields an archive left blank read as 0, as Go's reader takes them.
            header.set_uid(header.uid().unwrap_or(0));
            header.set_gid(header.gid().unwrap_or(0));
            header.set_mtime(header.mtime().unwrap_or(0));
            match header.entry_type() {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = entry
                        .link_name()
                        .map_err(fail)?
                        .unwrap_or_default()
                        .into_owned();
                    tar.append_link(&mut header, &name, &target).map_err(fail)?;
                }
                tar::EntryType::Regular
                | tar::EntryType::Directory
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse => {
                    tar.append_data(&mut header, &name, &mut entry)
                        .map_err(fail)?;
                }
                _ => {}
            }
        }
        tar.finish().map_err(fail)?;
        drop(tar);
        drop(archive);
        Ok(hex::encode(sum.finalize()))
    }
}

/// A tar stream completed as Go's reader takes it: the docker CLI's stream for
/// `build -f -` ends right after the last file's data, without the padding to a whole
/// block or the two zero blocks that end an archive.
struct Padded<R> {
    inner: R,
    read: u64,
    /// The zero bytes still to give once the stream ended.
    zeros: Option<u64>,
}

impl<R: Read> Read for Padded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.zeros.is_none() {
            let n = self.inner.read(buf)?;
            if n > 0 || buf.is_empty() {
                self.read += n as u64;
                return Ok(n);
            }
            self.zeros = Some((512 - self.read % 512) % 512 + 1024);
        }
        let left = self.zeros.as_mut().expect("set above");
        let n = (*left).min(buf.len() as u64) as usize;
        buf[..n].fill(0);
        *left -= n as u64;
        Ok(n)
    }
}

/// A reader that hashes what passes through it.
struct Hashing<'a, R> {
    inner: R,
    sum: &'a mut Sha256,
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sum.update(&buf[..n]);
        Ok(n)
    }
}

fn display(dir: &str) -> &str {
    if dir.is_empty() {
        "."
    } else {
        dir
    }
}

/// An openat2 error as the user reads it: EXDEV is a path that leaves the context.
fn escape_or(path: &str, e: nix::errno::Errno) -> BuildError {
    match e {
        nix::errno::Errno::EXDEV => BuildError::Source(format!(
            "{path}: the path leads outside the build context (refused)"
        )),
        nix::errno::Errno::ELOOP => {
            BuildError::Source(format!("{path}: a symbolic link is on the way (refused)"))
        }
        nix::errno::Errno::ENOENT => BuildError::Source(format!(
            "{path}: no such file or directory in the build context"
        )),
        e => BuildError::Source(format!("{path}: {e}")),
    }
}
