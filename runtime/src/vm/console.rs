//! The guest's serial console and the engine's own output, kept in logs of bounded size.
//!
//! The guest writes its console as fast as it likes (its kernel's messages; a root that took
//! the guest over, at full speed) and the engine may print what the guest makes it do:
//! neither may grow a host file without end. So the engine writes each to a pipe, and a
//! thread of the VM's monitor drains the pipe into a [`CappedLog`]: the first [`HEAD`] bytes
//! (the boot), one line saying how much was left out, and the most recent [`TAIL`] to
//! 2 x [`TAIL`] bytes. The engine never holds the file; the drain never waits on the guest.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use super::VmError;

/// The start of the output kept whatever follows: the boot.
pub const HEAD: u64 = 64 << 10;
/// The most recent output kept: at least this much, at most twice this much.
pub const TAIL: u64 = 256 << 10;
/// How far into the kept tail a line's start is looked for, so that it starts with a line.
const LINE_SEARCH: usize = 4 << 10;
/// How much of the log's end an error message looks at, and how many lines it repeats.
const ERROR_TAIL_BYTES: u64 = 4 << 10;
const ERROR_TAIL_LINES: usize = 5;

/// A log that keeps its first `head` bytes and its last `tail` to `2 * tail` bytes, with a
/// line between saying how many bytes were left out: at most `head + 2 * tail` bytes.
pub struct CappedLog {
    file: File,
    head: u64,
    tail: u64,
    /// The file's length.
    len: u64,
    /// The length of the line after the head, once output is left out.
    marker: u64,
    left_out: u64,
}

impl CappedLog {
    /// A log in `file`, which is empty.
    pub fn new(file: File, head: u64, tail: u64) -> Self {
        CappedLog {
            file,
            head,
            tail: tail.max(1024),
            len: 0,
            marker: 0,
            left_out: 0,
        }
    }

    /// Appends `data`, leaving out the oldest output after the head when the log is full.
    pub fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let room = (self.head + 2 * self.tail).saturating_sub(self.len);
            if room == 0 {
                self.leave_out()?;
                continue;
            }
            let n = data.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            self.file.write_all_at(&data[..n], self.len)?;
            self.len += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    /// Keeps the head and the last `tail` bytes (from the start of a line where one is
    /// near), with the line saying how much is left out between them.
    fn leave_out(&mut self) -> std::io::Result<()> {
        let start = self.len - self.tail;
        let mut kept = vec![0u8; self.tail as usize];
        self.file.read_exact_at(&mut kept, start)?;
        let skip = kept
            .iter()
            .take(LINE_SEARCH)
            .position(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        self.left_out += start + skip as u64 - (self.head + self.marker);
        let marker = format!("\n[capsa: {} bytes left out here]\n", self.left_out);
        self.file.write_all_at(marker.as_bytes(), self.head)?;
        self.marker = marker.len() as u64;
        self.file
            .write_all_at(&kept[skip..], self.head + self.marker)?;
        self.len = self.head + self.marker + (kept.len() - skip) as u64;
        self.file.set_len(self.len)
    }
}

/// A log's pipe before its drain starts: the engine is handed the write end.
pub struct LogPipe {
    reader: File,
    log: CappedLog,
    path: PathBuf,
}

/// Makes `path` a fresh log (root's only) fed by a pipe; returns the pipe and its write end
/// for the engine.
pub fn open(path: &Path) -> Result<(LogPipe, OwnedFd), VmError> {
    let err = |e: std::io::Error| VmError::Io(format!("{}: {e}", path.display()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| err(std::io::Error::from(e)))?;
    let pipe = LogPipe {
        reader: File::from(reader),
        log: CappedLog::new(file, HEAD, TAIL),
        path: path.to_path_buf(),
    };
    Ok((pipe, writer))
}

impl LogPipe {
    /// Starts the thread that drains the pipe into the log until every write end is closed
    /// (the engine has gone). Started once the engine is: the monitor forks it with no
    /// thread of this kind running.
    pub fn drain(self) -> Result<LogDrain, VmError> {
        let LogPipe {
            mut reader,
            mut log,
            path,
        } = self;
        let (done, finished) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("vm-log".into())
            .spawn(move || {
                // Signals are for the monitor's own loop.
                let _ = nix::sys::signal::SigSet::all().thread_block();
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    match reader.read(&mut buf) {
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Ok(0) | Err(_) => break,
                        // A log that cannot be written (a full disk) loses the output: the
                        // pipe is drained all the same, so the guest never waits on it.
                        Ok(n) => {
                            let _ = log.write(&buf[..n]);
                        }
                    }
                }
                drop(done);
            })
            .map_err(|e| VmError::Io(format!("draining {}: {e}", path.display())))?;
        Ok(LogDrain { path, finished })
    }
}

/// A log being drained from its pipe.
pub struct LogDrain {
    path: PathBuf,
    /// Disconnected once the drain has reached the pipe's end.
    finished: mpsc::Receiver<()>,
}

impl LogDrain {
    /// Waits up to `limit` for the pipe's end (the engine has gone and all it wrote is in
    /// the log); false when it did not come by then.
    pub fn settle(&self, limit: Duration) -> bool {
        matches!(
            self.finished.recv_timeout(limit),
            Err(mpsc::RecvTimeoutError::Disconnected)
        )
    }

