//! The event journal: what happened to containers, images, networks and volumes, one JSON
//! line per event in Docker's shape, appended by whichever process did it (the CLI, a
//! monitor, `capsa serve`), read back by `capsa events` and the API's `/events`.
//!
//! The journal is `<root>/events/journal`: each event is one `O_APPEND` write of a whole
//! line (atomic for lines this short), so writers never interleave and need no lock.
//! Past [`ROTATE_AT`] bytes the file is renamed to `journal.1` (replacing the previous
//! one): the journal holds between one and two rotations of history, never more.
//! Emitting never fails its caller: a journal that cannot be written loses the event
//! (the verb it reports has already happened).

use crate::root::StateRoot;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The journal's size past which it is rotated.
pub const ROTATE_AT: u64 = 1 << 20;
/// How often a follower looks for new lines.
pub const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// A line longer than this is not an event of ours and is skipped.
const MAX_LINE: usize = 64 * 1024;

/// What kind of object an event is about (Docker's `Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Container,
    Image,
    Network,
    Volume,
}

impl Kind {
    /// Docker's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Container => "container",
            Kind::Image => "image",
            Kind::Network => "network",
            Kind::Volume => "volume",
        }
    }
}

/// The object of an event: its ID and attributes (`name`, `image`, `exitCode`...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes", default)]
    pub attributes: BTreeMap<String, String>,
}

/// One event, as Docker's `/events` writes it (without the legacy fields, which
/// [`Event::docker_json`] adds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: Actor,
    pub scope: String,
    /// Seconds since the epoch.
    pub time: i64,
    /// Nanoseconds since the epoch.
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

impl Event {
    /// An event happening now.
    pub fn now(kind: Kind, action: &str, id: &str, attributes: &[(&str, &str)]) -> Event {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        Event {
            kind: kind.as_str().to_string(),
            action: action.to_string(),
            actor: Actor {
                id: id.to_string(),
                attributes: attributes
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
            scope: "local".into(),
            time: nanos / 1_000_000_000,
            time_nano: nanos,
        }
    }

    /// Docker's JSON, with the fields older clients read for containers and images
    /// (`status`, `id`, `from`).
    pub fn docker_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if self.kind == "container" || self.kind == "image" {
            value["status"] = self.action.clone().into();
            value["id"] = self.actor.id.clone().into();
            if let Some(image) = self.actor.attributes.get("image") {
                value["from"] = image.clone().into();
            }
        }
        value
    }
}

