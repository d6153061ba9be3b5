//! Passes the signals a process receives on to another one: the CLI to the container it
//! waits for (Docker's sig-proxy), `exec` to the process it started.

use std::sync::atomic::{AtomicI32, Ordering};

/// Where signals go (0: nowhere). One per process: each forwarder is its own process.
static TARGET: AtomicI32 = AtomicI32::new(0);

/// The signals a user sends to stop or poke a workload.
pub const USER_SIGNALS: &[libc::c_int] = &[
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

extern "C" fn forward(sig: libc::c_int) {
    let pid = TARGET.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// From now on, passes `signals` on to `pid`.
pub fn forward_to(pid: i32, signals: &[libc::c_int]) {
    TARGET.store(pid, Ordering::Relaxed);
    for &sig in signals {
        // SAFETY: `forward` only calls async-signal-safe functions.
        unsafe { libc::signal(sig, forward as *const () as libc::sighandler_t) };
    }
}

/// Stops forwarding (the target is gone).
pub fn stop() {
    TARGET.store(0, Ordering::Relaxed);
}
