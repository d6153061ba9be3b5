//! System calls that nix does not wrap. Each is wrapped once, here, with its safety argument.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// `struct clone_args` of clone3(2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Which side of a fork-like clone we are on.
pub enum Forked {
    /// In the parent; the child's host PID.
    Parent(i32),
    /// In the child.
    Child,
}

/// `CLONE_INTO_CGROUP` (Linux 5.7): the child is born in the cgroup v2 directory `cgroup`.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Fork-like `clone3` into new namespaces (`flags` are `CLONE_NEW*`): the child continues
/// from this call with a copy of the address space, as after fork(2). With `cgroup` (a
/// cgroup v2 directory) the child is born in that cgroup. Falls back to clone(2) on
/// kernels without clone3 (and then without `cgroup`).
///
/// With namespaces or a cgroup the caller must be single-threaded: the child only has the
/// calling thread, and no library fork handler has run. Without (flags 0, no cgroup) it
/// is libc's fork, which a thread of a multi-threaded process may call.
pub fn fork_into_namespaces(flags: u64, cgroup: Option<RawFd>) -> io::Result<Forked> {
    if flags == 0 && cgroup.is_none() {
        // A plain fork goes through the C library: its fork handlers take and reset the
        // allocator's locks, so the child can allocate even when the caller is one thread
        // of a server (`capsa serve` runs `exec` and `cp` from its worker threads). A raw
        // clone3 skips them, and a child born while another thread held a malloc lock
        // hangs on its first allocation.
        // SAFETY: fork(2) through libc; the child resumes here with a copy of memory.
        return match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            0 => Ok(Forked::Child),
            pid => Ok(Forked::Parent(pid)),
        };
    }
    let args = CloneArgs {
        flags: flags | cgroup.map_or(0, |_| CLONE_INTO_CGROUP),
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.map_or(0, |fd| fd as u64),
        ..Default::default()
    };
    // SAFETY: clone3 without CLONE_VM and with a null stack behaves like fork: the child gets
    // a private copy of memory and resumes here. `args` lives across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    let rc = if rc == -1
        && cgroup.is_none()
        && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS)
    {
        // SAFETY: clone(2) with a null stack and no CLONE_VM is fork with extra flags.
        unsafe {
            libc::syscall(
                libc::SYS_clone,
                flags | libc::SIGCHLD as u64,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        }
    } else {
        rc
    };
    match rc {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as i32)),
    }
}

/// Installs a classic BPF seccomp filter on the calling thread with seccomp(2). Unlike
/// seccompiler's helper it does not set no_new_privs: that is the spec's decision, and
/// without it the caller needs CAP_SYS_ADMIN.
pub fn install_seccomp_filter(program: &[seccompiler::sock_filter]) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: u16::try_from(program.len()).map_err(|_| io::Error::other("filter too long"))?,
        // seccompiler's sock_filter has the kernel's layout, as libc's does.
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `program`, which outlives the call; the kernel copies it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// prctl(2) with one integer argument.
fn prctl_set(option: libc::c_int, value: libc::c_ulong) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(option, value, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets no_new_privs: execve can no longer grant privileges (setuid bits, file caps).
pub fn set_no_new_privs() -> io::Result<()> {
    prctl_set(libc::PR_SET_NO_NEW_PRIVS, 1)
}

/// Keeps the permitted capability set across a change from uid 0 to another uid.
pub fn set_keep_caps(keep: bool) -> io::Result<()> {
    prctl_set(libc::PR_SET_KEEPCAPS, keep as libc::c_ulong)
}

/// Marks the process (un)dumpable: a non-dumpable process's /proc entries, including `exe`,
/// are owned by root and closed to ptrace from the container.
pub fn set_dumpable(dumpable: bool) -> io::Result<()> {
    prctl_set(libc::PR_SET_DUMPABLE, dumpable as libc::c_ulong)
}

/// Replaces this process's command line, as `/proc/PID/cmdline` and `ps` show it to every
/// local user, with `words` (cut to fit, the rest NUL-filled). A process forked from the
/// CLI otherwise keeps the CLI's argv, `-e SECRET=...` included, for its whole life. The
/// environment needs no such care: `/proc/PID/environ` is readable only by the process's
/// owner with ptrace access (here root).
///
/// The caller must be single-threaded: nothing may read the old argv meanwhile.
pub fn replace_cmdline(words: &[&str]) -> io::Result<()> {
    let (start, end) = arg_area()?;
    let len = end
        .checked_sub(start)
        .filter(|&len| len > 0)
        .ok_or_else(|| io::Error::other(format!("argument area {start:#x}..{end:#x} is empty")))?;
    let mut text = Vec::with_capacity(len);
    for word in words {
        text.extend_from_slice(word.as_bytes());
        text.push(0);
    }
    text.resize(len, 0);
    // A NUL last byte tells the kernel that the area holds plain arguments, so it shows
    // this area and nothing after it (a non-NUL one makes it read on into the environment).
    text[len - 1] = 0;
    // SAFETY: [start, end) is this process's argument area as the kernel reports it: bytes
    // at the top of the main thread's stack, mapped writable for the process's whole life
    // and owned by no Rust value (std only reads argv through pointers into it, in
    // env::args, and the caller is single-threaded). `text` is exactly `len` bytes long.
    unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), start as *mut u8, len) };
    Ok(())
}

