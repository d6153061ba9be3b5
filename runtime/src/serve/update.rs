//! `POST /containers/{id}/update`: memory, CPUs (`NanoCpus` or `CpuQuota`/`CpuPeriod`),
//! `PidsLimit` and `RestartPolicy`, applied at once to a running container's cgroup and
//! kept for its next runs ([`crate::container::update`]); also `CpuShares`, `CpusetCpus`,
//! `CpusetMems`, `MemorySwap`, `MemoryReservation` and `BlkioWeight`. `KernelMemory` is
//! refused when given non-zero.

use super::create::RestartPolicyBody;
use super::http::{blocking, ApiError, ApiResult, DockerJson};
use super::Shared;
use crate::container::restart::RestartPolicy;
use crate::container::tuning;
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
    if body.kernel_memory.unwrap_or(0) != 0 {
        return Err(bad("KernelMemory is not supported by capsa".into()));
    }
    let size = |field: &str, v: Option<i64>| match v.unwrap_or(0) {
        0 => Ok(None),
        v => crate::container::options::parse_memory(field, &v.to_string()).map(Some),
    };
    let memory_swap = match body.memory_swap.unwrap_or(0) {
        -1 => Some(-1),
        v => size("MemorySwap", Some(v))?,
    };
    let memory_reservation = size("MemoryReservation", body.memory_reservation)?;
    let cpu_shares = tuning::parse_cpu_shares(body.cpu_shares.unwrap_or(0))?;
    // A VM's limits are refused by `update` itself: these are the host's CPUs and nodes.
    let cpuset = |flag: &str, kind: &str, v: Option<String>| {
        v.filter(|c| !c.is_empty())
            .map(|c| tuning::parse_cpuset(flag, &c, tuning::online(kind).as_deref()))
            .transpose()
    };
    let cpuset_cpus = cpuset("--cpuset-cpus", "cpu", body.cpuset_cpus)?;
    let cpuset_mems = cpuset("--cpuset-mems", "node", body.cpuset_mems)?;
    let blkio_weight = tuning::parse_blkio_weight(i64::from(body.blkio_weight.unwrap_or(0)))?;
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
        cpu_shares,
        cpuset_cpus,
        cpuset_mems,
        memory_swap,
        memory_reservation,
        blkio_weight,
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
