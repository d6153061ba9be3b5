//! The figures a probe measures on its own, inside the instance.

use std::hint::black_box;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

/// How much work each figure does: the full amount, or a fifth of it with `--quick`.
#[derive(Debug, Clone, Copy)]
pub struct Effort {
    pub syscalls: u64,
    pub cpu_iterations: u64,
    pub copy_rounds: u32,
    pub file_mib: usize,
}

impl Effort {
    pub fn new(quick: bool) -> Effort {
        let full = Effort {
            syscalls: 1_000_000,
            cpu_iterations: 200_000_000,
            copy_rounds: 20,
            file_mib: 64,
        };
        if !quick {
            return full;
        }
        Effort {
            syscalls: full.syscalls / 5,
            cpu_iterations: full.cpu_iterations / 5,
            copy_rounds: full.copy_rounds / 5,
            file_mib: full.file_mib / 4,
        }
    }
}

/// Nanoseconds per getpid(2), made as a raw syscall (libc may not cache it, but this is sure).
pub fn getpid_ns(calls: u64) -> f64 {
    let start = Instant::now();
    for _ in 0..calls {
        // SAFETY: getpid takes no arguments and cannot fail.
        black_box(unsafe { libc::syscall(libc::SYS_getpid) });
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

/// Millions of iterations per second of a dependent integer loop (xorshift and multiply):
/// pure CPU, no memory traffic, one core.
pub fn cpu_mips(iterations: u64) -> f64 {
    let start = Instant::now();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..iterations {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_mul(0x2545_f491_4f6c_dd1d).wrapping_add(i);
    }
    black_box(x);
    iterations as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// Size of each buffer of the copy test: 32 MiB, well past the caches, small enough for a
/// VM with little memory (two buffers are live).
const COPY_BYTES: usize = 32 << 20;

/// GiB per second copied between two buffers (each round reads and writes COPY_BYTES).
pub fn memory_gib_s(rounds: u32) -> f64 {
    let src = vec![0x5au8; COPY_BYTES];
    let mut dst = vec![0u8; COPY_BYTES];
    dst.copy_from_slice(&src); // fault every page in before timing
    let start = Instant::now();
    for _ in 0..rounds {
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
    }
    let bytes = COPY_BYTES as f64 * rounds as f64;
    bytes / start.elapsed().as_secs_f64() / (1u64 << 30) as f64
}

/// File figures in `dir`: MiB/s of writing `mib` MiB and fsync'ing it, and MiB/s of reading
/// it back (from the page cache: an instance cannot drop the host's caches).
pub fn file_mib_s(dir: &Path, mib: usize) -> std::io::Result<(f64, f64)> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("capsa-probe-{}.dat", std::process::id()));
    let chunk = vec![0xa5u8; 1 << 20];
    let start = Instant::now();
    let mut f = std::fs::File::create(&path)?;
    for _ in 0..mib {
        f.write_all(&chunk)?;
    }
    f.sync_all()?;
    let write = mib as f64 / start.elapsed().as_secs_f64();
    drop(f);
    let mut buf = vec![0u8; 1 << 20];
    let start = Instant::now();
    let mut f = std::fs::File::open(&path)?;
    let mut total = 0usize;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n;
    }
    let read = total as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok((write, read))
}

/// Runs every local figure and renders them as one JSON object.
pub fn all(effort: Effort, dir: &Path) -> String {
    let getpid = getpid_ns(effort.syscalls);
    let cpu = cpu_mips(effort.cpu_iterations);
    let mem = memory_gib_s(effort.copy_rounds);
    let file = match file_mib_s(dir, effort.file_mib) {
        Ok((w, r)) => {
            format!("\"file_write_fsync_mib_s\":{w:.3},\"file_read_cached_mib_s\":{r:.3}")
        }
        Err(e) => format!("\"file_error\":{:?}", format!("{}: {e}", dir.display())),
    };
    format!(
        "{{\"getpid_ns\":{getpid:.3},\"cpu_mips\":{cpu:.3},\"memory_copy_gib_s\":{mem:.3},{file}}}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_figure_is_positive_and_the_output_is_one_json_line() {
        let dir = std::env::temp_dir().join(format!("probe-test-{}", std::process::id()));
        let effort = Effort {
            syscalls: 1000,
            cpu_iterations: 10_000,
            copy_rounds: 1,
            file_mib: 1,
        };
        let line = all(effort, &dir);
        assert!(line.starts_with('{') && line.ends_with('}') && !line.contains('\n'));
        for key in [
            "getpid_ns",
            "cpu_mips",
            "memory_copy_gib_s",
            "file_write_fsync_mib_s",
        ] {
            assert!(line.contains(&format!("\"{key}\":")), "{key} in {line}");
        }
        assert!(!line.contains("-"), "no negative figure: {line}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
