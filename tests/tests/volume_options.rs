//! `-v` binds are nosuid and nodev unless the user asks otherwise (`-v SRC:DST:suid,dev`,
//! Podman's options): container root can chmod 4755 a copy of a program or mknod a device
//! in the host directory it is given, and inside no such file may take effect, even where
//! no_new_privs is lifted (`--security-opt no-new-privileges=false`, Docker's default).
//! (On the host those files are the workload's: the host must not run or open what a
//! workload left in a directory it was given.)

use capsa_tests::{text, TestEnv};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const EUID_C: &str = "#include <stdio.h>\n#include <unistd.h>\nint main(void) { printf(\"euid=%d\\n\", (int)geteuid()); return 0; }\n";

/// Compiles a program printing its effective uid into `dir/euid`.
fn build_euid(dir: &Path) {
    let src = dir.join("euid.c");
    std::fs::write(&src, EUID_C).unwrap();
    let out = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(dir.join("euid"))
        .arg(&src)
        .output()
        .expect("gcc (build-essential, installed by scripts/setup.sh)");
    assert!(out.status.success(), "gcc: {}", text(&out.stderr));
}

/// The mount options of the mount at `target` in a container started with `flags`.
fn options_at(env: &TestEnv, flags: &[&str], target: &str) -> Vec<String> {
    let out = env.sh(flags, &format!("grep ' {target} ' /proc/self/mountinfo"));
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert!(fields.len() > 5, "no mount at {target}: {out}");
    fields[5].split(',').map(String::from).collect()
}

#[test]
fn a_setuid_file_or_device_node_made_in_a_volume_takes_no_effect() {
    let env = TestEnv::new();
    let tools = tempfile::tempdir().unwrap();
    build_euid(tools.path());
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tools_v = format!("{}:/x:ro", tools.path().display());
    let data_v = format!("{}:/data", shared.path().display());
    // Container root plants a setuid-root program and a null device in the volume.
    env.sh(
        &["-v", &tools_v, "-v", &data_v],
        "cp /x/euid /data/euid && chmod 4755 /data/euid && mknod -m 666 /data/null c 1 3",
    );
    let options = options_at(&env, &["-v", &data_v], "/data");
    assert!(
        options.contains(&"nosuid".to_string()) && options.contains(&"nodev".to_string()),
        "{options:?}"
    );
    // An unprivileged user of a later container, set-uid allowed, runs and opens them.
    let probe = "/data/euid; cat /data/null && echo opened || echo refused";
    let user = ["-u", "1000", "--security-opt", "no-new-privileges=false"];
    let plain = env.sh(&[&user[..], &["-v", &data_v]].concat(), probe);
    assert_eq!(plain.lines().next(), Some("euid=1000"), "{plain}");
    assert!(plain.ends_with("refused\n"), "{plain}");
    // Asked for, both work (which also shows the probe can tell).
    let opted = format!("{data_v}:suid,dev");
    let trusted = env.sh(&[&user[..], &["-v", &opted]].concat(), probe);
    assert_eq!(trusted, "euid=0\nopened\n");
    let options = options_at(&env, &["-v", &opted], "/data");
    assert!(
        !options.iter().any(|o| o == "nosuid" || o == "nodev"),
        "{options:?}"
    );
    // --tmpfs mounts carry them too.
    let tmpfs = options_at(&env, &["--tmpfs", "/scratch"], "/scratch");
    for want in ["nosuid", "nodev", "noexec"] {
        assert!(tmpfs.contains(&want.to_string()), "{tmpfs:?}");
    }
    // Asked for, as Docker takes them: the tmpfs runs programs.
    let out = env.sh(
        &["--tmpfs", "/scratch:exec,size=8m"],
        "cp /bin/busybox /scratch/ && /scratch/busybox echo ran",
    );
    assert_eq!(out, "ran\n");
    // Words that would make the tmpfs something else are refused by name.
    for bad in ["rbind", "bind", "rshared", "nosuch=1", "size="] {
        let t = format!("/scratch:{bad}");
        let out = env.run(&["--rm", "--tmpfs", &t, "busybox", "true"]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{bad}: {stderr}");
        assert!(stderr.contains("is not a tmpfs option"), "{bad}: {stderr}");
    }
}

#[test]
fn volume_options_read_only_and_noexec_hold_and_contradictions_are_refused() {
    let env = TestEnv::new();
    let dir = tempfile::tempdir().unwrap();
    let ro = format!("{}:/data:ro,noexec", dir.path().display());
    let out = env.sh(
        &["-v", &ro],
        "touch /data/x 2>&1; cp /bin/busybox /tmp/ 2>&1; grep ' /data ' /proc/self/mountinfo",
    );
    assert!(out.contains("Read-only file system"), "{out}");
    let fields: Vec<&str> = out.lines().last().unwrap().split_whitespace().collect();
    let options: Vec<&str> = fields[5].split(',').collect();
    for want in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(options.contains(&want), "{options:?}");
    }
    for bad in [":ro,rw", ":suid,nosuid", ":z", ":rshared", ":exec,noexec"] {
        let v = format!("{}:/data{bad}", dir.path().display());
        let out = env.run(&["--rm", "-v", &v, "busybox", "true"]);
        assert_eq!(out.status.code(), Some(125), "{bad}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("-v"),
            "{bad}: {}",
            text(&out.stderr)
        );
    }
}
