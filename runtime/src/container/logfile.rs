//! The json-file log of a container, as Docker's json-file driver writes it: one JSON object
//! per line (`{"log":"...","stream":"stdout","time":"..."}`), rotated by size into
//! `ctr.log.1`, `ctr.log.2`, ... (`--log-opt max-size=,max-file=`).
//!
//! A line longer than [`MAX_RECORD`] is split, as Docker splits it: every record but the
//! last of the line is *partial*, its `log` without the trailing newline, so that printing
//! the records one after the other gives back the line. The writer holds at most one
//! record's bytes per stream and looks at each byte once, so a workload that writes without
//! newlines costs its monitor linear time and constant memory.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One log record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The text, with its newline if it had one.
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// When the monitor read it (RFC 3339).
    pub time: String,
}

/// The log driver (`--log-driver`, the API's `LogConfig.Type`): where a container's output
/// is kept. `local` keeps it as json-file does, with Docker's local driver's default
/// limits (the file format of Docker's own local driver is internal to dockerd); `none`
/// keeps nothing, and its output reaches only clients attached while it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Driver {
    /// Docker's default.
    #[default]
    JsonFile,
    /// Rotated by default: 20 MiB per file, 5 files.
    Local,
    /// Nothing kept; `logs` refuses.
    None,
}

/// `logs` of a container whose driver keeps nothing: Docker's words.
pub const NOT_READABLE: &str = "configured logging driver does not support reading";

impl Driver {
    /// Parses a driver's name (empty: json-file).
    pub fn parse(name: &str) -> Result<Driver, String> {
        match name {
            "" | "json-file" => Ok(Driver::JsonFile),
            "local" => Ok(Driver::Local),
            "none" => Ok(Driver::None),
            // dockerd's words (clients match them); capsa has json-file, local and none.
            other => Err(format!(
                "logger: no log driver named '{other}' is registered"
            )),
        }
    }

    /// Its name as Docker writes it.
    pub fn name(self) -> &'static str {
        match self {
            Driver::JsonFile => "json-file",
            Driver::Local => "local",
            Driver::None => "none",
        }
    }

    /// The rotation of this driver with `opts` (`--log-opt`): `none` takes no option,
    /// `local` rotates at 20m into 5 files unless told otherwise.
    pub fn rotation(self, opts: &[String]) -> Result<Rotation, LogOptError> {
        match self {
            Driver::None => match opts.first() {
                Some(o) => Err(LogOptError::ForNone(o.clone())),
                None => Ok(Rotation::default()),
            },
            Driver::JsonFile => Rotation::parse(opts),
            Driver::Local => {
                let mut r = Rotation::parse(opts)?;
                if r.max_size.is_none() {
                    r.max_size = Some(20 << 20);
                    if !opts.iter().any(|o| o.starts_with("max-file=")) {
                        r.max_file = 5;
                    }
                }
                Ok(r)
            }
        }
    }
}

/// Rotation limits (`--log-opt`). No `max_size`: one file that grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    /// Bytes after which the file is rotated.
    pub max_size: Option<u64>,
    /// How many files are kept, the current one included (Docker's default 1).
    pub max_file: u32,
}

/// A `--log-opt` the json-file driver does not take.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LogOptError {
    /// Holds the option as given.
    #[error("--log-opt {0:?}: expected KEY=VALUE")]
    NotKeyValue(String),
    /// Holds the value given.
    #[error("--log-opt max-size={0}: expected a size such as 10m")]
    MaxSize(String),
    /// Holds the value given.
    #[error("--log-opt max-file={0}: expected a positive integer")]
    MaxFile(String),
    /// Holds the key given.
    #[error("--log-opt {0}: unknown option for the json-file driver (max-size, max-file)")]
    Unknown(String),
    /// Holds the option given.
    #[error("--log-opt {0:?}: the none log driver takes no options")]
    ForNone(String),
}

