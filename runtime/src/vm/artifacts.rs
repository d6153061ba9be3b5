//! What every VM boots: our guest kernel and an initramfs holding the static guest agent as
//! /init and capsa-init (the program `--init` and `exec` start workloads through) as
//! /capsa-init. The initramfs is built once per pair of binaries and cached in the state
//! directory; which one a run uses is found from the binaries' file stamps (size, inode,
//! mtime, ctime) when they have not changed since their contents were last hashed, so a VM's
//! start does not read and hash 8 MB of programs each time.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::VmError;
use crate::linux::process::capsa_init::{self, has_interpreter};
use crate::root::StateRoot;

pub const KERNEL_ENV: &str = "CAPSA_KERNEL";
pub const AGENT_ENV: &str = "CAPSA_AGENT";
const KERNEL_CACHE: &str = "/var/cache/capsa/kernel";
/// Debian's e2fsck-static: the agent checks an unclean writable disk with it, in the guest.
const E2FSCK_STATIC: &str = "/sbin/e2fsck.static";

pub struct GuestArtifacts {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

/// Finds the kernel and the agent and makes sure the initramfs exists.
pub fn locate(root: &StateRoot) -> Result<GuestArtifacts, VmError> {
    let kernel = kernel(root)?;
    let agent = agent()?;
    let init_program = init_program()?;
    let initramfs = initramfs(root, &agent, &init_program)?;
    Ok(GuestArtifacts { kernel, initramfs })
}

/// `$CAPSA_KERNEL`, `<root>/kernel/vmlinux`, or the newest build of kernel-config/build.sh.
pub fn kernel(root: &StateRoot) -> Result<PathBuf, VmError> {
    if let Ok(p) = std::env::var(KERNEL_ENV) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(VmError::NoKernel(format!(
                "{KERNEL_ENV}={} does not exist",
                p.display()
            )))
        };
    }
    let own = root.kernel_dir().join("vmlinux");
    if own.is_file() {
        return Ok(own);
    }
    let newest = std::fs::read_dir(KERNEL_CACHE)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("vmlinux"))
        .filter(|p| p.is_file())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok());
    newest.ok_or_else(|| {
        VmError::NoKernel(format!(
            "none in {KERNEL_ENV}, {} or {KERNEL_CACHE}",
            own.display()
        ))
    })
}

/// The static agent's file name beside the capsa binary (cargo's own `capsa-agent` there is
/// dynamically linked and would not run in the guest).
pub const AGENT_FILE: &str = "capsa-agent-static";

/// `$CAPSA_AGENT`, else `capsa-agent-static` beside the capsa binary; it must be static.
fn agent() -> Result<PathBuf, VmError> {
    let path = match std::env::var(AGENT_ENV) {
        Ok(p) => PathBuf::from(p),
        Err(_) => std::env::current_exe()
            .map_err(|e| VmError::NoAgent(e.to_string()))?
            .with_file_name(AGENT_FILE),
    };
    static_program(path)
}

/// capsa-init's static build beside the capsa binary, as a host container uses it.
fn init_program() -> Result<PathBuf, VmError> {
    static_program(capsa_init::host_path())
}

/// `path`, once it is known to be a statically linked program: the guest has no shared
/// libraries to give a dynamic one.
fn static_program(path: PathBuf) -> Result<PathBuf, VmError> {
    let bytes =
        std::fs::read(&path).map_err(|e| VmError::NoAgent(format!("{}: {e}", path.display())))?;
    if has_interpreter(&bytes) {
        return Err(VmError::NoAgent(format!(
            "{} is dynamically linked; the guest has no shared libraries",
            path.display()
        )));
    }
    Ok(path)
}

/// The cached initramfs for `agent` and `init_program`, built if missing.
fn initramfs(root: &StateRoot, agent: &Path, init_program: &Path) -> Result<PathBuf, VmError> {
    let io = |e: std::io::Error| VmError::Io(format!("guest agent {}: {e}", agent.display()));
    let dir = root.dir().join("vm");
    let stamps = Stamps::of(&[agent, init_program, Path::new(E2FSCK_STATIC)]);
    let known = stamps.as_ref().and_then(|s| s.known_hash(&dir));
    if let Some(path) = known
        .map(|hash| dir.join(format!("initramfs-{hash}.cpio.gz")))
        .filter(|p| p.is_file())
    {
        readable_by_engines(&path).map_err(io)?;
        return Ok(path);
    }
    let binary = std::fs::read(agent).map_err(io)?;
    let init = std::fs::read(init_program)
        .map_err(|e| VmError::Io(format!("{}: {e}", init_program.display())))?;
    let e2fsck = std::fs::read(E2FSCK_STATIC).ok();
    let mut digest = Sha256::new();
    digest.update(&binary);
    digest.update(&init);
    digest.update(e2fsck.as_deref().unwrap_or_default());
    let hash = hex::encode(&digest.finalize()[..8]);
    let path = dir.join(format!("initramfs-{hash}.cpio.gz"));
    if !path.is_file() {
        std::fs::create_dir_all(&dir).map_err(io)?;
        let archive = cpio(&binary, &init, e2fsck.as_deref());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&archive).map_err(io)?;
        let bytes = gz.finish().map_err(io)?;
        crate::fsutil::write_atomic(&path, &bytes).map_err(io)?;
    }
    if let Some(s) = stamps {
        // Only a cache: without it the next start hashes again.
        let _ = s.remember(&dir, &hash);
    }
    readable_by_engines(&path).map_err(io)?;
    Ok(path)
}