/// Where this process's argument strings lie: fields 48 and 49 (arg_start, arg_end) of
/// `/proc/self/stat`.
fn arg_area() -> io::Result<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name (field 2) may hold spaces or ')'; fields resume after the last ')'.
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| io::Error::other("/proc/self/stat: no command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> io::Result<usize> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other(format!("/proc/self/stat: no field {n}")))
    };
    Ok((field(48)?, field(49)?))
}

/// Sets close-on-exec on every descriptor from `first` up, so that nothing of capsa's leaks
/// into the workload.
pub fn cloexec_from(first: RawFd) -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A pidfd for `pid` (pidfd_open(2)): it becomes readable when the process exits, which lets
/// a non-parent wait for a container's init without polling /proc.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes integers and returns a new descriptor we then own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends `signal` through a pidfd, which cannot hit a recycled PID.
pub fn pidfd_send_signal(pidfd: &OwnedFd, signal: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: integers and a null siginfo pointer, which the call allows.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Waits up to `timeout_ms` (-1: forever) until `fd` is readable (or hung up); true when it
/// is, false on timeout. Retries when a signal interrupts the wait.
pub fn wait_readable(fd: RawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd for the duration of the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        match rc {
            -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
            -1 => return Err(io::Error::last_os_error()),
            0 => return Ok(false),
            _ => return Ok(true),
        }
    }
}

/// Waits up to `timeout_ms` for the process behind `pidfd` to exit; true when it has.
pub fn pidfd_wait_exit(pidfd: &OwnedFd, timeout_ms: i32) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    wait_readable(pidfd.as_raw_fd(), timeout_ms)
}

