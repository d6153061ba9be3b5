//! The Linux process tree: the [`Sandbox`] whose workload is a tree of host processes in
//! their own namespaces, cgroup, overlay root and seccomp filter, made by the isolation core
//! (`crate::linux`). Each method is the verb of this folder that does it.

use super::exec::ExecOptions;
use super::options::RunOptions;
use super::sandbox::{
    has_terminal, Attached, Counters, Isolation, Notify, RunOutcome, Sandbox, TerminalRun,
};
use super::session::{FrameSession, Front, Session};
use super::state::State;
use super::store::ContainerStore;
use super::ContainerError;
use crate::image::Image;
use crate::linux::process::exec_fifo::ExecOutcome;
use std::path::Path;

/// The Linux process-tree isolation.
pub struct ProcessTree;

impl Sandbox for ProcessTree {
    fn isolation(&self) -> Isolation {
        Isolation::Container
    }

    fn create(
        &self,
        store: &ContainerStore,
        image: Image,
        opts: &RunOptions,
        _notify: Notify,
    ) -> Result<String, ContainerError> {
        let prepared = super::create::prepare(store, image, opts)?;
        super::monitor::create_detached(store, prepared)
    }

    fn run_foreground(
        &self,
        store: &ContainerStore,
        image: Image,
        opts: &RunOptions,
        _notify: Notify,
        front: &mut dyn Front,
    ) -> Result<RunOutcome, ContainerError> {
        super::run::run_foreground(store, image, opts, front)
    }

    fn terminal_run(&self) -> TerminalRun {
        // The monitor holds the pty and serves it on the attach socket.
        TerminalRun::Attach
    }

    fn start(
        &self,
        store: &ContainerStore,
        id: &str,
        _notify: Notify,
    ) -> Result<ExecOutcome, ContainerError> {
        super::start::start(store, id)
    }

    fn prepare_start(&self, store: &ContainerStore, id: &str) -> Result<bool, ContainerError> {
        super::start::prepare_start(store, id).map(|()| true)
    }

    fn exec(
        &self,
        store: &ContainerStore,
        id: &str,
        opts: &ExecOptions,
    ) -> Result<Option<Box<dyn Session>>, ContainerError> {
        super::exec::exec(store, id, opts)
    }

    fn counters(&self, state: &State) -> Counters {
        super::stats::host_counters(state)
    }

    fn top(&self, state: &State, ps_args: &[String]) -> Result<Vec<String>, ContainerError> {
        super::top::top(state, ps_args)
    }

    fn freeze(&self, state: &State, frozen: bool) -> Result<(), ContainerError> {
        crate::linux::cgroups::manager(&state.cgroup)
            .set_frozen(frozen)
            .map_err(|e| ContainerError::Setup {
                id: state.id.clone(),
                reason: e.to_string(),
            })
    }

    fn copy_out(
        &self,
        store: &ContainerStore,
        state: &State,
        src: &Path,
        dest: super::cp::CopyDest,
        keep_owners: bool,
    ) -> Result<(), ContainerError> {
        super::cp::copy_out(store, state, src, dest, keep_owners)
    }

    fn write_layer(
        &self,
        store: &ContainerStore,
        state: &State,
        skipped: &[String],
        out: &mut dyn std::io::Write,
    ) -> Result<(), ContainerError> {
        super::commit::write_host_layer(store, state, skipped, out)
    }

    fn copy_in(
        &self,
        store: &ContainerStore,
        state: &State,
        src: super::cp::CopySource,
        dest: &Path,
        keep_owners: bool,
    ) -> Result<(), ContainerError> {
        super::cp::copy_in(store, state, src, dest, keep_owners)
    }

    fn attach(
        &self,
        store: &ContainerStore,
        state: &State,
        _stdin: bool,
    ) -> Result<Attached, ContainerError> {
        if has_terminal(store, &state.id) {
            return terminal_session(store, &state.id).map(Attached::Session);
        }
        if state.log_driver == super::logfile::Driver::None {
            // No log to follow: the monitor relays the output to its socket's clients.
            return socket_session(store, &state.id, false).map(Attached::Session);
        }
        let seen = super::logfile_reader::Cursor::at_end(&store.dir(&state.id).log());
        Ok(Attached::Log { seen })
    }

    fn inspect_extra(
        &self,
        _store: &ContainerStore,
        _id: &str,
    ) -> Option<(&'static str, serde_json::Value)> {
        None
    }

    fn cleanup(&self, _id: &str) {
        // Everything it had lived in its folder and cgroup, which `rm` removed.
    }
}

/// A session with the terminal the monitor of container `id` holds, on its attach socket;
/// once the terminal closes, the exit code the monitor records.
pub fn terminal_session(
    store: &ContainerStore,
    id: &str,
) -> Result<Box<dyn Session>, ContainerError> {
    socket_session(store, id, true)
}

/// A session on the attach socket of container `id`'s monitor: its terminal (`tty`), or
/// the output and stdin pipe of a container run with `-i` and no terminal.
pub fn socket_session(
    store: &ContainerStore,
    id: &str,
    tty: bool,
) -> Result<Box<dyn Session>, ContainerError> {
    let dir = store.dir(id).dir;
    let stream = super::attach::connect(&dir).map_err(|e| ContainerError::io(&dir, e))?;
    let (store, id) = (store.clone(), id.to_string());
    let finish = Box::new(move |end| match end {
        super::session::End::Detached => Ok(None),
        _ => Ok(super::wait::wait_exit(&store, &id)?.exit_code),
    });
    Ok(Box::new(FrameSession::new(stream, tty, finish)))
}
