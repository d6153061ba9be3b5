//! Waiting for a container to exit (`wait`, `start -a`), without polling the disk in a busy
//! loop: inotify on the container's folder wakes the waiter when the state file is replaced
//! or the log grows; a slow tick notices a monitor that died without writing anything.
//!
//! inotify is not always there to be had: instances and watches are counted per user
//! (`fs.inotify.max_user_instances`, 128 by default), and a container's root is host root,
//! so a workload can take them all (rt1 #8). A waiter then falls back to re-reading the
//! state on a short, fixed tick: slower to notice, never failing.

use super::logfile_reader::Cursor;
use super::state::{State, Status};
use super::store::ContainerStore;
use super::ContainerError;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;

/// How often a waiter re-reads the state even without an event (ms).
const TICK_MS: u16 = 500;
/// How often a waiter without inotify re-reads the state (ms): often enough that `wait`
/// answers promptly, rarely enough to cost nothing measurable (one small file read).
const POLL_MS: u64 = 100;

/// What wakes a waiter to look at the container again.
enum Waker {
    /// Events on the container's folder, or the tick.
    Events(Inotify),
    /// No inotify to be had: the bounded poll.
    Poll,
}

impl Waker {
    /// inotify on the container's folder `dir`, or the poll when the kernel gives none.
    fn on(dir: &Path) -> Waker {
        Waker::from_watch(dir, watch(dir))
    }

    /// The waker for the outcome of setting up a watch on `dir`.
    fn from_watch(dir: &Path, watch: nix::Result<Inotify>) -> Waker {
        match watch {
            Ok(inotify) => Waker::Events(inotify),
            Err(e) => {
                tracing::debug!(dir = %dir.display(), "no inotify ({e}): polling every {POLL_MS} ms");
                Waker::Poll
            }
        }
    }

    /// Returns after an event, the tick, or the poll interval.
    fn wait(&self) {
        match self {
            Waker::Events(inotify) => {
                let mut fds = [nix::poll::PollFd::new(
                    inotify.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(TICK_MS));
                let _ = inotify.read_events();
            }
            Waker::Poll => std::thread::sleep(std::time::Duration::from_millis(POLL_MS)),
        }
    }
}

/// An inotify instance watching `dir` for a replaced state file, a growing log, and the
/// folder's removal.
fn watch(dir: &Path) -> nix::Result<Inotify> {
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)?;
    inotify.add_watch(
        dir,
        AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_DELETE_SELF,
    )?;
    Ok(inotify)
}

fn finished(state: &State) -> bool {
    matches!(state.status, Status::Exited | Status::Dead)
}

/// Blocks until container `id` has exited; returns its final state.
pub fn wait_exit(store: &ContainerStore, id: &str) -> Result<State, ContainerError> {
    wait_exit_with(store, id, &Waker::on(&store.dir(id).dir))
}

