//! capsa-runc's VM isolation: a bundle run in a microVM instead of host namespaces, chosen
//! by invoking the runtime as `capsa-vm` (a second runtime name for containerd's handler
//! and podman) or by the bundle's annotation `io.capsa.isolation=vm`.
//!
//! A pod is one VM, as with Kata: a pod's first container (CRI's sandbox, or a container
//! no sandbox claims, as `ctr run` makes) boots it, held by a keeper process
//! ([`crate::vm::pod::run_keeper`]); a container CRI marks as part of a sandbox
//! (`io.kubernetes.cri.sandbox-id`) is created inside that sandbox's VM. The process behind
//! `--pid-file` is, for the first container, the keeper, and for the others a follower on
//! the host ([`crate::vm::pod::follow`]): each is a child of this process (so of the
//! caller's subreaper once it exits) whose exit status is the container's, and whose
//! stdout and stderr carry the container's.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Mount, MountBuilder, Process, Spec};
use serde::{Deserialize, Serialize};

use super::lifecycle::{write_pid_file, CreateOptions};
use super::state::{self, Dir, Record};
use super::{bundle, RuntimeError};
use crate::linux::cgroups::{CgroupMode, CgroupPaths};
use crate::vm::pod::{self, PodLaunch, Upload};
use crate::vm::protocol::{CreateRequest, ExecRequest, POD_ROOTS};

/// The annotation that chooses the VM for one bundle (the only `io.capsa.` one a bundle
/// may carry).
pub const ISOLATION_ANNOTATION: &str = "io.capsa.isolation";

/// CRI's annotations (containerd's CRI plugin sets them on every container it creates).
const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// Guest memory of a pod's VM: the guest kernel, the agent and the pod's containers.
pub const POD_GUEST_MIB: u64 = 512;

/// What a record of a VM-isolated container adds: the pod (its first container's ID)
/// whose VM it runs in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmMember {
    pub pod: String,
}

/// Whether `spec` runs in a VM: as its pod's sandbox does, when its sandbox is recorded
/// under `root`; else as the bundle asks, or the runtime was invoked (`capsa-vm`). A pod's
/// containers all share its isolation: a container asking otherwise than its sandbox runs
/// is refused (in a VM pod, a host container would join the keeper's namespaces).
pub fn wanted(root: &Path, spec: &Spec, by_name: bool) -> Result<bool, RuntimeError> {
    let asked = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ISOLATION_ANNOTATION));
    let asked = match asked.map(String::as_str) {
        None => None,
        Some("vm") => Some(true),
        Some("container") => Some(false),
        Some(other) => {
            return Err(RuntimeError::Unsupported {
                field: format!("annotation {ISOLATION_ANNOTATION}={other:?}"),
                detail: " (vm or container)".into(),
            })
        }
    };
    let pods = pod_of(spec).and_then(|pod| state::load(root, &pod).ok().map(|(_, r)| r));
    match (pods.map(|r| r.vm.is_some()), asked) {
        (Some(pod_vm), Some(asked)) if pod_vm != asked => Err(RuntimeError::Unsupported {
            field: format!("annotation {ISOLATION_ANNOTATION} of a container"),
            detail: format!(
                " whose pod's sandbox runs {}",
                if pod_vm {
                    "in a VM"
                } else {
                    "in host namespaces"
                }
            ),
        }),
        (Some(pod_vm), _) => Ok(pod_vm),
        (None, asked) => Ok(asked.unwrap_or(by_name)),
    }
}

/// The pod a container joins (its sandbox's ID); None for a pod's first container.
fn pod_of(spec: &Spec) -> Option<String> {
    let a = spec.annotations().as_ref()?;
    (a.get(CRI_CONTAINER_TYPE).map(String::as_str) == Some("container"))
        .then(|| a.get(CRI_SANDBOX_ID).cloned())
        .flatten()
}

/// What the VM path does not take, refused before anything is made.
fn check_vm_supported(spec: &Spec, opts: &CreateOptions) -> Result<(), RuntimeError> {
    let refuse = |field: &str, why: &str| {
        Err(RuntimeError::Unsupported {
            field: field.into(),
            detail: format!(" in a VM ({why})"),
        })
    };
    let terminal = spec.process().as_ref().and_then(|p| p.terminal()) == Some(true);
    if terminal && pod_of(spec).is_none() {
        return refuse(
            "process.terminal",
            "not yet for a pod's first container: its keeper relays pipes",
        );
    }
    if spec.hooks().is_some() {
        return refuse(
            "hooks",
            "they would run on the host, not where the container is",
        );
    }
    if opts.preserve_fds > 0 {
        return refuse(
            "--preserve-fds",
            "a host descriptor cannot cross into the guest",
        );
    }
    let joined_user = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
        .any(|n| n.typ() == LinuxNamespaceType::User);
    if joined_user {
        return refuse(
            "a user namespace",
            "the guest kernel is the container's boundary",
        );
    }
    Ok(())
}

