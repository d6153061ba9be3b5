//! The engine's jail, as Firecracker's jailer makes one. Every engine process (QEMU,
//! capsa-vmm) runs:
//! - as a uid/gid of its own ([`EngineUid`]), from a range that no `--userns=auto`
//!   container and no other VM uses, held by a lock (also across capsa processes and state
//!   roots) for as long as the engine lives;
//! - in new mount, pid, ipc, uts, network and cgroup namespaces, its root a read-only tmpfs
//!   that holds only its binary, the libraries and data it loads, the guest kernel and
//!   initramfs, and the device nodes it opens (/dev/null, /dev/urandom; /dev/kvm with KVM);
//! - with no capabilities (an empty bounding set), no_new_privs, and only the descriptors it
//!   is handed (disks, the agent's socket, the console's pipe, the tap): every other is closed;
//! - in a cgroup of its own that holds the guest's memory plus a bounded overhead, and the
//!   container's CPU quota (`--cpus`) when it has one: vCPUs, I/O threads and QEMU's own
//!   translation all count against what the user gave the VM;
//! - under seccomp, which the engine installs itself once set up (QEMU's `-sandbox`,
//!   capsa-vmm's per-thread filters), as no_new_privs lets an unprivileged process do.
//!
//! It stays the monitor's child (its exit status is the monitor's to read), dies with the
//! monitor (PDEATHSIG) and has a process group of its own.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use oci_spec::runtime::{
    LinuxCpu, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxPidsBuilder,
    LinuxResources, LinuxResourcesBuilder,
};

use super::VmError;
use crate::linux::cgroups::{self, CgroupManager, CgroupPaths};
use crate::linux::sys::{self, Forked};

/// The first uid (and gid) an engine runs as. `--userns=auto` ranges end below 34 million
/// (see `container::create`), so the two never meet.
pub const FIRST_UID: u32 = 2_000_000_000;
/// How many engines can run at once on this host.
pub const UIDS: u32 = 65_536;
/// Host-wide (not per state root): one lock file per engine uid in use.
const UID_DIR: &str = "/run/capsa-vm/uids";
/// The host directory each jail's tmpfs is mounted on, in the engine's own mount namespace
/// only (on the host it stays an empty directory).
const JAIL_MOUNT: &str = "/run/capsa-vm/jail";

/// Where an engine that needs one has its procfs ([`EngineCommand::proc_fs`]).
const PROC: &str = "/proc";

/// Where the guest kernel and initramfs appear inside the jail.
pub const KERNEL: &str = "/vm/vmlinux";
pub const INITRAMFS: &str = "/vm/initramfs";

/// Host directories of shared libraries, bound read-only (or recreated as the same symlink)
/// in every jail: the engines are dynamically linked.
const LIBRARY_DIRS: &[&str] = &["/lib", "/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib64"];

/// Device nodes every engine opens: (path, major, minor).
const DEVICES: &[(&str, u32, u32)] = &[("/dev/null", 1, 3), ("/dev/urandom", 1, 9)];
/// KVM's device node, made in jails of engines that use KVM.
const KVM: (&str, u32, u32) = ("/dev/kvm", 10, 232);

/// Engine memory beyond guest RAM: QEMU's or capsa-vmm's own heap, threads and device
/// buffers. QEMU under TCG also has its translation cache, bounded by `TCG_CACHE_MIB`.
pub const ENGINE_OVERHEAD_MIB: u64 = 128;
/// QEMU's TCG translation cache (`-accel tcg,tb-size=`), part of the engine's memory.
pub const TCG_CACHE_MIB: u64 = 128;
/// Threads an engine may run (vCPUs, I/O workers, RCU).
const ENGINE_PIDS: i64 = 256;

/// An engine uid, taken until dropped.
#[derive(Debug)]
pub struct EngineUid {
    pub uid: u32,
    _lock: File,
}

/// Takes the lowest engine uid no running engine holds: its lock file is locked for as long
/// as this value lives, and the kernel releases it if this process dies.
pub fn allocate_uid() -> Result<EngineUid, VmError> {
    let dir = Path::new(UID_DIR);
    private_dir(dir)?;
    for k in 0..UIDS {
        let path = dir.join(k.to_string());
        if let Some(lock) = try_lock(&path).map_err(|e| jail_err(&path, e))? {
            return Ok(EngineUid {
                uid: FIRST_UID + k,
                _lock: lock,
            });
        }
    }
    Err(VmError::Jail(format!(
        "all {UIDS} engine uids are in use (locks in {UID_DIR})"
    )))
}

