//! Hostile inputs that try to exhaust capsa's memory: tar header bombs (a GNU long name
//! announcing hundreds of MiB, in a few KB of zstd) given to `import`, `load` and `cp`, and
//! registry answers that never end (a token answer, a catalog page). Each is refused with
//! one line naming the cause, and the peak resident memory of the capsa process tree, read
//! by GNU time, stays far below what the input announces: a structural bound,
//! not a timing. capsa runs with a 2 GiB address-space limit so that a lost bound fails the
//! test instead of the machine.

use capsa_tests::registry::HostileServer;
use capsa_tests::{text, TestEnv};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a bomb announces.
const BOMB: u64 = 384 << 20;
/// The most resident memory capsa may reach on any of these inputs (it needs about 20 MiB).
const RSS_BOUND_KIB: i64 = 64 * 1024;
/// capsa's address space in these tests.
const AS_LIMIT: u64 = 2 << 30;
/// How long one command may take before it is killed.
const DEADLINE: Duration = Duration::from_secs(120);

/// How a command ended and the most memory it held.
struct Measured {
    code: Option<i32>,
    stderr: String,
    max_rss_kib: i64,
}

/// `cmd` run by GNU time, which writes the peak RSS of the command's process tree to
/// `rss_file`. Measured from a fork of GNU time, not of this test process: a child's
/// `ru_maxrss` keeps the high-water mark of the memory it was forked with, and a fork of a
/// test binary running other tests holds theirs.
fn under_gnu_time(cmd: &Command, rss_file: &std::path::Path) -> Command {
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-f").arg("%M").arg("-o").arg(rss_file);
    timed.arg(cmd.get_program()).args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => timed.env(key, v),
            None => timed.env_remove(key),
        };
    }
    timed
}

/// Runs `cmd` (with `feed` writing its standard input, if given) under [`AS_LIMIT`] and
/// returns its exit code, standard error and peak RSS (its own and its reaped children's).
fn measured(cmd: Command, feed: Option<fn(ChildStdin)>) -> Measured {
    let rss_dir = tempfile::tempdir().unwrap();
    let rss_file = rss_dir.path().join("max-rss-kib");
    let mut cmd = under_gnu_time(&cmd, &rss_file);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    cmd.stdin(if feed.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    // SAFETY: only setrlimit and setpgid, async-signal-safe, in the child between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: AS_LIMIT,
                rlim_max: AS_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // A group of its own, so the deadline kills GNU time and capsa together.
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Reaped by wait4 below, which also gives its resource usage.
    #[allow(clippy::zombie_processes)]
    let mut child = cmd.spawn().expect("spawn capsa");
    let pid = child.id() as libc::pid_t;
    let feeder = match (feed, child.stdin.take()) {
        (Some(f), Some(stdin)) => Some(std::thread::spawn(move || f(stdin))),
        _ => None,
    };
    let mut err = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let watchdog = std::thread::spawn(move || {
        let start = Instant::now();
        while !flag.load(Ordering::Relaxed) {
            if start.elapsed() > DEADLINE {
                // SAFETY: kill(2) on our own child's process group; the child is not
                // reaped yet (waitpid below reaps it), so its group ID is still ours.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                return;
            }
            std::thread::park_timeout(Duration::from_millis(50));
        }
    });
    let mut status = 0;
    // SAFETY: waitpid on our own child's PID; std's Child never waits for it.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid, "waitpid: {}", std::io::Error::last_os_error());
    done.store(true, Ordering::Relaxed);
    watchdog.thread().unpark();
    let _ = watchdog.join();
    if let Some(f) = feeder {
        let _ = f.join();
    }
    // GNU time exits with the command's status, and says so when a signal ended it.
    let report = std::fs::read_to_string(&rss_file).unwrap_or_default();
    let signalled = report.contains("terminated by signal");
    let max_rss_kib = report
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("GNU time's report: {report:?}"));
    Measured {
        code: (libc::WIFEXITED(status) && !signalled).then(|| libc::WEXITSTATUS(status)),
        stderr: reader.join().unwrap_or_default(),
        max_rss_kib,
    }
}

