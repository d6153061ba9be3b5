//! `POST /commit?container=&repo=&tag=&comment=&author=&pause=&changes=`: what `docker
//! commit` sends. The body, when there is one, is a container config whose fields the new
//! image takes before the `changes`; the answer is the new image's `{"Id"}` (201).

use super::http::{blocking, flag_or, ApiError, ApiResult, DockerJson, Query};
use super::Shared;
use crate::container::commit::CommitRequest;
use crate::container::ContainerStore;
use crate::image::commit::CommitOptions;
use crate::image::Reference;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Map, Value};

pub fn routes() -> Router<Shared> {
    Router::new().route("/commit", post(commit))
}

/// `POST /commit`.
async fn commit(
    State(engine): State<Shared>,
    query: Query,
    RawQuery(raw): RawQuery,
    DockerJson(config): DockerJson<Option<Map<String, Value>>>,
) -> ApiResult<Response> {
    // `changes` is repeated, one Dockerfile instruction each.
    let changes = super::bodies::repeated(raw.as_deref(), "changes");
    let container = query
        .get("container")
        .filter(|c| !c.is_empty())
        .cloned()
        .ok_or_else(|| ApiError::bad_request("Bad parameter: container cannot be empty"))?;
    let given = |key: &str| query.get(key).filter(|v| !v.is_empty()).cloned();
    let name = match (given("repo"), given("tag")) {
        (Some(r), Some(t)) => Some(format!("{r}:{t}")),
        (Some(r), None) => Some(r),
        (None, Some(_)) => {
            return Err(ApiError::bad_request("tag given without repo"));
        }
        (None, None) => None,
    };
    let name = name
        .as_deref()
        .map(Reference::parse)
        .transpose()
        .map_err(super::errors::from_image)?;
    let request = CommitRequest {
        pause: flag_or(&query, "pause", true),
        image: CommitOptions {
            changes,
            config,
            comment: given("comment"),
            author: given("author"),
            name,
            ..CommitOptions::default()
        },
    };
    let id = blocking(move || {
        let store = ContainerStore::new(&engine.root);
        let id = store.resolve(&container)?;
        Ok(crate::api::commit(&store, &id, request)?)
    })
    .await?;
    Ok((StatusCode::CREATED, axum::Json(json!({ "Id": id }))).into_response())
}
