//! Reading a json-file log ([`super::logfile`]) without holding it: records go to the
//! caller one at a time as they are read forward; `tail` finds where the last N records
//! start by reading the files backwards from their end; a [`Cursor`] remembers where a
//! reader stopped (the current file, held open, and the offset after the last whole
//! record), so that following the log reads only what was appended since, across
//! rotations. Memory is one line and one block, whatever the log's size.

use super::logfile::{files, Record};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Bytes read at a time.
const BLOCK: usize = 64 * 1024;
/// The longest line read as a record: far above the writer's longest (16 KiB of output,
/// escaped at most six bytes a byte). A longer line is no record of ours: skipped.
const MAX_LINE: usize = 1 << 20;

/// The time bounds of `logs` (`since`, `until`). A record whose time does not parse is
/// outside `since` and inside `until`, as `logs` always took them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    /// Records from this time on.
    pub since: Option<SystemTime>,
    /// Records up to this time.
    pub until: Option<SystemTime>,
}

impl Window {
    /// Whether `rec` is inside the bounds.
    pub fn holds(&self, rec: &Record) -> bool {
        let at = crate::timefmt::parse_rfc3339(&rec.time);
        self.since.is_none_or(|s| at.is_some_and(|t| t >= s))
            && self.until.is_none_or(|u| at.is_none_or(|t| t <= u))
    }
}

/// A file's identity (device, inode): what tells a rotated log file from its successor.
type Identity = (u64, u64);

fn identity(file: &File) -> Option<Identity> {
    file.metadata().ok().map(|m| (m.dev(), m.ino()))
}

/// One file of the log, open, and its length when it was opened.
struct Segment {
    file: File,
    end: u64,
}

impl Segment {
    fn open(path: &Path) -> Option<Segment> {
        let file = File::open(path).ok()?;
        let end = file.metadata().ok()?.len();
        Some(Segment { file, end })
    }
}

/// The files of a log as they were when it was opened, each held open: the rotated ones,
/// oldest first, and the current one.
pub struct Snapshot {
    path: PathBuf,
    rotated: Vec<Segment>,
    current: Option<Segment>,
}

impl Snapshot {
    /// Opens the log at `path` (no file yet: an empty log).
    pub fn open(path: &Path) -> Snapshot {
        let current = Segment::open(path);
        let current_id = current.as_ref().and_then(|s| identity(&s.file));
        let mut names = files(path);
        names.pop();
        let rotated = names
            .iter()
            .filter_map(|p| Segment::open(p))
            // A rotation since the current file was opened: it is among the rotated now.
            .take_while(|s| current_id.is_none() || identity(&s.file) != current_id)
            .collect();
        Snapshot {
            path: path.to_path_buf(),
            rotated,
            current,
        }
    }

    /// The files, oldest first.
    fn segments(&self) -> Vec<&Segment> {
        self.rotated.iter().chain(self.current.iter()).collect()
    }

    /// Hands `each` the records inside `window`, oldest first, only the last `tail` of them
    /// when given; returns where the log ends (to follow it from), or None once `each`
    /// has refused a record (its reader has gone).
    pub fn replay(
        self,
        window: Window,
        tail: Option<usize>,
        each: &mut dyn FnMut(&Record) -> bool,
    ) -> Option<Cursor> {
        let (first, from) = match tail {
            None => (0, 0),
            Some(n) => self.tail_start(n, window),
        };
        let mut offset = 0;
        let segments = self.segments();
        let last = segments.len().saturating_sub(1);
        for (i, segment) in segments.into_iter().enumerate().skip(first) {
            let start = if i == first { from } else { 0 };
            let mut pass = |rec: &Record| !window.holds(rec) || each(rec);
            let (end, go_on) = read_range(&segment.file, start, segment.end, &mut pass);
            if !go_on {
                return None;
            }
            if i == last {
                offset = end;
            }
        }
        Some(self.into_cursor(offset))
    }

    /// Where the log ends now: what is appended from here on is new.
    pub fn end(self) -> Cursor {
        let offset = self
            .current
            .as_ref()
            .map_or(0, |s| complete_end(&s.file, s.end));
        self.into_cursor(offset)
    }

    fn into_cursor(self, offset: u64) -> Cursor {
        let id = self.current.as_ref().and_then(|s| identity(&s.file));
        Cursor {
            path: self.path,
            file: self.current.map(|s| s.file),
            id,
            offset,
        }
    }

