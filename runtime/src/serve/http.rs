//! What every endpoint shares: the API version in the path (`/v1.43/containers/json`
//! and `/containers/json` are one route), errors as Docker writes them
//! (`{"message": "..."}` with its status code), JSON bodies read within a bound and
//! refused with the field named, and Docker's query conventions (`1`/`true` flags,
//! JSON `filters`).

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap};

/// The newest API version served; `/_ping` and `/version` announce it, and clients
/// (docker CLI 28.2 asks 1.50; docker-py, compose older ones) negotiate down from it.
pub const MAX_API_VERSION: &str = "1.50";
/// The oldest API version accepted (dockerd's own floor).
pub const MIN_API_VERSION: &str = "1.24";

/// Bodies larger than this are refused with 413 (JSON configs are a few KiB; image
/// archives and build contexts are streamed, not read through this bound).
pub const JSON_BODY_LIMIT: usize = 4 << 20;

/// The API version a request names in its path (or the newest, when it names none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u32, pub u32);

impl ApiVersion {
    /// Parses `1.43`.
    pub fn parse(s: &str) -> Option<ApiVersion> {
        let (major, minor) = s.split_once('.')?;
        Some(ApiVersion(major.parse().ok()?, minor.parse().ok()?))
    }

    /// The newest served.
    pub fn max() -> ApiVersion {
        ApiVersion::parse(MAX_API_VERSION).expect("valid constant")
    }

    fn min() -> ApiVersion {
        ApiVersion::parse(MIN_API_VERSION).expect("valid constant")
    }

    /// At least `major.minor`.
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        self >= ApiVersion(major, minor)
    }
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// An API error: Docker's status code and its `{"message"}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: the thing named does not exist.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// 409: the request conflicts with the state (a name in use, a running container).
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    /// 500: the engine failed.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "message": self.message });
        let mut response = (self.status, axum::Json(body)).into_response();
        response
            .headers_mut()
            .insert("Content-Type", HeaderValue::from_static("application/json"));
        response
    }
}

/// What a handler returns.
pub type ApiResult<T> = Result<T, ApiError>;

/// The answer to a path no route serves, in Docker's words.
pub async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!("page not found: {}", request.uri().path()))
}

/// Wraps the router so that `/v1.43/...` reaches the route for `/...`, with the version
/// recorded as an [`ApiVersion`] extension; versions outside the served range are
/// refused as dockerd refuses them. Every response carries `Api-Version` and `Server`.
pub fn versioned(
    router: axum::Router,
) -> impl tower::Service<
    Request,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone
       + Send
       + 'static {
    use tower::ServiceExt;
    router.map_request(take_version).map_response(stamp)
}

/// Takes the version prefix off the path.
fn take_version(mut request: Request) -> Request {
    let path = request.uri().path();
    let (version, rest) = match split_version(path) {
        Some((v, rest)) => (Some(v), rest.to_string()),
        None => (None, path.to_string()),
    };
    let version = match version {
        None => Ok(ApiVersion::max()),
        Some(v) => match ApiVersion::parse(v) {
            Some(v) if v > ApiVersion::max() => Err(format!(
                "client version {v} is too new. Maximum supported API version is {MAX_API_VERSION}"
            )),
            Some(v) if v < ApiVersion::min() => Err(format!(
                "client version {v} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
            )),
            Some(v) => Ok(v),
            None => Err(format!("malformed API version in {path}")),
        },
    };
    let query = request
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    if let Ok(uri) = format!("{rest}{query}").parse() {
        *request.uri_mut() = uri;
    }
    match version {
        Ok(v) => request.extensions_mut().insert(v),
        Err(message) => request
            .extensions_mut()
            .insert(VersionRefused(message))
            .map(|_| ApiVersion::max()),
    };
    request
}

/// A request whose version is outside the served range; [`refuse_bad_version`] answers it.
#[derive(Clone, Debug)]
pub struct VersionRefused(pub String);

/// Middleware: answers 400 to a request with an unserved API version.
pub async fn refuse_bad_version(request: Request, next: axum::middleware::Next) -> Response {
    if let Some(VersionRefused(message)) = request.extensions().get::<VersionRefused>() {
        return ApiError::bad_request(message.clone()).into_response();
    }
    next.run(request).await
}

/// `/v1.43/containers/json` -> ("1.43", "/containers/json").
fn split_version(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v")?;
    let end = rest.find('/').unwrap_or(rest.len());
    let (version, tail) = rest.split_at(end);
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    Some((version, if tail.is_empty() { "/" } else { tail }))
}

