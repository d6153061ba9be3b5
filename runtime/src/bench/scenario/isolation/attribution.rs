//! From what the probe saw to a matrix cell: the verdict, and the layers that stopped or
//! contained the probe, each named from a measurement.
//!
//! - A probe that got through is judged by whose object it reached: a different boot_id
//!   means the guest's kernel (contained by the hypervisor), a namespaced object in a
//!   namespace other than the host's is the instance's own (contained by the namespace),
//!   a marker, a host disk's first sector or a process outside the instance is the host's.
//! - A refused probe is rerun with layers removed; the smallest removal that lets it
//!   through names the layer. When only removing everything at once does, the layer is
//!   named from the errno (EROFS: a read-only mount; a /dev/null bind: a masked path; EPERM
//!   opening a node the probe could make: the device cgroup) and marked inferred.
//! - What no rerun lets through is not attributed, unless the probe measured the boundary
//!   itself (no process or file of the host visible: the namespace; no descriptor
//!   inherited: the runtime).

use std::collections::BTreeMap;

use capsa_escape::context::Context;
use capsa_escape::findings::{Finding, Reach};
use capsa_escape::probes::Scope;

use crate::bench::report::{Cell, Layer, Verdict};
use crate::bench::subjects::{Knob, Relaxation};

/// Everything measured about one probe in one subject.
pub struct Evidence<'a> {
    pub name: &'a str,
    pub scope: Scope,
    /// The default configuration's finding.
    pub default: &'a Finding,
    /// The probe's view of itself in the default configuration.
    pub probe: &'a Context,
    /// The harness's view of itself: the host.
    pub host: &'a Context,
    /// The probe's finding in each rerun that ran (None: that rerun failed).
    pub reruns: &'a [(Relaxation, Option<&'a Finding>)],
    /// The same probe on the host without isolation.
    pub baseline: Option<&'a Finding>,
    /// First-sector fingerprint -> host disk.
    pub host_disks: &'a BTreeMap<String, String>,
}

fn cell(verdict: Verdict, by: Vec<Layer>, e: &Evidence, detail: String) -> Cell {
    Cell {
        verdict,
        by,
        inferred: false,
        errno: e.default.errno_name.clone(),
        detail,
    }
}

pub fn judge(e: &Evidence) -> Cell {
    let guest = !e.probe.same_kernel(e.host);
    let mut c = match e.default.reach {
        Reach::Reached => reached(e, guest),
        Reach::Refused | Reach::Absent => refused(e, guest),
    };
    // Whatever the guest let through or refused, the hypervisor stands behind it.
    if guest
        && c.verdict == Verdict::Blocked
        && !c.by.contains(&Layer::Hypervisor)
        && e.name != "store_local_user"
    {
        c.by.push(Layer::Hypervisor);
    }
    c
}

fn reached(e: &Evidence, guest: bool) -> Cell {
    let d = &e.default.detail;
    if let Some(disk) = e
        .default
        .facts
        .get("fingerprint")
        .and_then(|fp| e.host_disks.get(fp))
    {
        return cell(
            Verdict::Allowed,
            vec![],
            e,
            format!("{d}: the host's disk {disk} (the same first sector)"),
        );
    }
    match e.scope {
        Scope::HostObject => cell(Verdict::Allowed, vec![], e, d.clone()),
        _ if guest => cell(
            Verdict::Contained,
            vec![Layer::Hypervisor],
            e,
            format!("{d}, on the guest's kernel (its boot_id is not the host's)"),
        ),
        Scope::Namespace(kind) if !e.probe.shares(e.host, kind) => cell(
            Verdict::Contained,
            vec![Layer::Namespace],
            e,
            format!("{d}, in its own {kind} namespace"),
        ),
        Scope::Namespace(kind) => cell(
            Verdict::Allowed,
            vec![],
            e,
            format!("{d}, in the host's {kind} namespace"),
        ),
        Scope::Kernel => cell(
            Verdict::Allowed,
            vec![],
            e,
            format!("{d}, on the host's kernel"),
        ),
    }
}

