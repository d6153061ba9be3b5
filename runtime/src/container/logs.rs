//! `logs`: a container's output from its json-file log: all of it, the last N lines, since a
//! time, with time stamps, and following until the container exits. The log is streamed
//! ([`super::logfile_reader`]): the last N lines are read from its end, and following
//! reads only what is appended.

use super::logfile::{self, Record};
use super::logfile_reader::{Snapshot, Window};
use super::state::Status;
use super::store::ContainerStore;
use super::ContainerError;
use std::io::Write;
use std::time::{Duration, SystemTime};

/// What `logs` shows.
#[derive(Debug, Clone, Default)]
pub struct LogsOptions {
    /// Keep printing until the container exits.
    pub follow: bool,
    /// Only the last N records.
    pub tail: Option<usize>,
    /// Prefix each record with its time.
    pub timestamps: bool,
    /// Only records from this time on.
    pub since: Option<SystemTime>,
}

/// Parses `--since`: an RFC 3339 time, a Unix time, or a duration back from now (`10m`, `2h`).
pub fn parse_since(value: &str) -> Result<SystemTime, ContainerError> {
    if let Some(t) = crate::timefmt::parse_rfc3339(value) {
        return Ok(t);
    }
    if let Ok(secs) = value.parse::<f64>() {
        return Ok(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0)));
    }
    humantime::parse_duration(value)
        .map(|d| SystemTime::now() - d)
        .map_err(|_| {
            ContainerError::InvalidArgument(format!(
                "--since {value:?}: expected a time (RFC 3339 or Unix) or a duration such as 10m"
            ))
        })
}

/// Prints the logs of container `id`.
pub fn logs(
    store: &ContainerStore,
    id: &str,
    opts: &LogsOptions,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<(), ContainerError> {
    let window = Window {
        since: opts.since,
        until: None,
    };
    let mut print = |rec: &Record| {
        logfile::print(rec, opts.timestamps, stdout, stderr);
        true
    };
    let end = open(store, id)?.replay(window, opts.tail, &mut print);
    if let (true, Some(end)) = (opts.follow, end) {
        super::wait::follow_log(store, id, end, opts.timestamps, stdout, stderr)?;
    }
    Ok(())
}

/// Container `id`'s log, open for reading: refused for the `none` driver, and for a
/// container that ran in the foreground (its output went to the terminal).
pub fn open(store: &ContainerStore, id: &str) -> Result<Snapshot, ContainerError> {
    let path = store.dir(id).log();
    if store.load(id)?.log_driver == logfile::Driver::None {
        return Err(ContainerError::InvalidArgument(
            logfile::NOT_READABLE.to_string(),
        ));
    }
    if !path.exists() {
        let state = store.load(id)?;
        if !matches!(state.status, Status::Creating | Status::Created) {
            return Err(ContainerError::WrongState {
                id: id.to_string(),
                reason: "no logs: it ran in the foreground, so its output went to the terminal (run it with -d, or create and start it, to keep a log)".into(),
            });
        }
    }
    Ok(Snapshot::open(&path))
}
