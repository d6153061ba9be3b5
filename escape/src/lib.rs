//! capsa-escape: the escape probe `capsa bench --scenario isolation` runs inside every
//! isolation and peer. One static binary, so each subject runs the same code.
//!
//! Every probe tries one thing an attacker would try, with arguments that cannot change the
//! host even where the call is allowed (a module image that does not parse, a kexec with too
//! many segments, a sysctl written with the value it already has, a disk read and never
//! written), and reports whether the call reached the kernel object it aimed at, was
//! refused (with the errno), or does not exist in this kernel. The probe only says what it
//! saw; the harness (runtime/src/bench/scenario/isolation) decides what stopped it, by
//! rerunning refused probes with one layer removed and by comparing what the probe reached
//! with the host's own identity.
//!
//! - `findings`: the JSON document the binary prints;
//! - `context`: what the probe sees of itself (capabilities, seccomp, namespaces, kernel);
//! - `probes/`: the catalogue and each probe;
//! - `window`: the watcher that tries to seize processes entering the instance (`exec`);
//! - `sys`: errno helpers and the few raw syscalls.

pub mod context;
pub mod findings;
pub mod probes;
pub mod sys;
pub mod window;

/// FNV-1a (64 bit) of `bytes`, in hex: how the probe and the harness compare a disk's first
/// sector without moving the sector itself. An identity check, not a security hash.
pub fn fingerprint(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// How many bytes of a disk's start the fingerprint covers.
pub const SECTOR_BYTES: usize = 4096;

#[cfg(test)]
mod tests {
    #[test]
    fn fingerprints_differ_for_different_sectors() {
        assert_eq!(super::fingerprint(b""), "cbf29ce484222325");
        assert_ne!(super::fingerprint(&[0; 512]), super::fingerprint(&[1; 512]));
    }
}