/// Creates `dir` (and its parents) readable by root only.
pub fn private_dir(dir: &Path) -> Result<(), VmError> {
    std::fs::create_dir_all(dir).map_err(|e| jail_err(dir, e))?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(|e| jail_err(dir, e))
}

/// An exclusive lock on `path` (created if missing), or None when another holds it.
pub fn try_lock(path: &Path) -> std::io::Result<Option<File>> {
    lock_file(path, false)
}

/// An exclusive lock on `path` (created if missing), held while the file is open; waits
/// for it with `wait`, else None when another holds it.
pub fn lock_file(path: &Path, wait: bool) -> std::io::Result<Option<File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    let mode = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), mode) } == 0 {
        return Ok(Some(file));
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(None)
    } else {
        Err(e)
    }
}

fn jail_err(path: &Path, e: impl std::fmt::Display) -> VmError {
    VmError::Jail(format!("{}: {e}", path.display()))
}

/// What an engine asks of its jail.
pub struct EngineCommand {
    /// The engine binary (bound at the same path inside).
    pub binary: PathBuf,
    pub args: Vec<String>,
    /// Descriptors the engine is handed, numbered 3, 4, ... inside, in this order.
    pub fds: Vec<OwnedFd>,
    /// Host files or directories the engine reads, bound read-only at the same path.
    pub read_only: Vec<PathBuf>,
    /// Host files the engine writes, bound read-write: (host path, path in the jail). A VM
    /// template's guest memory file (its own copy for a clone), owned by the engine's uid.
    pub read_write: Vec<(PathBuf, PathBuf)>,
    /// Whether the engine opens /dev/kvm.
    pub kvm: bool,
    /// Whether the jail has a procfs of its own pid namespace at /proc (`subset=pid`: the
    /// engine's own /proc/self only), for a RAM memfd it opens as `/proc/self/fd/N`; taken
    /// away once the engine has mapped it ([`detach_proc`]).
    pub proc_fs: bool,
    /// The seccomp policy the engine installs, as `inspect` shows it.
    pub seccomp: String,
}

impl EngineCommand {
    /// Hands `fd` to the engine; returns its number inside the jail.
    pub fn pass(&mut self, fd: OwnedFd) -> RawFd {
        self.fds.push(fd);
        2 + self.fds.len() as RawFd
    }
}

/// One VM's jail before its engine starts: its uid, its cgroup, the guest files it shows.
pub struct Jail {
    pub uid: EngineUid,
    pub cgroup: CgroupPaths,
    manager: Box<dyn CgroupManager>,
    /// The container's CPU quota, applied once the guest is up ([`Jail::limit_cpu`]).
    cpu: Option<LinuxCpu>,
    kernel: PathBuf,
    initramfs: PathBuf,
}

impl Jail {
    /// Takes a uid and creates the cgroup at `cgroup`, its memory limited to `memory_mib`
    /// (guest RAM plus the engine's overhead); its CPU is limited to `cpu` (the container's
    /// quota) by [`Jail::limit_cpu`] once the guest has booted.
    pub fn prepare(
        cgroup: CgroupPaths,
        memory_mib: u64,
        cpu: Option<LinuxCpu>,
        kvm: bool,
        kernel: &Path,
        initramfs: &Path,
    ) -> Result<Jail, VmError> {
        let uid = allocate_uid()?;
        let manager = cgroups::manager(&cgroup);
        manager
            .apply(&engine_resources(memory_mib << 20, kvm))
            .map_err(|e| VmError::Jail(format!("the engine's cgroup: {e}")))?;
        Ok(Jail {
            uid,
            cgroup,
            manager,
            cpu,
            kernel: kernel.to_path_buf(),
            initramfs: initramfs.to_path_buf(),
        })
    }

    /// Holds the engine to the container's CPU quota (`on`) or lifts it. The quota holds
    /// while the workload runs: the boot, the container's set-up in the guest and the
    /// shutdown are capsa's work, and under TCG a small quota would stretch them from
    /// seconds to minutes.
    pub fn limit_cpu(&self, on: bool) -> Result<(), VmError> {
        let Some(cpu) = self.cpu.clone() else {
            return Ok(());
        };
        let cpu = if on {
            cpu
        } else {
            let mut unlimited = cpu;
            unlimited.set_quota(Some(-1));
            unlimited
        };
        let resources = LinuxResourcesBuilder::default()
            .cpu(cpu)
            .build()
            .map_err(|e| VmError::Jail(format!("the engine's CPU limit: {e}")))?;
        self.manager
            .apply(&resources)
            .map_err(|e| VmError::Jail(format!("the engine's CPU limit: {e}")))
    }

