//! `cp` for a VM container, inside the guest: a copy process, forked into the workload's mount
//! namespace (or, with no workload, chrooted into the root the agent mounted for the copy),
//! that writes a tar stream of a path in that root to its stdout, or
//! extracts the one arriving on its stdin there, with the same code `capsa cp` uses for a
//! container on a host. The server follows it like an exec'd process, so an archive of any
//! size streams through the agent channel in `Output` and `Input` frames.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use capsa_core::linux::sys::{self, Forked};
use capsa_core::tar_copy as cp;

/// A started copy process and the host's ends of its pipes.
pub struct CopyProcess {
    pub pid: i32,
    /// For `copy_in`: where the archive goes.
    pub stdin: Option<File>,
    /// For `copy_out`: the archive.
    pub stdout: File,
    /// Why the copy failed, if it did.
    pub stderr: File,
}

/// The root a copy works in.
pub enum Root<'a> {
    /// The running workload's (process `pid`'s mount namespace).
    Workload(i32),
    /// A directory the agent mounted (the container's root with no workload).
    Mounted(&'a Path),
}

/// Starts writing `path` (in `root`) as a tar stream.
pub fn copy_out(root: Root, path: &str) -> Result<CopyProcess, String> {
    let inside = PathBuf::from(path);
    let name = cp::top_name(&inside);
    start(root, false, move |_, out| {
        cp::write_tar(&inside, &name, out).map_err(|e| format!("{}: {e}", inside.display()))
    })
}

/// Starts extracting the tar stream of its stdin at `path` (in `root`).
pub fn copy_in(root: Root, path: &str, as_is: bool) -> Result<CopyProcess, String> {
    let target = PathBuf::from(path);
    start(root, true, move |input, _| {
        let input = input.ok_or("no input")?;
        cp::extract(input, &target, as_is).map_err(|e| format!("{}: {e}", target.display()))
    })
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

/// Makes `root` the calling process's root.
fn enter(root: &Root, pidfd: Option<&OwnedFd>) -> Result<(), String> {
    match (root, pidfd) {
        (Root::Workload(_), Some(pidfd)) => sys::setns_pidfd(pidfd, libc::CLONE_NEWNS as u64)
            .map_err(|e| format!("enter the workload's root: {e}")),
        (Root::Mounted(dir), _) => nix::unistd::chroot(*dir)
            .and_then(|()| nix::unistd::chdir("/"))
            .map_err(|e| format!("enter the container's root {}: {e}", dir.display())),
        (Root::Workload(pid), None) => Err(format!("process {pid} is gone")),
    }
}

/// Forks the copy process: it enters `root` and runs `work` over its stdin (when
/// `with_input`) and stdout; an error goes to stderr and makes its exit code 1.
fn start(
    root: Root,
    with_input: bool,
    work: impl FnOnce(Option<File>, File) -> Result<(), String>,
) -> Result<CopyProcess, String> {
    let pidfd = match root {
        Root::Workload(pid) => {
            Some(sys::pidfd_open(pid).map_err(|e| format!("process {pid}: {e}"))?)
        }
        Root::Mounted(_) => None,
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let input = if with_input { Some(pipe()?) } else { None };
    // The agent has one thread, as fork requires.
    match sys::fork_into_namespaces(0, None).map_err(|e| format!("fork: {e}"))? {
        Forked::Child => {
            // The parent's ends must close here too, or the stdin pipe never reaches its end.
            drop((out_r, err_r));
            let stdin = input.map(|(r, w)| {
                drop(w);
                File::from(r)
            });
            // Non-dumpable for its whole life (it never execs), as capsa's own cp child.
            let result = sys::set_dumpable(false)
                .map_err(|e| format!("prctl(PR_SET_DUMPABLE): {e}"))
                .and_then(|()| enter(&root, pidfd.as_ref()))
                .and_then(|()| work(stdin, File::from(out_w)));
            let code = match result {
                Ok(()) => 0,
                Err(msg) => {
                    let _ = nix::unistd::write(&err_w, format!("{msg}\n").as_bytes());
                    1
                }
            };
            // SAFETY: ends the forked child without running the agent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        Forked::Parent(child) => Ok(CopyProcess {
            pid: child,
            stdin: input.map(|(_, w)| File::from(w)),
            stdout: File::from(out_r),
            stderr: File::from(err_r),
        }),
    }
}
