//! A pty on a container's own devpts instance, as runc gives one: the slave is named
//! /dev/pts/N inside the container (so `tty` prints it), and nothing of the host's devpts
//! is handed to the workload.
//!
//! The master is opened through the container's `/dev/pts/ptmx`, resolved inside the
//! container's root by the kernel ([`Root::resolve`]: RESOLVE_IN_ROOT, no magic links), and
//! checked to be the ptmx device of a devpts file system before it is opened; the slave is
//! then opened from the master (TIOCGPTPEER), never by a path the container controls.

use super::inroot::Root;
use super::process::stdio::Pty;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

/// The ptmx device (c 5:2).
const PTMX: (u64, u64) = (5, 2);
/// `statfs.f_type` of devpts.
const DEVPTS_SUPER_MAGIC: i64 = 0x1cd1;

/// Where a container's ptmx is, inside its root.
pub const PTMX_PATH: &str = "/dev/pts/ptmx";

/// Why no pty could be had from a container's devpts.
#[derive(Debug, thiserror::Error)]
pub enum DevptsError {
    /// The container has no /dev/pts/ptmx (no devpts of its own).
    #[error("{PTMX_PATH} is missing")]
    Missing,
    /// What the path names is not the ptmx device of a devpts file system.
    #[error("{PTMX_PATH} is not the ptmx device of a devpts")]
    NotPtmx,
    /// A system call failed.
    #[error("{PTMX_PATH}: {0}")]
    Io(#[from] io::Error),
}

/// A new pty of `rows` x `cols` on the devpts mounted at /dev/pts inside `root`, both ends
/// close-on-exec, the slave unlocked.
pub fn open_pty(root: &Root, rows: u16, cols: u16) -> Result<Pty, DevptsError> {
    let node = match root.resolve(Path::new(PTMX_PATH)) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Err(DevptsError::Missing),
        Err(e) => return Err(e.into()),
    };
    let st = nix::sys::stat::fstat(node.as_raw_fd()).map_err(io::Error::from)?;
    let fs = nix::sys::statfs::fstatfs(&node).map_err(io::Error::from)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR
        || st.st_rdev != nix::sys::stat::makedev(PTMX.0, PTMX.1)
        || fs.filesystem_type().0 as i64 != DEVPTS_SUPER_MAGIC
    {
        return Err(DevptsError::NotPtmx);
    }
    // Reopening the O_PATH descriptor opens exactly the inode just checked.
    let master = nix::fcntl::open(
        format!("/proc/self/fd/{}", node.as_raw_fd()).as_str(),
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(io::Error::from)?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let slave = peer_of(master.as_raw_fd())?;
    super::sys::set_window_size(master.as_raw_fd(), rows, cols)?;
    Ok(Pty::from_ends(master, slave))
}

/// A pty on the devpts of the running container whose init is `init_pid`, opened from
/// outside it (`exec -t`) through its root, `/proc/PID/root`, as [`open_pty`] does.
/// `still_init` tells whether `init_pid` is still the container's init, checked once its
/// root is open, so that a reused PID is never taken for it.
pub fn open_pty_of(
    init_pid: i32,
    still_init: impl Fn() -> bool,
    rows: u16,
    cols: u16,
) -> Result<Pty, DevptsError> {
    let root = Root::open(Path::new(&format!("/proc/{init_pid}/root")))?;
    if !still_init() {
        return Err(io::Error::other("the container's init has exited").into());
    }
    open_pty(&root, rows, cols)
}

/// First major number of devpts slaves (UNIX98_PTY_SLAVE_MAJOR; eight majors follow).
const PTY_SLAVE_MAJOR: u64 = 136;

/// Whether `fd` is the slave of a devpts pty.
fn is_pty_slave(fd: i32) -> Option<libc::stat> {
    let st = nix::sys::stat::fstat(fd).ok()?;
    let major = nix::sys::stat::major(st.st_rdev);
    (st.st_mode & libc::S_IFMT == libc::S_IFCHR
        && (PTY_SLAVE_MAJOR..PTY_SLAVE_MAJOR + 8).contains(&major))
    .then_some(st)
}

/// Gives the terminal on this process's stdin, stdout and stderr to `uid` (its group kept:
/// devpts gives it `tty`), as runc does before it takes the process's user: a `-u 1000`
/// process can then reopen its terminal by name, which `sudo`, `ssh` and `tty`-based
/// prompts do. Called only for a pty capsa made for this process (on the container's
/// devpts, or the host's where the container has none): unlike runc, a terminal the caller
/// handed down (the host's /dev/pts/N of an operator's shell, under `capsa-runc run`)
/// keeps its owner, so the host user with the container's uid never gets that shell.
/// Whether the streams are such a pty is the caller's knowledge, never read from the
/// container's file system (which the container controls: a /dev/pts linked to
/// /proc/self/fd/0 looks like the caller's devpts). Streams that are not a pty slave, or
/// are already the user's, are left. EPERM and EINVAL (a slave owned by an id this user
/// namespace does not map) are not errors: the process keeps a terminal it can use through
/// its open descriptors.
pub fn give_stdio_terminal(uid: u32) -> io::Result<()> {
    for fd in 0..=2 {
        let Some(st) = is_pty_slave(fd) else { continue };
        if st.st_uid == uid {
            continue;
        }
        // SAFETY: fchown on a descriptor this process holds; no memory is passed.
        if unsafe { libc::fchown(fd, uid, u32::MAX) } != 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EINVAL) => {}
                _ => return Err(e),
            }
        }
    }
    Ok(())
}

