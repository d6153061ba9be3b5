//! The container endpoints: create, list, inspect, the lifecycle verbs (start, stop,
//! restart, kill, pause, unpause, rename, wait, remove), prune, top and changes. Each
//! resolves its container as the CLI does (full ID, unique prefix, name, with or without
//! the leading `/`) and calls the engine library on a blocking thread.

use super::create::{self, CreateBody};
use super::http::{blocking, filters, flag, number, ApiError, ApiResult, DockerJson, Query};
use super::Shared;
use crate::api;
use crate::container::filter::Filter;
use crate::container::state::Status;
use crate::container::{ContainerError, ContainerStore, State};
use crate::image::ImageStore;
use crate::linux::process::exec_fifo::ExecOutcome;
use axum::body::Body;
use axum::extract::{Path, State as Axum};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// The container routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/containers/create", post(create))
        .route("/containers/json", get(list))
        .route("/containers/prune", post(prune))
        .route("/containers/{id}", delete(remove))
        .route("/containers/{id}/json", get(inspect))
        .route("/containers/{id}/start", post(start))
        .route("/containers/{id}/stop", post(stop))
        .route("/containers/{id}/restart", post(restart))
        .route("/containers/{id}/kill", post(kill))
        .route("/containers/{id}/pause", post(pause))
        .route("/containers/{id}/unpause", post(unpause))
        .route("/containers/{id}/rename", post(rename))
        .route("/containers/{id}/wait", post(wait))
        .route("/containers/{id}/top", get(top))
        .route("/containers/{id}/changes", get(changes))
}

/// The store, and the ID `name` resolves to (404 "No such container").
fn find(engine: &super::Engine, name: &str) -> ApiResult<(ContainerStore, String)> {
    let store = ContainerStore::new(&engine.root);
    let id = store.resolve(name)?;
    Ok((store, id))
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn not_modified() -> Response {
    StatusCode::NOT_MODIFIED.into_response()
}

fn not_running(id: &str) -> ApiError {
    ApiError::conflict(format!("Container {id} is not running"))
}

/// `?signal=` by name or number.
fn signal(query: &HashMap<String, String>) -> ApiResult<Option<i32>> {
    Ok(query
        .get("signal")
        .filter(|s| !s.is_empty())
        .map(|s| crate::container::kill::parse_signal(s))
        .transpose()?)
}

/// `?t=` seconds (`-1`: wait as long as it takes).
fn grace(query: &HashMap<String, String>) -> ApiResult<Option<Duration>> {
    Ok(match number::<i64>(query, "t")? {
        None => None,
        Some(t) if t < 0 => Some(Duration::from_secs(u32::MAX as u64)),
        Some(t) => Some(Duration::from_secs(t as u64)),
    })
}

/// `POST /containers/create?name=&platform=`: the body is checked here (400 at once for a
/// malformed one), then the container is made by an engine worker, since its monitor is
/// forked (see [`super::workers`]).
async fn create(
    Axum(engine): Axum<Shared>,
    axum::extract::Query(query): Query,
    DockerJson(body): DockerJson<serde_json::Value>,
) -> ApiResult<Response> {
    let name = query.get("name").cloned();
    let _ = create_options(&engine, body.clone(), name.clone())?;
    let job = super::workers::Job::Create { body, name };
    let (status, value) = blocking(move || engine.run(job)).await?;
    Ok(answer(status, value))
}

/// `create`'s body and `name` as run options, and Docker's warnings.
fn create_options(
    engine: &super::Engine,
    body: serde_json::Value,
    name: Option<String>,
) -> ApiResult<(crate::container::options::RunOptions, Vec<String>)> {
    let name = match name.as_deref().map(|n| n.trim_start_matches('/')) {
        None | Some("") => None,
        Some(n) if crate::container::id::valid_name(n) => Some(n.to_string()),
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )))
        }
    };
    let body: CreateBody = match body {
        Value::Null => CreateBody::default(),
        body => super::http::parse_json(&serde_json::to_vec(&body).unwrap_or_default())?,
    };
    let defaults = create::Defaults {
        cgroup_parent: engine.cgroup_parent.as_deref(),
    };
    create::to_options(body, name, &defaults)
}

/// A worker's answer as a response: 201/200 with its JSON, or a bodiless 204/304.
fn answer(status: u16, value: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        status.into_response()
    } else {
        (status, axum::Json(value)).into_response()
    }
}