/// Asserts `m` is a refusal on one line holding `needle`, in bounded memory.
fn refused_in_bounded_memory(what: &str, m: &Measured, needle: &str) {
    assert!(
        m.max_rss_kib < RSS_BOUND_KIB,
        "{what}: capsa's peak RSS was {} KiB (exit {:?}: {})",
        m.max_rss_kib,
        m.code,
        m.stderr
    );
    assert_eq!(m.code, Some(1), "{what}: {}", m.stderr);
    assert_eq!(
        m.stderr.trim_end().lines().count(),
        1,
        "{what}: {}",
        m.stderr
    );
    assert!(m.stderr.contains(needle), "{what}: {}", m.stderr);
}

/// The header of a GNU long name of [`BOMB`] bytes.
fn long_name_header() -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::GNULongName);
    h.set_size(BOMB);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    h.set_cksum();
    h
}

/// The bomb as a zstd stream of a few KB: the header, then [`BOMB`] bytes of name, made of
/// one compressed MiB repeated (zstd frames concatenate).
fn zstd_bomb() -> Vec<u8> {
    let mut out = zstd::encode_all(&long_name_header().as_bytes()[..], 3).unwrap();
    let mib = zstd::encode_all(&vec![b'A'; 1 << 20][..], 19).unwrap();
    for _ in 0..BOMB >> 20 {
        out.extend_from_slice(&mib);
    }
    out.extend(zstd::encode_all(&[0u8; 1024][..], 3).unwrap());
    out
}

/// The same bomb uncompressed, written to a pipe until the reader stops.
fn feed_plain_bomb(mut stdin: ChildStdin) {
    if stdin.write_all(long_name_header().as_bytes()).is_err() {
        return;
    }
    let mib = vec![b'A'; 1 << 20];
    for _ in 0..BOMB >> 20 {
        if stdin.write_all(&mib).is_err() {
            return;
        }
    }
}

const LONG_NAME_REFUSED: &str =
    "tar header at byte 0: a GNU long name of 402653184 bytes, more than the 65536 allowed";

/// rt2 #6: a compressed tar header bomb given to `import` (a layer) and to `load` (an
/// archive) is refused before anything buffers the long name; nothing is stored.
#[test]
fn import_and_load_refuse_a_tar_header_bomb_in_bounded_memory() {
    let env = TestEnv::new();
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.tar.zst");
    std::fs::write(&bomb, zstd_bomb()).unwrap();
    let path = bomb.to_str().unwrap();
    for args in [vec!["import", path, "bomb"], vec!["load", "-i", path]] {
        let m = measured(env.command(&args), None);
        refused_in_bounded_memory(args[0], &m, LONG_NAME_REFUSED);
        assert!(m.stderr.contains(path), "{}", m.stderr);
    }
    let images = text(&env.capsa(&["images"]).stdout);
    assert!(!images.contains("bomb"), "{images}");
    let staging: Vec<_> = std::fs::read_dir(env.root().join("tmp")).unwrap().collect();
    assert!(staging.is_empty(), "staging left: {staging:?}");
}

/// rt2 #6: `cp - CTR:DIR` reads a tar stream from its input through the same bound.
#[test]
fn cp_refuses_a_tar_header_bomb_in_bounded_memory() {
    let env = TestEnv::new();
    let out = env.create(&["--name", "target", "--network", "none", "busybox", "true"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m = measured(
        env.command(&["cp", "-", "target:/tmp"]),
        Some(feed_plain_bomb),
    );
    refused_in_bounded_memory("cp", &m, LONG_NAME_REFUSED);
    let out = env.capsa(&["rm", "-f", "target"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// rt2 #7: a token answer that never ends (pull) and a catalog page that never ends
/// (search) are read only up to a bound, then refused.
#[test]
fn endless_registry_answers_are_refused_in_bounded_memory() {
    let env = TestEnv::new();
    let realm = HostileServer::start(&env, "127.0.0.1", "endless-token", "");
    let token_url = format!("http://{}/token", realm.host());
    let registry = HostileServer::start(&env, "127.0.0.1", "bearer", &token_url);
    let m = measured(
        env.command(&["pull", &format!("{}/app", registry.host())]),
        None,
    );
    refused_in_bounded_memory(
        "pull",
        &m,
        &format!("token from {token_url}: the answer is larger than 1048576 bytes"),
    );
    let catalog = HostileServer::start(&env, "127.0.0.1", "endless-catalog", "");
    let m = measured(
        env.command(&["search", &format!("{}/app", catalog.host())]),
        None,
    );
    refused_in_bounded_memory(
        "search",
        &m,
        &format!(
            "catalog of {}: the answer is larger than 4194304 bytes",
            catalog.host()
        ),
    );
}
