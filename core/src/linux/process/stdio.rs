//! The standard streams of a process that enters a container: ends of pipes made for it, a
//! pseudo-terminal opened for it, or a null device on a file system of its own.
//!
//! Never a descriptor the caller itself holds: container root can reopen whatever a
//! descriptor names through `/proc/self/fd/N`, so the caller's stdout redirected into a host
//! file would let the workload read that file and chmod it (a setuid-root binary for anyone),
//! and the operator's terminal would stay readable and writable by a process the workload
//! leaves behind. A [`Stdio`] can only be made from a [`Pipes`] or a [`Pty`], so no such
//! descriptor can reach a container; the caller relays between its streams and the pipes.

use super::super::mountapi;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The three descriptors a process gets as its stdin, stdout and stderr.
#[derive(Debug, Clone, Copy)]
pub struct Stdio<'a> {
    fds: [BorrowedFd<'a>; 3],
}

impl<'a> Stdio<'a> {
    /// The caller's own three descriptors, for a runtime whose caller made them for the
    /// container alone: runc's contract, where containerd's shim and conmon hand `create`
    /// and `exec` pipes or fifos of their own making as stdin, stdout and stderr. Nothing
    /// else may use this (see the module's note on the caller's descriptors).
    pub fn inherited_from_caller(fds: [BorrowedFd<'a>; 3]) -> Stdio<'a> {
        Stdio { fds }
    }

    /// Makes them this process's 0, 1 and 2 (in the child, before its execve). Each is first
    /// copied above 2, so that none is overwritten before its turn, and the copies close on
    /// exec.
    pub fn install(&self) -> nix::Result<()> {
        use nix::fcntl::{fcntl, FcntlArg};
        let mut high: Vec<OwnedFd> = Vec::with_capacity(3);
        for fd in self.fds {
            let copy = fcntl(fd.as_raw_fd(), FcntlArg::F_DUPFD_CLOEXEC(3))?;
            // SAFETY: fcntl returned a new descriptor that nothing else owns.
            high.push(unsafe { OwnedFd::from_raw_fd(copy) });
        }
        for (target, fd) in high.iter().enumerate() {
            // dup2 onto 0..2 clears close-on-exec on the new descriptor.
            nix::unistd::dup2(fd.as_raw_fd(), target as RawFd)?;
        }
        Ok(())
    }
}

/// Where a process's stdin comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// An empty pipe, already closed: the process reads end-of-file at once.
    Closed,
    /// A pipe the caller writes to ([`Ours::stdin`]).
    Fed,
}

/// Where a process's stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Two pipes the caller reads.
    Separate,
    /// One pipe for both (when they end up in the same place, so their order holds).
    Merged,
    /// A null device of the process's own (`exec -d`: nobody reads).
    Discarded,
}

/// The caller's ends of a [`Pipes`].
#[derive(Debug)]
pub struct Ours {
    /// Writes reach the process's stdin ([`Input::Fed`]).
    pub stdin: Option<OwnedFd>,
    /// The process's stdout (and stderr with [`Output::Merged`]).
    pub stdout: Option<OwnedFd>,
    /// The process's stderr ([`Output::Separate`]).
    pub stderr: Option<OwnedFd>,
}

