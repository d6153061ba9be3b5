//! `cp` for a VM container, inside the guest: a tar archive of a path in the workload's root,
//! or one extracted there, made by a child in the workload's mount namespace with the same
//! code `capsa cp` uses for a container on a host.

use std::io::Read;
use std::path::PathBuf;

use capsa::container::cp;
use capsa::vm::protocol::MAX_ARCHIVE;

/// `path` in the root of process `pid`, as a tar archive.
pub fn copy_out(pid: i32, path: &str) -> Result<Vec<u8>, String> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
    let inside = PathBuf::from(path);
    let name = cp::top_name(&inside);
    let child = move || {
        cp::write_tar(&inside, &name, std::fs::File::from(w))
            .map_err(|e| format!("{}: {e}", inside.display()))
    };
    let parent = move || -> (Vec<u8>, usize) {
        // Keep at most the limit, but drain the rest so the child can finish.
        let mut kept = Vec::new();
        let mut total = 0;
        let mut pipe = std::fs::File::from(r);
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
            if total <= MAX_ARCHIVE {
                kept.extend_from_slice(&buf[..n]);
            }
        }
        (kept, total)
    };
    let (archive, total) = cp::in_root_of(pid, child, parent)?;
    if total > MAX_ARCHIVE {
        return Err(format!(
            "{path}: the archive is {} MiB; a VM container gives at most {} MiB per cp (one agent message)",
            total >> 20,
            MAX_ARCHIVE >> 20
        ));
    }
    Ok(archive)
}

/// `archive` extracted at `path` in the root of process `pid`.
pub fn copy_in(pid: i32, path: &str, archive: &[u8], as_is: bool) -> Result<(), String> {
    let target = PathBuf::from(path);
    cp::in_root_of(
        pid,
        || cp::extract(archive, &target, as_is).map_err(|e| format!("{path}: {e}")),
        || (),
    )
}