    /// Removes the cgroup (killing what is left in it); the uid is free once `self` goes.
    pub fn destroy(self) {
        let _ = self.manager.destroy();
    }

    /// Starts `cmd` jailed, its stdout and stderr on `log`.
    pub fn spawn(&self, cmd: EngineCommand, log: &File) -> Result<EngineProcess, VmError> {
        let plan = ChildPlan::new(self, &cmd, log)?;
        let target = self.manager.clone_target();
        let flags = (libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWNET) as u64;
        match sys::fork_into_namespaces(flags, target.as_ref().map(|t| t.as_raw_fd()))
            .map_err(|e| VmError::Jail(format!("clone: {e}")))?
        {
            Forked::Child => plan.run(),
            Forked::Parent(pid) => {
                drop(plan.err_w);
                let mut child = EngineProcess { pid, status: None };
                let mut report = Vec::new();
                let _ = File::from(plan.err_r).read_to_end(&mut report);
                if report.is_empty() {
                    return Ok(child); // the write end closed at execve
                }
                let _ = child.wait();
                Err(VmError::Jail(child_error(&report)))
            }
        }
    }
}

/// Takes the procfs away from the jail of engine `pid` (a child of this process, so the
/// PID is its own) once the engine has opened what it needed there: a child joins the
/// engine's mount namespace and detaches /proc, so the engine cannot reopen its other
/// descriptors through /proc/self/fd afterwards.
pub fn detach_proc(pid: i32) -> Result<(), VmError> {
    let ns_path = PathBuf::from(format!("/proc/{pid}/ns/mnt"));
    let ns = File::open(&ns_path).map_err(|e| jail_err(&ns_path, e))?;
    let child = match sys::fork_into_namespaces(0, None) {
        Ok(Forked::Child) => {
            // SAFETY: system calls on a descriptor and a C string literal; the child
            // allocates nothing and ends with _exit.
            unsafe {
                let rc = if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) != 0 {
                    1
                } else if libc::umount2(c"/proc".as_ptr(), libc::MNT_DETACH) != 0 {
                    2
                } else {
                    0
                };
                libc::_exit(rc)
            }
        }
        Ok(Forked::Parent(child)) => child,
        Err(e) => return Err(VmError::Jail(format!("fork: {e}"))),
    };
    let mut process = EngineProcess {
        pid: child,
        status: None,
    };
    let status = process
        .wait()
        .map_err(|e| VmError::Jail(format!("waiting for /proc's detach: {e}")))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(1) => Err(jail_err(&ns_path, "setns failed")),
        _ => Err(VmError::Jail(format!(
            "detaching /proc in engine {pid}'s jail failed"
        ))),
    }
}

/// The engine cgroup's limits: memory (and memory+swap) at `bytes`, a pids limit, and on
/// cgroup v1 the devices the jail holds.
fn engine_resources(bytes: u64, kvm: bool) -> LinuxResources {
    let limit = i64::try_from(bytes).unwrap_or(i64::MAX);
    let mut devices = vec![LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .expect("a deny-all rule has every field")];
    let nodes = DEVICES.iter().chain(kvm.then_some(&KVM));
    for (_, major, minor) in nodes {
        devices.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(*major as i64)
                .minor(*minor as i64)
                // m: the jail's own set-up makes these nodes, in the cgroup already.
                .access("rwm")
                .build()
                .expect("a device rule has every field"),
        );
    }
    LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(limit)
                .swap(limit)
                .build()
                .expect("memory limits have every field"),
        )
        .pids(
            LinuxPidsBuilder::default()
                .limit(ENGINE_PIDS)
                .build()
                .expect("a pids limit has every field"),
        )
        .devices(devices)
        .build()
        .expect("resources have every field")
}

/// "step: error" from what the child wrote: its errno (4 bytes) and the step's name.
fn child_error(report: &[u8]) -> String {
    let (errno, step) = report.split_at(report.len().min(4));
    let errno = i32::from_ne_bytes(errno.try_into().unwrap_or([0; 4]));
    format!(
        "{}: {}",
        String::from_utf8_lossy(step),
        std::io::Error::from_raw_os_error(errno)
    )
}

/// The jailed engine, a child of this process.
#[derive(Debug)]
pub struct EngineProcess {
    pid: i32,
    status: Option<ExitStatus>,
}

impl EngineProcess {
    /// Its host PID.
    pub fn id(&self) -> i32 {
        self.pid
    }

