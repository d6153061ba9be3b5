//! Probes on file systems: mounting, writing /proc/sys and /sys, reading masked /proc files,
//! and reaching host files through /proc/*/root or inherited descriptors.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::Env;
use crate::findings::Finding;
use crate::sys::{self, describe};

/// The mount holding `path` (longest mount point that prefixes it): (mount point, options).
pub fn mount_of(path: &str) -> Option<(String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let point = f.get(4)?.to_string();
            let options = f.get(5)?.to_string();
            let inside = path == point
                || point == "/"
                || path.starts_with(&format!("{}/", point.trim_end_matches('/')));
            inside.then_some((point, options))
        })
        .max_by_key(|(p, _)| p.len())
}

fn read_only(path: &str) -> bool {
    mount_of(path)
        .map(|(_, o)| o.split(',').any(|x| x == "ro"))
        .unwrap_or(false)
}

/// Adds the mount's facts of `path` to a finding.
fn with_mount(f: Finding, path: &str) -> Finding {
    match mount_of(path) {
        Some((point, options)) => f
            .fact("mount_point", point)
            .fact("mount_options", options)
            .fact("mount_read_only", read_only(path)),
        None => f,
    }
}

/// mount(2) of a 4 KiB tmpfs on a fresh directory, unmounted at once.
pub fn mount(env: &Env) -> Finding {
    const NAME: &str = "mount";
    let dir = env
        .scratch
        .join(format!("capsa-escape-mnt-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return Finding::absent(
            NAME,
            e.raw_os_error(),
            format!("no mount point: {}: {e}", dir.display()),
        );
    }
    let target = sys::cstring(&dir);
    // SAFETY: valid NUL-terminated strings; a tmpfs on our own empty directory.
    let rc = unsafe {
        libc::mount(
            c"capsa-escape".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            c"size=4k".as_ptr().cast(),
        )
    };
    let f = if rc == 0 {
        // SAFETY: unmounts what this call just mounted.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        Finding::reached(NAME, "mounted a tmpfs (and unmounted it)")
    } else {
        let e = sys::errno();
        Finding::refused(NAME, e, format!("mount tmpfs: {}", describe(e)))
    };
    let _ = std::fs::remove_dir(&dir);
    f
}

/// A global (not namespaced) sysctl, written with the value it holds.
const SYSCTL: &str = "/proc/sys/vm/overcommit_memory";

pub fn proc_sys_write(_: &Env) -> Finding {
    const NAME: &str = "proc_sys_write";
    let value = match std::fs::read_to_string(SYSCTL) {
        Ok(v) => v,
        Err(e) => {
            return Finding::absent(NAME, e.raw_os_error(), format!("{SYSCTL}: {e}"));
        }
    };
    with_mount(write_back(NAME, SYSCTL, value.trim()), SYSCTL)
}

/// Opens `path` for writing and writes `value` (what it already holds).
fn write_back(name: &str, path: &str, value: &str) -> Finding {
    let mut file = match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) => {
            let errno = e.raw_os_error().unwrap_or(0);
            return Finding::refused(
                name,
                errno,
                format!("open {path} for writing: {}", describe(errno)),
            );
        }
    };
    match file.write_all(format!("{value}\n").as_bytes()) {
        Ok(()) => Finding::reached(name, format!("wrote {path} (its own value {value:?})")),
        Err(e) => {
            let errno = e.raw_os_error().unwrap_or(0);
            Finding::refused(name, errno, format!("write {path}: {}", describe(errno)))
        }
    }
}

/// The first disk the kernel lists (not a loop, RAM or zram device): its name.
pub fn first_disk() -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !["loop", "ram", "zram", "nbd"]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .collect();
    names.sort();
    names.into_iter().next()
}

pub fn sys_write(_: &Env) -> Finding {
    const NAME: &str = "sys_write";
    // The uevent helper (what the kernel runs on every device event: a classic escape) where
    // the kernel has it, else the first disk's read-ahead.
    let mut candidates = vec!["/sys/kernel/uevent_helper".to_string()];
    if let Some(disk) = first_disk() {
        candidates.push(format!("/sys/block/{disk}/queue/read_ahead_kb"));
    }
    for path in &candidates {
        if let Ok(value) = std::fs::read_to_string(path) {
            return with_mount(write_back(NAME, path, value.trim_end_matches('\n')), path);
        }
    }
    Finding::absent(
        NAME,
        Some(libc::ENOENT),
        format!("none of {} exists", candidates.join(", ")),
    )
}

/// Host-wide /proc files Docker masks.
const MASKED: [&str; 4] = [
    "/proc/timer_list",
    "/proc/sched_debug",
    "/proc/keys",
    "/proc/kcore",
];

