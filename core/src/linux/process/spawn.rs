//! The parent's side of creating a container: clone the init into its namespaces, put it in
//! its cgroup, let it set up, and wait (bounded) until it is ready or has failed.

use super::channel::{self, Message};
use super::config::{InitConfig, InitStdio};
use super::init;
use crate::linux::sys::{fork_into_namespaces, Forked};
use crate::linux::{mountapi, namespaces};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::LinuxNamespaceType;
use std::os::fd::{AsRawFd, RawFd};

/// How long the init may take to set up before the parent gives up on it.
const SETUP_TIMEOUT_MS: i32 = 60_000;

/// Why a container's init could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// clone or the socket pair failed.
    #[error("cannot create the container's init process: {0}")]
    Clone(std::io::Error),
    /// The user namespace could not be set up.
    #[error("cannot set up the user namespace: {0}")]
    UserNamespace(std::io::Error),
    /// The init reported a set-up failure.
    #[error("{0}")]
    Setup(String),
    /// The init died or stopped answering during set-up.
    #[error("the container's init failed during set-up: {0}")]
    Lost(std::io::Error),
}

/// Writes the init's uid/gid maps (from the spec) and returns its image layers as idmapped
/// detached mounts, top layer first: the host's root-owned files appear owned by the
/// namespace's root. Only host root can make them, so the parent does.
fn map_user_namespace(cfg: &InitConfig, pid: i32) -> std::io::Result<Vec<std::os::fd::OwnedFd>> {
    let linux = cfg.spec.linux().as_ref();
    let render = |maps: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps.into_iter()
            .flatten()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect::<String>()
    };
    std::fs::write(
        format!("/proc/{pid}/uid_map"),
        render(linux.and_then(|l| l.uid_mappings().as_ref())),
    )?;
    std::fs::write(
        format!("/proc/{pid}/gid_map"),
        render(linux.and_then(|l| l.gid_mappings().as_ref())),
    )?;
    let userns: std::os::fd::OwnedFd = std::fs::File::open(format!("/proc/{pid}/ns/user"))?.into();
    // A prepared root directory is used as its files are owned: nothing to map.
    let Some(layers) = cfg.layers else {
        return Ok(Vec::new());
    };
    if layers.lower.len() > channel::MAX_FDS {
        return Err(std::io::Error::other(format!(
            "more than {} layers",
            channel::MAX_FDS
        )));
    }
    layers
        .lower
        .iter()
        .rev()
        .map(|l| {
            mountapi::idmapped_clone(l, &userns).map_err(|e| {
                std::io::Error::other(format!("idmapped mount of {}: {e}", l.display()))
            })
        })
        .collect()
}

/// A container's init, ready and waiting on the start gate.
#[derive(Debug)]
pub struct Spawned {
    /// Its host PID.
    pub pid: i32,
    /// With [`InitStdio::Terminal`]: the master of the pty it opened on the container's
    /// devpts (checked to be one).
    pub terminal: Option<std::os::fd::OwnedFd>,
}

/// Creates the container's init and returns it once it is ready and waiting on
/// the start gate. The init places itself in its cgroup (see [`CgroupManager::join_self`]),
/// so the parent only waits for its answer. On error, nothing of the process is left (it is killed and reaped).
pub fn spawn(cfg: &InitConfig) -> Result<Spawned, SpawnError> {
    if init::wants_init(cfg.spec) && cfg.init_program.is_none() {
        return Err(SpawnError::Setup(format!(
            "--init: the {} program was not loaded",
            super::capsa_init::ARGV0
        )));
    }
    namespaces::join_pid_path(cfg.spec).map_err(SpawnError::Clone)?;
    let (parent_end, child_end) = channel::pair().map_err(SpawnError::Clone)?;
    // The cgroup namespace is made by the init once it is in its cgroup, so that its cgroup
    // becomes the namespace's root (see init::run).
    let flags = namespaces::clone_flags(cfg.spec) & !(libc::CLONE_NEWCGROUP as u64);
    let target = cfg.cgroup.clone_target();
    let born_in_cgroup = target.is_some();
    let forked = fork_into_namespaces(flags, target.as_ref().map(|fd| fd.as_raw_fd()));
    let pid = match forked.map_err(SpawnError::Clone)? {
        Forked::Child => {
            drop(parent_end);
            let code = init::run(cfg, child_end, born_in_cgroup);
            // SAFETY: _exit ends the child without running the parent's atexit handlers or
            // flushing its copied stdio buffers.
            unsafe { libc::_exit(code) }
        }
        Forked::Parent(pid) => pid,
    };
    drop(child_end);
    let abort = |e: SpawnError| {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(pid), None);
        e
    };
    if namespaces::has(cfg.spec, LinuxNamespaceType::User) {
        let layers =
            map_user_namespace(cfg, pid).map_err(|e| abort(SpawnError::UserNamespace(e)))?;
        let raw: Vec<RawFd> = layers.iter().map(|l| l.as_raw_fd()).collect();
        channel::send_with_fds(&parent_end, &Message::Go, &raw)
            .map_err(|e| abort(SpawnError::Lost(e)))?;
    }
    let wants_terminal = matches!(cfg.stdio, InitStdio::Terminal { .. });
    let mut answer = channel::recv_with_fds_within(&parent_end, SETUP_TIMEOUT_MS);
    if let (Ok((Message::Mounted, _)), Some(hooks)) = (&answer, cfg.runtime_hooks) {
        let reply = match hooks(pid) {
            Ok(()) => Message::Go,
            Err(why) => Message::Error(why),
        };
        let failed = matches!(reply, Message::Error(_));
        if let Err(e) = channel::send(&parent_end, &reply) {
            return Err(abort(SpawnError::Lost(e)));
        }
        if let (true, Message::Error(why)) = (failed, reply) {
            return Err(abort(SpawnError::Setup(why)));
        }
        answer = channel::recv_with_fds_within(&parent_end, SETUP_TIMEOUT_MS);
    }
    match answer {
        Ok((Message::Ready, fds)) => match ready_terminal(fds, wants_terminal) {
            Ok(terminal) => Ok(Spawned { pid, terminal }),
            Err(e) => Err(abort(SpawnError::Lost(e))),
        },
        Ok((Message::Error(msg), _)) => Err(abort(SpawnError::Setup(msg))),
        Ok((other, _)) => Err(abort(SpawnError::Setup(format!(
            "unexpected message {other:?}"
        )))),
        Err(e) => Err(abort(SpawnError::Lost(e))),
    }
}

/// The descriptors that came with `Ready`: none, or with a terminal its pty master (checked
/// to be one, whatever sent it).
fn ready_terminal(
    mut fds: Vec<std::os::fd::OwnedFd>,
    wants_terminal: bool,
) -> std::io::Result<Option<std::os::fd::OwnedFd>> {
    use std::os::fd::AsFd;
    match (fds.len(), wants_terminal) {
        (0, false) => Ok(None),
        (1, true) => {
            let master = fds.remove(0);
            crate::linux::devpts::check_master(master.as_fd())?;
            Ok(Some(master))
        }
        (n, _) => Err(std::io::Error::other(format!(
            "the init sent {n} descriptors with Ready"
        ))),
    }
}