impl Rotation {
    /// Parses `--log-opt` values (`max-size=10m`, `max-file=3`).
    pub fn parse(opts: &[String]) -> Result<Rotation, LogOptError> {
        let mut r = Rotation {
            max_size: None,
            max_file: 1,
        };
        for o in opts {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| LogOptError::NotKeyValue(o.clone()))?;
            match k {
                "max-size" => {
                    let bytes = parse_size(v).ok_or_else(|| LogOptError::MaxSize(v.into()))?;
                    r.max_size = Some(bytes);
                }
                "max-file" => {
                    r.max_file = v
                        .parse()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| LogOptError::MaxFile(v.into()))?;
                }
                _ => return Err(LogOptError::Unknown(k.into())),
            }
        }
        // max-file without max-size is taken and has no effect: nothing rotates (Docker's
        // json-file driver does the same).
        Ok(r)
    }
}

fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim().to_ascii_lowercase();
    let (num, mult) = match v.chars().last()? {
        'k' => (&v[..v.len() - 1], 1u64 << 10),
        'm' => (&v[..v.len() - 1], 1 << 20),
        'g' => (&v[..v.len() - 1], 1 << 30),
        _ => (v.as_str(), 1),
    };
    num.parse::<u64>().ok().filter(|n| *n > 0).map(|n| n * mult)
}

/// The files of a log, oldest first (`ctr.log.N` ... `ctr.log.1`, `ctr.log`).
pub fn files(path: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, PathBuf)> = (1..)
        .map(|n| (n, PathBuf::from(format!("{}.{n}", path.display()))))
        .take_while(|(_, p)| p.exists())
        .collect();
    rotated.reverse();
    let mut out: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    out.push(path.to_path_buf());
    out
}

/// Most bytes of output in one record, its newline included (Docker's 16 KiB buffer).
pub const MAX_RECORD: usize = 16 * 1024;

/// How many bytes at the end of `bytes` begin a UTF-8 character that does not end there
/// (0 when the last character is whole, or the bytes are not UTF-8 anyway).
fn cut_char_len(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let b = bytes[bytes.len() - back];
        if b & 0xc0 == 0x80 {
            continue; // a continuation byte: look further back for the lead
        }
        let len = match b {
            0xf0.. => 4,
            0xe0.. => 3,
            0xc0.. => 2,
            _ => 1,
        };
        return if len > back { back } else { 0 };
    }
    0
}

/// Formatted records held before one write to the file: enough that a burst of short lines
/// costs one write per chunk read, bounded so that a chunk of empty lines (a 70-byte record
/// per byte read) does not make the buffer grow with it.
const OUT_BUFFER: usize = 256 * 1024;
/// A record's bytes besides its text: the keys, the stream, the time stamp, the newline.
const RECORD_OVERHEAD: usize = 128;

/// Splits output into lines and appends them as records, rotating by size. The records of
/// one chunk of output are formatted into one buffer, without an allocation per record,
/// and written with one `write` (more only past [`OUT_BUFFER`] or at a rotation), all
/// stamped with the time the chunk was read: a workload printing short lines costs its
/// monitor a few system calls per chunk rather than one per line.
pub struct Writer {
    path: PathBuf,
    /// None for the `none` driver: output is dropped.
    file: Option<std::fs::File>,
    /// Bytes in the current file, records not yet written excluded.
    size: u64,
    rotation: Rotation,
    partial: [Vec<u8>; 2],
    /// Records formatted and not yet written.
    out: Vec<u8>,
    /// The time stamp of the chunk being split (RFC 3339).
    now: String,
}

impl Writer {
    /// Opens (appends to) the log at `path`.
    pub fn open(path: &Path, rotation: Rotation) -> std::io::Result<Writer> {
        let file = open_private(path)?;
        let size = file.metadata()?.len();
        Ok(Writer {
            path: path.to_path_buf(),
            file: Some(file),
            size,
            rotation,
            partial: [vec![], vec![]],
            out: Vec::with_capacity(OUT_BUFFER),
            now: String::new(),
        })
    }

