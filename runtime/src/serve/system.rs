//! `/_ping`, `/version`, `/info`: what a client asks first, to negotiate the API version
//! and to learn what it talks to.

use super::http::{blocking, json, ApiResult, MAX_API_VERSION, MIN_API_VERSION};
use super::Shared;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(version))
        .route("/info", get(info))
}

/// `OK`, with the headers the client negotiates from (`Api-Version` is stamped on every
/// response by [`super::http::versioned`]).
async fn ping() -> Response {
    let mut response = "OK".into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert("Builder-Version", HeaderValue::from_static("1"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The engine's version, as `docker version` shows under "Server".
pub fn version_value(kernel: &str) -> serde_json::Value {
    let v = env!("CARGO_PKG_VERSION");
    let component = serde_json::json!({
        "Name": "Engine",
        "Version": v,
        "Details": {
            "ApiVersion": MAX_API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "Os": std::env::consts::OS,
            "Arch": "amd64",
            "KernelVersion": kernel,
            "Experimental": "false",
            "Isolations": "container, vm",
        }
    });
    serde_json::json!({
        "Platform": { "Name": "capsa" },
        "Components": [component],
        "Version": v,
        "ApiVersion": MAX_API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": std::env::consts::OS,
        "Arch": "amd64",
        "KernelVersion": kernel,
        "BuildTime": "",
    })
}

async fn version() -> ApiResult<Response> {
    let kernel = blocking(|| Ok(kernel_release())).await?;
    Ok(json(version_value(&kernel)))
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `docker info`'s object: [`crate::host::docker_info`] plus what the API adds (the
/// runtimes a client may name, the default isolation, the host's name).
async fn info(State(engine): State<Shared>) -> ApiResult<Response> {
    blocking(move || {
        let root = &engine.root;
        let host = crate::host::HostInfo::gather(root);
        let containers = crate::container::ContainerStore::new(root).list();
        let images = crate::image::ImageStore::new(root)
            .images()
            .map(|l| l.len())
            .unwrap_or(0);
        let mut value = crate::host::docker_info(&host, root, &containers, images);
        let extra = serde_json::json!({
            "ID": "",
            "Name": nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
            "DefaultRuntime": "runc",
            "Runtimes": { "runc": { "path": "capsa" }, "capsa-vm": { "path": "capsa" } },
            "Isolation": "",
            "SecurityOptions": ["name=seccomp,profile=builtin", "name=no-new-privileges"],
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": { "IndexConfigs": {}, "InsecureRegistryCIDRs": [] },
            "Plugins": { "Volume": ["local"], "Network": ["bridge", "host", "none"], "Log": ["json-file"] },
            "MemoryLimit": true,
            "SwapLimit": true,
            "CpuCfsPeriod": true,
            "CpuCfsQuota": true,
            "PidsLimit": true,
            "IPv4Forwarding": true,
            "LoggingDriver": "json-file",
            "Labels": [],
            "Warnings": [],
        });
        if let (Some(v), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
            for (k, x) in extra {
                v.insert(k.clone(), x.clone());
            }
        }
        Ok(json(value))
    })
    .await
}