    fn reap(&mut self, flags: libc::c_int) -> std::io::Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let mut status = 0;
        loop {
            // SAFETY: waitpid on our own child with a valid status pointer.
            let rc = unsafe { libc::waitpid(self.pid, &mut status, flags) };
            match rc {
                0 => return Ok(None),
                -1 if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {
                    continue
                }
                -1 => return Err(std::io::Error::last_os_error()),
                _ => {
                    self.status = Some(ExitStatus::from_raw(status));
                    return Ok(self.status);
                }
            }
        }
    }

    /// Its exit status if it has exited (reaped once).
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.reap(libc::WNOHANG)
    }

    /// Waits for its exit.
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.reap(0)?
            .ok_or_else(|| std::io::Error::other("waitpid returned no status"))
    }

    /// SIGKILL, unless it is already reaped.
    pub fn kill(&mut self) -> std::io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        // SAFETY: kill with integers; the PID is our unreaped child, so it cannot be reused.
        if unsafe { libc::kill(self.pid, libc::SIGKILL) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for EngineProcess {
    /// A VM never outlives the value that stands for it.
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.kill();
            let _ = self.wait();
        }
    }
}

fn cstr(s: impl AsRef<OsStr>) -> Result<CString, VmError> {
    CString::new(s.as_ref().as_bytes())
        .map_err(|_| VmError::Jail(format!("{:?} holds a NUL byte", s.as_ref())))
}

/// A read-only bind mount into the jail.
struct Bind {
    source: CString,
    target: CString,
    is_file: bool,
    /// Extra flags for the remount (MS_NOEXEC for data).
    flags: libc::c_ulong,
    /// Left writable (the remount is read-only otherwise).
    writable: bool,
}

/// Everything the child does between clone and execve, computed beforehand: after fork in
/// a process that may have other threads, the child may only make system calls (no
/// allocation, no lock).
struct ChildPlan {
    mount_point: CString,
    /// Where a procfs is mounted, if the engine has one.
    proc_fs: Option<CString>,
    /// Directories to create in the tmpfs, parents first.
    dirs: Vec<CString>,
    symlinks: Vec<(CString, CString)>,
    binds: Vec<Bind>,
    /// (path, major, minor, owned by the engine's uid).
    nodes: Vec<(CString, u32, u32, bool)>,
    /// cgroup v1 `tasks` files to write 0 to (v2: born in the cgroup by CLONE_INTO_CGROUP).
    tasks: Vec<OwnedFd>,
    uid: u32,
    last_cap: i32,
    parent: OwnedFd,
    /// Descriptors that become 0, 1, 2, 3, ... in the engine.
    sources: Vec<RawFd>,
    _null: File,
    binary: CString,
    _args: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    err_r: OwnedFd,
    err_w: OwnedFd,
}