/// Creates VM-isolated container `id` in its folder `dir` (made by the caller, removed by it
/// on failure): its pod's VM booted (a first container) or joined. Returns the PID of the
/// process behind `--pid-file`.
pub fn create_in(
    dir: &Dir,
    id: &str,
    spec: &Spec,
    bundle_dir: &Path,
    opts: &CreateOptions,
) -> Result<i32, RuntimeError> {
    check_vm_supported(spec, opts)?;
    let pod = pod_of(spec);
    let terminal_size = spec
        .process()
        .as_ref()
        .filter(|p| p.terminal() == Some(true))
        .map(super::console::size_of);
    let (guest_spec, uploads) = guest_spec(spec, bundle_dir, id)?;
    let text = serde_json::to_vec_pretty(&guest_spec)
        .map_err(|e| RuntimeError::Setup(format!("config.json: {e}")))?;
    crate::fsutil::write_private(&dir.config(), &text)
        .map_err(RuntimeError::io(dir.config().display().to_string()))?;
    let request = CreateRequest {
        id: id.to_string(),
        spec: guest_spec,
        layers: Vec::new(),
        upper: String::new(),
        files: Vec::new(),
        network: None,
        volumes: Vec::new(),
        root_dir: Some(id.to_string()),
    };
    let (cgroup, member) = match &pod {
        Some(pod) => (no_cgroup(), VmMember { pod: pod.clone() }),
        None => (
            super::lifecycle::cgroup_paths(spec, id)?.1,
            VmMember {
                pod: id.to_string(),
            },
        ),
    };
    let mut record = Record::created(id, spec, bundle_dir, cgroup.clone(), Some(member));
    state::save(dir, &record)?;
    // Until `start`, the container is created (the marker the status reads).
    std::fs::write(dir.exec_fifo(), b"")
        .map_err(RuntimeError::io(dir.exec_fifo().display().to_string()))?;
    let pid = match pod {
        None => {
            let state = vm_state();
            let store = crate::root::StateRoot::open(&state.join("store"))
                .map_err(|e| RuntimeError::Setup(format!("the VM store: {e}")))?;
            let key = pod_key(dir, id);
            let launch = PodLaunch {
                root: &store,
                id: id.to_string(),
                dir: state.join("pods").join(pod::control_name(&key)),
                key,
                cgroup,
                netns: network_namespace(spec),
                mem_mib: POD_GUEST_MIB,
                vcpus: 1,
            };
            fork_worker(|report| pod::run_keeper(launch, request, &uploads, report))?
        }
        Some(pod) => fork_worker(|report| {
            let key = pod_key(dir, &pod);
            let created = uploads
                .iter()
                .try_for_each(|up| pod::unpack(&key, up))
                .and_then(|()| pod::create(&key, request))
                .and_then(|stream| {
                    let io = follower_io(opts.console_socket.as_deref(), terminal_size)?;
                    Ok((stream, io))
                });
            match created {
                Ok((stream, io)) => {
                    report(Ok(()));
                    pod::follow(stream, io)
                }
                Err(e) => {
                    report(Err(e));
                    1
                }
            }
        })?,
    };
    record.pid = pid;
    record.pid_start_time = crate::container::state::process_start_time(pid);
    state::save(dir, &record)?;
    if let Some(p) = &opts.pid_file {
        write_pid_file(p, pid)?;
    }
    Ok(pid)
}

/// The key of pod `pod` (its first container's ID) under the runtime root that holds
/// `dir`: pods of two roots (two callers) never meet, whatever their IDs.
fn pod_key(dir: &Dir, pod: &str) -> String {
    dir.dir
        .parent()
        .unwrap_or(Path::new("/"))
        .join(pod)
        .display()
        .to_string()
}

/// Where a pod's VM keeps its files (its disk, logs, the engine's record) and where the
/// guest kernel's initramfs and the VM templates are kept: on disk, never under the
/// runtime's root (containerd's is a tmpfs in /run, where a pod's disk would be RAM).
/// `CAPSA_VM_STATE`, or /var/lib/capsa-vm.
fn vm_state() -> PathBuf {
    std::env::var_os("CAPSA_VM_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/capsa-vm"))
}

/// Paths of no cgroup: a pod member's processes are in its pod's VM.
fn no_cgroup() -> CgroupPaths {
    CgroupPaths {
        version: 2,
        dirs: Default::default(),
    }
}

/// The network namespace the spec names by path (CRI's pod namespace, set up by CNI).
fn network_namespace(spec: &Spec) -> Option<PathBuf> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Network)?
        .path()
        .clone()
}

