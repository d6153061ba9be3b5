//! `/images/...`: list, inspect, history, tag, remove, pull (`/images/create`) and push
//! (`/images/{name}/push`) with Docker's NDJSON progress, import (`fromSrc=-`), save
//! (`/images/{name}/get`, `/images/get`), load and prune, over [`crate::image`].
//!
//! Image names hold slashes (`127.0.0.1:5000/team/app:v1`), so the routes under
//! `/images/{name}/...` are one catch-all that splits the verb off the end, as dockerd's
//! `{name:.*}` routes do.

use super::bodies::{body_reader, ndjson_line, write_stream};
use super::http::{blocking, filters, flag, json, ApiError, ApiResult, ApiVersion, Query};
use super::Shared;
use crate::image::pull::{LayerEvent, PullProgress};
use crate::image::push::{PushEvent, PushProgress};
use crate::image::registry::auth::Credentials;
use crate::image::{archive, inspect, remove, Image, ImageError, ImageStore, Reference};
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/images/json", get(list))
        .route("/images/create", post(create))
        .route("/images/load", post(load))
        .route("/images/prune", post(prune))
        .route("/images/get", get(save_many))
        .route(
            "/images/{*rest}",
            get(by_name_get).post(by_name_post).delete(delete),
        )
}

/// Docker's answer for each image error.
pub fn image_error(e: ImageError) -> ApiError {
    match &e {
        ImageError::NotFound(name) => ApiError::not_found(format!("No such image: {name}")),
        ImageError::InvalidReference { .. } | ImageError::BadChange(_) => {
            ApiError::bad_request(e.to_string())
        }
        ImageError::Conflict(_) => ApiError::conflict(e.to_string()),
        ImageError::Archive { .. } => ApiError::bad_request(e.to_string()),
        ImageError::PullFailed { source, .. } if not_there(source) => {
            ApiError::not_found(e.to_string())
        }
        _ => ApiError::internal(e.to_string()),
    }
}

/// A pull that failed because the registry has no such image or refuses to say.
fn not_there(e: &crate::image::pull::PullError) -> bool {
    matches!(
        e,
        crate::image::pull::PullError::Registry(r) if matches!(r.status(), Some(401 | 403 | 404))
    )
}

fn store(engine: &Shared) -> ImageStore {
    ImageStore::new(&engine.root)
}

/// `created` of an image config as Unix seconds (0 when it has none).
fn created_secs(image: &Image) -> i64 {
    image
        .config
        .created()
        .as_deref()
        .and_then(crate::timefmt::parse_rfc3339)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

fn labels(image: &Image) -> BTreeMap<String, String> {
    image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.labels().clone())
        .map(|l| l.into_iter().collect())
        .unwrap_or_default()
}

/// The longest `reference` filter taken: longer than any name, short enough that matching
/// it against every name of the store costs nothing to speak of.
const MAX_REFERENCE_FILTER: usize = 512;

/// `*` and `?` of Go's `path.Match`, within one path segment, in linear time.
///
/// Neither `*` nor `?` matches `/`, so the `/`s of the text are exactly those of the
/// pattern: the two are matched segment by segment.
fn glob(pattern: &str, text: &str) -> bool {
    let mut patterns = pattern.as_bytes().split(|&b| b == b'/');
    let mut texts = text.as_bytes().split(|&b| b == b'/');
    loop {
        match (patterns.next(), texts.next()) {
            (None, None) => return true,
            (Some(p), Some(t)) if segment_matches(p, t) => {}
            _ => return false,
        }
    }
}

