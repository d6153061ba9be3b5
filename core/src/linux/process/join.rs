//! Running another process inside an existing container (`exec`). The caller forks a child
//! that stays in the caller's PID namespace, where no process of the container can see it.
//! The child makes itself non-dumpable, joins the cgroup (moving itself, which is cheap)
//! and every namespace in one setns(2) through a pidfd (the PID namespace for its children
//! only), takes the process's attributes, user, capabilities, no_new_privs and seccomp
//! filter as the init does, and execs [`capsa_init`](super::capsa_init) from its sealed
//! in-memory copy. capsa-init forks the command: the first process of this `exec` inside
//! the container's PID namespace is born non-dumpable, from a program no one can write,
//! with a clean argument list and the workload's environment, under every restriction
//! already. capsa-init stays outside as the command's parent, passing signals on and
//! exiting with its status, so the caller waits for it as for the command itself.

use super::init::{exec_process, set_oom_score_adj};
use super::stdio::Stdio;
use crate::linux::cgroups::CgroupManager;
use crate::linux::sys::{self, fork_into_namespaces, Forked};
use crate::linux::user;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

/// What to run, and where.
pub struct JoinConfig<'a> {
    /// pidfd of the container's init.
    pub init: &'a OwnedFd,
    /// `CLONE_NEW*` of the namespaces to join besides the PID namespace.
    pub namespaces: u64,
    /// The process: args, env, cwd, capabilities, no_new_privs, rlimits.
    pub process: &'a oci_spec::runtime::Process,
    /// `USER[:GROUP]`, resolved inside the container.
    pub user: &'a str,
    /// The container's `--group-add` groups (see [`super::init::group_add`]).
    pub group_add: &'a [String],
    /// An OCI `process.user` to take as it is; when given, `user` and `group_add` are not
    /// read (see [`user::ExactIds`]).
    pub exact_user: Option<&'a user::ExactIds>,
    /// Compiled seccomp filters of the container.
    pub seccomp: &'a [seccompiler::BpfProgram],
    /// The container's cgroup.
    pub cgroup: &'a dyn CgroupManager,
    /// The process's stdio.
    pub stdio: Stdio<'a>,
    /// Whether stdin is a pty capsa made for this process: made its controlling terminal
    /// and given to its user (never true for streams the caller handed down).
    pub terminal: bool,
    /// The sealed [`capsa_init`](super::capsa_init) program the command starts through.
    pub init_program: &'a OwnedFd,
    /// Descriptors 3 to 3+N-1 of the caller that the process keeps (see
    /// [`InitConfig::preserve_fds`](super::config::InitConfig)).
    pub preserve_fds: u32,
}

/// How the process started.
pub enum Joined {
    /// It runs; the host PID of its capsa-init parent (a child of the caller), whose exit
    /// status is the command's.
    Running(i32),
    /// It could not be executed: (exit code, message); it has exited.
    Failed(i32, String),
}

/// Starts the process in the container. The caller must be single-threaded.
pub fn spawn_in(cfg: &JoinConfig) -> std::io::Result<Joined> {
    let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let pid = match fork_into_namespaces(0, None)? {
        Forked::Child => {
            drop(report_r);
            let (code, msg) = enter_and_exec(cfg);
            let _ = nix::unistd::write(&report_w, format!("{code} {msg}").as_bytes());
            // SAFETY: ends the forked child without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        Forked::Parent(pid) => pid,
    };
    drop(report_w);
    let mut report = String::new();
    std::fs::File::from(report_r).read_to_string(&mut report)?;
    if report.is_empty() {
        return Ok(Joined::Running(pid)); // the pipe closed on the exec of capsa-init
    }
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    let (code, msg) = report.split_once(' ').unwrap_or(("126", &report));
    Ok(Joined::Failed(code.parse().unwrap_or(126), msg.to_string()))
}

fn enter_and_exec(cfg: &JoinConfig) -> (i32, String) {
    let fail = |what: &str, e: &dyn std::fmt::Display| (126, format!("{what}: {e}"));
    // First, before it takes the container's credentials: the container cannot see this
    // process (it is outside its PID namespace), and non-dumpable also keeps out anything
    // else holding those credentials (commit_creds does not clear it while the uid stays
    // 0). capsa-init sets it again after its execve, before it forks the command.
    if let Err(e) = sys::set_dumpable(false) {
        return fail("prctl(PR_SET_DUMPABLE)", &e);
    }
    // Through the caller's /proc: the container's does not show a process outside its PID
    // namespace. capsa-init and the command inherit it.
    set_oom_score_adj(cfg.process);
    if let Err(e) = cfg.cgroup.join_self() {
        return fail("join cgroup", &e);
    }
    if let Err(e) = sys::setns_pidfd(cfg.init, cfg.namespaces | libc::CLONE_NEWPID as u64) {
        return fail("join namespaces", &e);
    }
    if let Err(e) = cfg.stdio.install() {
        return fail("stdio", &e);
    }
    let _ = nix::unistd::setsid();
    if cfg.terminal {
        if let Err(e) = sys::set_controlling_terminal(0) {
            return fail("controlling terminal", &e);
        }
    }
    let user = match cfg.exact_user {
        Some(ids) => ids.resolve(Path::new("/")),
        None => user::resolve(cfg.user, Path::new("/")).and_then(|mut u| {
            user::add_groups(&mut u, cfg.group_add, Path::new("/"))?;
            Ok(u)
        }),
    };
    let user = match user {
        Ok(u) => u,
        Err(e) => return (126, e.to_string()),
    };
    exec_process(
        cfg.process,
        &user,
        cfg.seccomp,
        Some(cfg.init_program),
        cfg.preserve_fds,
        None,
        cfg.terminal,
    )
}
