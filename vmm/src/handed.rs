//! Descriptors handed to capsa-vmm by the process that started it (`fd=N` in the device
//! flags): a jailed VMM opens no host path, its parent opens the disks, the tap, the console
//! socket and the serial log and passes them across execve.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::Mutex;

/// Descriptors taken so far: each may be owned once.
static TAKEN: Mutex<BTreeSet<RawFd>> = Mutex::new(BTreeSet::new());

/// Takes ownership of handed descriptor `fd` (at least 3, open, not taken before) and marks
/// it close-on-exec.
pub fn take(fd: RawFd) -> io::Result<File> {
    let refuse = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("fd {fd}: {why}"));
    if fd < 3 {
        return Err(refuse("0, 1 and 2 are stdio, not a handed descriptor"));
    }
    let mut taken = TAKEN.lock().map_err(|_| refuse("lock poisoned"))?;
    if taken.contains(&fd) {
        return Err(refuse("given twice"));
    }
    // SAFETY: F_GETFD/F_SETFD only read and set this descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(refuse(&format!("not open: {}", io::Error::last_os_error())));
    }
    taken.insert(fd);
    // SAFETY: the descriptor is open, was handed to this process for this use, and is taken
    // once only (checked above), so this File is its only owner.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// `fd=N` of a flag, if `part` is one.
pub fn parse(part: &str) -> Option<Result<RawFd, String>> {
    let v = part.strip_prefix("fd=")?;
    Some(
        v.parse::<RawFd>()
            .ok()
            .filter(|n| *n >= 3)
            .ok_or_else(|| format!("fd={v}: expected a descriptor number of 3 or more")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    #[test]
    fn a_handed_descriptor_is_taken_once() {
        let fd = File::open("/dev/null").unwrap().into_raw_fd();
        let f = take(fd).unwrap();
        assert!(take(fd).is_err(), "taken twice");
        drop(f);
        assert!(take(1).is_err(), "stdio");
        assert_eq!(parse("fd=7"), Some(Ok(7)));
        assert!(matches!(parse("fd=x"), Some(Err(_))));
        assert!(matches!(parse("fd=2"), Some(Err(_))));
        assert_eq!(parse("tap=x"), None);
    }
}
