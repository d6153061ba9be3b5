//! `/networks...`: list, inspect, create, remove, connect, disconnect, prune, over
//! [`crate::net`] and [`crate::container::network`] (bridge networks only; `bridge`,
//! `host` and `none` are predefined).

use super::http::{blocking, filters, json, ApiError, ApiResult, DockerJson, Query};
use super::Shared;
use crate::container::network::{self as container_net, RemoveNetworkError};
use crate::container::{ContainerError, ContainerStore};
use crate::net::networks::{NetworkStore, BUILT_IN};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/networks", get(list))
        .route("/networks/create", post(create))
        .route("/networks/prune", post(prune))
        .route("/networks/{id}", get(inspect).delete(remove))
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("network {id} not found"))
}

/// A container error as the API reports it (mapped here: 404 for a missing container,
/// 400 for what cannot be done, 409 for a state that forbids it).
fn container_error(e: ContainerError) -> ApiError {
    match &e {
        ContainerError::NotFound(id) => ApiError::not_found(format!("No such container: {id}")),
        ContainerError::InvalidArgument(_) => ApiError::bad_request(e.to_string()),
        ContainerError::WrongState { .. } => ApiError::conflict(e.to_string()),
        _ => ApiError::internal(e.to_string()),
    }
}

/// The network's name for `wanted` (a name, ID or ID prefix), or 404.
fn resolve(engine: &Shared, wanted: &str) -> ApiResult<String> {
    if let Some(n) = BUILT_IN.iter().find(|n| {
        **n == wanted || (wanted.len() >= 3 && container_net::builtin_id(n).starts_with(wanted))
    }) {
        return Ok(n.to_string());
    }
    NetworkStore::new(engine.root.dir())
        .get(wanted)
        .map(|r| r.name)
        .map_err(|_| not_found(wanted))
}

fn describe(engine: &Shared, name: &str) -> ApiResult<Value> {
    let containers = ContainerStore::new(&engine.root);
    container_net::describe(&engine.root, &containers, name)
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn label_matches(want: &str, labels: &serde_json::Map<String, Value>) -> bool {
    match want.split_once('=') {
        Some((k, v)) => labels.get(k).and_then(Value::as_str) == Some(v),
        None => labels.contains_key(want),
    }
}

/// `GET /networks?filters=`: every network's object (name, id, driver, label, type).
async fn list(State(engine): State<Shared>, query: Query) -> ApiResult<Response> {
    let filters = filters(&query)?;
    for key in filters.keys() {
        if !matches!(
            key.as_str(),
            "name" | "id" | "driver" | "label" | "type" | "scope"
        ) {
            return Err(ApiError::bad_request(format!("invalid filter '{key}'")));
        }
    }
    blocking(move || {
        let mut names: Vec<String> = BUILT_IN.iter().map(|n| n.to_string()).collect();
        names.extend(
            NetworkStore::new(engine.root.dir())
                .list()
                .into_iter()
                .map(|r| r.name),
        );
        let mut out = Vec::new();
        for name in names {
            let v = describe(&engine, &name)?;
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            let keep = filters.iter().all(|(key, wants)| {
                wants.iter().any(|w| match key.as_str() {
                    "name" => s("Name").contains(w.as_str()),
                    "id" => s("Id").starts_with(w.as_str()),
                    "driver" => s("Driver") == *w,
                    "scope" => w == "local",
                    "type" => match w.as_str() {
                        "builtin" => BUILT_IN.contains(&s("Name").as_str()),
                        "custom" => !BUILT_IN.contains(&s("Name").as_str()),
                        _ => false,
                    },
                    _ => v["Labels"].as_object().is_some_and(|l| label_matches(w, l)),
                })
            });
            if keep {
                out.push(v);
            }
        }
        Ok(json(Value::Array(out)))
    })
    .await
}

/// `GET /networks/{id}`.
async fn inspect(State(engine): State<Shared>, Path(id): Path<String>) -> ApiResult<Response> {
    blocking(move || {
        let name = resolve(&engine, &id)?;
        describe(&engine, &name).map(json)
    })
    .await
}

#[derive(serde::Deserialize, Default)]
struct IpamConfig {
    #[serde(rename = "Subnet", default)]
    subnet: Option<String>,
    #[serde(rename = "Gateway", default)]
    gateway: Option<String>,
    #[serde(rename = "IPRange", default)]
    ip_range: Option<String>,
    #[serde(rename = "AuxiliaryAddresses", default)]
    aux: Option<BTreeMap<String, String>>,
}

#[derive(serde::Deserialize, Default)]
struct Ipam {
    #[serde(rename = "Driver", default)]
    driver: Option<String>,
    #[serde(rename = "Config", default)]
    config: Option<Vec<IpamConfig>>,
}

/// `POST /networks/create`'s body.
#[derive(serde::Deserialize, Default)]
struct CreateBody {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Driver", default)]
    driver: Option<String>,
    #[serde(rename = "Internal", default)]
    internal: bool,
    #[serde(rename = "EnableIPv6", default)]
    enable_ipv6: Option<bool>,
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "IPAM", default)]
    ipam: Option<Ipam>,
    #[serde(rename = "Options", default)]
    options: Option<BTreeMap<String, String>>,
}

