//! `POST /containers/{id}/update`: memory, CPUs (`NanoCpus` or `CpuQuota`/`CpuPeriod`),
//! `PidsLimit` and `RestartPolicy`, applied at once to a running container's cgroup and
//! kept for its next runs ([`crate::container::update`]). The resources capsa never sets
//! (CPU shares, cpusets, block I/O, swap, reservations) are refused when given non-zero.

use super::create::RestartPolicyBody;
use super::http::{blocking, ApiError, ApiResult, DockerJson};
use super::Shared;
use crate::container::restart::RestartPolicy;
use crate::container::update::{update, Update};
use crate::container::ContainerStore;
use axum::extract::{Path, State as Axum};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde::Deserialize;

pub fn routes() -> Router<Shared> {
    Router::new().route("/containers/{id}/update", post(update_container))
}

/// The body: Docker's `Resources` plus `RestartPolicy`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct UpdateBody {
    pub memory: Option<i64>,
    pub memory_swap: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub kernel_memory: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<i64>,
    pub cpu_shares: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub blkio_weight: Option<u16>,
    pub pids_limit: Option<i64>,
    pub restart_policy: Option<RestartPolicyBody>,
}

fn to_update(body: UpdateBody) -> ApiResult<Update> {
    let bad = |m: String| ApiError::bad_request(m);
    for (field, given) in [
        ("CpuShares", body.cpu_shares.unwrap_or(0) != 0),
        (
            "CpusetCpus",
            body.cpuset_cpus.as_deref().is_some_and(|c| !c.is_empty()),
        ),
        (
            "CpusetMems",
            body.cpuset_mems.as_deref().is_some_and(|c| !c.is_empty()),
        ),
        ("BlkioWeight", body.blkio_weight.unwrap_or(0) != 0),
        (
            "MemoryReservation",
            body.memory_reservation.unwrap_or(0) != 0,
        ),
        ("KernelMemory", body.kernel_memory.unwrap_or(0) != 0),
        (
            "MemorySwap",
            !matches!(body.memory_swap.unwrap_or(0), 0 | -1),
        ),
    ] {
        if given {
            return Err(bad(format!("{field} is not supported by capsa")));
        }
    }
    let memory = match body.memory.unwrap_or(0) {
        0 => None,
        m if m < 0 => return Err(bad(format!("Memory {m}: must not be negative"))),
        m => Some(m),
    };
    let cpus = match (
        body.nano_cpus.unwrap_or(0),
        body.cpu_quota.unwrap_or(0),
        body.cpu_period.unwrap_or(0),
    ) {
        (0, 0, _) => None,
        (n, 0, 0) if n > 0 => Some(n as f64 / 1e9),
        (0, q, p) if q > 0 && p >= 0 => Some(q as f64 / if p == 0 { 100_000 } else { p } as f64),
        (n, _, _) if n != 0 => {
            return Err(bad(
                "Conflicting options: Nano CPUs and CPU Period cannot both be set".into(),
            ))
        }
        _ => return Err(bad("CpuQuota, CpuPeriod: must be positive".into())),
    };
    let restart_policy = match body.restart_policy {
        None | Some(RestartPolicyBody { name: None, .. }) => None,
        Some(RestartPolicyBody {
            name: Some(name),
            maximum_retry_count,
        }) => Some(match (name.as_str(), maximum_retry_count.unwrap_or(0)) {
            ("" | "no", 0) => RestartPolicy::No,
            ("on-failure", n) if n > 0 => RestartPolicy::parse(&format!("on-failure:{n}"))?,
            (policy, 0) => RestartPolicy::parse(policy)?,
            (policy, _) => {
                return Err(bad(format!(
                    "invalid restart policy: maximum retry count can only be used with 'on-failure', not '{policy}'"
                )))
            }
        }),
    };
    Ok(Update {
        memory,
        cpus,
        pids_limit: body.pids_limit,
        restart_policy,
    })
}

async fn update_container(
    Axum(engine): Axum<Shared>,
    Path(name): Path<String>,
    DockerJson(body): DockerJson<UpdateBody>,
) -> ApiResult<Response> {
    let change = to_update(body)?;
    blocking(move || {
        let store = ContainerStore::new(&engine.root);
        let id = store.resolve(&name)?;
        update(&store, &id, &change)?;
        Ok(super::http::json(serde_json::json!({ "Warnings": [] })))
    })
    .await
}
