//! The container verbs of runc's layout over the isolation core: `create` clones the init
//! as this process's child and leaves it at the start gate; `start` opens the gate; `kill`,
//! `delete`, `pause`, `resume`, `update` and `ps` act on the recorded init and cgroup.

use super::state::{self, Dir, Record, Status};
use super::{bundle, console, hooks, RuntimeError};
use crate::linux::cgroups::{self, CgroupManager, CgroupMode, CgroupPaths};
use crate::linux::process::exec_fifo::{self, ExecOutcome};
use crate::linux::process::{self, InitConfig, InitStdio, Stdio};
use crate::linux::seccomp::compile;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long `start` waits for the init to take the gate.
const GATE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `delete --force` waits for a killed init to exit.
const KILL_TIMEOUT_MS: i32 = 10_000;

/// What `create` (and `run`) are given besides the ID.
pub struct CreateOptions {
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    /// `--preserve-fds N`: the caller's descriptors 3 to 3+N-1 stay open in the init.
    pub preserve_fds: u32,
    /// The runtime was invoked as `capsa-vm`: the container runs in a VM (unless the
    /// bundle's annotation says otherwise).
    pub vm: bool,
}

/// The seccomp cache under the root (a `.` name: never a container ID).
fn seccomp_cache(root: &Path) -> PathBuf {
    root.join(".seccomp")
}

/// Creates container `id` from `opts.bundle`: the init waits at the start gate, a child of
/// this process (so of the caller's subreaper once this process exits). Returns its PID.
/// On failure nothing is left: no record, cgroup or process.
pub fn create(root: &Path, id: &str, opts: &CreateOptions) -> Result<i32, RuntimeError> {
    let dir = Dir::of(root, id)?;
    let bundle_dir = std::path::absolute(&opts.bundle).map_err(RuntimeError::io(format!(
        "bundle {}",
        opts.bundle.display()
    )))?;
    let spec = bundle::load(&bundle_dir)?;
    bundle::check_supported(&spec)?;
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    if terminal && opts.console_socket.is_none() {
        return Err(RuntimeError::Usage(
            "process.terminal is set: a --console-socket is needed to hand the terminal over"
                .into(),
        ));
    }
    if !terminal && opts.console_socket.is_some() {
        return Err(RuntimeError::Usage(
            "--console-socket given but process.terminal is not set".into(),
        ));
    }
    // Private to root: config.json holds the process's environment.
    let private = || {
        let mut b = std::fs::DirBuilder::new();
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b
    };
    private()
        .recursive(true)
        .create(root)
        .map_err(RuntimeError::io(root.display().to_string()))?;
    match private().create(&dir.dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(RuntimeError::IdInUse(id.to_string()))
        }
        Err(e) => return Err(RuntimeError::io(dir.dir.display().to_string())(e)),
    }
    let mut cgroup_made = None;
    let result = match super::vm::wanted(root, &spec, opts.vm) {
        Ok(true) => super::vm::create_in(&dir, id, &spec, &bundle_dir, opts),
        Ok(false) => create_in(&dir, id, &spec, &bundle_dir, opts, &mut cgroup_made),
        Err(e) => Err(e),
    };
    if result.is_err() {
        if let Some(c) = cgroup_made {
            let _ = cgroups::manager(&c).destroy();
        }
        let _ = std::fs::remove_dir_all(&dir.dir);
    }
    result
}

fn setup<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> RuntimeError {
    move |e| RuntimeError::Setup(format!("{what}: {e}"))
}

/// The cgroup directories `linux.cgroupsPath` names (absolute: from each hierarchy's
/// root; relative: below this process's own cgroup), or `capsa-runc/<id>` below it.
pub(super) fn cgroup_paths(
    spec: &oci_spec::runtime::Spec,
    id: &str,
) -> Result<(CgroupMode, CgroupPaths), RuntimeError> {
    let mode =
        CgroupMode::detect().ok_or_else(|| setup("cgroups")(cgroups::CgroupError::NotMounted))?;
    let path = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
    let (parent, name) = match &path {
        Some(p) => {
            if p.as_os_str().to_string_lossy().contains(':') {
                return Err(RuntimeError::Unsupported {
                    field: "linux.cgroupsPath".into(),
                    detail: format!(" as a systemd slice ({})", p.display()),
                });
            }
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            let parent = p.parent().map(|d| d.display().to_string());
            (
                parent.filter(|d| !d.is_empty()),
                name.unwrap_or_else(|| id.to_string()),
            )
        }
        None => (Some("capsa-runc".to_string()), id.to_string()),
    };
    let paths = cgroups::resolve_paths(mode, parent.as_deref(), &name).map_err(setup("cgroup"))?;
    Ok((mode, paths))
}