fn refused(e: &Evidence, guest: bool) -> Cell {
    let d = &e.default.detail;
    let ran: Vec<(Relaxation, &Finding)> = e
        .reruns
        .iter()
        .filter_map(|(r, f)| Some((*r, (*f)?)))
        .collect();
    let flipped: Vec<Relaxation> = ran
        .iter()
        .filter(|(_, f)| f.reach == Reach::Reached)
        .map(|(r, _)| *r)
        .collect();
    if !flipped.is_empty() {
        return layers_from(&flipped, e);
    }
    // Absent once the most layers are removed: the kernel does not have it.
    let most_removed = ran.iter().max_by_key(|(r, _)| r.removes().len());
    let absent_underneath = most_removed.is_some_and(|(_, f)| f.reach == Reach::Absent);
    if (e.default.reach == Reach::Absent && ran.iter().all(|(_, f)| f.reach == Reach::Absent))
        || absent_underneath
    {
        let whose = if guest { "the guest's" } else { "this" };
        let how = if e.default.reach == Reach::Absent {
            String::new()
        } else {
            " (refused by default, absent once layers are removed)".to_string()
        };
        return cell(
            Verdict::NotApplicable,
            vec![],
            e,
            format!("{d}: not in {whose} kernel{how}"),
        );
    }
    // A call the host itself refuses (with an errno: not a probe that found nothing to
    // reach) says nothing about the isolation.
    let host_refuses = |b: &&Finding| {
        !guest
            && b.reach != Reach::Reached
            && b.errno.is_some()
            && e.default.errno.is_some()
            && e.scope != Scope::HostObject
    };
    if let Some(b) = e.baseline.filter(host_refuses) {
        return cell(
            Verdict::NotApplicable,
            vec![],
            e,
            format!(
                "{d}; the host refuses it too, without isolation: {}",
                b.detail
            ),
        );
    }
    structural(e, guest)
}

