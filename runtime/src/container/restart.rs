//! Starting a stopped container again, and restart policies (`--restart`) with Docker's
//! back-off: 100 ms doubling up to one minute, reset after ten seconds of running.

use super::create::Prepared;
use super::state::State;
use super::store::ContainerStore;
use super::ContainerError;
use crate::image::ImageStore;
use crate::linux::cgroups;
use crate::linux::process::exec_fifo;
use crate::linux::seccomp::compile;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// First back-off delay.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest back-off delay.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run at least this long resets the back-off.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);

/// `--restart`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never.
    #[default]
    No,
    /// After a non-zero exit, at most `max` times (0: no limit).
    OnFailure {
        /// Most restarts (0: unlimited).
        max: u32,
    },
    /// After every exit, unless stopped by the user.
    Always,
    /// As `always`; differs only across an engine restart, which capsa (daemonless) has not.
    UnlessStopped,
}

impl RestartPolicy {
    /// Parses Docker's forms: `no`, `on-failure[:N]`, `always`, `unless-stopped`.
    pub fn parse(value: &str) -> Result<RestartPolicy, ContainerError> {
        let bad = || {
            ContainerError::InvalidArgument(format!(
                "--restart {value:?}: expected no, on-failure[:N], always or unless-stopped"
            ))
        };
        Ok(match value.split_once(':') {
            None if value == "no" => RestartPolicy::No,
            None if value == "always" => RestartPolicy::Always,
            None if value == "unless-stopped" => RestartPolicy::UnlessStopped,
            None if value == "on-failure" => RestartPolicy::OnFailure { max: 0 },
            Some(("on-failure", n)) => RestartPolicy::OnFailure {
                max: n.parse().map_err(|_| bad())?,
            },
            _ => return Err(bad()),
        })
    }

    /// Docker's name (`inspect` .HostConfig.RestartPolicy.Name).
    pub fn name(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure { .. } => "on-failure",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
        }
    }

    /// Whether a container that exited with `code`, restarted `count` times so far, is
    /// restarted again.
    pub fn should_restart(self, code: i32, count: u32, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match self {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure { max } => code != 0 && (max == 0 || count < max),
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        }
    }
}

/// The delay before restart number `count + 1`, given how long the last run lasted.
pub fn backoff(previous: Duration, ran_for: Duration) -> Duration {
    if ran_for >= BACKOFF_RESET_AFTER || previous.is_zero() {
        return BACKOFF_START;
    }
    (previous * 2).min(BACKOFF_MAX)
}

/// Runs container `id` until its restart policy lets it rest, for either isolation: `run`
/// runs it once (given the state to run again with, None the first time) and returns its
/// exit code once recorded (None: the container was removed meanwhile). After each exit the
/// policy decides ([`next_run`]). Returns the last exit code.
pub fn supervise<E>(
    store: &ContainerStore,
    id: &str,
    mut run: impl FnMut(Option<State>) -> Result<Option<i32>, E>,
) -> Result<Option<i32>, E> {
    let mut delay = Duration::ZERO;
    let mut again = None;
    loop {
        let started = std::time::Instant::now();
        let Some(code) = run(again.take())? else {
            return Ok(None);
        };
        match next_run(store, id, code, &mut delay, started.elapsed()) {
            Some(state) => again = Some(state),
            None => return Ok(Some(code)),
        }
    }
}

/// Whether the restart policy runs container `id` again after an exit with `code` (after a
/// run of `ran_for`): waits out the back-off (`delay`, doubled each time), unless the user
/// stops or removes the container meanwhile, counts the restart and returns the state to
/// run with (still `restarting` until the new run clears it); None when it rests.
pub fn next_run(
    store: &ContainerStore,
    id: &str,
    code: i32,
    delay: &mut Duration,
    ran_for: Duration,
) -> Option<State> {
    let state = store.load(id).ok()?;
    if !state
        .restart_policy
        .should_restart(code, state.restart_count, state.stopped_by_user)
    {
        if state.restarting {
            let _ = store.update(id, |s| s.restarting = false);
        }
        return None;
    }
    *delay = backoff(*delay, ran_for);
    store.update(id, |s| s.restarting = true).ok()?;
    if !sleep_unless_stopped(store, id, *delay) {
        let _ = store.update(id, |s| s.restarting = false);
        return None;
    }
    store.update(id, |s| s.restart_count += 1).ok()?
}

/// Waits `delay` before a restart, in short steps so that a `stop` or `rm` meanwhile is
/// honoured; false when the container should not be restarted after all.
fn sleep_unless_stopped(store: &ContainerStore, id: &str, delay: Duration) -> bool {
    const STEP: Duration = Duration::from_millis(50);
    let until = std::time::Instant::now() + delay;
    loop {
        match store.load(id) {
            Ok(s) if !s.stopped_by_user => {}
            _ => return false,
        }
        let now = std::time::Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep(STEP.min(until - now));
    }
}

