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

/// Checks that `name` is a DNS name; the error says what is wrong with it.
pub fn check(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a name cannot be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "{} bytes long; a DNS name has at most {MAX_NAME_LEN}",
            name.len()
        ));
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

fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("it has an empty label (two dots in a row, or a dot at an end)".into());
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(format!(
            "label {label:?} is {} bytes long; a label has at most {MAX_LABEL_LEN}",
            label.len()
        ));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "{c:?} is not allowed (letters, digits, '-' and '_' only)"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!("label {label:?} starts or ends with '-'"));
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
        let err = check("evil\n10.231.7.250 db").unwrap_err();
        assert!(err.contains("'\\n'"), "{err}");
        for bad in [
            "a b", "a\tb", "a#b", "", "a..b", ".a", "a.", "-a", "a-", "é",
        ] {
            assert!(!is_valid(bad), "{bad:?}");
        }
        assert!(check(&"a".repeat(64)).unwrap_err().contains("63"));
        let long = vec!["a".repeat(63); 4].join(".");
        assert!(check(&long).unwrap_err().contains("253"));
    }
}
