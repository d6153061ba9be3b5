//! The VM engine's jail and the host's distrust of guest-written disks, checked as an attacker
//! on the host side of a VM would: what the engine process (QEMU under TCG here) can do, see
//! and hold, and that `cp` and a restart never make the host kernel or host tools parse the
//! disk the guest wrote. Each test boots real VMs (needs CAPSA_KERNEL), so each takes a while.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use capsa_tests::{text, TestEnv};

/// The engine process of running VM container `name`: the child of its monitor.
fn engine_pid(env: &TestEnv, name: &str) -> i32 {
    let monitor: i32 = env
        .inspect(name, "{{.State.Pid}}")
        .parse()
        .expect("a running VM's monitor pid");
    let children: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ppid ...
            let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
            after.split_whitespace().nth(1) == Some(&monitor.to_string())
                && stat.contains("(qemu-system-")
        })
        .collect();
    assert_eq!(
        children.len(),
        1,
        "one engine under monitor {monitor}: {children:?}"
    );
    children[0]
}

fn status_field(pid: i32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn start_vm(env: &TestEnv, name: &str) {
    let out = env.run(&[
        "-d",
        "--isolation",
        "vm",
        "--name",
        name,
        "-m",
        "64m",
        "busybox",
        "sleep",
        "1000",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Every path under `dir` (not following links), relative to it.
fn tree(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for e in std::fs::read_dir(dir.join(&rel)).unwrap().flatten() {
            let path = rel.join(e.file_name());
            let kind = e.file_type().unwrap();
            out.insert(path.display().to_string());
            // The bound library and firmware directories are the host's own, read-only.
            let shared = ["usr/lib/x86_64-linux-gnu", "usr/lib64", "usr/share/qemu"]
                .contains(&path.to_str().unwrap_or(""));
            if kind.is_dir() && !shared {
                todo.push(path);
            }
        }
    }
    out
}

fn check_jail(env: &TestEnv, name: &str) -> u32 {
    let pid = engine_pid(env, name);
    let ids = |field: &str| -> Vec<u32> {
        status_field(pid, field)
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    };
    let (uids, gids) = (ids("Uid"), ids("Gid"));
    assert!(
        uids.iter().all(|u| *u != 0),
        "{name}'s engine uids: {uids:?}"
    );
    assert!(
        gids.iter().all(|g| *g != 0),
        "{name}'s engine gids: {gids:?}"
    );
    assert_eq!(status_field(pid, "Groups"), "", "no supplementary group");
    for caps in ["CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"] {
        assert_eq!(status_field(pid, caps), "0000000000000000", "{caps}");
    }
    assert_eq!(status_field(pid, "Seccomp"), "2", "QEMU's -sandbox filter");
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    for ns in ["mnt", "pid", "net", "ipc", "uts", "cgroup"] {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(theirs, ours, "{ns} namespace");
    }
    // Its root: the binary, libraries, firmware, kernel, initramfs and two device nodes.
    let root = tree(Path::new(&format!("/proc/{pid}/root")));
    let expected: BTreeSet<String> = [
        "dev",
        "dev/null",
        "dev/urandom",
        "lib",
        "lib64",
        "usr",
        "usr/bin",
        "usr/bin/qemu-system-x86_64",
        "usr/lib",
        "usr/lib/x86_64-linux-gnu",
        "usr/lib64",
        "usr/share",
        "usr/share/qemu",
        "vm",
        "vm/initramfs",
        "vm/vmlinux",
    ]
    .map(String::from)
    .into();
    // Restored from a VM template: the empty mount point of the procfs it opened the
    // template's shared RAM from (detached before the guest runs), or its own copy of the
    // guest's RAM (its one writable file, unlinked once QEMU has it open).
    let mut expected = expected;
    for extra in ["proc", "vm/ram"] {
        if root.contains(extra) {
            expected.insert(extra.to_string());
        }
    }
    assert_eq!(root, expected, "the engine's root");
    // Its descriptors: stdio, its disks, the tap, the agent's socket, the pipes of its
    // output and console (whose other ends its monitor holds), and what QEMU made itself
    // (eventfds, signalfd); nothing else of the host.
    let id = env.inspect(name, "{{.Id}}");
    let container = env.root().join("containers").join(&id);
    let layers = env.root().join("layers");
    let monitor = env.inspect(name, "{{.State.Pid}}");
    let monitor_pipes: Vec<String> = std::fs::read_dir(format!("/proc/{monitor}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .filter(|t| t.starts_with("pipe:"))
        .collect();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let target = std::fs::read_link(fd.path()).unwrap();
        let t = target.to_string_lossy();
        let allowed = t == "/dev/null"
            || t == "/dev/net/tun"
            || t.starts_with("socket:")
            || t.starts_with("anon_inode:")
            || (t.starts_with("pipe:") && monitor_pipes.contains(&t.to_string()))
            || target == container.join("vm/upper.ext4")
            // The template's sealed RAM, or its own copy of it, already unlinked.
            || t == "/memfd:capsa-vm-template-ram (deleted)"
            || t == "/vm/ram (deleted)"
            || (target.starts_with(&layers) && t.ends_with(".erofs"));
        assert!(
            allowed,
            "{name}'s engine holds fd {:?} -> {t}",
            fd.file_name()
        );
    }
    // Its own cgroup, with a memory limit (v1 here; memory.max on v2).
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let ours = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let memory = |text: &str| {
        text.lines()
            .find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
                (ctl.split(',').any(|c| c == "memory") || ctl.is_empty()).then(|| path.to_string())
            })
            .unwrap()
    };
    let dir = memory(&cgroup);
    assert_ne!(dir, memory(&ours), "the engine has a cgroup of its own");
    assert!(dir.contains(&id), "{dir}");
    let limit = ["/sys/fs/cgroup/memory", "/sys/fs/cgroup"]
        .iter()
        .find_map(|base| {
            let d = format!("{base}{dir}");
            std::fs::read_to_string(format!("{d}/memory.limit_in_bytes"))
                .or_else(|_| std::fs::read_to_string(format!("{d}/memory.max")))
                .ok()
        })
        .expect("the engine cgroup's memory limit");
    let limit: u64 = limit.trim().parse().expect("a limit, not max");
    assert!(
        limit < 2 << 30,
        "guest memory plus a bounded overhead: {limit}"
    );
    // inspect says the same.
    assert_eq!(
        env.inspect(
            name,
            "{{.Engine.Uid}} {{.Engine.Seccomp}} {{.Engine.NoNewPrivs}} {{.Engine.CapEff}}"
        ),
        format!("{} filter true 0000000000000000", uids[0])
    );
    assert_eq!(env.inspect(name, "{{.Engine.Pid}}"), pid.to_string());
    assert!(
        env.inspect(name, "{{.Engine.Cgroup}}").ends_with(&dir),
        "{}",
        env.inspect(name, "{{json .Engine}}")
    );
    assert_eq!(
        env.inspect(name, "{{.Engine.MemoryLimit}}"),
        limit.to_string()
    );
    uids[0]
}

#[test]
fn the_engine_runs_jailed_each_vm_under_its_own_uid() {
    let env = TestEnv::new();
    start_vm(&env, "jail1");
    start_vm(&env, "jail2");
    let one = check_jail(&env, "jail1");
    let two = check_jail(&env, "jail2");
    assert_ne!(one, two, "two VMs, two engine uids");
    // The VM still works: its monitor talks to the agent through the jailed engine.
    let out = env.capsa(&["exec", "jail1", "echo", "through the jail"]);
    assert_eq!(
        text(&out.stdout).trim(),
        "through the jail",
        "{}",
        text(&out.stderr)
    );
    let engines = [engine_pid(&env, "jail1"), engine_pid(&env, "jail2")];
    let rm = env.capsa(&["rm", "-f", "jail1", "jail2"]);
    assert!(rm.status.success(), "{}", text(&rm.stderr));
    for pid in engines {
        // Gone, or a zombie waiting for init to reap it (its monitor was killed).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").map(|(_, r)| r.chars().next());
        assert!(
            matches!(state, None | Some(Some('Z'))),
            "engine {pid} outlived rm: {stat}"
        );
    }
}

/// A directory of `mount`, `losetup`, `e2fsck` and `fsck*` wrappers that record each call in
/// `calls` before running the real tool: the host tools that would parse a guest's disk.
fn recording_tools(dir: &Path) -> (String, PathBuf) {
    let calls = dir.join("calls");
    std::fs::write(&calls, "").unwrap();
    for tool in ["mount", "losetup", "e2fsck", "fsck", "fsck.ext4"] {
        let real = ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists());
        let Some(real) = real else { continue };
        let script = dir.join(tool);
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"{tool} $*\" >> {}\nexec {} \"$@\"\n",
                calls.display(),
                real.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
    );
    (path, calls)
}

/// Loop devices backed by a file under `dir`, and mounts naming it, as the host sees them.
fn host_views_of(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    let mut seen = Vec::new();
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let backing = e.path().join("loop/backing_file");
        if let Ok(file) = std::fs::read_to_string(&backing) {
            if file.contains(&needle) {
                seen.push(format!("{}: {}", backing.display(), file.trim()));
            }
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    seen.extend(
        mounts
            .lines()
            .filter(|l| l.contains(&needle) || l.contains(" ext4 /dev/loop"))
            .map(String::from),
    );
    seen
}

#[test]
fn cp_with_a_stopped_vm_goes_through_its_guest_never_the_host_kernel() {
    let env = TestEnv::new();
    let tools = tempfile::tempdir().unwrap();
    let (path, calls) = recording_tools(tools.path());
    let out = env.run(&[
        "--isolation",
        "vm",
        "--name",
        "cold",
        "busybox",
        "sh",
        "-c",
        "echo written-in-guest > /tmp/made",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = env.inspect("cold", "{{.Id}}");
    let container = env.root().join("containers").join(&id);
    assert_eq!(host_views_of(&container), Vec::<String>::new(), "before");
    let got = tools.path().join("got");
    let out = env.capsa_env(
        &["cp", "cold:/tmp/made", got.to_str().unwrap()],
        &[("PATH", &path)],
    );
    assert!(out.status.success(), "cp out: {}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&got).unwrap(), "written-in-guest\n");
    let sent = tools.path().join("sent");
    std::fs::write(&sent, "from the host\n").unwrap();
    let out = env.capsa_env(
        &["cp", sent.to_str().unwrap(), "cold:/tmp/sent"],
        &[("PATH", &path)],
    );
    assert!(out.status.success(), "cp in: {}", text(&out.stderr));
    let out = env.capsa_env(
        &["cp", "cold:/nowhere", got.to_str().unwrap()],
        &[("PATH", &path)],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("/nowhere"),
        "the guest's reason: {}",
        text(&out.stderr)
    );
    assert_eq!(host_views_of(&container), Vec::<String>::new(), "after");
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap(),
        "",
        "host tools run on the guest's disk"
    );
    // What cp put in is in the container when it runs again.
    let out = env.capsa(&["start", "-a", "cold"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = env.capsa_env(&["cp", "cold:/tmp/sent", "-"], &[("PATH", &path)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("from the host"));
    assert_eq!(std::fs::read_to_string(&calls).unwrap(), "");
    assert!(env.capsa(&["rm", "cold"]).status.success());
}

#[test]
fn a_corrupted_writable_disk_is_repaired_in_the_guest_on_restart_never_on_the_host() {
    let env = TestEnv::new();
    let tools = tempfile::tempdir().unwrap();
    let (path, calls) = recording_tools(tools.path());
    let out = env.run(&[
        "--isolation",
        "vm",
        "--name",
        "broken",
        "busybox",
        "sh",
        "-c",
        "if [ -f /kept ]; then cat /kept; else echo kept-across-repair > /kept; fi",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // What a guest with raw access to its writable disk can leave there: a primary
    // superblock with no magic (the guest's kernel would rewrite it at unmount, so the
    // test writes it as the guest's last word would, into the disk file).
    let id = env.inspect("broken", "{{.Id}}");
    let container = env.root().join("containers").join(&id);
    let disk = container.join("vm/upper.ext4");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
        f.seek(SeekFrom::Start(1024 + 0x38)).unwrap();
        f.write_all(&[0, 0]).unwrap();
    }
    let out = env.capsa_env(&["start", "-a", "broken"], &[("PATH", &path)]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    match out.status.code() {
        // Repaired in the guest (from a backup superblock): the file is still there.
        Some(0) => assert!(stdout.contains("kept-across-repair"), "{stdout} {stderr}"),
        // Or refused with a clear reason.
        _ => assert!(stderr.contains("writable layer"), "{stderr}"),
    }
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap(),
        "",
        "host tools run on the guest's disk"
    );
    assert_eq!(host_views_of(&container), Vec::<String>::new());
    assert!(env.capsa(&["rm", "broken"]).status.success());
}
