//! Probes of kernel surface a container shares with its host: module and kexec loading, BPF,
//! perf, io_uring, userfaultfd, keyrings, user namespaces, raw sockets. Each call either
//! creates an object that is closed at once or is built to fail after the permission checks
//! (an unparsable module, too many kexec segments), so a reached call changes nothing.

use super::Env;
use crate::findings::Finding;
use crate::sys::{self, describe};

/// What one call returned, turned into a finding: success, or one of `reached` (errnos the
/// kernel gives only after its permission checks passed), is reached; ENOSYS is absent
/// (the harness reruns without seccomp to tell a missing syscall from a filtered one);
/// anything else is refused.
fn classify(
    name: &str,
    what: &str,
    rc: Result<libc::c_long, i32>,
    opened_fd: bool,
    reached: &[i32],
) -> Finding {
    match rc {
        Ok(v) => {
            if opened_fd {
                sys::close(v as i32);
            }
            Finding::reached(name, format!("{what}: succeeded"))
        }
        Err(e) if reached.contains(&e) => Finding::reached(
            name,
            format!(
                "{what}: the kernel got past its permission checks and answered {}",
                describe(e)
            ),
        )
        .fact("answer", sys::errno_name(e)),
        Err(libc::ENOSYS) => Finding::absent(
            name,
            Some(libc::ENOSYS),
            format!("{what}: {}", describe(libc::ENOSYS)),
        ),
        Err(e) => Finding::refused(name, e, format!("{what}: {}", describe(e))),
    }
}

/// A sysctl that decides a probe's outcome for unprivileged callers, as a fact.
fn with_sysctl(f: Finding, key: &str, path: &str) -> Finding {
    match sys::read_line(path) {
        Some(v) => f.fact(key, v),
        None => f,
    }
}

pub fn module(_: &Env) -> Finding {
    // 64 zero bytes: not an ELF file, so a permitted call fails with ENOEXEC (or a signature
    // error) and nothing is loaded.
    let image = [0u8; 64];
    // SAFETY: init_module reads `len` bytes of a valid buffer and a NUL-terminated string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_init_module,
            image.as_ptr(),
            image.len(),
            c"".as_ptr(),
        )
    };
    let f = classify(
        "kernel_module",
        "init_module of a non-ELF image",
        sys::result(rc),
        false,
        &[
            libc::ENOEXEC,
            libc::EINVAL,
            libc::EKEYREJECTED,
            libc::EBADMSG,
            libc::ENOKEY,
            libc::ENOPKG,
        ],
    );
    with_sysctl(f, "modules_disabled", "/proc/sys/kernel/modules_disabled")
}

/// More segments than the kernel accepts (KEXEC_SEGMENT_MAX is 16).
const KEXEC_SEGMENTS: libc::c_ulong = 17;
/// KEXEC_ARCH_386: another architecture's image, refused after the permission checks too.
const KEXEC_ARCH_386: libc::c_ulong = 3 << 16;

pub fn kexec(_: &Env) -> Finding {
    // SAFETY: with this many segments the kernel returns EINVAL before reading the (null)
    // segment array; nothing is loaded or unloaded.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kexec_load,
            0 as libc::c_ulong,
            KEXEC_SEGMENTS,
            std::ptr::null::<u8>(),
            KEXEC_ARCH_386,
        )
    };
    let f = classify(
        "kexec",
        "kexec_load with 17 segments",
        sys::result(rc),
        false,
        &[libc::EINVAL],
    );
    with_sysctl(
        f,
        "kexec_load_disabled",
        "/proc/sys/kernel/kexec_load_disabled",
    )
}

/// bpf(2) command and program type.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;

pub fn bpf(_: &Env) -> Finding {
    // r0 = 0; exit: a socket filter that drops everything, attached to nothing.
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = c"GPL";
    // union bpf_attr for BPF_PROG_LOAD: prog_type, insn_cnt, insns, license; the rest zero.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_SOCKET_FILTER.to_ne_bytes());
    attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    // SAFETY: attr points at 128 bytes laid out as bpf_attr; insns and license outlive the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, attr.as_ptr(), attr.len()) };
    let f = classify(
        "bpf",
        "bpf(BPF_PROG_LOAD) of a socket filter",
        sys::result(rc),
        true,
        &[libc::EINVAL, libc::E2BIG],
    );
    with_sysctl(
        f,
        "unprivileged_bpf_disabled",
        "/proc/sys/kernel/unprivileged_bpf_disabled",
    )
}

/// perf_event_attr fields used (the first 64 bytes are PERF_ATTR_SIZE_VER0).
const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
const PERF_ATTR_SIZE_VER0: u32 = 64;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

