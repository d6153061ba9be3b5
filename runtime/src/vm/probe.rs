//! One healthcheck of a VM container: its command run as an `exec` in the guest, through
//! the VM monitor's control socket, bounded by the check's timeout. Past it, the process is
//! killed in the guest (the agent takes its command's process group with it), and the
//! result is Docker's: exit -1, `Health check exceeded timeout (30s)`.

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant, SystemTime};

use super::protocol::{self, Event, ExecRequest, Message, Request, Response};
use crate::container::exec::ExecOptions;
use crate::container::health::{go_duration, Probe, OUTPUT_LIMIT};
use crate::container::{ContainerError, ContainerStore};

/// How long a killed check may take to be reported gone before the prober stops waiting.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Runs `command` in VM container `id`, bounded by `timeout`.
pub fn run_check(store: &ContainerStore, id: &str, command: &[String], timeout: Duration) -> Probe {
    let start = SystemTime::now();
    let (exit_code, output) = match exec_bounded(store, id, command, timeout) {
        Ok(result) => result,
        Err(e) => (-1, e.to_string()),
    };
    Probe {
        start: crate::timefmt::rfc3339(start),
        end: crate::timefmt::rfc3339(SystemTime::now()),
        exit_code,
        output,
    }
}

fn vm_err(id: &str, e: impl std::fmt::Display) -> ContainerError {
    ContainerError::Vm(format!("container {id}: healthcheck: {e}"))
}

/// The check's exit code and its first [`OUTPUT_LIMIT`] bytes of output (stdout and stderr
/// together, as Docker keeps them).
fn exec_bounded(
    store: &ContainerStore,
    id: &str,
    command: &[String],
    timeout: Duration,
) -> Result<(i64, String), ContainerError> {
    let deadline = Instant::now() + timeout;
    let opts = ExecOptions {
        command: command.to_vec(),
        ..Default::default()
    };
    let (_, spec_process, user) = crate::container::exec::process_for(store, id, &opts)?;
    // Interactive so that the monitor takes this client's later frames (its input closed at
    // once below, and the kill past the timeout).
    let request = Request::Exec(Box::new(ExecRequest {
        process: String::new(),
        container: String::new(),
        spec_process,
        user,
        interactive: true,
        tty: false,
    }));
    let mut stream = super::control::connect(id)?;
    let err = |e: protocol::ProtocolError| vm_err(id, e);
    protocol::write_frame(&mut stream, 1, Message::Request(request)).map_err(err)?;
    let mut kept = Vec::new();
    let mut answered = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(kill(&mut stream, timeout));
        }
        let _ = stream.set_read_timeout(Some(left));
        let frame = match protocol::read_frame(&mut stream) {
            Ok(frame) => frame,
            Err(_) if Instant::now() >= deadline => return Ok(kill(&mut stream, timeout)),
            Err(e) => return Err(err(e)),
        };
        match frame.message {
            Message::Response(Response::Error { message, .. }) => {
                return Err(vm_err(id, message));
            }
            Message::Response(_) if !answered => {
                answered = true;
                // Its stdin ends at once, as a check's does on a host.
                let close = Request::CloseInput {
                    process: String::new(),
                };
                protocol::write_frame(&mut stream, 0, Message::Request(close)).map_err(err)?;
            }
            Message::Event(Event::Output { data, .. }) => {
                let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&data.0[..data.0.len().min(room)]);
            }
            Message::Event(Event::Exited { code, .. }) => {
                return Ok((i64::from(code), String::from_utf8_lossy(&kept).into_owned()));
            }
            Message::Response(_) | Message::Request(_) => {}
        }
    }
}

/// Kills the check in the guest and waits (bounded) for it to be reported gone; the result
/// Docker gives a check past its timeout.
fn kill(stream: &mut UnixStream, timeout: Duration) -> (i64, String) {
    let kill = Request::Signal {
        process: String::new(),
        signal: libc::SIGKILL,
    };
    if protocol::write_frame(stream, 0, Message::Request(kill)).is_ok() {
        let deadline = Instant::now() + KILL_GRACE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match protocol::read_frame(stream).map(|f| f.message) {
                Ok(Message::Event(Event::Exited { .. })) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
    (
        -1,
        format!("Health check exceeded timeout ({})", go_duration(timeout)),
    )
}