/// Runs a job that forks a monitor, in this (single-threaded) engine worker: the status
/// and JSON the handler answers.
pub fn run_job(engine: &super::Engine, job: super::workers::Job) -> ApiResult<(u16, Value)> {
    use super::workers::Job;
    match job {
        Job::Create { body, name } => {
            let (opts, warnings) = create_options(engine, body, name)?;
            let image = ImageStore::new(&engine.root)
                .resolve(&opts.image)
                .map_err(super::errors::from_image)?;
            let store = ContainerStore::new(&engine.root);
            let id = api::create(&store, image, &opts, &mut |_| {})?;
            Ok((201, json!({ "Id": id, "Warnings": warnings })))
        }
        Job::Start { container } => start_now(engine, &container),
        Job::PrepareStart { container } => {
            let (store, id) = find(engine, &container)?;
            api::prepare_start(&store, &id)?;
            Ok((204, Value::Null))
        }
        Job::Restart {
            container,
            signal,
            grace_secs,
        } => {
            let (store, id) = find(engine, &container)?;
            api::stop(&store, &id, signal, grace_secs.map(Duration::from_secs))?;
            start_now(engine, &id)
        }
    }
}

/// Starts a container: 204, or 304 when it already runs.
fn start_now(engine: &super::Engine, container: &str) -> ApiResult<(u16, Value)> {
    let (store, id) = find(engine, container)?;
    if store.observe(&id)?.status == Status::Running {
        return Ok((304, Value::Null));
    }
    match api::start(&store, &id, &mut |_| {})? {
        ExecOutcome::Started => Ok((204, Value::Null)),
        ExecOutcome::Failed(_, message) => Err(ApiError::bad_request(message)),
    }
}

