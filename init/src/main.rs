//! `capsa-init -- COMMAND [ARG...]`: the small program capsa puts in front of a workload.
//! It is a container's PID 1 with `--init`, and the parent of every `capsa exec` process
//! (from outside the container's PID namespace). capsa execs it from a sealed in-memory copy
//! with the workload's environment, user, capabilities, no_new_privs and seccomp filter
//! already in place, so it is no stronger than the workload and nothing of capsa (its
//! binary, arguments or environment) is reachable through /proc. It:
//!
//! - makes itself non-dumpable, so the child it forks is closed to ptrace and to /proc until
//!   that child's own execve;
//! - starts COMMAND in a process group of its own, given the terminal's foreground if stdin
//!   is the controlling terminal (Ctrl-C then reaches COMMAND once, not through us again);
//! - passes every signal it receives on to COMMAND, reaps every child (as PID 1, orphans
//!   too), and exits with COMMAND's status: its exit code, or 128 + the signal that killed
//!   it; 127 when COMMAND is not found, 126 when it cannot be executed.
//!
//! It has its own C `main`: Rust's runtime set-up (SIGPIPE ignored, which would survive the
//! execve into COMMAND) never runs.

#![no_main]

use std::ffi::{c_char, c_int, CStr, CString};
use std::io::Write;

/// The name `ps` shows (execveat of a memfd would otherwise name it after the descriptor).
const NAME: &CStr = c"capsa-init";
/// PATH when the environment sets none: the one capsa resolved COMMAND with.
const DEFAULT_PATH: &[u8] = b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Exit code when COMMAND cannot be started at all (Docker's "cannot invoke").
const CANNOT_INVOKE: c_int = 126;
/// Exit code when COMMAND is nowhere.
const NOT_FOUND: c_int = 127;
/// Signals a program raises on itself (faults): never blocked, so they still end us.
const SYNCHRONOUS: [c_int; 7] = [
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGABRT,
    libc::SIGTRAP,
    libc::SIGSYS,
];
/// Terminal stops: ignored here (we may be in the background once COMMAND has the
/// terminal), restored to default for COMMAND.
const TERMINAL_STOPS: [c_int; 2] = [libc::SIGTTIN, libc::SIGTTOU];

#[no_mangle]
extern "C" fn main(argc: c_int, argv: *const *const c_char, envp: *const *const c_char) -> c_int {
    // SAFETY: the C runtime passes argc valid, NUL-terminated strings in argv.
    let args: Vec<&CStr> = (0..usize::try_from(argc).unwrap_or(0))
        .map(|i| unsafe { CStr::from_ptr(*argv.add(i)) })
        .collect();
    let command = match args.as_slice() {
        [_, dashes, command @ ..] if dashes.to_bytes() == b"--" && !command.is_empty() => command,
        _ => {
            say("usage: capsa-init -- COMMAND [ARG...]");
            return CANNOT_INVOKE;
        }
    };
    // SAFETY: prctl with integer arguments, and a pointer to a NUL-terminated name that
    // outlives the call.
    unsafe {
        // First: the fork below inherits it, so COMMAND's process is never dumpable before
        // its execve (which resets it), and neither are we.
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::prctl(libc::PR_SET_NAME, NAME.as_ptr(), 0, 0, 0);
    }
    let (forwarded, before) = block_signals();
    // SAFETY: fork in a single-threaded process; the child only calls async-signal-safe
    // functions (and allocates a path, as execvp does) before execve or _exit.
    match unsafe { libc::fork() } {
        -1 => {
            say(&format!("fork: {}", std::io::Error::last_os_error()));
            CANNOT_INVOKE
        }
        0 => start_command(command, envp, &before),
        child => supervise(child, &forwarded),
    }
}

/// Writes one line to stderr (which may be closed: then nothing is said).
fn say(message: &str) {
    let _ = writeln!(std::io::stderr(), "capsa-init: {message}");
}

/// Blocks every signal but the synchronous ones and the terminal stops (which are ignored),
/// so that they wait for `sigwaitinfo`. Returns the set to wait for and the mask before.
fn block_signals() -> (libc::sigset_t, libc::sigset_t) {
    // SAFETY: sigset_t is plain data, initialised by sigfillset/sigemptyset before use; the
    // signal calls take pointers to live sets and valid dispositions.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut before: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::sigemptyset(&mut before);
        for sig in SYNCHRONOUS.iter().chain(&TERMINAL_STOPS) {
            libc::sigdelset(&mut set, *sig);
        }
        for sig in TERMINAL_STOPS {
            libc::signal(sig, libc::SIG_IGN);
        }
        libc::sigprocmask(libc::SIG_SETMASK, &set, &mut before);
        (set, before)
    }
}