/// How a follower relays: with a terminal (`size`: the process asked for one), a host pty
/// whose master goes to the caller's console socket, its slave raw (the guest's pty does
/// the line discipline); else this process's own stdio.
fn follower_io(
    console_socket: Option<&Path>,
    size: Option<Option<(u16, u16)>>,
) -> Result<pod::FollowerIo, crate::vm::VmError> {
    let Some(size) = size else {
        return Ok(pod::FollowerIo::Stdio(stdin()));
    };
    let socket = console_socket
        .ok_or_else(|| crate::vm::VmError::Io("a terminal needs --console-socket".into()))?;
    let (rows, cols) = super::console::or_default(size);
    let winsize = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&winsize), None)
        .map_err(|e| crate::vm::VmError::Io(format!("a pty: {e}")))?;
    let mut raw = nix::sys::termios::tcgetattr(&pty.slave)
        .map_err(|e| crate::vm::VmError::Io(format!("the pty's modes: {e}")))?;
    nix::sys::termios::cfmakeraw(&mut raw);
    nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &raw)
        .map_err(|e| crate::vm::VmError::Io(format!("the pty's modes: {e}")))?;
    super::console::send_master(socket, std::os::fd::AsFd::as_fd(&pty.master))
        .map_err(|e| crate::vm::VmError::Io(e.to_string()))?;
    Ok(pod::FollowerIo::Terminal(pty.slave))
}

/// This process's stdin, for a follower to relay.
fn stdin() -> Option<std::fs::File> {
    let fd = nix::unistd::dup(std::io::stdin().as_raw_fd()).ok()?;
    // SAFETY: `fd` was just duplicated and is owned by nothing else.
    Some(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// The spec the guest runs, and the host trees to copy in first: the root, and each bind
/// mount's source (a file or a tree, copied as it is now). In the guest the container
/// shares the VM's network when the pod has one, and makes its other namespaces itself:
/// namespace paths name the host's. The pod's /dev/shm is a tmpfs of the container's.
fn guest_spec(
    spec: &Spec,
    bundle_dir: &Path,
    id: &str,
) -> Result<(Spec, Vec<Upload>), RuntimeError> {
    let guest_cgroup = no_cgroup();
    let mut core = bundle::for_core(spec, bundle_dir, CgroupMode::Unified, &guest_cgroup)?;
    let mut uploads = vec![Upload {
        dir: id.to_string(),
        source: bundle::rootfs(spec, bundle_dir),
        name: PathBuf::from("."),
    }];
    let mut mounts = Vec::new();
    for (i, m) in core
        .mounts()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let is_bind = m
            .options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind");
        let Some(source) = m.source().clone().filter(|_| is_bind) else {
            mounts.push(m);
            continue;
        };
        if m.destination() == Path::new("/dev/shm") {
            mounts.push(shm_tmpfs()?);
            continue;
        }
        let source = source.canonicalize().map_err(|e| RuntimeError::Config {
            path: source.clone(),
            reason: format!("bind mount source for {}: {e}", m.destination().display()),
        })?;
        let dir = format!("{id}.m{i}");
        let file = pod::is_file(&source);
        let name = PathBuf::from(if file { "f" } else { "." });
        let guest = Path::new(POD_ROOTS).join(&dir).join("rootfs").join(&name);
        uploads.push(Upload { dir, source, name });
        let mut m: Mount = m;
        m.set_source(Some(guest));
        mounts.push(m);
    }
    core.set_mounts(Some(mounts));
    // A pod's network (a namespace CNI set up, named by path) is the guest's own: its
    // containers share it. A container asking for a new, empty one (`ctr run`) gets one in
    // the guest, so that a restored VM's unconnected template NIC is not its.
    let pod_network = network_namespace(spec).is_some();
    if let Some(linux) = core.linux_mut() {
        let namespaces = linux.namespaces().clone().unwrap_or_default();
        let namespaces = namespaces
            .into_iter()
            .filter(|n| !(pod_network && n.typ() == LinuxNamespaceType::Network))
            .map(|mut n| {
                n.set_path(None);
                n
            })
            .collect();
        linux.set_namespaces(Some(namespaces));
    }
    Ok((core, uploads))
}

fn shm_tmpfs() -> Result<Mount, RuntimeError> {
    MountBuilder::default()
        .destination("/dev/shm")
        .typ("tmpfs")
        .source("shm")
        .options(["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"].map(String::from))
        .build()
        .map_err(|e| RuntimeError::Setup(format!("/dev/shm: {e}")))
}

/// Runs `work` in a child of this process, which says through its `report` whether it got
/// as far as the caller needs (a container created); returns its PID then. A child that
/// failed (or died) before is reaped and its reason returned.
fn fork_worker(
    work: impl FnOnce(&mut dyn FnMut(Result<(), crate::vm::VmError>)) -> i32,
) -> Result<i32, RuntimeError> {
    use std::io::{Read, Write};
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| RuntimeError::io("pipe")(e.into()))?;
    // SAFETY: fork(2); capsa-runc is single-threaded here, and the child only runs Rust
    // code of its own before it exits.
    match unsafe { nix::unistd::fork() }.map_err(|e| RuntimeError::io("fork")(e.into()))? {
        nix::unistd::ForkResult::Child => {
            drop(read);
            let mut pipe = Some(std::fs::File::from(write));
            let mut report = |r: Result<(), crate::vm::VmError>| {
                if let Some(mut p) = pipe.take() {
                    let word = match r {
                        Ok(()) => "ok".to_string(),
                        Err(e) => format!("error {e}"),
                    };
                    let _ = p.write_all(word.as_bytes());
                }
            };
            // The pipe closes once reported (taken above), or at the exit: then the parent
            // reads no word and takes the child's end for a failure.
            let code = work(&mut report);
            std::process::exit(code);
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(write);
            let mut said = String::new();
            let _ = std::fs::File::from(read).read_to_string(&mut said);
            if said == "ok" {
                return Ok(child.as_raw());
            }
            let _ = nix::sys::wait::waitpid(child, None);
            Err(RuntimeError::Setup(match said.strip_prefix("error ") {
                Some(why) => why.to_string(),
                None => "the VM's keeper ended before the container was created".into(),
            }))
        }
    }
}

