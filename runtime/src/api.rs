//! The library API every front end calls (the CLI today; the Docker Engine API and the OCI
//! runtime next): the verbs as functions over typed options ([`RunOptions`],
//! [`ExecOptions`]), returning typed results and telling what happens on the way through
//! [`Notice`]s. Nothing here prints.
//!
//! Each verb finds the container's [`Sandbox`] from the isolation its record holds
//! ([`sandbox`]): the one place that names both implementations, so that neither
//! `container/` nor `vm/` depends on the other's verbs.

use crate::container::cp::{CopyDest, CopySource};
use crate::container::exec::ExecOptions;
use crate::container::options::RunOptions;
use crate::container::process_tree::ProcessTree;
use crate::container::sandbox::{Attached, Isolation, Notify, RunOutcome, Sandbox};
use crate::container::session::{Front, Session};
use crate::container::stats::Usage;
use crate::container::{ContainerError, ContainerStore, State, Status};
use crate::image::Image;
use crate::linux::process::exec_fifo::ExecOutcome;
use crate::vm::sandbox::MicroVm;
use std::path::Path;
use std::time::Duration;

pub use crate::container::sandbox::Notice;

/// The implementation of `isolation`.
pub fn sandbox(isolation: Isolation) -> &'static dyn Sandbox {
    match isolation {
        Isolation::Container => &ProcessTree,
        Isolation::Vm => &MicroVm,
    }
}

/// The sandbox of the container `state` records.
pub fn sandbox_of(state: &State) -> &'static dyn Sandbox {
    sandbox(state.isolation)
}

/// The container `id` as it is now, and its sandbox.
fn find(store: &ContainerStore, id: &str) -> Result<(State, &'static dyn Sandbox), ContainerError> {
    let state = store.observe(id)?;
    let sandbox = sandbox_of(&state);
    Ok((state, sandbox))
}

/// `create`: the container in `opts.isolation`, created and not started; its ID.
pub fn create(
    store: &ContainerStore,
    image: Image,
    opts: &RunOptions,
    notify: Notify,
) -> Result<String, ContainerError> {
    sandbox(opts.isolation).create(store, image, opts, notify)
}

/// `run -d`: created and started under a detached monitor; its ID and how the execve went.
pub fn run_detached(
    store: &ContainerStore,
    image: Image,
    opts: &RunOptions,
    notify: Notify,
) -> Result<(String, ExecOutcome), ContainerError> {
    sandbox(opts.isolation).run_detached(store, image, opts, notify)
}

/// `run` in the foreground, this process as the monitor, until the workload exits; its
/// streams go through `front`.
pub fn run_foreground(
    store: &ContainerStore,
    image: Image,
    opts: &RunOptions,
    notify: Notify,
    front: &mut dyn Front,
) -> Result<RunOutcome, ContainerError> {
    sandbox(opts.isolation).run_foreground(store, image, opts, notify, front)
}

/// `start`.
pub fn start(
    store: &ContainerStore,
    id: &str,
    notify: Notify,
) -> Result<ExecOutcome, ContainerError> {
    let (_, sandbox) = find(store, id)?;
    sandbox.start(store, id, notify)
}

/// Makes a stopped container ready to be attached to before it starts (`start -ai`); false
/// when its isolation has nothing to prepare (its output is then followed in its log).
pub fn prepare_start(store: &ContainerStore, id: &str) -> Result<bool, ContainerError> {
    let (_, sandbox) = find(store, id)?;
    sandbox.prepare_start(store, id)
}

/// `exec`: the session with the command's streams, for the front end to relay (its
/// `finish`: the command's exit code); None with `-d`.
pub fn exec(
    store: &ContainerStore,
    id: &str,
    opts: &ExecOptions,
) -> Result<Option<Box<dyn Session>>, ContainerError> {
    let (_, sandbox) = find(store, id)?;
    sandbox.exec(store, id, opts)
}

/// `kill`.
pub fn kill(store: &ContainerStore, id: &str, signal: i32) -> Result<(), ContainerError> {
    let (state, sandbox) = find(store, id)?;
    sandbox.signal(store, id, signal)?;
    let signal = signal.to_string();
    crate::events::container(store.root(), "kill", &state, &[("signal", &signal)]);
    Ok(())
}