/// Lays a stopped container out again for a new init: its spec, its writable layer (kept),
/// its cgroup (made anew), its compiled filters and a new start gate.
pub fn prepare_again(store: &ContainerStore, state: &State) -> Result<Prepared, ContainerError> {
    let dir = store.dir(&state.id);
    let config = std::fs::read(dir.config()).map_err(|e| ContainerError::io(&dir.config(), e))?;
    let spec: oci_spec::runtime::Spec = serde_json::from_slice(&config)
        .map_err(|e| ContainerError::io(&dir.config(), std::io::Error::other(e)))?;
    let image = ImageStore::new(store.root()).resolve(&state.image_id)?;
    super::volumes::check_again(store, &state.volumes)?;
    let setup_err = |e: &dyn std::fmt::Display| ContainerError::Setup {
        id: state.id.clone(),
        reason: e.to_string(),
    };
    let seccomp =
        compile::for_spec(&spec, &store.root().seccomp_cache()).map_err(|e| setup_err(&e))?;
    let cgroup = cgroups::manager(&state.cgroup);
    let resources = super::spec::resources_of(&spec);
    cgroup.apply(&resources).map_err(|e| setup_err(&e))?;
    let fifo = dir.exec_fifo();
    let _ = std::fs::remove_file(&fifo);
    exec_fifo::create(&fifo).map_err(|e| ContainerError::io(&fifo, e))?;
    if let Some(base) = state.userns_base {
        nix::unistd::chown(
            &fifo,
            Some(nix::unistd::Uid::from_raw(base)),
            Some(nix::unistd::Gid::from_raw(base)),
        )
        .map_err(|e| ContainerError::io(&fifo, e.into()))?;
    }
    Ok(Prepared {
        state: state.clone(),
        spec,
        layers: dir.overlay_layers(image.layer_dirs),
        seccomp,
        cgroup,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_like_docker() {
        assert_eq!(RestartPolicy::parse("no").unwrap(), RestartPolicy::No);
        assert_eq!(
            RestartPolicy::parse("on-failure:3").unwrap(),
            RestartPolicy::OnFailure { max: 3 }
        );
        assert_eq!(
            RestartPolicy::parse("on-failure").unwrap(),
            RestartPolicy::OnFailure { max: 0 }
        );
        assert_eq!(
            RestartPolicy::parse("unless-stopped").unwrap(),
            RestartPolicy::UnlessStopped
        );
        assert!(RestartPolicy::parse("sometimes").is_err());
        assert!(RestartPolicy::parse("on-failure:x").is_err());
    }

    #[test]
    fn decisions_follow_the_policy() {
        let f = RestartPolicy::OnFailure { max: 2 };
        assert!(f.should_restart(1, 0, false));
        assert!(f.should_restart(1, 1, false));
        assert!(!f.should_restart(1, 2, false));
        assert!(!f.should_restart(0, 0, false));
        assert!(RestartPolicy::Always.should_restart(0, 99, false));
        assert!(!RestartPolicy::Always.should_restart(0, 0, true));
        assert!(!RestartPolicy::No.should_restart(1, 0, false));
    }

    #[test]
    fn backoff_doubles_to_a_minute_and_resets() {
        let mut d = Duration::ZERO;
        let mut seen = vec![];
        for _ in 0..12 {
            d = backoff(d, Duration::from_millis(5));
            seen.push(d);
        }
        assert_eq!(seen[0], Duration::from_millis(100));
        assert_eq!(seen[1], Duration::from_millis(200));
        assert_eq!(*seen.last().unwrap(), Duration::from_secs(60));
        assert_eq!(
            backoff(Duration::from_secs(60), Duration::from_secs(11)),
            Duration::from_millis(100)
        );
    }

    /// A store in a temporary root holding container `id` with `policy`.
    fn store_with(id: &str, policy: RestartPolicy) -> (tempfile::TempDir, ContainerStore) {
        use crate::container::state::{Remnant, Status};
        let dir = tempfile::tempdir().unwrap();
        let root = crate::root::StateRoot::open(&dir.path().join("root")).unwrap();
        let store = ContainerStore::new(&root);
        store.create_dir(id).unwrap();
        let mut state = State::unreadable(id, String::new(), Remnant::default(), String::new());
        state.unreadable = None;
        state.error = None;
        state.status = Status::Exited;
        state.restart_policy = policy;
        store.save(&state).unwrap();
        (dir, store)
    }

    #[test]
    fn one_loop_restarts_as_the_policy_says_and_counts_each_restart() {
        let id = "c".repeat(64);
        let (_dir, store) = store_with(&id, RestartPolicy::OnFailure { max: 2 });
        let mut runs = Vec::new();
        let last = supervise(&store, &id, |again| {
            runs.push(again.map(|s| s.restart_count));
            Ok::<_, ()>(Some(3))
        });
        assert_eq!(last, Ok(Some(3)));
        assert_eq!(
            runs,
            vec![None, Some(1), Some(2)],
            "the first run, then two restarts"
        );
        let state = store.load(&id).unwrap();
        assert_eq!((state.restart_count, state.restarting), (2, false));
    }

    #[test]
    fn a_container_the_user_stopped_or_removed_is_not_run_again() {
        let id = "d".repeat(64);
        let (_dir, store) = store_with(&id, RestartPolicy::Always);
        let mut runs = 0;
        let last = supervise(&store, &id, |_| {
            runs += 1;
            // The user stops it while it runs: the policy must not bring it back.
            store.update(&id, |s| s.stopped_by_user = true).unwrap();
            Ok::<_, ()>(Some(0))
        });
        assert_eq!((last, runs), (Ok(Some(0)), 1));
        let gone = supervise(&store, &id, |_| Ok::<_, ()>(None));
        assert_eq!(
            gone,
            Ok(None),
            "a container removed meanwhile ends the loop"
        );
    }
}
