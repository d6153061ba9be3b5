//! `GET /events?since=&until=&filters=`: the event journal ([`crate::events`]) as
//! Docker's stream of JSON lines: what was recorded since `since`, then what happens,
//! until `until` passes or the client goes away.

use super::http::{filters, ApiError, ApiResult, Query};
use super::Shared;
use crate::events::{parse_time, Journal, FILTER_KEYS};
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use std::time::SystemTime;

pub fn routes() -> Router<Shared> {
    Router::new().route("/events", get(events))
}

/// Lines in flight to one client; a slow reader holds back its follower thread.
const IN_FLIGHT: usize = 64;

async fn events(State(engine): State<Shared>, query: Query) -> ApiResult<Response> {
    let filters = filters(&query)?;
    if let Some(key) = filters.keys().find(|k| !FILTER_KEYS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!("invalid filter '{key}'")));
    }
    let now = SystemTime::now();
    let time = |name: &str| -> ApiResult<Option<i64>> {
        match query.get(name).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => parse_time(v, now)
                .map(Some)
                .ok_or_else(|| ApiError::bad_request(format!("invalid value for {name}: {v:?}"))),
        }
    };
    let since = time("since")?;
    let until = time("until")?;
    if let (Some(s), Some(u)) = (since, until) {
        if s > u {
            return Err(ApiError::bad_request("since must be before until"));
        }
    }
    let slot = engine.streams.take()?;
    let (tx, rx) = tokio::sync::mpsc::channel(IN_FLIGHT);
    let journal = Journal::of(&engine.root);
    super::streams::spawn(slot, move || {
        let closed = tx.clone();
        journal.follow_matching(
            since,
            until,
            &filters,
            &mut |e| {
                let line = super::bodies::ndjson_line(&e.docker_json());
                tx.blocking_send(Ok::<_, std::convert::Infallible>(line))
                    .is_ok()
            },
            &|| closed.is_closed(),
        );
    });
    let mut response = Response::new(Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ));
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