    /// The log of a container with `driver`: at `path`, or, for `none`, nowhere.
    pub fn for_driver(driver: Driver, path: &Path, rotation: Rotation) -> std::io::Result<Writer> {
        match driver {
            Driver::None => Ok(Writer {
                path: path.to_path_buf(),
                file: None,
                size: 0,
                rotation,
                partial: [vec![], vec![]],
                out: Vec::new(),
                now: String::new(),
            }),
            Driver::JsonFile | Driver::Local => Writer::open(path, rotation),
        }
    }

    /// Adds output of `stream` (0 stdout, 1 stderr): each complete line becomes a record,
    /// a line that fills [`MAX_RECORD`] a partial record; the rest waits for more.
    pub fn write(&mut self, stream: usize, mut data: &[u8]) {
        if self.file.is_none() {
            return;
        }
        self.stamp();
        while !data.is_empty() {
            let room = MAX_RECORD - self.partial[stream].len();
            let window = &data[..data.len().min(room)];
            if let Some(nl) = window.iter().position(|&b| b == b'\n') {
                if self.partial[stream].is_empty() {
                    // The usual case: a whole line in the chunk, formatted where it lies.
                    self.emit(stream, &window[..=nl]);
                } else {
                    self.partial[stream].extend_from_slice(&window[..=nl]);
                    self.emit_partial(stream, 0);
                }
                data = &data[nl + 1..];
            } else if window.len() == room {
                self.partial[stream].extend_from_slice(window);
                // A character cut at the limit goes whole into the next record.
                let carry = cut_char_len(&self.partial[stream]);
                self.emit_partial(stream, carry);
                data = &data[room..];
            } else {
                self.partial[stream].extend_from_slice(window);
                data = &[];
            }
        }
        self.write_out();
    }

    /// Writes the stream's pending bytes as a record, but for the last `keep`, which stay.
    fn emit_partial(&mut self, stream: usize, keep: usize) {
        let pending = std::mem::take(&mut self.partial[stream]);
        let cut = pending.len() - keep;
        self.emit(stream, &pending[..cut]);
        let mut pending = pending;
        pending.drain(..cut);
        self.partial[stream] = pending;
    }

    /// Writes what is left of a stream's last line.
    pub fn flush(&mut self, stream: usize) {
        let rest = std::mem::take(&mut self.partial[stream]);
        if !rest.is_empty() {
            self.stamp();
            self.emit(stream, &rest);
            self.write_out();
        }
    }

    /// Takes the time stamp for the records of the chunk at hand.
    fn stamp(&mut self) {
        use std::fmt::Write as _;
        self.now.clear();
        let _ = write!(
            self.now,
            "{}",
            humantime::format_rfc3339_nanos(SystemTime::now())
        );
    }

    /// Formats one record into the buffer (as serde writes a [`Record`], field for field),
    /// rotating first when it would not fit in the current file.
    fn emit(&mut self, stream: usize, line: &[u8]) {
        // Room for the record at its largest (JSON writes a byte as up to six): the buffer
        // never grows past OUT_BUFFER.
        if self.out.len() + line.len() * 6 + RECORD_OVERHEAD > OUT_BUFFER {
            self.write_out();
        }
        let start = self.out.len();
        self.out.extend_from_slice(b"{\"log\":");
        // Escapes straight into the buffer; only bytes that are not UTF-8 cost a copy.
        let text = String::from_utf8_lossy(line);
        if serde_json::to_writer(&mut self.out, text.as_ref()).is_err() {
            self.out.truncate(start);
            return;
        }
        self.out.extend_from_slice(match stream {
            0 => b",\"stream\":\"stdout\",\"time\":\"",
            _ => b",\"stream\":\"stderr\",\"time\":\"",
        });
        self.out.extend_from_slice(self.now.as_bytes());
        self.out.extend_from_slice(b"\"}\n");
        let before = self.size + start as u64;
        let len = (self.out.len() - start) as u64;
        if self
            .rotation
            .max_size
            .is_some_and(|max| before > 0 && before + len > max)
        {
            // The records before this one end the current file; this one opens the next.
            let record = self.out.split_off(start);
            self.write_out();
            self.rotate();
            self.out.extend_from_slice(&record);
        }
    }

