//! Seccomp: Docker-format profiles, turned into the OCI spec's `linux.seccomp` for a given
//! capability set ([`profile`]), and compiled to classic BPF with seccompiler ([`compile`]),
//! once per distinct filter (cached on disk by content hash).

pub mod compile;
pub mod profile;

/// capsa's default profile (Docker's default allowlist for x86_64).
pub const DEFAULT_PROFILE: &str = include_str!("default.json");

/// Errors of profile parsing and filter compilation.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile is not valid JSON of the expected shape.
    #[error("seccomp profile {source_name}: {reason}")]
    BadProfile {
        /// File name (or "default").
        source_name: String,
        /// Parse error.
        reason: String,
    },
    /// seccompiler refused the filter.
    #[error("seccomp filter does not compile: {0}")]
    Compile(String),
}
