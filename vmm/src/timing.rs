//! When the VMM started, for the figures it reports: the first KVM_RUN and the guest's boot-timer
//! write, each as wall time and CPU time since start. A parent that wants exec included passes its
//! CLOCK_REALTIME just before exec in `CAPSA_VMM_T0` (nanoseconds since the epoch).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const T0_ENV: &str = "CAPSA_VMM_T0";

#[derive(Clone, Copy, Debug)]
pub struct StartTime {
    epoch_ns: u128,
}

impl StartTime {
    /// The parent's timestamp if it gave one, else now.
    pub fn from_env_or_now() -> Self {
        let given = std::env::var(T0_ENV)
            .ok()
            .and_then(|v| v.parse::<u128>().ok());
        Self {
            epoch_ns: given.unwrap_or_else(now_ns),
        }
    }

    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(now_ns().saturating_sub(self.epoch_ns) as u64)
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// CPU time (user + system) this process has used so far.
pub fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One reported moment: wall and CPU time since start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mark {
    pub wall: Duration,
    pub cpu: Duration,
}

impl Mark {
    pub fn now(start: &StartTime) -> Self {
        Self {
            wall: start.elapsed(),
            cpu: process_cpu(),
        }
    }
}

impl std::fmt::Display for Mark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} us wall, {} us CPU",
            self.wall.as_micros(),
            self.cpu.as_micros()
        )
    }
}