/// The journal of one state root.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// The journal of `root`.
    pub fn of(root: &StateRoot) -> Journal {
        Journal {
            dir: root.events_dir(),
        }
    }

    fn current(&self) -> PathBuf {
        self.dir.join("journal")
    }

    fn previous(&self) -> PathBuf {
        self.dir.join("journal.1")
    }

    /// Appends `event`; a failure is logged and otherwise ignored.
    pub fn append(&self, event: &Event) {
        if let Err(e) = self.try_append(event) {
            tracing::debug!("event journal {}: {e}", self.dir.display());
        }
    }

    fn try_append(&self, event: &Event) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let open = || {
            OpenOptions::new()
                .append(true)
                .create(true)
                .mode(crate::root::PRIVATE_FILE)
                .open(self.current())
        };
        let mut file = match open() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                crate::root::create_private_dir(&self.dir)?;
                open()?
            }
            other => other?,
        };
        file.write_all(&line)?;
        if file.metadata()?.len() > ROTATE_AT {
            self.rotate(&file)?;
        }
        Ok(())
    }

    /// Renames the full journal aside, under a lock so that two writers past the bound
    /// rotate it once.
    fn rotate(&self, written: &File) -> std::io::Result<()> {
        let _lock = crate::fsutil::FileLock::acquire(&self.dir.join("rotate.lock"))?;
        let still_ours = std::fs::metadata(self.current())
            .is_ok_and(|m| m.ino() == written.metadata().map(|w| w.ino()).unwrap_or(0));
        if still_ours {
            std::fs::rename(self.current(), self.previous())?;
        }
        Ok(())
    }

    /// The exit code the last `die` event of container `id` since `since` (seconds)
    /// records: what a waiter that saw the container only running before it was removed
    /// (`--rm`) answers with.
    pub fn last_exit(&self, id: &str, since: i64) -> Option<i32> {
        self.read(Some(since), None)
            .iter()
            .rev()
            .find(|e| e.kind == Kind::Container.as_str() && e.action == "die" && e.actor.id == id)
            .and_then(|e| e.actor.attributes.get("exitCode")?.parse().ok())
    }

    /// Every recorded event from `since` (inclusive) to `until` (inclusive), oldest first.
    pub fn read(&self, since: Option<i64>, until: Option<i64>) -> Vec<Event> {
        let mut out = Vec::new();
        for path in [self.previous(), self.current()] {
            if let Ok(file) = File::open(&path) {
                read_lines(&mut BufReader::new(file), &mut |e| {
                    if in_window(&e, since, until) {
                        out.push(e);
                    }
                    true
                });
            }
        }
        out
    }

    /// `docker events --since --until --filter`: follows from `since` (from now on when
    /// None) until `until` (seconds) has passed or `gone` says so, handing `each` the
    /// events that match `filters` (false from `each` ends it). Both front ends use it.
    pub fn follow_matching(
        &self,
        since: Option<i64>,
        until: Option<i64>,
        filters: &BTreeMap<String, Vec<String>>,
        each: &mut dyn FnMut(Event) -> bool,
        gone: &dyn Fn() -> bool,
    ) {
        let past_until = || {
            gone()
                || until.is_some_and(|u| {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .is_ok_and(|d| d.as_secs() as i64 > u)
                })
        };
        self.follow(
            since,
            &mut |e| {
                if until.is_some_and(|u| e.time > u) {
                    return false;
                }
                !matches(&e, filters) || each(e)
            },
            &past_until,
        );
    }

    /// Calls `each` with every event recorded from `since` on (from now on when `since`
    /// is None), oldest first, until `each` returns false or `stop` says so; looks for new
    /// lines every [`FOLLOW_POLL`] and follows rotations. `stop` is asked after each read
    /// of what is there. No event is missed or repeated
    /// between the recorded ones and the new ones: one open file is read through.
    pub fn follow(
        &self,
        since: Option<i64>,
        each: &mut dyn FnMut(Event) -> bool,
        stop: &dyn Fn() -> bool,
    ) {
        let mut go_on = true;
        let mut reader = match since {
            None => self.open_at_end(),
            Some(s) => {
                if let Ok(file) = File::open(self.previous()) {
                    read_lines(&mut BufReader::new(file), &mut |e| {
                        if in_window(&e, Some(s), None) {
                            go_on = each(e);
                        }
                        go_on
                    });
                }
                self.open_from_start()
            }
        };
        loop {
            if !go_on {
                return;
            }
            if let Some((r, _)) = reader.as_mut() {
                read_lines(r, &mut |e| {
                    if since.is_none_or(|s| e.time >= s) {
                        go_on = each(e);
                    }
                    go_on
                });
            }
            if !go_on || stop() {
                return;
            }
            let now_ino = std::fs::metadata(self.current()).ok().map(|m| m.ino());
            match (&reader, now_ino) {
                // Rotated (or made): what was left in the old file has just been read.
                (Some((_, ino)), Some(now)) if *ino != now => reader = self.open_from_start(),
                (None, Some(_)) => reader = self.open_from_start(),
                _ => std::thread::sleep(FOLLOW_POLL),
            }
        }
    }

    fn open_at_end(&self) -> Option<(BufReader<File>, u64)> {
        let mut file = File::open(self.current()).ok()?;
        let ino = file.metadata().ok()?.ino();
        file.seek(SeekFrom::End(0)).ok()?;
        Some((BufReader::new(file), ino))
    }

    fn open_from_start(&self) -> Option<(BufReader<File>, u64)> {
        let file = File::open(self.current()).ok()?;
        let ino = file.metadata().ok()?.ino();
        Some((BufReader::new(file), ino))
    }

    /// The journal's directory (for tests and `system df`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Whether `event` happened within `since..=until` (seconds).
pub fn in_window(event: &Event, since: Option<i64>, until: Option<i64>) -> bool {
    since.is_none_or(|s| event.time >= s) && until.is_none_or(|u| event.time <= u)
}

