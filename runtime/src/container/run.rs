//! Foreground `run`: the CLI is the container's monitor. The workload inherits the CLI's
//! stdout and stderr (and stdin with `-i`), as with `runc run`, so nothing is copied on the
//! hot path; signals the CLI receives are forwarded to the container ([`crate::linux::process::sigforward`]).

use super::create::{prepare, spawn_init};
use super::monitor::{record_exit, wait_child};
use super::options::RunOptions;
use super::store::ContainerStore;
use super::ContainerError;
use crate::image::Image;
use crate::linux::process::exec_fifo::ExecOutcome;
use crate::linux::process::Stdio;
use std::os::fd::AsRawFd;

/// What a foreground run ended with.
pub struct RunOutcome {
    /// The container's ID.
    pub id: String,
    /// The workload's exit code (126/127 when it could not be executed).
    pub exit_code: i32,
    /// Why it could not be executed, if so.
    pub exec_error: Option<String>,
}

/// Creates, starts and waits for a container in the foreground.
pub fn run_foreground(
    store: &ContainerStore,
    image: Image,
    opts: &RunOptions,
) -> Result<RunOutcome, ContainerError> {
    tracing::debug!("image resolved");
    let mut prepared = prepare(store, image, opts)?;
    let id = prepared.state.id.clone();
    let devnull = std::fs::File::open("/dev/null")
        .map_err(|e| ContainerError::io(std::path::Path::new("/dev/null"), e))?;
    let stdio = Stdio {
        stdin: (!opts.interactive).then(|| devnull.as_raw_fd()),
        stdout: None,
        stderr: None,
    };
    let pid = spawn_init(store, &mut prepared, stdio, None)?;
    drop(devnull);
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