/// Pipes (or a null device) made for one process: its ends and the caller's.
#[derive(Debug)]
pub struct Pipes {
    theirs: [OwnedFd; 3],
    ours: Ours,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

/// A null device (c 1:3) on a tmpfs mounted nowhere: writes vanish, reads are empty, and
/// unlike the host's /dev/null no one else uses the inode, so what container root does to it
/// (chmod, chown through /proc/self/fd) changes nothing outside.
fn private_null() -> io::Result<OwnedFd> {
    use nix::sys::stat::{makedev, mknodat, Mode, SFlag};
    let dir = mountapi::private_tmpfs()?;
    mknodat(
        Some(dir.as_raw_fd()),
        "null",
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )?;
    let fd = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        "null",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Pipes {
    /// New pipes for one process.
    pub fn new(input: Input, output: Output) -> io::Result<Pipes> {
        let (stdin_r, stdin_w) = pipe()?;
        let ours_stdin = match input {
            Input::Closed => None, // dropped: the process reads EOF
            Input::Fed => Some(stdin_w),
        };
        let (stdout, stderr, ours_stdout, ours_stderr) = match output {
            Output::Separate => {
                let (out_r, out_w) = pipe()?;
                let (err_r, err_w) = pipe()?;
                (out_w, err_w, Some(out_r), Some(err_r))
            }
            Output::Merged => {
                let (r, w) = pipe()?;
                let w2 = w.try_clone()?;
                (w, w2, Some(r), None)
            }
            Output::Discarded => {
                let null = private_null()?;
                let null2 = null.try_clone()?;
                (null, null2, None, None)
            }
        };
        Ok(Pipes {
            theirs: [stdin_r, stdout, stderr],
            ours: Ours {
                stdin: ours_stdin,
                stdout: ours_stdout,
                stderr: ours_stderr,
            },
        })
    }

    /// The process's ends, to hand to it.
    pub fn stdio(&self) -> Stdio<'_> {
        Stdio {
            fds: [
                self.theirs[0].as_fd(),
                self.theirs[1].as_fd(),
                self.theirs[2].as_fd(),
            ],
        }
    }

    /// Closes the process's ends (once it holds its own copies, so that end-of-file reaches
    /// the caller when the process's last copy closes) and returns the caller's.
    pub fn into_ours(self) -> Ours {
        self.ours
    }
}

/// A pseudo-terminal opened for one process: the slave is its stdin, stdout and stderr
/// (and its controlling terminal), the master is the caller's.
#[derive(Debug)]
pub struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
}

impl Pty {
    /// A new pty of `rows` x `cols`, both ends close-on-exec.
    pub fn open(rows: u16, cols: u16) -> io::Result<Pty> {
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).map_err(io::Error::from)?;
        for fd in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(
                fd.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .map_err(io::Error::from)?;
        }
        Ok(Pty {
            master: pty.master,
            slave: pty.slave,
        })
    }

    /// A pty from its two ends (opened elsewhere, e.g. on a container's own devpts), both
    /// close-on-exec.
    pub fn from_ends(master: OwnedFd, slave: OwnedFd) -> Pty {
        Pty { master, slave }
    }

    /// The slave as all three streams.
    pub fn stdio(&self) -> Stdio<'_> {
        let fd = self.slave.as_fd();
        Stdio { fds: [fd, fd, fd] }
    }

    /// The master, for window sizes and relaying.
    pub fn master(&self) -> BorrowedFd<'_> {
        self.master.as_fd()
    }

    /// The slave, for a container's /dev/console.
    pub fn slave(&self) -> BorrowedFd<'_> {
        self.slave.as_fd()
    }

    /// Closes the slave (once the process holds its copies) and returns the master.
    pub fn into_master(self) -> OwnedFd {
        self.master
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_closed_input_reads_end_of_file_and_merged_output_is_one_pipe() {
        let pipes = Pipes::new(Input::Closed, Output::Merged).unwrap();
        let mut stdin = std::fs::File::from(pipes.theirs[0].try_clone().unwrap());
        let mut buf = Vec::new();
        assert_eq!(stdin.read_to_end(&mut buf).unwrap(), 0);
        let mut out = std::fs::File::from(pipes.theirs[1].try_clone().unwrap());
        let mut err = std::fs::File::from(pipes.theirs[2].try_clone().unwrap());
        out.write_all(b"a").unwrap();
        err.write_all(b"b").unwrap();
        drop((out, err));
        let ours = pipes.into_ours();
        assert!(ours.stdin.is_none() && ours.stderr.is_none());
        let mut read = std::fs::File::from(ours.stdout.unwrap());
        let mut got = Vec::new();
        read.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"ab");
    }

    #[test]
    fn discarded_output_is_a_null_device_of_its_own() {
        use nix::sys::stat::fstat;
        let pipes = Pipes::new(Input::Closed, Output::Discarded).unwrap();
        let own = fstat(pipes.theirs[1].as_raw_fd()).unwrap();
        let host = nix::sys::stat::stat("/dev/null").unwrap();
        assert_eq!(own.st_rdev, host.st_rdev, "the null device");
        assert_ne!(
            (own.st_dev, own.st_ino),
            (host.st_dev, host.st_ino),
            "not the host's /dev/null"
        );
        let mut null = std::fs::File::from(pipes.theirs[2].try_clone().unwrap());
        null.write_all(b"gone").unwrap();
    }
}
