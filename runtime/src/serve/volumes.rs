//! `/volumes...`: list, create, inspect, remove, prune, over [`crate::volume`] (Docker's
//! `local` driver: directories of the store).

use super::http::{blocking, filters, flag, json, ApiError, ApiResult, DockerJson, Query};
use super::Shared;
use crate::container::volumes as container_volumes;
use crate::container::ContainerStore;
use crate::volume::{Users, Volume, VolumeError, VolumeStore};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/volumes", get(list))
        .route("/volumes/create", post(create))
        .route("/volumes/prune", post(prune))
        .route("/volumes/{name}", get(inspect).delete(remove))
}

/// Docker's answer for each volume error.
pub fn volume_error(e: VolumeError) -> ApiError {
    match &e {
        VolumeError::NotFound(name) => ApiError::not_found(format!("get {name}: no such volume")),
        VolumeError::InvalidName { .. } => ApiError::bad_request(e.to_string()),
        VolumeError::InUse { .. } => ApiError::conflict(e.to_string()),
        _ => ApiError::internal(e.to_string()),
    }
}

/// One filter of `/volumes` and `/volumes/prune`.
#[derive(Debug, Clone)]
enum Filter {
    Dangling(bool),
    Name(String),
    Driver(String),
    Label(String, Option<String>),
    LabelNot(String, Option<String>),
}

fn parse_filters(query: &HashMap<String, String>, allowed: &[&str]) -> ApiResult<Vec<Filter>> {
    let mut out = Vec::new();
    for (key, values) in filters(query)? {
        if !allowed.contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!("invalid filter '{key}'")));
        }
        for v in values {
            let label = |v: &str| match v.split_once('=') {
                Some((k, val)) => (k.to_string(), Some(val.to_string())),
                None => (v.to_string(), None),
            };
            out.push(match key.as_str() {
                "dangling" => match v.as_str() {
                    "true" | "1" => Filter::Dangling(true),
                    "false" | "0" => Filter::Dangling(false),
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "invalid filter 'dangling={v}'"
                        )))
                    }
                },
                "name" => Filter::Name(v),
                "driver" => Filter::Driver(v),
                "label" => {
                    let (k, val) = label(&v);
                    Filter::Label(k, val)
                }
                _ => {
                    let (k, val) = label(&v);
                    Filter::LabelNot(k, val)
                }
            });
        }
    }
    Ok(out)
}

impl Filter {
    fn keeps(&self, v: &Volume, used: bool) -> bool {
        let has = |k: &String, want: &Option<String>| {
            v.record
                .labels
                .get(k)
                .is_some_and(|have| want.as_ref().is_none_or(|w| w == have))
        };
        match self {
            Filter::Dangling(d) => *d != used,
            Filter::Name(n) => v.record.name.contains(n.as_str()),
            Filter::Driver(d) => d == "local",
            Filter::Label(k, want) => has(k, want),
            Filter::LabelNot(k, want) => !has(k, want),
        }
    }
}

fn in_use(users: &Users, name: &str) -> bool {
    users.get(name).is_some_and(|u| !u.is_empty())
}

/// `GET /volumes`: `{"Volumes": [...], "Warnings": []}`.
async fn list(State(engine): State<Shared>, query: Query) -> ApiResult<Response> {
    let filters = parse_filters(&query, &["dangling", "name", "driver", "label"])?;
    blocking(move || {
        let users = container_volumes::users(&ContainerStore::new(&engine.root));
        let volumes: Vec<Value> = VolumeStore::new(&engine.root)
            .list()
            .into_iter()
            .filter(|v| {
                let used = in_use(&users, &v.record.name);
                filters.iter().all(|f| f.keeps(v, used))
            })
            .map(|v| v.docker_json())
            .collect();
        Ok(json(json!({ "Volumes": volumes, "Warnings": [] })))
    })
    .await
}