/// `GET /containers/json?all=&limit=&size=&filters=`.
async fn list(
    Axum(engine): Axum<Shared>,
    axum::extract::Query(query): Query,
) -> ApiResult<Response> {
    let mut filter = Filter::default();
    for (key, values) in filters(&query)? {
        for v in values {
            filter
                .add(&key, &v)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
    }
    let all = flag(&query, "all");
    let limit = number::<i64>(&query, "limit")?.filter(|n| *n > 0);
    let size = flag(&query, "size");
    let rows = blocking(move || {
        let store = ContainerStore::new(&engine.root);
        let mut shown: Vec<State> = store
            .list()
            .into_iter()
            .filter(|s| all || limit.is_some() || s.status == Status::Running)
            .filter(|s| filter.matches(s, &store))
            .collect();
        shown.sort_by(|a, b| b.created.cmp(&a.created));
        if let Some(n) = limit {
            shown.truncate(n as usize);
        }
        // Images' labels read once per image, not once per container.
        let mut image_labels = HashMap::new();
        let rows = shown
            .iter()
            .map(|s| {
                let image = image_labels
                    .entry(s.image_id.clone())
                    .or_insert_with(|| crate::container::inspect::image_labels(&store, &s.image_id))
                    .clone();
                let spec = engine.spec_mounts.mounts(&store.dir(&s.id).config());
                list_row(&store, s, size, image, &spec)
            })
            .collect::<Vec<_>>();
        // The specs of removed containers are forgotten (a stat each).
        engine.spec_mounts.retain(|p| p.exists());
        Ok(rows)
    })
    .await?;
    Ok(axum::Json(Value::Array(rows)).into_response())
}

/// One container as `GET /containers/json` shows it.
fn list_row(
    store: &ContainerStore,
    s: &State,
    size: bool,
    image_labels: std::collections::BTreeMap<String, String>,
    spec: &Value,
) -> Value {
    let created = crate::timefmt::parse_rfc3339(&s.created)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let ports: Vec<Value> = crate::container::network::active_ports(s)
        .iter()
        .map(|p| {
            json!({
                "IP": p.host_ip.to_string(),
                "PrivatePort": p.container_port,
                "PublicPort": p.host_port,
                "Type": p.proto.name(),
            })
        })
        .collect();
    let settings = crate::container::network::inspect_settings(s);
    let mut row = json!({
        "Id": s.id,
        "Names": [format!("/{}", s.name)],
        "Image": s.image,
        "ImageID": s.image_id,
        "Command": s.command.join(" "),
        "Created": created,
        "Ports": ports,
        "Labels": crate::container::inspect::labels_over(image_labels, s),
        "State": s.status_word(),
        "Status": s.status_line(),
        "HostConfig": { "NetworkMode": crate::container::network::network_name(s) },
        "NetworkSettings": { "Networks": settings["Networks"] },
        "Mounts": crate::container::inspect::mounts(store, s, spec),
    });
    if size {
        let rw = crate::fsutil::disk_usage(&store.dir(&s.id).upper());
        let image = ImageStore::new(store.root())
            .resolve(&s.image_id)
            .map_or(0, |i| i.size());
        row["SizeRw"] = json!(rw);
        row["SizeRootFs"] = json!(rw + image);
    }
    row
}

/// `GET /containers/{id}/json`: what `capsa inspect` prints.
async fn inspect(Axum(engine): Axum<Shared>, Path(name): Path<String>) -> ApiResult<Response> {
    let value = blocking(move || {
        let (store, id) = find(&engine, &name)?;
        Ok(api::inspect(&store, &id)?)
    })
    .await?;
    Ok(axum::Json(value).into_response())
}

/// `POST /containers/{id}/start`: 204, or 304 when it already runs; by an engine
/// worker, since a stopped container gets a new monitor.
async fn start(Axum(engine): Axum<Shared>, Path(name): Path<String>) -> ApiResult<Response> {
    let job = super::workers::Job::Start { container: name };
    let (status, value) = blocking(move || engine.run(job)).await?;
    Ok(answer(status, value))
}

/// `POST /containers/{id}/stop?t=&signal=`: 204, or 304 when it is not running.
async fn stop(
    Axum(engine): Axum<Shared>,
    Path(name): Path<String>,
    axum::extract::Query(query): Query,
) -> ApiResult<Response> {
    let (signal, timeout) = (signal(&query)?, grace(&query)?);
    blocking(move || {
        let (store, id) = find(&engine, &name)?;
        if store.observe(&id)?.status != Status::Running {
            return Ok(not_modified());
        }
        api::stop(&store, &id, signal, timeout)?;
        Ok(no_content())
    })
    .await
}

/// `POST /containers/{id}/restart?t=&signal=`: stop (when running), then start, by an
/// engine worker.
async fn restart(
    Axum(engine): Axum<Shared>,
    Path(name): Path<String>,
    axum::extract::Query(query): Query,
) -> ApiResult<Response> {
    let job = super::workers::Job::Restart {
        container: name,
        signal: signal(&query)?,
        grace_secs: grace(&query)?.map(|d| d.as_secs()),
    };
    let (status, value) = blocking(move || engine.run(job)).await?;
    Ok(answer(status, value))
}

/// `POST /containers/{id}/kill?signal=` (SIGKILL by default): 409 when it is not running;
/// a SIGKILL is answered once the container has exited, as dockerd answers it.
async fn kill(
    Axum(engine): Axum<Shared>,
    Path(name): Path<String>,
    axum::extract::Query(query): Query,
) -> ApiResult<Response> {
    let signal = signal(&query)?.unwrap_or(libc::SIGKILL);
    blocking(move || {
        let (store, id) = find(&engine, &name)?;
        let state = store.observe(&id)?;
        if state.status != Status::Running {
            return Err(not_running(&id));
        }
        match api::kill(&store, &id, signal) {
            Err(ContainerError::WrongState { .. }) => return Err(not_running(&id)),
            other => other?,
        }
        if signal == libc::SIGKILL {
            // As dockerd: a SIGKILL is answered once the exit is recorded (10 s at most).
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            crate::container::wait::wait_until(&store, &id, |s| {
                s.status != Status::Running || std::time::Instant::now() > deadline
            })?;
        }
        Ok(no_content())
    })
    .await
}

/// `POST /containers/{id}/pause`.
async fn pause(Axum(engine): Axum<Shared>, Path(name): Path<String>) -> ApiResult<Response> {
    set_paused(engine, name, true).await
}

/// `POST /containers/{id}/unpause`.
async fn unpause(Axum(engine): Axum<Shared>, Path(name): Path<String>) -> ApiResult<Response> {
    set_paused(engine, name, false).await
}

async fn set_paused(engine: Shared, name: String, paused: bool) -> ApiResult<Response> {
    blocking(move || {
        let (store, id) = find(&engine, &name)?;
        let state = store.observe(&id)?;
        if state.status != Status::Running {
            return Err(not_running(&id));
        }
        match (paused, state.paused) {
            (true, true) => Err(ApiError::conflict(format!(
                "Container {id} is already paused"
            ))),
            (false, false) => Err(ApiError::conflict(format!("Container {id} is not paused"))),
            _ => {
                api::pause(&store, &id, paused)?;
                Ok(no_content())
            }
        }
    })
    .await
}

/// `POST /containers/{id}/rename?name=`.
async fn rename(
    Axum(engine): Axum<Shared>,
    Path(name): Path<String>,
    axum::extract::Query(query): Query,
) -> ApiResult<Response> {
    let new_name = query
        .get("name")
        .map(|n| n.trim_start_matches('/').to_string())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("Neither old nor new names may be empty"))?;
    if !crate::container::id::valid_name(&new_name) {
        return Err(ApiError::bad_request(format!(
            "Invalid container name ({new_name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    blocking(move || {
        let (store, id) = find(&engine, &name)?;
        crate::container::rename::rename(&store, &id, &new_name)?;
        Ok(no_content())
    })
    .await
}

/// What `wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Condition {
    NotRunning,
    NextExit,
    Removed,
}

/// `POST /containers/{id}/wait?condition=`: status 200 and the headers at once (the
/// docker CLI sends it before `start` and waits for them), then `{"StatusCode","Error"}`
/// once the condition holds. The waiting thread gives up when the client goes away.
async fn wait(
    Axum(engine): Axum<Shared>,
    Path(name): Path<String>,
    axum::extract::Query(query): Query,
) -> ApiResult<Response> {
    let condition = match query.get("condition").map(String::as_str) {
        None | Some("") | Some("not-running") => Condition::NotRunning,
        Some("next-exit") => Condition::NextExit,
        Some("removed") => Condition::Removed,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid condition: \"{other}\""
            )))
        }
    };
    let slot = engine.streams.take()?;
    let (store, id, first) = blocking(move || {
        let (store, id) = find(&engine, &name)?;
        let first = store.observe(&id)?;
        Ok((store, id, first))
    })
    .await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(1);
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64 - 1);
    super::streams::spawn(slot, move || {
        let mut last = first.clone();
        let done = crate::container::wait::wait_until(&store, &id, |s| {
            last = s.clone();
            tx.is_closed()
                || match condition {
                    Condition::NotRunning => s.status != Status::Running,
                    Condition::NextExit => {
                        matches!(s.status, Status::Exited | Status::Dead)
                            && s.finished_at != first.finished_at
                    }
                    Condition::Removed => false,
                }
        });
        let body = match done {
            Ok(state) => {
                let state = state.unwrap_or_else(|| {
                    // Removed (`--rm`) before this waiter saw it exit: its exit code is in
                    // its `die` event.
                    let journal = crate::events::Journal::of(store.root());
                    if let Some(code) = journal.last_exit(&id, since) {
                        last.exit_code = Some(code);
                    }
                    last
                });
                let error = state.error.clone().filter(|e| !e.is_empty());
                json!({
                    "StatusCode": state.exit_code.unwrap_or(0),
                    "Error": error.map(|m| json!({ "Message": m })),
                })
            }
            Err(e) => json!({ "StatusCode": -1, "Error": { "Message": e.to_string() } }),
        };
        let _ = tx.blocking_send(Ok(format!("{body}\n").into()));
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut response = Response::new(Body::from_stream(stream));
    response
        .headers_mut()
        .insert("Content-Type", HeaderValue::from_static("application/json"));
    Ok(response)
}

/// `DELETE /containers/{id}?force=&v=`.
async fn remove(
    Axum(engine): Axum<Shared>,
    Path(name): Path<String>,
    axum::extract::Query(query): Query,
) -> ApiResult<Response> {
    let (force, volumes) = (flag(&query, "force"), flag(&query, "v"));
    if flag(&query, "link") {
        return Err(ApiError::bad_request(
            "links are not supported: capsa containers have no legacy links to remove",
        ));
    }
    blocking(move || {
        let (store, id) = find(&engine, &name)?;
        if !force && store.observe(&id)?.status == Status::Running {
            return Err(ApiError::conflict(format!(
                "You cannot remove a running container {id}. Stop the container before attempting removal or force remove"
            )));
        }
        if volumes {
            api::remove_with_volumes(&store, &id, force)?;
        } else {
            api::remove(&store, &id, force)?;
        }
        Ok(no_content())
    })
    .await
}

/// `POST /containers/prune?filters=` (`until`, `label`, `label!`).
async fn prune(
    Axum(engine): Axum<Shared>,
    axum::extract::Query(query): Query,
) -> ApiResult<Response> {
    let filters = filters(&query)?;
    let mut until = None;
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for (key, values) in filters {
        for v in values {
            match key.as_str() {
                "until" => until = Some(until_time(&v)?),
                "label" => with.push(v),
                "label!" => without.push(v),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "invalid filter '{other}' (supported: until, label, label!)"
                    )))
                }
            }
        }
    }
    let (removed, bytes) = blocking(move || {
        let store = ContainerStore::new(&engine.root);
        let has = |labels: &std::collections::BTreeMap<String, String>, l: &str| match l
            .split_once('=')
        {
            Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
            None => labels.contains_key(l),
        };
        let wanted = |s: &State| {
            let labels = crate::container::inspect::labels(&store, s);
            let created = crate::timefmt::parse_rfc3339(&s.created);
            until.is_none_or(|u| created.is_some_and(|c| c < u))
                && with.iter().all(|l| has(&labels, l))
                && !without.iter().any(|l| has(&labels, l))
        };
        Ok(api::prune(&store, &wanted)?)
    })
    .await?;
    Ok(axum::Json(json!({
        "ContainersDeleted": if removed.is_empty() { Value::Null } else { json!(removed) },
        "SpaceReclaimed": bytes,
    }))
    .into_response())
}

