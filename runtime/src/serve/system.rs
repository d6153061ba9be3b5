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
        .route("/system/df", get(df))
}

/// `GET /system/df`: images (with their unique and shared sizes and how many containers
/// use each), containers (the bytes of their folders), volumes (size and users), no
/// build cache. `LayersSize` is what the store's layers and blobs occupy on disk, each
/// once.
async fn df(State(engine): State<Shared>) -> ApiResult<Response> {
    blocking(move || {
        let root = &engine.root;
        let store = crate::image::ImageStore::new(root);
        let usage = crate::image::inspect::usage(&store)
            .map_err(|e| super::http::ApiError::internal(e.to_string()))?;
        let containers = crate::container::ContainerStore::new(root).list();
        let stored = store.images().unwrap_or_default();
        let images: Vec<serde_json::Value> = usage
            .images
            .iter()
            .map(|u| {
                let record = stored.iter().find(|s| s.id == u.image.id);
                let created = u
                    .image
                    .config
                    .created()
                    .as_deref()
                    .and_then(crate::timefmt::parse_rfc3339)
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                let users = containers
                    .iter()
                    .filter(|c| c.image_id == u.image.id)
                    .count();
                serde_json::json!({
                    "Id": u.image.id,
                    "ParentId": "",
                    "RepoTags": u.image.names.iter().map(|n| crate::image::store::familiar_name(n)).collect::<Vec<_>>(),
                    "RepoDigests": record.map(|r| r.repo_digests.iter().map(|d| crate::image::reference::familiar(d)).collect::<Vec<_>>()).unwrap_or_default(),
                    "Created": created,
                    "Size": u.size,
                    "SharedSize": u.shared,
                    "Labels": {},
                    "Containers": users,
                })
            })
            .collect();
        let container_rows: Vec<serde_json::Value> = containers
            .iter()
            .map(|c| {
                let size = crate::fsutil::disk_usage(&root.containers_dir().join(&c.id));
                let created = crate::timefmt::parse_rfc3339(&c.created)
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                let mounts: Vec<serde_json::Value> = c
                    .volumes
                    .iter()
                    .map(|v| serde_json::json!({"Type": "volume", "Name": v, "Driver": "local"}))
                    .collect();
                serde_json::json!({
                    "Id": c.id,
                    "Names": [format!("/{}", c.name)],
                    "Image": c.image,
                    "ImageID": c.image_id,
                    "Command": c.command.join(" "),
                    "Created": created,
                    "State": c.status_word(),
                    "Status": c.status_line(),
                    "SizeRw": size,
                    "SizeRootFs": size,
                    "Labels": {},
                    "Mounts": mounts,
                    "Ports": [],
                    "HostConfig": {"NetworkMode": c.network.name()},
                    "NetworkSettings": {"Networks": {}},
                })
            })
            .collect();
        let users = crate::container::volumes::users(&crate::container::ContainerStore::new(root));
        let volumes: Vec<serde_json::Value> = crate::volume::VolumeStore::new(root)
            .list()
            .iter()
            .map(|v| {
                let mut value = v.docker_json();
                let refs = users.get(&v.record.name).map_or(0, Vec::len);
                value["UsageData"] = serde_json::json!({"Size": v.size(), "RefCount": refs});
                value
            })
            .collect();
        Ok(json(serde_json::json!({
            "LayersSize": usage.layers_on_disk + usage.blobs_on_disk,
            "Images": images,
            "Containers": container_rows,
            "Volumes": volumes,
            "BuildCache": [],
        })))
    })
    .await
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

/// How many descriptors the server holds open.
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
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
            "DriverStatus": [["Backing Filesystem", "overlay"]],
            "Labels": [],
            "Warnings": [],
        });
        // What dockerd always sends, with zero values where capsa has nothing of the kind.
        let always = serde_json::json!({
            "Debug": false,
            "ExperimentalBuild": false,
            "LiveRestoreEnabled": false,
            "OomKillDisable": false,
            "KernelMemoryTCP": false,
            "CPUShares": true,
            "CPUSet": true,
            "NFd": open_descriptors(),
            "NGoroutines": 0,
            "NEventsListener": 0,
            "SystemTime": crate::timefmt::rfc3339(std::time::SystemTime::now()),
            "OSVersion": "",
            "HttpProxy": "",
            "HttpsProxy": "",
            "NoProxy": "",
            "GenericResources": null,
            "InitBinary": "",
            "ContainerdCommit": { "ID": "" },
            "RuncCommit": { "ID": "" },
            "InitCommit": { "ID": "" },
            "CDISpecDirs": [],
            "Containerd": null,
            "Swarm": {
                "NodeID": "",
                "NodeAddr": "",
                "LocalNodeState": "inactive",
                "ControlAvailable": false,
                "Error": "",
                "RemoteManagers": null,
            },
        });
        for extra in [extra, always] {
            if let (Some(v), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
                for (k, x) in extra {
                    v.insert(k.clone(), x.clone());
                }
            }
        }
        Ok(json(value))
    })
    .await
}
