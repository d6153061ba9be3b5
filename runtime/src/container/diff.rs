//! `diff`: what a container changed in its root against its image, as `docker diff`
//! prints it: `A` added, `C` changed, `D` deleted, one path a line, sorted.
//!
//! Read from the overlay's writable layer, running or stopped: a whiteout (a 0:0
//! character device) is a deletion; an entry the image's layers do not hold is an
//! addition; one they hold is a change (overlayfs copies a file up when it is written, its
//! metadata changed or it was replaced); an opaque directory (`trusted.overlay.opaque`)
//! replaced the image's, whose entries it does not hold again are deletions. A directory
//! is changed when anything below it is. What capsa itself put there (the mount points of
//! the spec's mounts: /proc, /dev, /etc/hosts, volumes...) is not the workload's change
//! and is left out. The writable layer is walked by descriptor, never following a link: a
//! running container can swap a directory for a symlink to a host path while it is read.
//!
//! A VM container's writable layer is a disk its guest wrote, which the host never parses:
//! `diff` says so instead.

use super::store::ContainerStore;
use super::ContainerError;
use crate::image::ImageStore;
use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode};
use std::collections::BTreeSet;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What happened to one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    /// `A`: not in the image.
    Added,
    /// `C`: in the image, and different now (or something below it is).
    Changed,
    /// `D`: in the image, gone now.
    Deleted,
}

impl ChangeKind {
    /// Docker's letter for it.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Changed => 'C',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// One line of `diff`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    /// The path inside the container.
    pub path: PathBuf,
    /// What happened to it.
    pub kind: ChangeKind,
}

/// The changes of container `id` against its image, sorted by path.
pub fn diff(store: &ContainerStore, id: &str) -> Result<Vec<Change>, ContainerError> {
    let state = store.observe(id)?;
    if state.isolation == crate::container::sandbox::Isolation::Vm {
        return Err(ContainerError::WrongState {
            id: id.to_string(),
            reason: "diff is not available for a VM container: its writable layer is a disk its guest wrote, which the host never parses (`capsa cp` reads its files through the guest)".into(),
        });
    }
    let image = ImageStore::new(store.root()).resolve(&state.image_id)?;
    let dir = store.dir(id);
    let mut layers = image.layer_dirs;
    layers.reverse(); // top first, as overlayfs looks them up
    let walker = Walker {
        layers,
        skipped: mount_points(&dir.config()),
    };
    let upper = open_dir_at(None, dir.upper().as_os_str().as_bytes())
        .map_err(|e| ContainerError::io(&dir.upper(), e.into()))?;
    let mut changes = Vec::new();
    walker.walk(upper.as_fd(), Path::new("/"), &mut changes);
    changes.sort();
    Ok(changes)
}

/// The destinations of the spec's mounts: capsa made them in the writable layer.
pub(crate) fn mount_points(config: &Path) -> BTreeSet<PathBuf> {
    let spec: Option<oci_spec::runtime::Spec> = std::fs::read(config)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    spec.and_then(|s| s.mounts().clone())
        .unwrap_or_default()
        .iter()
        .map(|m| m.destination().components().collect())
        .collect()
}

struct Walker {
    /// The image's layers, top first.
    layers: Vec<PathBuf>,
    /// Paths left out with what is below them.
    skipped: BTreeSet<PathBuf>,
}

impl Walker {
    /// Records the changes below the upper directory `dir` (at `path` in the container);
    /// returns whether there was any.
    fn walk(&self, dir: BorrowedFd, path: &Path, out: &mut Vec<Change>) -> bool {
        let mut any = false;
        for name in entries(dir) {
            let child = path.join(OsStr::from_bytes(name.as_bytes()));
            if self.skipped.contains(&child) {
                continue;
            }
            let Ok(st) = nix::sys::stat::fstatat(
                Some(dir.as_raw_fd()),
                name.as_c_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ) else {
                continue; // gone meanwhile (a running container)
            };
            any |= self.entry(dir, &name, &st, &child, out);
        }
        any
    }

    fn entry(
        &self,
        dir: BorrowedFd,
        name: &CStr,
        st: &FileStat,
        path: &Path,
        out: &mut Vec<Change>,
    ) -> bool {
        let mut push = |kind| {
            out.push(Change {
                path: path.to_path_buf(),
                kind,
            })
        };
        if is_whiteout(st) {
            push(ChangeKind::Deleted);
            return true;
        }
        let below = components(path);
        let lower = lower_lookup(&self.layers, &below);
        if !is_dir(st) {
            push(if lower.is_some() {
                ChangeKind::Changed
            } else {
                ChangeKind::Added
            });
            return true;
        }
        let Ok(sub) = open_dir_at(Some(dir), name.to_bytes()) else {
            return false;
        };
        match lower {
            None => {
                push(ChangeKind::Added);
                self.walk(sub.as_fd(), path, out);
                true
            }
            Some(l) => {
                let mut changed = !is_dir(&l)
                    || (l.st_mode, l.st_uid, l.st_gid) != (st.st_mode, st.st_uid, st.st_gid);
                let mut inner = Vec::new();
                changed |= self.walk(sub.as_fd(), path, &mut inner);
                if is_dir(&l) && is_opaque(sub.as_fd()) {
                    let kept: BTreeSet<CString> = entries(sub.as_fd()).into_iter().collect();
                    for gone in lower_children(&self.layers, &below) {
                        let c = CString::new(gone.as_bytes()).unwrap_or_default();
                        let child = path.join(&gone);
                        if !kept.contains(&c) && !self.skipped.contains(&child) {
                            inner.push(Change {
                                path: child,
                                kind: ChangeKind::Deleted,
                            });
                            changed = true;
                        }
                    }
                }
                if changed {
                    out.push(Change {
                        path: path.to_path_buf(),
                        kind: ChangeKind::Changed,
                    });
                }
                out.extend(inner);
                changed
            }
        }
    }
}

