//! Waiting for a container to exit (`wait`, `start -a`), without polling the disk in a busy
//! loop: inotify on the container's folder wakes the waiter when the state file is replaced
//! or the log grows; a slow tick notices a monitor that died without writing anything.

use super::state::{State, Status};
use super::store::ContainerStore;
use super::ContainerError;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::io::Write;
use std::os::fd::AsFd;

/// How often a waiter re-reads the state even without an event (ms).
const TICK_MS: u16 = 500;

fn watcher(store: &ContainerStore, id: &str) -> Result<Inotify, ContainerError> {
    let dir = store.dir(id).dir;
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .map_err(|e| ContainerError::io(&dir, e.into()))?;
    inotify
        .add_watch(
            &dir,
            AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_DELETE_SELF,
        )
        .map_err(|e| ContainerError::io(&dir, e.into()))?;
    Ok(inotify)
}

fn wait_event(inotify: &Inotify) {
    let mut fds = [nix::poll::PollFd::new(
        inotify.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(TICK_MS));
    let _ = inotify.read_events();
}

fn finished(state: &State) -> bool {
    matches!(state.status, Status::Exited | Status::Dead)
}

/// Blocks until container `id` has exited; returns its final state.
pub fn wait_exit(store: &ContainerStore, id: &str) -> Result<State, ContainerError> {
    let inotify = watcher(store, id)?;
    loop {
        let state = store.observe(id)?;
        if finished(&state) {
            return Ok(state);
        }
        wait_event(&inotify);
    }
}

/// Prints the container's log as it grows (from record `skip` on), until the container
/// exits; returns the final state. Records are re-read from the files each time they
/// change, so rotation underneath is harmless.
pub fn follow_log(
    store: &ContainerStore,
    id: &str,
    skip: usize,
    timestamps: bool,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<State, ContainerError> {
    let inotify = watcher(store, id)?;
    let path = store.dir(id).log();
    let mut shown = skip;
    let mut last: Option<super::logfile::Record> = None;
    loop {
        let state = store.observe(id)?;
        let records = super::logfile::read_all(&path);
        // After a rotation dropped old records, resume after the last one printed.
        let start = match &last {
            Some(l) if records.len() < shown => records
                .iter()
                .rposition(|r| r.time == l.time && r.log == l.log)
                .map_or(0, |i| i + 1),
            _ => shown,
        };
        for rec in records.iter().skip(start) {
            super::logfile::print(rec, timestamps, stdout, stderr);
        }
        shown = records.len();
        last = records.last().cloned().or(last);
        if finished(&state) {
            return Ok(state);
        }
        wait_event(&inotify);
    }
}
