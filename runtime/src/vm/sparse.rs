//! Sparse files copied by their data extents (SEEK_DATA/SEEK_HOLE): a template's guest RAM
//! and a blank writable disk are mostly holes, and a copy keeps them holes.

use std::fs::File;
use std::os::fd::AsRawFd;

/// Copies `src` to `dst` (its data only: the holes stay holes).
pub(super) fn copy(src: &File, dst: &File) -> std::io::Result<()> {
    let len = src.metadata()?.len();
    dst.set_len(len)?;
    for_each_extent(src, len, |start, end| {
        let (mut off_in, mut off_out) = (start as i64, start as i64);
        while off_in < end as i64 {
            // SAFETY: copy_file_range between two descriptors we own, with offsets we own.
            let n = unsafe {
                libc::copy_file_range(
                    src.as_raw_fd(),
                    &mut off_in,
                    dst.as_raw_fd(),
                    &mut off_out,
                    (end as i64 - off_in) as usize,
                    0,
                )
            };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if n == 0 {
                return Err(std::io::Error::other(
                    "the source shrank while it was copied",
                ));
            }
        }
        Ok(())
    })
}

/// Calls `f(start, end)` for each data extent of the first `len` bytes of `src`.
pub(super) fn for_each_extent(
    src: &File,
    len: u64,
    mut f: impl FnMut(u64, u64) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use nix::unistd::{lseek, Whence};
    let mut pos: i64 = 0;
    while (pos as u64) < len {
        let data = match lseek(src.as_raw_fd(), pos, Whence::SeekData) {
            Ok(d) => d,
            Err(nix::errno::Errno::ENXIO) => break, // only a hole is left
            Err(e) => return Err(e.into()),
        };
        let hole = lseek(src.as_raw_fd(), data, Whence::SeekHole)?;
        f(data as u64, (hole as u64).min(len))?;
        pos = hole;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_sparse_copy_keeps_data_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        let f = std::fs::File::create(&from).unwrap();
        f.set_len(64 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"kernel text", 4 << 20).unwrap();
        f.write_all_at(b"agent", 40 << 20).unwrap();
        drop(f);
        let to = dir.path().join("to");
        let dst = std::fs::File::create(&to).unwrap();
        copy(&File::open(&from).unwrap(), &dst).unwrap();
        assert_eq!(std::fs::read(&from).unwrap(), std::fs::read(&to).unwrap());
        let used = std::fs::metadata(&to).unwrap().blocks() * 512;
        assert!(used < 4 << 20, "holes stay holes: {used} bytes used");
    }
}
