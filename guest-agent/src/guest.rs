//! What PID 1 sets up before anything else, and how it ends the VM.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::OnceLock;

use capsa_core::linux::process::capsa_init::{self, LoadError};
use capsa_core::protocol::INIT_PROGRAM_IN_GUEST;
use nix::mount::{mount, MsFlags};

/// capsa-init, sealed in memory from the initramfs's copy (which leave_initramfs hides).
static INIT_PROGRAM: OnceLock<Result<OwnedFd, LoadError>> = OnceLock::new();

/// Why the sealed capsa-init is not there for a workload.
#[derive(Debug, thiserror::Error)]
pub enum InitProgramError {
    /// The initramfs's copy could not be read or sealed.
    #[error(transparent)]
    Load(&'static LoadError),
    /// [`setup`] has not run: this process is not the guest's init.
    #[error("{INIT_PROGRAM_IN_GUEST} was not loaded (the agent is not the guest's init)")]
    NotLoaded,
}

/// Where the initramfs holds e2fsck (Debian's e2fsck-static), for the writable disk.
pub const E2FSCK_PATH: &str = "/sbin/e2fsck";

/// e2fsck, opened from the initramfs before the root moves away from it.
static E2FSCK: OnceLock<OwnedFd> = OnceLock::new();

/// e2fsck as a path that execve takes (its descriptor under /proc/self/fd), if the
/// initramfs has it.
pub fn e2fsck() -> Option<String> {
    E2FSCK
        .get()
        .map(|fd| format!("/proc/self/fd/{}", fd.as_raw_fd() as RawFd))
}

/// Mounts the kernel's file systems and the cgroup2 hierarchy (with its controllers enabled
/// for children), brings up the loopback interface. capsa-init is loaded first, while the
/// initramfs is still the root.
pub fn setup() -> std::io::Result<()> {
    let loaded = capsa_init::load(Path::new(INIT_PROGRAM_IN_GUEST));
    let _ = INIT_PROGRAM.set(loaded);
    if let Ok(f) = std::fs::File::open(E2FSCK_PATH) {
        let _ = E2FSCK.set(OwnedFd::from(f));
    }
    leave_initramfs()?;
    let mounts: [(&str, &str, &str, MsFlags); 5] = [
        (
            "proc",
            "/proc",
            "proc",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        ),
        (
            "sysfs",
            "/sys",
            "sysfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        ),
        ("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        ),
        (
            "cgroup2",
            "/sys/fs/cgroup",
            "cgroup2",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        ),
    ];
    for (source, target, fstype, flags) in mounts {
        std::fs::create_dir_all(target)?;
        mount(Some(source), target, Some(fstype), flags, None::<&str>)
            .map_err(|e| std::io::Error::other(format!("mount {fstype} on {target}: {e}")))?;
    }
    std::fs::create_dir_all("/dev/pts")?;
    let _ = mount(
        Some("devpts"),
        "/dev/pts",
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666"),
    );
    // The engine's tmpfs for the seccomp cache and per-container folders.
    std::fs::create_dir_all("/run/capsa")?;
    loopback_up();
    Ok(())
}

/// Makes a tmpfs the root, as switch_root does: the kernel refuses pivot_root away from the
/// initramfs (rootfs), and the container core pivots into each container's root.
fn leave_initramfs() -> std::io::Result<()> {
    let new = "/newroot";
    std::fs::create_dir_all(new)?;
    mount(
        Some("tmpfs"),
        new,
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )
    .map_err(|e| std::io::Error::other(format!("mount tmpfs on {new}: {e}")))?;
    for d in ["dev", "proc", "sys", "run", "tmp"] {
        std::fs::create_dir_all(Path::new(new).join(d))?;
    }
    std::env::set_current_dir(new)?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| std::io::Error::other(format!("move {new} to /: {e}")))?;
    nix::unistd::chroot(".").map_err(|e| std::io::Error::other(format!("chroot: {e}")))?;
    std::env::set_current_dir("/")
}

/// The sealed capsa-init the workload's `--init` and every exec start through.
pub fn init_program() -> Result<&'static OwnedFd, InitProgramError> {
    match INIT_PROGRAM.get() {
        Some(Ok(fd)) => Ok(fd),
        Some(Err(e)) => Err(InitProgramError::Load(e)),
        None => Err(InitProgramError::NotLoaded),
    }
}

fn loopback_up() {
    if let Ok(mut nl) = capsa_core::netlink::Netlink::open() {
        if let Ok(Some(lo)) = nl.link_index("lo") {
            let _ = nl.set_up(lo, None);
        }
    }
}

/// Sets eth0's address and default route as the host planned them, IPv6 off first.
pub fn configure_eth0(net: &capsa_core::protocol::GuestNetwork) -> std::io::Result<()> {
    let mut nl = capsa_core::netlink::Netlink::open()?;
    let eth0 = nl
        .link_index("eth0")?
        .ok_or_else(|| std::io::Error::other("the VM has no eth0"))?;
    disable_ipv6("eth0")?;
    nl.add_address(eth0, net.address, net.prefix)?;
    nl.set_up(eth0, net.mac)?;
    // 0.0.0.0: a network without a way out (a pod whose CNI set no default route).
    if net.gateway.is_unspecified() {
        return Ok(());
    }
    nl.add_default_route(net.gateway)
}

/// Turns IPv6 off on `link` before it is up: capsa's networks are IPv4 only (as a
/// container's eth0), so no router advertisement from another workload on the bridge
/// configures the guest, and the workload cannot use the guest's IPv6 stack to forge one.
fn disable_ipv6(link: &str) -> std::io::Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{link}/disable_ipv6");
    match std::fs::write(&path, "1") {
        // A guest kernel without IPv6 has nothing to turn off.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(std::io::Error::other(format!("{path}: {e}"))),
        Ok(()) => Ok(()),
    }
}