impl ChildPlan {
    fn new(jail: &Jail, cmd: &EngineCommand, log: &File) -> Result<ChildPlan, VmError> {
        private_dir(Path::new(JAIL_MOUNT))?;
        let mut layout = Layout::default();
        // Bound at its real path (no `..`, no symlink), where it is executed.
        let binary = std::fs::canonicalize(&cmd.binary).map_err(|e| jail_err(&cmd.binary, e))?;
        layout.file(&binary, &binary, 0)?;
        for dir in LIBRARY_DIRS.iter().map(Path::new) {
            layout.library(dir)?;
        }
        for path in &cmd.read_only {
            let path = std::fs::canonicalize(path).map_err(|e| jail_err(path, e))?;
            layout.file(&path, &path, libc::MS_NOEXEC)?;
        }
        layout.file(&jail.kernel, Path::new(KERNEL), libc::MS_NOEXEC)?;
        layout.file(&jail.initramfs, Path::new(INITRAMFS), libc::MS_NOEXEC)?;
        for (host, inside) in &cmd.read_write {
            layout.writable_file(host, inside)?;
        }
        for (path, major, minor) in DEVICES {
            layout.node(path, *major, *minor, false)?;
        }
        if cmd.kvm {
            layout.node(KVM.0, KVM.1, KVM.2, true)?;
        }
        let proc_fs = match cmd.proc_fs {
            true => Some(layout.empty_dir(Path::new(PROC))?),
            false => None,
        };
        let tasks = jail
            .cgroup
            .dirs
            .values()
            .filter(|_| jail.cgroup.version == 1)
            .map(|d| {
                let path = d.join("tasks");
                std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(&path)
                    .map(OwnedFd::from)
                    .map_err(|e| jail_err(&path, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let null = File::open("/dev/null").map_err(|e| jail_err(Path::new("/dev/null"), e))?;
        let mut sources = vec![null.as_raw_fd(), log.as_raw_fd(), log.as_raw_fd()];
        sources.extend(cmd.fds.iter().map(|f| f.as_raw_fd()));
        let args: Vec<CString> = std::iter::once(cstr(&binary))
            .chain(cmd.args.iter().map(cstr))
            .collect::<Result<_, _>>()?;
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| VmError::Jail(format!("pipe: {e}")))?;
        let parent = sys::pidfd_open(std::process::id() as i32)
            .map_err(|e| VmError::Jail(format!("pidfd_open: {e}")))?;
        let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(63);
        Ok(ChildPlan {
            mount_point: cstr(JAIL_MOUNT)?,
            proc_fs,
            dirs: layout.dirs,
            symlinks: layout.symlinks,
            binds: layout.binds,
            nodes: layout.nodes,
            tasks,
            uid: jail.uid.uid,
            last_cap,
            parent,
            sources,
            _null: null,
            binary: cstr(&binary)?,
            _args: args,
            argv,
            err_r,
            err_w,
        })
    }

    /// The child: joins the cgroup, builds and enters the root, drops every privilege, takes
    /// its descriptors and execs the engine. Only system calls from here on.
    fn run(&self) -> ! {
        let err = self.err_w.as_raw_fd();
        // SAFETY: each call below is a system call on memory this plan owns (C strings and
        // pointer arrays built before the fork), as the forked child of a possibly
        // multi-threaded process may do; a failure is reported on the pipe and ends it.
        unsafe {
            check(err, "setpgid", libc::setpgid(0, 0));
            for fd in &self.tasks {
                let n = libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1);
                check(err, "joining the engine's cgroup", n as i32 - 1);
            }
            check(err, "unshare cgroup", libc::unshare(libc::CLONE_NEWCGROUP));
            self.build_root(err);
            self.drop_privileges(err);
            // Born after its parent died: PDEATHSIG came too early to fire.
            if sys::wait_readable(self.parent.as_raw_fd(), 0).unwrap_or(true) {
                libc::_exit(1);
            }
            let err = self.take_descriptors(err);
            sys::reset_signals();
            let envp: [*const libc::c_char; 1] = [std::ptr::null()];
            libc::execve(self.binary.as_ptr(), self.argv.as_ptr(), envp.as_ptr());
            check(err, "execve", -1);
            libc::_exit(127)
        }
    }

    /// A private tmpfs with the binds, links and nodes, made the root; the old root detached.
    unsafe fn build_root(&self, err: RawFd) {
        // The nodes' modes are meant as written.
        libc::umask(0);
        let null = std::ptr::null::<libc::c_char>();
        let flags = libc::MS_REC | libc::MS_PRIVATE;
        check(
            err,
            "making / private",
            libc::mount(null, c"/".as_ptr(), null, flags, std::ptr::null()),
        );
        check(
            err,
            "mounting the jail's tmpfs",
            libc::mount(
                c"tmpfs".as_ptr(),
                self.mount_point.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NOEXEC,
                c"mode=0755,size=64k,nr_inodes=256".as_ptr().cast(),
            ),
        );
        for d in &self.dirs {
            check(err, "mkdir in the jail", libc::mkdir(d.as_ptr(), 0o755));
        }
        for (target, link) in &self.symlinks {
            check(
                err,
                "symlink in the jail",
                libc::symlink(target.as_ptr(), link.as_ptr()),
            );
        }
        for b in &self.binds {
            if b.is_file {
                let fd = libc::open(b.target.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o444);
                check(err, "creating a bind target", fd);
                libc::close(fd);
            }
            let rc = libc::mount(
                b.source.as_ptr(),
                b.target.as_ptr(),
                null,
                libc::MS_BIND,
                std::ptr::null(),
            );
            check(err, "bind mount", rc);
            let rdonly = if b.writable { 0 } else { libc::MS_RDONLY };
            let ro = libc::MS_BIND
                | libc::MS_REMOUNT
                | rdonly
                | libc::MS_NOSUID
                | libc::MS_NODEV
                | b.flags;
            let rc = libc::mount(null, b.target.as_ptr(), null, ro, std::ptr::null());
            check(err, "read-only remount", rc);
        }
        for (path, major, minor, owned) in &self.nodes {
            let mode = if *owned { 0o600 } else { 0o666 };
            let dev = libc::makedev(*major, *minor);
            check(
                err,
                "mknod",
                libc::mknod(path.as_ptr(), libc::S_IFCHR | mode, dev),
            );
            if *owned {
                check(err, "chown", libc::chown(path.as_ptr(), self.uid, self.uid));
            }
        }
        if let Some(target) = &self.proc_fs {
            // Born in the engine's new pid namespace: this procfs shows the engine alone.
            let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            check(
                err,
                "mounting the jail's procfs",
                libc::mount(
                    c"proc".as_ptr(),
                    target.as_ptr(),
                    c"proc".as_ptr(),
                    flags,
                    c"subset=pid".as_ptr().cast(),
                ),
            );
        }
        check(err, "chdir", libc::chdir(self.mount_point.as_ptr()));
        let dot = c".".as_ptr();
        check(
            err,
            "pivot_root",
            libc::syscall(libc::SYS_pivot_root, dot, dot) as i32,
        );
        check(
            err,
            "detaching the old root",
            libc::umount2(dot, libc::MNT_DETACH),
        );
        check(err, "chdir /", libc::chdir(c"/".as_ptr()));
        let ro = libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC;
        check(
            err,
            "read-only root",
            libc::mount(null, c"/".as_ptr(), null, ro, std::ptr::null()),
        );
    }

    /// Empty bounding and ambient sets, the engine's uid and gid with no other group, no
    /// capability left in any set, death with the parent, no_new_privs.
    unsafe fn drop_privileges(&self, err: RawFd) {
        for cap in 0..=self.last_cap {
            let rc = libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0);
            if rc != 0 && *libc::__errno_location() != libc::EINVAL {
                check(err, "dropping the bounding set", rc);
            }
        }
        let clear = libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong;
        check(
            err,
            "clearing ambient capabilities",
            libc::prctl(libc::PR_CAP_AMBIENT, clear, 0, 0, 0),
        );
        check(err, "setgroups", libc::setgroups(0, std::ptr::null()));
        let id = self.uid;
        check(err, "setresgid", libc::setresgid(id, id, id));
        check(err, "setresuid", libc::setresuid(id, id, id));
        // The change of uid emptied the permitted and effective sets; inheritable too, now.
        let header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [CapData::default(); 2];
        check(
            err,
            "capset",
            libc::syscall(libc::SYS_capset, &header, data.as_ptr()) as i32,
        );
        // After the uid change, which clears it.
        let kill = libc::SIGKILL as libc::c_ulong;
        check(
            err,
            "PR_SET_PDEATHSIG",
            libc::prctl(libc::PR_SET_PDEATHSIG, kill, 0, 0, 0),
        );
        check(
            err,
            "no_new_privs",
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
        );
    }

    /// Moves the sources to 0, 1, 2, 3, ... (by way of copies above them all, so no source
    /// is overwritten before it is copied) and marks every other descriptor close-on-exec.
    /// Returns the error pipe's new number.
    unsafe fn take_descriptors(&self, err: RawFd) -> RawFd {
        let count = self.sources.len() as RawFd;
        let err = libc::fcntl(err, libc::F_DUPFD_CLOEXEC, count);
        if err < 0 {
            libc::_exit(126);
        }
        let mut copies = [0 as RawFd; MAX_FDS];
        if self.sources.len() > MAX_FDS {
            check(err, "too many descriptors for the engine", -1);
        }
        for (i, src) in self.sources.iter().enumerate() {
            copies[i] = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, count);
            check(err, "copying a descriptor", copies[i]);
        }
        for (target, copy) in copies.iter().take(self.sources.len()).enumerate() {
            check(
                err,
                "placing a descriptor",
                libc::dup2(*copy, target as RawFd),
            );
        }
        let rc = libc::syscall(
            libc::SYS_close_range,
            count as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        check(err, "close_range", rc as i32);
        err
    }
}

/// Most descriptors an engine is handed (stdio included).
const MAX_FDS: usize = 64;

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// In the child: on failure, reports errno and `step` on the pipe and exits.
unsafe fn check(err: RawFd, step: &str, rc: i32) {
    if rc >= 0 {
        return;
    }
    let errno = *libc::__errno_location();
    let code = errno.to_ne_bytes();
    libc::write(err, code.as_ptr().cast(), code.len());
    libc::write(err, step.as_ptr().cast(), step.len());
    libc::_exit(126);
}

/// The jail's tree, as paths under the mount point.
#[derive(Default)]
struct Layout {
    made: std::collections::BTreeSet<PathBuf>,
    dirs: Vec<CString>,
    symlinks: Vec<(CString, CString)>,
    binds: Vec<Bind>,
    nodes: Vec<(CString, u32, u32, bool)>,
}

impl Layout {
    fn inside(path: &Path) -> PathBuf {
        Path::new(JAIL_MOUNT).join(path.strip_prefix("/").unwrap_or(path))
    }

