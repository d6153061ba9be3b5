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

/// The namespaces an init may join by path (`linux.namespaces[].path`) once cloned; a PID
/// namespace is joined by the parent before the clone ([`join_pid_path`]); the rest
/// (user, cgroup, time) must be refused before.
pub const JOINABLE: [LinuxNamespaceType; 4] = [
    LinuxNamespaceType::Network,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Mount,
];

/// Joins the namespaces `spec` names by path (see [`JOINABLE`]), from the init before it
/// sets anything up. Every path is opened first and the mount namespace joined last: its
/// setns changes the init's root, so a path opened after it would resolve in the joined
/// namespace's tree instead of the caller's. A path that is not a namespace of that type
/// is refused by the kernel (setns checks the type against the flag).
///
/// A joined mount namespace is where the init assembles the root and pivots into it, as
/// with runc: every process of that namespace whose root was the old one moves with it.
pub fn join_paths(spec: &Spec) -> std::io::Result<()> {
    let list = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
    let mut joins = Vec::new();
    for ns in list.into_iter().flatten() {
        let Some(path) = ns.path() else { continue };
        if ns.typ() == LinuxNamespaceType::Pid {
            continue; // joined by the parent (join_pid_path)
        }
        if !JOINABLE.contains(&ns.typ()) {
            return Err(std::io::Error::other(format!(
                "joining a {:?} namespace by path is not supported",
                ns.typ()
            )));
        }
        let file = std::fs::File::open(path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        joins.push((ns.typ(), path.clone(), file));
    }
    // Stable: the spec's order otherwise, the mount namespace last.
    joins.sort_by_key(|(typ, _, _)| *typ == LinuxNamespaceType::Mount);
    for (typ, path, file) in joins {
        let flag = nix::sched::CloneFlags::from_bits_truncate(clone_flag(typ) as i32);
        nix::sched::setns(file, flag)
            .map_err(|e| std::io::Error::other(format!("setns {}: {e}", path.display())))?;
    }
    Ok(())
}

/// Joins the PID namespace `spec` names by path, in the calling (parent) process: setns on
/// a PID namespace only places the caller's later children there, so this must precede
/// the clone of the init. The caller must be single-threaded and create no other child.
pub fn join_pid_path(spec: &Spec) -> std::io::Result<()> {
    let list = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
    let path = list
        .into_iter()
        .flatten()
        .filter(|ns| ns.typ() == LinuxNamespaceType::Pid)
        .find_map(|ns| ns.path().clone());
    let Some(path) = path else {
        return Ok(());
    };
    let file = std::fs::File::open(&path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWPID)
        .map_err(|e| std::io::Error::other(format!("setns {}: {e}", path.display())))
}