/// `*` and `?` against one segment (no `/`): the two-pointer matcher. On a mismatch only
/// the last `*` seen takes one more byte; an earlier one never needs to, since whatever
/// it could take the last one can take as well. Every step moves the text forward, or
/// restarts the pattern after the last star one byte further on: at most as many steps
/// as the two lengths multiplied, where backtracking into every star is exponential.
fn segment_matches(p: &[u8], t: &[u8]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    // The index after the last `*` seen, and where in the text its match now ends.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi + 1, ti));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((after, taken)) => {
                    pi = after;
                    ti = taken + 1;
                    star = Some((after, taken + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Whether one of `names` (familiar `repo:tag`) matches a `reference` filter.
fn reference_matches(pattern: &str, names: &[String]) -> bool {
    names.iter().any(|n| {
        let repo =
            n.rsplit_once(':').map_or(
                n.as_str(),
                |(r, t)| {
                    if t.contains('/') {
                        n.as_str()
                    } else {
                        r
                    }
                },
            );
        glob(pattern, n) || glob(pattern, repo)
    })
}

fn label_matches(want: &str, labels: &BTreeMap<String, String>) -> bool {
    match want.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
        None => labels.contains_key(want),
    }
}

/// `GET /images/json`: Docker's image summaries.
async fn list(
    State(engine): State<Shared>,
    Extension(version): Extension<ApiVersion>,
    query: Query,
) -> ApiResult<Response> {
    let filters = filters(&query)?;
    for key in filters.keys() {
        if !matches!(
            key.as_str(),
            "dangling" | "label" | "reference" | "before" | "since"
        ) {
            return Err(ApiError::bad_request(format!("invalid filter '{key}'")));
        }
    }
    let too_long = filters
        .get("reference")
        .into_iter()
        .flatten()
        .any(|p| p.len() > MAX_REFERENCE_FILTER);
    if too_long {
        return Err(ApiError::bad_request(format!(
            "invalid filter 'reference': a pattern longer than {MAX_REFERENCE_FILTER} bytes"
        )));
    }
    blocking(move || {
        let store = store(&engine);
        let time_of = |name: &str| -> ApiResult<i64> {
            store
                .resolve(name)
                .map(|i| created_secs(&i))
                .map_err(image_error)
        };
        let before = filters
            .get("before")
            .and_then(|v| v.first())
            .map(|n| time_of(n))
            .transpose()?;
        let since = filters
            .get("since")
            .and_then(|v| v.first())
            .map(|n| time_of(n))
            .transpose()?;
        let mut out = Vec::new();
        let stored_images = store.images().map_err(image_error)?;
        let hidden = match flag(&query, "all") {
            true => Default::default(),
            false => crate::image::store::intermediate(&stored_images),
        };
        for stored in stored_images
            .into_iter()
            .filter(|s| !hidden.contains(&s.id))
        {
            let Ok(image) = store.resolve(&stored.id) else {
                continue;
            };
            let tags: Vec<String> = stored
                .names
                .iter()
                .map(|n| crate::image::store::familiar_name(n))
                .collect();
            let labels = labels(&image);
            let created = created_secs(&image);
            if let Some(d) = filters.get("dangling").and_then(|v| v.first()) {
                let dangling = matches!(d.as_str(), "true" | "1");
                if dangling != tags.is_empty() {
                    continue;
                }
            }
            if filters
                .get("label")
                .is_some_and(|want| !want.iter().all(|w| label_matches(w, &labels)))
            {
                continue;
            }
            // With a reference filter, an image shows only the names that match it.
            let tags: Vec<String> = match filters.get("reference") {
                None => tags,
                Some(want) => tags
                    .into_iter()
                    .filter(|t| {
                        want.iter()
                            .any(|w| reference_matches(w, std::slice::from_ref(t)))
                    })
                    .collect(),
            };
            if filters.contains_key("reference") && tags.is_empty() {
                continue;
            }
            if before.is_some_and(|b| created >= b) || since.is_some_and(|s| created <= s) {
                continue;
            }
            let size = image.size();
            let mut summary = json!({
                "Id": image.id,
                "ParentId": stored.parent.clone().unwrap_or_default(),
                "RepoTags": tags,
                "RepoDigests": stored
                    .repo_digests
                    .iter()
                    .map(|d| crate::image::reference::familiar(d))
                    .collect::<Vec<_>>(),
                "Created": created,
                "Size": size,
                "SharedSize": -1,
                "Labels": labels,
                "Containers": -1,
            });
            if !version.at_least(1, 44) {
                summary["VirtualSize"] = size.into();
            }
            out.push((created, summary));
        }
        out.sort_by_key(|(created, _)| std::cmp::Reverse(*created));
        Ok(json(Value::Array(
            out.into_iter().map(|(_, v)| v).collect(),
        )))
    })
    .await
}

/// The catch-all's name and verb: `team/app:v1/json` -> ("team/app:v1", "json").
fn split_verb(rest: &str) -> (&str, Option<&str>) {
    match rest.rsplit_once('/') {
        Some((name, verb)) if matches!(verb, "json" | "history" | "get" | "tag" | "push") => {
            (name, Some(verb))
        }
        _ => (rest, None),
    }
}

async fn by_name_get(
    State(engine): State<Shared>,
    Path(rest): Path<String>,
) -> ApiResult<Response> {
    match split_verb(&rest) {
        (name, Some("json")) => inspect_one(engine, name.to_string()).await,
        (name, Some("history")) => history(engine, name.to_string()).await,
        (name, Some("get")) => save(engine, vec![name.to_string()]).await,
        _ => Err(ApiError::not_found(format!(
            "page not found: /images/{rest}"
        ))),
    }
}

async fn by_name_post(
    State(engine): State<Shared>,
    Path(rest): Path<String>,
    query: Query,
    headers: HeaderMap,
) -> ApiResult<Response> {
    match split_verb(&rest) {
        (name, Some("tag")) => tag(engine, name.to_string(), query).await,
        (name, Some("push")) => push(engine, name.to_string(), query, &headers).await,
        _ => Err(ApiError::not_found(format!(
            "page not found: /images/{rest}"
        ))),
    }
}

/// `GET /images/{name}/json`: what `capsa image inspect` prints.
async fn inspect_one(engine: Shared, name: String) -> ApiResult<Response> {
    blocking(move || {
        let store = store(&engine);
        let image = store.resolve(&name).map_err(image_error)?;
        inspect::inspect(&store, &image)
            .map(json)
            .map_err(image_error)
    })
    .await
}

/// `GET /images/{name}/history`: newest first; the image's own row carries its ID and
/// tags, the rows below it `<missing>`.
async fn history(engine: Shared, name: String) -> ApiResult<Response> {
    blocking(move || {
        let image = store(&engine).resolve(&name).map_err(image_error)?;
        let tags: Vec<String> = image
            .names
            .iter()
            .map(|n| crate::image::store::familiar_name(n))
            .collect();
        let rows: Vec<Value> = inspect::history(&image)
            .into_iter()
            .enumerate()
            .map(|(i, row)| {
                let created = row
                    .created
                    .as_deref()
                    .and_then(crate::timefmt::parse_rfc3339)
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                json!({
                    "Id": if i == 0 { image.id.clone() } else { "<missing>".into() },
                    "Created": created,
                    "CreatedBy": row.created_by,
                    "Tags": if i == 0 { json!(tags) } else { Value::Null },
                    "Size": row.size,
                    "Comment": row.comment,
                })
            })
            .collect();
        Ok(json(Value::Array(rows)))
    })
    .await
}

/// `POST /images/{name}/tag?repo=&tag=`: 201.
async fn tag(engine: Shared, name: String, query: Query) -> ApiResult<Response> {
    let repo = query.get("repo").cloned().unwrap_or_default();
    if repo.is_empty() {
        return Err(ApiError::bad_request(
            "repository name (repo) must not be empty",
        ));
    }
    let target = match query.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{repo}:{t}"),
        None => repo,
    };
    blocking(move || {
        remove::tag(&store(&engine), &name, &target).map_err(image_error)?;
        Ok(StatusCode::CREATED.into_response())
    })
    .await
}

/// `DELETE /images/{name}?force&noprune`: what was untagged and deleted.
async fn delete(
    State(engine): State<Shared>,
    Path(name): Path<String>,
    query: Query,
) -> ApiResult<Response> {
    let force = flag(&query, "force");
    blocking(move || {
        let containers = crate::container::ContainerStore::new(&engine.root);
        let uses = crate::api::image_uses(&containers);
        let done =
            remove::remove_image(&store(&engine), &uses, &name, force).map_err(image_error)?;
        Ok(json(Value::Array(done.iter().map(removal).collect())))
    })
    .await
}

fn removal(r: &remove::Removal) -> Value {
    match r {
        remove::Removal::Untagged(n) => json!({ "Untagged": n }),
        remove::Removal::Deleted(id) => json!({ "Deleted": id }),
    }
}

/// `POST /images/prune?filters={"dangling":["false"]}`: unnamed images, or every unused
/// one with `dangling=false`.
async fn prune(State(engine): State<Shared>, query: Query) -> ApiResult<Response> {
    let filters = filters(&query)?;
    let mut all = false;
    for (key, values) in &filters {
        match key.as_str() {
            "dangling" => all = values.iter().any(|v| matches!(v.as_str(), "false" | "0")),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "invalid filter '{key}' (capsa prunes by dangling only)"
                )))
            }
        }
    }
    blocking(move || {
        let containers = crate::container::ContainerStore::new(&engine.root);
        let in_use = crate::api::image_uses(&containers)
            .into_iter()
            .map(|u| u.image)
            .collect();
        let (done, freed) = remove::prune(&store(&engine), &in_use, all).map_err(image_error)?;
        Ok(json(json!({
            "ImagesDeleted": done.iter().map(removal).collect::<Vec<_>>(),
            "SpaceReclaimed": freed,
        })))
    })
    .await
}