    /// Directories up to `path`'s parent.
    fn parents(&mut self, path: &Path) -> Result<(), VmError> {
        let mut todo = Vec::new();
        let mut p = path.parent();
        while let Some(dir) = p.filter(|d| *d != Path::new("/")) {
            if self.made.contains(dir) {
                break;
            }
            todo.push(dir.to_path_buf());
            p = dir.parent();
        }
        for dir in todo.into_iter().rev() {
            self.dirs.push(cstr(Self::inside(&dir))?);
            self.made.insert(dir);
        }
        Ok(())
    }

    /// A read-only bind of host `source` at `target` (a file or a directory).
    fn file(&mut self, source: &Path, target: &Path, flags: libc::c_ulong) -> Result<(), VmError> {
        let meta = std::fs::metadata(source).map_err(|e| jail_err(source, e))?;
        self.parents(target)?;
        if meta.is_dir() {
            self.dirs.push(cstr(Self::inside(target))?);
            self.made.insert(target.to_path_buf());
        }
        self.binds.push(Bind {
            source: cstr(source)?,
            target: cstr(Self::inside(target))?,
            is_file: !meta.is_dir(),
            flags,
            writable: false,
        });
        Ok(())
    }

    /// A read-write bind of host file `source` at `target` (no exec, no devices).
    fn writable_file(&mut self, source: &Path, target: &Path) -> Result<(), VmError> {
        let meta = std::fs::metadata(source).map_err(|e| jail_err(source, e))?;
        if !meta.is_file() {
            return Err(jail_err(source, "not a regular file"));
        }
        self.parents(target)?;
        self.binds.push(Bind {
            source: cstr(source)?,
            target: cstr(Self::inside(target))?,
            is_file: true,
            flags: libc::MS_NOEXEC,
            writable: true,
        });
        Ok(())
    }

