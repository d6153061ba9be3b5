//! `kill`: sends a signal to a running container's init, through a pidfd so that a recycled
//! PID is never signalled.

use super::store::ContainerStore;
use super::ContainerError;
use crate::linux::sys;

/// Parses `KILL`, `SIGKILL`, `kill` or `9`.
pub fn parse_signal(name: &str) -> Result<i32, ContainerError> {
    let bad = || ContainerError::InvalidArgument(format!("invalid signal: {name}"));
    if let Ok(n) = name.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .map(|s| s as i32)
            .map_err(|_| bad());
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| bad())
}

/// Sends `signal` to the init of running container `id`.
pub fn kill(store: &ContainerStore, id: &str, signal: i32) -> Result<(), ContainerError> {
    let state = store.observe(id)?;
    let not_running = || ContainerError::WrongState {
        id: id.to_string(),
        reason: "container is not running".into(),
    };
    let (Some(pid), true) = (state.pid, state.init_alive()) else {
        return Err(not_running());
    };
    let pidfd = sys::pidfd_open(pid).map_err(|_| not_running())?;
    if !state.init_alive() {
        return Err(not_running()); // the PID was recycled before the pidfd was taken
    }
    sys::pidfd_send_signal(&pidfd, signal).map_err(|e| ContainerError::Setup {
        id: id.to_string(),
        reason: format!("signal {signal}: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_parse_like_docker() {
        assert_eq!(parse_signal("KILL").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("10").unwrap(), libc::SIGUSR1);
        assert!(parse_signal("SIGNOPE").is_err());
        assert!(parse_signal("99").is_err());
    }
}
