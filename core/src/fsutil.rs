//! Atomic file replacement, for the stores of the host and the seccomp cache alike.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Mode of every file written here: records and caches only their owner (root) reads.
pub const PRIVATE_FILE: u32 = 0o600;

/// Writes `data` to `path` so that a reader sees the old or the new content, never a mix:
/// temp file in the same directory, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    write_replacing(path, data, true)
}

/// Like [`write_atomic`]; `durable: false` skips the fsyncs, for state that only matters
/// while the machine is up (a container's run state): readers still never see a mix, and
/// after a power loss the file may be old or empty, which its reader reports and `rm` cleans.
pub fn write_replacing(path: &Path, data: &[u8], durable: bool) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE)
        .open(&tmp)?;
    f.write_all(data)?;
    if durable {
        f.sync_all()?;
    }
    drop(f);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    if durable {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}
