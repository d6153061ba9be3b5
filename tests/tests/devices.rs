//! The device allowlist where cgroup v2 has no devices controller: on a v2 host (cgroup2
//! mounted over /sys/fs/cgroup in a private mount namespace, as this v1 host allows) and in
//! the VM's guest. A workload with Docker's default CAP_MKNOD makes device nodes as it likes;
//! what it must not do is open one that is not on the list.

use capsa_tests::{capsa_bin, run_bounded, text, TestEnv, Tmux};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The shell line that runs the rest of its arguments with cgroup2 at /sys/fs/cgroup, in a
/// mount namespace of their own (the host's mounts are untouched).
const ON_V2: &str = "mount -t cgroup2 none /sys/fs/cgroup && exec \"$@\"";

/// `capsa run --rm --network none --cgroup-parent P ARGS` on cgroup v2.
fn run_on_v2(env: &TestEnv, args: &[&str]) -> Output {
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-c", ON_V2, "sh"])
        .arg("nsenter")
        .arg(format!("--net=/run/netns/{}", env.netns()))
        .arg(capsa_bin())
        .arg("--root")
        .arg(env.root())
        .args(["run", "--rm", "--network", "none"])
        .args(["--cgroup-parent", env.cgroup_parent()])
        .args(args)
        .stdin(Stdio::null());
    run_bounded(c, Duration::from_secs(60))
}

/// `sh -c SCRIPT` in a default busybox container on cgroup v2; its stdout.
fn sh_on_v2(env: &TestEnv, flags: &[&str], script: &str) -> String {
    let mut args = flags.to_vec();
    args.extend_from_slice(&["busybox", "sh", "-c", script]);
    let out = run_on_v2(env, &args);
    assert!(
        out.status.success(),
        "{script:?} failed ({:?}): {}",
        out.status.code(),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// major:minor of a block device that this test, as root on the host, can open: the disk
/// of the root file system, or (where the host's own sandbox refuses even root that disk)
/// the first other block device that opens. The container must not open what the host can.
fn host_block_device() -> (u32, u32) {
    let parse = |s: &str| -> Option<(u32, u32)> {
        let (a, b) = s.trim().split_once(':')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = mountinfo.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(4) == Some(&"/")).then(|| parse(f[2])).flatten()
    });
    let mut all: Vec<(u32, u32)> = std::fs::read_dir("/sys/dev/block")
        .unwrap()
        .flatten()
        .filter_map(|e| parse(&e.file_name().to_string_lossy()))
        .collect();
    all.sort_by_key(|d| (Some(*d) != root, *d));
    let opens = |(major, minor): (u32, u32)| {
        let uevent =
            std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent")).ok()?;
        let name = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME="))?;
        std::fs::File::open(format!("/dev/{name}")).ok()
    };
    all.into_iter()
        .find(|d| opens(*d).is_some())
        .expect("a block device the host can open")
}

