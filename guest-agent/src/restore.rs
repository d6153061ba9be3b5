//! What a VM restored from a template does before its container is set up: the template's
//! memory is every clone's, so its RNG state is too. Its disks are not probed again: the
//! template's placeholders are larger than any disk put in their slots (see the host's
//! `vm::template`), and the agent finds each disk by its serial, which the device answers
//! live.

use std::os::fd::AsRawFd;

/// `RNDADDENTROPY` and `RNDRESEEDCRNG` (linux/random.h).
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;
/// The most host bytes mixed in at once.
const MAX_ENTROPY: usize = 512;

/// Mixes `bytes` into the input pool, credited as entropy, then makes the kernel reseed
/// its CRNG from the pool now (not at its next scheduled reseed, up to a minute away):
/// every clone's CRNG starts from the template's state, so without this they would read
/// the same bytes from /dev/urandom.
pub fn reseed_rng(bytes: &[u8]) -> std::io::Result<()> {
    if bytes.len() < 32 || bytes.len() > MAX_ENTROPY {
        return Err(std::io::Error::other(format!(
            "{} bytes of host entropy (32 to {MAX_ENTROPY} expected)",
            bytes.len()
        )));
    }
    let random = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = Vec::with_capacity(8 + bytes.len());
    info.extend_from_slice(&((bytes.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(bytes.len() as i32).to_ne_bytes());
    info.extend_from_slice(bytes);
    // SAFETY: RNDADDENTROPY reads a rand_pool_info of 8 + buf_size bytes, which `info` holds.
    if unsafe { libc::ioctl(random.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) } != 0 {
        return Err(std::io::Error::other(format!(
            "RNDADDENTROPY: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    if unsafe { libc::ioctl(random.as_raw_fd(), RNDRESEEDCRNG) } != 0 {
        return Err(std::io::Error::other(format!(
            "RNDRESEEDCRNG: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}
