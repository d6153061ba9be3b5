//! The host's end of the agent protocol: requests with ids, answered in order, and the events
//! (output, exits) that arrive in between, kept until asked for.
//!
//! Whatever the guest sends is hostile input (a workload may own the guest's kernel): frames
//! are taken as their bytes arrive, so a guest that stops in the middle of one blocks nothing;
//! a frame is at most [`MAX_FRAME`] bytes. Events that arrive while a request waits for its
//! answer go to the caller's handler as they come ([`AgentClient::call_with`], what the relay
//! of a running workload uses: its output flows on, nothing piles up), or are queued, at most
//! [`EVENT_QUEUE_BYTES`] of them, where none are expected ([`AgentClient::call`]: hello,
//! create, start, shutdown). A guest that breaks the protocol (a frame too large or
//! malformed, a message nobody asked for, more events than that while it does not answer)
//! is not talked to again: every call then fails with [`VmError::GuestViolation`], which
//! names the VM and the cause, and the VM's owner stops it without asking the guest.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::protocol::{
    self, Envelope, Event, FrameReader, Message, ProtocolError, Request, Response, MAX_FRAME,
};
use super::VmError;

/// The most the events queued while a request waits for its answer may cost: their data plus
/// [`EVENT_COST`] each. Requests that queue expect no events before their answer (the
/// workload runs only once `start` is answered), so this is room for stragglers, not output.
pub const EVENT_QUEUE_BYTES: usize = 8 << 20;
/// What one queued event costs beyond its data (its process name, the queue's own room).
const EVENT_COST: usize = 256;
/// The most of a guest's own text (an error answer's message) an error repeats.
const GUEST_TEXT: usize = 512;

pub struct AgentClient {
    stream: UnixStream,
    frames: FrameReader,
    next_id: u64,
    events: EventQueue,
    /// The VM, as errors name it.
    vm: String,
    /// Why the connection is not used any more, once it is not.
    broken: Option<Broken>,
}

/// Why an agent connection is given up.
#[derive(Debug, Clone)]
enum Broken {
    /// The guest broke the protocol.
    Violation(String),
    /// A request was only partly written (the guest stopped reading its channel): the
    /// stream is out of step for good.
    Stalled,
}

/// Events that arrived while a request waited for its answer, and what they cost.
#[derive(Default)]
struct EventQueue {
    events: VecDeque<Event>,
    bytes: usize,
}

impl EventQueue {
    fn cost(event: &Event) -> usize {
        EVENT_COST
            + event.process().len()
            + match event {
                Event::Output { data, .. } => data.0.len(),
                Event::Exited { .. } => 0,
            }
    }

    /// Queues `event`; false (and not queued) when it would take the queue past its bound.
    fn push(&mut self, event: Event) -> bool {
        let cost = Self::cost(&event);
        if self.bytes + cost > EVENT_QUEUE_BYTES {
            return false;
        }
        self.bytes += cost;
        self.events.push_back(event);
        true
    }

    fn pop(&mut self) -> Option<Event> {
        let event = self.events.pop_front()?;
        self.bytes -= Self::cost(&event);
        Some(event)
    }
}

impl std::os::fd::AsFd for AgentClient {
    /// The connection's socket, for a poll that waits for the guest among other things.
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

impl AgentClient {
    /// The client of the agent at the end of `stream`, for the VM errors call `vm`.
    pub fn new(stream: UnixStream, vm: &str) -> Self {
        Self {
            stream,
            frames: FrameReader::new(MAX_FRAME),
            next_id: 1,
            events: EventQueue::default(),
            vm: vm.to_string(),
            broken: None,
        }
    }

    pub fn raw_fd(&self) -> i32 {
        self.stream.as_raw_fd()
    }

    /// Whether the guest broke the protocol (its VM is then stopped without asking it).
    pub fn violated(&self) -> bool {
        matches!(self.broken, Some(Broken::Violation(_)))
    }

    /// Sends `request` and waits up to `timeout` for its answer; an error answer is an error.
    /// Events that arrive meanwhile are queued for [`AgentClient::next_event`], within
    /// [`EVENT_QUEUE_BYTES`]: for requests that expect none.
    pub fn call(&mut self, request: Request, timeout: Duration) -> Result<Response, VmError> {
        self.exchange(request, timeout, None)
    }

