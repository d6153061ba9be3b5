//! The few bpf(2) commands that put a device program on a cgroup: load it, attach it, list
//! and detach what is attached. The `union bpf_attr` members are declared here for just
//! these commands; the kernel accepts an attribute shorter than its own union.

use std::ffi::c_void;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `enum bpf_cmd` values.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
/// `enum bpf_prog_type`: BPF_PROG_TYPE_CGROUP_DEVICE.
const PROG_TYPE_CGROUP_DEVICE: u32 = 15;
/// `enum bpf_attach_type`: BPF_CGROUP_DEVICE.
const ATTACH_CGROUP_DEVICE: u32 = 6;
/// Attach flag: programs of descendant cgroups run too, and none can replace this one.
const BPF_F_ALLOW_MULTI: u32 = 2;
/// The most programs of one type a cgroup holds (BPF_CGROUP_MAX_PROGS).
const MAX_ATTACHED: usize = 64;
/// Verifier log kept when a load fails.
const LOG_BYTES: usize = 16 * 1024;

/// `bpf_attr` for BPF_PROG_LOAD, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `bpf_attr` for BPF_PROG_ATTACH and BPF_PROG_DETACH.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// `bpf_attr` for BPF_PROG_QUERY.
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    /// The kernel's unnamed padding before `prog_attach_flags`, kept zero.
    _pad: u32,
}

/// `bpf_attr` for BPF_PROG_GET_FD_BY_ID.
#[repr(C)]
#[derive(Default)]
struct GetFdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// bpf(2) with one of the attributes above; returns its non-negative result.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<RawFd> {
    // SAFETY: `attr` is a live, initialised #[repr(C)] prefix of `union bpf_attr` for `cmd`,
    // and its size is passed; pointers inside it point at buffers that outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as RawFd)
    }
}

/// The descriptor of a new file descriptor returned by the kernel.
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by bpf(2) as a new descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A load refused by the kernel, with the verifier's last words when it gave any.
#[derive(Debug)]
pub struct LoadError {
    /// errno of BPF_PROG_LOAD.
    pub source: io::Error,
    /// The verifier's log (empty when the kernel refused before verifying).
    pub log: String,
}

/// Loads `insns` (8-byte eBPF instructions) as a cgroup device program named `name`.
pub fn load_device_program(insns: &[u8], name: &str) -> Result<OwnedFd, LoadError> {
    let license = c"Apache-2.0";
    let mut attr = ProgLoadAttr {
        prog_type: PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: (insns.len() / 8) as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    for (dst, src) in attr.prog_name[..15].iter_mut().zip(name.bytes()) {
        *dst = src;
    }
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(owned(fd)),
        Err(source) => {
            // Again with a log, to say why (the first try skips the cost of one).
            let mut log = vec![0u8; LOG_BYTES];
            attr.log_level = 1;
            attr.log_size = LOG_BYTES as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_PROG_LOAD, &mut attr);
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let log = String::from_utf8_lossy(&log[..end]).trim().to_string();
            Err(LoadError { source, log })
        }
    }
}

/// Attaches device program `prog` to the cgroup directory `cgroup`, beside what is there.
pub fn attach_device_program(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: ATTACH_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map(drop)
}

/// The ids of the device programs attached to `cgroup` itself (not inherited ones).
pub fn attached_device_programs(cgroup: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; MAX_ATTACHED];
    let mut attr = QueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: ATTACH_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: MAX_ATTACHED as u32,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr)?;
    ids.truncate((attr.prog_cnt as usize).min(MAX_ATTACHED));
    Ok(ids)
}

/// Detaches the device program with id `id` from `cgroup`. One already gone is fine.
pub fn detach_device_program(cgroup: BorrowedFd<'_>, id: u32) -> io::Result<()> {
    let mut get = GetFdAttr {
        prog_id: id,
        ..Default::default()
    };
    let prog = match bpf(BPF_PROG_GET_FD_BY_ID, &mut get) {
        Ok(fd) => owned(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: ATTACH_CGROUP_DEVICE,
        ..Default::default()
    };
    match bpf(BPF_PROG_DETACH, &mut attr) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other.map(drop),
    }
}