/// Gives a pty opened from outside a container's user namespace to the host uid of that
/// namespace's root (nothing to do without one), so that the process entering it can in
/// turn give it to its user ([`give_stdio_terminal`]): the kernel lets a namespace's root
/// chown only inodes whose owner it maps.
pub fn hand_into_user_namespace(
    pty: &Pty,
    linux: Option<&oci_spec::runtime::Linux>,
) -> io::Result<()> {
    let Some(host_uid) = linux.and_then(|l| {
        l.uid_mappings()
            .iter()
            .flatten()
            .find_map(|m| (m.container_id() == 0 && m.size() > 0).then_some(m.host_id()))
    }) else {
        return Ok(());
    };
    // SAFETY: fchown on a descriptor the pty owns; no memory is passed.
    if unsafe { libc::fchown(pty.slave().as_raw_fd(), host_uid, u32::MAX) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unlocks the master's slave and opens it through the master (TIOCGPTPEER).
fn peer_of(master: i32) -> io::Result<OwnedFd> {
    let unlock: libc::c_int = 0;
    // SAFETY: ioctls on a descriptor the caller owns; TIOCSPTLCK reads the int behind the
    // pointer, which outlives the call; TIOCGPTPEER takes open flags and returns a new
    // descriptor.
    unsafe {
        if libc::ioctl(master, libc::TIOCSPTLCK, &unlock) != 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::ioctl(
            master,
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Checks that `fd` (received from another process) is a pty master: opened from a ptmx
/// device, and answering TIOCGPTN. Returns its pty's number.
pub fn check_master(fd: BorrowedFd) -> io::Result<u32> {
    let st = nix::sys::stat::fstat(fd.as_raw_fd())?;
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR
        || st.st_rdev != nix::sys::stat::makedev(PTMX.0, PTMX.1)
    {
        return Err(io::Error::other("not a pty master"));
    }
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int behind the pointer, which outlives the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGPTN, &mut n) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_pty_of_the_hosts_devpts_passes_and_other_files_do_not() {
        let pty = open_pty(&Root::open(Path::new("/")).unwrap(), 30, 100).unwrap();
        check_master(pty.master()).unwrap();
        assert_eq!(
            super::super::sys::window_size(pty.master().as_raw_fd()).unwrap(),
            (30, 100)
        );
        let null = std::fs::File::open("/dev/null").unwrap();
        assert!(check_master(null.as_fd()).is_err());
    }

    #[test]
    fn a_root_whose_ptmx_is_a_symlink_out_or_another_device_gets_no_pty() {
        let dir = std::env::temp_dir().join(format!("capsa-devpts-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("dev/pts")).unwrap();
        let root = Root::open(&dir).unwrap();
        assert!(matches!(open_pty(&root, 24, 80), Err(DevptsError::Missing)));
        // Resolved inside the root: the host's ptmx is not reached.
        std::os::unix::fs::symlink("/dev/ptmx", dir.join("dev/pts/ptmx")).unwrap();
        assert!(matches!(open_pty(&root, 24, 80), Err(DevptsError::Missing)));
        std::fs::remove_file(dir.join("dev/pts/ptmx")).unwrap();
        std::os::unix::fs::symlink("/proc/self/root/dev/ptmx", dir.join("dev/pts/ptmx")).unwrap();
        assert!(open_pty(&root, 24, 80).is_err());
        std::fs::remove_file(dir.join("dev/pts/ptmx")).unwrap();
        // A ptmx node made outside a devpts (mknod c 5 2) is not taken either.
        nix::sys::stat::mknod(
            &dir.join("dev/pts/ptmx"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(5, 2),
        )
        .unwrap();
        assert!(matches!(open_pty(&root, 24, 80), Err(DevptsError::NotPtmx)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