/// In the child: a process group of its own in the terminal's foreground, the signal state
/// capsa handed over, then COMMAND. Never returns.
fn start_command(command: &[&CStr], envp: *const *const c_char, before: &libc::sigset_t) -> ! {
    // SAFETY: process-group and terminal calls with integer arguments; restoring the
    // dispositions and the mask this process had, through pointers to live values.
    unsafe {
        libc::setpgid(0, 0);
        if libc::isatty(libc::STDIN_FILENO) == 1 {
            // Fails harmlessly when stdin is not our controlling terminal.
            libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpgrp());
        }
        for sig in TERMINAL_STOPS {
            libc::signal(sig, libc::SIG_DFL);
        }
        libc::sigprocmask(libc::SIG_SETMASK, before, std::ptr::null_mut());
    }
    let err = exec_search(command, envp);
    let name = command[0].to_string_lossy();
    say(&format!("exec {name:?}: {err}"));
    let code = match err.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => NOT_FOUND,
        _ => CANNOT_INVOKE,
    };
    // SAFETY: ends the child without running exit handlers.
    unsafe { libc::_exit(code) }
}

/// execve of COMMAND, looked up in the environment's PATH as capsa looked it up (a name with
/// a slash as is). Returns only on failure: "permission denied" if some candidate was not
/// executable, else the last error.
fn exec_search(command: &[&CStr], envp: *const *const c_char) -> std::io::Error {
    let mut argv: Vec<*const c_char> = command.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let try_exec = |path: &CStr| {
        // SAFETY: NUL-terminated path, a NULL-terminated argv of live strings, and the
        // environment the C runtime gave us.
        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp) };
        std::io::Error::last_os_error()
    };
    let program = command[0].to_bytes();
    if program.contains(&b'/') {
        return try_exec(command[0]);
    }
    let mut denied = None;
    let mut last = std::io::Error::from_raw_os_error(libc::ENOENT);
    for dir in path_of(envp)
        .split(|b| *b == b':')
        .filter(|d| !d.is_empty())
    {
        let Ok(candidate) = CString::new([dir, b"/", program].concat()) else {
            continue;
        };
        last = try_exec(&candidate);
        match last.raw_os_error() {
            Some(libc::EACCES) => denied = Some(std::io::Error::from_raw_os_error(libc::EACCES)),
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => {}
            _ => return last,
        }
    }
    denied.unwrap_or(last)
}

/// The value of PATH in `envp`, or the default.
fn path_of<'a>(envp: *const *const c_char) -> &'a [u8] {
    let mut i = 0;
    loop {
        // SAFETY: envp is the NULL-terminated array of NUL-terminated strings the C runtime
        // passed to main; it lives as long as the process.
        let entry = unsafe { *envp.add(i) };
        if entry.is_null() {
            return DEFAULT_PATH;
        }
        // SAFETY: as above.
        let bytes = unsafe { CStr::from_ptr(entry) }.to_bytes();
        if let Some(value) = bytes.strip_prefix(b"PATH=") {
            return value;
        }
        i += 1;
    }
}

/// Passes signals on to `child` and reaps until it has exited; returns its status.
fn supervise(child: libc::pid_t, waited: &libc::sigset_t) -> c_int {
    loop {
        // SAFETY: waits on a live, initialised set; no siginfo wanted.
        let sig = unsafe { libc::sigwaitinfo(waited, std::ptr::null_mut()) };
        if sig == libc::SIGCHLD {
            if let Some(code) = reap(child) {
                return code;
            }
        } else if sig > 0 {
            // SAFETY: kill(2) with integer arguments; a child already gone is no error here.
            unsafe { libc::kill(child, sig) };
        }
    }
}

/// Reaps every exited child; `child`'s status as an exit code once it is among them.
fn reap(child: libc::pid_t) -> Option<c_int> {
    let mut code = None;
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a live integer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return code; // none left, or the rest still run
        }
        if pid == child {
            code = Some(if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                libc::WEXITSTATUS(status)
            });
        }
    }
}
