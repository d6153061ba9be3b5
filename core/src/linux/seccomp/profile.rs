//! Docker's seccomp profile format (`--security-opt seccomp=FILE.json`), resolved for one
//! container: rules that `includes`/`excludes` capabilities or architectures are kept or
//! dropped here, and the rest becomes the OCI spec's `linux.seccomp`, as dockerd does.
//! A rule's `includes.minKernel` keeps it only on kernels at least that new.

use super::SeccompError;
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompBuilder, LinuxSyscall,
    LinuxSyscallBuilder,
};
use serde::Deserialize;

/// Architecture names under which Docker profiles list x86_64-only rules.
const NATIVE_ARCHES: &[&str] = &["amd64", "x86_64", "SCMP_ARCH_X86_64"];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    syscalls: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    /// `"major.minor"`: the rule needs at least this kernel (`includes` only, as in Docker).
    #[serde(default)]
    min_kernel: Option<String>,
}

/// `(major, minor)` of a kernel release such as `6.1.0-18-amd64` or a `minKernel` value.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().unwrap_or("0").parse().unwrap_or(0);
    Some((major, minor))
}

/// The running kernel's `(major, minor)`; None when uname fails or says something odd.
fn running_kernel() -> Option<(u32, u32)> {
    let uts = nix::sys::utsname::uname().ok()?;
    kernel_version(uts.release().to_str()?)
}

impl Rule {
    /// Whether this rule applies to a container with `caps` on x86_64, on a kernel whose
    /// `(major, minor)` is `kernel` (None: unknown, so a `minKernel` rule is left out).
    fn applies(&self, caps: &[String], kernel: Option<(u32, u32)>) -> bool {
        let arch_ok =
            |arches: &[String]| arches.iter().any(|a| NATIVE_ARCHES.contains(&a.as_str()));
        let included = (self.includes.caps.is_empty()
            || self.includes.caps.iter().all(|c| caps.contains(c)))
            && (self.includes.arches.is_empty() || arch_ok(&self.includes.arches));
        let excluded = (!self.excludes.caps.is_empty()
            && self.excludes.caps.iter().any(|c| caps.contains(c)))
            || (!self.excludes.arches.is_empty() && arch_ok(&self.excludes.arches));
        let kernel_ok = match &self.includes.min_kernel {
            None => true,
            Some(min) => matches!((kernel, kernel_version(min)), (Some(k), Some(m)) if k >= m),
        };
        included && kernel_ok && !excluded
    }
}

/// Resolves the Docker-format profile `json` for a container holding `caps`.
/// `source_name` names the profile in errors.
pub fn resolve(
    json: &str,
    source_name: &str,
    caps: &[String],
) -> Result<LinuxSeccomp, SeccompError> {
    let profile: Profile = serde_json::from_str(json).map_err(|e| SeccompError::BadProfile {
        source_name: source_name.to_string(),
        reason: e.to_string(),
    })?;
    let kernel = profile
        .syscalls
        .iter()
        .any(|r| r.includes.min_kernel.is_some())
        .then(running_kernel)
        .flatten();
    let mut syscalls: Vec<LinuxSyscall> = Vec::new();
    for rule in profile.syscalls.iter().filter(|r| r.applies(caps, kernel)) {
        let mut names = rule.names.clone();
        names.extend(rule.name.clone());
        let mut b = LinuxSyscallBuilder::default()
            .names(names)
            .action(rule.action);
        if let Some(e) = rule.errno_ret {
            b = b.errno_ret(e);
        }
        if let Some(args) = &rule.args {
            b = b.args(args.clone());
        }
        syscalls.push(b.build().map_err(|e| SeccompError::BadProfile {
            source_name: source_name.to_string(),
            reason: e.to_string(),
        })?);
    }
    let mut b = LinuxSeccompBuilder::default()
        .default_action(profile.default_action)
        .syscalls(syscalls);
    if let Some(e) = profile.default_errno_ret {
        b = b.default_errno_ret(e);
    }
    b.build().map_err(|e| SeccompError::BadProfile {
        source_name: source_name.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::capabilities::DOCKER_DEFAULT;

    fn names_of(s: &LinuxSeccomp) -> Vec<String> {
        s.syscalls()
            .iter()
            .flatten()
            .filter(|r| r.action() == LinuxSeccompAction::ScmpActAllow)
            .flat_map(|r| r.names().clone())
            .collect()
    }

    #[test]
    fn mount_needs_sys_admin() {
        let default: Vec<String> = DOCKER_DEFAULT.iter().map(|s| s.to_string()).collect();
        let s = resolve(super::super::DEFAULT_PROFILE, "default", &default).unwrap();
        assert!(!names_of(&s).contains(&"mount".to_string()));
        assert!(names_of(&s).contains(&"read".to_string()));
        let mut admin = default.clone();
        admin.push("CAP_SYS_ADMIN".into());
        let s = resolve(super::super::DEFAULT_PROFILE, "default", &admin).unwrap();
        assert!(names_of(&s).contains(&"mount".to_string()));
    }

    #[test]
    fn io_uring_is_denied_and_af_alg_and_vsock_sockets_too() {
        let default: Vec<String> = DOCKER_DEFAULT.iter().map(|s| s.to_string()).collect();
        let s = resolve(super::super::DEFAULT_PROFILE, "default", &default).unwrap();
        let names = names_of(&s);
        for denied in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
            assert!(!names.contains(&denied.to_string()), "{denied} allowed");
        }
        let socket_rules: Vec<_> = s
            .syscalls()
            .iter()
            .flatten()
            .filter(|r| r.names().contains(&"socket".to_string()))
            .collect();
        assert_eq!(
            socket_rules.len(),
            3,
            "socket: below AF_ALG, AF_PACKET... above AF_VSOCK"
        );
        assert!(socket_rules.iter().all(|r| r.args().is_some()));
    }

    #[test]
    fn min_kernel_keeps_a_rule_only_on_newer_kernels() {
        let json = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {"names":["ptrace"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"4.8"}}]}"#;
        let profile: Profile = serde_json::from_str(json).unwrap();
        let rule = &profile.syscalls[0];
        assert!(rule.applies(&[], Some((6, 1))));
        assert!(rule.applies(&[], Some((4, 8))));
        assert!(!rule.applies(&[], Some((4, 7))));
        assert!(!rule.applies(&[], None));
        assert_eq!(kernel_version("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(kernel_version("5"), Some((5, 0)));
    }

    #[test]
    fn garbage_is_a_named_error() {
        let err = resolve("{nope", "my.json", &[]).unwrap_err().to_string();
        assert!(err.contains("my.json"), "{err}");
    }
}
