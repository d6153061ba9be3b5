//! Which namespaces a spec asks for, as clone flags.

use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// The `CLONE_NEW*` flag of one namespace type (0 for types capsa does not create).
pub fn clone_flag(kind: LinuxNamespaceType) -> u64 {
    (match kind {
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::User => libc::CLONE_NEWUSER,
        LinuxNamespaceType::Time => libc::CLONE_NEWTIME,
    }) as u64
}

/// The namespaces to create for `spec` (entries with a path, i.e. join, are not created).
pub fn clone_flags(spec: &Spec) -> u64 {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .map(|list| {
            list.iter()
                .filter(|ns| ns.path().is_none())
                .map(|ns| clone_flag(ns.typ()))
                .fold(0, |acc, f| acc | f)
        })
        .unwrap_or(0)
}

/// Whether `spec` asks for a namespace of `kind`.
pub fn has(spec: &Spec, kind: LinuxNamespaceType) -> bool {
    clone_flags(spec) & clone_flag(kind) != 0
}