/// `start` of a created VM container.
pub fn start(dir: &Dir, record: &Record, member: &VmMember) -> Result<(), RuntimeError> {
    pod::start(&pod_key(dir, &member.pod), &record.id).map_err(vm_error)?;
    let _ = std::fs::remove_file(dir.exec_fifo());
    Ok(())
}

fn vm_error(e: crate::vm::VmError) -> RuntimeError {
    RuntimeError::Setup(e.to_string())
}

/// `kill`: the signal goes to the container's init in the guest.
pub fn kill(
    dir: &Dir,
    record: &Record,
    member: &VmMember,
    signal: i32,
) -> Result<(), RuntimeError> {
    pod::signal(&pod_key(dir, &member.pod), &record.id, signal).map_err(vm_error)
}

/// `delete` of a VM container: a live one's init is killed in the guest and its follower
/// (or the pod's keeper, whose VM then goes down) ends; the record goes.
pub fn delete(dir: &Dir, record: &Record, member: &VmMember) -> Result<(), RuntimeError> {
    if record.init_alive() {
        let _ = pod::signal(&pod_key(dir, &member.pod), &record.id, libc::SIGKILL);
        if let Ok(pidfd) = crate::linux::sys::pidfd_open(record.pid) {
            let gone = crate::linux::sys::pidfd_wait_exit(&pidfd, 10_000).unwrap_or(false);
            if !gone {
                let _ = crate::linux::sys::pidfd_send_signal(&pidfd, libc::SIGKILL);
                let _ = crate::linux::sys::pidfd_wait_exit(&pidfd, 10_000);
            }
        }
    }
    if member.pod == record.id {
        pod::forget(&pod_key(dir, &record.id));
    } else {
        // Its root and copies go from the pod's disk (the pod may be gone already).
        let _ = pod::remove(&pod_key(dir, &member.pod), &record.id);
    }
    if !record.cgroup.dirs.is_empty() {
        let cgroup = crate::linux::cgroups::manager(&record.cgroup);
        for pid in cgroup.pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = cgroup.destroy();
    }
    std::fs::remove_dir_all(&dir.dir).map_err(RuntimeError::io(dir.dir.display().to_string()))
}

/// `exec` in a VM container: a follower on the host, a child of this process, whose exit
/// status is the command's. Returns its PID.
pub fn exec(
    dir: &Dir,
    record: &Record,
    member: &VmMember,
    process: Process,
    pid_file: Option<&Path>,
    console_socket: Option<&Path>,
) -> Result<i32, RuntimeError> {
    let tty = process.terminal() == Some(true);
    let terminal_size = tty.then(|| super::console::size_of(&process));
    let user = process.user();
    let request = ExecRequest {
        process: String::new(),
        container: record.id.clone(),
        user: format!("{}:{}", user.uid(), user.gid()),
        spec_process: process,
        interactive: true,
        tty,
    };
    let pod = pod_key(dir, &member.pod);
    let started = |()| {
        let stream = pod::exec(&pod, request)?;
        Ok((stream, follower_io(console_socket, terminal_size)?))
    };
    let pid = fork_worker(|report| match started(()) {
        Ok((stream, io)) => {
            report(Ok(()));
            pod::follow(stream, io)
        }
        Err(e) => {
            report(Err(e));
            1
        }
    })?;
    if let Some(p) = pid_file {
        write_pid_file(p, pid)?;
    }
    Ok(pid)
}
