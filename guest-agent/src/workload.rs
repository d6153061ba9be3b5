//! The container inside the guest: its root from the host's disks, its files, its cgroup (v2,
//! the only hierarchy this kernel mounts), and its init, created through capsa's isolation core
//! as `capsa create` does on a host, then released at `start`.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use capsa_core::linux::cgroups::{self, CgroupManager, CgroupMode};
use capsa_core::linux::process::stdio::{self, Pipes, Pty};
use capsa_core::linux::process::{self, exec_fifo, InitConfig, InitStdio, Stdio};
use capsa_core::linux::rootfs::OverlayLayers;
use capsa_core::linux::seccomp::compile;
use capsa_core::protocol::{CreateRequest, ErrorKind};

use crate::{disks, guest};

/// A failure with the kind the host reports it under.
pub type Failure = (ErrorKind, String);

fn fail(kind: ErrorKind) -> impl Fn(std::io::Error) -> Failure {
    move |e| (kind, e.to_string())
}

pub struct Workload {
    pub id: String,
    pub pid: i32,
    pub stdin: Option<File>,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
    /// The pty master when the workload has a terminal (`-t`): its window size is set here.
    pub tty: Option<OwnedFd>,
    pub cgroup: Box<dyn CgroupManager>,
    /// The overlay's upper directory (on the writable disk), for `commit`.
    pub upper: PathBuf,
    exec_fifo: PathBuf,
    spec: oci_spec::runtime::Spec,
    /// Whether the init has passed its execve: until then it is a copy of the agent, which
    /// no exec'd process may see.
    started: bool,
    /// A pod's container (its root a directory on the pod's disk).
    pub in_pod: bool,
}

/// The workload's stdio: three pipes, or with `-t` a pty the init opens on the container's
/// own devpts (its slave all three, /dev/pts/0 and /dev/console inside), whose master the
/// agent relays. Made by capsa's isolation core, which takes no other kind: nothing of the
/// agent's own reaches the workload.
enum Streams {
    Pipes(Pipes),
    /// The init's, opened by the init.
    Terminal,
    /// An exec's, opened here on the container's devpts.
    Pty(Pty),
}

impl Streams {
    fn new(terminal: bool) -> std::io::Result<Streams> {
        if terminal {
            return Ok(Streams::Terminal);
        }
        Ok(Streams::Pipes(Pipes::new(
            stdio::Input::Fed,
            stdio::Output::Separate,
        )?))
    }

    /// The workload's ends.
    fn child_stdio(&self) -> InitStdio<'_> {
        match self {
            Streams::Pipes(pipes) => InitStdio::Streams(pipes.stdio()),
            Streams::Pty(pty) => InitStdio::Streams(pty.stdio()),
            Streams::Terminal => InitStdio::Terminal { rows: 24, cols: 80 },
        }
    }

    /// The ends of an exec'd process (which joins a container: its pty is made already).
    fn joined_stdio(&self) -> Option<Stdio<'_>> {
        match self {
            Streams::Pipes(pipes) => Some(pipes.stdio()),
            Streams::Pty(pty) => Some(pty.stdio()),
            Streams::Terminal => None,
        }
    }

    /// Closes the workload's ends; returns the agent's: stdin, stdout, stderr, pty master
    /// (`terminal`, the master the init sent).
    fn keep_ours(
        self,
        terminal: Option<OwnedFd>,
    ) -> std::io::Result<(File, File, Option<File>, Option<OwnedFd>)> {
        match self {
            Streams::Pipes(pipes) => {
                let ours = pipes.into_ours();
                let missing = || std::io::Error::other("a pipe end is missing");
                Ok((
                    File::from(ours.stdin.ok_or_else(missing)?),
                    File::from(ours.stdout.ok_or_else(missing)?),
                    ours.stderr.map(File::from),
                    None,
                ))
            }
            Streams::Terminal | Streams::Pty(_) => {
                let master = match self {
                    Streams::Pty(pty) => pty.into_master(),
                    _ => terminal
                        .ok_or_else(|| std::io::Error::other("the init sent no terminal"))?,
                };
                Ok((
                    File::from(master.try_clone()?),
                    File::from(master.try_clone()?),
                    None,
                    Some(master),
                ))
            }
        }
    }
}

/// A process started by `exec`.
pub struct ExecProcess {
    pub pid: i32,
    /// With `-i`.
    pub stdin: Option<File>,
    pub stdout: File,
    /// Without `-t`.
    pub stderr: Option<File>,
    /// With `-t`: the pty master, for its window size.
    pub tty: Option<OwnedFd>,
}