fn create_in(
    dir: &Dir,
    id: &str,
    spec: &oci_spec::runtime::Spec,
    bundle_dir: &Path,
    opts: &CreateOptions,
    cgroup_made: &mut Option<CgroupPaths>,
) -> Result<i32, RuntimeError> {
    let (mode, paths) = cgroup_paths(spec, id)?;
    let core = bundle::for_core(spec, bundle_dir, mode, &paths)?;
    let mut record = Record::created(id, spec, bundle_dir, paths.clone(), None);
    // First, so that `delete --force` after a caller killed mid-create finds the cgroup.
    state::save(dir, &record)?;
    let text = serde_json::to_vec_pretty(&core).map_err(setup("config.json"))?;
    crate::fsutil::write_private(&dir.config(), &text)
        .map_err(RuntimeError::io(dir.config().display().to_string()))?;
    let root = dir.dir.parent().unwrap_or(Path::new("/"));
    let seccomp = compile::for_spec(&core, &seccomp_cache(root)).map_err(setup("seccomp"))?;
    let cgroup = cgroups::manager(&paths);
    *cgroup_made = Some(paths);
    cgroup
        .apply(&cgroups::resources_of(&core))
        .map_err(setup("cgroup"))?;
    exec_fifo::create(&dir.exec_fifo())
        .map_err(RuntimeError::io(dir.exec_fifo().display().to_string()))?;
    // In a user namespace the init opens the gate as the namespace's root.
    if let Some((uid, gid)) = core.linux().as_ref().and_then(bundle::root_ids) {
        let (uid, gid) = (
            nix::unistd::Uid::from_raw(uid),
            nix::unistd::Gid::from_raw(gid),
        );
        nix::unistd::chown(&dir.exec_fifo(), Some(uid), Some(gid))
            .map_err(|e| RuntimeError::io("exec.fifo")(e.into()))?;
    }
    let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    let stdio = match &opts.console_socket {
        Some(_) => {
            let size = core.process().as_ref().and_then(console::size_of);
            let (rows, cols) = console::or_default(size);
            InitStdio::Terminal { rows, cols }
        }
        None => InitStdio::Streams(Stdio::inherited_from_caller([
            stdin.as_fd(),
            stdout.as_fd(),
            stderr.as_fd(),
        ])),
    };
    let hook_state = serde_json::to_value(record.document_as("creating", false))
        .map_err(setup("the hooks' state"))?;
    // prestart and createRuntime, in the runtime's namespaces, while the init waits with
    // the container's mounts made and its root not yet pivoted into (runc's timing: a hook
    // that enters the init's mount namespace finds the root at the bundle's path).
    let hooks = core.hooks().clone().unwrap_or_default();
    #[allow(deprecated)]
    let prestart = hooks.prestart().clone().unwrap_or_default();
    let create_runtime = hooks.create_runtime().clone().unwrap_or_default();
    let inherited = give_oom_score_adj(spec)?;
    let runtime_hooks = |pid: i32| -> Result<(), String> {
        // The init has taken the spec's OOM score; the hooks get the caller's.
        if let Some(score) = &inherited {
            let _ = std::fs::write(OOM_SCORE_ADJ, score);
        }
        let mut seen = record.clone();
        seen.pid = pid;
        seen.pid_start_time = crate::container::state::process_start_time(pid);
        // Saved first: a hook may ask `state` about the container.
        state::save(dir, &seen).map_err(|e| e.to_string())?;
        let creating = seen.document_as("creating", true);
        hooks::run_all("prestart", &prestart, &creating).map_err(|e| e.to_string())?;
        hooks::run_all("createRuntime", &create_runtime, &creating).map_err(|e| e.to_string())
    };
    let has_runtime_hooks = !prestart.is_empty() || !create_runtime.is_empty();
    let cfg = InitConfig {
        spec: &core,
        layers: None,
        exec_fifo: &dir.exec_fifo(),
        stdio,
        seccomp,
        cgroup: cgroup.as_ref(),
        init_program: None,
        preserve_fds: opts.preserve_fds,
        hook_state: Some(&hook_state),
        runtime_hooks: has_runtime_hooks
            .then_some(&runtime_hooks as &dyn Fn(i32) -> Result<(), String>),
    };
    let spawned = process::spawn(&cfg).map_err(|e| RuntimeError::Setup(e.to_string()));
    if let Some(score) = inherited {
        // Back to the caller's score for the rest (the hooks run from this process).
        let _ = std::fs::write(OOM_SCORE_ADJ, score);
    }
    let spawned = spawned?;
    let pid = spawned.pid;
    record.pid = pid;
    record.pid_start_time = crate::container::state::process_start_time(pid);
    let finish = || -> Result<(), RuntimeError> {
        if let (Some(socket), Some(master)) = (&opts.console_socket, &spawned.terminal) {
            console::send_master(socket, master.as_fd())?;
        }
        state::save(dir, &record)?;
        if let Some(p) = &opts.pid_file {
            write_pid_file(p, pid)?;
        }
        Ok(())
    };
    finish().inspect_err(|_| kill_and_reap(pid))?;
    Ok(pid)
}