    /// The log's last few lines as one line, for error messages (bounded; control
    /// characters escaped: the guest wrote them).
    pub fn tail(&self) -> String {
        let text = read_end(&self.path, ERROR_TAIL_BYTES).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<String> = text
            .lines()
            .rev()
            .filter(|l| !l.trim().is_empty())
            .take(ERROR_TAIL_LINES)
            .map(super::agent::guest_text)
            .collect();
        if lines.is_empty() {
            return format!("({} is empty)", self.path.display());
        }
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }
}

/// The last `n` bytes of the file at `path`.
fn read_end(path: &Path, n: u64) -> std::io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(n)))?;
    let mut out = Vec::new();
    f.take(n).read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(head: u64, tail: u64) -> (tempfile::NamedTempFile, CappedLog) {
        let f = tempfile::NamedTempFile::new().unwrap();
        let file = f.reopen().unwrap();
        (f, CappedLog::new(file, head, tail))
    }

    #[test]
    fn a_short_log_is_kept_whole() {
        let (f, mut l) = log(100, 1024);
        l.write(b"boot line\n").unwrap();
        l.write(b"second\n").unwrap();
        assert_eq!(std::fs::read(f.path()).unwrap(), b"boot line\nsecond\n");
    }

    #[test]
    fn an_endless_log_keeps_its_head_and_its_latest_lines_within_its_bound() {
        let (f, mut l) = log(64, 1024);
        l.write(b"BOOT-START\n").unwrap();
        let mut written = 11u64;
        for i in 0..20_000 {
            let line = format!("line {i:06} of a guest that never stops\n");
            l.write(line.as_bytes()).unwrap();
            written += line.len() as u64;
            assert!(std::fs::metadata(f.path()).unwrap().len() <= 64 + 2 * 1024);
        }
        l.write(b"THE-LAST-LINE\n").unwrap();
        written += 14;
        let text = String::from_utf8(std::fs::read(f.path()).unwrap()).unwrap();
        assert!(text.starts_with("BOOT-START\n"), "{text}");
        assert!(text.ends_with("line 019999 of a guest that never stops\nTHE-LAST-LINE\n"));
        // The line between says how much is missing, and the kept tail starts with a line.
        let (_, rest) = text.split_once("\n[capsa: ").unwrap();
        let (count, kept) = rest.split_once(" bytes left out here]\n").unwrap();
        assert!(kept.starts_with("line "), "{kept:.40}");
        let marker = "\n[capsa: ".len() + rest.len() - kept.len();
        let kept_total = (text.len() - marker) as u64;
        assert_eq!(count.parse::<u64>().unwrap() + kept_total, written);
    }

    #[test]
    fn one_write_larger_than_the_whole_log_keeps_its_end() {
        let (f, mut l) = log(16, 1024);
        let mut big = vec![b'x'; 100_000];
        big.extend_from_slice(b"\nEND");
        l.write(&big).unwrap();
        let text = std::fs::read(f.path()).unwrap();
        assert!(text.len() as u64 <= 16 + 2 * 1024);
        assert!(text.starts_with(&[b'x'; 16]));
        assert!(text.ends_with(b"\nEND"));
    }

    #[test]
    fn a_drained_pipe_lands_in_the_log_and_its_tail_is_one_printable_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let (pipe, writer) = open(&path).unwrap();
        let drain = pipe.drain().unwrap();
        let mut w = File::from(writer);
        std::io::Write::write_all(&mut w, b"one\ntwo\n\x1b[31mthree\n").unwrap();
        drop(w);
        assert!(
            drain.settle(Duration::from_secs(10)),
            "the drain ends with the pipe"
        );
        assert_eq!(drain.tail(), "one | two | \\x1b[31mthree");
    }
}