/// Mounts the disks, writes the files, makes the cgroup and clones the init (waiting at its
/// start gate).
pub fn create(mut req: CreateRequest) -> Result<Workload, Failure> {
    let in_pod = req.root_dir.is_some();
    let (dir, rootfs, layers) = match req.root_dir.clone() {
        // A pod's container: its root unpacked on the pod's disk, bound onto itself by the
        // init as capsa-runc's roots are.
        Some(name) => {
            let folder = crate::pod::folder(&name)?;
            let rootfs = folder.join("rootfs");
            if !rootfs.is_dir() {
                return Err((
                    ErrorKind::BadRequest,
                    format!("pod container {name} has no root: unpack it first"),
                ));
            }
            (folder, rootfs, None)
        }
        None => {
            let dir = PathBuf::from("/run/capsa").join(&req.id);
            std::fs::create_dir_all(&dir).map_err(fail(ErrorKind::Internal))?;
            let (lower, upper, work) = disks::mount_layers(&dir, &req.layers, &req.upper)
                .map_err(fail(ErrorKind::Storage))?;
            let rootfs = dir.join("rootfs");
            std::fs::create_dir_all(&rootfs).map_err(fail(ErrorKind::Internal))?;
            let layers = OverlayLayers {
                lower,
                upper,
                work,
                attach_dir: dir.join("attach"),
            };
            (dir, rootfs, Some(layers))
        }
    };
    disks::mount_volumes(&req.volumes).map_err(fail(ErrorKind::Storage))?;
    place_files(&dir, &mut req).map_err(fail(ErrorKind::Internal))?;
    if let Some(net) = &req.network {
        guest::configure_eth0(net).map_err(|e| (ErrorKind::Internal, format!("network: {e}")))?;
    }
    let mut spec = req.spec;
    if let Some(root) = spec.root().clone() {
        let mut root = root;
        root.set_path(rootfs.clone());
        spec.set_root(Some(root));
    }
    let paths = cgroups::resolve_paths(CgroupMode::Unified, None, &req.id)
        .map_err(|e| (ErrorKind::Isolation, e.to_string()))?;
    let cgroup = cgroups::manager(&paths);
    cgroup
        .apply(&capsa_core::linux::cgroups::resources_of(&spec))
        .map_err(|e| (ErrorKind::Isolation, e.to_string()))?;
    let seccomp = compile::for_spec(&spec, Path::new("/run/capsa/seccomp-cache"))
        .map_err(|e| (ErrorKind::Isolation, e.to_string()))?;
    let fifo = dir.join("exec.fifo");
    exec_fifo::create(&fifo).map_err(fail(ErrorKind::Internal))?;
    let terminal = spec.process().as_ref().and_then(|p| p.terminal()) == Some(true);
    let streams = Streams::new(terminal).map_err(fail(ErrorKind::Internal))?;
    // `commit` takes the overlay's upper directory; a pod container's is its whole root.
    let upper = layers
        .as_ref()
        .map(|l| l.upper.clone())
        .unwrap_or_else(|| rootfs.clone());
    let init_program = if process::init::wants_init(&spec) {
        Some(guest::init_program().map_err(|e| (ErrorKind::Isolation, format!("--init: {e}")))?)
    } else {
        None
    };
    let cfg = InitConfig {
        spec: &spec,
        layers: layers.as_ref(),
        exec_fifo: &fifo,
        stdio: streams.child_stdio(),
        seccomp,
        cgroup: cgroup.as_ref(),
        init_program,
        preserve_fds: 0,
        hook_state: None,
        runtime_hooks: None,
    };
    let spawned = process::spawn(&cfg).map_err(|e| (ErrorKind::Isolation, e.to_string()))?;
    let pid = spawned.pid;
    let (stdin, stdout, stderr, tty) = streams
        .keep_ours(spawned.terminal)
        .map_err(fail(ErrorKind::Internal))?;
    Ok(Workload {
        id: req.id,
        pid,
        stdin: Some(stdin),
        stdout: Some(stdout),
        stderr,
        tty,
        cgroup,
        upper,
        exec_fifo: fifo,
        spec,
        started: false,
        in_pod,
    })
}

/// Mounts the container's root (its layers over the writable layer, checked first) for `cp`
/// with the VM stopped; no file is written, no cgroup or process made. Returns the root and
/// the overlay's upper directory.
pub fn mount_root(req: &CreateRequest) -> Result<(PathBuf, PathBuf), Failure> {
    let dir = PathBuf::from("/run/capsa").join(&req.id);
    std::fs::create_dir_all(&dir).map_err(fail(ErrorKind::Internal))?;
    let (lower, upper, work) =
        disks::mount_layers(&dir, &req.layers, &req.upper).map_err(fail(ErrorKind::Storage))?;
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(fail(ErrorKind::Internal))?;
    let layers = OverlayLayers {
        lower,
        upper: upper.clone(),
        work,
        attach_dir: dir.join("attach"),
    };
    capsa_core::linux::rootfs::mount_overlay(&layers, &rootfs)
        .map_err(|e| (ErrorKind::Storage, e.to_string()))?;
    Ok((rootfs, upper))
}

