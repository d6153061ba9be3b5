//! No descriptor of capsa's caller reaches a container process. Container root can reopen
//! whatever its descriptors name through /proc/self/fd/N: the file an operator redirected
//! `run` or `exec` into (chmod 4777 makes it a setuid-root program for anyone), the file fed
//! to its stdin, the operator's terminal (read by a process left behind after `exec`), the
//! host's /dev/null. Each test gives the workload such a descriptor's place and checks, from
//! the host, that nothing of the caller's changed or stayed reachable.

use capsa_tests::{text, TestEnv};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What the workload tries on each of its streams: make it setuid-root and everyone's.
const TAKE_OVER: &str = "for fd in 0 1 2; do chmod 4777 /proc/$$/fd/$fd; chown 65534 /proc/$$/fd/$fd; done 2>/dev/null; echo done";

/// Runs `cmd` to its end (killed after a minute: a bound on a failure, never a condition).
fn wait_bounded(mut cmd: Command) -> ExitStatus {
    let mut child = cmd.spawn().expect("spawn capsa");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("capsa did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A root-owned host file, mode 0600, holding `content`.
fn host_file(dir: &Path, name: &str, content: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn assert_untouched(path: &Path) {
    let meta = std::fs::metadata(path).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid()),
        (0o600, 0),
        "{} was changed from inside the container",
        path.display()
    );
}

fn append(path: &Path) -> File {
    std::fs::OpenOptions::new().append(true).open(path).unwrap()
}

#[test]
fn a_foreground_run_cannot_change_the_files_its_streams_come_from_and_go_to() {
    let env = TestEnv::new();
    let dir = tempfile::tempdir().unwrap();
    let input = host_file(dir.path(), "input", "fed to stdin\n");
    let out = host_file(dir.path(), "out", "earlier log\n");
    let err = host_file(dir.path(), "err", "");
    for interactive in [false, true] {
        let mut args = vec!["run", "--rm", "--network", "none"];
        args.extend(["--cgroup-parent", env.cgroup_parent()]);
        if interactive {
            args.push("-i");
        }
        let script = format!("{TAKE_OVER}; cat; echo to-stderr >&2");
        args.extend(["busybox", "sh", "-c", &script]);
        let mut cmd = env.command(&args);
        cmd.stdin(File::open(&input).unwrap())
            .stdout(append(&out))
            .stderr(append(&err));
        assert!(wait_bounded(cmd).success());
        for path in [&input, &out, &err] {
            assert_untouched(path);
        }
    }
    // The output still arrives, stdin with -i only, each stream in its own file.
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "earlier log\ndone\ndone\nfed to stdin\n"
    );
    assert_eq!(
        std::fs::read_to_string(&err).unwrap(),
        "to-stderr\nto-stderr\n"
    );
}

#[test]
fn exec_cannot_change_the_file_its_output_goes_to() {
    let env = TestEnv::new();
    let started = env.run(&[
        "-d",
        "--name",
        "ctr",
        "--network",
        "none",
        "busybox",
        "sleep",
        "600",
    ]);
    assert!(started.status.success(), "{}", text(&started.stderr));
    let dir = tempfile::tempdir().unwrap();
    let report = host_file(dir.path(), "report", "");
    let mut cmd = env.command(&["exec", "ctr", "sh", "-c", TAKE_OVER]);
    cmd.stdout(append(&report)).stderr(append(&report));
    assert!(wait_bounded(cmd).success());
    assert_untouched(&report);
    assert_eq!(std::fs::read_to_string(&report).unwrap(), "done\n");
    assert!(env.capsa(&["rm", "-f", "ctr"]).status.success());
}

