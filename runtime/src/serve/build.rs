//! `POST /build`: what `docker build` sends without BuildKit (`DOCKER_BUILDKIT=0`, or a
//! CLI without buildx): the context as a tar body, the flags as query parameters; the
//! answer streams JSON lines (`{"stream"}` for the steps' text, `{"aux":{"ID"}}` for the
//! image, `{"error","errorDetail"}` for a failure).
//!
//! The build runs in a `capsa build -` process of its own, fed the body on its stdin:
//! a build forks containers and is their monitor (signals forwarded, children waited
//! for), which the server's many threads and open sockets must not be (see `workers`);
//! a fresh process is the same code the CLI runs, with nothing of the server's. Build
//! arguments and labels go on that stdin too, a JSON line ahead of the context, never on
//! its command line, which any local user reads.

use super::bodies::{body_reader, ndjson_line, write_stream, ChannelWriter};
use super::http::{blocking, flag, ApiError, ApiResult, Query};
use super::Shared;
use crate::build::StdinArgs;
use axum::extract::{RawQuery, Request, State};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::process::{Command, Stdio};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/build", post(build))
        .route("/build/prune", post(prune))
}

/// `POST /build/prune`: the build cache forgotten, its unnamed step images without a
/// container removed (`all` and filters change nothing: there is one kind of cache).
async fn prune(State(engine): State<Shared>) -> ApiResult<Response> {
    let (removed, freed) = blocking(move || {
        let store = crate::image::ImageStore::new(&engine.root);
        let containers = crate::container::ContainerStore::new(&engine.root);
        let in_use = crate::api::image_uses(&containers)
            .into_iter()
            .map(|u| u.image)
            .collect();
        crate::build::cache::Cache::new(&engine.root)
            .prune(&store, &in_use)
            .map_err(super::images::image_error)
    })
    .await?;
    let body = json!({ "CachesDeleted": removed, "SpaceReclaimed": freed });
    Ok(axum::response::IntoResponse::into_response(axum::Json(
        body,
    )))
}

/// Query parameters Docker's legacy builder takes that capsa's build does not: refused
/// when set to anything but their default, rather than ignored.
const UNSUPPORTED: [&str; 8] = [
    "memory",
    "memswap",
    "cpushares",
    "cpuquota",
    "cpuperiod",
    "cpusetcpus",
    "cpusetmems",
    "squash",
];

