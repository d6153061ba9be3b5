//! Waiting for a container to exit (`wait`, `start -a`), without polling the disk in a busy
//! loop: inotify on the container's folder wakes the waiter when the state file is replaced
//! or the log grows; a slow tick notices a monitor that died without writing anything.

use super::state::{State, Status};
use super::store::ContainerStore;
use super::ContainerError;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::io::{Read, Seek, SeekFrom, Write};
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
        let state = store.load(id)?.observed();
        if finished(&state) {
            return Ok(state);
        }
        wait_event(&inotify);
    }
}

/// Copies the container's json-lines log to `stdout`/`stderr` as it grows, until the
/// container exits; returns the final state. `from_start` replays what is already there.
pub fn follow_log(
    store: &ContainerStore,
    id: &str,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<State, ContainerError> {
    let inotify = watcher(store, id)?;
    let path = store.dir(id).log();
    let mut offset = 0u64;
    let mut pending = String::new();
    loop {
        let state = store.load(id)?.observed();
        if let Ok(mut f) = std::fs::File::open(&path) {
            let _ = f.seek(SeekFrom::Start(offset));
            let mut chunk = String::new();
            if let Ok(n) = f.read_to_string(&mut chunk) {
                offset += n as u64;
                pending.push_str(&chunk);
            }
            while let Some(nl) = pending.find('\n') {
                let line: String = pending.drain(..=nl).collect();
                super::monitor::print_log_line(&line, stdout, stderr);
            }
        }
        if finished(&state) {
            return Ok(state);
        }
        wait_event(&inotify);
    }
}
