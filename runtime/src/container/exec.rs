//! `exec`: runs another command inside a running container, entering all of its namespaces,
//! its cgroup, its capability set and its seccomp filter.

use super::relay::PipeSession;
use super::session::{PtySession, Session};
use super::state::Status;
use super::store::ContainerStore;
use super::ContainerError;
use crate::linux::devpts;
use crate::linux::process::capsa_init;
use crate::linux::process::init::USER_ANNOTATION;
use crate::linux::process::join::{spawn_in, JoinConfig, Joined};
use crate::linux::process::stdio::{Input, Ours, Output, Pipes, Pty};
use crate::linux::seccomp::compile;
use crate::linux::{cgroups, namespaces, sys};

/// `exec` flags.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// `-d`: do not wait.
    pub detach: bool,
    /// `-i`: pass stdin.
    pub interactive: bool,
    /// `-t`: a pseudo-terminal (the caller relays it).
    pub tty: bool,
    /// Without `-t`: stdout and stderr on one pipe, because the front end writes both to one
    /// place (see [`super::relay::caller_output_merged`]).
    pub merged_output: bool,
    /// `-e`, in order.
    pub env: Vec<String>,
    /// `-u`.
    pub user: Option<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `--privileged`: every capability for this process, as Docker's; the container's
    /// seccomp filter, device rules, masked paths and user namespace stay what they are.
    pub privileged: bool,
    /// The command.
    pub command: Vec<String>,
}

/// A started `exec`.
pub struct Started {
    /// Host PID of the process's capsa-init parent (a child of the caller): its signals
    /// reach the process, its exit status is the process's.
    pub pid: i32,
    /// With `-t`: the pty master, for the caller to relay.
    pub terminal: Option<std::os::fd::OwnedFd>,
    /// Without `-t` or `-d`: the caller's ends of the process's pipes, to relay.
    pub pipes: Option<Ours>,
}

/// The streams made for an exec'd process (never the caller's own: see
/// [`crate::linux::process::stdio`]).
enum Streams {
    Terminal(Pty),
    Pipes(Pipes),
}

/// Runs `opts.command` in container `id`: the session with its streams for the caller to
/// relay (None with `-d`). Its `finish` is the command's exit code.
pub fn exec(
    store: &ContainerStore,
    id: &str,
    opts: &ExecOptions,
) -> Result<Option<Box<dyn Session>>, ContainerError> {
    let started = exec_start(store, id, opts)?;
    if opts.detach {
        return Ok(None);
    }
    let pid = started.pid;
    if let Some(master) = started.terminal {
        // Keys go through the pty: ctrl-c is the terminal's to deliver.
        return Ok(Some(Box::new(PtySession::new(master, pid))));
    }
    use crate::linux::process::sigforward;
    sigforward::forward_to(pid, sigforward::USER_SIGNALS);
    // Ends when capsa-init (and so the command) has exited: a process the command left in
    // the container keeps no way to this caller's streams.
    let exited = sys::pidfd_open(pid).ok();
    let finish = Box::new(move || {
        let code = super::monitor::wait_child(pid);
        sigforward::stop();
        code
    });
    let ours = started.pipes.ok_or_else(|| ContainerError::Setup {
        id: id.to_string(),
        reason: "exec: the command has no streams".into(),
    })?;
    Ok(Some(Box::new(PipeSession::new(ours, exited, Some(finish)))))
}

