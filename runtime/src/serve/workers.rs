//! Engine workers: the verbs that fork a container's monitor (create, start, restart)
//! run in a process of their own, forked for that one request from a spawner that was
//! forked when the server began, while it was still one thread holding no socket.
//!
//! Why: a monitor is forked and then runs Rust code for the container's whole life. A
//! fork of the server itself would copy a process of many threads (a lock another thread
//! held at that instant stays held forever in the copy) and every descriptor the server
//! holds at that instant: its root lock, its listening sockets, other clients'
//! connections and the pipes of other requests' processes (a copied stdin pipe would
//! keep another `exec -i` from ever seeing its end of input). A worker is a copy of the
//! spawner instead: one thread, no lock held, nothing open but its own job socket.
//!
//! The spawner takes one job socket per request (SCM_RIGHTS over a SEQPACKET pair),
//! forks a worker for it and goes back to waiting; it ends when the server's side of
//! the pair closes. A worker reads its [`Job`] (JSON, to end of input), runs it through
//! the same engine calls as any handler, writes the [`Reply`] and exits.

use super::http::{ApiError, ApiResult};
use super::Engine;
use axum::http::StatusCode;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

/// A request that forks a monitor.
#[derive(Debug, Serialize, Deserialize)]
pub enum Job {
    /// `POST /containers/create`: the body as received, and the `name` query.
    Create {
        body: serde_json::Value,
        name: Option<String>,
    },
    /// `POST /containers/{id}/start`.
    Start { container: String },
    /// An attach to a stopped container with a terminal: a new monitor holding a new
    /// pty, its init waiting at the start gate.
    PrepareStart { container: String },
    /// `POST /containers/{id}/restart`: stop (signal, grace in seconds), then start.
    Restart {
        container: String,
        signal: Option<i32>,
        grace_secs: Option<u64>,
    },
}

/// A worker's answer: the handler's status and JSON value, or its error.
#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Ok(u16, serde_json::Value),
    Err { status: u16, message: String },
}

/// The server's handle on its spawner.
pub struct Spawner {
    control: OwnedFd,
}

impl Spawner {
    /// Forks the spawner. Call it while the process is one thread and holds nothing the
    /// workers must not inherit (before the async runtime, the lock and the sockets).
    pub fn start(engine: &Engine) -> std::io::Result<Spawner> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        // SAFETY: the caller is single-threaded here (see above); the child runs the
        // spawner loop and never returns.
        match unsafe { nix::unistd::fork() }? {
            nix::unistd::ForkResult::Child => {
                drop(ours);
                spawner_loop(theirs, engine)
            }
            nix::unistd::ForkResult::Parent { .. } => Ok(Spawner { control: ours }),
        }
    }

    /// Runs `job` in a new worker and returns what it answers (blocking: call it on a
    /// blocking thread).
    pub fn run(&self, job: &Job) -> ApiResult<(u16, serde_json::Value)> {
        let lost = |e: std::io::Error| ApiError::internal(format!("engine worker: {e}"));
        let (mine, worker) = UnixStream::pair().map_err(lost)?;
        let fds = [worker.as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        sendmsg::<()>(
            self.control.as_raw_fd(),
            &[IoSlice::new(b"j")],
            &cmsg,
            MsgFlags::empty(),
            None,
        )
        .map_err(|e| lost(e.into()))?;
        drop(worker);
        let mut mine = mine;
        let request = serde_json::to_vec(job).map_err(|e| lost(e.into()))?;
        mine.write_all(&request).map_err(lost)?;
        mine.shutdown(std::net::Shutdown::Write).map_err(lost)?;
        let mut answer = Vec::new();
        mine.read_to_end(&mut answer).map_err(lost)?;
        match serde_json::from_slice(&answer) {
            Ok(Reply::Ok(status, value)) => Ok((status, value)),
            Ok(Reply::Err { status, message }) => Err(ApiError::new(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                message,
            )),
            Err(_) => Err(ApiError::internal(
                "the engine worker ended without an answer",
            )),
        }
    }
}

/// The spawner: a worker per job socket received, until the server goes.
fn spawner_loop(control: OwnedFd, engine: &Engine) -> ! {
    // Workers are reaped by the kernel; each resets this before it forks monitors.
    // SAFETY: setting a signal disposition; no handler runs.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    crate::linux::sys::set_broken_pipe_kills(false);
    loop {
        let Some(job) = receive_job_socket(&control) else {
            // SAFETY: ends the spawner without running the server's exit handlers.
            unsafe { libc::_exit(0) }
        };
        // SAFETY: the spawner is single-threaded; the child runs one job and exits.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                // SAFETY: the worker never uses the control socket and leaves by _exit,
                // so this OwnedFd is never dropped (no second close).
                unsafe { libc::close(control.as_raw_fd()) };
                crate::container::monitor::close_in_monitors([job.as_raw_fd()]);
                // SAFETY: as above, back to the default so monitors' forks can be waited.
                unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
                work(UnixStream::from(job), engine);
                // SAFETY: ends the worker without unwinding into the server's frames.
                unsafe { libc::_exit(0) }
            }
            _ => drop(job),
        }
    }
}

/// One job socket from the server, or None when the server has gone.
fn receive_job_socket(control: &OwnedFd) -> Option<OwnedFd> {
    loop {
        let mut byte = [0u8; 1];
        let mut iov = [IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = match recvmsg::<()>(
            control.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
            Ok(msg) => msg,
        };
        if msg.bytes == 0 {
            return None;
        }
        let mut fds = Vec::new();
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(list) = c {
                    fds.extend(list);
                }
            }
        }
        // SAFETY: descriptors just received with SCM_RIGHTS are ours alone.
        let mut owned: Vec<OwnedFd> = fds
            .into_iter()
            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
            .collect();
        if let Some(fd) = owned.pop() {
            return Some(fd);
        }
    }
}

/// A worker: reads the job, runs it, answers.
fn work(mut socket: UnixStream, engine: &Engine) {
    let mut request = Vec::new();
    let reply = match socket.read_to_end(&mut request) {
        Err(e) => Reply::Err {
            status: 500,
            message: format!("engine worker: {e}"),
        },
        Ok(_) => match serde_json::from_slice::<Job>(&request) {
            Err(e) => Reply::Err {
                status: 500,
                message: format!("engine worker: {e}"),
            },
            Ok(job) => match super::containers::run_job(engine, job) {
                Ok((status, value)) => Reply::Ok(status, value),
                Err(e) => Reply::Err {
                    status: e.status.as_u16(),
                    message: e.message,
                },
            },
        },
    };
    if let Ok(bytes) = serde_json::to_vec(&reply) {
        let _ = socket.write_all(&bytes);
    }
}
