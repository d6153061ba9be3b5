//! `capsa serve`: the Docker Engine API over HTTP/1.1 on a Unix socket, so the docker
//! CLI, docker-py and docker-compose drive capsa as they drive dockerd.
//!
//! The server is a front end like `cli/`: every handler calls the engine library
//! ([`crate::api`] and the stores) on a blocking thread, and holds no state of its own
//! beyond exec sessions. Containers live in the state root and are watched by their
//! own monitors, so the server can stop and start again without touching them, and the
//! `capsa` CLI sees the same containers.
//!
//! Modules, one concept each:
//! - [`http`]: API versions in the path, errors as `{"message"}`, JSON bodies, queries;
//! - [`listen`]: the sockets (Unix 0660 root:group, or an explicit TCP address) and the
//!   one-server-per-root lock;
//! - [`system`]: `/_ping`, `/version`, `/info`, `/system/df`;
//! - [`containers`], [`create`]: the container endpoints, and `create`'s JSON read into
//!   the CLI's run options;
//! - [`images`], [`networks`], [`volumes`]: those objects' endpoints;
//! - [`events`]: `/events`, the event journal as a stream;
//! - [`errors`]: the engine's errors as Docker's status codes and messages;
//! - [`logs`], [`attach`], [`exec`], [`stats`], [`archive`]: the container streams
//!   (`attach` and `exec` start hijack the connection), with [`relay`] carrying a
//!   session's bytes both ways;
//! - [`stream`]: Docker's stdout/stderr multiplexing, bounded response bodies fed from
//!   the engine, hijacked connections;
//! - [`streams`]: the slots that keep long-lived streams from taking every blocking
//!   thread;
//! - [`bodies`]: request bodies read and response bodies written by blocking code,
//!   JSON lines;
//! - [`update`]: `POST /containers/{id}/update` (limits and restart policy, live);
//! - [`swarm`]: swarm mode's endpoints, answered as a dockerd outside a swarm (503);
//! - [`workers`]: the single-threaded processes that run the verbs forking a monitor.

mod archive;
mod attach;
mod bodies;
mod build;
mod commit;
mod containers;
mod create;
pub mod errors;
mod events;
mod exec;
pub mod http;
mod images;
mod listen;
mod logs;
mod networks;
mod relay;
mod spec_mounts;
mod stats;
mod stream;
mod streams;
mod swarm;
mod system;
mod update;
mod volumes;
mod workers;

pub use listen::{Host, ServeError};

use crate::root::StateRoot;
use axum::Router;
use std::sync::Arc;

/// Everything a handler needs: the state root (stores are cheap views of it) and the
/// server's defaults.
pub struct Engine {
    pub root: StateRoot,
    /// The cgroup parent of containers whose `HostConfig.CgroupParent` is empty
    /// (dockerd's `--cgroup-parent`).
    pub cgroup_parent: Option<String>,
    /// The exec instances made through the API (the server's only state of its own).
    pub execs: exec::ExecTable,
    /// The spec mounts of listed containers, read again only when a spec changes.
    pub spec_mounts: spec_mounts::Cache,
    /// The slots of long-lived streams, so that they never take every blocking thread.
    pub streams: streams::Streams,
    /// The spawner of engine workers (none inside a worker itself).
    workers: Option<workers::Spawner>,
}

impl Engine {
    /// Runs a job that forks a monitor in an engine worker (directly when this process
    /// is one).
    pub fn run(&self, job: workers::Job) -> http::ApiResult<(u16, serde_json::Value)> {
        match &self.workers {
            Some(spawner) => spawner.run(&job),
            None => containers::run_job(self, job),
        }
    }
}

/// Shared by every handler.
pub type Shared = Arc<Engine>;

/// How `capsa serve` listens.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen (`unix:///run/capsa/capsa.sock` when none is given).
    pub hosts: Vec<Host>,
    /// The group that may use the Unix socket (0660 root:group); none: 0600 root only.
    pub group: Option<String>,
    /// The default cgroup parent of the containers it creates.
    pub cgroup_parent: Option<String>,
}

/// The default socket, as `DOCKER_HOST=unix:///run/capsa/capsa.sock` names it.
pub const DEFAULT_SOCKET: &str = "/run/capsa/capsa.sock";

/// Every route of the API, before the version prefix is taken off (see [`http::versioned`]).
pub fn router(engine: Shared) -> Router {
    Router::new()
        .merge(system::routes())
        .merge(images::routes())
        .merge(networks::routes())
        .merge(volumes::routes())
        .merge(events::routes())
        .merge(containers::routes())
        .merge(logs::routes())
        .merge(attach::routes())
        .merge(exec::routes())
        .merge(stats::routes())
        .merge(archive::routes())
        .merge(commit::routes())
        .merge(build::routes())
        .merge(swarm::routes())
        .merge(update::routes())
        .fallback(http::not_found)
        .layer(axum::middleware::from_fn(http::refuse_bad_version))
        .with_state(engine)
}

/// Serves the API until SIGINT or SIGTERM, then removes the sockets. `ready` is told the
/// addresses once every socket listens.
pub fn serve(
    root: StateRoot,
    options: &ServeOptions,
    ready: impl FnOnce(&[Host]),
) -> Result<(), ServeError> {
    // The spawner first, while this process is one thread holding neither the lock nor
    // a socket: workers and the monitors they fork inherit nothing of the server's.
    let mut engine = Engine {
        root,
        cgroup_parent: options.cgroup_parent.clone(),
        execs: Default::default(),
        spec_mounts: Default::default(),
        streams: Default::default(),
        workers: None,
    };
    engine.workers = Some(workers::Spawner::start(&engine).map_err(ServeError::Runtime)?);
    let lock = listen::lock_root(&engine.root)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(streams::BLOCKING_THREADS)
        .thread_name("capsa-serve")
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    let engine = Arc::new(engine);
    let result = runtime.block_on(async move {
        let listeners = listen::bind_all(options).await?;
        ready(&options_hosts(options));
        let app = http::versioned(router(engine));
        listen::serve_until_signal(listeners, app).await
    });
    listen::remove_sockets(options);
    drop(lock);
    result
}

fn options_hosts(options: &ServeOptions) -> Vec<Host> {
    if options.hosts.is_empty() {
        vec![Host::default()]
    } else {
        options.hosts.clone()
    }
}