/// Credentials from `X-Registry-Auth` (base64url JSON `{username, password}`); none
/// when absent or empty.
fn registry_auth(headers: &HeaderMap) -> ApiResult<Option<Credentials>> {
    use base64::Engine as _;
    let Some(raw) = headers.get("X-Registry-Auth") else {
        return Ok(None);
    };
    let raw = raw.as_bytes();
    if raw.is_empty() {
        return Ok(None);
    }
    let engines = [
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
        base64::engine::general_purpose::STANDARD,
    ];
    let bytes = engines
        .iter()
        .find_map(|e| e.decode(raw).ok())
        .ok_or_else(|| ApiError::bad_request("X-Registry-Auth: not base64"))?;
    #[derive(serde::Deserialize, Default)]
    struct Auth {
        #[serde(default)]
        username: String,
        #[serde(default)]
        password: String,
    }
    let auth: Auth = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("X-Registry-Auth: {e}")))?;
    Ok((!auth.username.is_empty()).then_some(Credentials {
        username: auth.username,
        password: auth.password,
    }))
}

/// What a pull or push thread sends the response.
enum PullMessage {
    Line(Value),
    Failed(ApiError),
}

/// Pull and push progress as Docker's JSON lines.
struct Progress {
    tx: tokio::sync::mpsc::Sender<PullMessage>,
}