/// `stop`: the stop signal, SIGKILL after the grace period; the final state. Shared: both
/// isolations are stopped through the process their record names.
pub fn stop(
    store: &ContainerStore,
    id: &str,
    signal: Option<i32>,
    timeout: Option<Duration>,
) -> Result<State, ContainerError> {
    let state = crate::container::stop::stop(store, id, signal, timeout)?;
    crate::events::container(store.root(), "stop", &state, &[]);
    Ok(state)
}

/// `wait`: the final state once the container has exited.
pub fn wait(store: &ContainerStore, id: &str) -> Result<State, ContainerError> {
    let (_, sandbox) = find(store, id)?;
    sandbox.wait(store, id)
}

/// `pause` (`paused`) or `unpause`.
pub fn pause(store: &ContainerStore, id: &str, paused: bool) -> Result<(), ContainerError> {
    let (state, sandbox) = find(store, id)?;
    crate::container::pause::set_paused(store, id, paused, sandbox)?;
    let action = if paused { "pause" } else { "unpause" };
    crate::events::container(store.root(), action, &state, &[]);
    Ok(())
}

/// `top`: a header and the container's processes.
pub fn top(
    store: &ContainerStore,
    id: &str,
    ps_args: &[String],
) -> Result<Vec<String>, ContainerError> {
    let (state, sandbox) = find(store, id)?;
    sandbox.top(&state, ps_args)
}

/// `stats`: each container's usage over `interval`.
pub fn stats(containers: &[State], interval: Duration) -> Vec<Usage> {
    crate::container::stats::sample(containers, interval, &|s| sandbox_of(s).counters(s))
}

/// `cp CONTAINER:SRC DEST` (or to a tar stream; `keep_owners`: `cp -a`, the files
/// extracted on the host take the uid and gid the container's archive names).
pub fn copy_out(
    store: &ContainerStore,
    id: &str,
    src: &Path,
    dest: CopyDest,
    keep_owners: bool,
) -> Result<(), ContainerError> {
    let (state, sandbox) = find(store, id)?;
    sandbox.copy_out(store, &state, src, dest, keep_owners)
}

/// `export`: the container's root, flattened, as a tar stream (its files, without the
/// kernel's views mounted in a running one: /proc, /sys).
pub fn export(
    store: &ContainerStore,
    id: &str,
    out: &mut (dyn std::io::Write + Send),
) -> Result<(), ContainerError> {
    copy_out(store, id, Path::new("/"), CopyDest::Tar(out), false)
}

/// `commit`: the container's changes as a new image; its ID (`sha256:...`).
pub fn commit(
    store: &ContainerStore,
    id: &str,
    request: crate::container::commit::CommitRequest,
) -> Result<String, ContainerError> {
    let (_, sandbox) = find(store, id)?;
    crate::container::commit::commit(store, id, sandbox, request)
}

/// `cp SRC CONTAINER:DEST` (or from a tar stream; `keep_owners`: `cp -a`, the files take
/// the uid and gid the archive names, else the container's root's).
pub fn copy_in(
    store: &ContainerStore,
    id: &str,
    src: CopySource,
    dest: &Path,
    keep_owners: bool,
) -> Result<(), ContainerError> {
    let (state, sandbox) = find(store, id)?;
    crate::container::cp::check_source(&src)?;
    sandbox.copy_in(store, &state, src, dest, keep_owners)
}

/// `attach` to a running container: a session to relay, or its log to follow.
pub fn attach(store: &ContainerStore, id: &str, stdin: bool) -> Result<Attached, ContainerError> {
    let (state, sandbox) = find(store, id)?;
    if state.status != Status::Running {
        return Err(ContainerError::WrongState {
            id: id.to_string(),
            reason: "You cannot attach to a stopped container, start it first".into(),
        });
    }
    sandbox.attach(store, &state, stdin)
}

/// A session with the terminal a created container's monitor already holds (`run -t`,
/// `start -ai` in the process tree: attached before the start, so that no output is
/// missed).
pub fn terminal_session(
    store: &ContainerStore,
    id: &str,
) -> Result<Box<dyn Session>, ContainerError> {
    crate::container::process_tree::terminal_session(store, id)
}

