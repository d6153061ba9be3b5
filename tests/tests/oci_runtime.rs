//! `capsa-runc`, capsa as an OCI runtime with runc's layout, driven as its real callers
//! drive it: directly with a bundle (as containerd's shim and conmon call it), through a
//! containerd of the test's own (`ctr run` with the runc v2 shim), and through podman.
//! Each test has its own state root, cgroup parent and paths, and checks that nothing is
//! left: no record, cgroup, mount or process.
//!
//! The runtime hands the container's init to its caller: this test process makes itself a
//! child subreaper, as the shim and conmon are, so the init becomes its child once `create`
//! exits and its exit status is what `waitpid` here sees.

use capsa_tests::{busybox_tarball, capsa_bin, eventually, text, TestEnv};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long one runtime, ctr or podman command may take.
const BOUND: Duration = Duration::from_secs(60);

/// A runtime of the test's own: `capsa-runc` (a link to the built capsa), its state root,
/// and a cgroup parent no other test uses.
struct Runtime {
    dir: tempfile::TempDir,
    cgroup_parent: String,
}

/// What one command did: status and its two streams (written to files, so that a
/// container's init holding them open does not keep the command's reader waiting).
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }
}

/// Runs `cmd` (bounded) with stdin empty and stdout/stderr to files under `dir`.
fn run_to_files(mut cmd: Command, dir: &Path) -> Ran {
    let out = tempfile::NamedTempFile::new_in(dir).unwrap();
    let err = tempfile::NamedTempFile::new_in(dir).unwrap();
    cmd.stdin(Stdio::null())
        .stdout(out.reopen().unwrap())
        .stderr(err.reopen().unwrap());
    let mut child = cmd.spawn().expect("spawn");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > BOUND {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ran {
        status,
        stdout: std::fs::read_to_string(out.path()).unwrap_or_default(),
        stderr: std::fs::read_to_string(err.path()).unwrap_or_default(),
    }
}

/// Makes this process a child subreaper (as containerd's shim and conmon are).
fn become_subreaper() {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "PR_SET_CHILD_SUBREAPER");
}

