//! `POST /containers/{id}/attach` (hijacked) and `POST /containers/{id}/resize`.
//!
//! A container with a terminal in the process tree is attached through its monitor's
//! attach socket, as `capsa attach` and `run -it` are: for one created and not started yet
//! (`docker run` attaches before it starts) the monitor already holds the terminal, so
//! nothing it writes is missed; a stopped one gets its monitor ready for the next start, as
//! `start -ai` does. A running VM is attached through its monitor, which relays its
//! streams, stdin included (the client's half-close ends the workload's input). A process
//! tree container without a terminal is attached to its log: followed from its end, or,
//! for one not running, from the first record of its next run, so `docker run`'s attach
//! sees the very first byte; its stdin is not reachable (a detached process tree container
//! without a terminal has none: what the client sends is not read).

use super::http::{blocking, flag, flag_or, ApiError, ApiResult, ApiVersion, Query};
use super::relay::{relay, RelayOptions};
use super::stream::{engine_error, framed, hijack, upgrade_response, Wires};
use super::Shared;
use crate::api;
use crate::container::logfile::Driver;
use crate::container::logfile_reader::{Snapshot, Window};
use crate::container::sandbox::{has_terminal, Attached, TerminalRun};
use crate::container::session::{parse_detach_keys, Stream, DEFAULT_DETACH_KEYS};
use crate::container::wait::{follow_records, wait_for, Followed};
use crate::container::{ContainerError, ContainerStore, Status};
use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::routing::post;
use axum::{Extension, Router};

/// The routes of this module.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/containers/{id}/attach", post(attach))
        .route("/containers/{id}/resize", post(resize))
}

/// What the client asked to see and send.
#[derive(Clone)]
struct Wanted {
    stream: bool,
    logs: bool,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    keys: Vec<u8>,
}

/// How the container is reached.
enum Way {
    /// A session with the monitor that relays its streams: the terminal of a process tree
    /// container, any running VM's (made on the blocking thread: sessions stay there).
    Session,
    /// Its log as it is now (`seen`), followed from its end once a run after `before`
    /// (its last start) has begun.
    Log {
        seen: Snapshot,
        before: Option<Option<String>>,
    },
}

async fn attach(
    State(engine): State<Shared>,
    Path(name): Path<String>,
    Extension(version): Extension<ApiVersion>,
    query: Query,
    mut request: Request,
) -> ApiResult<Response> {
    let keys = match query.get("detachKeys").filter(|k| !k.is_empty()) {
        Some(spec) => parse_detach_keys(spec).map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => DEFAULT_DETACH_KEYS.to_vec(),
    };
    let wanted = Wanted {
        stream: flag(&query, "stream"),
        logs: flag(&query, "logs"),
        stdin: flag(&query, "stdin"),
        stdout: flag_or(&query, "stdout", false),
        stderr: flag_or(&query, "stderr", false),
        keys,
    };
    let slot = engine.streams.take()?;
    let owner = engine.clone();
    let (id, tty) = blocking(move || {
        let store = ContainerStore::new(&owner.root);
        let id = store.resolve(&name).map_err(engine_error)?;
        let tty = has_terminal(&store, &id);
        if needs_new_monitor(&store, &id, tty).map_err(engine_error)? {
            // A new monitor is forked: by an engine worker, never by the server.
            let job = super::workers::Job::PrepareStart {
                container: id.clone(),
            };
            owner.run(job)?;
        }
        Ok((id, tty))
    })
    .await?;
    let wires = hijack(&mut request)?;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let root = engine.root.clone();
    super::streams::spawn(slot, move || {
        let store = ContainerStore::new(&root);
        attached(&store, &id, tty, &wanted, wires, ready_tx);
    });
    ready_rx
        .await
        .unwrap_or_else(|_| Err(engine_error(ContainerError::Vm("attach failed".into()))))?;
    Ok(upgrade_response(tty, version))
}

/// The blocking side of an attach: sets it up, says whether it could (`ready`), then
/// relays until the container's output ends or the client goes.
fn attached(
    store: &ContainerStore,
    id: &str,
    tty: bool,
    wanted: &Wanted,
    mut wires: Wires,
    ready: tokio::sync::oneshot::Sender<ApiResult<()>>,
) {
    let way = match way(store, id, tty) {
        Ok(w) => w,
        Err(e) => {
            let _ = ready.send(Err(engine_error(e)));
            return;
        }
    };
    match way {
        Way::Session => {
            let session = match api::attach(store, id, wanted.stdin)
                .and_then(|a| match a {
                    Attached::Session(s) => Ok(s),
                    Attached::Log { .. } => Err(ContainerError::Vm("no terminal session".into())),
                })
                .or_else(|_| {
                    if tty {
                        api::terminal_session(store, id)
                    } else {
                        api::input_session(store, id)
                    }
                }) {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready.send(Err(engine_error(e)));
                    return;
                }
            };
            let _ = ready.send(Ok(()));
            let mut session = session;
            if !wanted.stream {
                return;
            }
            let opts = RelayOptions {
                multiplex: !tty,
                stdin: wanted.stdin,
                stdout: wanted.stdout,
                stderr: wanted.stderr,
                detach_keys: &wanted.keys,
                resizes: None,
            };
            relay(session.as_mut(), &mut wires, &opts);
            // The session is dropped, not finished: the attach does not wait for the exit
            // (the client asks `wait` for it), and a detached client leaves it running.
        }
        Way::Log { seen, before } => {
            let _ = ready.send(Ok(()));
            follow(store, id, wanted, &wires, seen, before);
        }
    }
}