/// An `until` filter: a Unix time (`1700000000`, `1700000000.5`), an RFC 3339 time, or a
/// duration before now (`10m`, `24h`).
fn until_time(value: &str) -> ApiResult<std::time::SystemTime> {
    let now = std::time::SystemTime::now();
    if let Ok(secs) = value.parse::<f64>() {
        if secs >= 0.0 {
            return Ok(std::time::UNIX_EPOCH + Duration::from_secs_f64(secs));
        }
    }
    if let Some(t) = crate::timefmt::parse_rfc3339(value) {
        return Ok(t);
    }
    let (number, unit) = value.split_at(value.len().saturating_sub(1));
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => 0,
    };
    match number.parse::<u64>() {
        Ok(n) if scale > 0 => Ok(now - Duration::from_secs(n * scale)),
        _ => Err(ApiError::bad_request(format!(
            "invalid filter 'until={value}': expected a Unix time, an RFC 3339 time or a duration (10m, 24h)"
        ))),
    }
}

/// `GET /containers/{id}/top?ps_args=`: `{"Titles","Processes"}`.
async fn top(
    Axum(engine): Axum<Shared>,
    Path(name): Path<String>,
    axum::extract::Query(query): Query,
) -> ApiResult<Response> {
    let ps_args: Vec<String> = query
        .get("ps_args")
        .map(|a| a.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    let lines = blocking(move || {
        let (store, id) = find(&engine, &name)?;
        if store.observe(&id)?.status != Status::Running {
            return Err(not_running(&id));
        }
        Ok(api::top(&store, &id, &ps_args)?)
    })
    .await?;
    Ok(axum::Json(top_table(&lines)).into_response())
}

/// ps output as Docker's `Titles` and `Processes`: the header's words, and each line cut
/// into as many columns, the last taking the rest (the command and its arguments).
fn top_table(lines: &[String]) -> Value {
    let Some((header, rows)) = lines.split_first() else {
        return json!({ "Titles": [], "Processes": [] });
    };
    let titles: Vec<&str> = header.split_whitespace().collect();
    let processes: Vec<Vec<String>> = rows
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut cells = Vec::with_capacity(titles.len());
            let mut rest = line.trim_start();
            while cells.len() + 1 < titles.len() {
                match rest.split_once(char::is_whitespace) {
                    Some((cell, more)) => {
                        cells.push(cell.to_string());
                        rest = more.trim_start();
                    }
                    None => break,
                }
            }
            cells.push(rest.trim_end().to_string());
            cells
        })
        .collect();
    json!({ "Titles": titles, "Processes": processes })
}