/// Waits (bounded) for `pid`, a child of this process, and returns its exit code
/// (128 + signal when killed).
fn reap(pid: i32) -> i32 {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waitpid on one PID with a valid pointer to an int.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(
            rc >= 0,
            "waitpid {pid}: {}",
            std::io::Error::last_os_error()
        );
        if rc == pid {
            if libc::WIFEXITED(status) {
                return libc::WEXITSTATUS(status);
            }
            return 128 + libc::WTERMSIG(status);
        }
        assert!(start.elapsed() < BOUND, "{pid} did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reaps `pid` once it has exited if it is a child of this process (an orphan that came
/// to the subreaper); returns at once when it is not one.
fn reap_if_child(pid: i32) {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waitpid on one PID with a valid pointer to an int.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc != 0 {
            return; // reaped, or not a child of ours (ECHILD)
        }
        assert!(start.elapsed() < BOUND, "{pid} did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `pid` is a process that has not exited (a zombie has).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z')
        })
        .unwrap_or(false)
}

impl Runtime {
    fn new() -> Runtime {
        let dir = tempfile::Builder::new()
            .prefix("capsa-runc-")
            .tempdir()
            .unwrap();
        std::os::unix::fs::symlink(capsa_bin(), dir.path().join("capsa-runc")).unwrap();
        let tag = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        Runtime {
            dir,
            cgroup_parent: format!("/{}", tag.replace('.', "")),
        }
    }

    fn binary(&self) -> PathBuf {
        self.dir.path().join("capsa-runc")
    }

    fn state_root(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `capsa-runc --root <state> args...`.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(self.binary());
        c.arg("--root").arg(self.state_root()).args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Ran {
        run_to_files(self.command(args), self.dir.path())
    }

    /// A bundle named `name`: the busybox tree as rootfs and `capsa-runc spec`'s config
    /// with `args`, no terminal, and a cgroup under this runtime's parent.
    fn bundle(&self, name: &str, args: &[&str]) -> PathBuf {
        let bundle = self.dir.path().join(name);
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        tar::Archive::new(File::open(busybox_tarball()).unwrap())
            .unpack(&rootfs)
            .unwrap();
        let mut spec = Command::new(self.binary());
        spec.args(["spec", "--bundle"]).arg(&bundle);
        let ran = run_to_files(spec, self.dir.path());
        assert_eq!(ran.code(), 0, "spec: {}", ran.stderr);
        self.edit_config(&bundle, |c| {
            c["process"]["terminal"] = false.into();
            c["process"]["args"] = serde_json::json!(args);
            c["linux"]["cgroupsPath"] = format!("{}/{name}", self.cgroup_parent).into();
        });
        bundle
    }

    fn edit_config(&self, bundle: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
        let path = bundle.join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        edit(&mut config);
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    }

    /// `state ID` as JSON (None when the command fails).
    fn state(&self, id: &str) -> Option<serde_json::Value> {
        let ran = self.run(&["state", id]);
        (ran.code() == 0).then(|| serde_json::from_str(&ran.stdout).expect("state is JSON"))
    }

    fn status(&self, id: &str) -> String {
        self.state(id)
            .map(|s| s["status"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    }

    /// `create --bundle B --pid-file P ID` with its output in `out`; the init's PID.
    fn create(&self, bundle: &Path, id: &str, out: &Path) -> i32 {
        let pid_file = self.dir.path().join(format!("{id}.pid"));
        let mut c = self.command(&["create", "--bundle"]);
        c.arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(File::create(out).unwrap())
            .stderr(File::create(out.with_extension("err")).unwrap());
        let status = c.status().unwrap();
        let err = std::fs::read_to_string(out.with_extension("err")).unwrap_or_default();
        assert!(status.success(), "create {id}: {err}");
        std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Cgroup directories left under this runtime's parent (every v1 hierarchy, or v2).
    fn leftover_cgroups(&self) -> Vec<PathBuf> {
        cgroup_dirs_under(&self.cgroup_parent)
    }

    fn assert_clean(&self) {
        let records: Vec<_> = std::fs::read_dir(self.state_root())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        assert!(records.is_empty(), "records left: {records:?}");
        assert!(
            self.leftover_cgroups().is_empty(),
            "cgroups left: {:?}",
            self.leftover_cgroups()
        );
        let dir = self.dir.path().to_string_lossy().to_string();
        let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&dir))
            .map(String::from)
            .collect();
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    }
}

/// The cgroup directories (containers) below `parent` in every hierarchy.
fn cgroup_dirs_under(parent: &str) -> Vec<PathBuf> {
    parent_dirs(parent)
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(d)
                .map(|r| {
                    r.flatten()
                        .map(|e| e.path())
                        .filter(|p| p.is_dir())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .collect()
}

/// `parent` in each cgroup hierarchy where it exists.
fn parent_dirs(parent: &str) -> Vec<PathBuf> {
    let rel = parent.trim_start_matches('/');
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return vec![Path::new("/sys/fs/cgroup").join(rel)]
            .into_iter()
            .filter(|p| p.exists())
            .collect();
    }
    std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|e| e.path().join(rel))
        .filter(|p| p.exists())
        .collect()
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // A test that failed midway leaves containers: each is removed, then the parent.
        for id in self.run(&["list", "-q"]).stdout.lines() {
            let _ = self.run(&["delete", "--force", id]);
        }
        for dir in parent_dirs(&self.cgroup_parent) {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// A workload that reports it started, then waits for SIGTERM and exits 7.
const WAITS_FOR_TERM: &str = "trap 'echo got-term; exit 7' TERM; echo started; sleep 1000 & wait";

#[test]
fn create_start_kill_delete_as_a_shim_sees_them() {
    become_subreaper();
    let rt = Runtime::new();
    let bundle = rt.bundle("life", &["sh", "-c", WAITS_FOR_TERM]);
    let out = rt.dir.path().join("life.out");
    let pid = rt.create(&bundle, "life", &out);

    let state = rt.state("life").expect("state after create");
    assert_eq!(state["status"], "created");
    assert_eq!(state["pid"], pid, "state names the process of --pid-file");
    assert_eq!(state["bundle"], bundle.to_string_lossy().as_ref());
    assert_eq!(state["ociVersion"], "1.0.2");
    assert!(alive(pid), "the init waits for start");
    let again = rt.run(&["create", "--bundle", bundle.to_str().unwrap(), "life"]);
    assert_eq!(again.code(), 1, "an ID in use");
    assert!(again.stderr.contains("exists already"), "{}", again.stderr);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "",
        "nothing ran before start"
    );

    let started = rt.run(&["start", "life"]);
    assert_eq!(started.code(), 0, "start: {}", started.stderr);
    eventually("the workload's first line", BOUND, || {
        std::fs::read_to_string(&out).unwrap().contains("started")
    });
    assert_eq!(rt.status("life"), "running");
    let restart = rt.run(&["start", "life"]);
    assert_eq!(restart.code(), 1, "start of a running container");

    let killed = rt.run(&["kill", "life", "TERM"]);
    assert_eq!(killed.code(), 0, "kill: {}", killed.stderr);
    assert_eq!(
        reap(pid),
        7,
        "the subreaper sees the workload's own exit status"
    );
    assert!(std::fs::read_to_string(&out).unwrap().contains("got-term"));
    assert_eq!(rt.status("life"), "stopped");
    assert_eq!(rt.state("life").unwrap()["pid"], 0);
    let late = rt.run(&["kill", "life", "KILL"]);
    assert_eq!(late.code(), 1, "kill of a stopped container");
    assert!(late.stderr.contains("stopped"), "{}", late.stderr);
    // containerd's shim recognises runc's wording (CRI's exit handling depends on it).
    assert!(
        late.stderr.contains("container not running"),
        "{}",
        late.stderr
    );

    let deleted = rt.run(&["delete", "life"]);
    assert_eq!(deleted.code(), 0, "delete: {}", deleted.stderr);
    assert!(rt.state("life").is_none(), "no state after delete");
    rt.assert_clean();
}

#[test]
fn kill_all_pause_and_delete_force_leave_no_process() {
    become_subreaper();
    let rt = Runtime::new();
    let bundle = rt.bundle(
        "busy",
        &["sh", "-c", "sleep 1000 & sleep 1000 & echo started; wait"],
    );
    let out = rt.dir.path().join("busy.out");
    let pid = rt.create(&bundle, "busy", &out);
    assert_eq!(rt.run(&["start", "busy"]).code(), 0);
    eventually("the workload's first line", BOUND, || {
        std::fs::read_to_string(&out).unwrap().contains("started")
    });
    let ps = rt.run(&["ps", "--format", "json", "busy"]);
    let pids: Vec<i32> = serde_json::from_str(&ps.stdout).expect("ps json");
    assert!(pids.len() >= 3 && pids.contains(&pid), "{pids:?}");

    let events = rt.run(&["events", "--stats", "busy"]);
    let stats: serde_json::Value = serde_json::from_str(&events.stdout).expect("a stats event");
    assert_eq!(stats["type"], "stats");
    assert!(
        stats["data"]["pids"]["current"].as_u64() >= Some(3),
        "{stats}"
    );

    let limits = rt.dir.path().join("limits.json");
    std::fs::write(&limits, r#"{"pids": {"limit": 50}}"#).unwrap();
    let updated = rt.run(&["update", "--resources", limits.to_str().unwrap(), "busy"]);
    assert_eq!(updated.code(), 0, "update: {}", updated.stderr);
    let pids_max = cgroup_dirs_under(&rt.cgroup_parent)
        .into_iter()
        .map(|d| d.join("pids.max"))
        .find(|f| f.exists())
        .expect("the container's pids.max");
    assert_eq!(std::fs::read_to_string(pids_max).unwrap().trim(), "50");
    std::fs::write(&limits, r#"{"memory": {"kernelTCP": 1048576}}"#).unwrap();
    let refused = rt.run(&["update", "--resources", limits.to_str().unwrap(), "busy"]);
    assert_eq!(refused.code(), 1, "a limit no manager applies");
    assert!(
        refused.stderr.contains("resources.memory.kernelTCP"),
        "{}",
        refused.stderr
    );
    let list = rt.run(&["list", "--format", "json"]);
    let listed: serde_json::Value = serde_json::from_str(&list.stdout).expect("list json");
    assert_eq!(listed[0]["id"], "busy");
    assert_eq!(listed[0]["status"], "running");

    assert_eq!(rt.run(&["pause", "busy"]).code(), 0);
    assert_eq!(rt.status("busy"), "paused");
    assert_eq!(rt.run(&["resume", "busy"]).code(), 0);
    assert_eq!(rt.status("busy"), "running");

    let refused = rt.run(&["delete", "busy"]);
    assert_eq!(refused.code(), 1, "delete of a running container");
    assert!(refused.stderr.contains("running"), "{}", refused.stderr);
    assert!(alive(pid), "a refused delete kills nothing");

    let forced = rt.run(&["delete", "--force", "busy"]);
    assert_eq!(forced.code(), 0, "delete --force: {}", forced.stderr);
    assert_eq!(reap(pid), 128 + libc::SIGKILL);
    for p in pids {
        eventually("every process of the container gone", BOUND, || !alive(p));
    }
    rt.assert_clean();
}

#[test]
fn exec_joins_the_container_and_reports_the_status() {
    become_subreaper();
    let rt = Runtime::new();
    let bundle = rt.bundle("ex", &["sh", "-c", WAITS_FOR_TERM]);
    rt.edit_config(&bundle, |c| c["hostname"] = "inside".into());
    let out = rt.dir.path().join("ex.out");
    let pid = rt.create(&bundle, "ex", &out);
    assert_eq!(rt.run(&["start", "ex"]).code(), 0);

    let ran = rt.run(&[
        "exec",
        "--env",
        "X=1",
        "ex",
        "sh",
        "-c",
        "hostname; echo x=$X; exit 5",
    ]);
    assert_eq!(
        ran.code(),
        5,
        "exec's status is the command's: {}",
        ran.stderr
    );
    assert_eq!(
        ran.stdout, "inside\nx=1\n",
        "in the container's UTS namespace"
    );

    let pid_file = rt.dir.path().join("exec.pid");
    let detached = rt.run(&[
        "exec",
        "--detach",
        "--pid-file",
        pid_file.to_str().unwrap(),
        "ex",
        "sleep",
        "1000",
    ]);
    assert_eq!(detached.code(), 0, "exec -d: {}", detached.stderr);
    let exec_pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(exec_pid), "the detached process outlives exec");
    // The init, its sleep, the exec's capsa-init and the sleep it forks (once it has).
    let ps = || -> Vec<i32> {
        serde_json::from_str(&rt.run(&["ps", "--format", "json", "ex"]).stdout).unwrap()
    };
    eventually("the exec'd command forked", BOUND, || ps().len() >= 4);
    let pids = ps();
    assert!(
        pids.contains(&exec_pid),
        "in the container's cgroup: {pids:?}"
    );

    assert_eq!(rt.run(&["kill", "--all", "ex", "KILL"]).code(), 0);
    assert_eq!(
        reap(exec_pid),
        128 + libc::SIGKILL,
        "a child of the subreaper"
    );
    // As a shim does: every orphan that comes to the subreaper is reaped (the exec'd
    // command, whose capsa-init parent died), else the container's PID 1 cannot finish
    // exiting (the kernel waits for every process of its namespace to be reaped).
    for p in pids.iter().filter(|p| **p != pid && **p != exec_pid) {
        reap_if_child(*p);
    }
    assert_eq!(reap(pid), 128 + libc::SIGKILL);
    let stopped = rt.run(&["exec", "ex", "true"]);
    assert_eq!(stopped.code(), 1, "exec in a stopped container");
    assert_eq!(rt.run(&["delete", "ex"]).code(), 0);
    rt.assert_clean();
}

#[test]
fn mount_and_root_propagation_are_applied_inside_only() {
    let rt = Runtime::new();
    let bundle = rt.bundle("prop", &["cat", "/proc/self/mountinfo"]);
    let source = rt.dir.path().join("source");
    std::fs::create_dir_all(&source).unwrap();
    rt.edit_config(&bundle, |c| {
        c["linux"]["rootfsPropagation"] = "shared".into();
        let mounts = c["mounts"].as_array_mut().unwrap();
        for (dest, propagation) in [("/shared", "rshared"), ("/private", "rprivate")] {
            mounts.push(serde_json::json!({
                "destination": dest,
                "type": "bind",
                "source": source,
                "options": ["rbind", propagation],
            }));
        }
    });
    let ran = rt.run(&["run", "--bundle", bundle.to_str().unwrap(), "prop"]);
    assert_eq!(ran.code(), 0, "run: {}", ran.stderr);
    let line = |dest: &str| {
        ran.stdout
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(dest))
            .unwrap_or_else(|| panic!("{dest} in {}", ran.stdout))
            .to_string()
    };
    let optional = |l: &str| {
        l.split(" - ")
            .next()
            .unwrap()
            .split(' ')
            .skip(6)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(optional(&line("/")).contains("shared:"), "{}", line("/"));
    assert!(
        optional(&line("/shared")).contains("shared:"),
        "{}",
        line("/shared")
    );
    assert!(
        !optional(&line("/private")).contains("shared:"),
        "{}",
        line("/private")
    );
    // Peer groups of the container's own: no host mount shares one with them.
    let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let group = |l: &str| {
        optional(l)
            .split(' ')
            .find(|f| f.starts_with("shared:"))
            .unwrap()
            .to_string()
    };
    for l in [line("/"), line("/shared")] {
        let g = group(&l);
        assert!(
            !host
                .lines()
                .any(|h| h.split(" - ").next().unwrap().split(' ').any(|f| f == g)),
            "{g} is a host peer group"
        );
    }
    rt.assert_clean();
}

#[test]
fn hooks_get_the_state_at_their_step_and_a_failing_one_stops_create() {
    become_subreaper();
    let rt = Runtime::new();
    let bundle = rt.bundle("hooked", &["true"]);
    let dir = rt.dir.path().to_path_buf();
    let record = |kind: &str| {
        serde_json::json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("cat > {}/{kind}.json", dir.display())],
        })
    };
    // runc's timing, which hooks that enter the container's mount namespace rely on: the
    // init waits with its mounts made and its root not yet pivoted into.
    let before_pivot = format!(
        "pid=$(sed -n 's/.*\"pid\":\\([0-9]*\\).*/\\1/p'); \
         test -x /proc/$pid/root{}/rootfs/bin/busybox && echo 'before the pivot' > {}/where",
        bundle.display(),
        dir.display()
    );
    rt.edit_config(&bundle, |c| {
        c["hooks"] = serde_json::json!({
            "createRuntime": [record("createRuntime"),
                {"path": "/bin/sh", "args": ["sh", "-c", before_pivot]}],
            "poststart": [record("poststart")],
            "poststop": [record("poststop")],
        });
    });
    let out = dir.join("hooked.out");
    let pid = rt.create(&bundle, "hooked", &out);
    let seen = |kind: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join(format!("{kind}.json"))).unwrap())
            .unwrap_or_else(|e| panic!("{kind} hook's stdin: {e}"))
    };
    let created = seen("createRuntime");
    assert_eq!(created["id"], "hooked");
    assert_eq!(created["status"], "creating");
    assert_eq!(
        created["pid"], pid,
        "the init exists when createRuntime runs"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("where")).unwrap(),
        "before the pivot\n",
        "createRuntime finds the root at the bundle's path in the init's mount namespace"
    );
    assert!(
        !dir.join("poststart.json").exists(),
        "poststart waits for start"
    );
    assert_eq!(rt.run(&["start", "hooked"]).code(), 0);
    assert_eq!(seen("poststart")["status"], "running");
    assert_eq!(reap(pid), 0);
    assert!(
        !dir.join("poststop.json").exists(),
        "poststop waits for delete"
    );
    assert_eq!(rt.run(&["delete", "hooked"]).code(), 0);
    assert_eq!(seen("poststop")["status"], "stopped");
    rt.assert_clean();

    // A createRuntime hook that fails: create fails naming it, and leaves nothing.
    rt.edit_config(&bundle, |c| {
        c["hooks"] = serde_json::json!({
            "createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "echo refused >&2; exit 3"]}],
        });
    });
    let failed = rt.run(&["create", "--bundle", bundle.to_str().unwrap(), "hooked"]);
    assert_eq!(failed.code(), 1);
    assert!(
        failed.stderr.contains("createRuntime hook /bin/sh") && failed.stderr.contains("refused"),
        "{}",
        failed.stderr
    );
    assert!(rt.state("hooked").is_none());
    rt.assert_clean();
}