/// Whether container `id` (with a terminal, or run with `-i`) is stopped with no monitor
/// holding its pty or stdin: an attach then makes it ready for its next start, as
/// `start -ai` does.
fn needs_new_monitor(store: &ContainerStore, id: &str, tty: bool) -> Result<bool, ContainerError> {
    let state = store.observe(id)?;
    let on_attach_socket = api::sandbox_of(&state).terminal_run() == TerminalRun::Attach;
    Ok(
        (tty || state.open_stdin || state.log_driver == Driver::None)
            && on_attach_socket
            && !matches!(state.status, Status::Running | Status::Created),
    )
}

/// How container `id` is reached now (a stopped terminal container was made ready for
/// its next start by [`needs_new_monitor`]'s caller).
fn way(store: &ContainerStore, id: &str, tty: bool) -> Result<Way, ContainerError> {
    let state = store.observe(id)?;
    if state.paused {
        return Err(ContainerError::WrongState {
            id: id.to_string(),
            reason: "You cannot attach to a paused container, unpause it first".into(),
        });
    }
    let on_attach_socket = api::sandbox_of(&state).terminal_run() == TerminalRun::Attach;
    if state.status == Status::Running && !on_attach_socket {
        // A VM's monitor relays its streams, input included, with a terminal or without.
        return Ok(Way::Session);
    }
    if (tty || state.open_stdin || state.log_driver == Driver::None) && on_attach_socket {
        if state.status != Status::Running && state.status != Status::Created {
            return Err(ContainerError::WrongState {
                id: id.to_string(),
                reason: "it stopped while the attach was set up".into(),
            });
        }
        return Ok(Way::Session);
    }
    let seen = Snapshot::open(&store.dir(id).log());
    let before = (state.status != Status::Running).then(|| state.started_at.clone());
    Ok(Way::Log { seen, before })
}

/// Sends the log's records (all of them first with `logs`), then, with `stream`, the
/// records of the run going on or the next one, until it exits or the client goes.
fn follow(
    store: &ContainerStore,
    id: &str,
    wanted: &Wanted,
    wires: &Wires,
    seen: Snapshot,
    before: Option<Option<String>>,
) {
    let send = |rec: &crate::container::logfile::Record| {
        let stream = if rec.stream == "stderr" {
            if !wanted.stderr {
                return true;
            }
            Stream::Stderr
        } else {
            if !wanted.stdout {
                return true;
            }
            Stream::Stdout
        };
        wires
            .output
            .blocking_send(framed(true, stream, rec.log.as_bytes()))
            .is_ok()
    };
    let end = match wanted.logs {
        true => match seen.replay(Window::default(), None, &mut |rec| send(rec)) {
            Some(end) => end,
            None => return,
        },
        false => seen.end(),
    };
    if !wanted.stream {
        return;
    }
    let gone = || wires.gone();
    if let Some(before) = before {
        // Not running: its next run is what the client attached for.
        let started =
            |s: &crate::container::State| s.status == Status::Running || s.started_at != before;
        match wait_for(store, id, &started, &gone) {
            Ok(Some(_)) => {}
            _ => return,
        }
    }
    let mut each = |rec: &crate::container::logfile::Record| send(rec);
    let _: Result<Followed, _> = follow_records(store, id, end, &mut each, &gone);
}

async fn resize(
    State(engine): State<Shared>,
    Path(name): Path<String>,
    query: Query,
) -> ApiResult<Response> {
    let rows = super::http::number::<u16>(&query, "h")?.unwrap_or(0);
    let cols = super::http::number::<u16>(&query, "w")?.unwrap_or(0);
    let root = engine.root.clone();
    blocking(move || {
        let store = ContainerStore::new(&root);
        let id = store.resolve(&name).map_err(engine_error)?;
        let state = store.observe(&id).map_err(engine_error)?;
        // A created container's monitor already holds its terminal (`docker run -it`
        // sizes it as soon as it has started, when the state may still say created).
        if !matches!(state.status, Status::Running | Status::Created) {
            return Err(ApiError::conflict(format!("Container {id} is not running")));
        }
        if has_terminal(&store, &id) {
            // Any client of the monitor's terminal may set its size.
            let session = match api::attach(&store, &id, false) {
                Ok(Attached::Session(session)) => Some(session),
                _ => api::terminal_session(&store, &id).ok(),
            };
            if let Some(mut session) = session {
                session.resize(rows, cols);
            }
        }
        Ok(())
    })
    .await?;
    Ok(axum::response::IntoResponse::into_response(
        axum::http::StatusCode::OK,
    ))
}
