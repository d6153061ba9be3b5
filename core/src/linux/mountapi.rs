//! The new mount API (open_tree, mount_setattr, fsopen/fsconfig/fsmount, move_mount), used
//! for user-namespaced containers: idmapped layers, and an overlay assembled from file
//! descriptors so that the init never walks host paths it may not traverse.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// open_tree: clone the mount tree at the path instead of referring to it.
const OPEN_TREE_CLONE: u32 = 1;
/// open_tree/move_mount: operate on the descriptor itself.
const AT_EMPTY_PATH: u32 = libc::AT_EMPTY_PATH as u32;
/// mount_setattr: the mount shows file owners through a user namespace's mapping.
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
/// Per-mount attributes (mount_setattr's `attr_set`).
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
/// Set-user-ID and file capabilities ignored.
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
/// Device nodes cannot be opened.
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
/// Nothing can be executed.
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
/// open_tree/mount_setattr: the whole tree, submounts included.
const AT_RECURSIVE: u32 = 0x8000;
/// move_mount: source / target given as descriptors.
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;
/// fsconfig commands.
const FSCONFIG_SET_STRING: u32 = 1;
const FSCONFIG_SET_FD: u32 = 5;
const FSCONFIG_CMD_CREATE: u32 = 6;
/// fsopen / fsmount: close-on-exec descriptors.
const FSOPEN_CLOEXEC: u32 = 1;
const FSMOUNT_CLOEXEC: u32 = 1;

/// `struct mount_attr` (version 0, 32 bytes).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn check_fd(rc: libc::c_long) -> io::Result<OwnedFd> {
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) })
}

fn check(rc: libc::c_long) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Names the step of a multi-call operation in its error.
fn step(name: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{name}: {e}"))
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// A detached copy of the directory tree at `path` whose file owners appear through the
/// mapping of the user namespace `userns` (host uid 0 becomes the namespace's uid 0).
/// Needs CAP_SYS_ADMIN over the file system's own user namespace (host root).
pub fn idmapped_clone(path: &Path, userns: &OwnedFd) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let p = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: a NUL-terminated path and integer flags; returns a new descriptor.
    let tree = check_fd(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            p.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as u32,
        )
    })?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let empty = cstr("")?;
    // SAFETY: `attr` is a valid mount_attr of the size given, alive across the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })?;
    Ok(tree)
}

/// A detached copy of the mount at `fd` (with its submounts when `recursive`), to attach
/// elsewhere: a bind mount made from a descriptor, so no path is resolved again.
pub fn clone_tree(fd: BorrowedFd, recursive: bool) -> io::Result<OwnedFd> {
    let empty = cstr("")?;
    let flags = OPEN_TREE_CLONE
        | libc::O_CLOEXEC as u32
        | AT_EMPTY_PATH
        | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: a live descriptor, the empty C string and integer flags; returns a new
    // descriptor.
    check_fd(unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), empty.as_ptr(), flags) })
}

/// Sets `attrs` (`MOUNT_ATTR_*`) on the detached tree `tree`, submounts included, before it
/// is attached: the mount is never visible without them.
pub fn set_attrs(tree: &OwnedFd, attrs: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let empty = cstr("")?;
    // SAFETY: `attr` is a valid mount_attr of the size given, alive across the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            AT_EMPTY_PATH | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
}

/// Builds an overlay from descriptors: `lower` top layer first (mounts attached in the
/// caller's mount namespace: overlayfs refuses detached ones), then mounts it on the
/// directory `target`. Returns a descriptor of the new mount's root.
pub fn overlay_from_fds(
    lower: &[OwnedFd],
    upper: &OwnedFd,
    work: &OwnedFd,
    target: &OwnedFd,
) -> io::Result<OwnedFd> {
    let fs = overlay_with_lowers(lower)?;
    set_fd(&fs, "upperdir", upper).map_err(|e| step("upperdir", e))?;
    set_fd(&fs, "workdir", work).map_err(|e| step("workdir", e))?;
    set_string(&fs, "index", Some("off")).map_err(|e| step("index", e))?;
    set_string(&fs, "userxattr", None).map_err(|e| step("userxattr", e))?;
    let mnt = create_mount(&fs)?;
    attach(&mnt, target).map_err(|e| step("move_mount", e))?;
    Ok(mnt)
}

