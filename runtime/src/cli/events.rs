//! `events`: the event journal ([`crate::events`]) as `docker events` prints it, one line
//! per event (`2026-11-29T06:00:00.000000000Z container start ID (image=busybox,
//! name=web)`), or as JSON or a Go template with `--format`.

use super::{report, EXIT_FAILURE};
use crate::events::{parse_time, Event, Journal, FILTER_KEYS};
use crate::root::StateRoot;
use clap::Args;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `events` flags.
#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Filter output based on conditions provided (type, event, container, image,
    /// network, volume, label).
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template, or `json`.
    #[arg(long)]
    format: Option<String>,
    /// Show all events created since timestamp (seconds, RFC 3339, or a duration: 10m).
    #[arg(long)]
    since: Option<String>,
    /// Stream events until this timestamp.
    #[arg(long)]
    until: Option<String>,
}

/// A bad flag of `events`.
#[derive(Debug, thiserror::Error)]
enum EventsError {
    #[error("invalid filter '{0}' (expected key=value)")]
    NotKeyValue(String),
    #[error("invalid filter '{0}'")]
    Key(String),
    #[error("invalid value for --{0}: {1:?}")]
    Time(&'static str, String),
    #[error("template parsing error: {0}")]
    Template(String),
}

/// `2026-11-29T06:00:00.000000000Z container start ID (image=busybox, name=web)`.
pub fn line(e: &Event) -> String {
    let at = UNIX_EPOCH + Duration::from_nanos(e.time_nano.max(0) as u64);
    let attributes: Vec<String> = e
        .actor
        .attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut text = format!(
        "{} {} {} {}",
        humantime::format_rfc3339_nanos(at),
        e.kind,
        e.action,
        e.actor.id
    );
    if !attributes.is_empty() {
        text.push_str(&format!(" ({})", attributes.join(", ")));
    }
    crate::printable::escape_controls(&text).into_owned()
}

/// `events [--since T] [--until T] [--filter K=V]... [--format F]`: what was recorded
/// since `--since`, then what happens, until `--until` passes (or forever).
pub fn events(root: &StateRoot, args: EventsArgs) -> i32 {
    match run(root, args) {
        Ok(()) => 0,
        Err(e) => {
            report(&e);
            EXIT_FAILURE
        }
    }
}

fn run(root: &StateRoot, args: EventsArgs) -> Result<(), EventsError> {
    let mut filters: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in &args.filter {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| EventsError::NotKeyValue(f.clone()))?;
        if !FILTER_KEYS.contains(&k) {
            return Err(EventsError::Key(k.to_string()));
        }
        filters
            .entry(k.to_string())
            .or_default()
            .push(v.to_string());
    }
    let now = SystemTime::now();
    let time = |flag: &'static str, v: &Option<String>| {
        v.as_deref()
            .map(|t| parse_time(t, now).ok_or_else(|| EventsError::Time(flag, t.to_string())))
            .transpose()
    };
    let since = time("since", &args.since)?;
    let until = time("until", &args.until)?;
    let template = match args.format.as_deref() {
        None | Some("") | Some("json") => None,
        Some(text) => Some(
            crate::template::Template::parse(text)
                .map_err(|e| EventsError::Template(e.to_string()))?,
        ),
    };
    let json = args.format.as_deref() == Some("json");
    let mut out = std::io::stdout().lock();
    // Without --since, only what happens from now on (as docker does).
    Journal::of(root).follow_matching(
        since,
        until,
        &filters,
        &mut |e| {
            let text = if json {
                serde_json::to_string(&e.docker_json()).unwrap_or_default()
            } else if let Some(t) = &template {
                match t.render(&e.docker_json(), &crate::template::format::INSPECT) {
                    Ok(s) => s,
                    Err(err) => {
                        super::print_error(format_args!("template: {err}"));
                        return false;
                    }
                }
            } else {
                line(&e)
            };
            writeln!(out, "{text}").and_then(|()| out.flush()).is_ok()
        },
        &|| false,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Kind;

    #[test]
    fn lines_read_as_docker_prints_them() {
        let mut e = Event::now(
            Kind::Container,
            "start",
            "abc",
            &[("name", "web"), ("image", "busybox")],
        );
        e.time_nano = 1_795_932_000_000_000_001;
        assert_eq!(
            line(&e),
            "2026-11-29T06:00:00.000000001Z container start abc (image=busybox, name=web)"
        );
    }
}