/// `POST /networks/create`: 201 `{"Id", "Warning"}`; 409 when the name is taken.
async fn create(
    State(engine): State<Shared>,
    DockerJson(body): DockerJson<CreateBody>,
) -> ApiResult<Response> {
    if body.name.is_empty() {
        return Err(ApiError::bad_request("Name: a network needs a name"));
    }
    match body.driver.as_deref().unwrap_or("bridge") {
        "bridge" | "" => {}
        other => {
            return Err(ApiError::not_found(format!(
                "could not find plugin {other} in v1 plugin registry: plugin not found (capsa has the bridge driver only)"
            )))
        }
    }
    if body.enable_ipv6 == Some(true) {
        return Err(ApiError::bad_request(
            "EnableIPv6: capsa's networks are IPv4 only",
        ));
    }
    // A driver option capsa does not apply (enable_icc=false among them) would leave the
    // network more open than asked: refused by name, never dropped.
    if let Some(keys) = body.options.as_ref().filter(|o| !o.is_empty()) {
        let keys: Vec<&str> = keys.keys().map(String::as_str).collect();
        return Err(ApiError::bad_request(format!(
            "Options {}: capsa's bridge networks take no driver options",
            keys.join(", ")
        )));
    }
    let ipam = body.ipam.unwrap_or_default();
    if let Some(d) = ipam
        .driver
        .as_deref()
        .filter(|d| !d.is_empty() && *d != "default")
    {
        return Err(ApiError::bad_request(format!(
            "IPAM.Driver {d:?}: only the default IPAM driver exists"
        )));
    }
    let configs = ipam.config.unwrap_or_default();
    if configs.len() > 1 {
        return Err(ApiError::bad_request(
            "IPAM.Config: capsa's networks have one IPv4 subnet",
        ));
    }
    let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let plan = configs
        .into_iter()
        .next()
        .map(|c| crate::net::networks::AddressPlan {
            subnet: nonempty(c.subnet),
            gateway: nonempty(c.gateway),
            ip_range: nonempty(c.ip_range),
            aux_addresses: c.aux.unwrap_or_default(),
        })
        .unwrap_or_default();
    blocking(move || {
        let name = body.name;
        if BUILT_IN.contains(&name.as_str())
            || NetworkStore::new(engine.root.dir())
                .get(&name)
                .is_ok_and(|r| r.name == name)
        {
            return Err(ApiError::conflict(format!(
                "network with name {name} already exists"
            )));
        }
        let record = container_net::create_network(&engine.root, &name, &plan, body.internal)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        if let Some(labels) = body.labels.filter(|l| !l.is_empty()) {
            NetworkStore::new(engine.root.dir())
                .set_labels(&name, labels)
                .map_err(|e| ApiError::internal(e.to_string()))?;
        }
        Ok((
            StatusCode::CREATED,
            axum::Json(json!({ "Id": record.id, "Warning": "" })),
        )
            .into_response())
    })
    .await
}

fn remove_error(e: RemoveNetworkError, id: &str) -> ApiError {
    match e {
        RemoveNetworkError::BuiltIn(_) => ApiError::new(StatusCode::FORBIDDEN, e.to_string()),
        // libnetwork's ActiveEndpointsError is "forbidden", not a conflict.
        RemoveNetworkError::ActiveEndpoints { .. } => {
            ApiError::new(StatusCode::FORBIDDEN, e.to_string())
        }
        RemoveNetworkError::Net(_) => {
            if e.to_string().ends_with("not found") {
                not_found(id)
            } else {
                ApiError::internal(e.to_string())
            }
        }
    }
}