/// `POST /volumes/create`'s body.
#[derive(serde::Deserialize, Default)]
struct CreateBody {
    #[serde(rename = "Name", default)]
    name: Option<String>,
    #[serde(rename = "Driver", default)]
    driver: Option<String>,
    #[serde(rename = "DriverOpts", default)]
    driver_opts: Option<BTreeMap<String, String>>,
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}

/// `POST /volumes/create`: 201 with the volume (an existing one is returned as it is).
async fn create(
    State(engine): State<Shared>,
    DockerJson(body): DockerJson<CreateBody>,
) -> ApiResult<Response> {
    if let Some(d) = body
        .driver
        .as_deref()
        .filter(|d| !d.is_empty() && *d != "local")
    {
        return Err(ApiError::not_found(format!(
            "error looking up volume plugin {d}: plugin \"{d}\" not found"
        )));
    }
    if let Some((k, _)) = body.driver_opts.as_ref().and_then(|o| o.iter().next()) {
        return Err(ApiError::bad_request(format!(
            "DriverOpts {k:?}: capsa's local volumes take no options"
        )));
    }
    blocking(move || {
        let store = VolumeStore::new(&engine.root);
        let locked = store.lock().map_err(volume_error)?;
        let name = body.name.filter(|n| !n.is_empty());
        let (volume, _) = locked
            .create(name.as_deref(), &body.labels.unwrap_or_default())
            .map_err(volume_error)?;
        Ok((StatusCode::CREATED, axum::Json(volume.docker_json())).into_response())
    })
    .await
}

/// `GET /volumes/{name}`.
async fn inspect(State(engine): State<Shared>, Path(name): Path<String>) -> ApiResult<Response> {
    blocking(move || {
        let v = VolumeStore::new(&engine.root)
            .get(&name)
            .map_err(volume_error)?;
        Ok(json(v.docker_json()))
    })
    .await
}

/// `DELETE /volumes/{name}?force`: 204; 409 while a container uses it; with `force`, a
/// missing volume is no error.
async fn remove(
    State(engine): State<Shared>,
    Path(name): Path<String>,
    query: Query,
) -> ApiResult<Response> {
    let force = flag(&query, "force");
    blocking(move || {
        let store = VolumeStore::new(&engine.root);
        let locked = store.lock().map_err(volume_error)?;
        let users = container_volumes::users(&ContainerStore::new(&engine.root));
        match locked.remove(&name, &users) {
            Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
            Err(VolumeError::NotFound(_)) if force => Ok(StatusCode::NO_CONTENT.into_response()),
            Err(e) => Err(volume_error(e)),
        }
    })
    .await
}

/// `POST /volumes/prune?filters=`: unused anonymous volumes (every unused one with
/// `all=true`, as API 1.42+ asks), narrowed by label filters.
async fn prune(State(engine): State<Shared>, query: Query) -> ApiResult<Response> {
    let mut raw = filters(&query)?;
    let all = raw
        .remove("all")
        .is_some_and(|v| v.iter().any(|x| matches!(x.as_str(), "true" | "1")));
    let mut rest = HashMap::new();
    rest.insert(
        "filters".to_string(),
        serde_json::to_string(&raw).unwrap_or_default(),
    );
    let filters = parse_filters(&rest, &["label", "label!"])?;
    blocking(move || {
        let store = VolumeStore::new(&engine.root);
        let locked = store.lock().map_err(volume_error)?;
        let mut users = container_volumes::users(&ContainerStore::new(&engine.root));
        for v in store.list() {
            if !filters.iter().all(|f| f.keeps(&v, false)) {
                // Not selected: counted as in use, so prune leaves it.
                users.entry(v.record.name).or_default().push(String::new());
            }
        }
        let removed = locked.prune(all, &users);
        let total: u64 = removed.iter().map(|(_, size)| size).sum();
        let names: Vec<&String> = removed.iter().map(|(n, _)| n).collect();
        Ok(json(
            json!({ "VolumesDeleted": names, "SpaceReclaimed": total }),
        ))
    })
    .await
}
