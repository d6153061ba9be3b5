//! Volume names: Docker's local driver rule (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`), so a name is
//! always one plain file name (no `/`, never `.` or `..`), and anonymous volumes' names.

/// The characters Docker's local driver allows, as its message quotes them.
const ALLOWED: &str = "[a-zA-Z0-9][a-zA-Z0-9_.-]";

/// Longest name: one file name on the host.
const MAX_LEN: usize = 255;

/// Why a name cannot name a volume (Docker's words).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NameError {
    /// Holds the name, controls escaped.
    #[error("{0:?} includes invalid characters for a local volume name, only \"{ALLOWED}\" are allowed. If you intended to pass a host directory, use absolute path")]
    InvalidCharacters(String),
    /// Holds the name's length.
    #[error("a volume name has at most {MAX_LEN} characters ({0} given)")]
    TooLong(usize),
}

/// Checks `name` as Docker's local driver does.
pub fn check(name: &str) -> Result<(), NameError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok || name.len() < 2 {
        return Err(NameError::InvalidCharacters(
            crate::printable::escape_controls(name).into_owned(),
        ));
    }
    if name.len() > MAX_LEN {
        return Err(NameError::TooLong(name.len()));
    }
    Ok(())
}

/// A new anonymous volume's name: 64 random hex digits, as Docker's.
pub fn anonymous() -> String {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: the kernel writes at most the remaining length into the live slice.
        let n = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if n > 0 {
            filled += n as usize;
        }
    }
    hex::encode(bytes)
}

/// Whether `name` has the shape of an anonymous volume's name.
pub fn looks_anonymous(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rule() {
        for good in ["data", "my_vol.1", "a-b", "0x", "a.."] {
            assert!(check(good).is_ok(), "{good}");
        }
        for bad in [
            "", "a", ".", "..", "../x", "a/b", "/abs", "-x", "_x", ".hidden", "a b", "a\nb", "é1",
        ] {
            assert!(check(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check(&"a".repeat(256)).is_err());
    }

    #[test]
    fn anonymous_names_are_64_hex_and_differ() {
        let (a, b) = (anonymous(), anonymous());
        assert!(looks_anonymous(&a) && check(&a).is_ok());
        assert_ne!(a, b);
    }
}
