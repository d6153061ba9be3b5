//! Hostile images: a symlink where capsa mounts, makes device nodes or writes files (/dev,
//! /dev/pts, /dev/shm, /dev/console, /proc, /sys, /etc, /tmp), absolute or relative, aimed
//! at a host directory of sentinel files. Whatever the run does (plain, -t, -v, --tmpfs, -w,
//! cp both ways, start of a stopped container, --userns=auto), the host directory stays
//! byte for byte as it was, and each run either works with the path resolved inside the
//! container's root or fails with one line naming the path.

use capsa_tests::{busybox_tarball, text, TestEnv};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

/// A host directory holding files named as what capsa makes in /dev and /etc.
struct Sentinels {
    dir: tempfile::TempDir,
}

/// What a snapshot keeps of each entry: mode (type and permissions), owner, and the bytes
/// (a file's contents, a symlink's target).
type Snapshot = BTreeMap<PathBuf, (u32, u32, Vec<u8>)>;

impl Sentinels {
    fn new() -> Sentinels {
        // Not under /tmp: an image's `tmp -> /tmp/...` would then loop on itself.
        let dir = tempfile::Builder::new()
            .prefix("capsa-hostile-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let p = dir.path();
        // World-writable with the sticky bit, as /tmp is: an unprivileged (user-namespaced)
        // init could create files here too.
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o1777)).unwrap();
        for (name, mode) in [
            ("null", 0o600),
            ("zero", 0o644),
            ("console", 0o600),
            ("ptmx", 0o640),
            ("hosts", 0o644),
            ("hostname", 0o644),
            ("resolv.conf", 0o644),
            ("passwd", 0o600),
            ("pts/0", 0o620),
            ("shm/keep", 0o600),
            ("mqueue/keep", 0o600),
        ] {
            let path = p.join(name);
            let parent = path.parent().unwrap();
            std::fs::create_dir_all(parent).unwrap();
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o1777)).unwrap();
            std::fs::write(&path, format!("host sentinel {name}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        std::os::unix::fs::symlink("null", p.join("stdout")).unwrap();
        Sentinels { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn snapshot(&self) -> Snapshot {
        fn walk(dir: &Path, base: &Path, out: &mut Snapshot) {
            let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let path = e.path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                let bytes = if meta.file_type().is_symlink() {
                    std::fs::read_link(&path)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes()
                } else if meta.is_file() {
                    std::fs::read(&path).unwrap()
                } else {
                    Vec::new()
                };
                let rel = path.strip_prefix(base).unwrap().to_path_buf();
                out.insert(rel, (meta.mode(), meta.uid(), bytes));
                if meta.is_dir() {
                    walk(&path, base, out);
                }
            }
        }
        let mut out = Snapshot::new();
        walk(self.path(), self.path(), &mut out);
        out
    }

    /// The link target that leads to this directory: absolute, or relative with enough
    /// `..` to climb above any root.
    fn target(&self, relative: bool) -> String {
        let abs = self.path().display().to_string();
        if relative {
            format!("../../../../../../../..{abs}")
        } else {
            abs
        }
    }
}

/// Imports an image made of busybox with each `(path, target)` of `links` (paths without
/// the leading /) replaced by a symlink to `target`; `dirs` are added as directories.
fn hostile_image(env: &TestEnv, name: &str, links: &[(&str, &str)], dirs: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(format!("{name}.tar"));
    let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let mut base = tar::Archive::new(std::fs::File::open(busybox_tarball()).unwrap());
    for entry in base.entries().unwrap() {
        let mut entry = entry.unwrap();
        let entry_path = entry.path().unwrap().into_owned();
        if links.iter().any(|(l, _)| entry_path.starts_with(l)) {
            continue;
        }
        let mut header = entry.header().clone();
        b.append_data(&mut header, entry_path, &mut entry).unwrap();
    }
    let header = |kind: tar::EntryType, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    };
    let parents = links
        .iter()
        .filter_map(|(l, _)| Path::new(l).parent())
        .filter(|p| !p.as_os_str().is_empty());
    for dir in parents.chain(dirs.iter().map(Path::new)) {
        let mut h = header(tar::EntryType::Directory, 0o755);
        b.append_data(&mut h, dir, std::io::empty()).unwrap();
    }
    for (link, target) in links {
        let mut h = header(tar::EntryType::Symlink, 0o777);
        b.append_link(&mut h, link, target).unwrap();
    }
    b.finish().unwrap();
    drop(b);
    let out = env.capsa(&[
        "import",
        "-c",
        r#"CMD ["sh"]"#,
        "-c",
        "ENV PATH=/bin",
        path.to_str().unwrap(),
        name,
    ]);
    assert!(out.status.success(), "import: {}", text(&out.stderr));
}