/// The read-only overlay of `lower` alone (top layer first, at least two; whiteouts and
/// opaque directories as root's `trusted.overlay.*`), mounted nowhere: a descriptor of its
/// root, through which the layers read as one merged tree. It goes away with the last
/// descriptor of it.
pub fn merged_layers(lower: &[OwnedFd]) -> io::Result<OwnedFd> {
    let fs = overlay_with_lowers(lower)?;
    create_mount(&fs)
}

/// An overlay's file system context with its lower layers set (`lowerdir+`, Linux 6.8).
fn overlay_with_lowers(lower: &[OwnedFd]) -> io::Result<OwnedFd> {
    let name = cstr("overlay")?;
    // SAFETY: a NUL-terminated name and flags; returns a new descriptor.
    let fs = check_fd(unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) })
        .map_err(|e| step("fsopen", e))?;
    for l in lower {
        set_fd(&fs, "lowerdir+", l).map_err(|e| step("lowerdir+", e))?;
    }
    Ok(fs)
}

fn set_fd(fs: &OwnedFd, key: &str, fd: &OwnedFd) -> io::Result<()> {
    let k = cstr(key)?;
    // SAFETY: a NUL-terminated key and a live descriptor as the value.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_FD,
            k.as_ptr(),
            std::ptr::null::<u8>(),
            fd.as_raw_fd(),
        )
    })
}

/// A string option, or a flag (FSCONFIG_SET_FLAG) when `value` is None.
fn set_string(fs: &OwnedFd, key: &str, value: Option<&str>) -> io::Result<()> {
    let k = cstr(key)?;
    let v = value.map(cstr).transpose()?;
    let (cmd, vptr) = match &v {
        Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
        None => (0u32, std::ptr::null()),
    };
    // SAFETY: NUL-terminated key and value (or null for a flag), alive across the call.
    check(unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, k.as_ptr(), vptr, 0) })
}

/// Creates the superblock of a configured context and a detached mount of it.
fn create_mount(fs: &OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: no pointers; creates the superblock from the configuration above.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<u8>(),
            std::ptr::null::<u8>(),
            0,
        )
    })
    .map_err(|e| step("create", e))?;
    // SAFETY: integer arguments; returns a descriptor of the new, detached mount.
    check_fd(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) })
        .map_err(|e| step("fsmount", e))
}

/// A new tmpfs that is mounted nowhere: a descriptor of its root, and the only way into it.
/// It goes away with the last descriptor of it or of a file in it.
pub fn private_tmpfs() -> io::Result<OwnedFd> {
    let name = cstr("tmpfs")?;
    // SAFETY: a NUL-terminated name and flags; returns a new descriptor.
    let fs = check_fd(unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) })
        .map_err(|e| step("fsopen tmpfs", e))?;
    // SAFETY: no pointers; creates the superblock.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<u8>(),
            std::ptr::null::<u8>(),
            0,
        )
    })
    .map_err(|e| step("fsconfig tmpfs", e))?;
    // SAFETY: integer arguments; returns a descriptor of the new, detached mount.
    check_fd(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) })
        .map_err(|e| step("fsmount tmpfs", e))
}

/// Attaches the detached mount `mount` on the directory `target` (both descriptors), in the
/// caller's mount namespace.
pub fn attach(mount: &OwnedFd, target: impl AsFd) -> io::Result<()> {
    let empty = cstr("")?;
    // SAFETY: both paths are the empty C string, with the EMPTY_PATH flags for both ends.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            empty.as_ptr(),
            target.as_fd().as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
}

/// An O_PATH descriptor of `path` (for later use through /proc/self/fd, or as a target).
pub fn open_path(path: &Path) -> io::Result<OwnedFd> {
    let fd = nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: `open` returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