/// Starts `opts.command` in container `id` and returns at once.
pub fn exec_start(
    store: &ContainerStore,
    id: &str,
    opts: &ExecOptions,
) -> Result<Started, ContainerError> {
    let state = store.observe(id)?;
    let wrong = |reason: &str| ContainerError::WrongState {
        id: id.to_string(),
        reason: reason.to_string(),
    };
    if !state.isolation.workload_on_host() {
        // Its processes are inside the guest; the host-side pid is its monitor's, whose
        // namespaces are the host's. Only the agent may run a process there.
        return Err(ContainerError::InvalidArgument(format!(
            "container {}: a VM container's processes run through its agent (capsa exec)",
            state.name
        )));
    }
    if state.status != Status::Running || !state.init_alive() {
        return Err(wrong("container is not running"));
    }
    if state.paused {
        return Err(wrong(
            "container is paused, unpause the container before exec",
        ));
    }
    // Until `start` has seen the init's execve (and removed the gate), the init may still
    // be a copy of capsa: nothing may join its PID namespace and look at it.
    if store.dir(id).exec_fifo().exists() {
        return Err(wrong(
            "container is starting, its command has not started yet",
        ));
    }
    let (spec, process, user) = process_for(store, id, opts)?;
    let seccomp = compile::for_spec(&spec, &store.root().seccomp_cache()).map_err(|e| {
        ContainerError::Setup {
            id: id.to_string(),
            reason: e.to_string(),
        }
    })?;
    let init_program = capsa_init::load_host().map_err(|e| ContainerError::Setup {
        id: id.to_string(),
        reason: format!("exec: {e}"),
    })?;
    let pid = state.pid.ok_or_else(|| wrong("container is not running"))?;
    let init = sys::pidfd_open(pid).map_err(|_| wrong("container is not running"))?;
    if !state.init_alive() {
        return Err(wrong("container is not running"));
    }
    let joined = namespaces::clone_flags(&spec) & !(libc::CLONE_NEWPID as u64);
    let cgroup = cgroups::manager(&state.cgroup);
    let io_err = |what: &str, e: std::io::Error| wrong(&format!("{what}: {e}"));
    let streams = if opts.tty {
        let (rows, cols) = sys::window_size(libc::STDOUT_FILENO).unwrap_or((24, 80));
        // On the container's own devpts, as `run -t`'s: the process's terminal is
        // /dev/pts/N inside, and nothing the container put at /dev/pts/ptmx is opened
        // unless it is that devpts's ptmx.
        let pty = devpts::open_pty_of(pid, || state.init_alive(), rows, cols).map_err(|e| {
            ContainerError::Setup {
                id: id.to_string(),
                reason: format!("exec -t: the container's terminal: {e}"),
            }
        })?;
        devpts::hand_into_user_namespace(&pty, spec.linux().as_ref()).map_err(|e| {
            ContainerError::Setup {
                id: id.to_string(),
                reason: format!("exec -t: the terminal's owner: {e}"),
            }
        })?;
        Streams::Terminal(pty)
    } else if opts.detach {
        // Nobody reads: stdin empty, output to a null device of its own.
        Streams::Pipes(
            Pipes::new(Input::Closed, Output::Discarded).map_err(|e| io_err("pipes", e))?,
        )
    } else {
        Streams::Pipes(
            super::relay::pipes(opts.interactive, opts.merged_output)
                .map_err(|e| io_err("pipes", e))?,
        )
    };
    let stdio = match &streams {
        Streams::Terminal(pty) => pty.stdio(),
        Streams::Pipes(pipes) => pipes.stdio(),
    };
    let group_add = crate::linux::process::init::group_add(&spec);
    let cfg = JoinConfig {
        init: &init,
        namespaces: joined,
        process: &process,
        user: &user,
        group_add: &group_add,
        exact_user: None,
        seccomp: &seccomp,
        cgroup: cgroup.as_ref(),
        stdio,
        terminal: opts.tty,
        init_program: &init_program,
        preserve_fds: 0,
    };
    match spawn_in(&cfg).map_err(|e| ContainerError::Setup {
        id: id.to_string(),
        reason: format!("exec: {e}"),
    })? {
        Joined::Failed(code, message) => Err(ContainerError::Exec { code, message }),
        Joined::Running(pid) => Ok(match streams {
            Streams::Terminal(pty) => Started {
                pid,
                terminal: Some(pty.into_master()),
                pipes: None,
            },
            Streams::Pipes(pipes) => Started {
                pid,
                terminal: None,
                pipes: (!opts.detach).then(|| pipes.into_ours()),
            },
        }),
    }
}

/// Every capability the core knows, bounding, permitted and effective (Docker's privileged
/// exec: none inheritable or ambient).
fn all_capabilities() -> Result<oci_spec::runtime::LinuxCapabilities, String> {
    use crate::linux::capabilities;
    let caps = capabilities::to_oci(&capabilities::all_caps());
    oci_spec::runtime::LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .permitted(caps.clone())
        .effective(caps)
        .inheritable(oci_spec::runtime::Capabilities::new())
        .ambient(oci_spec::runtime::Capabilities::new())
        .build()
        .map_err(|e| e.to_string())
}

/// The container's spec, and its process as `exec` changes it (command, `-e`, `-w`) with the
/// user to run it as (`-u`, else the image's).
pub fn process_for(
    store: &ContainerStore,
    id: &str,
    opts: &ExecOptions,
) -> Result<(oci_spec::runtime::Spec, oci_spec::runtime::Process, String), ContainerError> {
    let wrong = |reason: &str| ContainerError::WrongState {
        id: id.to_string(),
        reason: reason.to_string(),
    };
    if opts.command.is_empty() {
        return Err(ContainerError::InvalidArgument(
            "exec needs a command".into(),
        ));
    }
    let dir = store.dir(id);
    let config = std::fs::read(dir.config()).map_err(|e| ContainerError::io(&dir.config(), e))?;
    let spec: oci_spec::runtime::Spec = serde_json::from_slice(&config)
        .map_err(|e| ContainerError::io(&dir.config(), std::io::Error::other(e)))?;
    let mut process = spec
        .process()
        .clone()
        .ok_or_else(|| wrong("its spec has no process"))?;
    process.set_args(Some(opts.command.clone()));
    let mut env = process.env().clone().unwrap_or_default();
    for e in &opts.env {
        let key = e.split('=').next().unwrap_or_default();
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    process.set_env(Some(env));
    if let Some(w) = &opts.workdir {
        if !w.starts_with('/') {
            return Err(ContainerError::InvalidArgument(format!(
                "-w {w:?}: the working directory must be an absolute path"
            )));
        }
        process.set_cwd(w.into());
    }
    if opts.privileged {
        process.set_capabilities(Some(all_capabilities().map_err(|e| wrong(&e))?));
    }
    let user = opts
        .user
        .clone()
        .or_else(|| {
            spec.annotations()
                .as_ref()
                .and_then(|a| a.get(USER_ANNOTATION).cloned())
        })
        .unwrap_or_default();
    Ok((spec, process, user))
}
