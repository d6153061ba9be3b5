//! The container's init, from the clone until execve. It runs in the new namespaces as a
//! copy of the parent (no re-exec of capsa), non-dumpable from its first instruction, and
//! alone in its new PID namespace until its execve: `exec` enters a container only once
//! `start` has seen the init's execve (the start gate is gone), so no process of the
//! container ever sees capsa's binary, arguments or environment in /proc/1. With `--init`
//! it execs [`capsa_init`](super::capsa_init) (a sealed in-memory copy) rather than the
//! workload, and that program forks the workload.

use super::channel::{self, Message};
use super::config::{InitConfig, InitStdio};
use super::exec_fifo;
use crate::linux::rootfs::{FdLayers, OverlayLayers, RootLayers};
use crate::linux::{capabilities, devpts, mountapi, namespaces, rootfs, sys, user};
use oci_spec::runtime::LinuxNamespaceType;
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Annotation carrying `-u USER[:GROUP]`, resolved here against the container's own
/// /etc/passwd at start, as Docker resolves it.
pub const USER_ANNOTATION: &str = "io.capsa.user";
/// Annotation carrying an OCI `process.user` to take as it is (see
/// [`user::ExactIds`]); when present, [`USER_ANNOTATION`] and the groups to add are not read.
pub const USER_IDS_ANNOTATION: &str = "io.capsa.user-ids";

/// Annotation asking for `--init`: a reaping PID 1 in front of the workload.
pub const INIT_ANNOTATION: &str = "io.capsa.init";

/// Annotation carrying `--group-add`: group names or IDs, one a line, resolved at start
/// in the container's own /etc/group and added to the workload's (and every exec's)
/// supplementary groups.
pub const GROUP_ADD_ANNOTATION: &str = "io.capsa.group-add";

/// The `--group-add` entries of a spec.
pub fn group_add(spec: &oci_spec::runtime::Spec) -> Vec<String> {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(GROUP_ADD_ANNOTATION))
        .map(|v| v.lines().map(String::from).collect())
        .unwrap_or_default()
}