/// Kills and reaps an init this process cloned and has not handed over.
fn kill_and_reap(pid: i32) {
    let pid = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
}

/// Writes `pid` to `path` as runc does: whole or not at all (a temporary file renamed).
pub fn write_pid_file(path: &Path, pid: i32) -> Result<(), RuntimeError> {
    let what = || format!("pid file {}", path.display());
    let path = std::path::absolute(path).map_err(RuntimeError::io(what()))?;
    crate::fsutil::write_atomic(&path, pid.to_string().as_bytes()).map_err(RuntimeError::io(what()))
}

const OOM_SCORE_ADJ: &str = "/proc/self/oom_score_adj";

/// Gives this process the spec's OOM score adjustment for the init to inherit (in a user
/// namespace the init could not lower it itself); returns the score it had. A score the
/// kernel refuses (lowering it needs CAP_SYS_RESOURCE) fails `create`, as runc's does,
/// rather than leaving the workload with the score it happened to inherit.
fn give_oom_score_adj(spec: &oci_spec::runtime::Spec) -> Result<Option<String>, RuntimeError> {
    let Some(adj) = spec.process().as_ref().and_then(|p| p.oom_score_adj()) else {
        return Ok(None);
    };
    let what = || format!("process.oomScoreAdj {adj} (lowering the score needs CAP_SYS_RESOURCE)");
    let had = std::fs::read_to_string(OOM_SCORE_ADJ).map_err(RuntimeError::io(what()))?;
    std::fs::write(OOM_SCORE_ADJ, adj.to_string()).map_err(RuntimeError::io(what()))?;
    Ok(Some(had.trim().to_string()))
}

fn wrong(record: &Record, status: Status, what: &'static str) -> RuntimeError {
    RuntimeError::WrongState {
        id: record.id.clone(),
        status: status.word(),
        what,
    }
}

/// The container's hooks of one kind, from the spec `create` wrote.
fn recorded_hooks(
    dir: &Dir,
    pick: impl Fn(&oci_spec::runtime::Hooks) -> Option<Vec<oci_spec::runtime::Hook>>,
) -> Vec<oci_spec::runtime::Hook> {
    std::fs::read(dir.config())
        .ok()
        .and_then(|t| serde_json::from_slice::<oci_spec::runtime::Spec>(&t).ok())
        .and_then(|s| s.hooks().as_ref().and_then(&pick))
        .unwrap_or_default()
}