#[test]
fn container_hooks_run_in_its_namespaces_at_their_step() {
    become_subreaper();
    let rt = Runtime::new();
    let bundle = rt.bundle(
        "inner",
        &[
            "sh",
            "-c",
            "cat /tmp/start-hook; grep -c '\"status\":\"created\"' /tmp/start-state",
        ],
    );
    let dir = rt.dir.path().to_path_buf();
    let rootfs = bundle.join("rootfs");
    // createContainer: a program of the runtime's file system (resolved before the pivot),
    // run in the container's mount namespace; startContainer: a program of the container's
    // root, run as the workload's user just before its exec (as runc does).
    let create_container = format!(
        "readlink /proc/self/ns/mnt > {d}/cc-mnt; cat > {d}/cc.json; \
         test -x {r}/bin/busybox && echo runtime-paths > {d}/cc-where",
        d = dir.display(),
        r = rootfs.display()
    );
    rt.edit_config(&bundle, |c| {
        c["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
        c["root"]["readonly"] = false.into();
        c["hooks"] = serde_json::json!({
            "createContainer": [{"path": "/bin/sh", "args": ["sh", "-c", create_container]}],
            "startContainer": [{"path": "/bin/sh",
                "args": ["sh", "-c", "id -u > /tmp/start-hook; cat > /tmp/start-state"]}],
        });
    });
    let out = dir.join("inner.out");
    let pid = rt.create(&bundle, "inner", &out);
    let init_mnt = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    let hook_mnt = std::fs::read_to_string(dir.join("cc-mnt")).unwrap();
    assert_eq!(
        hook_mnt.trim(),
        init_mnt.to_str().unwrap(),
        "in the container's mount namespace"
    );
    assert_ne!(
        hook_mnt.trim(),
        std::fs::read_link("/proc/self/ns/mnt")
            .unwrap()
            .to_str()
            .unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("cc-where")).unwrap(),
        "runtime-paths\n"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("cc.json")).unwrap()).unwrap();
    assert_eq!(state["id"], "inner");
    assert_eq!(state["status"], "creating");
    assert!(
        !rootfs.join("tmp/start-hook").exists(),
        "startContainer waits for start"
    );
    let started = rt.run(&["start", "inner"]);
    assert_eq!(started.code(), 0, "start: {}", started.stderr);
    assert_eq!(reap(pid), 0);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "1000\n1\n");
    assert_eq!(rt.run(&["delete", "inner"]).code(), 0);
    rt.assert_clean();

    // A startContainer hook that fails: start fails naming it, the workload never runs.
    rt.edit_config(&bundle, |c| {
        c["hooks"] = serde_json::json!({
            "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "echo refused >&2; exit 3"]}],
        });
        c["process"]["args"] = serde_json::json!(["touch", "/tmp/workload-ran"]);
    });
    let pid = rt.create(&bundle, "inner", &out);
    let started = rt.run(&["start", "inner"]);
    assert_eq!(started.code(), 1);
    assert!(
        started.stderr.contains("startContainer hook /bin/sh")
            && started.stderr.contains("refused"),
        "{}",
        started.stderr
    );
    assert_ne!(reap(pid), 0);
    assert!(!rootfs.join("tmp/workload-ran").exists());
    assert_eq!(rt.run(&["delete", "--force", "inner"]).code(), 0);
    rt.assert_clean();
}