/// `GET /containers/{id}/changes`: `[{"Path","Kind"}]`, Kind 0 changed, 1 added,
/// 2 deleted.
async fn changes(Axum(engine): Axum<Shared>, Path(name): Path<String>) -> ApiResult<Response> {
    let changes = blocking(move || {
        let (store, id) = find(&engine, &name)?;
        Ok(crate::container::diff::diff(&store, &id)?)
    })
    .await?;
    let list: Vec<Value> = changes
        .iter()
        .map(|c| {
            let kind = match c.kind.letter() {
                'A' => 1,
                'D' => 2,
                _ => 0,
            };
            json!({ "Path": c.path.display().to_string(), "Kind": kind })
        })
        .collect();
    Ok(axum::Json(if list.is_empty() {
        Value::Null
    } else {
        json!(list)
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_output_becomes_titles_and_processes() {
        let lines = vec![
            "PID   USER     TIME  COMMAND".to_string(),
            "    1 root      0:00 sleep 300".to_string(),
        ];
        let t = top_table(&lines);
        assert_eq!(t["Titles"], json!(["PID", "USER", "TIME", "COMMAND"]));
        assert_eq!(t["Processes"], json!([["1", "root", "0:00", "sleep 300"]]));
    }

    #[test]
    fn until_takes_unix_times_and_durations() {
        assert_eq!(
            until_time("10").unwrap(),
            std::time::UNIX_EPOCH + Duration::from_secs(10)
        );
        assert!(until_time("10m").unwrap() < std::time::SystemTime::now());
        assert!(until_time("soon").is_err());
    }
}