/// Whether the spec asks for `--init` (then [`InitConfig::init_program`] must be given).
pub fn wants_init(spec: &oci_spec::runtime::Spec) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(INIT_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// PATH when neither the image nor the user sets one (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why the init could not set the container up. It crosses to the parent as its text
/// ([`Message::Error`]); each variant names the step that failed and keeps its cause.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A step failed on a file or a system call reported as an I/O error.
    #[error("{step}: {source}")]
    Io {
        step: String,
        #[source]
        source: std::io::Error,
    },
    /// A step failed on a system call nix wraps.
    #[error("{step}: {source}")]
    Sys {
        step: String,
        #[source]
        source: nix::errno::Errno,
    },
    /// The init could not move itself into its cgroup.
    #[error("join cgroup: {0}")]
    Cgroup(#[source] crate::linux::cgroups::CgroupError),
    /// The capability sets could not be applied.
    #[error("{step}: {source}")]
    Capabilities {
        step: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
    /// The parent did not hand over one idmapped mount per layer.
    #[error("expected the {expected} idmapped layers, got {got:?} with {count}")]
    Layers {
        expected: usize,
        got: Message,
        count: usize,
    },
    /// Mounting, pivoting or masking the root failed.
    #[error(transparent)]
    Rootfs(#[from] rootfs::RootfsError),
    /// The user could not be resolved in the container's own passwd and group files.
    #[error(transparent)]
    User(#[from] user::UserError),
    /// A hook that runs in the container's namespaces failed (its output may hold control
    /// characters: whoever shows the text escapes it).
    #[error("{kind} hook {path}: {why}")]
    Hook {
        kind: &'static str,
        path: String,
        why: String,
    },
}

/// Tells the parent the mounts are made and waits while it runs the runtime's hooks (each
/// bounded by its own timeout there; a parent that dies closes the socket).
fn wait_for_runtime_hooks(sock: &OwnedFd) -> Result<(), SetupError> {
    channel::send(sock, &Message::Mounted).map_err(io_step("runtime hooks"))?;
    match channel::recv(sock, -1).map_err(io_step("runtime hooks"))? {
        Message::Go => Ok(()),
        Message::Error(why) => Err(SetupError::Io {
            step: "runtime hooks".into(),
            source: std::io::Error::other(why),
        }),
        other => Err(SetupError::Io {
            step: "runtime hooks".into(),
            source: std::io::Error::other(format!("unexpected message {other:?}")),
        }),
    }
}

/// Runs the spec's hooks of `kind` that belong in the container's namespaces, from the init,
/// each given the state the runtime handed down with this process's PID and `status`.
/// `createContainer` runs before the root is pivoted into, with the init's privileges (its
/// path resolves in the runtime's file system, as the spec says: the bundle's author
/// chose it); `startContainer` after the start gate, in the container's root, just before
/// the workload's exec, with the workload's user, capabilities and seccomp filter (the
/// program is the container's own).
fn run_container_hooks(
    cfg: &InitConfig,
    kind: &'static str,
    status: &str,
) -> Result<(), SetupError> {
    let hooks = cfg.spec.hooks().as_ref();
    let hooks = match kind {
        "createContainer" => hooks.and_then(|h| h.create_container().as_ref()),
        _ => hooks.and_then(|h| h.start_container().as_ref()),
    };
    let Some(hooks) = hooks.filter(|h| !h.is_empty()) else {
        return Ok(());
    };
    let mut state = cfg
        .hook_state
        .cloned()
        .unwrap_or_else(|| serde_json::json!({}));
    state["pid"] = std::process::id().into();
    state["status"] = status.into();
    let input = serde_json::to_vec(&state).unwrap_or_default();
    for hook in hooks {
        crate::linux::hooks::run(hook, &input).map_err(|why| SetupError::Hook {
            kind,
            path: hook.path().display().to_string(),
            why,
        })?;
    }
    Ok(())
}

/// The error of a failed I/O step named `step`.
fn io_step(step: impl Into<String>) -> impl FnOnce(std::io::Error) -> SetupError {
    move |source| SetupError::Io {
        step: step.into(),
        source,
    }
}

/// The error of a failed system call named `step`.
fn sys_step(step: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> SetupError {
    move |source| SetupError::Sys {
        step: step.into(),
        source,
    }
}

/// What set-up resolved, used after the start gate opens.
struct Prepared {
    user: user::ResolvedUser,
    gate: OwnedFd,
    /// With [`InitStdio::Terminal`]: the pty's master, for the parent.
    terminal: Option<OwnedFd>,
}

/// Runs the init; returns the exit code if it does not exec. Unless the clone placed it in
/// its cgroup already (`born_in_cgroup`, v2), it first moves itself there, so that all it
/// does from here on is accounted to the container.
pub fn run(cfg: &InitConfig, sock: OwnedFd, born_in_cgroup: bool) -> i32 {
    let prepared = early(cfg, &sock, born_in_cgroup)
        .and_then(|(gate, layers)| set_up(cfg, &sock, gate, layers));
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            let _ = channel::send(&sock, &Message::Error(e.to_string()));
            return 1;
        }
    };
    let terminal: Vec<_> = prepared.terminal.iter().map(|m| m.as_raw_fd()).collect();
    if channel::send_with_fds(&sock, &Message::Ready, &terminal).is_err() {
        return 1;
    }
    drop(sock);
    drop(prepared.terminal);
    let mut gate = match open_gate(&prepared.gate) {
        Ok(g) => g,
        Err(_) => return 1,
    };
    let Some(process) = cfg.spec.process() else {
        let _ = gate.write_all(b"126 the spec has no process");
        return 126;
    };
    // spawn() made sure the program is there when the spec asks for --init.
    let through = cfg.init_program.filter(|_| wants_init(cfg.spec));
    set_oom_score_adj(process);
    // As runc: with the workload's user, capabilities and seccomp filter, since the
    // program is the container's own (its path resolves in the container's root).
    let start_hooks =
        || run_container_hooks(cfg, "startContainer", "created").map_err(|e| e.to_string());
    // The gate stays open (close-on-exec) so that `start` reads end-of-file on success.
    let (code, msg) = exec_process(
        process,
        &prepared.user,
        &cfg.seccomp,
        through,
        cfg.preserve_fds,
        Some(&start_hooks),
        matches!(cfg.stdio, InitStdio::Terminal { .. }),
    );
    let _ = gate.write_all(format!("{code} {msg}").as_bytes());
    code
}

/// What must happen while the init still has the host identity it was cloned with: join
/// the cgroup, open the start gate and, in a user namespace, every host path it needs
/// (it may not walk them as the namespace's root). Then, in a user namespace, wait for the
/// ID maps and the idmapped layers and become the namespace's root. Last, the cgroup
/// namespace, whose root is the cgroup its creator is in.
fn early<'a>(
    cfg: &'a InitConfig,
    sock: &OwnedFd,
    born_in_cgroup: bool,
) -> Result<(OwnedFd, RootLayers<'a>), SetupError> {
    sys::set_dumpable(false).map_err(io_step("prctl(PR_SET_DUMPABLE)"))?;
    if !born_in_cgroup {
        cfg.cgroup.join_self().map_err(SetupError::Cgroup)?;
    }
    let open = |p: &Path| mountapi::open_path(p).map_err(io_step(format!("open {}", p.display())));
    // Opened by path before pivot_root hides the host; reopened for writing at start.
    let gate = open(cfg.exec_fifo)?;
    namespaces::join_paths(cfg.spec).map_err(io_step("join namespace"))?;
    let layers = match (
        cfg.layers,
        namespaces::has(cfg.spec, LinuxNamespaceType::User),
    ) {
        (None, true) => directory_in_user_namespace(cfg, sock, open)?,
        (None, false) => RootLayers::Directory,
        (Some(layers), true) => user_namespace_layers(cfg, layers, sock, open)?,
        (Some(layers), false) => RootLayers::Paths(layers),
    };
    if namespaces::has(cfg.spec, LinuxNamespaceType::Cgroup) {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
            .map_err(sys_step("unshare cgroup namespace"))?;
    }
    Ok((gate, layers))
}

/// A prepared root directory in a user namespace: opens it and every bind-mount source
/// while the init still has its host identity, waits for the ID maps, and becomes the
/// namespace's root. The directory's files keep their owners (unmapped ones show as the
/// overflow ID inside).
fn directory_in_user_namespace<'a>(
    cfg: &InitConfig,
    sock: &OwnedFd,
    open: impl Fn(&Path) -> Result<OwnedFd, SetupError>,
) -> Result<RootLayers<'a>, SetupError> {
    let (rootfs, bind_sources) = root_and_bind_sources(cfg, &open)?;
    let target = open(&rootfs)?;
    let (msg, fds) = channel::recv_with_fds(sock).map_err(io_step("waiting for the ID maps"))?;
    if msg != Message::Go || !fds.is_empty() {
        return Err(SetupError::Layers {
            expected: 0,
            got: msg,
            count: fds.len(),
        });
    }
    become_namespace_root()?;
    Ok(RootLayers::DirectoryFds {
        target,
        bind_sources,
    })
}