#[test]
fn a_caller_killed_mid_create_leaves_what_delete_force_removes() {
    become_subreaper();
    let rt = Runtime::new();
    let bundle = rt.bundle("torn", &["true"]);
    let dir = rt.dir.path().to_path_buf();
    // A createRuntime hook that reports its PID and blocks: create is caught after the
    // init exists and the record is written, as a shim killed then would leave it.
    let hook_pid = dir.join("hook.pid");
    let init_pid = dir.join("init.pid");
    let hook = format!(
        "sed -n 's/.*\"pid\":\\([0-9]*\\).*/\\1/p' > {}; echo $$ > {}; exec sleep 1000",
        init_pid.display(),
        hook_pid.display()
    );
    rt.edit_config(&bundle, |c| {
        c["hooks"] = serde_json::json!({"createRuntime": [{
            "path": "/bin/sh",
            "args": ["sh", "-c", hook],
        }]});
    });
    let mut create = rt.command(&["create", "--bundle", bundle.to_str().unwrap(), "torn"]);
    create
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut create = create.spawn().unwrap();
    eventually("the hook running", BOUND, || {
        std::fs::read_to_string(&hook_pid).is_ok_and(|t| t.ends_with('\n'))
    });
    create.kill().unwrap();
    create.wait().unwrap();
    let hook: i32 = std::fs::read_to_string(&hook_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        !rt.leftover_cgroups().is_empty(),
        "the torn create left its cgroup"
    );
    assert!(
        rt.state("torn").is_some(),
        "the record written before the hooks"
    );
    let init: i32 = std::fs::read_to_string(&init_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The init waited for the hooks with its root not yet pivoted into; its runtime gone,
    // it gives up (an orphan now, so this subreaper's child) and never reaches the gate.
    assert_eq!(reap(init), 1);
    assert_eq!(rt.status("torn"), "stopped");

    let deleted = rt.run(&["delete", "--force", "torn"]);
    assert_eq!(deleted.code(), 0, "delete --force: {}", deleted.stderr);
    rt.assert_clean();
    // SAFETY: kill(2) on the hook's PID, a child of this subreaper not yet reaped.
    unsafe { libc::kill(hook, libc::SIGKILL) };
    reap_if_child(hook);
}

#[test]
fn a_console_socket_that_refuses_fails_create_and_leaves_nothing() {
    let rt = Runtime::new();
    let bundle = rt.bundle("console", &["true"]);
    rt.edit_config(&bundle, |c| c["process"]["terminal"] = true.into());
    let nobody = rt.dir.path().join("nobody-listens.sock");
    let ran = rt.run(&[
        "create",
        "--bundle",
        bundle.to_str().unwrap(),
        "--console-socket",
        nobody.to_str().unwrap(),
        "console",
    ]);
    assert_eq!(ran.code(), 1);
    assert!(ran.stderr.contains("console socket"), "{}", ran.stderr);
    assert!(rt.state("console").is_none());
    rt.assert_clean();
    let without = rt.run(&["create", "--bundle", bundle.to_str().unwrap(), "console"]);
    assert_eq!(without.code(), 1, "a terminal needs a console socket");
    assert!(
        without.stderr.contains("--console-socket"),
        "{}",
        without.stderr
    );
    rt.assert_clean();
}

#[test]
fn process_user_ids_are_taken_as_given_not_looked_up_by_name() {
    let rt = Runtime::new();
    let bundle = rt.bundle("ids", &["sh", "-c", "id -u; id -g; id -G; echo $HOME"]);
    // A hostile image: entries *named* 1000 that are root's IDs, listed first.
    let etc = bundle.join("rootfs/etc");
    for (file, line) in [
        ("passwd", "1000:x:0:0:evil:/root:/bin/sh\n"),
        ("group", "1000:x:0:\n"),
    ] {
        let path = etc.join(file);
        let rest = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{line}{rest}")).unwrap();
    }
    rt.edit_config(&bundle, |c| {
        c["process"]["user"] =
            serde_json::json!({"uid": 1000, "gid": 1000, "additionalGids": [1000]});
    });
    let ran = rt.run(&["run", "--bundle", bundle.to_str().unwrap(), "ids"]);
    assert_eq!(ran.code(), 0, "run: {}", ran.stderr);
    assert_eq!(
        ran.stdout, "1000\n1000\n1000\n/home/app\n",
        "HOME from the entry of uid 1000"
    );
    rt.assert_clean();
}

#[test]
fn a_terminal_the_caller_hands_down_keeps_its_owner() {
    // An operator runs a container from a shell: the process inherits the shell's
    // terminal, a pty of the host's devpts. runc gives it to the container's user; then
    // the host's uid 1000, whoever that is, could open the operator's terminal and type
    // into it (TIOCSTI). capsa-runc gives only a pty it made for the process. Also with an
    // image whose /dev/pts is a link to /proc/self/fd/0 and no devpts mounted over it: by
    // its file system, the container's devpts would then be the caller's.
    let rt = Runtime::new();
    let bundle = rt.bundle("handed", &["sh", "-c", "id -u > /dev/null"]);
    rt.edit_config(&bundle, |c| {
        c["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
    });
    let mut master: libc::c_int = -1;
    let mut slave: libc::c_int = -1;
    // SAFETY: openpty writes two descriptors behind the pointers, which outlive the call;
    // the name, termios and window size are not asked for.
    let opened = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty returned these descriptors; nothing else owns them.
    let (master, slave) = unsafe {
        use std::os::fd::FromRawFd;
        (File::from_raw_fd(master), File::from_raw_fd(slave))
    };
    use std::os::unix::fs::MetadataExt;
    let before = slave.metadata().unwrap().uid();
    for linked_devpts in [false, true] {
        if linked_devpts {
            let dev = bundle.join("rootfs/dev");
            std::fs::create_dir_all(&dev).unwrap();
            let _ = std::fs::remove_dir_all(dev.join("pts"));
            std::os::unix::fs::symlink("/proc/self/fd/0", dev.join("pts")).unwrap();
            rt.edit_config(&bundle, |c| {
                c["mounts"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|m| !m["destination"].as_str().unwrap().starts_with("/dev"));
            });
        }
        let mut c = rt.command(&["run", "--bundle", bundle.to_str().unwrap(), "handed"]);
        c.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave.try_clone().unwrap());
        let status = c.status().unwrap();
        assert!(
            status.success(),
            "run (linked /dev/pts: {linked_devpts}): {status}"
        );
        assert_eq!(
            slave.metadata().unwrap().uid(),
            before,
            "the caller's terminal changed owner (linked /dev/pts: {linked_devpts})"
        );
    }
    drop(master);
    rt.assert_clean();
}

/// `capsa-runc ARGS` in a mount namespace of its own where /sys/fs/cgroup is cgroup v2
/// (this host's unified hierarchy, which offers hugetlb).
fn on_cgroup2(rt: &Runtime, args: &[&str]) -> Ran {
    let inner = rt.command(args);
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("umount -l /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && exec \"$@\"")
        .arg("sh")
        .arg(inner.get_program())
        .args(inner.get_args());
    run_to_files(cmd, rt.dir.path())
}

#[test]
fn hugepage_limits_are_applied_as_the_kubelet_sends_them() {
    // The kubelet sends a limit for every huge page size the node has, 0 unless the pod
    // asked for huge pages; a runtime that refuses them runs no pod.
    let sizes: Vec<String> = std::fs::read_dir("/sys/kernel/mm/hugepages")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    if !sizes.iter().any(|s| s == "hugepages-2048kB") {
        eprintln!("skipped: this kernel has no 2 MiB huge pages");
        return;
    }
    let rt = Runtime::new();
    let bundle = rt.bundle(
        "huge",
        &[
            "sh",
            "-c",
            "cat /sys/fs/cgroup/hugetlb.2MB.max /sys/fs/cgroup/hugetlb.2MB.rsvd.max",
        ],
    );
    rt.edit_config(&bundle, |c| {
        c["linux"]["resources"]["hugepageLimits"] =
            serde_json::json!([{"pageSize": "2MB", "limit": 4194304}]);
    });
    let unified = Path::new("/sys/fs/cgroup/unified");
    let v2_parent = unified.join(rt.cgroup_parent.trim_start_matches('/'));
    if unified.join("cgroup.controllers").exists()
        && std::fs::read_to_string(unified.join("cgroup.controllers"))
            .unwrap_or_default()
            .contains("hugetlb")
    {
        let ran = on_cgroup2(&rt, &["run", "--bundle", bundle.to_str().unwrap(), "huge"]);
        assert_eq!(ran.code(), 0, "run on cgroup v2: {}", ran.stderr);
        assert_eq!(
            ran.stdout, "4194304\n4194304\n",
            "the limit and its reservation twin"
        );
        assert!(!v2_parent.join("huge").exists(), "the cgroup is removed");
        let _ = std::fs::remove_dir(&v2_parent);
    }
    // A size the kernel does not have: refused by name before anything is made.
    rt.edit_config(&bundle, |c| {
        c["linux"]["resources"]["hugepageLimits"] =
            serde_json::json!([{"pageSize": "3MB", "limit": 0}]);
    });
    let ran = rt.run(&["run", "--bundle", bundle.to_str().unwrap(), "huge"]);
    assert_eq!(ran.code(), 1);
    assert!(ran.stderr.contains("3MB"), "{}", ran.stderr);
    // Where no hugetlb hierarchy is mounted (this cgroup v1 host), the limit cannot hold:
    // refused naming the controller, as runc does, never ignored.
    if Path::new("/sys/fs/cgroup/memory").exists() && !Path::new("/sys/fs/cgroup/hugetlb").exists()
    {
        rt.edit_config(&bundle, |c| {
            c["linux"]["resources"]["hugepageLimits"] =
                serde_json::json!([{"pageSize": "2MB", "limit": 0}]);
        });
        let ran = rt.run(&["run", "--bundle", bundle.to_str().unwrap(), "huge"]);
        assert_eq!(ran.code(), 1);
        assert!(ran.stderr.contains("hugetlb"), "{}", ran.stderr);
    }
    rt.assert_clean();
}

#[test]
fn preserved_descriptors_reach_the_workload_and_no_others_do() {
    use std::io::Read;
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    // As conmon passes a socket-activated service its listening sockets: descriptors 3
    // and 4 of the caller, `--preserve-fds 2`, and LISTEN_FDS in the environment.
    let rt = Runtime::new();
    let bundle = rt.bundle(
        "kept",
        &[
            "sh",
            "-c",
            "echo three >&3 && echo four >&4 && exec 3>&- 4>&- && ls /proc/self/fd | wc -l",
        ],
    );
    let pipe = || {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array, which outlives the call.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: pipe2 returned these descriptors; nothing else owns them.
        unsafe {
            use std::os::fd::FromRawFd;
            (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
        }
    };
    let (r3, w3) = pipe();
    let (r4, w4) = pipe();
    // A descriptor the caller holds and does not pass: it must not reach the container.
    let (_r5, w5) = pipe();
    let run = |preserve: &str, fds: Vec<OwnedFd>| {
        let mut c = rt.command(&[
            "run",
            "--preserve-fds",
            preserve,
            "--bundle",
            bundle.to_str().unwrap(),
            "kept",
        ]);
        let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let stray = w5.as_raw_fd();
        // SAFETY: between fork and exec only dup2 and fcntl, async-signal-safe, on
        // descriptors this process holds.
        unsafe {
            c.pre_exec(move || {
                // First out of the way (a source may itself be 3 or 4), then into place;
                // no allocation between fork and exec (another thread may hold the lock).
                let mut high = [0i32; 2];
                for (i, fd) in raw.iter().enumerate() {
                    high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 100);
                    if high[i] < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (i, fd) in high.iter().take(raw.len()).enumerate() {
                    if libc::dup2(*fd, 3 + i as i32) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // Left open across the exec, as a careless caller would.
                libc::fcntl(stray, libc::F_SETFD, 0);
                Ok(())
            });
        }
        let ran = run_to_files(c, rt.dir.path());
        drop(fds);
        ran
    };
    let ran = run("2", vec![w3, w4]);
    assert_eq!(ran.code(), 0, "run: {}", ran.stderr);
    let mut got = String::new();
    std::fs::File::from(r3).read_to_string(&mut got).unwrap();
    std::fs::File::from(r4).read_to_string(&mut got).unwrap();
    assert_eq!(got, "three\nfour\n");
    // stdin, stdout, stderr and the one ls opens: the stray pipe did not come in.
    assert_eq!(ran.stdout.trim(), "4", "descriptors in the container");
    // Fewer descriptors open than announced: refused, nothing made.
    let ran = run("3", Vec::new());
    assert_eq!(ran.code(), 1);
    assert!(
        ran.stderr.contains("descriptor 3 is not open"),
        "{}",
        ran.stderr
    );
    rt.assert_clean();
}

#[test]
fn a_mount_namespace_joined_by_path_holds_the_container_and_not_the_hosts_table() {
    become_subreaper();
    let rt = Runtime::new();
    // The namespace's holder, as runtime-tools' linux_ns_path makes it.
    let mut holder = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sleep", "600"])
        .spawn()
        .unwrap();
    let ns_of = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    let ours = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    eventually("the holder's own mount namespace", BOUND, || {
        ns_of(holder.id()) != ours
    });
    let joined = format!("/proc/{}/ns/mnt", holder.id());
    let bundle = rt.bundle("mntns", &["sleep", "600"]);
    rt.edit_config(&bundle, |c| {
        let namespaces = c["linux"]["namespaces"].as_array_mut().unwrap();
        namespaces.retain(|n| n["type"] != "mount");
        namespaces.push(serde_json::json!({"type": "mount", "path": joined}));
    });
    let out = rt.dir.path().join("mntns.out");
    let pid = rt.create(&bundle, "mntns", &out);
    assert_eq!(
        ns_of(pid as u32),
        ns_of(holder.id()),
        "the init is in the namespace the config names"
    );
    // The container's mounts (its /proc, /dev) were made in the joined namespace: the
    // runtime's own table has none under the bundle.
    let rootfs = bundle.join("rootfs").to_string_lossy().to_string();
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !host_mounts.contains(&rootfs),
        "no container mount in the runtime's namespace: {host_mounts}"
    );
    let joined_mounts =
        std::fs::read_to_string(format!("/proc/{}/mountinfo", holder.id())).unwrap();
    assert!(
        joined_mounts
            .lines()
            .any(|l| l.contains(" /proc ") && l.contains(" proc ")),
        "the container's /proc is in the joined namespace: {joined_mounts}"
    );
    let started = rt.run(&["start", "mntns"]);
    assert_eq!(started.code(), 0, "start: {}", started.stderr);
    let exec = rt.run(&["exec", "mntns", "cat", "/proc/self/mountinfo"]);
    assert_eq!(exec.code(), 0, "exec: {}", exec.stderr);
    assert_eq!(rt.run(&["kill", "mntns", "KILL"]).code(), 0);
    reap(pid);
    assert_eq!(rt.run(&["delete", "mntns"]).code(), 0);
    let _ = holder.kill();
    let _ = holder.wait();
    rt.assert_clean();
}

#[test]
fn a_user_namespace_maps_the_init_and_every_exec() {
    become_subreaper();
    let rt = Runtime::new();
    let bundle = rt.bundle("userns", &["sh", "-c", WAITS_FOR_TERM]);
    // The root's files stay the host's (root's, unmapped: nobody inside), so the mount
    // points the namespace's root may not make are made here, as bundle tools do.
    for d in ["proc", "sys", "dev"] {
        std::fs::create_dir_all(bundle.join("rootfs").join(d)).unwrap();
    }
    rt.edit_config(&bundle, |c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "user"}));
        let map = serde_json::json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
        c["linux"]["uidMappings"] = map.clone();
        c["linux"]["gidMappings"] = map;
        c["process"]["user"] = serde_json::json!({"uid": 0, "gid": 0});
    });
    let out = rt.dir.path().join("userns.out");
    let pid = rt.create(&bundle, "userns", &out);
    assert_eq!(rt.run(&["start", "userns"]).code(), 0);
    eventually("the workload's first line", BOUND, || {
        std::fs::read_to_string(&out).unwrap().contains("started")
    });
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|id| id == "200000"),
        "the container's root is host uid 200000: {uid_line}"
    );
    let ran = rt.run(&[
        "exec",
        "userns",
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map",
    ]);
    assert_eq!(ran.code(), 0, "exec: {}", ran.stderr);
    let words: Vec<&str> = ran.stdout.split_whitespace().collect();
    assert_eq!(
        words,
        ["0", "0", "200000", "65536"],
        "exec is in the user namespace too"
    );
    assert_eq!(rt.run(&["kill", "userns", "TERM"]).code(), 0);
    assert_eq!(reap(pid), 7);
    assert_eq!(rt.run(&["delete", "userns"]).code(), 0);
    rt.assert_clean();

    // Maps that leave the namespace's root unmapped are refused by name.
    rt.edit_config(&bundle, |c| {
        let map = serde_json::json!([{"containerID": 1, "hostID": 200000, "size": 100}]);
        c["linux"]["uidMappings"] = map.clone();
        c["linux"]["gidMappings"] = map;
    });
    let refused = rt.run(&["create", "--bundle", bundle.to_str().unwrap(), "userns"]);
    assert_eq!(refused.code(), 1);
    assert!(
        refused.stderr.contains("does not map uid and gid 0"),
        "{}",
        refused.stderr
    );
    rt.assert_clean();
}

