//! `features`: what this runtime implements, in the shape of runc's `features` document
//! (the OCI runtime-spec's features.md), each list the one the code accepts.

/// Mount options the core knows (the rest of an option list is file-system data).
const MOUNT_OPTIONS: [&str; 18] = [
    "bind",
    "rbind",
    "ro",
    "rw",
    "nosuid",
    "nodev",
    "noexec",
    "relatime",
    "strictatime",
    "noatime",
    "private",
    "rprivate",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "unbindable",
    "runbindable",
];

/// The features document.
pub fn document() -> serde_json::Value {
    let mut mount_options = MOUNT_OPTIONS.to_vec();
    mount_options.sort_unstable();
    let capabilities: Vec<String> = caps::all()
        .iter()
        .map(|c| c.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.0.2",
        "hooks": [],
        "mountOptions": mount_options,
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "uts"],
            "capabilities": capabilities,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": [
                    "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                    "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG",
                    "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"
                ],
                "operators": [
                    "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE",
                    "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"
                ],
                "archs": ["SCMP_ARCH_X86_64"],
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
        },
        "annotations": {},
    })
}
