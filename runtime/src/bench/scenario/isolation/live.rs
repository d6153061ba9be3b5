//! What needs a running instance: the exec ptrace window (the watcher runs as the
//! instance's workload while the harness execs into it), and while it runs, the host
//! syscalls its workload (or its VM engine) can reach, the engine's own confinement, and
//! whether another local user can read the instance's records on the host.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capsa_escape::findings::{Finding, Findings};

use super::reach;
use crate::bench::error::BenchError;
use crate::bench::report::{EngineProcess, Outcome, SyscallReach};
use crate::bench::scenario::Context;
use crate::bench::subjects::{Instance, Subject, Workload, ESCAPE_INSIDE};

/// Where the watcher leaves its findings inside the instance.
const WINDOW_OUT: &str = "/tmp/.capsa-escape-window.json";
/// A uid and gid no instance file belongs to: "another local user".
const NOBODY: u32 = 65534;
/// How long one exec (or one read of the findings) may take.
const EXEC_LIMIT: Duration = Duration::from_secs(120);

pub struct Live {
    /// The exec window finding; Err says why it was not measured.
    pub window: Result<Finding, BenchError>,
    /// False where the subject has no exec at all (the row does not apply).
    pub window_applicable: bool,
    /// Err: why the row does not apply.
    pub store: Result<Finding, BenchError>,
    pub reach: Outcome<SyscallReach>,
    pub engine: Option<EngineProcess>,
}

pub fn measure(s: &dyn Subject, ctx: &Context) -> Live {
    let info = s.info();
    let (processes, timeout) = ctx.plan.exec_window(info);
    let workload = if s.can_exec() {
        Workload::Escape(
            [
                "watch-exec",
                "--processes",
                &processes.to_string(),
                "--timeout",
                &timeout.as_secs().to_string(),
                "--expect",
                ESCAPE_INSIDE,
                "--out",
                WINDOW_OUT,
            ]
            .iter()
            .map(|a| a.to_string())
            .collect(),
        )
    } else {
        Workload::Idle
    };
    let instance = match s.start(&workload, None) {
        Ok(i) => i,
        Err(e) => {
            let e = Arc::new(e);
            return Live {
                window: Err(BenchError::Starting(e.clone())),
                window_applicable: s.can_exec(),
                store: Err(BenchError::Starting(e.clone())),
                reach: Outcome::Failed {
                    error: BenchError::Starting(e).to_string(),
                },
                engine: None,
            };
        }
    };
    let window = if s.can_exec() {
        ctx.progress
            .doing(format!("isolation: {} exec ptrace window", info.name));
        drive_window(s, &instance, processes, timeout)
    } else {
        Err(BenchError::NoExec(info.name.clone()))
    };
    let vm = info.isolation == crate::container::sandbox::Isolation::Vm;
    let target = if vm {
        engine_pid(&instance)
    } else {
        workload_pid(&instance)
    };
    let reach = match &target {
        Some((pid, what)) => match reach::measure(*pid, what) {
            Ok(r) => Outcome::Ok(r),
            Err(error) => Outcome::Failed {
                error: error.to_string(),
            },
        },
        None => Outcome::Failed {
            error: format!(
                "no {} process found in the instance's process tree",
                if vm { "engine" } else { "workload" }
            ),
        },
    };
    let engine = if vm {
        target.and_then(|(pid, what)| engine_process(pid, what))
    } else {
        None
    };
    let records = s.records(&instance);
    let store = if records.is_empty() {
        Err(BenchError::NoRecords(info.name.clone()))
    } else {
        Ok(as_other_user(&records))
    };
    s.remove(instance);
    Live {
        window,
        window_applicable: s.can_exec(),
        store,
        reach,
        engine,
    }
}

/// Runs `cmd` to its end within `limit`, output captured.
fn bounded(mut cmd: Command, limit: Duration) -> Result<std::process::Output, BenchError> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| BenchError::Exec {
            program: cmd.get_program().to_owned(),
            source,
        })?;
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.map_err(BenchError::ExecWait),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            Err(BenchError::NoAnswer {
                secs: limit.as_secs(),
            })
        }
    }
}

