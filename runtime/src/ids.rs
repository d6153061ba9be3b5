//! Object IDs: 64 random hex digits, shown as 12 (containers, networks).

/// Characters of a short ID, as Docker shows them.
pub const SHORT_ID_LEN: usize = 12;

/// A new random 64-hex-digit ID.
pub fn new_id() -> String {
    let mut bytes = [0u8; 32];
    getrandom(&mut bytes);
    hex::encode(bytes)
}

/// The 12-character form of an ID.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(SHORT_ID_LEN)]
}

/// Fills `buf` from the kernel's random source.
pub fn getrandom(buf: &mut [u8]) {
    // SAFETY: the kernel writes at most buf.len() bytes into the live slice.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    assert_eq!(n as usize, buf.len(), "getrandom(2) failed");
}
