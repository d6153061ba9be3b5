//! `GET /containers/{id}/stats`: Docker's stats JSON, one object per second while
//! `stream` (the default), or one (`stream=0`: two samples a second apart, so that
//! `precpu_stats` is filled and the client computes CPU % as from dockerd; `one-shot=1`
//! with `stream=0`: one sample at once, `precpu_stats` empty). The raw counters are sent,
//! as dockerd sends them: the client computes CPU % from the deltas of
//! `cpu_usage.total_usage` and `system_cpu_usage` (host CPU time from /proc/stat, in
//! nanoseconds) times `online_cpus`, and memory as `usage` minus `stats.inactive_file`.

use super::http::{blocking, flag, flag_or, ApiResult, Query};
use super::stream::{channel_body, engine_error, streamed};
use super::Shared;
use crate::container::stats::{host_cpu_ns, host_memory};
use crate::container::{ContainerStore, State};
use axum::body::Bytes;
use axum::extract::{Path, State as Extract};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

/// Time between two samples of a stream (dockerd's collector interval).
const INTERVAL: Duration = Duration::from_secs(1);

/// The routes of this module.
pub fn routes() -> Router<Shared> {
    Router::new().route("/containers/{id}/stats", get(stats))
}

/// One sample of a container's counters.
struct Sample {
    at: SystemTime,
    system_ns: u64,
    counters: crate::container::sandbox::Counters,
}

fn sample(state: &State) -> Sample {
    let counters = crate::api::sandbox_of(state).counters(state);
    Sample {
        at: SystemTime::now(),
        system_ns: host_cpu_ns(),
        counters,
    }
}

/// Docker's `cpu_stats` (or `precpu_stats`) of a sample (none: zeros, as dockerd's first).
/// No `percpu_usage`: dockerd leaves it out on cgroup v2, and clients use `online_cpus`.
fn cpu_stats(sample: Option<&Sample>, cpus: u64) -> Value {
    let c = sample.map(|s| s.counters.cgroup).unwrap_or_default();
    json!({
        "cpu_usage": {
            "total_usage": c.cpu_ns,
            "usage_in_usermode": c.cpu_user_ns,
            "usage_in_kernelmode": c.cpu_kernel_ns,
        },
        "system_cpu_usage": sample.map_or(0, |s| s.system_ns),
        "online_cpus": if sample.is_some() { cpus } else { 0 },
        "throttling_data": { "periods": 0, "throttled_periods": 0, "throttled_time": 0 },
    })
}

/// Docker's stats object for `now`, with `before` as its `precpu_stats`.
fn stats_json(state: &State, now: &Sample, before: Option<&Sample>) -> Value {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let c = &now.counters.cgroup;
    let total = host_memory();
    let limit = c.memory_limit.unwrap_or(total).min(total.max(1));
    let (rx, tx) = now.counters.net;
    json!({
        "name": format!("/{}", state.name),
        "id": state.id,
        "read": crate::timefmt::rfc3339(now.at),
        "preread": before.map_or("0001-01-01T00:00:00Z".to_string(), |b| crate::timefmt::rfc3339(b.at)),
        "pids_stats": { "current": c.pids },
        "blkio_stats": {
            "io_service_bytes_recursive": [
                { "major": 0, "minor": 0, "op": "read", "value": c.block_read },
                { "major": 0, "minor": 0, "op": "write", "value": c.block_write },
            ],
            "io_serviced_recursive": null,
            "io_queue_recursive": null,
            "io_service_time_recursive": null,
            "io_wait_time_recursive": null,
            "io_merged_recursive": null,
            "io_time_recursive": null,
            "sectors_recursive": null,
        },
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": cpu_stats(Some(now), cpus),
        "precpu_stats": cpu_stats(before, cpus),
        "memory_stats": {
            "usage": c.memory_usage,
            "limit": limit,
            "stats": { "inactive_file": c.memory_inactive_file },
        },
        "networks": {
            "eth0": {
                "rx_bytes": rx, "rx_packets": 0, "rx_errors": 0, "rx_dropped": 0,
                "tx_bytes": tx, "tx_packets": 0, "tx_errors": 0, "tx_dropped": 0,
            }
        },
    })
}

async fn stats(
    Extract(engine): Extract<Shared>,
    Path(name): Path<String>,
    query: Query,
) -> ApiResult<Response> {
    let stream = flag_or(&query, "stream", true);
    let one_shot = flag(&query, "one-shot") && !stream;
    let slot = engine.streams.take()?;
    let root = engine.root.clone();
    let id = blocking(move || {
        ContainerStore::new(&root)
            .resolve(&name)
            .map_err(engine_error)
    })
    .await?;
    let (tx, body) = channel_body();
    let root = engine.root.clone();
    super::streams::spawn(slot, move || {
        let store = ContainerStore::new(&root);
        let mut before: Option<Sample> = None;
        if !stream && !one_shot {
            let Ok(state) = store.observe(&id) else {
                return;
            };
            before = Some(sample(&state));
            std::thread::sleep(INTERVAL);
        }
        loop {
            let Ok(state) = store.observe(&id) else {
                return;
            };
            let now = sample(&state);
            let mut line = stats_json(&state, &now, before.as_ref()).to_string();
            line.push('\n');
            if tx.blocking_send(Ok(Bytes::from(line))).is_err() || !stream {
                return;
            }
            before = Some(now);
            std::thread::sleep(INTERVAL);
            if tx.is_closed() {
                return;
            }
        }
    });
    Ok(streamed("application/json", body))
}