impl Progress {
    fn send(&self, value: Value) {
        // A client that went away no longer reads: the pull still finishes.
        let _ = self.tx.blocking_send(PullMessage::Line(value));
    }
}

impl PullProgress for Progress {
    fn layer(&self, id: &str, event: LayerEvent) {
        let line = |status: &str| json!({"status": status, "progressDetail": {}, "id": id});
        match event {
            LayerEvent::AlreadyExists => self.send(line("Already exists")),
            LayerEvent::Waiting => self.send(line("Pulling fs layer")),
            LayerEvent::Downloading { done, total } => self.send(json!({
                "status": "Downloading",
                "progressDetail": {"current": done, "total": total},
                "progress": format!("{}/{}", crate::timefmt::human_size(done), crate::timefmt::human_size(total)),
                "id": id,
            })),
            LayerEvent::Verifying => self.send(line("Verifying Checksum")),
            LayerEvent::Complete => {
                self.send(line("Download complete"));
                self.send(line("Pull complete"));
            }
        }
    }
}

/// `POST /images/create?fromImage=&tag=&platform=` (pull) or `?fromSrc=-` (import the
/// body). Progress streams as JSON lines; an error before the first line is an HTTP
/// error (404 for an image the registry does not have), after it an `error` line.
async fn create(
    State(engine): State<Shared>,
    query: Query,
    request: Request,
) -> ApiResult<Response> {
    if let Some(src) = query.get("fromSrc") {
        return import(engine, src.clone(), query.0.clone(), request).await;
    }
    let from = query
        .get("fromImage")
        .filter(|f| !f.is_empty())
        .ok_or_else(|| ApiError::bad_request("fromImage or fromSrc is required"))?;
    let wanted = match query.get("tag").filter(|t| !t.is_empty()) {
        Some(t) if t.starts_with("sha256:") => format!("{from}@{t}"),
        Some(t) => format!("{from}:{t}"),
        None => from.clone(),
    };
    let reference = Reference::parse(&wanted).map_err(image_error)?;
    let platform = match query.get("platform").filter(|p| !p.is_empty()) {
        Some(p) => crate::image::manifest::Platform::parse(p)
            .map_err(|e| ApiError::bad_request(format!("invalid platform {p:?}: {e}")))?,
        None => crate::image::manifest::Platform::host(),
    };
    let credentials = registry_auth(request.headers())?;
    let settings = crate::image::registry::settings(&engine.root, Vec::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let shown = reference.familiar();
    let pulling = json!({
        "status": format!("Pulling from {}", reference.path),
        "id": reference.tag.clone().or_else(|| reference.digest.clone()).unwrap_or_default(),
    });
    let slot = engine.streams.take()?;
    super::streams::spawn(slot, move || {
        let progress = Progress { tx: tx.clone() };
        let store = ImageStore::new(&engine.root);
        match crate::image::pull::pull_as(
            &store,
            &reference,
            &platform,
            &settings,
            credentials,
            &progress,
        ) {
            Ok(pulled) => {
                let digest = pulled
                    .repo_digest
                    .rsplit_once('@')
                    .map_or("", |(_, d)| d)
                    .to_string();
                progress.send(json!({ "status": format!("Digest: {digest}") }));
                let status = if pulled.downloaded {
                    "Downloaded newer image for"
                } else {
                    "Image is up to date for"
                };
                progress.send(json!({ "status": format!("Status: {status} {shown}") }));
            }
            Err(e) => {
                let _ = tx.blocking_send(PullMessage::Failed(image_error(e)));
            }
        }
    });
    let first = match rx.recv().await {
        Some(PullMessage::Failed(e)) => return Err(e),
        Some(PullMessage::Line(v)) => v,
        None => return Err(ApiError::internal("the pull ended without a word")),
    };
    let stream = async_stream(vec![pulling, first], rx);
    Ok(ndjson_response(Body::from_stream(stream)))
}

impl PushProgress for Progress {
    fn layer(&self, id: &str, event: PushEvent) {
        let line = |status: &str| json!({"status": status, "progressDetail": {}, "id": id});
        match event {
            PushEvent::Preparing => self.send(line("Preparing")),
            PushEvent::Waiting => self.send(line("Waiting")),
            PushEvent::Pushing { done, total } => self.send(json!({
                "status": "Pushing",
                "progressDetail": {"current": done, "total": total},
                "progress": format!("{}/{}", crate::timefmt::human_size(done), crate::timefmt::human_size(total)),
                "id": id,
            })),
            PushEvent::Pushed => self.send(line("Pushed")),
            PushEvent::AlreadyExists => self.send(line("Layer already exists")),
            PushEvent::MountedFrom(from) => self.send(line(&format!("Mounted from {from}"))),
        }
    }
}

/// `POST /images/{name}/push?tag=`: that tag, or every tag of the repository when neither
/// the name nor `tag` gives one (as dockerd). An image not in the store is a 404; once
/// the stream began, a failure is its last line (`error`), as dockerd sends registry
/// refusals.
async fn push(
    engine: Shared,
    name: String,
    query: Query,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let tag = query.get("tag").filter(|t| !t.is_empty()).cloned();
    let last = name.rsplit('/').next().unwrap_or(&name);
    let all_tags = tag.is_none() && !last.contains(':');
    let wanted = match &tag {
        Some(t) => format!("{name}:{t}"),
        None => name,
    };
    let credentials = registry_auth(headers)?;
    let settings = crate::image::registry::settings(&engine.root, Vec::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let found = engine.clone();
    let targets = blocking(move || {
        crate::image::push::targets(&store(&found), &wanted, all_tags).map_err(image_error)
    })
    .await?;
    let head = json!({
        "status": format!(
            "The push refers to repository [{}]",
            targets.first().map(Reference::familiar_repository).unwrap_or_default()
        ),
    });
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let slot = engine.streams.take()?;
    super::streams::spawn(slot, move || {
        let progress = Progress { tx: tx.clone() };
        let store = ImageStore::new(&engine.root);
        for target in &targets {
            let result =
                crate::image::push::push(&store, target, &settings, credentials.clone(), &progress);
            match result {
                Ok(pushed) => {
                    let tag = target.tag.clone().unwrap_or_default();
                    progress.send(json!({
                        "status": format!("{tag}: digest: {} size: {}", pushed.digest, pushed.size),
                    }));
                    progress.send(json!({
                        "progressDetail": {},
                        "aux": {"Tag": tag, "Digest": pushed.digest.as_str(), "Size": pushed.size},
                    }));
                }
                Err(e) => {
                    let _ = tx.blocking_send(PullMessage::Failed(image_error(e)));
                    return;
                }
            }
        }
    });
    Ok(ndjson_response(Body::from_stream(async_stream(
        vec![head],
        rx,
    ))))
}

/// The first lines, then what the pull or push thread sends, as NDJSON chunks.
fn async_stream(
    first: Vec<Value>,
    rx: tokio::sync::mpsc::Receiver<PullMessage>,
) -> impl tokio_stream::Stream<Item = Result<axum::body::Bytes, std::convert::Infallible>> {
    use tokio_stream::StreamExt;
    let head = tokio_stream::iter(first.into_iter().map(|v| Ok(ndjson_line(&v))));
    let rest = tokio_stream::wrappers::ReceiverStream::new(rx).map(|m| {
        Ok(match m {
            PullMessage::Line(v) => ndjson_line(&v),
            PullMessage::Failed(e) => ndjson_line(&json!({
                "error": e.message,
                "errorDetail": {"message": e.message},
            })),
        })
    });
    head.chain(rest)
}

fn ndjson_response(body: Body) -> Response {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
}

/// `POST /images/create?fromSrc=-&repo=&tag=&changes=`: the body is a root file system
/// tarball, read as it arrives.
async fn import(
    engine: Shared,
    src: String,
    query: std::collections::HashMap<String, String>,
    request: Request,
) -> ApiResult<Response> {
    if src != "-" {
        return Err(ApiError::bad_request(
            "fromSrc: only - (the request body) is supported; capsa fetches no URLs",
        ));
    }
    let name = match (
        query.get("repo").filter(|r| !r.is_empty()),
        query.get("tag"),
    ) {
        (Some(r), Some(t)) if !t.is_empty() => Some(format!("{r}:{t}")),
        (Some(r), _) => Some(r.clone()),
        _ => None,
    };
    let name = name
        .as_deref()
        .map(Reference::parse)
        .transpose()
        .map_err(image_error)?;
    // `changes` is repeated, one Dockerfile instruction each.
    let changes = super::bodies::repeated(request.uri().query(), "changes");
    let slot = engine.streams.take()?;
    let reader = body_reader(request.into_body());
    let imported = super::streams::blocking(slot, move || {
        crate::image::import::import(&store(&engine), reader, "-", name.as_ref(), &changes)
            .map_err(image_error)
    })
    .await?;
    let line = ndjson_line(&json!({ "status": imported.id }));
    Ok(ndjson_response(Body::from(line)))
}

/// `GET /images/get?names=a&names=b`.
async fn save_many(State(engine): State<Shared>, request: Request) -> ApiResult<Response> {
    let names = super::bodies::repeated(request.uri().query(), "names");
    if names.is_empty() {
        return Err(ApiError::bad_request(
            "names: at least one image is required",
        ));
    }
    save(engine, names).await
}

/// The images as a docker-archive tarball (also an OCI layout), streamed as it is made.
async fn save(engine: Shared, names: Vec<String>) -> ApiResult<Response> {
    let slot = engine.streams.take()?;
    let engine2 = engine.clone();
    let wanted = names.clone();
    blocking(move || {
        let store = store(&engine2);
        for n in &wanted {
            store.resolve(n).map_err(image_error)?;
        }
        Ok(())
    })
    .await?;
    let body = write_stream(slot, move |out| {
        archive::save(&store(&engine), &names, out).map_err(|e| e.to_string())
    });
    let mut response = Response::new(body);
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/x-tar"),
    );
    Ok(response)
}

/// `POST /images/load?quiet`: the body is an archive, read as it arrives (never held
/// whole); `{"stream":"Loaded image: NAME\n"}` per image.
async fn load(State(engine): State<Shared>, request: Request) -> ApiResult<Response> {
    let slot = engine.streams.take()?;
    let reader = body_reader(request.into_body());
    let loaded = super::streams::blocking(slot, move || {
        archive::load(&store(&engine), std::io::BufReader::new(reader), "-").map_err(image_error)
    })
    .await;
    // As dockerd streams it: one chunk per line, and a failure as the stream's error
    // message (clients read `error` from the stream, docker-py as ImageLoadError).
    let mut lines: Vec<axum::body::Bytes> = Vec::new();
    match loaded {
        Ok(loaded) => {
            for n in &loaded.names {
                lines.push(ndjson_line(
                    &json!({ "stream": format!("Loaded image: {n}\n") }),
                ));
            }
            for id in &loaded.ids {
                lines.push(ndjson_line(
                    &json!({ "stream": format!("Loaded image ID: {id}\n") }),
                ));
            }
        }
        Err(e) if e.status.is_client_error() => lines.push(ndjson_line(
            &json!({ "errorDetail": { "message": e.message }, "error": e.message }),
        )),
        Err(e) => return Err(e),
    }
    let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> =
        lines.into_iter().map(Ok).collect();
    Ok(ndjson_response(Body::from_stream(tokio_stream::iter(
        chunks,
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_come_off_names_with_slashes() {
        assert_eq!(
            split_verb("127.0.0.1:5000/team/app:v1/json"),
            ("127.0.0.1:5000/team/app:v1", Some("json"))
        );
        assert_eq!(split_verb("busybox/tag"), ("busybox", Some("tag")));
        assert_eq!(split_verb("team/app"), ("team/app", None));
    }

    #[test]
    fn reference_filters_match_as_docker_globs() {
        let names = vec!["busybox:latest".to_string(), "127.0.0.1:5000/a/b:v1".into()];
        assert!(reference_matches("busybox", &names));
        assert!(reference_matches("busy*", &names));
        assert!(reference_matches("busybox:latest", &names));
        assert!(!reference_matches("busybox:v2", &names));
        assert!(reference_matches("127.0.0.1:5000/a/*", &names));
        assert!(!reference_matches("*", &["a/b:c".to_string()]));
    }

    #[test]
    fn globs_match_as_go_path_match_does() {
        for (pattern, text, want) in [
            ("", "", true),
            ("*", "", true),
            ("*", "abc", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbbd", false),
            ("a?c", "abc", true),
            ("a?c", "a/c", false),
            ("*c", "ab/c", false),
            ("*/c", "ab/c", true),
            ("a/*/c", "a/b/c", true),
            ("a/*", "a/b/c", false),
            ("*b*b", "abab", true),
            ("*b*b", "abba", false),
            ("**", "x", true),
            ("ab", "abc", false),
            ("abc", "ab", false),
        ] {
            assert_eq!(glob(pattern, text), want, "{pattern:?} against {text:?}");
        }
    }

    /// A pattern that sends a backtracking matcher through every way of splitting the
    /// text among its stars (C(60, 20) of them) is answered at once. The bound is only
    /// there so that a regression fails rather than hangs.
    #[test]
    fn a_pattern_of_many_stars_is_matched_without_backtracking() {
        let pattern = format!("{}b", "*a".repeat(20));
        let text = "a".repeat(60);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(glob(&pattern, &text));
        });
        let answer = rx.recv_timeout(std::time::Duration::from_secs(60));
        assert_eq!(answer, Ok(false), "no answer from the matcher");
    }
}