    /// Where the last `n` records inside `window` begin: the index of their first file
    /// among the segments and the offset in it. Found reading backwards from the end;
    /// only the lines read are parsed.
    fn tail_start(&self, n: usize, window: Window) -> (usize, u64) {
        let segments = self.segments();
        let count = segments.len();
        if n == 0 {
            return match &self.current {
                Some(s) => (count - 1, complete_end(&s.file, s.end)),
                None => (count, 0),
            };
        }
        let mut found = 0;
        for (i, segment) in segments.into_iter().enumerate().rev() {
            let mut visit = |line: &[u8]| {
                let Ok(rec) = serde_json::from_slice::<Record>(line) else {
                    return false;
                };
                found += usize::from(window.holds(&rec));
                found == n
            };
            if let Some(start) = scan_back(&segment.file, segment.end, &mut visit) {
                return (i, start);
            }
        }
        (0, 0)
    }
}

/// A reader's place in a log: the current file (held open, so that what a container
/// removed on exit wrote last is still read) and the offset after the last whole record
/// handed on.
pub struct Cursor {
    path: PathBuf,
    file: Option<File>,
    id: Option<Identity>,
    offset: u64,
}

impl Cursor {
    /// The end of the log at `path` as it is now.
    pub fn at_end(path: &Path) -> Cursor {
        Snapshot::open(path).end()
    }

    /// Hands `each` every whole record appended since the last call, oldest first; false
    /// once `each` has refused one. A file replaced at the log's path (rotated) is read to
    /// its end, then the files rotated after it, then the new one from its start; a file
    /// cut short (a log of one file rotates so) is read again from its start.
    pub fn read_new(&mut self, each: &mut dyn FnMut(&Record) -> bool) -> bool {
        if let Ok(now) = File::open(&self.path) {
            let now_id = identity(&now);
            if self.file.is_some() && now_id != self.id {
                if !self.read_held(each) {
                    return false;
                }
                for segment in rotated_after(&self.path, self.id, now_id) {
                    if !read_range(&segment.file, 0, segment.end, each).1 {
                        return false;
                    }
                }
                self.file = None;
            }
            if self.file.is_none() {
                self.file = Some(now);
                self.id = now_id;
                self.offset = 0;
            }
        }
        self.read_held(each)
    }

    /// What the held file has past the offset.
    fn read_held(&mut self, each: &mut dyn FnMut(&Record) -> bool) -> bool {
        let Some(file) = &self.file else {
            return true;
        };
        let len = file.metadata().map_or(0, |m| m.len());
        if self.offset > 0 && (len < self.offset || !newline_at(file, self.offset - 1)) {
            // Cut short, and maybe written again past the offset since.
            self.offset = 0;
        }
        let (offset, go_on) = read_range(file, self.offset, len, each);
        self.offset = offset;
        go_on
    }
}

/// Whether the byte at `at` is a newline.
fn newline_at(file: &File, at: u64) -> bool {
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).is_ok() && byte[0] == b'\n'
}

/// The log's rotated files newer than the one whose identity is `held` (all of them when
/// it is gone: rotation drops the oldest), the file now current (`now`) left out.
fn rotated_after(path: &Path, held: Option<Identity>, now: Option<Identity>) -> Vec<Segment> {
    let mut names = files(path);
    names.pop();
    let segments: Vec<Segment> = names.iter().filter_map(|p| Segment::open(p)).collect();
    let newer = match segments.iter().position(|s| identity(&s.file) == held) {
        Some(i) => i + 1,
        None => 0,
    };
    segments
        .into_iter()
        .skip(newer)
        .filter(|s| identity(&s.file) != now)
        .collect()
}

/// Reads `file` between `start` and `end` through positioned reads (no shared offset).
struct Range<'a> {
    file: &'a File,
    at: u64,
    end: u64,
}

impl Read for Range<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let room = (self.end.saturating_sub(self.at)).min(buf.len() as u64) as usize;
        if room == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..room], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// Hands `each` the records of the whole lines of `file` between `start` and `end`;
/// returns the offset after the last whole line read (a torn last line is left for
/// later), and false once `each` has refused a record. Lines that are no record are
/// skipped.
fn read_range(
    file: &File,
    start: u64,
    end: u64,
    each: &mut dyn FnMut(&Record) -> bool,
) -> (u64, bool) {
    let mut reader = BufReader::with_capacity(
        BLOCK,
        Range {
            file,
            at: start,
            end,
        },
    );
    let mut offset = start;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line);
        let n = match read {
            Ok(0) | Err(_) => return (offset, true),
            Ok(n) => n,
        };
        if line.last() != Some(&b'\n') {
            if n < MAX_LINE {
                return (offset, true); // torn: the writer is not done with it
            }
            match skip_line(&mut reader) {
                Some(skipped) => offset += (n + skipped) as u64,
                None => return (offset, true),
            }
            continue;
        }
        offset += n as u64;
        if let Ok(rec) = serde_json::from_slice::<Record>(&line) {
            if !each(&rec) {
                return (offset, false);
            }
        }
    }
}