/// `DELETE /networks/{id}`: 204; 403 for a predefined network or while containers are
/// attached.
async fn remove(State(engine): State<Shared>, Path(id): Path<String>) -> ApiResult<Response> {
    blocking(move || {
        let name = resolve(&engine, &id)?;
        let containers = ContainerStore::new(&engine.root);
        container_net::remove_network(&containers, &name).map_err(|e| remove_error(e, &id))?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

#[derive(serde::Deserialize, Default)]
struct IpamSettings {
    #[serde(rename = "IPv4Address", default)]
    ipv4: Option<String>,
    #[serde(rename = "IPv6Address", default)]
    ipv6: Option<String>,
    #[serde(rename = "LinkLocalIPs", default)]
    link_local: Option<Vec<String>>,
}

#[derive(serde::Deserialize, Default)]
struct EndpointConfig {
    #[serde(rename = "Aliases", default)]
    aliases: Option<Vec<String>>,
    #[serde(rename = "MacAddress", default)]
    mac: Option<String>,
    #[serde(rename = "IPAMConfig", default)]
    ipam: Option<IpamSettings>,
    #[serde(rename = "DriverOpts", default)]
    driver_opts: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(serde::Deserialize, Default)]
struct ConnectBody {
    #[serde(rename = "Container", default)]
    container: String,
    #[serde(rename = "EndpointConfig", default)]
    endpoint: Option<EndpointConfig>,
}

/// `POST /networks/{id}/connect`: 200.
async fn connect(
    State(engine): State<Shared>,
    Path(id): Path<String>,
    DockerJson(body): DockerJson<ConnectBody>,
) -> ApiResult<Response> {
    let endpoint = body.endpoint.unwrap_or_default();
    // What a connect would otherwise drop is refused by name.
    let ipam = endpoint.ipam.as_ref();
    if ipam
        .and_then(|i| i.ipv6.as_deref())
        .is_some_and(|a| !a.is_empty())
    {
        return Err(ApiError::bad_request(
            "EndpointConfig.IPAMConfig.IPv6Address: capsa's networks are IPv4 only",
        ));
    }
    if ipam
        .and_then(|i| i.link_local.as_ref())
        .is_some_and(|l| !l.is_empty())
    {
        return Err(ApiError::bad_request(
            "EndpointConfig.IPAMConfig.LinkLocalIPs: capsa takes link-local addresses at create only, not on connect",
        ));
    }
    if endpoint.driver_opts.as_ref().is_some_and(|o| !o.is_empty()) {
        return Err(ApiError::bad_request(
            "EndpointConfig.DriverOpts: capsa takes endpoint driver options at create only, not on connect",
        ));
    }
    let ip = endpoint
        .ipam
        .and_then(|i| i.ipv4)
        .filter(|ip| !ip.is_empty())
        .map(|ip| {
            ip.parse::<std::net::Ipv4Addr>().map_err(|_| {
                ApiError::bad_request(format!(
                    "EndpointConfig.IPAMConfig.IPv4Address {ip:?}: not an IPv4 address"
                ))
            })
        })
        .transpose()?;
    let mac = endpoint
        .mac
        .as_deref()
        .filter(|m| !m.is_empty())
        .map(|m| {
            crate::net::parse_mac(m)
                .map_err(|e| ApiError::bad_request(format!("EndpointConfig.MacAddress {m:?}: {e}")))
        })
        .transpose()?;
    blocking(move || {
        let name = resolve(&engine, &id)?;
        let containers = ContainerStore::new(&engine.root);
        let cid = containers
            .resolve(&body.container)
            .map_err(container_error)?;
        container_net::connect_network(
            &containers,
            &cid,
            &name,
            ip,
            mac,
            endpoint.aliases.unwrap_or_default(),
        )
        .map_err(container_error)?;
        Ok(StatusCode::OK.into_response())
    })
    .await
}

#[derive(serde::Deserialize, Default)]
struct DisconnectBody {
    #[serde(rename = "Container", default)]
    container: String,
    #[serde(rename = "Force", default)]
    #[allow(dead_code)]
    force: bool,
}

/// `POST /networks/{id}/disconnect`: 200.
async fn disconnect(
    State(engine): State<Shared>,
    Path(id): Path<String>,
    DockerJson(body): DockerJson<DisconnectBody>,
) -> ApiResult<Response> {
    blocking(move || {
        let name = resolve(&engine, &id)?;
        let containers = ContainerStore::new(&engine.root);
        let cid = containers
            .resolve(&body.container)
            .map_err(container_error)?;
        container_net::disconnect_network(&containers, &cid, &name).map_err(container_error)?;
        Ok(StatusCode::OK.into_response())
    })
    .await
}

/// `POST /networks/prune`: the unused user-defined networks removed.
async fn prune(State(engine): State<Shared>, query: Query) -> ApiResult<Response> {
    if let Some(key) = filters(&query)?.keys().next() {
        return Err(ApiError::bad_request(format!(
            "invalid filter '{key}' (capsa's network prune takes none)"
        )));
    }
    blocking(move || {
        let gone = container_net::prune_networks(&ContainerStore::new(&engine.root));
        Ok(json(json!({ "NetworksDeleted": gone })))
    })
    .await
}
