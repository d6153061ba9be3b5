//! Per-thread seccomp filters (seccompiler), installed once set-up is done: each thread may make
//! only the system calls its work needs, and any other kills the VMM. The lists were taken from
//! `strace -f` of the VMM running the test guest and a Linux guest, per thread.
//! - vCPU threads: KVM_RUN, and what MMIO/port handlers do (eventfd and console writes, device
//!   activation and reset, which register and drop sockets in epoll);
//! - the VMM thread: the epoll loop and the devices' host I/O (disk reads/writes/flush, Unix
//!   sockets for vsock), and kicking vCPUs at stop;
//! - the VMM thread of a VM run with a snapshot directory: also the KVM_GET_* ioctls that read
//!   the stopped vCPUs' and VM's state (the snapshot files are opened before the filter).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    Vmm,
    /// The VMM thread when the guest's snapshot point writes a snapshot.
    VmmSnapshotting,
    Vcpu,
}

#[derive(Debug, thiserror::Error)]
#[error("seccomp filter for the {kind:?} thread: {detail}")]
pub struct SeccompError {
    kind: ThreadKind,
    detail: String,
}

/// KVM_RUN = _IO(KVMIO, 0x80); FIONBIO sets O_NONBLOCK on sockets.
const KVM_RUN: u64 = 0xae80;
const FIONBIO: u64 = 0x5421;

/// A KVM ioctl request number: `_IOC(dir, KVMIO, nr, size)`.
const fn kvm_ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (0xae << 8) | nr
}
const READ: u64 = 2;
const READ_WRITE: u64 = 3;

/// What a snapshot reads from the stopped vCPUs and VM (see `vstate::saved`).
const SNAPSHOT_IOCTLS: &[u64] = {
    use kvm_bindings::*;
    use std::mem::size_of;
    &[
        kvm_ioc(READ, 0x81, size_of::<kvm_regs>()),
        kvm_ioc(READ, 0x83, size_of::<kvm_sregs>()),
        kvm_ioc(READ_WRITE, 0x88, size_of::<kvm_msrs>()),
        kvm_ioc(READ, 0x8e, size_of::<kvm_lapic_state>()),
        kvm_ioc(READ_WRITE, 0x91, size_of::<kvm_cpuid2>()),
        kvm_ioc(READ, 0x98, size_of::<kvm_mp_state>()),
        kvm_ioc(READ, 0x9f, size_of::<kvm_vcpu_events>()),
        kvm_ioc(READ, 0xa1, size_of::<kvm_debugregs>()),
        kvm_ioc(READ, 0xa4, size_of::<kvm_xsave>()),
        kvm_ioc(READ, 0xa6, size_of::<kvm_xcrs>()),
        kvm_ioc(READ_WRITE, 0x62, size_of::<kvm_irqchip>()),
        kvm_ioc(READ, 0x9f, size_of::<kvm_pit_state2>()),
        kvm_ioc(READ, 0x7c, size_of::<kvm_clock_data>()),
    ]
};

/// What every thread of a Rust program needs to run, allocate, sleep, exit and take signals.
const COMMON: &[i64] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_futex,
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_restart_syscall,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_sched_yield,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_epoll_ctl,
    // Rust's std checks an fd with F_GETFD before closing it in debug builds.
    libc::SYS_fcntl,
];

/// The VMM thread's device I/O and loop.
const VMM: &[i64] = &[
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_shutdown,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_fdatasync,
    libc::SYS_fsync,
    libc::SYS_tgkill,
];

fn rules(kind: ThreadKind) -> Result<BTreeMap<i64, Vec<SeccompRule>>, seccompiler::BackendError> {
    let mut map: BTreeMap<i64, Vec<SeccompRule>> =
        COMMON.iter().map(|s| (*s, Vec::new())).collect();
    let ioctl = |request: u64| -> Result<SeccompRule, seccompiler::BackendError> {
        SeccompRule::new(vec![SeccompCondition::new(
            1,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            request,
        )?])
    };
    match kind {
        ThreadKind::Vcpu => {
            map.insert(libc::SYS_ioctl, vec![ioctl(KVM_RUN)?]);
        }
        ThreadKind::Vmm | ThreadKind::VmmSnapshotting => {
            map.extend(VMM.iter().map(|s| (*s, Vec::new())));
            let mut ioctls = vec![ioctl(FIONBIO)?];
            if kind == ThreadKind::VmmSnapshotting {
                for request in SNAPSHOT_IOCTLS {
                    ioctls.push(ioctl(*request)?);
                }
            }
            map.insert(libc::SYS_ioctl, ioctls);
            // Sockets: Unix only (vsock's connections to host services).
            let unix = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                libc::AF_UNIX as u64,
            )?;
            map.insert(libc::SYS_socket, vec![SeccompRule::new(vec![unix])?]);
        }
    }
    Ok(map)
}

/// The compiled filter for a thread of `kind`.
pub fn filter(kind: ThreadKind) -> Result<BpfProgram, SeccompError> {
    let err = |detail: String| SeccompError { kind, detail };
    let rules = rules(kind).map_err(|e| err(e.to_string()))?;
    let f = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| err(e.to_string()))?;
    f.try_into()
        .map_err(|e: seccompiler::BackendError| err(e.to_string()))
}

/// Installs the filter of `kind` on the calling thread.
pub fn apply(kind: ThreadKind) -> Result<(), SeccompError> {
    let program = filter(kind)?;
    seccompiler::apply_filter(&program).map_err(|e| SeccompError {
        kind,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_filters_compile() {
        assert!(!filter(ThreadKind::Vmm).unwrap().is_empty());
        assert!(!filter(ThreadKind::VmmSnapshotting).unwrap().is_empty());
        assert!(!filter(ThreadKind::Vcpu).unwrap().is_empty());
    }

    #[test]
    fn a_filtered_thread_cannot_open_files() {
        // In a child process, so the kill on mismatch ends only the child.
        // SAFETY: fork in a test process; the child only applies the filter and makes syscalls.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let _ = apply(ThreadKind::Vcpu);
            // SAFETY: a plain syscall with a valid NUL-terminated path.
            unsafe { libc::open(c"/etc/hostname".as_ptr(), libc::O_RDONLY) };
            // SAFETY: _exit never returns; reached only if open was allowed.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFSIGNALED(status), "the child was not killed");
        assert_eq!(libc::WTERMSIG(status), libc::SIGSYS);
    }
}