/// The spec's root path, and every bind-mount source opened (with `open`) while the init
/// still has its host identity.
fn root_and_bind_sources(
    cfg: &InitConfig,
    open: &impl Fn(&Path) -> Result<OwnedFd, SetupError>,
) -> Result<(PathBuf, std::collections::HashMap<PathBuf, OwnedFd>), SetupError> {
    let rootfs = cfg
        .spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_default();
    let mut bind_sources = std::collections::HashMap::new();
    for src in rootfs::bind_sources(cfg.spec) {
        let fd = open(&src)?;
        bind_sources.insert(src, fd);
    }
    Ok((rootfs, bind_sources))
}

/// setresgid/setresuid to 0 inside the user namespace, once its maps are written.
fn become_namespace_root() -> Result<(), SetupError> {
    let root = nix::unistd::Gid::from_raw(0);
    nix::unistd::setresgid(root, root, root).map_err(sys_step("become the namespace's root"))?;
    let root = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresuid(root, root, root).map_err(sys_step("become the namespace's root"))
}

/// In a user namespace: opens every host path the init needs while it still has its host
/// identity, waits for the ID maps and the idmapped layers, and becomes the namespace's root.
fn user_namespace_layers<'a>(
    cfg: &InitConfig,
    layers: &OverlayLayers,
    sock: &OwnedFd,
    open: impl Fn(&Path) -> Result<OwnedFd, SetupError>,
) -> Result<RootLayers<'a>, SetupError> {
    let (rootfs, bind_sources) = root_and_bind_sources(cfg, &open)?;
    let (upper, work, target) = (open(&layers.upper)?, open(&layers.work)?, open(&rootfs)?);
    let lower_targets = (0..layers.lower.len())
        .map(|n| open(&layers.attach_dir.join(n.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let (msg, lower) = channel::recv_with_fds(sock).map_err(io_step("waiting for the ID maps"))?;
    if msg != Message::Go || lower.len() != layers.lower.len() {
        return Err(SetupError::Layers {
            expected: layers.lower.len(),
            got: msg,
            count: lower.len(),
        });
    }
    become_namespace_root()?;
    Ok(RootLayers::Fds(FdLayers {
        lower,
        lower_targets,
        upper,
        work,
        target,
        bind_sources,
    }))
}

fn set_up(
    cfg: &InitConfig,
    sock: &OwnedFd,
    gate: OwnedFd,
    layers: RootLayers,
) -> Result<Prepared, SetupError> {
    let spec = cfg.spec;
    nix::unistd::setsid().map_err(sys_step("setsid"))?;
    if let InitStdio::Streams(stdio) = cfg.stdio {
        stdio.install().map_err(sys_step("stdio"))?;
    }
    let root = rootfs::prepare(spec, layers)?;
    let terminal = match cfg.stdio {
        InitStdio::Terminal { rows, cols } => Some(open_terminal(&root, rows, cols)?),
        InitStdio::Streams(_) => None,
    };
    if cfg.runtime_hooks.is_some() {
        wait_for_runtime_hooks(sock)?;
    }
    run_container_hooks(cfg, "createContainer", "creating")?;
    rootfs::pivot(&root)?;
    rootfs::set_root_propagation(spec)?;
    let root = rootfs::current_root()?;
    let linux = spec.linux().as_ref();
    if let Some(paths) = linux.and_then(|l| l.masked_paths().as_ref()) {
        rootfs::mask_paths(&root, paths)?;
    }
    if let Some(sysctls) = linux.and_then(|l| l.sysctl().as_ref()) {
        write_sysctls(sysctls, namespaces::has(spec, LinuxNamespaceType::Network))?;
    }
    if let Some(paths) = linux.and_then(|l| l.readonly_paths().as_ref()) {
        rootfs::readonly_paths(&root, paths)?;
    }
    if namespaces::has(spec, LinuxNamespaceType::Uts) {
        if let Some(h) = spec.hostname() {
            nix::unistd::sethostname(h).map_err(sys_step(format!("sethostname {h:?}")))?;
        }
    }
    let annotation = |key: &str| {
        spec.annotations()
            .as_ref()
            .and_then(|a| a.get(key).cloned())
    };
    let user = match annotation(USER_IDS_ANNOTATION) {
        Some(ids) => user::ExactIds::from_annotation(&ids)
            .ok_or_else(|| {
                io_step("user")(std::io::Error::other(format!("malformed IDs {ids:?}")))
            })?
            .resolve(Path::new("/"))?,
        None => {
            let user_spec = annotation(USER_ANNOTATION).unwrap_or_default();
            let mut user = user::resolve(&user_spec, Path::new("/"))?;
            user::add_groups(&mut user, &group_add(spec), Path::new("/"))?;
            user
        }
    };
    let cwd = spec
        .process()
        .as_ref()
        .map(|p| p.cwd().clone())
        .unwrap_or_else(|| "/".into());
    // Docker creates a missing working directory (inside the root, through no magic link).
    root.mkdir_all(&cwd)
        .map_err(io_step(format!("working directory {}", cwd.display())))?;
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        rootfs::remount_root_readonly()?;
    }
    Ok(Prepared {
        user,
        gate,
        terminal,
    })
}

/// Opens a pty on the container's own devpts (mounted by now at /dev/pts inside `root`):
/// its slave becomes stdin, stdout, stderr, the session's controlling terminal (Ctrl-C,
/// job control) and /dev/console. Returns the master, for the parent.
fn open_terminal(
    root: &crate::linux::inroot::Root,
    rows: u16,
    cols: u16,
) -> Result<OwnedFd, SetupError> {
    let pty = devpts::open_pty(root, rows, cols)
        .map_err(|e| io_step("terminal")(std::io::Error::other(e)))?;
    pty.stdio().install().map_err(sys_step("stdio"))?;
    sys::set_controlling_terminal(0).map_err(io_step("controlling terminal"))?;
    rootfs::bind_console(pty.slave(), root)?;
    Ok(pty.into_master())
}

/// Writes the spec's sysctls in the container's own /proc/sys, after the pivot and before
/// /proc/sys is made read-only: each belongs to a namespace of the init (network or IPC;
/// the engine allows no other key), so the host's values stay as they are. A key is dots
/// and name characters only (checked again here: the spec may come from a record).
/// In a new network namespace (`own_network`) a `net.` key that does not exist yet names
/// an interface the engine adds once the init is ready (eth0): the engine writes every
/// `net.` key again then, and that one must exist.
fn write_sysctls(
    sysctls: &std::collections::HashMap<String, String>,
    own_network: bool,
) -> Result<(), SetupError> {
    use std::os::unix::fs::OpenOptionsExt;
    for (key, value) in sysctls {
        let well_formed = key.split('.').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        let step = format!("sysctl {key}");
        if !well_formed {
            return Err(io_step(step)(std::io::Error::from(
                std::io::ErrorKind::InvalidInput,
            )));
        }
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .and_then(|mut f| f.write_all(value.as_bytes()));
        match written {
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && own_network
                    && key.starts_with("net.") => {}
            other => other.map_err(io_step(step))?,
        }
    }
    Ok(())
}

/// Blocks until `start` opens the gate, then says so.
fn open_gate(gate: &OwnedFd) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = format!("/proc/self/fd/{}", gate.as_raw_fd());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    f.write_all(&[exec_fifo::STARTED])?;
    Ok(f)
}