/// The names in directory `dir` (not `.` and `..`).
fn entries(dir: BorrowedFd) -> Vec<CString> {
    let Ok(mut d) = open_dir_at(Some(dir), b".")
        .and_then(|fd| Dir::from_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)))
    else {
        return Vec::new();
    };
    d.iter()
        .flatten()
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect()
}

/// Opens the directory `name` (in `at`, or a host path) for reading, refusing a symlink.
fn open_dir_at(at: Option<BorrowedFd>, name: &[u8]) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let name = CString::new(name).map_err(|_| nix::errno::Errno::EINVAL)?;
    let fd = nix::fcntl::openat(
        at.map(|d| d.as_raw_fd()),
        name.as_c_str(),
        flags,
        Mode::empty(),
    )?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

fn is_dir(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// overlayfs's whiteout: a character device 0:0.
fn is_whiteout(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

/// Whether directory `dir` is opaque (it hides the lower layers' entries).
fn is_opaque(dir: BorrowedFd) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|key| {
            let key = CString::new(*key).expect("no NUL");
            let mut value = [0u8; 1];
            // SAFETY: fgetxattr writes at most 1 byte into `value`, a live buffer.
            let n = unsafe {
                libc::fgetxattr(dir.as_raw_fd(), key.as_ptr(), value.as_mut_ptr().cast(), 1)
            };
            n == 1 && value[0] == b'y'
        })
}

fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .collect()
}

/// What one layer says about a path.
enum Probe {
    /// It holds the path (its metadata, and the directory when it is one).
    Present(FileStat, Option<OwnedFd>),
    /// It says nothing: look in the layer below.
    Absent,
    /// It hides the path from every layer below (a whiteout, an opaque directory above
    /// it, a non-directory where a directory of the path would be).
    Hidden,
}

/// Looks `path` up in one layer, as overlayfs does, never following a link.
fn probe(layer: &Path, path: &[OsString]) -> Probe {
    let Ok(mut dir) = open_dir_at(None, layer.as_os_str().as_bytes()) else {
        return Probe::Absent;
    };
    let mut below_opaque = false;
    for (i, name) in path.iter().enumerate() {
        let Ok(c) = CString::new(name.as_bytes()) else {
            return Probe::Absent;
        };
        let Ok(st) = nix::sys::stat::fstatat(
            Some(dir.as_raw_fd()),
            c.as_c_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) else {
            return if below_opaque {
                Probe::Hidden
            } else {
                Probe::Absent
            };
        };
        if is_whiteout(&st) {
            return Probe::Hidden;
        }
        let sub = is_dir(&st)
            .then(|| open_dir_at(Some(dir.as_fd()), name.as_bytes()).ok())
            .flatten();
        if i + 1 == path.len() {
            return Probe::Present(st, sub);
        }
        let Some(sub) = sub else {
            return Probe::Hidden;
        };
        below_opaque = is_opaque(sub.as_fd());
        dir = sub;
    }
    Probe::Absent
}

/// The metadata of `path` in the image (its layers top first), if it holds it.
fn lower_lookup(layers: &[PathBuf], path: &[OsString]) -> Option<FileStat> {
    for layer in layers {
        match probe(layer, path) {
            Probe::Present(st, _) => return Some(st),
            Probe::Hidden => return None,
            Probe::Absent => {}
        }
    }
    None
}

/// The names the image's directory `path` holds (merged over its layers).
fn lower_children(layers: &[PathBuf], path: &[OsString]) -> BTreeSet<OsString> {
    let mut seen = BTreeSet::new();
    let mut hidden = BTreeSet::new();
    for layer in layers {
        let dir = match probe(layer, path) {
            Probe::Present(_, Some(dir)) => dir,
            Probe::Present(..) | Probe::Hidden => break,
            Probe::Absent => continue,
        };
        for name in entries(dir.as_fd()) {
            let os = OsStr::from_bytes(name.as_bytes()).to_os_string();
            let whiteout = nix::sys::stat::fstatat(
                Some(dir.as_raw_fd()),
                name.as_c_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .is_ok_and(|st| is_whiteout(&st));
            if whiteout {
                hidden.insert(os);
            } else if !hidden.contains(&os) {
                seen.insert(os);
            }
        }
        if is_opaque(dir.as_fd()) {
            break;
        }
    }
    seen
}
