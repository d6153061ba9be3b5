//! Helpers for capsa's end-to-end tests: each test gets its own state directory and cgroup
//! parent, drives the built `capsa` binary as a user would, and checks what is left behind.
//!
//! The busybox test image is generated here from Debian's busybox-static (installed by
//! `scripts/setup.sh`), never committed.

pub mod api;
pub mod registry;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where Debian's busybox-static puts the binary.
pub const BUSYBOX: &str = "/bin/busybox";
/// Where cgroup v1 hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The `capsa` binary built next to this test binary (target/<profile>/capsa).
pub fn capsa_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CAPSA_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let bin = profile_dir.join("capsa");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build` first",
        bin.display()
    );
    bin
}

/// A rootfs tarball of busybox-static with /etc/passwd (root, app=1000, nobody), built once.
pub fn busybox_tarball() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("capsa-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("busybox.tar");
        let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
        // Every header gets owner root and a real mtime, as tar(1) writes them.
        fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(size);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            h
        }
        let dir_entry = |b: &mut tar::Builder<std::fs::File>, name: &str, mode: u32| {
            let mut h = header(tar::EntryType::Directory, mode, 0);
            b.append_data(&mut h, name, std::io::empty()).unwrap();
        };
        for (d, mode) in [("bin", 0o755), ("etc", 0o755), ("root", 0o700), ("tmp", 0o1777), ("mnt", 0o755), ("home/app", 0o755)] {
            dir_entry(&mut b, d, mode);
        }
        b.append_path_with_name(BUSYBOX, "bin/busybox").unwrap();
        let list = Command::new(BUSYBOX).arg("--list").output().expect("busybox-static installed");
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet == "busybox" {
                continue;
            }
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            b.append_link(&mut h, format!("bin/{applet}"), "busybox").unwrap();
        }
        let file = |b: &mut tar::Builder<std::fs::File>, name: &str, text: &str| {
            let mut h = header(tar::EntryType::Regular, 0o644, text.len() as u64);
            b.append_data(&mut h, name, text.as_bytes()).unwrap();
        };
        file(&mut b, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n");
        file(&mut b, "etc/group", "root:x:0:\napp:x:1000:\nwheel:x:10:app\nnogroup:x:65534:\n");
        b.finish().unwrap();
        path
    })
}

/// One test's private capsa: state directory, cgroup parent, and the busybox image.
pub struct TestEnv {
    root: tempfile::TempDir,
    cgroup_parent: String,
    netns: String,
    /// Whether this environment made its network namespace (and deletes it).
    owns_netns: bool,
}

impl TestEnv {
    /// A fresh environment with `busybox` imported (CMD sh, PATH set).
    pub fn new() -> TestEnv {
        TestEnv::with_netns(None)
    }

    /// A second state root on `other`'s host: its own state directory and cgroup parent,
    /// in `other`'s network namespace (two roots on one machine). Drop it before `other`.
    pub fn sharing_netns_of(other: &TestEnv) -> TestEnv {
        TestEnv::with_netns(Some(other.netns.clone()))
    }

    fn with_netns(shared: Option<String>) -> TestEnv {
        let root = tempfile::Builder::new()
            .prefix("capsa-test-")
            .tempdir()
            .unwrap();
        let tag = root
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace('.', "");
        let owns_netns = shared.is_none();
        let netns = shared.unwrap_or_else(|| tag.clone());
        if owns_netns {
            make_netns(&netns);
        }
        let env = TestEnv {
            root,
            cgroup_parent: format!("/{tag}"),
            netns,
            owns_netns,
        };
        let tar = busybox_tarball().to_str().unwrap().to_string();
        let out = env.capsa(&[
            "import",
            "-c",
            r#"CMD ["sh"]"#,
            "-c",
            "ENV PATH=/bin",
            &tar,
            "busybox",
        ]);
        assert!(out.status.success(), "import failed: {}", text(&out.stderr));
        env
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The cgroup parent every container of this test goes under.
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// A `capsa` command with this environment's root, in its network namespace.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = self.host_command("nsenter");
        c.arg(capsa_bin())
            .arg("--root")
            .arg(self.root.path())
            .args(args);
        c
    }

    /// `program` run in this environment's network namespace (the "host" its containers
    /// see): `nsenter --net=... program`.
    pub fn host_command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.netns));
        if program != "nsenter" {
            c.arg(program);
        }
        c.stdin(Stdio::null());
        c
    }

    /// The shell words that run capsa here (for commands given to tmux or sh).
    pub fn shell_prefix(&self) -> String {
        format!(
            "nsenter --net=/run/netns/{} {} --root {}",
            self.netns,
            capsa_bin().display(),
            self.root.path().display()
        )
    }

    /// The network namespace standing for this test's host.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Network interfaces other than lo and the bridge in this test's host namespace
    /// (veths left behind).
    pub fn leftover_veths(&self) -> Vec<String> {
        let out = self
            .host_command("ip")
            .args(["-o", "link", "show"])
            .output()
            .unwrap();
        text(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n != "lo" && n != "capsa0")
            .collect()
    }

    /// Published-port elements left in capsa's nftables maps (its sets of bridges do not
    /// count: a bridge stays for the next container).
    pub fn leftover_nft_elements(&self) -> Vec<String> {
        let out = self
            .host_command("nft")
            .args(["list", "table", "ip", "capsa"])
            .output()
            .unwrap();
        let mut in_map = false;
        let mut left = Vec::new();
        for line in text(&out.stdout).lines() {
            let line = line.trim();
            if line.starts_with("map ") {
                in_map = true;
            } else if line.starts_with("set ") || line.starts_with("chain ") {
                in_map = false;
            } else if in_map && line.contains("elements") {
                left.push(line.to_string());
            }
        }
        left
    }

    /// Runs `capsa ARGS` to completion (bounded: a hung command fails its test rather than
    /// the suite; the bound leaves room for a VM booting under TCG on a loaded machine).
    pub fn capsa(&self, args: &[&str]) -> Output {
        run_bounded(self.command(args), COMMAND_BOUND)
    }

    /// Runs `capsa ARGS` with extra environment variables.
    pub fn capsa_env(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(args);
        cmd.envs(vars.iter().copied());
        run_bounded(cmd, COMMAND_BOUND)
    }

    /// Runs `capsa ARGS` with `input` on its standard input.
    pub fn capsa_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn capsa");
        let written = child.stdin.take().expect("piped stdin").write_all(input);
        // A command may stop reading input it does not need (what follows a tar's end).
        if let Err(e) = written {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
        }
        child.wait_with_output().expect("wait for capsa")
    }

    /// `capsa run --cgroup-parent P ARGS`.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["run", "--cgroup-parent", &self.cgroup_parent];
        all.extend_from_slice(args);
        self.capsa(&all)
    }

    /// `capsa create --cgroup-parent P ARGS`.
    pub fn create(&self, args: &[&str]) -> Output {
        let mut all = vec!["create", "--cgroup-parent", &self.cgroup_parent];
        all.extend_from_slice(args);
        self.capsa(&all)
    }

    /// `capsa run --rm ... busybox sh -c SCRIPT`, returning stdout; panics on failure.
    pub fn sh(&self, flags: &[&str], script: &str) -> String {
        let mut args: Vec<&str> = vec!["--rm"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["busybox", "sh", "-c", script]);
        let out = self.run(&args);
        assert!(
            out.status.success(),
            "script {script:?} failed ({:?}): {}",
            out.status.code(),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// `inspect -f TEMPLATE NAME`, trimmed.
    pub fn inspect(&self, name: &str, template: &str) -> String {
        let out = self.capsa(&["inspect", "-f", template, name]);
        assert!(
            out.status.success(),
            "inspect {name}: {}",
            text(&out.stderr)
        );
        text(&out.stdout).trim().to_string()
    }

    /// The `ps -a` line of container `name` (empty when absent).
    pub fn ps_line(&self, name: &str) -> String {
        text(&self.capsa(&["ps", "-a"]).stdout)
            .lines()
            .find(|l| l.ends_with(name))
            .unwrap_or_default()
            .to_string()
    }

    /// The container folders in the store.
    pub fn container_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.root.path().join("containers"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// Cgroup directories left under this test's parent, in every v1 hierarchy (or v2).
    pub fn leftover_cgroups(&self) -> Vec<PathBuf> {
        cgroup_parent_dirs(&self.cgroup_parent)
            .into_iter()
            .flat_map(|d| {
                std::fs::read_dir(&d)
                    .map(|r| {
                        r.flatten()
                            .filter(|e| e.path().is_dir())
                            .map(|e| e.path())
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Mounts anywhere on the host that mention this test's state directory.
    pub fn leftover_mounts(&self) -> Vec<String> {
        let root = self.root.path().to_string_lossy().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&root))
            .map(String::from)
            .collect()
    }

    /// Asserts that nothing of any container is left: folders, names, cgroups, mounts.
    pub fn assert_clean(&self) {
        assert!(
            self.container_dirs().is_empty(),
            "container folders left: {:?}",
            self.container_dirs()
        );
        let names: Vec<_> = std::fs::read_dir(self.root.path().join("names"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(names.is_empty(), "names left: {names:?}");
        assert!(
            self.leftover_cgroups().is_empty(),
            "cgroups left: {:?}",
            self.leftover_cgroups()
        );
        assert!(
            self.leftover_mounts().is_empty(),
            "mounts left: {:?}",
            self.leftover_mounts()
        );
        // The kernel removes a veth with its namespace, asynchronously, after the last
        // process in it has exited.
        let gone = (0..200).any(|_| {
            let left = self.leftover_veths().is_empty();
            if !left {
                std::thread::sleep(Duration::from_millis(25));
            }
            left
        });
        assert!(gone, "veths left: {:?}", self.leftover_veths());
        assert!(
            self.leftover_nft_elements().is_empty(),
            "published ports left: {:?}",
            self.leftover_nft_elements()
        );
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let ids = self.capsa(&["ps", "-aq", "--no-trunc"]);
        for id in text(&ids.stdout).lines() {
            let _ = self.capsa(&["rm", "-f", id]);
        }
        for dir in cgroup_parent_dirs(&self.cgroup_parent) {
            let _ = std::fs::remove_dir(dir);
        }
        if self.owns_netns {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.netns])
                .output();
        }
    }
}

/// Creates network namespace `name` with loopback up: the test's stand-in for the host,
/// so no test changes the machine's own network or sends a packet off it.
fn make_netns(name: &str) {
    let out = Command::new("ip")
        .args(["netns", "add", name])
        .output()
        .expect("ip (iproute2)");
    assert!(
        out.status.success(),
        "ip netns add {name}: {}",
        text(&out.stderr)
    );
    let out = Command::new("ip")
        .args(["-n", name, "link", "set", "lo", "up"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lo up in {name}: {}",
        text(&out.stderr)
    );
}

/// The directories a cgroup parent path maps to on this host.
fn cgroup_parent_dirs(parent: &str) -> Vec<PathBuf> {
    let rel = parent.trim_start_matches('/');
    let unified = Path::new(CGROUP_ROOT).join("cgroup.controllers").exists();
    if unified {
        return vec![Path::new(CGROUP_ROOT).join(rel)];
    }
    std::fs::read_dir(CGROUP_ROOT)
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join(rel))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs a command with a deadline; kills it when the deadline passes.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn capsa");
    let pid = child.id() as i32;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    let watchdog = std::thread::spawn(move || {
        let start = Instant::now();
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            if start.elapsed() > limit {
                // SAFETY: kill(2) on the PID of our own child, which we have not reaped yet.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                return;
            }
            std::thread::park_timeout(Duration::from_millis(50));
        }
    });
    let out = child.wait_with_output().expect("wait for capsa");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    watchdog.thread().unpark();
    let _ = watchdog.join();
    out
}

/// `program args` as uid and gid 65534 (`nobody`) with no supplementary groups and no
/// capabilities, bounded to 20 s. setpriv keeps its capabilities until its own execve, so
/// the program is found by a shell that runs as nobody already.
pub fn as_nobody(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--",
        "/bin/sh",
        "-c",
        "exec \"$0\" \"$@\"",
    ]);
    c.arg(program).args(args);
    run_bounded(c, Duration::from_secs(20))
}

/// How long one capsa command may take before its test fails.
const COMMAND_BOUND: Duration = Duration::from_secs(120);

/// Waits (bounded) until `check` holds, re-checking every 20 ms.
pub fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of `read` once it stays the same over `quiet` (bounded by `limit`): output or
/// events already on their way when something stopped land first. A source that never
/// stops changing within `quiet` returns its last value when `limit` runs out, so the
/// caller's own assertion still sees it change.
pub fn settled<T: PartialEq>(quiet: Duration, limit: Duration, mut read: impl FnMut() -> T) -> T {
    let start = Instant::now();
    let mut last = read();
    while start.elapsed() < limit {
        std::thread::sleep(quiet);
        let now = read();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// Bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A private tmux server (its own socket) running one command in a window of a given
/// size: what a user at a terminal sees and types.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `command` (a shell line) in a `cols`x`rows` window. The line should keep the
    /// window open after capsa exits (e.g. `...; echo EXIT=$?; sleep 600`).
    pub fn start(command: &str, cols: u16, rows: u16) -> Tmux {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = Tmux {
            socket: format!("capsa-test-{}-{n}", std::process::id()),
        };
        let status = t
            .cmd(&[
                "new-session",
                "-d",
                "-s",
                "main",
                "-x",
                &cols.to_string(),
                "-y",
                &rows.to_string(),
                command,
            ])
            .status()
            .expect("tmux (installed by scripts/setup.sh)");
        assert!(status.success(), "tmux new-session failed");
        t
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-L").arg(&self.socket).args(args);
        c.stdout(Stdio::piped()).stderr(Stdio::null());
        c
    }

    /// Types keys (tmux key names: `Enter`, `C-c`, or literal text).
    pub fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "main"];
        args.extend_from_slice(keys);
        assert!(self.cmd(&args).status().unwrap().success());
    }

    /// Resizes the window.
    pub fn resize(&self, cols: u16, rows: u16) {
        let (c, r) = (cols.to_string(), rows.to_string());
        assert!(self
            .cmd(&["resize-window", "-t", "main", "-x", &c, "-y", &r])
            .status()
            .unwrap()
            .success());
    }

    /// The visible screen.
    pub fn screen(&self) -> String {
        text(
            &self
                .cmd(&["capture-pane", "-p", "-t", "main"])
                .output()
                .unwrap()
                .stdout,
        )
    }

    /// Waits (bounded) until the screen contains `needle`.
    pub fn wait_for(&self, needle: &str) {
        let start = Instant::now();
        while !self.screen().contains(needle) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "screen never showed {needle:?}:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]).status();
    }
}
