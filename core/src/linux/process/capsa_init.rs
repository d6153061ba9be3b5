//! capsa-init (the `init/` crate): the small static program a workload is started through
//! when it must not be a copy of capsa. It is the container's PID 1 with `--init` (reaping,
//! passing signals on), and the parent of every `exec`'d process, from outside the
//! container's PID namespace. The caller loads it into a sealed memfd while it still sees
//! the host's files; the entering process execs that copy (execveat, AT_EMPTY_PATH) with the
//! argument list `capsa-init -- COMMAND...` and the workload's environment, after taking the
//! workload's user, capabilities, no_new_privs and seccomp filter.
//!
//! So a container's /proc/PID/exe is at most a sealed in-memory copy no one can write, never
//! a host file a container could reopen for writing once capsa stops running it
//! (CVE-2019-5736), and /proc/PID/cmdline and environ hold nothing of the caller's.

use nix::fcntl::{AtFlags, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The static build's file name, beside the capsa binaries (cargo's own `capsa-init` there
/// is dynamically linked: a container has no libraries for it).
pub const FILE_NAME: &str = "capsa-init-static";
/// Its name in `ps`, and the first word of its argument list.
pub const ARGV0: &str = "capsa-init";

/// Why the program could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read (most often: it was never built or installed).
    #[error("the init program {path}: {source} (scripts/build-agent.sh builds it beside capsa)")]
    Read {
        /// Where it was looked for.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a static executable.
    #[error("the init program {0} is not a static executable (a container has no shared libraries for it)")]
    NotStatic(PathBuf),
    /// The in-memory copy could not be made.
    #[error("sealed copy of the init program {path}: {source}")]
    Copy {
        /// The file copied.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Where the host's copy is: beside the running capsa binary.
pub fn host_path() -> PathBuf {
    std::env::current_exe()
        .map(|p| p.with_file_name(FILE_NAME))
        .unwrap_or_else(|_| PathBuf::from(FILE_NAME))
}

/// Loads the host's copy (see [`host_path`]) sealed into memory.
pub fn load_host() -> Result<OwnedFd, LoadError> {
    load(&host_path())
}

/// Copies the program at `path` into a memfd and seals it against every change (write,
/// grow, shrink, further seals). The descriptor is close-on-exec: execveat of an ELF
/// through it still works, and it leaks into nothing.
pub fn load(path: &Path) -> Result<OwnedFd, LoadError> {
    let binary = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !binary.starts_with(b"\x7fELF") || has_interpreter(&binary) {
        return Err(LoadError::NotStatic(path.to_path_buf()));
    }
    sealed_copy(&binary).map_err(|source| LoadError::Copy {
        path: path.to_path_buf(),
        source,
    })
}

/// A sealed memfd holding `bytes`.
pub fn sealed_copy(bytes: &[u8]) -> std::io::Result<OwnedFd> {
    let flags = MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING;
    // MFD_EXEC (Linux 6.3) keeps the copy executable where vm.memfd_noexec would make new
    // memfds non-executable; older kernels refuse the flag, and there memfds are executable.
    let exec = MemFdCreateFlag::from_bits_retain(libc::MFD_EXEC as libc::c_uint);
    let name = c"capsa-init";
    let fd = match memfd_create(name, flags | exec) {
        Err(nix::errno::Errno::EINVAL) => memfd_create(name, flags)?,
        other => other?,
    };
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)?;
    let seals = SealFlag::F_SEAL_SEAL
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE;
    nix::fcntl::fcntl(file.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals))?;
    Ok(file.into())
}

/// Whether an ELF64 file asks for a program interpreter (PT_INTERP): a dynamic executable.
pub fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()) as usize)
    };
    let (Some(phoff), Some(size), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    (0..count).any(|i| {
        let at = phoff.saturating_add(i * size);
        elf.get(at..at.saturating_add(4)) == Some(&3u32.to_le_bytes()[..])
    })
}

/// Replaces this process with `program` (a sealed copy from [`load`]) running `command` with
/// `env` as its environment: `capsa-init -- COMMAND...`. Returns only on failure.
pub fn exec(program: &OwnedFd, command: &[CString], env: &[CString]) -> nix::errno::Errno {
    let argv: Vec<CString> = [
        CString::new(ARGV0).unwrap_or_default(),
        CString::new("--").unwrap_or_default(),
    ]
    .into_iter()
    .chain(command.iter().cloned())
    .collect();
    match nix::unistd::execveat(
        Some(program.as_raw_fd()),
        c"",
        &argv,
        env,
        AtFlags::AT_EMPTY_PATH,
    ) {
        Err(e) => e,
        Ok(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_executables_are_recognised() {
        assert!(has_interpreter(&std::fs::read("/bin/sh").unwrap()));
        assert!(
            !has_interpreter(&std::fs::read("/bin/busybox").unwrap()),
            "Debian's busybox-static"
        );
        assert!(!has_interpreter(b"short"));
    }

    #[test]
    fn a_sealed_copy_cannot_change() {
        let fd = sealed_copy(b"\x7fELF sealed").unwrap();
        let seals = nix::fcntl::fcntl(fd.as_raw_fd(), FcntlArg::F_GET_SEALS).unwrap();
        let all = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        assert_eq!(seals & all, all);
        let mut f = std::fs::File::from(fd);
        assert!(f.write_all(b"more").is_err());
        let again = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{}", f.as_raw_fd()))
            .and_then(|mut w| w.write_all(b"x"));
        assert!(again.is_err(), "a reopened descriptor cannot write either");
    }

    #[test]
    fn a_missing_or_dynamic_program_is_named() {
        let err = load(Path::new("/nonexistent/capsa-init-static")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/capsa-init-static"),
            "{err}"
        );
        let err = load(Path::new("/bin/sh")).unwrap_err();
        assert!(matches!(err, LoadError::NotStatic(_)), "{err}");
    }
}