/// Reads whole lines from `reader`, parsing each; a partial last line (a write under
/// way) is left unread for the next call. Stops when `each` returns false.
fn read_lines(reader: &mut BufReader<File>, each: &mut dyn FnMut(Event) -> bool) {
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut limited = reader.by_ref().take(MAX_LINE as u64 + 1);
        let n = match limited.read_until(b'\n', &mut line) {
            Ok(n) => n,
            Err(_) => return,
        };
        if n == 0 {
            return;
        }
        if line.last() != Some(&b'\n') {
            if n > MAX_LINE {
                continue;
            }
            // Not yet whole: step back so the next read sees all of it.
            let _ = reader.seek_relative(-(n as i64));
            return;
        }
        if let Ok(e) = serde_json::from_slice::<Event>(&line) {
            if !each(e) {
                return;
            }
        }
    }
}

/// Records `action` on a container (its name and image as attributes, and `extra`).
pub fn container(
    root: &StateRoot,
    action: &str,
    state: &crate::container::State,
    extra: &[(&str, &str)],
) {
    let mut attributes = vec![
        ("name", state.name.as_str()),
        ("image", state.image.as_str()),
    ];
    attributes.extend_from_slice(extra);
    Journal::of(root).append(&Event::now(Kind::Container, action, &state.id, &attributes));
}

/// Records `action` on an image, network or volume.
pub fn emit(root: &StateRoot, kind: Kind, action: &str, id: &str, attributes: &[(&str, &str)]) {
    Journal::of(root).append(&Event::now(kind, action, id, attributes));
}

/// A time as `--since`/`--until` and the API's `since`/`until` give it: seconds since
/// the epoch (`1700000000`, `1700000000.5`), RFC 3339, or a duration before `now`
/// (`10m`, `1h30m`). Seconds, rounded down.
pub fn parse_time(text: &str, now: SystemTime) -> Option<i64> {
    let text = text.trim();
    if let Some((secs, _)) = text.split_once('.').filter(|(s, f)| {
        !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit())
            && f.bytes().all(|b| b.is_ascii_digit())
    }) {
        return secs.parse().ok();
    }
    if let Ok(secs) = text.parse::<i64>() {
        return Some(secs);
    }
    if let Some(t) = crate::timefmt::parse_rfc3339(text) {
        return t
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs() as i64);
    }
    let ago = humantime::parse_duration(text).ok()?;
    now.checked_sub(ago)?
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs() as i64)
}

/// The filters `/events` and `capsa events` take.
pub const FILTER_KEYS: &[&str] = &[
    "type",
    "event",
    "container",
    "image",
    "network",
    "volume",
    "label",
    "scope",
];