    /// [`AgentClient::call`] handing each event that arrives meanwhile to `on_event` as it
    /// comes (in order, after those already queued): for requests made while the workload's
    /// output flows.
    pub fn call_with(
        &mut self,
        request: Request,
        timeout: Duration,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<Response, VmError> {
        while let Some(e) = self.events.pop() {
            on_event(e);
        }
        self.exchange(request, timeout, Some(on_event))
    }

    fn exchange(
        &mut self,
        request: Request,
        timeout: Duration,
        mut on_event: Option<&mut dyn FnMut(Event)>,
    ) -> Result<Response, VmError> {
        self.usable()?;
        let id = self.next_id;
        self.next_id += 1;
        self.send(id, request, timeout)?;
        let deadline = Instant::now() + timeout;
        loop {
            let Some(env) = self.read(deadline)? else {
                return Err(VmError::AgentTimeout(timeout));
            };
            match env.message {
                Message::Response(Response::Error { kind, message }) if env.id == id => {
                    return Err(VmError::Agent(format!(
                        "{} ({kind:?})",
                        guest_text(&message)
                    )))
                }
                Message::Response(r) if env.id == id => return Ok(r),
                // The late answer to a request that timed out: nobody waits for it now.
                Message::Response(_) if env.id != 0 && env.id < id => {}
                Message::Event(e) => match on_event.as_mut() {
                    Some(handle) => handle(e),
                    None if self.events.push(e) => {}
                    None => {
                        return Err(self.violation(format!(
                            "it sent more than {} MiB of events without answering a request",
                            EVENT_QUEUE_BYTES >> 20
                        )));
                    }
                },
                other => return Err(self.unexpected(&other, env.id)),
            }
        }
    }

    /// The next event, waiting up to `timeout` (None: it is not here yet).
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<Event>, VmError> {
        if let Some(e) = self.events.pop() {
            return Ok(Some(e));
        }
        self.usable()?;
        match self.read(Instant::now() + timeout)? {
            None => Ok(None),
            Some(Envelope {
                message: Message::Event(e),
                ..
            }) => Ok(Some(e)),
            // The late answer to a request that timed out.
            Some(Envelope {
                id,
                message: Message::Response(_),
                ..
            }) if id != 0 && id < self.next_id => Ok(None),
            Some(env) => Err(self.unexpected(&env.message, env.id)),
        }
    }

    /// An event that arrived during a call and is still queued, without waiting.
    pub fn queued_event(&mut self) -> Option<Event> {
        self.events.pop()
    }

    fn usable(&self) -> Result<(), VmError> {
        match &self.broken {
            None => Ok(()),
            Some(Broken::Violation(cause)) => Err(VmError::GuestViolation {
                vm: self.vm.clone(),
                cause: cause.clone(),
            }),
            Some(Broken::Stalled) => Err(VmError::Agent(
                "the guest stopped reading its agent channel in the middle of a request".into(),
            )),
        }
    }

    /// Writes a request, waiting at most `timeout` for the guest to take it.
    fn send(&mut self, id: u64, request: Request, timeout: Duration) -> Result<(), VmError> {
        let _ = self
            .stream
            .set_write_timeout(Some(timeout.max(Duration::from_millis(1))));
        match protocol::write_host_request(&mut self.stream, id, request) {
            Ok(()) => Ok(()),
            Err(ProtocolError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                self.broken = Some(Broken::Stalled);
                Err(VmError::AgentTimeout(timeout))
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// The next whole frame, reading as bytes arrive until `deadline` (None: not by then).
    fn read(&mut self, deadline: Instant) -> Result<Option<Envelope>, VmError> {
        loop {
            match self.frames.next_frame() {
                Ok(Some(env)) => return Ok(Some(env)),
                Ok(None) => {}
                Err(e) => return Err(self.failed(e)),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !wait_readable(self.stream.as_raw_fd(), left)? {
                return Ok(None);
            }
            if let Err(e) = self.frames.fill(&mut self.stream) {
                return Err(self.failed(e));
            }
        }
    }

    /// The error for a failed read or write; what only a broken guest sends is a violation.
    fn failed(&mut self, e: ProtocolError) -> VmError {
        match e {
            ProtocolError::Closed => VmError::AgentGone,
            ProtocolError::TooLarge(n) => self.violation(format!(
                "it sent a frame of {n} bytes, more than the {MAX_FRAME}-byte limit"
            )),
            ProtocolError::Malformed(e) => self.violation(format!(
                "it sent a malformed message ({})",
                guest_text(&e.to_string())
            )),
            other => VmError::Agent(other.to_string()),
        }
    }

    fn unexpected(&mut self, message: &Message, id: u64) -> VmError {
        self.violation(format!(
            "it sent {} (id {id}) that no request asked for",
            message.kind()
        ))
    }

    /// Gives the connection up for `cause`; the error says so.
    fn violation(&mut self, cause: String) -> VmError {
        self.events = EventQueue::default();
        self.frames = FrameReader::new(MAX_FRAME);
        self.broken = Some(Broken::Violation(cause.clone()));
        VmError::GuestViolation {
            vm: self.vm.clone(),
            cause,
        }
    }
}

/// Text the guest chose, fit for one line of an error: at most [`GUEST_TEXT`] characters, its
/// control characters escaped.
pub fn guest_text(text: &str) -> String {
    let mut cut: String = text.chars().take(GUEST_TEXT).collect();
    if cut.len() < text.len() {
        cut.push_str("...");
    }
    crate::printable::escape_controls(&cut).into_owned()
}

/// poll(2) for readability, up to `timeout`.
pub fn wait_readable(fd: i32, timeout: Duration) -> Result<bool, VmError> {
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    crate::linux::sys::wait_readable(fd, ms)
        .map_err(|e| VmError::Io(format!("waiting for the agent: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::protocol::{Bytes, Stream};
    use std::io::{Read, Write};

    /// A client and the guest's end of its connection.
    fn pair() -> (AgentClient, UnixStream) {
        let (host, guest) = UnixStream::pair().unwrap();
        (AgentClient::new(host, "evil (0123456789ab)"), guest)
    }

    fn output(bytes: usize) -> Message {
        Message::Event(Event::Output {
            process: "init".into(),
            stream: Stream::Stdout,
            data: Bytes(vec![b'A'; bytes]),
        })
    }

    #[test]
    fn a_guest_that_floods_events_instead_of_answering_breaks_the_protocol() {
        let (mut client, mut guest) = pair();
        let flood = std::thread::spawn(move || {
            let request = protocol::read_frame(&mut guest).unwrap();
            assert!(matches!(request.message, Message::Request(Request::Stats)));
            // Never answered: 1 MiB events until the host stops listening.
            while protocol::write_frame(&mut guest, 0, output(1 << 20)).is_ok() {}
        });
        let e = client
            .call(Request::Stats, Duration::from_secs(120))
            .unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, VmError::GuestViolation { .. }), "{text}");
        assert!(text.contains("VM evil (0123456789ab)"), "{text}");
        assert!(text.contains("MiB of events"), "{text}");
        assert!(client.violated());
        // Nothing is kept of it, and the guest is not talked to again.
        assert!(client.queued_event().is_none());
        let again = client.call(Request::Top, Duration::from_secs(1));
        assert!(matches!(again, Err(VmError::GuestViolation { .. })));
        drop(client);
        flood.join().unwrap();
    }

    #[test]
    fn a_relaying_call_hands_on_any_amount_of_events_as_they_come() {
        let (mut client, mut guest) = pair();
        let agent = std::thread::spawn(move || {
            let request = protocol::read_frame(&mut guest).unwrap();
            // Four times what a queue may hold, then the answer: a workload's output.
            for _ in 0..32 {
                protocol::write_frame(&mut guest, 0, output(1 << 20)).unwrap();
            }
            protocol::write_frame(&mut guest, request.id, Message::Response(Response::Ok)).unwrap();
            guest
        });
        let mut seen = 0;
        let answer = client.call_with(Request::Stats, Duration::from_secs(60), &mut |e| {
            if let Event::Output { data, .. } = e {
                seen += data.0.len();
            }
        });
        assert_eq!(answer.unwrap(), Response::Ok);
        assert_eq!(seen, 32 << 20);
        assert!(client.queued_event().is_none());
        drop(agent.join().unwrap());
    }

    #[test]
    fn events_before_the_answer_are_kept_in_order_and_a_late_answer_is_dropped() {
        let (mut client, mut guest) = pair();
        let agent = std::thread::spawn(move || {
            let first = protocol::read_frame(&mut guest).unwrap();
            // The first request times out; its answer comes later, with the second's.
            let second = protocol::read_frame(&mut guest).unwrap();
            protocol::write_frame(&mut guest, first.id, Message::Response(Response::Ok)).unwrap();
            for n in [1, 2, 3] {
                protocol::write_frame(&mut guest, 0, output(n)).unwrap();
            }
            let top = Response::Top(vec!["UID PID".into()]);
            protocol::write_frame(&mut guest, second.id, Message::Response(top)).unwrap();
            guest
        });
        assert!(matches!(
            client.call(Request::Stats, Duration::from_millis(1)),
            Err(VmError::AgentTimeout(_))
        ));
        let answer = client.call(Request::Top, Duration::from_secs(30)).unwrap();
        assert_eq!(answer, Response::Top(vec!["UID PID".into()]));
        let sizes: Vec<usize> = std::iter::from_fn(|| client.queued_event())
            .map(|e| match e {
                Event::Output { data, .. } => data.0.len(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(sizes, [1, 2, 3]);
        drop(agent.join().unwrap());
    }

    #[test]
    fn a_frame_that_stops_midway_leaves_the_caller_waiting_only_until_its_deadline() {
        let (mut client, mut guest) = pair();
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = client.call(Request::Stats, Duration::from_millis(300));
            let _ = done.send(r.map_err(|e| e.to_string()));
            client
        });
        let _ = protocol::read_frame(&mut guest).unwrap();
        // 1 MiB announced, 10 bytes sent, the connection kept open.
        guest.write_all(&(1u32 << 20).to_be_bytes()).unwrap();
        guest.write_all(b"{\"version\"").unwrap();
        let r = result
            .recv_timeout(Duration::from_secs(30))
            .expect("the call returned rather than blocking on the rest of the frame");
        assert!(r.unwrap_err().contains("did not answer"));
    }

    #[test]
    fn oversized_malformed_or_unasked_frames_break_the_protocol() {
        /// What the guest sends, and the cause the error names.
        type Case = (&'static str, fn(&mut UnixStream));
        let cases: [Case; 3] = [
            ("frame of 4294967295 bytes", |g| {
                g.write_all(&u32::MAX.to_be_bytes()).unwrap()
            }),
            ("malformed", |g| {
                let body = "[".repeat(100_000);
                g.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
                g.write_all(body.as_bytes()).unwrap();
            }),
            ("a request (id 9)", |g| {
                protocol::write_frame(g, 9, Message::Request(Request::Shutdown)).unwrap()
            }),
        ];
        for (cause, send) in cases {
            let (mut client, mut guest) = pair();
            send(&mut guest);
            let e = client.next_event(Duration::from_secs(30)).unwrap_err();
            assert!(matches!(e, VmError::GuestViolation { .. }), "{cause}: {e}");
            assert!(e.to_string().contains(cause), "{cause}: {e}");
            assert!(client.violated());
        }
    }

    #[test]
    fn a_guest_error_message_is_cut_to_one_printable_line() {
        let (mut client, mut guest) = pair();
        let agent = std::thread::spawn(move || {
            let request = protocol::read_frame(&mut guest).unwrap();
            let message = format!("bad\n\x1b]0;owned\x07{}", "x".repeat(1 << 20));
            let error = Response::Error {
                kind: protocol::ErrorKind::Internal,
                message,
            };
            protocol::write_frame(&mut guest, request.id, Message::Response(error)).unwrap();
            let mut rest = Vec::new();
            let _ = guest.read_to_end(&mut rest);
        });
        let e = client
            .call(Request::Stats, Duration::from_secs(30))
            .unwrap_err();
        let text = e.to_string();
        assert!(text.len() < 1024, "{} bytes", text.len());
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(
            text.starts_with("guest agent: bad\\n\\x1b]0;owned"),
            "{text}"
        );
        drop(client);
        agent.join().unwrap();
    }
}
