//! Foreground `run`: the CLI is the container's monitor. The workload's streams are pipes
//! made for it, handed to the front end as a session ([`super::relay::PipeSession`]) that it relays to and from its own: none of the CLI's
//! descriptors reaches the container. Signals the CLI receives are forwarded to the
//! container ([`crate::linux::process::sigforward`]).

use super::create::{prepare, spawn_init};
use super::monitor::{record_exit, wait_child};
use super::options::RunOptions;
use super::relay::PipeSession;
pub use super::sandbox::RunOutcome;
use super::session::Front;
use super::store::ContainerStore;
use super::ContainerError;
use crate::image::Image;
use crate::linux::process::exec_fifo::ExecOutcome;

/// Creates, starts and waits for a container in the foreground.
pub fn run_foreground(
    store: &ContainerStore,
    image: Image,
    opts: &RunOptions,
    front: &mut dyn Front,
) -> Result<RunOutcome, ContainerError> {
    tracing::debug!("image resolved");
    let pipes = super::relay::pipes(opts.interactive, super::relay::caller_output_merged())
        .map_err(|e| ContainerError::io(std::path::Path::new("pipe"), e))?;
    let mut prepared = prepare(store, image, opts)?;
    let id = prepared.state.id.clone();
    let (pid, _) = spawn_init(
        store,
        &mut prepared,
        crate::linux::process::InitStdio::Streams(pipes.stdio()),
    )?;
    let ours = pipes.into_ours();
    // The exit of this child is what ends the relay.
    let exited = crate::linux::sys::pidfd_open(pid).ok();
    crate::linux::process::sigforward::forward_to(
        pid,
        crate::linux::process::sigforward::USER_SIGNALS,
    );
    let exec_error = match super::start::start(store, &id) {
        Ok(ExecOutcome::Started) => None,
        Ok(ExecOutcome::Failed(_, msg)) => Some(msg),
        Err(e) => Some(e.to_string()),
    };
    tracing::debug!(id, "started");
    let mut session = PipeSession::new(ours, exited, None);
    front.relay(&mut session);
    drop(session);
    let exit_code = wait_child(pid);
    tracing::debug!(id, exit_code, "exited");
    crate::linux::process::sigforward::stop();
    let removed = record_exit(store, &id, exit_code, prepared.cgroup.as_ref())?;
    if opts.auto_remove && !removed {
        super::delete::remove(store, &id, true)?;
    }
    Ok(RunOutcome {
        id,
        exit_code,
        exec_error,
    })
}