/// A new pty: (master, slave), both close-on-exec from the start.
fn open_pty() -> (File, File) {
    use std::os::fd::FromRawFd;
    // SAFETY: posix_openpt returns a new descriptor (or -1), owned once below.
    let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    assert!(
        master >= 0,
        "posix_openpt: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: as above; nothing else owns it.
    let master = unsafe { File::from_raw_fd(master) };
    let mut name = [0 as libc::c_char; 64];
    // SAFETY: a live master descriptor; ptsname_r writes at most name.len() bytes.
    let ok = unsafe {
        libc::grantpt(master.as_raw_fd()) == 0
            && libc::unlockpt(master.as_raw_fd()) == 0
            && libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) == 0
    };
    assert!(ok, "pty: {}", std::io::Error::last_os_error());
    // SAFETY: ptsname_r wrote a NUL-terminated path.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path.to_str().unwrap())
        .unwrap();
    (master, slave)
}

/// The host processes holding a descriptor of `tty` (a /dev/pts/N path).
fn holders_of(tty: &Path) -> Vec<String> {
    let mut holders = Vec::new();
    for proc_dir in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(fds) = std::fs::read_dir(proc_dir.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l == tty) {
                let cmdline = std::fs::read(proc_dir.path().join("cmdline")).unwrap_or_default();
                let cmdline = text(&cmdline).replace('\0', " ");
                holders.push(format!("{} ({})", fd.path().display(), cmdline.trim()));
            }
        }
    }
    holders
}

#[test]
fn a_process_left_behind_by_exec_keeps_nothing_of_the_operators_terminal() {
    let env = TestEnv::new();
    let started = env.run(&[
        "-d",
        "--name",
        "ctr",
        "--network",
        "none",
        "busybox",
        "sleep",
        "600",
    ]);
    assert!(started.status.success(), "{}", text(&started.stderr));
    // The operator's terminal: capsa's stdin, stdout and stderr. Both ends close on exec,
    // so no other test's process (spawned meanwhile by another thread) inherits them.
    let (master, slave) = open_pty();
    let tty = std::fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd())).unwrap();
    // Opened before exec returns, so a process left behind holds it from then on.
    let script = "exec 3</proc/$$/fd/1 4</proc/$$/fd/2 5</proc/$$/fd/0; (sleep 600 &) ; echo left";
    let mut cmd = env.command(&["exec", "ctr", "sh", "-c", script]);
    cmd.stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(Stdio::from(slave));
    assert!(wait_bounded(cmd).success());
    assert_eq!(
        holders_of(&tty),
        Vec::<String>::new(),
        "processes still holding the operator's terminal {}",
        tty.display()
    );
    drop(master);
    assert!(env.capsa(&["rm", "-f", "ctr"]).status.success());
}

/// `device inode` of the host's /dev/null, as busybox's `stat -c '%d %i'` prints them.
fn host_null() -> String {
    let meta = std::fs::metadata("/dev/null").unwrap();
    format!("{} {}", meta.dev(), meta.ino())
}

/// A shell loop appending `device inode` of the shell's own stdin, stdout and stderr to
/// `file` (each `stat` is a child: the shell's streams are not redirected).
fn record_streams(file: &str) -> String {
    format!("for fd in 0 1 2; do stat -L -c '%d %i' /proc/$$/fd/$fd >> {file}; done")
}

#[test]
fn detached_workloads_and_execs_get_no_host_dev_null() {
    let env = TestEnv::new();
    let script = format!("{}; exec sleep 600", record_streams("/tmp/run-streams"));
    let started = env.run(&[
        "-d",
        "--name",
        "ctr",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    assert!(started.status.success(), "{}", text(&started.stderr));
    let out = env.capsa(&[
        "exec",
        "-d",
        "ctr",
        "sh",
        "-c",
        &record_streams("/tmp/exec-streams"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = |file: &str| text(&env.capsa(&["exec", "ctr", "cat", file]).stdout);
    for file in ["/tmp/run-streams", "/tmp/exec-streams"] {
        capsa_tests::eventually(file, Duration::from_secs(30), || {
            lines(file).lines().count() == 3
        });
    }
    let null = host_null();
    for file in ["/tmp/run-streams", "/tmp/exec-streams"] {
        let seen = lines(file);
        assert!(
            !seen.lines().any(|l| l == null),
            "{file}: the host's /dev/null ({null}) is one of the streams:\n{seen}"
        );
    }
    assert!(env.capsa(&["rm", "-f", "ctr"]).status.success());
}
