//! Container IDs (64 hex digits, shown as 12: [`crate::ids`]) and generated names
//! (`adjective_noun`).

use crate::ids::getrandom;
pub use crate::ids::{new_id, short, SHORT_ID_LEN};

const ADJECTIVES: &[&str] = &[
    "agile", "bold", "brave", "calm", "clever", "eager", "fervent", "gentle", "happy", "keen",
    "lucid", "merry", "nimble", "proud", "quiet", "serene", "sharp", "steady", "swift", "vivid",
];
const NOUNS: &[&str] = &[
    "babbage", "curie", "dijkstra", "euler", "fermat", "gauss", "hopper", "hypatia", "kepler",
    "knuth", "lamport", "lovelace", "noether", "pascal", "ritchie", "shannon", "thompson",
    "turing", "wirth", "yalow",
];

/// A random `adjective_noun` name, as Docker makes one.
pub fn random_name() -> String {
    let mut b = [0u8; 2];
    getrandom(&mut b);
    format!(
        "{}_{}",
        ADJECTIVES[b[0] as usize % ADJECTIVES.len()],
        NOUNS[b[1] as usize % NOUNS.len()]
    )
}

/// Docker's rule for container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && name.len() >= 2
        && name.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex() {
        let id = new_id();
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(id, new_id());
        assert_eq!(short(&id).len(), 12);
    }

    #[test]
    fn names_follow_docker_rules() {
        assert!(valid_name("web-1"));
        assert!(valid_name(&random_name()));
        assert!(!valid_name("-x"));
        assert!(!valid_name("a"));
        assert!(!valid_name("has space"));
    }
}