pub fn masked_proc_read(_: &Env) -> Finding {
    const NAME: &str = "masked_proc_read";
    let mut seen = Vec::new();
    let mut masked = Vec::new();
    let mut last_errno = None;
    for path in MASKED {
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        if meta.file_type().is_char_device() || meta.is_dir() {
            // A bind of /dev/null or an empty read-only tmpfs: the runtime masked it.
            masked.push(path);
            continue;
        }
        seen.push(path);
        let mut buf = [0u8; 256];
        match std::fs::File::open(path).and_then(|mut f| f.read(&mut buf)) {
            Ok(n) if n > 0 => {
                return Finding::reached(NAME, format!("read {n} bytes of {path}"))
                    .fact("file", path);
            }
            Ok(_) => {}
            Err(e) => last_errno = e.raw_os_error(),
        }
    }
    let detail = format!(
        "masked: {}; read nothing from: {}",
        if masked.is_empty() {
            "none".to_string()
        } else {
            masked.join(", ")
        },
        if seen.is_empty() {
            "none".to_string()
        } else {
            seen.join(", ")
        }
    );
    match (masked.is_empty(), seen.is_empty(), last_errno) {
        (true, true, _) => {
            Finding::absent(NAME, Some(libc::ENOENT), "none of these /proc files exists")
        }
        (_, _, Some(e)) => Finding::refused(NAME, e, detail).fact("masked", masked.join(",")),
        _ => Finding::nothing(NAME, detail).fact("masked", masked.join(",")),
    }
}

/// Whether `path` holds the harness's token.
fn holds_token(path: &Path, token: &str) -> bool {
    std::fs::read_to_string(path)
        .map(|s| s.trim() == token)
        .unwrap_or(false)
}

/// Numeric entries of /proc.
pub fn pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

pub fn host_file_proc_root(env: &Env) -> Finding {
    const NAME: &str = "host_file_proc_root";
    let Some((marker, token)) = &env.marker else {
        return Finding::absent(NAME, None, "no host marker was given (--marker PATH:TOKEN)");
    };
    let relative = marker.strip_prefix("/").unwrap_or(marker);
    let mut tried = vec![marker.clone()];
    let visible = pids();
    tried.extend(
        visible
            .iter()
            .map(|p| PathBuf::from(format!("/proc/{p}/root")).join(relative)),
    );
    for path in &tried {
        if holds_token(path, token) {
            return Finding::reached(
                NAME,
                format!("read the host's marker at {}", path.display()),
            )
            .fact("via", path.display());
        }
    }
    Finding::nothing(
        NAME,
        format!(
            "the host's marker is at none of {} paths ({} processes visible)",
            tried.len(),
            visible.len()
        ),
    )
    .fact("visible_processes", visible.len())
}

/// Targets that are not files: inherited stdio-like descriptors.
fn is_file_system_object(target: &str) -> bool {
    target.starts_with('/')
        && !["/dev/null", "/dev/pts/", "/dev/console", "/dev/tty"]
            .iter()
            .any(|p| target.starts_with(p))
}

/// Whether fd is the very file at `target` as this process resolves the name.
fn same_file_inside(fd: i32, target: &str) -> bool {
    let Ok(inside) = std::fs::metadata(target) else {
        return false;
    };
    // SAFETY: an all-zero stat is a valid value; fstat fills it for an open descriptor.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat with a valid pointer to a local.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    inside.dev() == st.st_dev && inside.ino() == st.st_ino
}

pub fn leaked_fds(env: &Env) -> Finding {
    const NAME: &str = "leaked_fds";
    let outside: Vec<&(i32, String)> = env
        .inherited
        .iter()
        .filter(|(fd, t)| is_file_system_object(t) && !same_file_inside(*fd, t))
        .collect();
    let listed: Vec<String> = env
        .inherited
        .iter()
        .map(|(fd, t)| format!("{fd}->{t}"))
        .collect();
    if outside.is_empty() {
        return Finding::nothing(
            NAME,
            if listed.is_empty() {
                "no descriptor beyond 0-2 was inherited".to_string()
            } else {
                format!("inherited only the instance's own: {}", listed.join(", "))
            },
        )
        .fact("inherited", listed.join(","));
    }
    let mut detail = format!(
        "inherited descriptors to files outside the instance's root: {}",
        outside
            .iter()
            .map(|(fd, t)| format!("{fd}->{t}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Through a directory descriptor, `..` leads anywhere on the host (CVE-2024-21626).
    if let Some((marker, token)) = &env.marker {
        let up = "../".repeat(64);
        let rel = format!(
            "{up}{}",
            marker.display().to_string().trim_start_matches('/')
        );
        for (fd, _) in &outside {
            let path = PathBuf::from(format!("/proc/self/fd/{fd}")).join(&rel);
            if holds_token(&path, token) {
                detail.push_str(&format!("; the host's marker read through descriptor {fd}"));
            }
        }
    }
    Finding::reached(NAME, detail).fact("inherited", listed.join(","))
}
