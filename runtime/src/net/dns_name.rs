//! Names that go into /etc/hosts: container names, `--hostname`, `--network-alias` and
//! `--add-host` names. A hosts file is a line format that every resolver in every member of
//! a network reads, so a name there is only ever a DNS name: dot-separated labels of ASCII
//! letters, digits, `-` and `_` (Docker's generated container names have one), none empty,
//! none starting or ending with `-`, at most 63 bytes each and 253 in all. Whitespace, a
//! newline or a `#` in a name would let whoever chose it write lines into other
//! containers' hosts files.

/// Longest DNS name, in bytes (RFC 1035, without the trailing dot).
pub const MAX_NAME_LEN: usize = 253;
/// Longest label, in bytes.
pub const MAX_LABEL_LEN: usize = 63;

/// What makes a name not a DNS name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsNameError {
    /// The empty string.
    #[error("a name cannot be empty")]
    Empty,
    /// Longer than [`MAX_NAME_LEN`].
    #[error("{0} bytes long; a DNS name has at most {MAX_NAME_LEN}")]
    TooLong(usize),
    /// Two dots in a row, or a dot at an end.
    #[error("it has an empty label (two dots in a row, or a dot at an end)")]
    EmptyLabel,
    /// A label longer than [`MAX_LABEL_LEN`].
    #[error("label {label:?} is {len} bytes long; a label has at most {MAX_LABEL_LEN}")]
    LabelTooLong {
        /// The label.
        label: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A character outside letters, digits, `-` and `_`.
    #[error("{0:?} is not allowed (letters, digits, '-' and '_' only)")]
    Character(char),
    /// A label that starts or ends with `-`.
    #[error("label {0:?} starts or ends with '-'")]
    Hyphen(String),
}

/// A name given for `what` (`--hostname "x"`: invalid host name) that is not a DNS name.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct InvalidName {
    /// The flag or thing and its value, as the user wrote it.
    pub what: String,
    /// What is wrong with the name.
    #[source]
    pub source: DnsNameError,
}

/// Checks that `name` is a DNS name; the error says what is wrong with it.
pub fn check(name: &str) -> Result<(), DnsNameError> {
    if name.is_empty() {
        return Err(DnsNameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(DnsNameError::TooLong(name.len()));
    }
    for label in name.split('.') {
        check_label(label)?;
    }
    Ok(())
}

/// Whether `name` is a DNS name.
pub fn is_valid(name: &str) -> bool {
    check(name).is_ok()
}

fn check_label(label: &str) -> Result<(), DnsNameError> {
    if label.is_empty() {
        return Err(DnsNameError::EmptyLabel);
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(DnsNameError::LabelTooLong {
            label: label.into(),
            len: label.len(),
        });
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(DnsNameError::Character(c));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(DnsNameError::Hyphen(label.into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_pass() {
        for ok in ["db", "payments.internal", "happy_turing", "a-1.b-2", "x"] {
            assert!(is_valid(ok), "{ok}");
        }
    }

    #[test]
    fn what_could_inject_lines_is_refused_and_said() {
        let err = check("evil\n10.231.7.250 db").unwrap_err().to_string();
        assert!(err.contains("'\\n'"), "{err}");
        for bad in [
            "a b", "a\tb", "a#b", "", "a..b", ".a", "a.", "-a", "a-", "é",
        ] {
            assert!(!is_valid(bad), "{bad:?}");
        }
        assert!(check(&"a".repeat(64))
            .unwrap_err()
            .to_string()
            .contains("63"));
        let long = vec!["a".repeat(63); 4].join(".");
        assert!(check(&long).unwrap_err().to_string().contains("253"));
    }
}
