//! `cp` (and `commit`'s layer) with a stopped (or created) VM container: its VM boots,
//! jailed as always, and its agent mounts the container's root without creating the
//! workload; the copy then runs in the guest as it does with a running VM. The host never mounts, reads or checks the
//! guest-written disk itself: only the guest's kernel parses it (after the agent's e2fsck
//! when it was not unmounted cleanly).

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use super::control::keep_reason;
use super::protocol::{Bytes, Event, Request, Stream, COPY_CHUNK};
use crate::container::{ContainerError, ContainerStore};

/// The copy process's name in the guest.
const PROCESS: &str = "copy";
/// A copy process that sends nothing (not even its exit) for this long is given up on.
const SILENCE: Duration = Duration::from_secs(60);
const REQUEST: Duration = Duration::from_secs(60);

/// `path` in stopped container `id`, as a tar stream into `to`. A receiver that stops
/// taking it ends the copy quietly: its own error says why.
pub fn copy_out(
    store: &ContainerStore,
    id: &str,
    path: &Path,
    to: &mut dyn Write,
) -> Result<(), ContainerError> {
    let request = Request::CopyOut {
        process: PROCESS.into(),
        path: path.display().to_string(),
    };
    stream_out(store, id, request, to)
}

/// `commit` of stopped container `id`: its writable layer as an image layer tar into `to`
/// (`skipped`: the spec's mount points).
pub fn copy_layer_out(
    store: &ContainerStore,
    id: &str,
    skipped: Vec<String>,
    to: &mut dyn Write,
) -> Result<(), ContainerError> {
    let request = Request::CopyOutLayer {
        process: PROCESS.into(),
        skipped,
    };
    stream_out(store, id, request, to)
}

/// Boots the VM without its workload, starts the copy process `request` names and relays
/// the tar stream it writes into `to`.
fn stream_out(
    store: &ContainerStore,
    id: &str,
    request: Request,
    to: &mut dyn Write,
) -> Result<(), ContainerError> {
    let mut vm = super::boot::boot_without_workload(store, id)?;
    let result = (|| {
        vm.agent.call(request, REQUEST)?;
        let mut why = Vec::new();
        loop {
            match next(&mut vm.agent)? {
                Event::Output {
                    stream: Stream::Stdout,
                    data,
                    ..
                } => {
                    if to.write_all(&data.0).is_err() {
                        return Ok(());
                    }
                }
                Event::Output { data, .. } => keep_reason(&mut why, &data.0),
                Event::Exited { code, .. } => {
                    return super::control::copy_result(id, code, &why);
                }
            }
        }
    })();
    vm.shut_down();
    result
}

/// The tar stream read from `from` extracted at `path` in stopped container `id` (`as_is`:
/// into `path`, as for a stream given on stdin).
pub fn copy_in(
    store: &ContainerStore,
    id: &str,
    path: &Path,
    from: &mut dyn Read,
    how: super::control::CopyInto,
) -> Result<(), ContainerError> {
    let mut vm = super::boot::boot_without_workload(store, id)?;
    let result = (|| {
        let request = Request::CopyIn {
            process: PROCESS.into(),
            path: path.display().to_string(),
            as_is: how.as_is,
            keep_owners: how.keep_owners,
        };
        vm.agent.call(request, REQUEST)?;
        let mut buf = vec![0u8; COPY_CHUNK];
        let mut why = Vec::new();
        let mut exited = None;
        loop {
            let n = match from.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ContainerError::Vm(format!("cp: reading the archive: {e}"))),
                Ok(n) => n,
            };
            let request = if n == 0 {
                Request::CloseInput {
                    process: PROCESS.into(),
                }
            } else {
                Request::Input {
                    process: PROCESS.into(),
                    data: Bytes(buf[..n].to_vec()),
                }
            };
            // A copy process that failed early has no stdin left: its reason comes below.
            // What it says meanwhile is taken as it comes, not left to pile up.
            let sent = vm.agent.call_with(request, REQUEST, &mut |event| {
                take_event(event, &mut why, &mut exited)
            });
            if sent.is_err() || n == 0 || exited.is_some() {
                break;
            }
        }
        let code = loop {
            if let Some(code) = exited {
                break code;
            }
            take_event(next(&mut vm.agent)?, &mut why, &mut exited);
        };
        super::control::copy_result(id, code, &why)
    })();
    vm.shut_down();
    result
}

/// An event of the copy process while its archive is sent: what it says, or its exit code.
fn take_event(event: Event, why: &mut Vec<u8>, exited: &mut Option<i32>) {
    match event {
        Event::Output { data, .. } => keep_reason(why, &data.0),
        Event::Exited { code, .. } => *exited = Some(code),
    }
}

/// The copy process's next event.
fn next(agent: &mut super::agent::AgentClient) -> Result<Event, ContainerError> {
    match agent.next_event(SILENCE)? {
        Some(e) => Ok(e),
        None => Err(ContainerError::Vm(format!(
            "cp: the VM's copy process sent nothing for {SILENCE:?}"
        ))),
    }
}