/// A change to a bundle's config.json.
type ConfigEdit = fn(&mut serde_json::Value);

#[test]
fn unsupported_configs_are_refused_by_name_and_leave_nothing() {
    let rt = Runtime::new();
    let bundle = rt.bundle("bad", &["true"]);
    let log = rt.dir.path().join("log.json");
    let cases: [(&str, ConfigEdit); 6] = [
        ("a config without a mount namespace", |c| {
            c["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .retain(|n| n["type"] != "mount")
        }),
        // The runtime's own (the test's): pivoting there would move the host's root.
        ("joining the mount namespace /proc/self/ns/mnt", |c| {
            let namespaces = c["linux"]["namespaces"].as_array_mut().unwrap();
            namespaces.retain(|n| n["type"] != "mount");
            namespaces.push(serde_json::json!({"type": "mount", "path": "/proc/self/ns/mnt"}));
        }),
        ("domainname", |c| c["domainname"] = "example.org".into()),
        (
            "a user namespace without uidMappings and gidMappings",
            |c| {
                c["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .push(serde_json::json!({"type": "user"}))
            },
        ),
        ("annotation io.capsa.init", |c| {
            c["annotations"] = serde_json::json!({"io.capsa.init": "true"})
        }),
        ("process.args", |c| {
            c["process"]["args"] = serde_json::json!(7)
        }),
    ];
    for (name, edit) in cases {
        rt.edit_config(&bundle, edit);
        let ran = run_to_files(
            {
                let mut c = rt.command(&["--log", log.to_str().unwrap(), "--log-format", "json"]);
                c.args(["create", "--bundle"]).arg(&bundle).arg("bad");
                c
            },
            rt.dir.path(),
        );
        assert_eq!(ran.code(), 1, "{name}");
        let last = std::fs::read_to_string(&log).unwrap();
        let line: serde_json::Value =
            serde_json::from_str(last.lines().last().unwrap()).expect("a JSON log line");
        assert_eq!(line["level"], "error");
        let msg = line["msg"].as_str().unwrap();
        assert!(msg.contains(name), "{name} named in {msg:?}");
        assert!(rt.state("bad").is_none(), "{name}: nothing created");
        rt.assert_clean();
        rt.edit_config(&bundle, |c| {
            c.as_object_mut().unwrap().remove("hooks");
            c.as_object_mut().unwrap().remove("domainname");
            c.as_object_mut().unwrap().remove("annotations");
            c["process"]["args"] = serde_json::json!(["true"]);
            c["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .retain(|n| n["type"] != "user" && n["type"] != "mount");
            c["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"type": "mount"}));
        });
    }
    let systemd = rt.run(&[
        "--systemd-cgroup",
        "create",
        "--bundle",
        bundle.to_str().unwrap(),
        "bad",
    ]);
    assert_eq!(systemd.code(), 1);
    assert!(
        systemd.stderr.contains("--systemd-cgroup"),
        "{}",
        systemd.stderr
    );
    let features = rt.run(&["features"]);
    let features: serde_json::Value = serde_json::from_str(&features.stdout).unwrap();
    assert_eq!(features["ociVersionMax"], "1.0.2");
    assert_eq!(features["linux"]["cgroup"]["systemd"], false);
    let checkpoint = rt.run(&["checkpoint", "bad"]);
    assert_eq!(checkpoint.code(), 1);
    assert!(
        checkpoint.stderr.contains("not supported"),
        "{}",
        checkpoint.stderr
    );
    let missing = rt.run(&["start", "nothere"]);
    assert_eq!(missing.code(), 1);
    assert!(
        missing.stderr.contains("does not exist"),
        "{}",
        missing.stderr
    );
    rt.assert_clean();
}

#[test]
fn an_oom_score_the_kernel_refuses_fails_create_as_runc_does() {
    become_subreaper();
    let rt = Runtime::new();
    let bundle = rt.bundle("oom", &["sleep", "1000"]);
    // Without CAP_SYS_RESOURCE (dropped from the bounding set, so on any host) the score
    // cannot be lowered below the caller's: create fails and names the field.
    rt.edit_config(&bundle, |c| c["process"]["oomScoreAdj"] = (-998).into());
    let mut create = Command::new("setpriv");
    create
        .args(["--bounding-set", "-sys_resource"])
        .arg(rt.binary())
        .arg("--root")
        .arg(rt.state_root())
        .args(["create", "--bundle"])
        .arg(&bundle)
        .arg("oom");
    let ran = run_to_files(create, rt.dir.path());
    assert_eq!(ran.code(), 1, "create: {}", ran.stderr);
    assert!(
        ran.stderr.contains("process.oomScoreAdj -998"),
        "{}",
        ran.stderr
    );
    assert!(rt.state("oom").is_none(), "nothing created");
    rt.assert_clean();
    // A score it may set is the init's, not the runtime's: a prestart hook (run by
    // capsa-runc after the init exists) has the caller's.
    let seen = rt.dir.path().join("hook-score");
    let hook = format!("cat /proc/self/oom_score_adj > {}", seen.display());
    rt.edit_config(&bundle, |c| {
        c["process"]["oomScoreAdj"] = 500.into();
        c["hooks"] =
            serde_json::json!({"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", hook]}]});
    });
    let out = rt.dir.path().join("oom.out");
    let pid = rt.create(&bundle, "oom", &out);
    let adj = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
    assert_eq!(adj.trim(), "500");
    let ours = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), ours);
    assert_eq!(rt.run(&["delete", "--force", "oom"]).code(), 0);
    reap_if_child(pid);
    rt.assert_clean();
}