/// Skips to after the next newline; the bytes skipped, or None when the input ends first.
fn skip_line(reader: &mut impl BufRead) -> Option<usize> {
    let mut skipped = 0;
    loop {
        let buf = reader.fill_buf().ok()?;
        if buf.is_empty() {
            return None;
        }
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            reader.consume(i + 1);
            return Some(skipped + i + 1);
        }
        let len = buf.len();
        reader.consume(len);
        skipped += len;
    }
}

/// The offset after the last newline before `end` (0 when there is none).
fn complete_end(file: &File, end: u64) -> u64 {
    let mut block = vec![0u8; BLOCK];
    let mut pos = end;
    while pos > 0 {
        let n = BLOCK.min(pos as usize);
        let start = pos - n as u64;
        if file.read_exact_at(&mut block[..n], start).is_err() {
            return 0;
        }
        if let Some(i) = block[..n].iter().rposition(|&b| b == b'\n') {
            return start + i as u64 + 1;
        }
        pos = start;
    }
    0
}

/// Hands `visit` the whole lines of `file` before `end`, newline included, from the last
/// to the first; returns the offset where the line that `visit` said yes to begins, or
/// None when it never did. Reads one block at a time; a line longer than [`MAX_LINE`]
/// is skipped.
fn scan_back(file: &File, end: u64, visit: &mut dyn FnMut(&[u8]) -> bool) -> Option<u64> {
    // `pending` holds the bytes from `pos` up to the end of the lines not yet visited,
    // which is always just after a newline.
    let mut pos = complete_end(file, end);
    let mut pending: Vec<u8> = Vec::new();
    let mut skipping = false;
    loop {
        let body = pending.len().saturating_sub(1);
        if let Some(j) = pending[..body].iter().rposition(|&b| b == b'\n') {
            if visit(&pending[j + 1..]) {
                return Some(pos + j as u64 + 1);
            }
            pending.truncate(j + 1);
            continue;
        }
        if pos == 0 {
            return match !pending.is_empty() && visit(&pending) {
                true => Some(0),
                false => None,
            };
        }
        let n = BLOCK.min(pos as usize);
        pos -= n as u64;
        let mut block = vec![0u8; n];
        file.read_exact_at(&mut block, pos).ok()?;
        if skipping {
            // The rest of an overlong line: the lines before it start at a newline.
            if let Some(i) = block.iter().rposition(|&b| b == b'\n') {
                block.truncate(i + 1);
                pending = block;
                skipping = false;
            }
            continue;
        }
        block.extend_from_slice(&pending);
        pending = block;
        if pending.len() > MAX_LINE + BLOCK && !pending[..pending.len() - 1].contains(&b'\n') {
            pending.clear();
            skipping = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn record(text: &str, time: &str) -> String {
        format!("{{\"log\":\"{text}\\n\",\"stream\":\"stdout\",\"time\":\"{time}\"}}\n")
    }

    fn logs(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| r.log.trim_end().to_string())
            .collect()
    }

    fn replayed(path: &Path, window: Window, tail: Option<usize>) -> (Vec<Record>, Cursor) {
        let mut out = Vec::new();
        let cursor = Snapshot::open(path)
            .replay(window, tail, &mut |r| {
                out.push(r.clone());
                true
            })
            .unwrap();
        (out, cursor)
    }

    fn new_records(cursor: &mut Cursor) -> Vec<String> {
        let mut out = Vec::new();
        assert!(cursor.read_new(&mut |r| {
            out.push(r.log.trim_end().to_string());
            true
        }));
        out
    }

    const T: &str = "2026-01-01T00:00:0";

    /// Five records in three files (ctr.log.2, ctr.log.1, ctr.log), and a torn last line.
    fn rotated_log(dir: &Path) -> PathBuf {
        let path = dir.join("ctr.log");
        std::fs::write(dir.join("ctr.log.2"), record("one", &format!("{T}1Z"))).unwrap();
        let middle = record("two", &format!("{T}2Z")) + &record("three", &format!("{T}3Z"));
        std::fs::write(dir.join("ctr.log.1"), middle).unwrap();
        let last = record("four", &format!("{T}4Z"))
            + "not a record\n"
            + &record("five", &format!("{T}5Z"))
            + "{\"log\":\"torn";
        std::fs::write(&path, last).unwrap();
        path
    }

    #[test]
    fn tail_since_and_until_select_as_logs_always_did() {
        let dir = tempfile::tempdir().unwrap();
        let path = rotated_log(dir.path());
        let at = |s: u32| crate::timefmt::parse_rfc3339(&format!("{T}{s}Z"));
        let all = Window::default();
        assert_eq!(
            logs(&replayed(&path, all, None).0),
            ["one", "two", "three", "four", "five"]
        );
        for (n, want) in [
            (0, &[][..]),
            (1, &["five"][..]),
            (3, &["three", "four", "five"][..]),
            (9, &["one", "two", "three", "four", "five"][..]),
        ] {
            assert_eq!(logs(&replayed(&path, all, Some(n)).0), want, "tail {n}");
        }
        let since = Window {
            since: at(2),
            until: None,
        };
        assert_eq!(
            logs(&replayed(&path, since, None).0),
            ["two", "three", "four", "five"]
        );
        // The tail counts the records inside the window.
        let bounded = Window {
            since: at(2),
            until: at(4),
        };
        assert_eq!(
            logs(&replayed(&path, bounded, Some(2)).0),
            ["three", "four"]
        );
        assert_eq!(
            logs(&replayed(&path, bounded, Some(5)).0),
            ["two", "three", "four"]
        );
    }

    /// Following goes on from where the replay ended: the torn line once whole, what is
    /// appended, and across a rotation the rest of the old file, then the new one.
    #[test]
    fn a_cursor_follows_appends_and_rotations_without_repeating() {
        let dir = tempfile::tempdir().unwrap();
        let path = rotated_log(dir.path());
        let (_, mut cursor) = replayed(&path, Window::default(), Some(1));
        assert!(new_records(&mut cursor).is_empty());
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(format!("\",\"stream\":\"stdout\",\"time\":\"{T}6Z\"}}\n").as_bytes())
            .unwrap();
        f.write_all(record("seven", &format!("{T}7Z")).as_bytes())
            .unwrap();
        assert_eq!(new_records(&mut cursor), ["torn", "seven"]);
        // Rotated twice before the follower looks again.
        f.write_all(record("eight", &format!("{T}8Z")).as_bytes())
            .unwrap();
        std::fs::rename(dir.path().join("ctr.log.1"), dir.path().join("ctr.log.3")).unwrap();
        std::fs::rename(&path, dir.path().join("ctr.log.2")).unwrap();
        std::fs::write(
            dir.path().join("ctr.log.1"),
            record("nine", &format!("{T}9Z")),
        )
        .unwrap();
        std::fs::write(&path, record("ten", &format!("{T}9Z"))).unwrap();
        assert_eq!(new_records(&mut cursor), ["eight", "nine", "ten"]);
        // A log of one file is cut to nothing when it rotates, then written again.
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(0).unwrap();
        std::fs::write(&path, record("eleven", &format!("{T}9Z"))).unwrap();
        assert_eq!(new_records(&mut cursor), ["eleven"]);
        assert!(new_records(&mut cursor).is_empty());
    }

    #[test]
    fn a_cursor_at_the_end_sees_only_what_comes_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctr.log");
        let mut cursor = Cursor::at_end(&path);
        std::fs::write(&path, record("first", &format!("{T}1Z"))).unwrap();
        assert_eq!(new_records(&mut cursor), ["first"]);
        let mut later = Cursor::at_end(&path);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(record("second", &format!("{T}2Z")).as_bytes())
            .unwrap();
        assert_eq!(new_records(&mut later), ["second"]);
    }

    #[test]
    fn lines_longer_than_a_record_can_be_are_skipped_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctr.log");
        let long = "x".repeat(MAX_LINE + 3 * BLOCK) + "\n";
        let text =
            record("before", &format!("{T}1Z")) + &long + &record("after", &format!("{T}2Z"));
        std::fs::write(&path, text).unwrap();
        let all = Window::default();
        assert_eq!(logs(&replayed(&path, all, None).0), ["before", "after"]);
        assert_eq!(logs(&replayed(&path, all, Some(2)).0), ["before", "after"]);
    }

    /// `tail` reads backwards only as far as its records go: the bytes read for the last
    /// record of a large log are a block or two, not the log.
    #[test]
    fn the_tail_of_a_large_log_reads_only_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctr.log");
        let mut f = std::io::BufWriter::new(File::create(&path).unwrap());
        for i in 0..200_000 {
            f.write_all(record(&format!("line {i}"), &format!("{T}1Z")).as_bytes())
                .unwrap();
        }
        f.flush().unwrap();
        drop(f);
        let size = std::fs::metadata(&path).unwrap().len();
        let before = bytes_read_by_this_thread();
        let (tail, _) = replayed(&path, Window::default(), Some(1));
        let read = bytes_read_by_this_thread() - before;
        assert_eq!(logs(&tail), ["line 199999"]);
        assert!(
            read < 4 * BLOCK as u64,
            "{read} bytes read of a {size}-byte log for its last record"
        );
    }

    /// Bytes this thread has read through read(2) and pread(2) so far.
    fn bytes_read_by_this_thread() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
        io.lines()
            .find_map(|l| l.strip_prefix("rchar: "))
            .unwrap()
            .parse()
            .unwrap()
    }
}
