//! `GET /containers/{id}/logs`: the container's json-file log (`stdout`, `stderr`,
//! `since`, `until`, `tail`, `timestamps`, `follow` until the container stops), in 8-byte
//! multiplexed frames without a terminal, raw with one. The log is streamed, never held:
//! `tail` is read from its end, `follow` reads only what is appended.

use super::http::{blocking, flag, number, ApiError, ApiResult, Query};
use super::stream::{channel_body, engine_error, framed, streamed, BodySender};
use super::Shared;
use crate::container::logfile::Record;
use crate::container::logfile_reader::Window;
use crate::container::logs::{open, parse_since};
use crate::container::sandbox::has_terminal;
use crate::container::session::Stream;
use crate::container::wait::follow_records;
use crate::container::ContainerStore;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use std::time::SystemTime;

/// The routes of this module.
pub fn routes() -> Router<Shared> {
    Router::new().route("/containers/{id}/logs", get(logs))
}

/// What the client asked for.
struct Asked {
    stdout: bool,
    stderr: bool,
    timestamps: bool,
    follow: bool,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
}

/// A time parameter: Unix seconds (with a fraction), as the docker CLI sends it, or what
/// `capsa logs --since` takes; 0 or empty is none.
fn time(
    query: &std::collections::HashMap<String, String>,
    name: &str,
) -> ApiResult<Option<SystemTime>> {
    match query.get(name).map(String::as_str) {
        None | Some("") | Some("0") => Ok(None),
        Some(v) => parse_since(v)
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid value for {name}: {v:?}"))),
    }
}

async fn logs(
    State(engine): State<Shared>,
    Path(name): Path<String>,
    query: Query,
) -> ApiResult<Response> {
    let tail = match query.get("tail").map(String::as_str) {
        None | Some("") | Some("all") => None,
        Some(_) => number::<i64>(&query, "tail")?.and_then(|n| usize::try_from(n).ok()),
    };
    let asked = Asked {
        stdout: flag(&query, "stdout"),
        stderr: flag(&query, "stderr"),
        timestamps: flag(&query, "timestamps"),
        follow: flag(&query, "follow"),
        since: time(&query, "since")?,
        until: time(&query, "until")?,
    };
    if !asked.stdout && !asked.stderr {
        return Err(ApiError::bad_request(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let slot = engine.streams.take()?;
    let window = Window {
        since: asked.since,
        until: asked.until,
    };
    let root = engine.root.clone();
    let (id, tty, log) = blocking(move || {
        let store = ContainerStore::new(&root);
        let id = store.resolve(&name).map_err(engine_error)?;
        if store.load(&id).map_err(engine_error)?.log_driver
            == crate::container::logfile::Driver::None
        {
            // dockerd's answer for a driver it cannot read back.
            return Err(ApiError::new(
                axum::http::StatusCode::NOT_IMPLEMENTED,
                crate::container::logfile::NOT_READABLE,
            ));
        }
        let tty = has_terminal(&store, &id);
        let log = open(&store, &id).map_err(engine_error)?;
        Ok((id, tty, log))
    })
    .await?;
    let (tx, body) = channel_body();
    let root = engine.root.clone();
    super::streams::spawn(slot, move || {
        let store = ContainerStore::new(&root);
        let send = |rec: &Record| send_record(&tx, &asked, !tty, rec);
        // `tail` counts the records left once the time bounds are applied.
        let Some(end) = log.replay(window, tail, &mut |rec| send(rec)) else {
            return;
        };
        if asked.follow && asked.until.is_none_or(|u| u > SystemTime::now()) {
            let mut each = |rec: &Record| send(rec);
            let _ = follow_records(&store, &id, end, &mut each, &|| tx.is_closed());
        }
    });
    Ok(streamed(
        if tty {
            "application/vnd.docker.raw-stream"
        } else {
            "application/vnd.docker.multiplexed-stream"
        },
        body,
    ))
}

/// Sends one record if the client asked for it; false once the client has gone.
fn send_record(tx: &BodySender, asked: &Asked, multiplex: bool, rec: &Record) -> bool {
    let at = crate::timefmt::parse_rfc3339(&rec.time);
    if let (Some(since), Some(at)) = (asked.since, at) {
        if at < since {
            return true;
        }
    }
    if let (Some(until), Some(at)) = (asked.until, at) {
        if at > until {
            return true;
        }
    }
    let stream = if rec.stream == "stderr" {
        Stream::Stderr
    } else {
        Stream::Stdout
    };
    if (stream == Stream::Stdout && !asked.stdout) || (stream == Stream::Stderr && !asked.stderr) {
        return true;
    }
    let mut text = Vec::with_capacity(rec.log.len() + 40);
    if asked.timestamps {
        text.extend_from_slice(rec.time.as_bytes());
        text.push(b' ');
    }
    text.extend_from_slice(rec.log.as_bytes());
    tx.blocking_send(Ok(Bytes::from(framed(multiplex, stream, &text))))
        .is_ok()
}