/// Blocks until `done` holds for container `id` as it is now (it is asked again each time
/// the container's folder changes, and on the slow tick); None once the container is
/// gone (removed). `done` may also end the wait for the caller's own reason (a client
/// that went away).
pub fn wait_until(
    store: &ContainerStore,
    id: &str,
    mut done: impl FnMut(&State) -> bool,
) -> Result<Option<State>, ContainerError> {
    let waker = Waker::on(&store.dir(id).dir);
    loop {
        match store.observe(id) {
            Ok(state) if done(&state) => return Ok(Some(state)),
            Ok(_) => {}
            Err(ContainerError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
        waker.wait();
    }
}

fn wait_exit_with(
    store: &ContainerStore,
    id: &str,
    waker: &Waker,
) -> Result<State, ContainerError> {
    loop {
        let state = store.observe(id)?;
        if finished(&state) {
            return Ok(state);
        }
        waker.wait();
    }
}

/// Prints the container's log as it grows (from `from` on), until the container exits;
/// returns the final state.
pub fn follow_log(
    store: &ContainerStore,
    id: &str,
    from: Cursor,
    timestamps: bool,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<State, ContainerError> {
    let mut print = |rec: &super::logfile::Record| {
        super::logfile::print(rec, timestamps, stdout, stderr);
        true
    };
    match follow_records(store, id, from, &mut print, &|| false)? {
        Followed::Exited(state) => Ok(*state),
        Followed::Removed | Followed::Stopped => Err(ContainerError::NotFound(id.to_string())),
    }
}

/// How [`follow_records`] ended.
#[derive(Debug)]
pub enum Followed {
    /// The container exited (its final state), every record handed on.
    Exited(Box<State>),
    /// The container was removed (`--rm`) after it exited, every record handed on.
    Removed,
    /// The reader went away (`each` refused a record, or `stop` said so).
    Stopped,
}

/// Hands each record of the container's log to `each` as the log grows (from `from` on),
/// until the container exits or is removed, or the reader goes: `each` returns false, or
/// `stop` (asked at every wake-up, at least every half second) true. Each wake-up reads
/// only what was appended since the last; the cursor holds the current log file open, so
/// that what a container removed on exit (`--rm`) wrote last is still read.
pub fn follow_records(
    store: &ContainerStore,
    id: &str,
    mut from: Cursor,
    each: &mut dyn FnMut(&super::logfile::Record) -> bool,
    stop: &dyn Fn() -> bool,
) -> Result<Followed, ContainerError> {
    let waker = Waker::on(&store.dir(id).dir);
    loop {
        let state = match store.observe(id) {
            Ok(state) => state,
            Err(ContainerError::NotFound(_)) => {
                return Ok(match from.read_new(each) {
                    true => Followed::Removed,
                    false => Followed::Stopped,
                });
            }
            Err(e) => return Err(e),
        };
        if !from.read_new(each) {
            return Ok(Followed::Stopped);
        }
        if finished(&state) {
            return Ok(Followed::Exited(Box::new(state)));
        }
        if stop() {
            return Ok(Followed::Stopped);
        }
        waker.wait();
    }
}

/// Blocks until `done` holds for the container's state (its state then), or `stop` (asked
/// at every wake-up) says the caller has gone (None).
pub fn wait_for(
    store: &ContainerStore,
    id: &str,
    done: &dyn Fn(&State) -> bool,
    stop: &dyn Fn() -> bool,
) -> Result<Option<State>, ContainerError> {
    let waker = Waker::on(&store.dir(id).dir);
    loop {
        let state = store.observe(id)?;
        if done(&state) {
            return Ok(Some(state));
        }
        if stop() {
            return Ok(None);
        }
        waker.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::state::Remnant;

    /// A store in a temporary root holding container `id`, recorded running with this
    /// process as its init (alive as long as the test runs).
    fn running(id: &str) -> (tempfile::TempDir, ContainerStore) {
        let dir = tempfile::tempdir().unwrap();
        let root = crate::root::StateRoot::open(&dir.path().join("root")).unwrap();
        let store = ContainerStore::new(&root);
        store.create_dir(id).unwrap();
        let me = std::process::id() as i32;
        let mut state = State::unreadable(id, String::new(), Remnant::default(), String::new());
        state.unreadable = None;
        state.error = None;
        state.isolation = crate::container::sandbox::Isolation::Container;
        state.status = Status::Running;
        state.pid = Some(me);
        state.pid_start_time = crate::container::state::process_start_time(me);
        store.save(&state).unwrap();
        (dir, store)
    }

    /// With inotify unavailable (EMFILE: the user's instances are all taken), waiting still
    /// sees the exit. Tested through the seam: exhausting host root's instances for real
    /// would break every other inotify user on the machine for the test's duration.
    #[test]
    fn a_waiter_without_inotify_polls_and_sees_the_exit() {
        let id = "a".repeat(64);
        let (_dir, store) = running(&id);
        let waker = Waker::from_watch(&store.dir(&id).dir, Err(nix::errno::Errno::EMFILE));
        assert!(matches!(waker, Waker::Poll));
        std::thread::scope(|s| {
            let waiter = s.spawn(|| wait_exit_with(&store, &id, &waker));
            store
                .update(&id, |st| {
                    st.status = Status::Exited;
                    st.exit_code = Some(7);
                })
                .unwrap();
            let state = waiter.join().unwrap().unwrap();
            assert_eq!((state.status, state.exit_code), (Status::Exited, Some(7)));
        });
    }

    #[test]
    fn a_watch_is_used_when_the_kernel_gives_one() {
        let id = "b".repeat(64);
        let (_dir, store) = running(&id);
        assert!(matches!(Waker::on(&store.dir(&id).dir), Waker::Events(_)));
    }

    fn record(text: &str) -> String {
        format!(
            "{{\"log\":\"{text}\\n\",\"stream\":\"stdout\",\"time\":\"2026-01-01T00:00:00Z\"}}\n"
        )
    }

    /// A container removed on exit (`--rm`) takes its log with it; what it wrote last is
    /// still handed on, read through the file the follower holds.
    #[test]
    fn the_last_records_of_a_container_removed_on_exit_are_followed() {
        use std::io::Write;
        let id = "c".repeat(64);
        let (_dir, store) = running(&id);
        let log = store.dir(&id).log();
        let mut seen = Vec::new();
        let mut each = |rec: &super::super::logfile::Record| {
            seen.push(rec.log.clone());
            if seen.len() == 1 {
                // The workload's last words, then its removal, before the follower looks again.
                let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
                f.write_all(record("last").as_bytes()).unwrap();
                std::fs::remove_dir_all(store.dir(&id).dir).unwrap();
            }
            true
        };
        let from = Cursor::at_end(&log);
        std::fs::write(&log, record("first")).unwrap();
        let followed = follow_records(&store, &id, from, &mut each, &|| false).unwrap();
        assert!(matches!(followed, Followed::Removed), "{followed:?}");
        assert_eq!(seen, ["first\n", "last\n"]);
    }

    #[test]
    fn a_follower_whose_reader_has_gone_stops() {
        let id = "d".repeat(64);
        let (_dir, store) = running(&id);
        let from = Cursor::at_end(&store.dir(&id).log());
        let followed = follow_records(&store, &id, from, &mut |_| true, &|| true).unwrap();
        assert!(matches!(followed, Followed::Stopped));
    }
}