/// Execs `noop` into the instance until the watcher has seen its processes, then reads its
/// findings (each read is an exec too).
fn drive_window(
    s: &dyn Subject,
    instance: &Instance,
    processes: usize,
    timeout: Duration,
) -> Result<Finding, BenchError> {
    let argv = |a: &[&str]| -> Vec<String> {
        std::iter::once(ESCAPE_INSIDE)
            .chain(a.iter().copied())
            .map(String::from)
            .collect()
    };
    let read = || -> Option<Finding> {
        let out = bounded(
            s.exec(instance, &argv(&["show", WINDOW_OUT])).ok()?,
            EXEC_LIMIT,
        )
        .ok()?;
        Findings::find_in(&String::from_utf8_lossy(&out.stdout))?
            .probes
            .into_iter()
            .next()
    };
    let began = Instant::now();
    for n in 1..=processes * 2 {
        let out = bounded(s.exec(instance, &argv(&["noop"]))?, EXEC_LIMIT)?;
        if !out.status.success() {
            return Err(BenchError::Refused {
                command: "exec".into(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        if n >= processes {
            if let Some(f) = read() {
                return Ok(f);
            }
        }
    }
    // The watcher gives up at its own timeout and reports what it saw.
    while began.elapsed() < timeout + Duration::from_secs(10) {
        if let Some(f) = read() {
            return Ok(f);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(BenchError::NoWatcherFindings)
}

/// `roots` and their descendants, with each one's command name.
fn tree(instance: &Instance) -> Vec<(i32, String)> {
    crate::bench::memory::process_tree(&instance.roots)
        .into_iter()
        .map(|p| {
            let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            (p, comm.trim().to_string())
        })
        .collect()
}

fn ns(pid: &str, kind: &str) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok()
}

/// The container's first process: the first of the tree outside capsa's pid namespace.
fn workload_pid(instance: &Instance) -> Option<(i32, String)> {
    let own = ns("self", "pid");
    tree(instance)
        .into_iter()
        .find(|(p, _)| ns(&p.to_string(), "pid") != own)
        .map(|(p, comm)| (p, format!("the workload {comm}")))
}

/// The VM's engine process (QEMU or capsa-vmm).
fn engine_pid(instance: &Instance) -> Option<(i32, String)> {
    tree(instance)
        .into_iter()
        .find(|(_, comm)| comm.starts_with("qemu") || comm.starts_with("capsa-vmm"))
        .map(|(p, comm)| (p, format!("the engine {comm}")))
}

fn engine_process(pid: i32, command: String) -> Option<EngineProcess> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    };
    let shared_namespaces = capsa_escape::context::NAMESPACES
        .iter()
        .filter(|k| {
            let theirs = ns(&pid.to_string(), k);
            theirs.is_some() && theirs == ns("self", k)
        })
        .map(|k| k.to_string())
        .collect();
    Some(EngineProcess {
        command,
        pid,
        uid: field("Uid")?.split_whitespace().nth(1)?.parse().ok()?,
        cap_eff: field("CapEff")?,
        seccomp: field("Seccomp")?.parse().ok()?,
        no_new_privs: field("NoNewPrivs").as_deref() == Some("1"),
        shared_namespaces,
    })
}

/// Opens each path (lists each directory) as uid/gid 65534 with no supplementary groups,
/// in a forked child per path: another local user reading the instance's records.
fn as_other_user(paths: &[PathBuf]) -> Finding {
    const NAME: &str = "store_local_user";
    let mut readable = Vec::new();
    let mut refused = Vec::new();
    for path in paths {
        match read_as_nobody(path) {
            Ok(()) => readable.push(path.display().to_string()),
            Err(e) => refused.push((path.display().to_string(), e)),
        }
    }
    if !readable.is_empty() {
        return Finding::reached(NAME, format!("uid {NOBODY} read {}", readable.join(", ")));
    }
    let errno = refused.first().map(|(_, e)| *e).unwrap_or(libc::EACCES);
    Finding::refused(
        NAME,
        errno,
        format!(
            "uid {NOBODY} could read none of: {}",
            refused
                .iter()
                .map(|(p, e)| format!("{p} ({})", capsa_escape::sys::errno_name(*e)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

/// 0 or the errno of the first refusal, from a child that dropped to uid 65534.
fn read_as_nobody(path: &Path) -> Result<(), i32> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)?;
    let dir = path.is_dir();
    let mut byte = [0u8; 1];
    // SAFETY: the child makes only raw syscalls on memory prepared before the fork, then
    // _exits; the parent waits for it.
    unsafe {
        let pid = libc::fork();
        if pid < 0 {
            return Err(*libc::__errno_location());
        }
        if pid == 0 {
            let code = if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(NOBODY, NOBODY, NOBODY) != 0
                || libc::setresuid(NOBODY, NOBODY, NOBODY) != 0
            {
                *libc::__errno_location()
            } else {
                let flags = if dir {
                    libc::O_RDONLY | libc::O_DIRECTORY
                } else {
                    libc::O_RDONLY
                };
                let fd = libc::open(c.as_ptr(), flags);
                let failed = fd < 0 || (!dir && libc::read(fd, byte.as_mut_ptr().cast(), 1) < 0);
                if failed {
                    *libc::__errno_location()
                } else {
                    0
                }
            };
            libc::_exit(code);
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        match libc::WEXITSTATUS(status) {
            0 if libc::WIFEXITED(status) => Ok(()),
            e => Err(e),
        }
    }
}
