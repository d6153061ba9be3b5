//! The host's end of the agent protocol: requests with ids, answered in order, and the events
//! (output, exits) that arrive in between, kept until asked for.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::protocol::{self, Event, Message, ProtocolError, Request, Response};
use super::VmError;

pub struct AgentClient {
    stream: UnixStream,
    next_id: u64,
    events: VecDeque<Event>,
}

impl AgentClient {
    pub fn new(stream: UnixStream) -> Self {
        Self {
            stream,
            next_id: 1,
            events: VecDeque::new(),
        }
    }

    pub fn raw_fd(&self) -> i32 {
        self.stream.as_raw_fd()
    }

    /// Sends `request` and waits up to `timeout` for its answer; an error answer is an error.
    pub fn call(&mut self, request: Request, timeout: Duration) -> Result<Response, VmError> {
        let id = self.next_id;
        self.next_id += 1;
        protocol::write_frame(&mut self.stream, id, Message::Request(request))
            .map_err(agent_err)?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !wait_readable(self.stream.as_raw_fd(), left)? {
                return Err(VmError::AgentTimeout(timeout));
            }
            let env = protocol::read_frame(&mut self.stream).map_err(agent_err)?;
            match env.message {
                Message::Response(Response::Error { kind, message }) if env.id == id => {
                    return Err(VmError::Agent(format!("{message} ({kind:?})")))
                }
                Message::Response(r) if env.id == id => return Ok(r),
                Message::Event(e) => self.events.push_back(e),
                other => return Err(VmError::Agent(format!("unexpected message {other:?}"))),
            }
        }
    }

    /// The next event, waiting up to `timeout` (None: it is not here yet).
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<Event>, VmError> {
        if let Some(e) = self.events.pop_front() {
            return Ok(Some(e));
        }
        if !wait_readable(self.stream.as_raw_fd(), timeout)? {
            return Ok(None);
        }
        match protocol::read_frame(&mut self.stream)
            .map_err(agent_err)?
            .message
        {
            Message::Event(e) => Ok(Some(e)),
            other => Err(VmError::Agent(format!("unexpected message {other:?}"))),
        }
    }
}

fn agent_err(e: ProtocolError) -> VmError {
    match e {
        ProtocolError::Closed => VmError::AgentGone,
        other => VmError::Agent(other.to_string()),
    }
}

/// poll(2) for readability, up to `timeout`.
pub fn wait_readable(fd: i32, timeout: Duration) -> Result<bool, VmError> {
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    crate::linux::sys::wait_readable(fd, ms)
        .map_err(|e| VmError::Io(format!("waiting for the agent: {e}")))
}