/// Opens the start gate of created container `id`, then runs its poststart hooks; their
/// failures are returned as warnings (the container runs on, as the spec says).
pub fn start(root: &Path, id: &str) -> Result<Vec<String>, RuntimeError> {
    let (dir, record) = state::load(root, id)?;
    let status = record.status(&dir);
    if status != Status::Created {
        return Err(wrong(
            &record,
            status,
            "only a created container can be started",
        ));
    }
    if let Some(member) = &record.vm {
        super::vm::start(&dir, &record, member)?;
        return Ok(Vec::new());
    }
    let fifo = dir.exec_fifo();
    let outcome = exec_fifo::release(&fifo, || record.init_alive(), GATE_TIMEOUT)
        .map_err(RuntimeError::io("start gate"));
    let _ = std::fs::remove_file(&fifo);
    match outcome? {
        ExecOutcome::Started => {
            let poststart = recorded_hooks(&dir, |h| h.poststart().clone());
            let running = record.document_as(Status::Running.word(), true);
            Ok(hooks::run_all_warning("poststart", &poststart, &running))
        }
        ExecOutcome::Failed(code, message) => Err(RuntimeError::Exec { code, message }),
    }
}

/// A signal by name (`TERM`, `SIGTERM`, `sigkill`) or number.
pub fn parse_signal(text: &str) -> Result<i32, RuntimeError> {
    if let Ok(n) = text.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| RuntimeError::Usage(format!("unknown signal {text:?}")))
}

/// Sends `signal` to the init of container `id`, or with `all` to every process of its
/// cgroup.
pub fn kill(root: &Path, id: &str, signal: i32, all: bool) -> Result<(), RuntimeError> {
    let (dir, record) = state::load(root, id)?;
    let status = record.status(&dir);
    if status == Status::Stopped {
        // runc's words: containerd's runc v2 shim takes an error containing "container not
        // running" as "already exited" (the CRI plugin kills every exited task before it
        // deletes it, and would otherwise keep the container running in its records).
        return Err(wrong(&record, status, "container not running"));
    }
    let sig = nix::sys::signal::Signal::try_from(signal)
        .map_err(|_| RuntimeError::Usage(format!("unknown signal {signal}")))?;
    if let Some(member) = &record.vm {
        // In a VM, `--all` is the same: the init's end ends the container's processes.
        return super::vm::kill(&dir, &record, member, signal);
    }
    if all {
        cgroups::check_recorded(&record.cgroup).map_err(setup("cgroup"))?;
        for pid in cgroups::manager(&record.cgroup).pids() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
        return Ok(());
    }
    let pidfd = crate::linux::sys::pidfd_open(record.pid).map_err(RuntimeError::io("pidfd"))?;
    // The pidfd names the process checked below, whatever happens to the PID after.
    if !record.init_alive() {
        return Err(wrong(&record, Status::Stopped, "cannot signal it"));
    }
    crate::linux::sys::pidfd_send_signal(&pidfd, signal)
        .map_err(RuntimeError::io(format!("signal {sig}")))
}