/// Writes through every path the image may have aimed at the host, then says ok.
const WRITE_EVERYWHERE: &str = "echo x > /dev/null && echo x > /dev/zero; \
     for p in /dev /dev/pts /dev/shm /dev/mqueue /etc /tmp; do echo w > $p/written 2>/dev/null; done; \
     echo ok";

/// Builds image `name` with `link -> target`, runs WRITE_EVERYWHERE in it (with `flags`),
/// and checks the host's sentinels are as they were.
fn run_writing_everywhere(
    env: &TestEnv,
    host: &Sentinels,
    before: &Snapshot,
    name: &str,
    (link, target): (&str, &str),
    flags: &[&str],
) -> Output {
    hostile_image(env, name, &[(link, target)], &[]);
    let mut args = vec!["--rm"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--network", "none", name, "sh", "-c", WRITE_EVERYWHERE]);
    let out = env.run(&args);
    assert_eq!(
        &host.snapshot(),
        before,
        "{link} -> {target} ({flags:?}) changed the host"
    );
    out
}

fn assert_works(out: &Output, what: &str) {
    assert!(
        out.status.success() && text(&out.stdout).contains("ok"),
        "{what}: expected to work inside the root ({:?}): {} {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The run failed with exit 125 and one line of error naming `path`.
fn assert_refused(out: &Output, path: &str, what: &str) {
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(out.status.code(), Some(125), "{what}: {err}");
    assert_eq!(lines.len(), 1, "{what}: one line expected: {err}");
    assert!(lines[0].contains(path), "{what}: {path} not named: {err}");
}

#[test]
fn symlinked_dev_etc_and_tmp_resolve_inside_the_root() {
    let env = TestEnv::new();
    let host = Sentinels::new();
    let before = host.snapshot();
    for link in ["dev", "dev/pts", "dev/shm", "dev/mqueue", "etc", "tmp"] {
        for relative in [false, true] {
            let target = host.target(relative);
            let what = format!("{link} -> {target}");
            let name = format!("h-{}-{relative}", link.replace('/', "-"));
            let out = run_writing_everywhere(&env, &host, &before, &name, (link, &target), &[]);
            assert_works(&out, &what);
        }
    }
    env.assert_clean();
}

#[test]
fn proc_and_sys_must_be_real_directories_and_magic_links_are_refused() {
    let env = TestEnv::new();
    let host = Sentinels::new();
    let before = host.snapshot();
    let mut cases = vec![];
    for link in ["proc", "sys"] {
        for relative in [false, true] {
            cases.push((link, host.target(relative)));
        }
    }
    // Through procfs's magic links, once /proc is mounted: the init's own root is the host's.
    let via_proc = format!("/proc/1/root{}", host.path().display());
    cases.push(("dev", via_proc.clone()));
    cases.push(("etc", format!("/proc/self/cwd{}", host.path().display())));
    for (i, (link, target)) in cases.iter().enumerate() {
        let what = format!("{link} -> {target}");
        let name = format!("p-{i}");
        let out = run_writing_everywhere(&env, &host, &before, &name, (link, target), &[]);
        assert_refused(&out, &format!("/{link}"), &what);
    }
    env.assert_clean();
}

#[test]
fn the_console_of_a_terminal_run_lands_inside() {
    let env = TestEnv::new();
    let host = Sentinels::new();
    let before = host.snapshot();
    for (link, relative) in [("dev", false), ("dev", true), ("dev/console", false)] {
        let what = format!("-t with {link} -> {}", host.target(relative));
        let name = format!("t-{}-{relative}", link.replace('/', "-"));
        hostile_image(&env, &name, &[(link, &host.target(relative))], &[]);
        let out = env.run(&[
            "--rm",
            "-t",
            "--network",
            "none",
            &name,
            "sh",
            "-c",
            "test -c /dev/console && echo x > /dev/console && exit 7",
        ]);
        // The exit code says it worked (what the pty relays is the terminal tests' concern).
        assert_eq!(host.snapshot(), before, "{what} changed the host");
        assert_eq!(out.status.code(), Some(7), "{what}: {}", text(&out.stderr));
    }
    env.assert_clean();
}

#[test]
fn volumes_tmpfs_and_workdir_through_symlinks_stay_inside() {
    let env = TestEnv::new();
    let host = Sentinels::new();
    let before = host.snapshot();
    let volume = tempfile::tempdir().unwrap();
    let vol = format!("{}:/tmp/vol", volume.path().display());
    for relative in [false, true] {
        let what = format!("tmp and dev -> {}(/pts)", host.target(relative));
        let name = format!("v-{relative}");
        let target = host.target(relative);
        let dev = format!("{target}/pts");
        hostile_image(&env, &name, &[("tmp", &target), ("dev", &dev)], &[]);
        let out = env.run(&[
            "--rm",
            "--network",
            "none",
            "-v",
            &vol,
            "--tmpfs",
            "/tmp/scratch",
            "-w",
            "/tmp/work",
            &name,
            "sh",
            "-c",
            "pwd; echo data > /tmp/vol/through && touch /tmp/scratch/x && echo ok",
        ]);
        assert_eq!(host.snapshot(), before, "{what} changed the host");
        assert_works(&out, &what);
        // The working directory, as getcwd sees it inside: where /tmp leads, in the root.
        let cwd = text(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        assert_eq!(cwd, format!("{}/work", host.path().display()), "{what}");
        assert_eq!(
            std::fs::read_to_string(volume.path().join("through")).unwrap(),
            "data\n",
            "{what}: the volume is mounted where the image's /tmp leads, inside"
        );
    }
    env.assert_clean();
}

#[test]
fn cp_and_restart_of_a_stopped_container_stay_inside() {
    let env = TestEnv::new();
    let host = Sentinels::new();
    let before = host.snapshot();
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("hosts");
    std::fs::write(&input, "copied in\n").unwrap();
    // The link's target also exists inside the image: cp resolves it there.
    let target = host.target(false);
    let inside = target.trim_start_matches('/');
    hostile_image(
        &env,
        "c-img",
        &[("tmp", &target), ("dev", &format!("{target}/pts"))],
        &[inside],
    );
    let out = env.create(&[
        "--name",
        "cc",
        "--network",
        "none",
        "c-img",
        "sh",
        "-c",
        "cat /tmp/hosts > /tmp/null; echo ok",
    ]);
    assert_eq!(host.snapshot(), before, "create changed the host");
    assert!(out.status.success(), "create: {}", text(&out.stderr));
    // Into and out of the stopped container, then started twice (prepared again each time).
    let into = env.capsa(&["cp", input.to_str().unwrap(), "cc:/tmp/hosts"]);
    assert!(into.status.success(), "cp in: {}", text(&into.stderr));
    for _ in 0..2 {
        let start = env.capsa(&["start", "-a", "cc"]);
        assert_eq!(host.snapshot(), before, "start changed the host");
        assert_works(&start, "start -a of the stopped container");
    }
    let out_dir = work.path().join("out");
    let out = env.capsa(&["cp", "cc:/tmp/null", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "cp out: {}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&out_dir).unwrap(), "copied in\n");
    assert!(env.capsa(&["rm", "cc"]).status.success());
    // And with the container running.
    let out = env.run(&[
        "-d",
        "--name",
        "rr",
        "--network",
        "none",
        "c-img",
        "sleep",
        "60",
    ]);
    assert!(out.status.success(), "run -d: {}", text(&out.stderr));
    let into = env.capsa(&["cp", input.to_str().unwrap(), "rr:/tmp/console"]);
    assert!(into.status.success(), "cp in: {}", text(&into.stderr));
    let back = work.path().join("back");
    let out = env.capsa(&["cp", "rr:/tmp/console", back.to_str().unwrap()]);
    assert!(out.status.success(), "cp out: {}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "copied in\n");
    assert!(env.capsa(&["rm", "-f", "rr"]).status.success());
    assert_eq!(host.snapshot(), before, "cp changed the host");
    env.assert_clean();
}

#[test]
fn user_namespaced_runs_stay_inside() {
    let env = TestEnv::new();
    let host = Sentinels::new();
    let before = host.snapshot();
    // Into pts/, where nothing named as a device exists yet: an unprivileged init that
    // reached it could create files there.
    let cases = [
        ("dev", format!("{}/pts", host.target(false))),
        ("dev", format!("{}/pts", host.target(true))),
        ("etc", host.target(false)),
        ("tmp", host.target(true)),
    ];
    for (i, (link, target)) in cases.iter().enumerate() {
        let what = format!("--userns=auto with {link} -> {target}");
        let name = format!("u-{i}");
        let flags = ["--userns=auto"];
        let out = run_writing_everywhere(&env, &host, &before, &name, (link, target), &flags);
        assert_works(&out, &what);
    }
    env.assert_clean();
}