/// A containerd of the test's own: root, state, sockets and runc root under a temp dir,
/// its CRI plugin off; killed (and its leftovers checked) by the test.
struct Containerd {
    dir: tempfile::TempDir,
    daemon: std::process::Child,
    /// The namespace the test uses, emptied when it ends, however it ends.
    namespace: String,
}

impl Containerd {
    fn start(namespace: &str) -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("capsa-ctd-")
            .tempdir()
            .unwrap();
        let d = dir.path().display();
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{d}/ctd.sock\"\n\
             [ttrpc]\n  address = \"{d}/ctd.sock.ttrpc\"\n"
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdin(Stdio::null())
            // capsa-vm's pod disks and VM templates: the test's, removed with it.
            .env("CAPSA_VM_STATE", dir.path().join("capsa-vm-state"))
            .stdout(File::create(dir.path().join("containerd.log")).unwrap())
            .stderr(File::create(dir.path().join("containerd.err")).unwrap())
            .spawn()
            .expect("containerd (scripts/setup.sh installs it)");
        let ctd = Containerd {
            dir,
            daemon,
            namespace: namespace.to_string(),
        };
        eventually("containerd answers", BOUND, || {
            ctd.ctr(&["version"]).code() == 0
        });
        ctd
    }

    fn ctr(&self, args: &[&str]) -> Ran {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(self.dir.path().join("ctd.sock"))
            .args(args);
        run_to_files(c, self.dir.path())
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // A test that failed midway leaves tasks: each is killed and deleted (its shim then
        // exits and its root is unmounted), then its container.
        let ns = self.namespace.clone();
        for id in self.ctr(&["-n", &ns, "tasks", "ls", "-q"]).stdout.lines() {
            let _ = self.ctr(&["-n", &ns, "tasks", "delete", "-f", id]);
        }
        for id in self
            .ctr(&["-n", &ns, "containers", "ls", "-q"])
            .stdout
            .lines()
        {
            let _ = self.ctr(&["-n", &ns, "containers", "delete", id]);
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// busybox as an image archive made by `capsa save`, in `dir`.
fn saved_busybox(env: &TestEnv, dir: &Path) -> PathBuf {
    let archive = dir.join("busybox.tar");
    let out = env.capsa(&["save", "-o", archive.to_str().unwrap(), "busybox"]);
    assert!(out.status.success(), "save: {}", text(&out.stderr));
    archive
}

#[test]
fn containerd_runs_containers_through_the_runc_shim_with_capsa_runc() {
    let env = TestEnv::new();
    let rt = Runtime::new();
    // The namespace names the cgroup parent: ctr's cgroupsPath is /<namespace>/<id>.
    let ns = rt.cgroup_parent.trim_start_matches('/').to_string();
    let ctd = Containerd::start(&ns);
    let archive = saved_busybox(&env, ctd.dir.path());
    let image = "docker.io/library/busybox:latest";
    let imported = ctd.ctr(&["-n", &ns, "images", "import", archive.to_str().unwrap()]);
    assert_eq!(imported.code(), 0, "import: {}", imported.stderr);
    // The shim keeps its records under <runc root>/<namespace>.
    let runc_root = rt.dir.path().join("ctr-runc");
    let address = ctd.dir.path().join("ctd.sock").display().to_string();
    let runtime = rt.binary();
    let flags = [
        "--runc-binary",
        runtime.to_str().unwrap(),
        "--runc-root",
        runc_root.to_str().unwrap(),
    ];

    let mut run = vec!["-n", &ns, "run", "--rm"];
    run.extend(flags);
    run.extend([image, "once", "sh", "-c", "echo hello from ctr; exit 5"]);
    let ran = ctd.ctr(&run);
    assert_eq!(
        ran.code(),
        5,
        "ctr run's status is the workload's: {}",
        ran.stderr
    );
    assert_eq!(ran.stdout, "hello from ctr\n");
    let records = || {
        std::fs::read_dir(runc_root.join(&ns))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(records(), 0, "no record left by ctr run --rm");
    rt.assert_clean();

    // A terminal: the shim's console socket gets the pty master (ctr wants a terminal of
    // its own, which script(1) gives it). The workload writes its terminal's name to a
    // bind-mounted file: what it prints just before exiting may be lost with the pty's
    // hang-up, for runc too.
    let shared = rt.dir.path().join("out");
    std::fs::create_dir_all(&shared).unwrap();
    let mount = format!(
        "type=bind,src={},dst=/out,options=rbind:rw",
        shared.display()
    );
    let mut tty = vec!["ctr", "--address", &address, "-n", &ns, "run", "-t", "--rm"];
    tty.extend(["--mount", &mount]);
    tty.extend(flags);
    tty.extend([image, "tty", "sh", "-c", "'tty > /out/run; exit 6'"]);
    let mut script = Command::new("script");
    script.args(["-qec", &tty.join(" "), "/dev/null"]);
    let ran = run_to_files(script, ctd.dir.path());
    assert_eq!(ran.code(), 6, "ctr run -t: {}", ran.stdout);
    let name = std::fs::read_to_string(shared.join("run")).unwrap();
    assert_eq!(
        name, "/dev/pts/0\n",
        "the first pty of the container's own devpts is the process's terminal"
    );
    assert_eq!(records(), 0, "no record left by ctr run -t --rm");

    let mut detached = vec!["-n", &ns, "run", "-d", "--mount", &mount];
    detached.extend(flags);
    detached.extend([image, "bg", "sh", "-c", WAITS_FOR_TERM]);
    let ran = ctd.ctr(&detached);
    assert_eq!(ran.code(), 0, "ctr run -d: {}", ran.stderr);
    let exec = ctd.ctr(&[
        "-n",
        &ns,
        "task",
        "exec",
        "--exec-id",
        "e1",
        "bg",
        "sh",
        "-c",
        "echo in; exit 3",
    ]);
    assert_eq!(exec.code(), 3, "exec: {}", exec.stderr);
    assert_eq!(exec.stdout, "in\n");
    // exec -t: the pty is the container's own (its devpts names it).
    let tty_exec = [
        "ctr",
        "--address",
        &address,
        "-n",
        &ns,
        "task",
        "exec",
        "-t",
        "--exec-id",
        "e2",
        "bg",
        "sh",
        "-c",
        "'tty > /out/exec; exit 4'",
    ];
    let mut script = Command::new("script");
    script.args(["-qec", &tty_exec.join(" "), "/dev/null"]);
    let ran = run_to_files(script, ctd.dir.path());
    assert_eq!(ran.code(), 4, "ctr task exec -t: {}", ran.stdout);
    let name = std::fs::read_to_string(shared.join("exec")).unwrap();
    assert!(
        name.starts_with("/dev/pts/"),
        "named in the container: {name:?}"
    );
    assert_eq!(ctd.ctr(&["-n", &ns, "task", "kill", "bg"]).code(), 0);
    eventually("the task stopped", BOUND, || {
        ctd.ctr(&["-n", &ns, "task", "ls"])
            .stdout
            .contains("STOPPED")
    });
    let ls = ctd.ctr(&["-n", &ns, "task", "ls"]);
    assert!(ls.stdout.contains("bg"), "{}", ls.stdout);
    assert_eq!(ctd.ctr(&["-n", &ns, "task", "delete", "bg"]).code(), 0);
    assert_eq!(ctd.ctr(&["-n", &ns, "container", "delete", "bg"]).code(), 0);
    assert_eq!(records(), 0, "no record left by task delete");
    rt.assert_clean();
}

#[test]
fn podman_runs_a_container_with_capsa_runc() {
    let env = TestEnv::new();
    let rt = Runtime::new();
    let dir = rt.dir.path().join("podman");
    std::fs::create_dir_all(&dir).unwrap();
    let archive = saved_busybox(&env, &dir);
    let podman = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(dir.join("root"))
            .arg("--runroot")
            .arg(dir.join("run"))
            .arg("--tmpdir")
            .arg(dir.join("tmp"))
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .args(["--storage-driver", "overlay", "--runtime"])
            .arg(rt.binary())
            .args(args);
        run_to_files(c, rt.dir.path())
    };
    // `podman ARGS` on a terminal of its own (script(1) makes the pty), fed `input`.
    let podman_on_terminal = |args: &[&str], input: &str| {
        let quote = |a: &str| format!("'{}'", a.replace('\'', r"'\''"));
        let mut line = vec!["podman".to_string()];
        for (flag, sub) in [
            ("--root", "root"),
            ("--runroot", "run"),
            ("--tmpdir", "tmp"),
        ] {
            line.push(flag.to_string());
            line.push(quote(dir.join(sub).to_str().unwrap()));
        }
        line.extend(
            [
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
                "--storage-driver",
                "overlay",
                "--runtime",
            ]
            .map(String::from),
        );
        line.push(quote(rt.binary().to_str().unwrap()));
        line.extend(args.iter().map(|a| quote(a)));
        let mut c = Command::new("script");
        c.args(["-qec", &line.join(" "), "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("script(1)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let loaded = podman(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(loaded.code(), 0, "load: {}", loaded.stderr);
    // Explicit limits within any host's: podman's own defaults raise them, which needs
    // CAP_SYS_RESOURCE (runc fails the same way without it).
    let cidfile = dir.join("cid");
    let ran = podman(&[
        "run",
        "--cidfile",
        cidfile.to_str().unwrap(),
        "--rm",
        "--pull",
        "never",
        "--network",
        "none",
        "--cgroup-parent",
        &rt.cgroup_parent,
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "docker.io/library/busybox:latest",
        "sh",
        "-c",
        "echo hello from podman; exit 4",
    ]);
    assert_eq!(
        ran.code(),
        4,
        "podman run's status is the workload's: {}",
        ran.stderr
    );
    assert_eq!(ran.stdout, "hello from podman\n");
    let left = podman(&["ps", "-aq"]);
    assert_eq!(left.stdout, "", "podman run --rm removed the container");
    // podman's own `conmon` cgroup stays under the parent (with runc too); the
    // container's goes with `delete`, which podman's clean-up may run just after `run`.
    let container_cgroups = || {
        let mut left = rt.leftover_cgroups();
        left.retain(|d| !d.ends_with("conmon"));
        left
    };
    eventually("the container's cgroup removed", BOUND, || {
        container_cgroups().is_empty()
    });
    // podman's clean-up process calls the runtime without the caller's --runtime-flag, so
    // the record is under the runtime's default root.
    let id = std::fs::read_to_string(&cidfile).unwrap();
    let record = Path::new("/run/capsa-runc").join(id.trim());
    eventually("the runtime's record removed", BOUND, || !record.exists());

    // `run -it`: conmon hands capsa-runc a console socket; the workload's stdin and
    // stdout are the pty capsa-runc made, and the typed line reaches it.
    let (code, out) = podman_on_terminal(
        &[
            "run",
            "-it",
            "--rm",
            "--pull",
            "never",
            "--network",
            "none",
            "--cgroup-parent",
            &rt.cgroup_parent,
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "docker.io/library/busybox:latest",
            "sh",
            "-c",
            "read x; tty; test -t 0 && echo in-terminal:$x; exit 5",
        ],
        "typed\n",
    );
    assert_eq!(code, 5, "podman run -it's status is the workload's: {out}");
    assert!(out.contains("/dev/pts/0"), "{out}");
    assert!(out.contains("in-terminal:typed"), "{out}");

    // Detached, exec, logs, stop (the workload's own exit status), rm.
    let mut detached = vec!["run", "-d", "--name", "web", "--pull", "never"];
    detached.extend(["--network", "none", "--cgroup-parent", &rt.cgroup_parent]);
    detached.extend([
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ]);
    detached.extend([
        "docker.io/library/busybox:latest",
        "sh",
        "-c",
        WAITS_FOR_TERM,
    ]);
    let ran = podman(&detached);
    assert_eq!(ran.code(), 0, "podman run -d: {}", ran.stderr);
    let exec = podman(&["exec", "web", "sh", "-c", "echo in-exec; exit 2"]);
    assert_eq!(exec.code(), 2, "podman exec: {}", exec.stderr);
    assert_eq!(exec.stdout, "in-exec\n");
    let (code, out) = podman_on_terminal(
        &[
            "exec",
            "-it",
            "web",
            "sh",
            "-c",
            "read x; tty; test -t 1 && echo exec-terminal:$x; exit 6",
        ],
        "line\n",
    );
    assert_eq!(code, 6, "podman exec -it: {out}");
    assert!(out.contains("/dev/pts/"), "{out}");
    assert!(out.contains("exec-terminal:line"), "{out}");
    eventually("the workload's first line in the log", BOUND, || {
        podman(&["logs", "web"]).stdout.contains("started")
    });
    let stopped = podman(&["stop", "-t", "30", "web"]);
    assert_eq!(stopped.code(), 0, "podman stop: {}", stopped.stderr);
    let code = podman(&["inspect", "-f", "{{.State.ExitCode}}", "web"]);
    assert_eq!(code.stdout.trim(), "7", "the workload's own status");
    assert!(podman(&["logs", "web"]).stdout.contains("got-term"));
    assert_eq!(podman(&["rm", "web"]).code(), 0);
    eventually("the container's cgroup removed", BOUND, || {
        container_cgroups().is_empty()
    });

    let reset = podman(&["system", "reset", "-f"]);
    assert_eq!(reset.code(), 0, "podman system reset: {}", reset.stderr);
    for dir in parent_dirs(&rt.cgroup_parent) {
        let _ = std::fs::remove_dir(dir.join("conmon"));
    }
    rt.assert_clean();
}

#[test]
fn ctr_runs_a_container_in_a_vm_through_capsa_vm() {
    let env = TestEnv::new();
    let rt = Runtime::new();
    let vm_runtime = rt.dir.path().join("capsa-vm");
    std::os::unix::fs::symlink(capsa_bin(), &vm_runtime).unwrap();
    let ns = rt.cgroup_parent.trim_start_matches('/').to_string();
    let ctd = Containerd::start(&ns);
    let archive = saved_busybox(&env, ctd.dir.path());
    let image = "docker.io/library/busybox:latest";
    let imported = ctd.ctr(&["-n", &ns, "images", "import", archive.to_str().unwrap()]);
    assert_eq!(imported.code(), 0, "import: {}", imported.stderr);
    let runc_root = rt.dir.path().join("ctr-vm");
    let flags = [
        "--runc-binary",
        vm_runtime.to_str().unwrap(),
        "--runc-root",
        runc_root.to_str().unwrap(),
    ];
    // A container no sandbox claims is a pod of its own: one VM, its kernel the guest's,
    // no network device (ctr gave it a namespace with no interface), its status its own.
    let mut run = vec!["-n", &ns, "run", "--rm"];
    run.extend(flags);
    run.extend([
        image,
        "invm",
        "sh",
        "-c",
        "echo kernel=$(uname -r); ls /sys/class/net; exit 5",
    ]);
    let ran = ctd.ctr(&run);
    assert_eq!(
        ran.code(),
        5,
        "ctr run's status is the workload's: {}",
        ran.stderr
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(ran.stdout.starts_with("kernel="), "{}", ran.stdout);
    assert!(
        !ran.stdout.contains(&format!("kernel={}", host.trim())),
        "the guest's kernel: {}",
        ran.stdout
    );
    assert!(ran.stdout.contains("\nlo\n"), "{}", ran.stdout);
    assert!(
        !ran.stdout.contains("eth0"),
        "no network device: {}",
        ran.stdout
    );

    // Detached, exec, kill: the exec's status and the container's.
    let mut detached = vec!["-n", &ns, "run", "-d"];
    detached.extend(flags);
    detached.extend([image, "bg", "sh", "-c", WAITS_FOR_TERM]);
    let ran = ctd.ctr(&detached);
    assert_eq!(ran.code(), 0, "ctr run -d: {}", ran.stderr);
    let exec = ctd.ctr(&[
        "-n",
        &ns,
        "task",
        "exec",
        "--exec-id",
        "e1",
        "bg",
        "sh",
        "-c",
        "echo in; exit 3",
    ]);
    assert_eq!(
        (exec.code(), exec.stdout.as_str()),
        (3, "in\n"),
        "{}",
        exec.stderr
    );
    let killed = ctd.ctr(&["-n", &ns, "task", "kill", "-s", "TERM", "bg"]);
    assert_eq!(killed.code(), 0, "kill: {}", killed.stderr);
    eventually("bg stops", BOUND, || {
        ctd.ctr(&["-n", &ns, "task", "ls"])
            .stdout
            .contains("STOPPED")
    });
    assert_eq!(ctd.ctr(&["-n", &ns, "task", "rm", "bg"]).code(), 0);
    assert_eq!(ctd.ctr(&["-n", &ns, "containers", "rm", "bg"]).code(), 0);
    let records = std::fs::read_dir(runc_root.join(&ns))
        .map(|d| {
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(records, 0, "no record left");
    let engines = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).contains(&*runc_root.to_string_lossy()))
        .count();
    assert_eq!(engines, 0, "no keeper or engine left");
    rt.assert_clean();
}

#[test]
fn a_vm_pods_containers_stay_in_its_vm_and_two_roots_never_share_a_pod() {
    become_subreaper();
    let rt = Runtime::new();
    let vm_runtime = rt.dir.path().join("capsa-vm");
    std::os::unix::fs::symlink(capsa_bin(), &vm_runtime).unwrap();
    let vm = |root: &str, args: &[&str]| {
        let mut c = Command::new(&vm_runtime);
        c.arg("--root")
            .arg(rt.dir.path().join(root))
            .args(args)
            .env("CAPSA_VM_STATE", rt.dir.path().join("vm-state"));
        run_to_files(c, rt.dir.path())
    };
    let annotate = |bundle: &Path, kind: &str, extra: Option<(&str, &str)>| {
        rt.edit_config(bundle, |c| {
            let mut a = serde_json::json!({
                "io.kubernetes.cri.container-type": kind,
                "io.kubernetes.cri.sandbox-id": "s1",
            });
            if let Some((k, v)) = extra {
                a[k] = v.into();
            }
            c["annotations"] = a;
            c["root"]["readonly"] = false.into();
        });
    };
    // Two callers (two roots) each run a pod named s1: each its own VM.
    let mut keepers = Vec::new();
    for (root, word) in [("root-a", "pod-a"), ("root-b", "pod-b")] {
        let bundle = rt.bundle(
            root,
            &["sh", "-c", &format!("echo {word} > /mark; sleep 600")],
        );
        annotate(&bundle, "sandbox", None);
        let pid_file = rt.dir.path().join(format!("{root}.pid"));
        let made = vm(
            root,
            &[
                "create",
                "--bundle",
                bundle.to_str().unwrap(),
                "--pid-file",
                pid_file.to_str().unwrap(),
                "s1",
            ],
        );
        assert_eq!(made.code(), 0, "create in {root}: {}", made.stderr);
        assert_eq!(vm(root, &["start", "s1"]).code(), 0);
        keepers.push(
            std::fs::read_to_string(&pid_file)
                .unwrap()
                .trim()
                .parse::<i32>()
                .unwrap(),
        );
    }
    // The pods' disks (their containers' roots, their volumes' copies) are root's alone.
    let pods = std::fs::metadata(rt.dir.path().join("vm-state/pods")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&pods.permissions()) & 0o777,
        0o700
    );
    for (root, word) in [("root-a", "pod-a"), ("root-b", "pod-b")] {
        let mut seen = String::new();
        eventually("the sandbox's mark", BOUND, || {
            seen = vm(root, &["exec", "s1", "cat", "/mark"]).stdout;
            seen == format!("{word}\n")
        });
        assert_eq!(seen, format!("{word}\n"), "{root}'s own VM");
    }
    // A container of root A's pod asking for host namespaces: refused, nothing made.
    let member = rt.bundle("member", &["true"]);
    annotate(
        &member,
        "container",
        Some(("io.capsa.isolation", "container")),
    );
    let refused = vm(
        "root-a",
        &["create", "--bundle", member.to_str().unwrap(), "m1"],
    );
    assert_eq!(refused.code(), 1);
    assert!(
        refused.stderr.contains("io.capsa.isolation"),
        "{}",
        refused.stderr
    );
    assert!(!rt.dir.path().join("root-a/m1").exists(), "nothing created");
    // A member removed leaves nothing in the guest: its ID can be used again.
    let member = rt.bundle("member2", &["sh", "-c", "echo once"]);
    annotate(&member, "container", None);
    for round in 0..2 {
        let pid_file = rt.dir.path().join(format!("m2-{round}.pid"));
        let made = vm(
            "root-a",
            &[
                "create",
                "--bundle",
                member.to_str().unwrap(),
                "--pid-file",
                pid_file.to_str().unwrap(),
                "m2",
            ],
        );
        assert_eq!(made.code(), 0, "create m2 (round {round}): {}", made.stderr);
        assert_eq!(vm("root-a", &["start", "m2"]).code(), 0);
        let follower: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(reap(follower), 0, "m2's own status");
        assert_eq!(vm("root-a", &["delete", "m2"]).code(), 0);
    }
    for (root, keeper) in ["root-a", "root-b"].iter().zip(&keepers) {
        assert_eq!(vm(root, &["kill", "s1", "KILL"]).code(), 0);
        reap(*keeper);
        assert_eq!(vm(root, &["delete", "s1"]).code(), 0);
    }
    rt.assert_clean();
}
