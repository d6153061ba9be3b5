//! `POST /containers/{id}/exec`, `GET /exec/{id}/json`, `POST /exec/{id}/start`
//! (hijacked, or in the background with `Detach`) and `POST /exec/{id}/resize`.
//!
//! Exec instances are the server's own state, as they are dockerd's: a table in memory
//! keyed by a random 64-hex ID, holding at most [`MAX_EXECS`] (finished ones are dropped
//! first, oldest first, so that a client can still inspect the exit code of the ones it
//! just ran). A restarted server has forgotten them; their processes are not affected.

use super::http::{blocking, ApiError, ApiResult, ApiVersion, DockerJson};
use super::relay::{relay, RelayOptions, Resizes};
use super::stream::{engine_error, framed, hijack, upgrade_response};
use super::Shared;
use crate::container::exec::{exec_start, ExecOptions};
use crate::container::session::{
    parse_detach_keys, End, PtySession, Session, Stream, DEFAULT_DETACH_KEYS,
};
use crate::container::{ContainerError, ContainerStore, Status};
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Most exec instances the server remembers.
pub const MAX_EXECS: usize = 1024;

/// The routes of this module.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/containers/{id}/exec", post(create))
        .route("/exec/{id}/json", get(inspect))
        .route("/exec/{id}/start", post(start))
        .route("/exec/{id}/resize", post(resize))
}

/// The body of `POST /containers/{id}/exec`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ExecConfig {
    attach_stdin: bool,
    attach_stdout: bool,
    attach_stderr: bool,
    detach_keys: String,
    tty: bool,
    env: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    privileged: bool,
    user: String,
    working_dir: String,
}

/// The body of `POST /exec/{id}/start`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct StartConfig {
    detach: bool,
    tty: bool,
    console_size: Option<Vec<u16>>,
}

/// One exec instance.
struct Exec {
    id: String,
    container: String,
    config: ExecConfig,
    /// Order of creation, to drop the oldest finished first.
    serial: u64,
    started: bool,
    running: bool,
    exit_code: Option<i32>,
    pid: Option<i32>,
    /// Window sizes for its terminal while it runs (its pipe is made at the start and
    /// closed at the end, so that instances waiting or kept for inspection hold no
    /// descriptor).
    resizes: Option<Arc<Resizes>>,
}

/// The server's exec instances.
#[derive(Default)]
pub struct ExecTable {
    execs: Mutex<HashMap<String, Exec>>,
    serial: std::sync::atomic::AtomicU64,
}

impl ExecTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Exec>> {
        self.execs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `exec`, dropping the oldest finished ones past the bound.
    fn insert(&self, mut exec: Exec) -> ApiResult<()> {
        exec.serial = self
            .serial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut execs = self.lock();
        while execs.len() >= MAX_EXECS {
            let oldest = execs
                .values()
                .filter(|e| !e.running)
                .min_by_key(|e| e.serial)
                .map(|e| e.id.clone());
            match oldest {
                Some(id) => execs.remove(&id),
                None => {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("too many exec instances running ({MAX_EXECS})"),
                    ))
                }
            };
        }
        execs.insert(exec.id.clone(), exec);
        Ok(())
    }

    /// Applies `f` to exec `id` (404 in Docker's words when there is none).
    fn with<T>(&self, id: &str, f: impl FnOnce(&mut Exec) -> ApiResult<T>) -> ApiResult<T> {
        let mut execs = self.lock();
        let exec = execs
            .get_mut(id)
            .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {id}")))?;
        f(exec)
    }

    /// Records the end of exec `id`.
    fn finished(&self, id: &str, code: Option<i32>) {
        if let Some(exec) = self.lock().get_mut(id) {
            exec.running = false;
            exec.exit_code = code;
            exec.resizes = None;
        }
    }
}

/// 409 unless container `id` runs (and is not paused), in Docker's words.
fn check_running(store: &ContainerStore, id: &str) -> ApiResult<crate::container::State> {
    let state = store.observe(id).map_err(engine_error)?;
    if state.status != Status::Running {
        return Err(ApiError::conflict(format!("Container {id} is not running")));
    }
    if state.paused {
        return Err(ApiError::conflict(format!(
            "Container {id} is paused, unpause the container before exec"
        )));
    }
    Ok(state)
}