/// The host's kernel log as `dmesg` prints it.
fn host_kernel_log() -> String {
    let out = Command::new("dmesg").output().expect("dmesg (util-linux)");
    assert!(out.status.success(), "dmesg: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Makes `/tmp/dev` as `b|c major minor`, tries to read it and, given `write`, to write
/// that line to it; prints `mknod`, `read` and `write` for what succeeded.
fn probe(typ: &str, major: u32, minor: u32, write: Option<&str>) -> String {
    let mut script = format!(
        "mknod /tmp/dev {typ} {major} {minor} && echo mknod; \
         dd if=/tmp/dev of=/tmp/out bs=8192 count=1 2>/dev/null && echo read; "
    );
    if let Some(line) = write {
        script += &format!("echo {line} 2>/dev/null > /tmp/dev && echo write; ");
    }
    script + "true"
}

#[test]
fn on_cgroup_v2_a_default_container_cannot_open_kmsg_or_the_host_disk() {
    let env = TestEnv::new();
    let marker = format!("capsa-devices-{}-kmsg", std::process::id());
    // /dev/kmsg (1:11): a write would land in the host's kernel log.
    let out = sh_on_v2(&env, &[], &probe("c", 1, 11, Some(&marker)));
    assert_eq!(out, "mknod\n", "c 1:11 opened");
    assert!(
        !host_kernel_log().contains(&marker),
        "the container wrote into the host's kernel log"
    );
    // A host block device, read only: a write test on it is not for a test suite.
    let (major, minor) = host_block_device();
    assert_eq!(
        sh_on_v2(&env, &[], &probe("b", major, minor, None)),
        "mknod\n",
        "b {major}:{minor} opened"
    );
    env.assert_clean();
}

#[test]
fn on_cgroup_v2_the_standard_nodes_and_the_terminal_still_work() {
    let env = TestEnv::new();
    let script = "cat /dev/null && echo null; \
        echo x > /dev/null && echo null-w; \
        head -c 8 /dev/zero | wc -c; \
        head -c 8 /dev/urandom | wc -c; \
        head -c 8 /dev/random | wc -c; \
        echo x 2>/dev/null > /dev/full || echo full-enospc";
    let out = sh_on_v2(&env, &[], script);
    assert_eq!(out, "null\nnull-w\n8\n8\n8\nfull-enospc\n", "{out}");

    // A terminal: the pty slave (/dev/pts/0), /dev/tty and /dev/ptmx open.
    let line = format!(
        "unshare -m --propagation private sh -c '{ON_V2}' sh \
         nsenter --net=/run/netns/{} {} --root {} run -it --rm --network none \
         --cgroup-parent {} busybox sh; echo EXIT=$?; sleep 600",
        env.netns(),
        capsa_bin().display(),
        env.root().display(),
        env.cgroup_parent()
    );
    let tmux = Tmux::start(&line, 100, 30);
    tmux.wait_for("/ #");
    tmux.send(&[
        "echo a > $(tty) && echo b > /dev/tty && exec 3<>/dev/ptmx && echo pty-$((20+1))-ok",
        "Enter",
    ]);
    tmux.wait_for("pty-21-ok");
    // Beside them, /dev/kmsg (1:11) made with mknod does not open (for writing: reading
    // it needs CAP_SYSLOG anyway).
    tmux.send(&[
        "mknod /tmp/k c 1 11; echo capsa-test > /tmp/k || echo open-$((40+2))-refused",
        "Enter",
    ]);
    tmux.wait_for("open-42-refused");
    tmux.send(&["exit", "Enter"]);
    tmux.wait_for("EXIT=0");
    env.assert_clean();
}

#[test]
fn on_cgroup_v2_privileged_opens_the_devices_a_default_container_cannot() {
    let env = TestEnv::new();
    let (major, minor) = host_block_device();
    let script = format!(
        "{}; head -c 1 /dev/kmsg >/tmp/out 2>/dev/null && echo kmsg-read; true",
        probe("b", major, minor, None)
    );
    let privileged = sh_on_v2(&env, &["--privileged"], &script);
    assert_eq!(
        privileged, "mknod\nread\nkmsg-read\n",
        "--privileged is refused a device"
    );
    // The same script in a default container: mknod only (it has no /dev/kmsg either).
    let default = sh_on_v2(&env, &[], &script);
    assert_eq!(
        default, "mknod\n",
        "a default container opened b {major}:{minor}"
    );
    env.assert_clean();
}

/// Runs `--isolation vm` with `args`.
fn vm(env: &TestEnv, args: &[&str]) -> Output {
    let mut all = vec!["--isolation", "vm"];
    all.extend_from_slice(args);
    env.run(&all)
}

#[test]
fn in_the_vm_the_workload_cannot_open_the_guest_disks_and_its_data_survives() {
    let env = TestEnv::new();
    // First boot: keep a file on the writable disk, then try every disk of the guest (the
    // image's and the writable one) for read and for a write over its superblock.
    // Second boot (start -a): the file is still there.
    let attack = "for d in $(ls /sys/dev/block); do \
          echo disk $d; \
          rm -f /tmp/dev; mknod /tmp/dev b ${d%:*} ${d#*:} && echo mknod; \
          dd if=/tmp/dev of=/tmp/out bs=512 count=1 2>/dev/null && echo read; \
          dd if=/dev/zero of=/tmp/dev bs=1024 count=4 seek=1 conv=notrunc 2>/dev/null && echo write; \
        done";
    let script = format!(
        "if [ -e /precious ]; then cat /precious; exit 0; fi; \
         echo kept > /precious; sync; {attack}; sync"
    );
    let out = vm(&env, &["--name", "victim", "busybox", "sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let disks: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("disk "))
        .collect();
    assert!(
        disks.contains(&"254:0") && disks.contains(&"254:16"),
        "the guest's disks: {stdout}"
    );
    for d in &disks {
        assert!(
            stdout.contains(&format!("disk {d}\nmknod\n")),
            "mknod is allowed, as with Docker: {stdout}"
        );
    }
    assert!(
        !stdout.lines().any(|l| l == "read" || l == "write"),
        "the workload opened a guest disk: {stdout}"
    );
    let again = env.capsa(&["start", "-a", "victim"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert_eq!(text(&again.stdout), "kept\n");
    assert!(env.capsa(&["rm", "victim"]).status.success());
    env.assert_clean();
}