/// Sets the process's OOM score adjustment (before capabilities are dropped: lowering it
/// needs CAP_SYS_RESOURCE), through this process's own /proc.
pub fn set_oom_score_adj(process: &oci_spec::runtime::Process) {
    if let Some(adj) = process.oom_score_adj() {
        let _ = std::fs::write("/proc/self/oom_score_adj", adj.to_string());
    }
}

/// The last steps of any process that enters a container (the init, or `exec`): working
/// directory, rlimits, user, capabilities, no_new_privs, seccomp, then execve of the
/// program found in the container's PATH, or with `through` (a sealed
/// [`capsa_init`](super::capsa_init)) execveat of that program, which starts the found
/// program as its child. A missing (127) or non-executable (126) program is found here,
/// before any exec. Returns (exit code, message) only on failure.
pub fn exec_process(
    process: &oci_spec::runtime::Process,
    user: &user::ResolvedUser,
    seccomp: &[seccompiler::BpfProgram],
    through: Option<&OwnedFd>,
    preserve_fds: u32,
    before_exec: Option<&dyn Fn() -> Result<(), String>>,
    made_terminal: bool,
) -> (i32, String) {
    let args = process.args().clone().unwrap_or_default();
    let Some(program) = args.first() else {
        return (126, "no command given".into());
    };
    let mut env = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    let exe = match lookup(program, &path_var) {
        Ok(p) => p,
        Err(e) => return e,
    };
    if let Some(mask) = process.user().umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    if let Err(e) = std::env::set_current_dir(process.cwd()) {
        return (126, format!("chdir to {}: {e}", process.cwd().display()));
    }
    for rl in process.rlimits().iter().flatten() {
        if let Err(e) = sys::set_rlimit(rl.typ() as u32, rl.soft(), rl.hard()) {
            return (126, format!("setrlimit {:?}: {e}", rl.typ()));
        }
    }
    // Before the seccomp filter, which may not allow close_range.
    let first_closed = 3u32.saturating_add(preserve_fds).min(i32::MAX as u32) as i32;
    if let Err(e) = sys::cloexec_from(first_closed) {
        return (126, format!("close_range: {e}"));
    }
    if made_terminal {
        if let Err(e) = devpts::give_stdio_terminal(user.uid) {
            return (126, format!("the terminal's owner: {e}"));
        }
    }
    let nnp = process.no_new_privileges().unwrap_or(false);
    if let Err(e) = drop_privileges(process, user, nnp, seccomp) {
        return (126, e.to_string());
    }
    sys::reset_signals();
    if let Some(before) = before_exec {
        if let Err(e) = before() {
            return (1, e);
        }
    }
    let c_exe = CString::new(exe.as_os_str().as_bytes()).unwrap_or_default();
    let c_args: Vec<CString> = args
        .iter()
        .map(|a| CString::new(a.as_str()).unwrap_or_default())
        .collect();
    let c_env: Vec<CString> = env
        .iter()
        .map(|e| CString::new(e.as_str()).unwrap_or_default())
        .collect();
    if let Some(init_program) = through {
        let err = super::capsa_init::exec(init_program, &c_args, &c_env);
        return (
            126,
            format!("exec {}: {}", super::capsa_init::ARGV0, err.desc()),
        );
    }
    let err = nix::unistd::execve(&c_exe, &c_args, &c_env).unwrap_err();
    let code = if err == nix::errno::Errno::ENOENT {
        127
    } else {
        126
    };
    (code, format!("exec {program:?}: {}", err.desc()))
}