/// A session with the stdin and output of a process-tree container run with `-i` and no
/// terminal, on its monitor's attach socket (its output is also in its log).
pub fn input_session(store: &ContainerStore, id: &str) -> Result<Box<dyn Session>, ContainerError> {
    crate::container::process_tree::socket_session(store, id, false)
}

/// `inspect`: Docker's JSON object for the container, with what its isolation adds.
pub fn inspect(store: &ContainerStore, id: &str) -> Result<serde_json::Value, ContainerError> {
    let (_, sandbox) = find(store, id)?;
    let mut value = crate::container::inspect::inspect(store, id)?;
    if let Some((key, extra)) = sandbox.inspect_extra(store, id) {
        value[key] = extra;
    }
    Ok(value)
}

/// `rm`: the container and everything it held, in its folder and outside it (each
/// isolation's leftovers: a record that cannot be read no longer says which it had).
pub fn remove(store: &ContainerStore, id: &str, force: bool) -> Result<(), ContainerError> {
    crate::container::delete::remove(store, id, force)?;
    cleanup(id);
    Ok(())
}

/// `rm -v` (and `run --rm`): the container removed, then the anonymous volumes it made.
pub fn remove_with_volumes(
    store: &ContainerStore,
    id: &str,
    force: bool,
) -> Result<(), ContainerError> {
    let volumes = store.load(id).map(|s| s.volumes).unwrap_or_default();
    remove(store, id, force)?;
    crate::container::volumes::remove_anonymous(store, &volumes)
}

/// `container prune`: the stopped containers `wanted` chooses removed; their IDs and the
/// bytes they held.
pub fn prune(
    store: &ContainerStore,
    wanted: &dyn Fn(&State) -> bool,
) -> Result<(Vec<String>, u64), ContainerError> {
    let (removed, bytes) = crate::container::prune::prune(store, wanted)?;
    removed.iter().for_each(|id| cleanup(id));
    Ok((removed, bytes))
}

/// Which image each container of `store` uses (what `rmi` and the prunes must keep).
pub fn image_uses(store: &ContainerStore) -> Vec<crate::image::remove::ImageUse> {
    store
        .list()
        .into_iter()
        .map(|s| crate::image::remove::ImageUse {
            running: matches!(s.status, Status::Running),
            container: s.id,
            image: s.image_id,
        })
        .collect()
}

fn cleanup(id: &str) {
    for isolation in Isolation::ALL {
        sandbox(isolation).cleanup(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_isolation_is_served_by_its_own_sandbox() {
        for isolation in Isolation::ALL {
            assert_eq!(sandbox(isolation).isolation(), isolation);
        }
        let vm = sandbox(Isolation::Vm);
        let tree = sandbox(Isolation::Container);
        assert_eq!(
            vm.terminal_run(),
            crate::container::sandbox::TerminalRun::InRun
        );
        assert_eq!(
            tree.terminal_run(),
            crate::container::sandbox::TerminalRun::Attach
        );
    }

    #[test]
    fn a_record_written_before_the_enum_chooses_the_sandbox_it_names() {
        use crate::container::state::Remnant;
        for (on_disk, isolation) in [("vm", Isolation::Vm), ("container", Isolation::Container)] {
            let mut value = serde_json::to_value(State::unreadable(
                "a",
                String::new(),
                Remnant::default(),
                String::new(),
            ))
            .unwrap();
            value["isolation"] = serde_json::Value::String(on_disk.into());
            let state: State = serde_json::from_value(value).unwrap();
            assert_eq!(sandbox_of(&state).isolation(), isolation);
        }
    }

    #[test]
    fn a_vm_refuses_ps_options_and_a_stopped_process_tree_has_no_processes() {
        let mut state = State::unreadable("a", String::new(), Default::default(), String::new());
        state.isolation = Isolation::Vm;
        let refused = sandbox_of(&state).top(&state, &["aux".into()]);
        assert!(
            matches!(refused, Err(ContainerError::InvalidArgument(m)) if m.contains("ps options"))
        );
        state.isolation = Isolation::Container;
        let stopped = sandbox_of(&state).top(&state, &[]);
        assert!(matches!(stopped, Err(ContainerError::WrongState { .. })));
    }
}