    /// A library directory: the same symlink as on the host, or a read-only bind.
    fn library(&mut self, dir: &Path) -> Result<(), VmError> {
        match std::fs::symlink_metadata(dir) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(dir).map_err(|e| jail_err(dir, e))?;
                self.parents(dir)?;
                self.symlinks
                    .push((cstr(target)?, cstr(Self::inside(dir))?));
                self.made.insert(dir.to_path_buf());
                Ok(())
            }
            Ok(m) if m.is_dir() && !self.made.contains(dir) => self.file(dir, dir, 0),
            _ => Ok(()),
        }
    }

    /// An empty directory at `path` (a mount point); its name inside the jail's mount.
    fn empty_dir(&mut self, path: &Path) -> Result<CString, VmError> {
        self.parents(path)?;
        let inside = cstr(Self::inside(path))?;
        self.dirs.push(inside.clone());
        self.made.insert(path.to_path_buf());
        Ok(inside)
    }

    fn node(&mut self, path: &str, major: u32, minor: u32, owned: bool) -> Result<(), VmError> {
        let path = Path::new(path);
        self.parents(path)?;
        self.nodes
            .push((cstr(Self::inside(path))?, major, minor, owned));
        Ok(())
    }
}

/// What `inspect` shows of a running engine's confinement, read from /proc.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Confinement {
    /// Real, effective, saved, filesystem uids.
    pub uid: Vec<u32>,
    pub gid: Vec<u32>,
    /// 0 none, 1 strict, 2 filter.
    pub seccomp: u32,
    pub no_new_privs: bool,
    pub cap_eff: u64,
    pub cap_prm: u64,
    pub cap_bnd: u64,
}

