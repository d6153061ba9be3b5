//! Capability sets: Docker's default set, parsing of `--cap-add/--cap-drop`, and applying a
//! spec's sets to the calling process.

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::LinuxCapabilities;
use std::str::FromStr;

/// Docker's default capability set for containers.
pub const DOCKER_DEFAULT: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// A `--cap-add`/`--cap-drop` name the kernel's capability list does not hold, as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown capability: {0:?}")]
pub struct UnknownCapability(pub String);

/// Parses `NET_ADMIN`, `cap_net_admin` or `CAP_NET_ADMIN` (and `ALL`) into canonical names.
pub fn parse_cap(name: &str) -> Result<Vec<String>, UnknownCapability> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(all_caps());
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    Capability::from_str(&full)
        .map(|c| vec![c.to_string()])
        .map_err(|_| UnknownCapability(name.to_string()))
}

/// Every capability the running kernel knows that the caller can still grant (those in
/// its own bounding set).
pub fn all_caps() -> Vec<String> {
    let bounding = caps::read(None, CapSet::Bounding).unwrap_or_default();
    caps::runtime::thread_all_supported()
        .into_iter()
        .filter(|c| bounding.contains(c))
        .map(|c| c.to_string())
        .collect()
}

/// Docker's rules (moby's TweakCapabilities): with `ALL` among the adds, every capability
/// but the dropped ones; otherwise Docker's default set minus `drop` (which may be `ALL`),
/// plus `add`.
pub fn effective_set(add: &[String], drop: &[String]) -> Result<Vec<String>, UnknownCapability> {
    let is_all = |n: &String| n.trim().eq_ignore_ascii_case("ALL");
    let mut set: Vec<String> = if add.iter().any(is_all) {
        all_caps()
    } else {
        DOCKER_DEFAULT.iter().map(|s| s.to_string()).collect()
    };
    for d in drop {
        if add.iter().any(is_all) && is_all(d) {
            continue; // Docker: ALL added wins over ALL dropped
        }
        let names = parse_cap(d)?;
        set.retain(|c| !names.contains(c));
    }
    for a in add.iter().filter(|a| !is_all(a)) {
        for name in parse_cap(a)? {
            if !set.contains(&name) {
                set.push(name);
            }
        }
    }
    set.sort();
    Ok(set)
}

fn to_set(names: &Option<oci_spec::runtime::Capabilities>) -> CapsHashSet {
    names
        .as_ref()
        .map(|s| {
            s.iter()
                .filter_map(|c| Capability::from_str(&format!("CAP_{c}")).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The OCI spec's form of capability names (`CAP_CHOWN` -> `Chown`).
pub fn to_oci(names: &[String]) -> oci_spec::runtime::Capabilities {
    names
        .iter()
        .filter_map(|n| oci_spec::runtime::Capability::from_str(n.trim_start_matches("CAP_")).ok())
        .collect()
}

/// Drops from the bounding set everything the spec does not list. Needs CAP_SETPCAP, so it
/// runs before the user change.
pub fn apply_bounding(spec_caps: &LinuxCapabilities) -> Result<(), caps::errors::CapsError> {
    let keep = to_set(spec_caps.bounding());
    for cap in caps::runtime::thread_all_supported() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)?;
        }
    }
    Ok(())
}

/// Sets the effective, permitted, inheritable and ambient sets as the spec lists them.
pub fn apply_sets(spec_caps: &LinuxCapabilities) -> Result<(), caps::errors::CapsError> {
    caps::set(None, CapSet::Effective, &to_set(spec_caps.permitted()))?;
    caps::set(None, CapSet::Permitted, &to_set(spec_caps.permitted()))?;
    caps::set(None, CapSet::Inheritable, &to_set(spec_caps.inheritable()))?;
    caps::set(None, CapSet::Effective, &to_set(spec_caps.effective()))?;
    caps::clear(None, CapSet::Ambient)?;
    for cap in to_set(spec_caps.ambient()) {
        caps::raise(None, CapSet::Ambient, cap)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_drop_adjust_docker_defaults() {
        let set = effective_set(&["net_admin".into()], &["CAP_NET_RAW".into()]).unwrap();
        assert!(set.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!set.contains(&"CAP_NET_RAW".to_string()));
        assert!(set.contains(&"CAP_CHOWN".to_string()));
        assert!(effective_set(&[], &["ALL".into()]).unwrap().is_empty());
    }

    #[test]
    fn all_added_keeps_out_what_is_dropped() {
        let set = effective_set(&["ALL".into()], &["SYS_ADMIN".into(), "net_raw".into()]).unwrap();
        assert!(!set.contains(&"CAP_SYS_ADMIN".to_string()), "{set:?}");
        assert!(!set.contains(&"CAP_NET_RAW".to_string()), "{set:?}");
        assert_eq!(set.len(), all_caps().len() - 2, "{set:?}");
        // Added after dropped, a capability stays (Docker's default case).
        let set = effective_set(&["NET_RAW".into()], &["ALL".into()]).unwrap();
        assert_eq!(set, vec!["CAP_NET_RAW".to_string()]);
    }

    #[test]
    fn unknown_capabilities_are_named() {
        let err = effective_set(&["CAP_FLY".into()], &[]).unwrap_err();
        assert_eq!(err, UnknownCapability("CAP_FLY".into()));
        assert!(err.to_string().contains("CAP_FLY"), "{err}");
    }
}