/// The kernel's version, for the host's hello.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Ends every other process, unmounts the disks, flushes and resets the VM: with `reboot=k`
/// (capsa-vmm) and `-no-reboot` (QEMU) a reset ends the VMM process, which is what the host
/// waits for. The writable layer has no journal, so it must be unmounted (or at least made
/// read-only) to be clean when the container starts again.
pub fn power_off() -> ! {
    end_all_processes();
    unmount_all();
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    // reboot(2) does not return on success; if it failed there is nothing left to do.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// Sets the guest's wall clock from the host's stamp on a request, where it is wrong (see
/// `protocol::clock_correction`): the guest kernel has no clock that follows the host's (no
/// RTC; under QEMU's emulator it counts jiffies, which fall behind when the host is busy), so
/// the first request (`Hello`, before any workload exists) sets it and every later one keeps
/// it. Only as the guest's init: the agent's tests run on the host.
pub fn follow_host_clock(host_ns: u64) {
    if !is_guest_init() {
        return;
    }
    let guest_ns = capsa_core::protocol::wall_clock_ns().unwrap_or(0);
    let Some(set) = capsa_core::protocol::clock_correction(guest_ns, host_ns) else {
        return;
    };
    let ts = libc::timespec {
        tv_sec: (set / 1_000_000_000) as libc::time_t,
        tv_nsec: (set % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: clock_settime reads the timespec we own; a failure leaves the clock as it was.
    unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) };
}

/// True when running as the guest's init (tests run the library elsewhere).
pub fn is_guest_init() -> bool {
    std::process::id() == 1 && Path::new("/proc/1").exists()
}

/// SIGKILL to every process but this one (kill(-1) from PID 1), then reaps them for up to a
/// second, so that no file stays open on the disks.
fn end_all_processes() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(-1),
        nix::sys::signal::Signal::SIGKILL,
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while std::time::Instant::now() < deadline {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(std::time::Duration::from_millis(5)),
            Ok(_) => {}
            Err(_) => return, // ECHILD: none left
        }
    }
}

/// Unmounts what is mounted, newest first; a mount still busy is made read-only instead.
fn unmount_all() {
    use nix::mount::{umount2, MntFlags};
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    // Field 5 of a mountinfo line is the mount point (octal escapes aside, which capsa's
    // own mount points do not have).
    let points: Vec<String> = table
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .collect();
    for point in points.iter().rev() {
        if matches!(point.as_str(), "/" | "/proc" | "/sys" | "/dev") {
            continue;
        }
        if umount2(point.as_str(), MntFlags::empty()).is_err() {
            let _ = mount(
                None::<&str>,
                point.as_str(),
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            );
        }
    }
}
