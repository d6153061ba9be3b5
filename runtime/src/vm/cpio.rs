//! newc cpio archives, the format the kernel unpacks an initramfs from: the agent's initramfs,
//! and `capsa bench`'s bare-QEMU peer, whose initramfs is a whole image root.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// An archive being written, entry after entry.
#[derive(Default)]
pub struct Newc {
    out: Vec<u8>,
    ino: u32,
}

impl Newc {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime
            data.len() as u32,
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // checksum
        ];
        self.out.extend(b"070701");
        for f in fields {
            self.out.extend(format!("{f:08x}").as_bytes());
        }
        self.out.extend(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }

    pub fn dir(&mut self, name: &str, perm: u32) {
        self.entry(name, 0o040000 | perm, (0, 0), &[]);
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, (0, 0), target.as_bytes());
    }

    pub fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, 0o020000 | perm, (major, minor), &[]);
    }

    /// Adds the tree under `root` (directories, files, symlinks; other kinds are skipped).
    pub fn tree(&mut self, root: &Path) -> std::io::Result<()> {
        self.tree_at(root, "")
    }

    fn tree_at(&mut self, dir: &Path, prefix: &str) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = format!("{prefix}{}", e.file_name().to_string_lossy());
            let meta = std::fs::symlink_metadata(e.path())?;
            let perm = meta.mode() & 0o7777;
            let kind = meta.file_type();
            if kind.is_dir() {
                self.dir(&name, perm);
                self.tree_at(&e.path(), &format!("{name}/"))?;
            } else if kind.is_symlink() {
                let target = std::fs::read_link(e.path())?;
                self.symlink(&name, &target.to_string_lossy());
            } else if kind.is_file() {
                self.file(&name, perm, &std::fs::read(e.path())?);
            } else if kind.is_char_device() {
                continue; // whiteouts of an unmerged tree; /dev is devtmpfs in the guest
            }
        }
        Ok(())
    }

    /// The trailer; the archive's bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}