/// Reads the confinement of process `pid` from its /proc status.
pub fn confinement(pid: i32) -> Option<Confinement> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let ids = |name: &str| {
        field(name)
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect::<Vec<u32>>()
    };
    let hex = |name: &str| u64::from_str_radix(&field(name), 16).unwrap_or(u64::MAX);
    Some(Confinement {
        uid: ids("Uid:"),
        gid: ids("Gid:"),
        seccomp: field("Seccomp:").parse().unwrap_or(0),
        no_new_privs: field("NoNewPrivs:") == "1",
        cap_eff: hex("CapEff:"),
        cap_prm: hex("CapPrm:"),
        cap_bnd: hex("CapBnd:"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_uids_never_meet_userns_auto_ranges() {
        use crate::container::userns::USERNS_ID_LIMIT;
        const { assert!(FIRST_UID >= USERNS_ID_LIMIT) };
        assert!(u64::from(FIRST_UID) + u64::from(UIDS) < u64::from(u32::MAX));
    }

    #[test]
    fn a_taken_lock_is_refused_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("7");
        let first = try_lock(&path).unwrap().expect("free");
        assert!(try_lock(&path).unwrap().is_none(), "held by `first`");
        drop(first);
        assert!(try_lock(&path).unwrap().is_some());
    }

    #[test]
    fn the_layout_makes_parents_once_and_keeps_host_symlinks() {
        let mut l = Layout::default();
        l.file(Path::new("/bin/sh"), Path::new("/usr/bin/sh"), 0)
            .unwrap();
        l.file(Path::new("/bin/true"), Path::new("/usr/bin/true"), 0)
            .unwrap();
        l.node("/dev/null", 1, 3, false).unwrap();
        let dirs: Vec<String> = l
            .dirs
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            dirs,
            [
                format!("{JAIL_MOUNT}/usr"),
                format!("{JAIL_MOUNT}/usr/bin"),
                format!("{JAIL_MOUNT}/dev")
            ]
        );
        assert_eq!(l.binds.len(), 2);
        assert!(l.binds.iter().all(|b| b.is_file));
    }

    /// capsa-vmm jailed as a VM's engine is, booting capsa-vmm's freestanding test guest
    /// (vmm/tests/guest) from a handed read-only disk: /dev/kvm, the libraries, the handed
    /// descriptor and the VMM's own seccomp filters all work inside the jail.
    #[test]
    fn capsa_vmm_runs_the_test_guest_in_its_jail() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let vmm = repo.join("target/debug/capsa-vmm");
        assert!(vmm.is_file(), "build it first: cargo build -p capsa-vmm");
        let dir = tempfile::tempdir().unwrap();
        let guest = dir.path().join("guest");
        let src = repo.join("vmm/tests/guest");
        let built = std::process::Command::new("gcc")
            .args([
                "-O1",
                "-ffreestanding",
                "-fno-stack-protector",
                "-fno-pic",
                "-no-pie",
            ])
            .args([
                "-mno-red-zone",
                "-mgeneral-regs-only",
                "-fno-builtin",
                "-nostdlib",
            ])
            .args([
                "-static",
                "-Wl,--build-id=none",
                "-Wl,--no-warn-rwx-segments",
            ])
            .arg(format!("-Wl,-T,{}", src.join("guest.ld").display()))
            .arg("-o")
            .arg(&guest)
            .arg(src.join("guest.c"))
            .status()
            .expect("gcc (build-essential)");
        assert!(built.success());
        let disk = dir.path().join("disk.img");
        let mut bytes = b"CAPSA-TEST-DISK".to_vec();
        bytes.resize(1 << 20, 0);
        std::fs::write(&disk, bytes).unwrap();
        let parent = format!("/capsa-jail-test-{}", std::process::id());
        let mode = cgroups::CgroupMode::detect().expect("cgroups");
        let paths = cgroups::resolve_paths(mode, Some(&parent), "vmm").unwrap();
        let jail = Jail::prepare(paths.clone(), 256, None, true, &guest, &guest).unwrap();
        let uid = jail.uid.uid;
        let mut cmd = EngineCommand {
            binary: vmm,
            args: Vec::new(),
            fds: Vec::new(),
            read_only: Vec::new(),
            read_write: Vec::new(),
            kvm: true,
            proc_fs: false,
            seccomp: String::new(),
        };
        let fd = cmd.pass(File::open(&disk).unwrap().into());
        cmd.args = [
            "--kernel",
            KERNEL,
            "--disk",
            &format!("fd={fd},ro"),
            "--mem",
            "64M",
        ]
        .map(String::from)
        .to_vec();
        let log_path = dir.path().join("log");
        let log = File::create(&log_path).unwrap();
        let mut child = jail.spawn(cmd, &log).unwrap();
        let seen = confinement(child.id()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the guest did not stop"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        jail.destroy();
        for dir in paths.dirs.values() {
            let _ = std::fs::remove_dir(dir.parent().unwrap());
        }
        let out = std::fs::read_to_string(&log_path).unwrap();
        assert_eq!(status.code(), Some(0), "{out}");
        assert!(out.contains("ok: virtio-blk read sector 0"), "{out}");
        assert_eq!(seen.uid, vec![uid; 4]);
        assert_eq!((seen.cap_eff, seen.cap_bnd), (0, 0));
        assert!(seen.no_new_privs);
    }

    #[test]
    fn child_errors_name_the_step_and_the_cause() {
        let mut report = libc::EPERM.to_ne_bytes().to_vec();
        report.extend_from_slice(b"pivot_root");
        let text = child_error(&report);
        assert!(text.contains("pivot_root"), "{text}");
        assert!(text.contains("not permitted"), "{text}");
    }
}