fn stamp(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert("Api-Version", HeaderValue::from_static(MAX_API_VERSION));
    headers.insert(
        "Server",
        HeaderValue::from_static(concat!("capsa/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    headers.insert("Docker-Experimental", HeaderValue::from_static("false"));
    headers.insert("Ostype", HeaderValue::from_static("linux"));
    response
}

/// A JSON body, read up to [`JSON_BODY_LIMIT`] (413 past it) and parsed with the failing
/// field named (400). An empty body reads as `T::default()`, as dockerd allows for most
/// endpoints. Unknown fields are ignored, as Docker ignores them.
pub struct DockerJson<T>(pub T);

impl<T, S> FromRequest<S> for DockerJson<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let content_type = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let bytes = read_body(request.into_body(), JSON_BODY_LIMIT).await?;
        if !bytes.is_empty() {
            check_json_type(content_type.as_deref())?;
        }
        parse_json(&bytes).map(DockerJson)
    }
}

/// A body is JSON only when it says so, as dockerd checks (CheckForJSON): a form or a
/// `text/plain` body, which a web page can send without asking first (no CORS preflight),
/// never creates a container through a server listening on TCP.
fn check_json_type(content_type: Option<&str>) -> ApiResult<()> {
    let given = content_type.unwrap_or("");
    let media = given.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "unsupported Content-Type header ({given}): must be 'application/json'"
    )))
}

/// Reads a whole body up to `limit` bytes.
pub async fn read_body(body: Body, limit: usize) -> ApiResult<Vec<u8>> {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {limit} bytes"),
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "reading the request body: {e}"
        ))),
    }
}

/// Parses a JSON body, naming the field that failed.
pub fn parse_json<T: DeserializeOwned + Default>(bytes: &[u8]) -> ApiResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." || path.is_empty() {
            ApiError::bad_request(format!("invalid JSON: {}", e.inner()))
        } else {
            ApiError::bad_request(format!("invalid JSON in field {path}: {}", e.inner()))
        }
    })
}

/// A request's query, as Docker's clients write it.
pub type Query = axum::extract::Query<HashMap<String, String>>;

/// A boolean query parameter: `1`, `true`, `True` are true; absent is false.
pub fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    query
        .get(name)
        .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "True" | "TRUE" | "yes"))
}

/// A boolean query parameter with a default when absent.
pub fn flag_or(query: &HashMap<String, String>, name: &str, default: bool) -> bool {
    if query.contains_key(name) {
        flag(query, name)
    } else {
        default
    }
}

/// An integer query parameter (400 naming it when it does not parse).
pub fn number<T: std::str::FromStr>(
    query: &HashMap<String, String>,
    name: &str,
) -> ApiResult<Option<T>> {
    match query.get(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid value for {name}: {v:?}"))),
    }
}

/// The `filters` parameter: `{"status":["running"]}`, or the older
/// `{"status":{"running":true}}`; each key maps to the values asked.
pub fn filters(query: &HashMap<String, String>) -> ApiResult<BTreeMap<String, Vec<String>>> {
    let Some(raw) = query.get("filters").filter(|f| !f.is_empty()) else {
        return Ok(BTreeMap::new());
    };
    let value: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| ApiError::bad_request(format!("invalid filter: {e}")))?;
    let map = value
        .as_object()
        .ok_or_else(|| ApiError::bad_request("invalid filter: not a JSON object"))?;
    let mut out = BTreeMap::new();
    for (key, values) in map {
        let list: Vec<String> = match values {
            serde_json::Value::Array(items) => items
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            serde_json::Value::Object(set) => set
                .iter()
                .filter(|(_, on)| on.as_bool().unwrap_or(false))
                .map(|(k, _)| k.clone())
                .collect(),
            serde_json::Value::String(s) => vec![s.clone()],
            _ => return Err(ApiError::bad_request(format!("invalid filter {key:?}"))),
        };
        out.insert(key.clone(), list);
    }
    Ok(out)
}

/// Runs an engine call on a blocking thread (the engine is synchronous: it forks,
/// waits and reads files).
pub async fn blocking<T, F>(f: F) -> ApiResult<T>
where
    F: FnOnce() -> ApiResult<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(format!("engine call failed: {e}"))))
}

/// A JSON response with status 200.
pub fn json(value: serde_json::Value) -> Response {
    axum::Json(value).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_prefixes_come_off() {
        assert_eq!(
            split_version("/v1.43/containers/json"),
            Some(("1.43", "/containers/json"))
        );
        assert_eq!(split_version("/v1.41/_ping"), Some(("1.41", "/_ping")));
        assert_eq!(split_version("/volumes"), None);
        assert_eq!(split_version("/version"), None);
    }

    #[test]
    fn both_filter_forms_read_alike() {
        let mut q = HashMap::new();
        q.insert(
            "filters".into(),
            r#"{"status":["running","exited"]}"#.into(),
        );
        assert_eq!(filters(&q).unwrap()["status"], vec!["running", "exited"]);
        q.insert("filters".into(), r#"{"label":{"a=b":true}}"#.into());
        assert_eq!(filters(&q).unwrap()["label"], vec!["a=b"]);
        q.insert("filters".into(), "nope".into());
        assert_eq!(filters(&q).unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_wrong_type_is_refused_with_its_field() {
        #[derive(serde::Deserialize, Default)]
        #[allow(dead_code)]
        struct Body {
            #[serde(rename = "Memory")]
            memory: i64,
        }
        let e = parse_json::<Body>(br#"{"Memory":"lots"}"#).err().unwrap();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("Memory"), "{}", e.message);
        assert!(parse_json::<Body>(b"").is_ok());
    }
}