/// setrlimit(2) for one resource (an `RLIMIT_*` number).
pub fn set_rlimit(resource: u32, soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `lim` is a valid rlimit for the duration of the call.
    let rc = unsafe { libc::setrlimit(resource as libc::__rlimit_resource_t, &lim) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Restores default dispositions for every catchable signal and unblocks all of them, so
/// the workload does not inherit what capsa set up (Rust ignores SIGPIPE, the CLI forwards
/// SIGINT): ignored signals and the mask survive execve.
pub fn reset_signals() {
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL is always a valid disposition.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // SAFETY: an empty, initialised set passed by pointer for the duration of the call.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Gives the heap pages this process no longer uses back to the kernel. A process forked
/// from the CLI to live on (a container's monitor) inherits the CLI's parsed command line
/// and other start-up allocations; once freed they would stay resident, and counted
/// against every container, for the container's whole life.
pub fn release_free_heap() {
    // SAFETY: malloc_trim only returns free memory of glibc's allocator to the kernel
    // (madvise/brk); it touches no memory in use.
    unsafe { libc::malloc_trim(0) };
}

/// Chooses what a write to a pipe or socket whose reader is gone does to this process:
/// `true` is SIGPIPE's default, death without a word, what command-line tools do when
/// their output is closed (`capsa inspect X | head -1`); `false` ignores the signal, so the
/// write fails with EPIPE, for processes that must outlive a reader and clean up after a
/// container (monitors, terminal relays, benchmarks). The workload never inherits either:
/// [`reset_signals`] runs before its execve.
pub fn set_broken_pipe_kills(kills: bool) {
    let disposition = if kills { libc::SIG_DFL } else { libc::SIG_IGN };
    // SAFETY: SIG_DFL and SIG_IGN are always valid dispositions for SIGPIPE.
    unsafe { libc::signal(libc::SIGPIPE, disposition) };
}

/// setns(2) through a pidfd (Linux 5.8): joins the namespaces named by `flags` of the
/// process behind `pidfd`, all at once (the user namespace first).
pub fn setns_pidfd(pidfd: &OwnedFd, flags: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a live descriptor and integer flags.
    let rc = unsafe { libc::setns(pidfd.as_raw_fd(), flags as libc::c_int) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes the terminal on `fd` the controlling terminal of the calling session leader.
pub fn set_controlling_terminal(fd: RawFd) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal).
    let rc = unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A terminal's window size (rows, columns).
pub fn window_size(fd: RawFd) -> io::Result<(u16, u16)> {
    // SAFETY: TIOCGWINSZ writes one winsize into the live struct.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: `ws` is valid for writes for the duration of the call.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    if rc == 0 {
        Ok((ws.ws_row, ws.ws_col))
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets a terminal's window size (the pty master's, so the workload sees SIGWINCH).
pub fn set_window_size(fd: RawFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the live struct.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// Waits up to `limit` for child `pid`; false when it has not ended (it is killed).
    fn ended_within(pid: i32, limit: Duration) -> bool {
        let start = Instant::now();
        loop {
            let mut status = 0;
            // SAFETY: waitpid on our own child with a live status word.
            if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                return true;
            }
            if start.elapsed() > limit {
                // SAFETY: kill and reap our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// `capsa serve` forks `exec` and `cp` children from one of its threads while others
    /// allocate: each child must be able to allocate (a child born while another thread
    /// held an allocator lock used to hang there).
    #[test]
    fn a_plain_fork_from_a_busy_multithreaded_process_can_allocate() {
        // One allocator arena for every thread, as a server with many threads ends up
        // sharing them: the forking thread's arena is then locked by the others at times.
        // SAFETY: mallopt takes integers.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
        let stop = Arc::new(AtomicBool::new(false));
        let hammers: Vec<_> = (0..2)
            .map(|n| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut size = 64 + n;
                    while !stop.load(Ordering::Relaxed) {
                        let v: Vec<u8> = Vec::with_capacity(size);
                        std::hint::black_box(v);
                        size = size * 7 % 65_521 + 16;
                    }
                })
            })
            .collect();
        let mut hung = 0;
        for _ in 0..200 {
            match fork_into_namespaces(0, None).unwrap() {
                Forked::Child => {
                    let v: Vec<Vec<u8>> = (1..64).map(|n| vec![0u8; n * 97]).collect();
                    std::hint::black_box(v);
                    // SAFETY: ends the child without the parent's exit handlers.
                    unsafe { libc::_exit(0) }
                }
                Forked::Parent(pid) => {
                    if !ended_within(pid, Duration::from_secs(10)) {
                        hung += 1;
                    }
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        for h in hammers {
            h.join().unwrap();
        }
        assert_eq!(hung, 0, "children that hung allocating");
    }
}