/// Removes container `id`: a stopped or created one always (a created init is killed),
/// a running or paused one only with `force` (every process of it killed first). Nothing
/// is left: the cgroup is removed and the record goes; mounts lived in the init's mount
/// namespace, gone with its last process. Then its poststop hooks run; their failures are
/// returned as warnings.
pub fn delete(root: &Path, id: &str, force: bool) -> Result<Vec<String>, RuntimeError> {
    let (dir, record) = match state::load(root, id) {
        Ok(found) => found,
        // A caller killed before the record was written leaves only the folder.
        Err(RuntimeError::NotFound(_)) if force => {
            let dir = Dir::of(root, id)?;
            let _ = std::fs::remove_dir_all(&dir.dir);
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    let status = record.status(&dir);
    if matches!(status, Status::Running | Status::Paused) && !force {
        return Err(wrong(&record, status, "stop it first or use --force"));
    }
    if let Some(member) = &record.vm {
        super::vm::delete(&dir, &record, member)?;
        return Ok(Vec::new());
    }
    cgroups::check_recorded(&record.cgroup).map_err(setup("cgroup"))?;
    let cgroup = cgroups::manager(&record.cgroup);
    if status != Status::Stopped {
        stop_everything(&record, cgroup.as_ref())?;
    }
    cgroup.destroy().map_err(setup("cgroup"))?;
    let poststop = recorded_hooks(&dir, |h| h.poststop().clone());
    std::fs::remove_dir_all(&dir.dir).map_err(RuntimeError::io(dir.dir.display().to_string()))?;
    let stopped = record.document_as(Status::Stopped.word(), false);
    Ok(hooks::run_all_warning("poststop", &poststop, &stopped))
}

/// SIGKILL to the init and every process of the cgroup (thawed, so that they die), then
/// waits (bounded) for the init to exit.
fn stop_everything(record: &Record, cgroup: &dyn CgroupManager) -> Result<(), RuntimeError> {
    let pidfd = crate::linux::sys::pidfd_open(record.pid).ok();
    if let Some(fd) = pidfd.as_ref().filter(|_| record.init_alive()) {
        let _ = crate::linux::sys::pidfd_send_signal(fd, libc::SIGKILL);
    }
    for pid in cgroup.pids() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = cgroup.set_frozen(false);
    if let Some(fd) = pidfd {
        let gone = crate::linux::sys::pidfd_wait_exit(&fd, KILL_TIMEOUT_MS)
            .map_err(RuntimeError::io("wait for the init"))?;
        if !gone {
            return Err(RuntimeError::Setup(format!(
                "the init (pid {}) did not exit after SIGKILL",
                record.pid
            )));
        }
    }
    Ok(())
}

/// Freezes (`pause`) or thaws (`resume`) every process of running container `id`.
pub fn set_paused(root: &Path, id: &str, paused: bool) -> Result<(), RuntimeError> {
    let (dir, mut record) = state::load(root, id)?;
    let status = record.status(&dir);
    let expected = if paused {
        Status::Running
    } else {
        Status::Paused
    };
    if status != expected {
        let what = if paused {
            "only a running container can be paused"
        } else {
            "only a paused container can be resumed"
        };
        return Err(wrong(&record, status, what));
    }
    refuse_in_vm(&record, if paused { "pause" } else { "resume" })?;
    cgroups::check_recorded(&record.cgroup).map_err(setup("cgroup"))?;
    cgroups::manager(&record.cgroup)
        .set_frozen(paused)
        .map_err(setup("freezer"))?;
    record.paused = paused;
    state::save(&dir, &record)
}

/// Applies new `resources` to container `id`'s cgroup.
pub fn update(
    root: &Path,
    id: &str,
    resources: &oci_spec::runtime::LinuxResources,
) -> Result<(), RuntimeError> {
    let (dir, record) = state::load(root, id)?;
    let status = record.status(&dir);
    if status == Status::Stopped {
        return Err(wrong(&record, status, "cannot update it"));
    }
    refuse_in_vm(&record, "update")?;
    cgroups::check_recorded(&record.cgroup).map_err(setup("cgroup"))?;
    cgroups::manager(&record.cgroup)
        .apply(resources)
        .map_err(setup("cgroup"))
}

/// The host PIDs of container `id`'s processes.
pub fn pids(root: &Path, id: &str) -> Result<Vec<i32>, RuntimeError> {
    let (_, record) = state::load(root, id)?;
    refuse_in_vm(&record, "ps")?;
    cgroups::check_recorded(&record.cgroup).map_err(setup("cgroup"))?;
    let mut pids = cgroups::manager(&record.cgroup).pids();
    pids.sort_unstable();
    Ok(pids)
}

/// Refuses `verb` for a VM-isolated container, whose processes and cgroup are in its guest.
fn refuse_in_vm(record: &Record, verb: &str) -> Result<(), RuntimeError> {
    match record.vm {
        Some(_) => Err(RuntimeError::Unsupported {
            field: format!("{verb} of a VM container"),
            detail: " (not yet: its processes and cgroup are in the guest)".into(),
        }),
        None => Ok(()),
    }
}

/// runc's `state` document of container `id`.
pub fn document(root: &Path, id: &str) -> Result<state::StateDocument, RuntimeError> {
    let (dir, record) = state::load(root, id)?;
    Ok(record.document(&dir))
}