/// The stamps of the files an initramfs is made of (a missing file has none), and the
/// content hash they had when last read. Any write to a file changes its ctime, which no
/// caller can set back, so equal stamps mean the same contents as hashed.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Stamps(Vec<Option<Stamp>>);

/// Size, inode, mtime (s, ns), ctime (s, ns).
type Stamp = (u64, u64, i64, i64, i64, i64);

#[derive(serde::Serialize, serde::Deserialize)]
struct Remembered {
    stamps: Stamps,
    hash: String,
}

/// Where the last hash and its stamps are kept.
const STAMPS_FILE: &str = "initramfs-inputs.json";

impl Stamps {
    fn of(files: &[&Path]) -> Option<Stamps> {
        use std::os::unix::fs::MetadataExt;
        let stamp = |p: &Path| match std::fs::metadata(p) {
            Ok(m) => Ok(Some((
                m.len(),
                m.ino(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        };
        files
            .iter()
            .map(|p| stamp(p))
            .collect::<std::io::Result<_>>()
            .ok()
            .map(Stamps)
    }

    /// The hash remembered for exactly these stamps.
    fn known_hash(&self, dir: &Path) -> Option<String> {
        let bytes = std::fs::read(dir.join(STAMPS_FILE)).ok()?;
        let r: Remembered = serde_json::from_slice(&bytes).ok()?;
        (r.stamps == *self && r.hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some(r.hash)
    }

    fn remember(self, dir: &Path, hash: &str) -> std::io::Result<()> {
        let r = Remembered {
            stamps: self,
            hash: hash.to_string(),
        };
        let bytes = serde_json::to_vec(&r).map_err(std::io::Error::other)?;
        crate::fsutil::write_atomic(&dir.join(STAMPS_FILE), &bytes)
    }
}

/// The jailed engine runs as a user of its own and reads the initramfs through a bind mount
/// of this one file, so the file (whose content is public: the agent and its helpers) is
/// world-readable; the private state directory still keeps other users from its path.
fn readable_by_engines(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    const MODE: u32 = 0o644;
    if std::fs::metadata(path)?.permissions().mode() & 0o777 != MODE {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(MODE))?;
    }
    Ok(())
}

pub use super::protocol::INIT_PROGRAM_IN_GUEST;

/// A newc cpio archive: the mount points PID 1 needs, /dev/console, capsa-init, e2fsck
/// (when the host has e2fsck-static) and the agent as /init.
pub fn cpio(agent: &[u8], init_program: &[u8], e2fsck: Option<&[u8]>) -> Vec<u8> {
    let mut archive = super::cpio::Newc::default();
    for d in ["dev", "proc", "sys", "run", "tmp", "sbin"] {
        archive.dir(d, 0o755);
    }
    archive.char_device("dev/console", 0o600, 5, 1);
    archive.file(&INIT_PROGRAM_IN_GUEST[1..], 0o755, init_program);
    if let Some(e2fsck) = e2fsck {
        archive.file("sbin/e2fsck", 0o755, e2fsck);
    }
    archive.file("init", 0o755, agent);
    archive.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_hash_holds_only_while_no_input_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, gone) = (dir.path().join("agent"), dir.path().join("e2fsck"));
        std::fs::write(&agent, b"one").unwrap();
        let stamps = || Stamps::of(&[&agent, &gone]).unwrap();
        assert_eq!(
            stamps().known_hash(dir.path()),
            None,
            "nothing remembered yet"
        );
        stamps().remember(dir.path(), "abcd").unwrap();
        assert_eq!(stamps().known_hash(dir.path()).as_deref(), Some("abcd"));
        // Same size, rewritten in place: the ctime moves, so the hash is no longer known.
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&agent, b"two").unwrap();
        assert_eq!(stamps().known_hash(dir.path()), None);
        // A file that appears is a change too.
        stamps().remember(dir.path(), "ef01").unwrap();
        std::fs::write(&gone, b"e2fsck").unwrap();
        assert_eq!(stamps().known_hash(dir.path()), None);
    }

    #[test]
    fn the_archive_is_newc_with_init_last() {
        let a = cpio(b"\x7fELF agent", b"\x7fELF reaper", Some(b"\x7fELF e2fsck"));
        assert!(a.starts_with(b"070701"));
        assert_eq!(a.len() % 4, 0);
        let text = String::from_utf8_lossy(&a);
        assert!(text.contains("dev/console\0"));
        assert!(text.contains("init\0"));
        assert!(text.contains("sbin/e2fsck\0"));
        assert!(text.contains("\x7fELF agent"));
        assert!(text.contains("capsa-init\0"));
        assert!(text.contains("\x7fELF reaper"));
        assert!(text.trim_end_matches('\0').ends_with("TRAILER!!!"));
    }
}