async fn create(
    State(engine): State<Shared>,
    Path(name): Path<String>,
    DockerJson(config): DockerJson<ExecConfig>,
) -> ApiResult<Response> {
    if config.cmd.as_ref().is_none_or(Vec::is_empty) {
        return Err(ApiError::bad_request("No exec command specified"));
    }
    if !config.detach_keys.is_empty() {
        parse_detach_keys(&config.detach_keys).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    let root = engine.root.clone();
    let container = blocking(move || {
        let store = ContainerStore::new(&root);
        let id = store.resolve(&name).map_err(engine_error)?;
        check_running(&store, &id)?;
        Ok(id)
    })
    .await?;
    let id = crate::ids::new_id();
    engine.execs.insert(Exec {
        id: id.clone(),
        container,
        config,
        serial: 0,
        started: false,
        running: false,
        exit_code: None,
        pid: None,
        resizes: None,
    })?;
    Ok((
        StatusCode::CREATED,
        axum::Json(serde_json::json!({ "Id": id })),
    )
        .into_response())
}

async fn inspect(State(engine): State<Shared>, Path(id): Path<String>) -> ApiResult<Response> {
    engine.execs.with(&id, |e| {
        let cmd = e.config.cmd.clone().unwrap_or_default();
        Ok(super::http::json(serde_json::json!({
            "ID": e.id,
            "Running": e.running,
            "ExitCode": e.exit_code,
            "ProcessConfig": {
                "tty": e.config.tty,
                "entrypoint": cmd.first().cloned().unwrap_or_default(),
                "arguments": cmd.iter().skip(1).collect::<Vec<_>>(),
                "privileged": e.config.privileged,
                "user": e.config.user,
            },
            "OpenStdin": e.config.attach_stdin,
            "OpenStderr": e.config.attach_stderr,
            "OpenStdout": e.config.attach_stdout,
            "CanRemove": false,
            "ContainerID": e.container,
            "DetachKeys": e.config.detach_keys,
            "Pid": e.pid.unwrap_or(0),
        })))
    })
}

async fn resize(
    State(engine): State<Shared>,
    Path(id): Path<String>,
    query: super::http::Query,
) -> ApiResult<Response> {
    let rows = super::http::number::<u16>(&query, "h")?.unwrap_or(0);
    let cols = super::http::number::<u16>(&query, "w")?.unwrap_or(0);
    engine.execs.with(&id, |e| {
        match &e.resizes {
            Some(r) => r.ask(rows, cols),
            None if e.started => {
                return Err(ApiError::conflict(format!("Exec {id} is not running")))
            }
            None => {}
        }
        Ok(StatusCode::OK.into_response())
    })
}

/// What a start runs, taken from the table.
struct Plan {
    container: String,
    opts: ExecOptions,
    stdout: bool,
    stderr: bool,
    keys: Vec<u8>,
    resizes: Arc<Resizes>,
}

async fn start(
    State(engine): State<Shared>,
    Path(id): Path<String>,
    Extension(version): Extension<ApiVersion>,
    mut request: Request,
) -> ApiResult<Response> {
    let body = super::http::read_body(
        std::mem::take(request.body_mut()),
        super::http::JSON_BODY_LIMIT,
    )
    .await?;
    let start: StartConfig = super::http::parse_json(&body)?;
    // Attached, the session holds a thread; detached, the reaper of its command does.
    // Taken before the exec is marked started: a refused start can be made again.
    let slot = engine.streams.take()?;
    let plan = engine.execs.with(&id, |e| {
        if e.started {
            return Err(ApiError::conflict(format!(
                "Exec {id} has already been started"
            )));
        }
        let resizes = Resizes::new().map_err(|e| ApiError::internal(format!("exec: {e}")))?;
        e.resizes = Some(resizes.clone());
        e.started = true;
        e.running = true;
        let c = &e.config;
        let keys = if c.detach_keys.is_empty() {
            DEFAULT_DETACH_KEYS.to_vec()
        } else {
            parse_detach_keys(&c.detach_keys).unwrap_or_default()
        };
        Ok(Plan {
            container: e.container.clone(),
            opts: ExecOptions {
                detach: start.detach,
                interactive: c.attach_stdin && !start.detach,
                tty: c.tty,
                merged_output: false,
                env: c.env.clone().unwrap_or_default(),
                user: Some(c.user.clone()).filter(|u| !u.is_empty()),
                workdir: Some(c.working_dir.clone()).filter(|w| !w.is_empty()),
                privileged: c.privileged,
                command: c.cmd.clone().unwrap_or_default(),
            },
            stdout: c.attach_stdout,
            stderr: c.attach_stderr,
            keys,
            resizes,
        })
    })?;
    if let Some([rows, cols]) = start.console_size.as_deref() {
        plan.resizes.ask(*rows, *cols);
    }
    // As dockerd: the start's `Tty`, not the exec's, says whether the stream is raw or
    // multiplexed (docker-py starts a `tty` exec without it and reads frames).
    let tty = start.tty;
    let root = engine.root.clone();
    if start.detach {
        let table = engine.clone();
        let exec_id = id.clone();
        let result = blocking(move || {
            let store = ContainerStore::new(&root);
            let state = check_running(&store, &plan.container)?;
            if !state.isolation.workload_on_host() {
                crate::api::exec(&store, &plan.container, &plan.opts).map_err(engine_error)?;
                return Ok(None);
            }
            let started = exec_start(&store, &plan.container, &plan.opts).map_err(engine_error)?;
            Ok(Some(started.pid))
        })
        .await;
        return match result {
            Ok(pid) => {
                engine.execs.with(&id, |e| {
                    e.pid = pid;
                    e.running = pid.is_some();
                    Ok(())
                })?;
                if let Some(pid) = pid {
                    // The command's capsa-init is this server's child: reaped here.
                    super::streams::spawn(slot, move || {
                        let code = crate::container::monitor::wait_child(pid);
                        table.execs.finished(&exec_id, Some(code));
                    });
                }
                Ok(StatusCode::OK.into_response())
            }
            Err(e) => {
                engine.execs.finished(&id, None);
                Err(e)
            }
        };
    }
    let mut wires = Some(hijack(&mut request)?);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<ApiResult<()>>();
    let table = engine.clone();
    let exec_id = id.clone();
    super::streams::spawn(slot, move || {
        let store = ContainerStore::new(&root);
        if let Err(e) = check_running(&store, &plan.container) {
            let _ = ready_tx.send(Err(e));
            table.execs.finished(&exec_id, None);
            return;
        }
        // The command starts once the client has been answered, as with dockerd: a client
        // reading the stream under its HTTP parser's buffer (docker-py) would otherwise
        // miss output that came in the same read as the `101` headers.
        let _ = ready_tx.send(Ok(()));
        if !wires.as_ref().is_some_and(|w| w.wait_upgraded()) {
            table.execs.finished(&exec_id, None);
            return;
        }
        let (session, pid) = match session(&store, &plan) {
            Ok(s) => s,
            Err(Failed::Exec(code, message)) => {
                // As dockerd: the stream is up, the reason comes on it, the exit code is
                // the shell's (126: not executable, 127: not found).
                table.execs.finished(&exec_id, Some(code));
                if let Some(w) = wires.take() {
                    let text = format!("capsa exec failed: {message}\n");
                    let chunk = framed(!tty, Stream::Stderr, text.as_bytes());
                    let _ = w.output.blocking_send(chunk);
                }
                return;
            }
            Err(Failed::Api(e)) => {
                // Past the answer: the reason goes on the stream.
                table.execs.finished(&exec_id, None);
                if let Some(w) = wires.take() {
                    let text = format!("capsa exec failed: {}\n", e.message);
                    let _ = w
                        .output
                        .blocking_send(framed(!tty, Stream::Stderr, text.as_bytes()));
                }
                return;
            }
        };
        let _ = table.execs.with(&exec_id, |e| {
            e.pid = pid;
            Ok(())
        });
        let mut session = session;
        let opts = RelayOptions {
            multiplex: !tty,
            stdin: plan.opts.interactive,
            stdout: plan.stdout,
            stderr: plan.stderr,
            detach_keys: &plan.keys,
            resizes: Some(&plan.resizes),
        };
        let end = match wires.as_mut() {
            Some(w) => relay(session.as_mut(), w, &opts),
            None => End::Closed,
        };
        if matches!(end, End::Detached | End::Broken(_)) {
            wires = None; // the client is told at once; the command runs on
        }
        let code = session
            .finish(end)
            .ok()
            .flatten()
            .or_else(|| pid.map(crate::container::monitor::wait_child));
        // Recorded before the stream ends: the client inspects the exit code right after.
        table.execs.finished(&exec_id, code);
        drop(wires);
    });
    ready_rx
        .await
        .unwrap_or_else(|_| Err(ApiError::internal("exec start failed")))?;
    Ok(upgrade_response(tty, version))
}

/// Why an exec's command did not start.
enum Failed {
    /// Refused before anything ran.
    Api(ApiError),
    /// The command could not be executed (126) or found (127).
    Exec(i32, String),
}

impl From<ApiError> for Failed {
    fn from(e: ApiError) -> Failed {
        Failed::Api(e)
    }
}

impl From<ContainerError> for Failed {
    fn from(e: ContainerError) -> Failed {
        match e {
            ContainerError::Exec { code, message } => Failed::Exec(code, message),
            e => Failed::Api(engine_error(e)),
        }
    }
}

/// The session of the exec's command, started now, and its host PID when it has one (the
/// process tree's: a VM's command runs in the guest).
fn session(store: &ContainerStore, plan: &Plan) -> Result<(Box<dyn Session>, Option<i32>), Failed> {
    let state = check_running(store, &plan.container)?;
    if !state.isolation.workload_on_host() {
        let session = crate::api::exec(store, &plan.container, &plan.opts)?
            .ok_or_else(|| engine_error(ContainerError::Vm("exec: no session".into())))?;
        return Ok((session, None));
    }
    let started = exec_start(store, &plan.container, &plan.opts)?;
    let pid = started.pid;
    if let Some(master) = started.terminal {
        return Ok((Box::new(PtySession::new(master, pid)), Some(pid)));
    }
    let ours = started
        .pipes
        .ok_or_else(|| ApiError::internal("exec: the command has no streams"))?;
    let exited = capsa_core::linux::sys::pidfd_open(pid).ok();
    let finish = Box::new(move || crate::container::monitor::wait_child(pid));
    let session = crate::container::relay::PipeSession::new(ours, exited, Some(finish));
    Ok((Box::new(session), Some(pid)))
}
