//! `exec`: another process in a running container, through the core's join (its
//! namespaces, cgroup, capabilities and seccomp filter; started by a sealed capsa-init).
//! The process behind `--pid-file` is that capsa-init, a child of this process (so of the
//! caller's subreaper after a detached exec) whose exit status is the command's.

use super::state::{self, Status};
use super::{console, RuntimeError};
use crate::linux::process::capsa_init;
use crate::linux::process::join::{spawn_in, JoinConfig, Joined};
use crate::linux::process::Stdio;
use crate::linux::seccomp::compile;
use crate::linux::{cgroups, devpts};
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// What `exec` is given besides the ID and the process.
pub struct ExecOptions {
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    /// `--preserve-fds N`: the caller's descriptors 3 to 3+N-1 stay open in the process.
    pub preserve_fds: u32,
}

/// The process `exec` runs when given arguments rather than `--process`: the container's
/// own process with `args`, extra `env`, `cwd`, `user` (`UID[:GID]`) and `tty`.
pub struct ProcessFlags {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub user: Option<String>,
    pub tty: bool,
}

/// The container's spec as the core runs it (written by `create`).
fn core_spec(dir: &state::Dir) -> Result<Spec, RuntimeError> {
    let text = std::fs::read(dir.config())
        .map_err(RuntimeError::io(dir.config().display().to_string()))?;
    serde_json::from_slice(&text)
        .map_err(|e| RuntimeError::io(dir.config().display().to_string())(std::io::Error::other(e)))
}

/// Reads a `--process` file.
pub fn process_file(path: &Path) -> Result<Process, RuntimeError> {
    let text = std::fs::read(path).map_err(|e| RuntimeError::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let de = &mut serde_json::Deserializer::from_slice(&text);
    serde_path_to_error::deserialize(de).map_err(|e| RuntimeError::Config {
        path: path.to_path_buf(),
        reason: format!("{}: {}", e.path(), e.inner()),
    })
}

/// The process of `flags` over the container's own.
fn process_from_flags(spec: &Spec, flags: ProcessFlags) -> Result<Process, RuntimeError> {
    let mut p = spec.process().clone().unwrap_or_default();
    if flags.args.is_empty() {
        return Err(RuntimeError::Usage(
            "exec needs a command or --process".into(),
        ));
    }
    p.set_args(Some(flags.args));
    let mut env = p.env().clone().unwrap_or_default();
    env.extend(flags.env);
    p.set_env(Some(env));
    if let Some(cwd) = flags.cwd {
        p.set_cwd(cwd);
    }
    p.set_terminal(Some(flags.tty));
    if let Some(u) = flags.user {
        let (uid, gid) = u.split_once(':').unwrap_or((&u, "0"));
        let bad = || RuntimeError::Usage(format!("--user {u:?}: numeric UID[:GID] expected"));
        let mut user = p.user().clone();
        user.set_uid(uid.parse().map_err(|_| bad())?);
        user.set_gid(gid.parse().map_err(|_| bad())?);
        user.set_additional_gids(None);
        p.set_user(user);
    }
    Ok(p)
}

/// Runs a process in running container `id`: `process` from `--process`, else built from
/// `flags`. Returns the host PID of its capsa-init parent, a child of this process.
pub fn exec(
    root: &Path,
    id: &str,
    process: Option<Process>,
    flags: ProcessFlags,
    opts: &ExecOptions,
) -> Result<i32, RuntimeError> {
    let (dir, record) = state::load(root, id)?;
    let status = record.status(&dir);
    if status != Status::Running {
        return Err(RuntimeError::WrongState {
            id: id.to_string(),
            status: status.word(),
            what: "only a running container can exec a process",
        });
    }
    let spec = core_spec(&dir)?;
    let process = match process {
        Some(p) => p,
        None => process_from_flags(&spec, flags)?,
    };
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(RuntimeError::Usage("the process has no args".into()));
    }
    if let Some(member) = &record.vm {
        return super::vm::exec(
            &dir,
            &record,
            member,
            process,
            opts.pid_file.as_deref(),
            opts.console_socket.as_deref(),
        );
    }
    let terminal = process.terminal().unwrap_or(false);
    if terminal != opts.console_socket.is_some() {
        return Err(RuntimeError::Usage(
            "a terminal process needs --console-socket (and only it)".into(),
        ));
    }
    let ids = super::bundle::exact_ids(process.user());
    let seccomp = compile::for_spec(&spec, &root.join(".seccomp"))
        .map_err(|e| RuntimeError::Setup(format!("seccomp: {e}")))?;
    let init_program =
        capsa_init::load_host().map_err(|e| RuntimeError::Setup(format!("exec: {e}")))?;
    let pidfd = crate::linux::sys::pidfd_open(record.pid).map_err(RuntimeError::io("pidfd"))?;
    if !record.init_alive() {
        return Err(RuntimeError::WrongState {
            id: id.to_string(),
            status: Status::Stopped.word(),
            what: "only a running container can exec a process",
        });
    }
    let pty = match &opts.console_socket {
        Some(_) => Some(console::open_pty_in(
            record.pid,
            || record.init_alive(),
            console::size_of(&process),
        )?),
        None => None,
    };
    if let Some(pty) = &pty {
        devpts::hand_into_user_namespace(pty, spec.linux().as_ref())
            .map_err(RuntimeError::io("the terminal's owner"))?;
    }
    let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    let stdio = match &pty {
        Some(p) => p.stdio(),
        None => Stdio::inherited_from_caller([stdin.as_fd(), stdout.as_fd(), stderr.as_fd()]),
    };
    cgroups::check_recorded(&record.cgroup).map_err(|e| RuntimeError::Setup(e.to_string()))?;
    let cgroup = cgroups::manager(&record.cgroup);
    let cfg = JoinConfig {
        init: &pidfd,
        namespaces: joined_namespaces(&spec),
        process: &process,
        user: "",
        group_add: &[],
        exact_user: Some(&ids),
        seccomp: &seccomp,
        cgroup: cgroup.as_ref(),
        stdio,
        terminal,
        init_program: &init_program,
        preserve_fds: opts.preserve_fds,
    };
    let pid = match spawn_in(&cfg).map_err(RuntimeError::io("exec"))? {
        Joined::Running(pid) => pid,
        Joined::Failed(code, message) => return Err(RuntimeError::Exec { code, message }),
    };
    if let (Some(socket), Some(pty)) = (&opts.console_socket, &pty) {
        console::send_master(socket, pty.master())?;
    }
    if let Some(p) = &opts.pid_file {
        super::lifecycle::write_pid_file(p, pid)?;
    }
    Ok(pid)
}

/// `CLONE_NEW*` of every namespace the container's init is in besides its PID namespace
/// (which the join adds): created or joined by path alike, since the join enters the
/// init's own. With a user namespace, that too: the process is then its root at most,
/// never the host's.
fn joined_namespaces(spec: &Spec) -> u64 {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
        .filter(|ns| ns.typ() != LinuxNamespaceType::Pid)
        .fold(0, |acc, ns| {
            acc | crate::linux::namespaces::clone_flag(ns.typ())
        })
}