/// Writes the host's files under the container folder and points the spec's bind mounts of
/// those paths at them (the host paths do not exist in the guest).
fn place_files(dir: &Path, req: &mut CreateRequest) -> std::io::Result<()> {
    let files_dir = dir.join("files");
    std::fs::create_dir_all(&files_dir)?;
    let mut mounts = req.spec.mounts().clone().unwrap_or_default();
    for (i, f) in req.files.iter().enumerate() {
        let path = files_dir.join(i.to_string());
        std::fs::write(&path, &f.content)?;
        for m in mounts
            .iter_mut()
            .filter(|m| m.destination() == Path::new(&f.path))
        {
            m.set_source(Some(path.clone()));
        }
    }
    req.spec.set_mounts(Some(mounts));
    Ok(())
}

impl Workload {
    /// Releases the init. An execve failure is the workload's exit (126/127) with a message.
    pub fn start(&mut self) -> Result<Option<(i32, String)>, Failure> {
        let pid = self.pid;
        let alive = move || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        let outcome = exec_fifo::release(&self.exec_fifo, alive, Duration::from_secs(30))
            .map_err(fail(ErrorKind::Isolation))?;
        self.started = true;
        match outcome {
            exec_fifo::ExecOutcome::Started => Ok(None),
            exec_fifo::ExecOutcome::Failed(code, msg) => Ok(Some((code, msg))),
        }
    }

    /// Runs `req`'s process in the workload's namespaces and cgroup, under its seccomp filter;
    /// an execve failure is Err((code, message)) in the outer Ok.
    pub fn exec(
        &self,
        req: &capsa_core::protocol::ExecRequest,
    ) -> Result<Result<ExecProcess, (i32, String)>, Failure> {
        use capsa_core::linux::process::join::{spawn_in, JoinConfig, Joined};
        if !self.started {
            return Err((
                ErrorKind::BadRequest,
                "the workload has not started yet".to_string(),
            ));
        }
        let seccomp = compile::for_spec(&self.spec, Path::new("/run/capsa/seccomp-cache"))
            .map_err(|e| (ErrorKind::Isolation, e.to_string()))?;
        let init = capsa_core::linux::sys::pidfd_open(self.pid).map_err(|_| {
            (
                ErrorKind::NotFound,
                "the workload is not running".to_string(),
            )
        })?;
        let namespaces =
            capsa_core::linux::namespaces::clone_flags(&self.spec) & !(libc::CLONE_NEWPID as u64);
        let init_program =
            guest::init_program().map_err(|e| (ErrorKind::Isolation, e.to_string()))?;
        let streams = if req.tty {
            // On the container's own devpts, as the init's: /dev/pts/N inside.
            let still_init =
                || !capsa_core::linux::sys::wait_readable(init.as_raw_fd(), 0).unwrap_or(true);
            let pty = capsa_core::linux::devpts::open_pty_of(self.pid, still_init, 24, 80)
                .map_err(|e| (ErrorKind::Isolation, format!("exec -t: {e}")))?;
            Streams::Pty(pty)
        } else {
            Streams::new(false).map_err(fail(ErrorKind::Internal))?
        };
        let stdio = streams
            .joined_stdio()
            .ok_or_else(|| (ErrorKind::Internal, "exec: no streams".to_string()))?;
        let group_add = capsa_core::linux::process::init::group_add(&self.spec);
        let cfg = JoinConfig {
            init: &init,
            namespaces,
            process: &req.spec_process,
            user: &req.user,
            group_add: &group_add,
            exact_user: None,
            seccomp: &seccomp,
            cgroup: self.cgroup.as_ref(),
            stdio,
            terminal: req.tty,
            init_program,
            preserve_fds: 0,
        };
        let joined = spawn_in(&cfg).map_err(|e| (ErrorKind::Isolation, format!("exec: {e}")))?;
        let (stdin, stdout, stderr, tty) =
            streams.keep_ours(None).map_err(fail(ErrorKind::Internal))?;
        Ok(match joined {
            Joined::Running(pid) => Ok(ExecProcess {
                pid,
                // Without -i the process's stdin ends at once, as /dev/null would.
                stdin: req.interactive.then_some(stdin),
                stdout,
                stderr,
                tty,
            }),
            Joined::Failed(code, msg) => Err((code, msg)),
        })
    }

    pub fn signal(&self, signal: i32) -> Result<(), Failure> {
        let sig = nix::sys::signal::Signal::try_from(signal)
            .map_err(|_| (ErrorKind::BadRequest, format!("no signal {signal}")))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), sig)
            .map_err(|e| (ErrorKind::NotFound, e.to_string()))
    }
}