pub fn perf_event(_: &Env) -> Finding {
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&PERF_TYPE_SOFTWARE.to_ne_bytes());
    attr[4..8].copy_from_slice(&PERF_ATTR_SIZE_VER0.to_ne_bytes());
    attr[8..16].copy_from_slice(&PERF_COUNT_SW_CPU_CLOCK.to_ne_bytes());
    attr[40..48].copy_from_slice(&1u64.to_ne_bytes()); // disabled: counts nothing
                                                       // SAFETY: attr is a zeroed perf_event_attr of VER0 size; pid -1, cpu 0: every process on
                                                       // CPU 0 (what needs privilege), group -1.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            -1 as libc::c_int,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    let f = classify(
        "perf_event",
        "perf_event_open for all processes on CPU 0",
        sys::result(rc),
        true,
        &[],
    );
    with_sysctl(
        f,
        "perf_event_paranoid",
        "/proc/sys/kernel/perf_event_paranoid",
    )
}

pub fn io_uring(_: &Env) -> Finding {
    // struct io_uring_params: 120 bytes, zero in.
    let mut params = [0u8; 120];
    // SAFETY: one entry; params is a zeroed io_uring_params the kernel fills.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            1 as libc::c_uint,
            params.as_mut_ptr(),
        )
    };
    let f = classify("io_uring", "io_uring_setup", sys::result(rc), true, &[]);
    with_sysctl(f, "io_uring_disabled", "/proc/sys/kernel/io_uring_disabled")
}

pub fn userfaultfd(_: &Env) -> Finding {
    // SAFETY: userfaultfd takes flags only; the descriptor is closed at once.
    let rc = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
    let f = classify(
        "userfaultfd",
        "userfaultfd (user and kernel faults)",
        sys::result(rc),
        true,
        &[],
    );
    with_sysctl(
        f,
        "unprivileged_userfaultfd",
        "/proc/sys/vm/unprivileged_userfaultfd",
    )
}

const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
const KEY_SPEC_USER_KEYRING: libc::c_long = -4;

pub fn keyctl(_: &Env) -> Finding {
    // SAFETY: asks for the id of the caller's uid keyring without creating it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_GET_KEYRING_ID,
            KEY_SPEC_USER_KEYRING,
            0 as libc::c_long,
        )
    };
    classify(
        "keyctl",
        "keyctl(GET_KEYRING_ID, the uid's keyring)",
        sys::result(rc),
        false,
        &[libc::ENOKEY],
    )
}

pub fn user_namespace(_: &Env) -> Finding {
    let child = sys::in_child(|| {
        // SAFETY: unshare in the forked child only; it exits right after.
        if unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0 {
            0
        } else {
            sys::errno()
        }
    });
    let rc = match child {
        Ok(0) => Ok(0),
        Ok(e) | Err(e) => Err(e),
    };
    let f = classify(
        "user_namespace",
        "unshare(CLONE_NEWUSER) in a child",
        rc,
        false,
        &[],
    );
    with_sysctl(
        f,
        "max_user_namespaces",
        "/proc/sys/user/max_user_namespaces",
    )
}

pub fn raw_socket(_: &Env) -> Finding {
    // SAFETY: socket(2) with constant arguments; closed at once.
    let rc = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    let rc = if rc < 0 {
        Err(sys::errno())
    } else {
        Ok(libc::c_long::from(rc))
    };
    match rc {
        Err(libc::EAFNOSUPPORT) | Err(libc::ESOCKTNOSUPPORT) | Err(libc::EPROTONOSUPPORT) => {
            Finding::absent("raw_socket", rc.err(), "no IPv4 raw sockets in this kernel")
        }
        _ => classify(
            "raw_socket",
            "socket(AF_INET, SOCK_RAW, ICMP)",
            rc,
            true,
            &[],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::Reach;

    #[test]
    fn an_errno_the_kernel_gives_only_past_its_checks_counts_as_reached() {
        let reach = |rc, ok: &[i32]| classify("p", "call", rc, false, ok).reach;
        assert_eq!(reach(Ok(0), &[]), Reach::Reached);
        assert_eq!(reach(Err(libc::ENOEXEC), &[libc::ENOEXEC]), Reach::Reached);
        assert_eq!(reach(Err(libc::EPERM), &[libc::ENOEXEC]), Reach::Refused);
        assert_eq!(reach(Err(libc::ENOSYS), &[]), Reach::Absent);
        assert_eq!(reach(Err(libc::EINVAL), &[]), Reach::Refused);
    }
}