/// User, groups, capabilities, no_new_privs and seccomp, in the order the kernel needs:
/// without no_new_privs, installing a filter needs CAP_SYS_ADMIN, so it goes first.
fn drop_privileges(
    process: &oci_spec::runtime::Process,
    u: &user::ResolvedUser,
    nnp: bool,
    seccomp: &[seccompiler::BpfProgram],
) -> Result<(), SetupError> {
    let install = || -> Result<(), SetupError> {
        for program in seccomp {
            sys::install_seccomp_filter(program).map_err(io_step("seccomp"))?;
        }
        Ok(())
    };
    if !nnp {
        install()?;
    }
    if let Some(caps) = process.capabilities() {
        capabilities::apply_bounding(caps).map_err(|source| SetupError::Capabilities {
            step: "capability bounding set",
            source,
        })?;
    }
    sys::set_keep_caps(true).map_err(io_step("keepcaps"))?;
    let gids: Vec<nix::unistd::Gid> = u
        .additional_gids
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&gids).map_err(sys_step("setgroups"))?;
    let gid = nix::unistd::Gid::from_raw(u.gid);
    let uid = nix::unistd::Uid::from_raw(u.uid);
    nix::unistd::setresgid(gid, gid, gid).map_err(sys_step(format!("setgid {}", u.gid)))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(sys_step(format!("setuid {}", u.uid)))?;
    sys::set_keep_caps(false).map_err(io_step("keepcaps"))?;
    if let Some(caps) = process.capabilities() {
        capabilities::apply_sets(caps).map_err(|source| SetupError::Capabilities {
            step: "capabilities",
            source,
        })?;
    }
    if nnp {
        sys::set_no_new_privs().map_err(io_step("no_new_privs"))?;
        install()?;
    }
    Ok(())
}

/// Finds `program` as execvp would, inside the container: (127, ...) when it is nowhere,
/// (126, ...) when found but not executable.
fn lookup(program: &str, path_var: &str) -> Result<PathBuf, (i32, String)> {
    use std::os::unix::fs::PermissionsExt;
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![PathBuf::from(program)]
    } else {
        path_var
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(program))
            .collect()
    };
    let mut not_executable = None;
    for c in candidates {
        match std::fs::metadata(&c) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => return Ok(c),
            Ok(_) => not_executable = Some(c),
            Err(_) => {}
        }
    }
    match not_executable {
        Some(c) => Err((
            126,
            format!("exec {:?}: permission denied", c.display().to_string()),
        )),
        None if program.contains('/') => {
            Err((127, format!("exec {program:?}: no such file or directory")))
        }
        None => Err((
            127,
            format!("exec {program:?}: executable file not found in $PATH"),
        )),
    }
}