    /// Writes the formatted records to the file.
    fn write_out(&mut self) {
        if self.out.is_empty() {
            return;
        }
        if let Some(Ok(())) = self.file.as_mut().map(|f| f.write_all(&self.out)) {
            self.size += self.out.len() as u64;
        }
        self.out.clear();
    }

    /// ctr.log -> ctr.log.1 -> ... ; the oldest beyond max-file is dropped.
    fn rotate(&mut self) {
        let keep = self.rotation.max_file.max(1);
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if keep == 1 {
            if let Some(f) = &self.file {
                let _ = f.set_len(0);
            }
            self.size = 0;
            return;
        }
        let _ = std::fs::remove_file(numbered(keep - 1));
        for n in (1..keep - 1).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        let _ = std::fs::rename(&self.path, numbered(1));
        if let Ok(f) = open_private(&self.path) {
            self.file = Some(f);
            self.size = 0;
        }
    }
}

/// Opens the log at `path` for appending; made private to root (a workload's output may
/// hold what others must not read).
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(crate::root::PRIVATE_FILE)
        .open(path)
}

/// Prints one record to the stream it came from, with its time stamp when `timestamps`.
pub fn print(rec: &Record, timestamps: bool, stdout: &mut dyn Write, stderr: &mut dyn Write) {
    let out: &mut dyn Write = if rec.stream == "stderr" {
        stderr
    } else {
        stdout
    };
    if timestamps {
        let _ = write!(out, "{} ", rec.time);
    }
    let _ = out.write_all(rec.log.as_bytes());
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record of the log, oldest first.
    fn read_all(path: &Path) -> Vec<Record> {
        let mut all = Vec::new();
        crate::container::logfile_reader::Snapshot::open(path).replay(
            Default::default(),
            None,
            &mut |r| {
                all.push(r.clone());
                true
            },
        );
        all
    }

    #[test]
    fn lines_are_split_and_partial_lines_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctr.log");
        let mut w = Writer::open(&path, Rotation::default()).unwrap();
        w.write(0, b"one\ntw");
        w.write(1, b"err\n");
        w.write(0, b"o\n");
        w.write(0, b"tail");
        w.flush(0);
        let logs: Vec<(String, String)> = read_all(&path)
            .into_iter()
            .map(|r| (r.stream, r.log))
            .collect();
        assert_eq!(
            logs,
            vec![
                ("stdout".into(), "one\n".into()),
                ("stderr".into(), "err\n".into()),
                ("stdout".into(), "two\n".into()),
                ("stdout".into(), "tail".into()),
            ]
        );
    }

    #[test]
    fn long_lines_are_split_into_partial_records_that_join_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctr.log");
        let mut w = Writer::open(&path, Rotation::default()).unwrap();
        // 'a' then 2-byte characters: the record limit falls inside one of them.
        let mut input = b"a".to_vec();
        input.extend("é".repeat(20_000).as_bytes());
        input.extend_from_slice(b"\nshort\n");
        input.extend(std::iter::repeat_n(b'x', 3 * MAX_RECORD + 5));
        for chunk in input.chunks(7_000) {
            w.write(0, chunk);
        }
        w.flush(0);
        let records = read_all(&path);
        assert!(records.iter().all(|r| r.log.len() <= MAX_RECORD));
        let joined: String = records.iter().map(|r| r.log.as_str()).collect();
        assert_eq!(joined.as_bytes(), &input[..], "the byte stream comes back");
        // Only the last record of each line ends with its newline; partial ones do not.
        let ends: Vec<bool> = records.iter().map(|r| r.log.ends_with('\n')).collect();
        assert_eq!(ends, [false, false, true, true, false, false, false, false]);
        assert_eq!(
            records[0].log.len(),
            MAX_RECORD - 1,
            "a cut character moves on"
        );
    }

    #[test]
    fn rotation_bounds_the_files_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctr.log");
        let rot = Rotation::parse(&["max-size=1k".into(), "max-file=3".into()]).unwrap();
        let mut w = Writer::open(&path, rot).unwrap();
        for i in 0..500 {
            w.write(0, format!("line {i}\n").as_bytes());
        }
        let files = files(&path);
        assert_eq!(files.len(), 3);
        for f in &files {
            assert!(std::fs::metadata(f).unwrap().len() <= 1024);
        }
        let all = read_all(&path);
        assert_eq!(all.last().unwrap().log, "line 499\n");
        let first: u32 = all[0]
            .log
            .trim()
            .trim_start_matches("line ")
            .parse()
            .unwrap();
        assert!(
            all.iter()
                .enumerate()
                .all(|(i, r)| r.log == format!("line {}\n", first + i as u32)),
            "gap in kept lines"
        );
    }

    /// write(2) calls this thread has made so far.
    fn writes_by_this_thread() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
        io.lines()
            .find_map(|l| l.strip_prefix("syscw: "))
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn a_chunk_of_short_lines_is_written_with_one_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctr.log");
        let mut w = Writer::open(&path, Rotation::default()).unwrap();
        // What `yes` puts in a pipe: 64 KiB of two-byte lines, 32768 records.
        let chunk = b"y\n".repeat(32 * 1024);
        let before = writes_by_this_thread();
        w.write(0, &chunk);
        let writes = writes_by_this_thread() - before;
        let records = read_all(&path);
        assert_eq!(records.len(), 32 * 1024);
        assert!(records
            .iter()
            .all(|r| r.log == "y\n" && r.stream == "stdout"));
        // About 72 bytes a record: 2.3 MB in writes of OUT_BUFFER.
        assert!(writes <= 10, "{writes} write calls for one chunk");
        // A chunk of empty lines does not grow the buffer beyond its bound.
        w.write(1, &[b'\n'; 64 * 1024]);
        assert!(w.out.capacity() <= OUT_BUFFER, "{}", w.out.capacity());
    }

    #[test]
    fn records_are_formatted_as_serde_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctr.log");
        let mut w = Writer::open(&path, Rotation::default()).unwrap();
        let lines: [&[u8]; 4] = [
            b"plain\n",
            b"\"q\" \\ \x1b[31m\t\n",
            b"caf\xe9\n",
            "é€😀\n".as_bytes(),
        ];
        for (i, l) in lines.iter().enumerate() {
            w.write(i % 2, l);
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, (got, line)) in text.lines().zip(lines).enumerate() {
            let rec: Record = serde_json::from_str(got).unwrap();
            let want = Record {
                log: String::from_utf8_lossy(line).into_owned(),
                stream: ["stdout", "stderr"][i % 2].into(),
                time: rec.time.clone(),
            };
            assert_eq!(got, serde_json::to_string(&want).unwrap());
            assert!(crate::timefmt::parse_rfc3339(&rec.time).is_some());
        }
    }

    #[test]
    fn bad_options_are_named() {
        let message = |opt: &str| Rotation::parse(&[opt.into()]).unwrap_err().to_string();
        assert!(message("max-size=lots").contains("max-size"));
        assert!(message("max-file=0").contains("max-file"));
        let unrotated = Rotation::parse(&["max-file=3".into()]).unwrap();
        assert_eq!(unrotated.max_size, None);
        assert!(message("colour=red").contains("colour"));
    }
}