/// The layer a probe that no rerun let through met, where the probe measured it.
fn structural(e: &Evidence, guest: bool) -> Cell {
    let d = &e.default.detail;
    let fact = |k: &str| {
        e.default
            .facts
            .get(k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // The initial pid namespace has the same inode on every kernel, so this also tells a
    // workload in a guest's own namespace from one in the guest's initial namespace.
    let own_pid_ns = !e.probe.shares(e.host, "pid");
    let facts = &e.default.facts;
    // Where the probe saw the layer itself: the kernel's EROFS on a mount it read as
    // read-only, a path bound to /dev/null.
    if e.default.errno_name.as_deref() == Some("EROFS") {
        let mount = facts.get("mount_point").cloned().unwrap_or_default();
        return cell(
            Verdict::Blocked,
            vec![Layer::ReadOnlyPath],
            e,
            format!("{d}; {mount} is mounted read-only (even in every rerun)"),
        );
    }
    if facts.get("masked").is_some_and(|m| !m.is_empty()) {
        return cell(
            Verdict::Blocked,
            vec![Layer::MaskedPath],
            e,
            format!("{d} (even in every rerun)"),
        );
    }
    match e.name {
        "host_file_proc_root" | "ptrace_other_pidns" if own_pid_ns => cell(
            Verdict::Blocked,
            vec![Layer::Namespace],
            e,
            format!("{d}; it has a pid namespace of its own"),
        ),
        "host_file_proc_root" | "ptrace_other_pidns" | "image_dev_symlink" if guest => cell(
            Verdict::Blocked,
            vec![Layer::Hypervisor],
            e,
            format!("{d}; only the guest's processes and files are there"),
        ),
        "leaked_fds" => cell(Verdict::Blocked, vec![Layer::Runtime], e, d.clone()),
        "exec_ptrace_window" if fact("refused_nondumpable") > 0 => Cell {
            inferred: true,
            ..cell(
                Verdict::Blocked,
                vec![Layer::Runtime],
                e,
                format!("{d}; refused while it had the watcher's uid and no more capabilities: non-dumpable until exec"),
            )
        },
        "image_dev_symlink" => cell(Verdict::Blocked, vec![Layer::Runtime], e, d.clone()),
        "store_local_user" => cell(Verdict::Blocked, vec![Layer::FilePermissions], e, d.clone()),
        _ => {
            let tried: Vec<&str> = e.reruns.iter().map(|(r, _)| r.describe()).collect();
            cell(
                Verdict::Blocked,
                vec![Layer::Unattributed],
                e,
                if tried.is_empty() {
                    format!("{d}; no rerun with layers removed was made (--quick on an emulated VM)")
                } else {
                    format!("{d}; still refused with: {}", tried.join("; "))
                },
            )
        }
    }
}

/// The layers named by the smallest removals that let the probe through.
fn layers_from(flipped: &[Relaxation], e: &Evidence) -> Cell {
    let d = &e.default.detail;
    let minimal: Vec<Relaxation> = flipped
        .iter()
        .copied()
        .filter(|r| {
            !flipped.iter().any(|o| {
                o != r
                    && o.removes().iter().all(|k| r.removes().contains(k))
                    && o.removes().len() < r.removes().len()
            })
        })
        .collect();
    let has = |r: Relaxation| minimal.contains(&r);
    let with = |by: Vec<Layer>, how: &str| cell(Verdict::Blocked, by, e, format!("{d}; {how}"));
    if has(Relaxation::Seccomp) {
        let also = if has(Relaxation::Capabilities) {
            " (and with all capabilities, for which the profile allows it)"
        } else {
            ""
        };
        return with(
            vec![Layer::Seccomp],
            &format!("gets through with seccomp removed{also}"),
        );
    }
    if has(Relaxation::Capabilities) {
        return with(
            vec![Layer::Capability],
            "gets through with all capabilities",
        );
    }
    if has(Relaxation::Devices) {
        return with(
            vec![Layer::DeviceCgroup],
            "gets through with every device allowed",
        );
    }
    if has(Relaxation::SeccompAndCapabilities) {
        return with(
            vec![Layer::Capability, Layer::Seccomp],
            "gets through only with both seccomp removed and all capabilities (each refuses it alone)",
        );
    }
    if has(Relaxation::CapabilitiesAndDevices) {
        return with(
            vec![Layer::Capability, Layer::DeviceCgroup],
            "gets through only with all capabilities and every device allowed (each refuses it alone)",
        );
    }
    privileged_only(e, flipped)
}

/// Only removing every layer at once let it through: the layer from the errno.
fn privileged_only(e: &Evidence, flipped: &[Relaxation]) -> Cell {
    let d = &e.default.detail;
    let facts = &e.default.facts;
    let errno = e.default.errno_name.as_deref();
    let untested_devices = !e.reruns.iter().any(|(r, f)| {
        f.is_some() && *r != Relaxation::Privileged && r.removes().contains(&Knob::Devices)
    });
    let how = format!(
        "gets through only with {}",
        flipped
            .iter()
            .map(|r| r.describe())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let inferred = |by: Layer, why: &str| Cell {
        inferred: true,
        ..cell(Verdict::Blocked, vec![by], e, format!("{d}; {how}; {why}"))
    };
    if errno == Some("EROFS") || facts.get("mount_read_only").map(String::as_str) == Some("true") {
        let mount = facts.get("mount_point").cloned().unwrap_or_default();
        return cell(
            Verdict::Blocked,
            vec![Layer::ReadOnlyPath],
            e,
            format!("{d}; {how}; {mount} is mounted read-only"),
        );
    }
    if facts.get("masked").is_some_and(|m| !m.is_empty()) {
        return cell(
            Verdict::Blocked,
            vec![Layer::MaskedPath],
            e,
            format!("{d}; {how}; masked: {}", facts["masked"]),
        );
    }
    match (facts.get("stage").map(String::as_str), errno) {
        (Some("open"), Some("EPERM")) if untested_devices => inferred(
            Layer::DeviceCgroup,
            "EPERM opening a node it was allowed to make: the device cgroup",
        ),
        (Some("mknod"), Some("EPERM")) if e.probe.has_cap(MKNOD) && untested_devices => inferred(
            Layer::DeviceCgroup,
            "EPERM making a node while holding CAP_MKNOD: the device cgroup",
        ),
        _ => cell(
            Verdict::Blocked,
            vec![Layer::Unattributed],
            e,
            if e.reruns.iter().any(|(r, _)| *r != Relaxation::Privileged) {
                format!("{d}; {how}, and no single layer removed alone lets it through")
            } else {
                format!("{d}; {how}; no rerun removed a single layer (--quick on an emulated VM)")
            },
        ),
    }
}

/// CAP_MKNOD's number.
const MKNOD: u32 = 27;

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(boot: &str, pid_ns: &str) -> Context {
        let mut c = Context {
            boot_id: boot.into(),
            cap_eff: "00000000a80425fb".into(),
            ..Default::default()
        };
        for k in capsa_escape::context::NAMESPACES {
            c.namespaces.insert(k.into(), format!("{k}:[{pid_ns}]"));
        }
        c
    }

    fn judge_with(
        name: &str,
        scope: Scope,
        default: &Finding,
        probe: &Context,
        reruns: &[(Relaxation, Option<&Finding>)],
    ) -> Cell {
        let host = ctx("host", "1");
        judge(&Evidence {
            name,
            scope,
            default,
            probe,
            host: &host,
            reruns,
            baseline: None,
            host_disks: &BTreeMap::new(),
        })
    }

    #[test]
    fn the_smallest_removal_that_lets_a_probe_through_names_the_layer() {
        let eperm = Finding::refused("mount", libc::EPERM, "mount: EPERM");
        let ok = Finding::reached("mount", "mounted");
        let probe = ctx("host", "2");
        let c = judge_with(
            "mount",
            Scope::Namespace("mnt"),
            &eperm,
            &probe,
            &[
                (Relaxation::Seccomp, Some(&eperm)),
                (Relaxation::Capabilities, Some(&ok)),
                (Relaxation::SeccompAndCapabilities, Some(&ok)),
                (Relaxation::Privileged, Some(&ok)),
            ],
        );
        assert_eq!(
            (c.verdict, c.by.clone()),
            (Verdict::Blocked, vec![Layer::Capability])
        );
        let c = judge_with(
            "bpf",
            Scope::Kernel,
            &eperm,
            &probe,
            &[
                (Relaxation::Seccomp, Some(&eperm)),
                (Relaxation::Capabilities, Some(&eperm)),
                (Relaxation::SeccompAndCapabilities, Some(&ok)),
            ],
        );
        assert_eq!(c.by, vec![Layer::Capability, Layer::Seccomp]);
        assert!(!c.inferred);
    }

    #[test]
    fn only_privileged_names_the_layer_from_the_errno_and_says_so() {
        let probe = ctx("host", "2");
        let eperm_open =
            Finding::refused("device_char", libc::EPERM, "open: EPERM").fact("stage", "open");
        let ok = Finding::reached("device_char", "opened");
        let c = judge_with(
            "device_char",
            Scope::Kernel,
            &eperm_open,
            &probe,
            &[
                (Relaxation::Seccomp, Some(&eperm_open)),
                (Relaxation::Privileged, Some(&ok)),
            ],
        );
        assert_eq!(
            (c.by.clone(), c.inferred),
            (vec![Layer::DeviceCgroup], true)
        );
        // Where the device rule was removed alone and that did not help, it is not blamed.
        let c = judge_with(
            "device_char",
            Scope::Kernel,
            &eperm_open,
            &probe,
            &[
                (Relaxation::Devices, Some(&eperm_open)),
                (Relaxation::Privileged, Some(&ok)),
            ],
        );
        assert_eq!(c.by, vec![Layer::Unattributed]);
        let erofs = Finding::refused("proc_sys_write", libc::EROFS, "EROFS")
            .fact("mount_point", "/proc/sys");
        let c = judge_with(
            "proc_sys_write",
            Scope::Kernel,
            &erofs,
            &probe,
            &[(
                Relaxation::Privileged,
                Some(&Finding::reached("proc_sys_write", "wrote")),
            )],
        );
        assert_eq!(
            (c.by.clone(), c.inferred),
            (vec![Layer::ReadOnlyPath], false)
        );
    }

    #[test]
    fn whose_object_a_reached_probe_touched_decides_allowed_or_contained() {
        let raw = Finding::reached("raw_socket", "opened");
        let own_ns = ctx("host", "2");
        let host_ns = ctx("host", "1");
        let guest = ctx("guest", "2");
        let c = judge_with("raw_socket", Scope::Namespace("net"), &raw, &own_ns, &[]);
        assert_eq!(
            (c.verdict, c.by),
            (Verdict::Contained, vec![Layer::Namespace])
        );
        let c = judge_with("raw_socket", Scope::Namespace("net"), &raw, &host_ns, &[]);
        assert_eq!(c.verdict, Verdict::Allowed);
        let io = Finding::reached("io_uring", "set up");
        let c = judge_with("io_uring", Scope::Kernel, &io, &own_ns, &[]);
        assert_eq!(c.verdict, Verdict::Allowed);
        let c = judge_with("io_uring", Scope::Kernel, &io, &guest, &[]);
        assert_eq!(
            (c.verdict, c.by),
            (Verdict::Contained, vec![Layer::Hypervisor])
        );
        // A refusal in the guest has the hypervisor behind it.
        let eperm = Finding::refused("mount", libc::EPERM, "EPERM");
        let c = judge_with(
            "mount",
            Scope::Namespace("mnt"),
            &eperm,
            &guest,
            &[(
                Relaxation::Capabilities,
                Some(&Finding::reached("mount", "ok")),
            )],
        );
        assert_eq!(c.by, vec![Layer::Capability, Layer::Hypervisor]);
    }

    #[test]
    fn absent_everywhere_is_not_applicable_and_a_plain_refusal_is_not_attributed() {
        let probe = ctx("guest", "2");
        let enosys = Finding::absent("io_uring", Some(libc::ENOSYS), "ENOSYS");
        let c = judge_with(
            "io_uring",
            Scope::Kernel,
            &enosys,
            &probe,
            &[(Relaxation::Seccomp, Some(&enosys))],
        );
        assert_eq!(c.verdict, Verdict::NotApplicable);
        let eperm = Finding::refused("keyctl", libc::EPERM, "EPERM");
        let c = judge_with(
            "keyctl",
            Scope::Kernel,
            &eperm,
            &ctx("host", "2"),
            &[(Relaxation::Privileged, Some(&eperm))],
        );
        assert_eq!(
            (c.verdict, c.by),
            (Verdict::Blocked, vec![Layer::Unattributed])
        );
    }
}