/// `POST /build`.
async fn build(
    State(engine): State<Shared>,
    query: Query,
    RawQuery(raw): RawQuery,
    request: Request,
) -> ApiResult<Response> {
    let (args, passed) = cli_args(&query, raw.as_deref(), engine.cgroup_parent.as_deref())?;
    let slot = engine.streams.take()?;
    let root = engine.root.dir().to_path_buf();
    // The build arguments and labels go first on the child's stdin, then the context.
    let mut first = serde_json::to_vec(&passed).unwrap_or_default();
    first.push(b'\n');
    let reader = std::io::Cursor::new(first).chain(body_reader(request.into_body()));
    let body = write_stream(slot, move |out| run(&root, &args, reader, out));
    let mut response = Response::new(body);
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// The query as `capsa build` flags, and the build arguments and labels, which go to the
/// child on its stdin (`--args-on-stdin`): its command line is anyone's to read.
fn cli_args(
    query: &Query,
    raw: Option<&str>,
    default_cgroup_parent: Option<&str>,
) -> ApiResult<(Vec<String>, StdinArgs)> {
    // A repeated parameter's first value counts, as Go's `FormValue` reads it in dockerd:
    // docker-py sends an outside Dockerfile's name and then its text under `dockerfile`.
    let given = |key: &str| {
        super::bodies::repeated(raw, key)
            .into_iter()
            .next()
            .filter(|v| !v.is_empty())
    };
    if let Some(remote) = given("remote") {
        return Err(ApiError::bad_request(format!(
            "remote={remote}: capsa builds only from the request body's context (it fetches no URLs)"
        )));
    }
    for key in UNSUPPORTED {
        if given(key).is_some_and(|v| !matches!(v.as_str(), "0" | "false")) {
            return Err(ApiError::bad_request(format!(
                "{key}: not supported by capsa's build"
            )));
        }
    }
    let mut args = Vec::new();
    if flag(query, "q") {
        args.push("-q".into());
    }
    if let Some(size) = given("shmsize").filter(|v| v != "0") {
        args.extend(["--shm-size".into(), size]);
    }
    // Docker's clients send the hosts as repeated values; a comma-separated list is read
    // too (neither a host name nor an address holds a comma).
    for hosts in super::bodies::repeated(raw, "extrahosts") {
        for host in hosts.split(',').filter(|h| !h.is_empty()) {
            args.extend(["--add-host".into(), host.to_string()]);
        }
    }
    if let Some(text) = given("cachefrom") {
        let images: Vec<String> = serde_json::from_str(&text)
            .map_err(|e| ApiError::bad_request(format!("cachefrom: {e}")))?;
        for image in images {
            args.extend(["--cache-from".into(), image]);
        }
    }
    for t in super::bodies::repeated(raw, "t") {
        args.extend(["-t".to_string(), t]);
    }
    if let Some(f) = given("dockerfile") {
        args.extend(["-f".into(), f]);
    }
    if let Some(t) = given("target") {
        args.extend(["--target".into(), t]);
    }
    if flag(query, "nocache") {
        args.push("--no-cache".into());
    }
    if flag(query, "pull") {
        args.push("--pull".into());
    }
    match given("isolation").as_deref() {
        None | Some("default") => {}
        Some(i) => args.extend(["--isolation".into(), i.to_string()]),
    }
    match given("networkmode").as_deref() {
        None | Some("default") => {}
        Some(mode) => args.extend(["--network".into(), mode.to_string()]),
    }
    match given("cgroupparent").as_deref().or(default_cgroup_parent) {
        Some(p) if !p.is_empty() => args.extend(["--cgroup-parent".into(), p.to_string()]),
        _ => {}
    }
    let passed = StdinArgs {
        build_args: string_map(given("buildargs"), "buildargs")?,
        labels: string_map(given("labels"), "labels")?,
    };
    args.push("--args-on-stdin".into());
    Ok((args, passed))
}

/// The JSON object of query parameter `key`, its null values left out (a null build
/// argument takes the ARG's default).
fn string_map(text: Option<String>, key: &str) -> ApiResult<BTreeMap<String, String>> {
    let Some(text) = text else {
        return Ok(BTreeMap::new());
    };
    let map: BTreeMap<String, Option<String>> =
        serde_json::from_str(&text).map_err(|e| ApiError::bad_request(format!("{key}: {e}")))?;
    Ok(map.into_iter().filter_map(|(k, v)| Some((k, v?))).collect())
}

/// Runs the build process and relays its JSON lines as the answer (`--json-lines`: the
/// process writes them as dockerd sends them, its failure included).
fn run(
    root: &std::path::Path,
    args: &[String],
    mut context: impl Read + Send + 'static,
    out: &mut ChannelWriter,
) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .arg("--root")
        .arg(root)
        .arg("build")
        .args(args)
        .arg("--json-lines")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut stdin = child.stdin.take().expect("piped");
    let feeder = std::thread::spawn(move || {
        // The process may stop reading early (a Dockerfile that does not parse).
        let _ = std::io::copy(&mut context, &mut stdin);
    });
    let mut stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("piped"));
    let mut line = Vec::new();
    let mut client_gone = false;
    let mut error_sent = false;
    loop {
        line.clear();
        match lines.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let Ok(message) = serde_json::from_slice::<serde_json::Value>(&line) else {
            continue;
        };
        error_sent |= message.get("error").is_some();
        if !client_gone {
            // A client that went away: the build still finishes (as dockerd's does).
            client_gone = out.write_all(&ndjson_line(&message)).is_err();
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let _ = feeder.join();
    let stderr = errors.join().unwrap_or_default();
    if status.success() || error_sent {
        return Ok(());
    }
    // The process failed before it could say why in a line (its arguments refused).
    let message = stderr
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_prefix("capsa: ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("; ");
    let last = json!({ "errorDetail": { "message": message }, "error": message });
    out.write_all(&ndjson_line(&last))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A build argument (often a token) never reaches the child's command line, which any
    /// local user reads in `ps`; it goes on the child's stdin.
    #[test]
    fn build_arguments_and_labels_stay_off_the_command_line() {
        let raw = "buildargs=%7B%22TOKEN%22%3A%22s3cr3t%22%2C%22UNSET%22%3Anull%7D\
                   &labels=%7B%22owner%22%3A%22hidden-label%22%7D&t=app";
        let query: Query = axum::extract::Query(Default::default());
        let (args, passed) = cli_args(&query, Some(raw), None).unwrap();
        let line = args.join(" ");
        assert!(
            !line.contains("s3cr3t") && !line.contains("hidden-label"),
            "{line}"
        );
        assert!(
            line.contains("-t app") && line.contains("--args-on-stdin"),
            "{line}"
        );
        assert_eq!(
            passed.build_args,
            [("TOKEN".into(), "s3cr3t".into())].into()
        );
        assert_eq!(
            passed.labels,
            [("owner".into(), "hidden-label".into())].into()
        );
    }
}
