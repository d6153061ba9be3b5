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
use capsa_core::tar_copy::{self as cp, ExtractError};

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
    /// The agent's own (where the writable disk is mounted: `commit`'s layer).
    Agent,
}

/// Why a copy could not start (in the agent), or failed (in the copy process, whose stderr
/// carries the text to the host).
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The workload's process could not be opened.
    #[error("process {pid}: {source}")]
    Process {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    /// The workload's process is gone.
    #[error("process {0} is gone")]
    Gone(i32),
    /// A pipe to the copy process could not be made.
    #[error("pipe: {0}")]
    Pipe(#[source] nix::errno::Errno),
    /// The copy process could not be forked.
    #[error("fork: {0}")]
    Fork(#[source] std::io::Error),
    /// The copy process could not make itself non-dumpable.
    #[error("prctl(PR_SET_DUMPABLE): {0}")]
    Dumpable(#[source] std::io::Error),
    /// The copy process could not join the workload's mount namespace.
    #[error("enter the workload's root: {0}")]
    EnterWorkload(#[source] std::io::Error),
    /// The copy process could not chroot into the root mounted for the copy.
    #[error("enter the container's root {}: {source}", dir.display())]
    EnterMounted {
        dir: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
    /// `path` could not be written as a tar stream.
    #[error("{}: {source}", path.display())]
    Archive {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The stream could not be extracted at `path`.
    #[error("{}: {source}", path.display())]
    Extract {
        path: PathBuf,
        #[source]
        source: ExtractError,
    },
    /// The writable layer could not be written as a layer tar.
    #[error("the writable layer: {0}")]
    Layer(#[source] capsa_core::layer_diff::LayerDiffError),
    /// A `copy_in` process was started without its input.
    #[error("no input")]
    NoInput,
}

/// Starts writing `path` (in `root`) as a tar stream.
pub fn copy_out(root: Root, path: &str) -> Result<CopyProcess, CopyError> {
    let inside = PathBuf::from(path);
    let name = cp::top_name(&inside);
    start(root, false, move |_, out| {
        cp::write_tar(&inside, &name, out).map_err(|source| CopyError::Archive {
            path: inside,
            source,
        })
    })
}

/// Starts writing the overlay's upper directory `upper` (in the agent's mount namespace)
/// as an image layer tar, without `skipped` (paths relative to the container's root).
pub fn copy_layer(upper: PathBuf, skipped: Vec<String>) -> Result<CopyProcess, CopyError> {
    use capsa_core::layer_diff::{write_layer, LayerOptions};
    let options = LayerOptions {
        skipped: skipped.into_iter().map(PathBuf::from).collect(),
        id_shift: None,
    };
    start(Root::Agent, false, move |_, out| {
        write_layer(&upper, &options, std::io::BufWriter::new(out))
            .map(|_| ())
            .map_err(CopyError::Layer)
    })
}

/// Starts extracting the tar stream of its stdin at `path` (in `root`).
pub fn copy_in(
    root: Root,
    path: &str,
    as_is: bool,
    keep_owners: bool,
) -> Result<CopyProcess, CopyError> {
    let target = PathBuf::from(path);
    start(root, true, move |input, _| {
        let input = input.ok_or(CopyError::NoInput)?;
        cp::extract(input, &target, as_is, keep_owners).map_err(|source| CopyError::Extract {
            path: target,
            source,
        })
    })
}

fn pipe() -> Result<(OwnedFd, OwnedFd), CopyError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(CopyError::Pipe)
}

/// Makes `root` the calling process's root.
fn enter(root: &Root, pidfd: Option<&OwnedFd>) -> Result<(), CopyError> {
    match (root, pidfd) {
        (Root::Workload(_), Some(pidfd)) => {
            sys::setns_pidfd(pidfd, libc::CLONE_NEWNS as u64).map_err(CopyError::EnterWorkload)
        }
        (Root::Mounted(dir), _) => nix::unistd::chroot(*dir)
            .and_then(|()| nix::unistd::chdir("/"))
            .map_err(|source| CopyError::EnterMounted {
                dir: dir.to_path_buf(),
                source,
            }),
        (Root::Workload(pid), None) => Err(CopyError::Gone(*pid)),
        (Root::Agent, _) => Ok(()),
    }
}

/// Forks the copy process: it enters `root` and runs `work` over its stdin (when
/// `with_input`) and stdout; an error goes to stderr and makes its exit code 1.
fn start(
    root: Root,
    with_input: bool,
    work: impl FnOnce(Option<File>, File) -> Result<(), CopyError>,
) -> Result<CopyProcess, CopyError> {
    let pidfd = match root {
        Root::Workload(pid) => {
            Some(sys::pidfd_open(pid).map_err(|source| CopyError::Process { pid, source })?)
        }
        Root::Mounted(_) | Root::Agent => None,
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let input = if with_input { Some(pipe()?) } else { None };
    // The agent has one thread, as fork requires.
    match sys::fork_into_namespaces(0, None).map_err(CopyError::Fork)? {
        Forked::Child => {
            // The parent's ends must close here too, or the stdin pipe never reaches its end.
            drop((out_r, err_r));
            let stdin = input.map(|(r, w)| {
                drop(w);
                File::from(r)
            });
            // Non-dumpable for its whole life (it never execs), as capsa's own cp child.
            let result = sys::set_dumpable(false)
                .map_err(CopyError::Dumpable)
                .and_then(|()| enter(&root, pidfd.as_ref()))
                .and_then(|()| work(stdin, File::from(out_w)));
            let code = match result {
                Ok(()) => 0,
                Err(e) => {
                    let _ = nix::unistd::write(&err_w, format!("{e}\n").as_bytes());
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
