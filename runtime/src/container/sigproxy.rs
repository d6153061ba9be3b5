//! Forwards the signals a foreground CLI receives (Ctrl-C, `kill`) to the process it waits
//! for, as Docker's sig-proxy does for `run` and `exec`.

use std::sync::atomic::{AtomicI32, Ordering};

/// The process the signals go to (0: none).
static TARGET: AtomicI32 = AtomicI32::new(0);
/// Signals forwarded.
const FORWARDED: &[libc::c_int] = &[
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

/// From now on, forward signals to `pid`.
pub fn forward_to(pid: i32) {
    TARGET.store(pid, Ordering::Relaxed);
    for &sig in FORWARDED {
        // SAFETY: `forward` only calls async-signal-safe functions.
        unsafe { libc::signal(sig, forward as *const () as libc::sighandler_t) };
    }
}

/// Stops forwarding (the target is gone).
pub fn stop() {
    TARGET.store(0, Ordering::Relaxed);
}