/// Whether `event` passes every filter (values of one key are alternatives).
pub fn matches(event: &Event, filters: &BTreeMap<String, Vec<String>>) -> bool {
    let attr = |k: &str| event.actor.attributes.get(k).map(String::as_str);
    let id = event.actor.id.as_str();
    filters.iter().all(|(key, wants)| {
        wants.iter().any(|w| {
            let named = |kind: &str| {
                event.kind == kind
                    && (id == w
                        || (w.len() >= 3 && id.starts_with(w.as_str()))
                        || attr("name") == Some(w))
            };
            match key.as_str() {
                "type" => event.kind == *w,
                "event" => event.action == *w || event.action.starts_with(&format!("{w}:")),
                "container" => named("container"),
                "image" => {
                    named("image")
                        || (event.kind == "container"
                            && (attr("image") == Some(w)
                                || attr("image") == Some(&format!("{w}:latest"))))
                }
                "network" => named("network"),
                "volume" => named("volume"),
                "scope" => w == "local",
                "label" => match w.split_once('=') {
                    Some((k, v)) => attr(k) == Some(v),
                    None => attr(w).is_some(),
                },
                _ => false,
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal() -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal {
            dir: dir.path().join("events"),
        };
        (dir, j)
    }

    #[test]
    fn events_read_back_in_order_within_the_window() {
        let (_d, j) = journal();
        let mut a = Event::now(Kind::Container, "create", "abc", &[("name", "x")]);
        a.time = 100;
        let mut b = Event::now(Kind::Volume, "create", "v", &[]);
        b.time = 200;
        j.append(&a);
        j.append(&b);
        assert_eq!(j.read(None, None), vec![a.clone(), b.clone()]);
        assert_eq!(j.read(Some(150), None), vec![b.clone()]);
        assert_eq!(j.read(None, Some(150)), vec![a.clone()]);
        assert_eq!(a.docker_json()["status"], "create");
        assert_eq!(b.docker_json().get("status"), None);
    }

    #[test]
    fn the_last_die_event_of_a_container_gives_its_exit_code() {
        let (_d, j) = journal();
        let at = |mut e: Event, t: i64| {
            e.time = t;
            e
        };
        j.append(&at(
            Event::now(Kind::Container, "die", "abc", &[("exitCode", "1")]),
            100,
        ));
        j.append(&at(
            Event::now(Kind::Container, "die", "other", &[("exitCode", "9")]),
            200,
        ));
        j.append(&at(
            Event::now(Kind::Container, "die", "abc", &[("exitCode", "3")]),
            200,
        ));
        j.append(&at(Event::now(Kind::Container, "destroy", "abc", &[]), 201));
        assert_eq!(j.last_exit("abc", 150), Some(3));
        assert_eq!(
            j.last_exit("abc", 300),
            None,
            "only events since the wait began"
        );
        assert_eq!(j.last_exit("nope", 0), None);
    }

    #[test]
    fn the_journal_rotates_and_keeps_the_last_two_files() {
        let (_d, j) = journal();
        let big = "x".repeat(4096);
        for i in 0..600 {
            j.append(&Event::now(
                Kind::Image,
                "tag",
                &format!("{i}"),
                &[("name", &big)],
            ));
        }
        let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert!(size(j.current()) <= ROTATE_AT + 8192);
        assert!(size(j.previous()) > 0);
        let all = j.read(None, None);
        assert!(all.len() < 600 && all.len() > 200, "{}", all.len());
        assert_eq!(all.last().unwrap().actor.id, "599");
    }

    #[test]
    fn a_follower_sees_new_events_and_a_partial_line_waits() {
        let (_d, j) = journal();
        j.append(&Event::now(Kind::Container, "old", "a", &[]));
        let j2 = j.clone();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            j2.append(&Event::now(Kind::Container, "new", "b", &[]));
        });
        let mut seen = Vec::new();
        j.follow(
            None,
            &mut |e| {
                seen.push(e.action);
                false
            },
            &|| false,
        );
        writer.join().unwrap();
        assert_eq!(seen, vec!["new"]);
        let mut all = Vec::new();
        j.follow(
            Some(0),
            &mut |e| {
                all.push(e.action);
                true
            },
            &|| true,
        );
        assert_eq!(
            all,
            vec!["old", "new"],
            "what is recorded is read before stop"
        );
    }

    #[test]
    fn times_parse_as_docker_writes_them() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(parse_time("1700000000", now), Some(1_700_000_000));
        assert_eq!(parse_time("1700000000.123456789", now), Some(1_700_000_000));
        assert_eq!(parse_time("10m", now), Some(9_400));
        assert_eq!(parse_time("1970-01-01T00:00:10Z", now), Some(10));
        assert_eq!(parse_time("nope", now), None);
    }

    fn f(key: &str, value: &str) -> BTreeMap<String, Vec<String>> {
        BTreeMap::from([(key.to_string(), vec![value.to_string()])])
    }

    #[test]
    fn filters_select_as_docker_does() {
        let e = Event::now(
            Kind::Container,
            "start",
            "abcdef0123",
            &[("name", "web"), ("image", "busybox:latest")],
        );
        assert!(matches(&e, &f("type", "container")));
        assert!(!matches(&e, &f("type", "image")));
        assert!(matches(&e, &f("container", "web")));
        assert!(matches(&e, &f("container", "abcdef")));
        assert!(!matches(&e, &f("container", "db")));
        assert!(matches(&e, &f("image", "busybox")));
        assert!(matches(&e, &f("event", "start")));
        assert!(!matches(&e, &f("event", "die")));
        assert!(matches(&e, &f("label", "name=web")));
        assert!(matches(&e, &BTreeMap::new()));
    }
}
